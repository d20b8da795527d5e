//! # `POST /oauth2/registration`
//!
//! Dynamic client registration (RFC 7591): the metadata is checked by the spec's rules
//! (`vouch_core::oauth::client`), stored, and answered with a `client_id`. Identical
//! metadata gets the client ID registered first, so a flood of registrations of one app
//! is one row; registrations per address are rate limited.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use vouch_core::oauth::{ClientMetadata, ClientRequest};
use vouch_core::secrets::{new_opaque_id, token_hash};
use vouch_storage::NewClient;

use super::error::OAuthError;
use crate::client_ip::ClientIp;
use crate::state::AppState;

/// The largest registration accepted, in bytes: metadata is kept as long as the client.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// # `POST /oauth2/registration`
pub async fn register_client_route(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    body: axum::body::Bytes,
) -> Result<Response, OAuthError> {
    state
        .limits
        .client_registration_per_ip
        .check_ip(ip)
        .map_err(OAuthError::from)?;
    if body.len() > MAX_METADATA_BYTES {
        return Err(OAuthError::new(
            "invalid_client_metadata",
            format!("Client metadata is at most {MAX_METADATA_BYTES} bytes"),
        ));
    }
    let request: ClientRequest = serde_json::from_slice(&body).map_err(|e| {
        OAuthError::new(
            "invalid_client_metadata",
            format!("The body is not client metadata: {e}"),
        )
    })?;
    let metadata =
        ClientMetadata::register(request).map_err(|e| OAuthError::new(e.code(), e.to_string()))?;
    let json = serde_json::to_string(&metadata)
        .map_err(|e| OAuthError::from(crate::error::ApiError::internal(e.to_string())))?;
    let client_id = state
        .db
        .register_client(
            &NewClient {
                client_id: new_opaque_id(state.secrets.as_ref()),
                metadata_hash: token_hash(&json),
                metadata: json,
            },
            state.now(),
        )
        .await?;
    let mut answer = serde_json::to_value(&metadata)
        .map_err(|e| OAuthError::from(crate::error::ApiError::internal(e.to_string())))?;
    if let Some(map) = answer.as_object_mut() {
        map.insert("client_id".into(), client_id.into());
    }
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}
