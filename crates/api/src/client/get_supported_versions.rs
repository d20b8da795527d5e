use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use ruma::api::OutgoingResponseExt;
use ruma::api::client::discovery::get_supported_versions;

use crate::error::ApiError;

/// Spec versions Vouch speaks. `r0.6.0` tells old clients that `id_server` is optional.
pub const VERSIONS: &[&str] = &[
    "r0.5.0", "r0.6.0", "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8",
    "v1.9", "v1.10", "v1.11", "v1.12", "v1.13", "v1.14", "v1.15", "v1.16", "v1.17", "v1.18",
    "v1.19",
];

/// The answer, as ruma writes it.
fn supported_versions() -> get_supported_versions::Response {
    let mut response =
        get_supported_versions::Response::new(VERSIONS.iter().map(|v| (*v).to_owned()).collect());
    response.unstable_features = BTreeMap::from([
        ("m.require_identity_server".to_owned(), false),
        ("m.id_access_token".to_owned(), true),
        ("m.separate_add_and_bind".to_owned(), true),
    ]);
    response
}

/// The answer never changes: ruma writes it once, and every request gets the same bytes
/// (the most requested endpoint need not build and serialise it each time).
static ANSWER: LazyLock<Result<(HeaderValue, bytes::Bytes), String>> = LazyLock::new(|| {
    let response = supported_versions()
        .try_into_http_response::<Vec<u8>>()
        .map_err(|e| e.to_string())?;
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or(HeaderValue::from_static("application/json"));
    Ok((content_type, bytes::Bytes::from(response.into_body())))
});

/// # `GET /_matrix/client/versions`
///
/// The unstable flags are the pre-r0.6 ones (MSC2263, MSC2264, MSC2290) that old clients
/// still read before they will register without an identity server.
pub async fn get_supported_versions_route() -> Response {
    match &*ANSWER {
        Ok((content_type, body)) => {
            ([(header::CONTENT_TYPE, content_type.clone())], body.clone()).into_response()
        }
        Err(e) => ApiError::internal(format!("cannot serialise a response: {e}")).into_response(),
    }
}
