//! Discovery: the authorization server metadata (RFC 8414, as the Matrix spec profiles it)
//! at `/_matrix/client/v1/auth_metadata`, and the same document as OpenID Connect
//! discovery at `/.well-known/openid-configuration` (what Synapse re-serves when Vouch
//! stands in front of it).

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use ruma::api::client::discovery::get_authorization_server_metadata::v1::AuthorizationServerMetadata;
use serde_json::json;

use super::paths;
use crate::error::ApiError;
use crate::state::AppState;

/// The metadata document, checked against ruma's type (which enforces the spec's required
/// fields and values).
pub fn metadata(state: &AppState) -> Result<AuthorizationServerMetadata, ApiError> {
    let base = state.config.public_baseurl();
    let mut actions: Vec<&str> = super::account::ACTIONS.to_vec();
    if state.homeserver.is_some() {
        actions.push(crate::homeserver::account_page::CROSS_SIGNING_RESET);
    }
    let doc = json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}{}", paths::AUTHORIZE),
        "token_endpoint": format!("{base}{}", paths::TOKEN),
        "registration_endpoint": format!("{base}{}", paths::REGISTRATION),
        "revocation_endpoint": format!("{base}{}", paths::REVOKE),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query", "fragment"],
        "grant_types_supported": [
            "authorization_code",
            "refresh_token",
            vouch_core::oauth::client::GRANT_DEVICE_CODE,
        ],
        "device_authorization_endpoint": format!("{base}{}", paths::DEVICE),
        "code_challenge_methods_supported": ["S256"],
    });
    let mut doc = doc;
    if let Some(map) = doc.as_object_mut() {
        if state.config.registration.enabled {
            map.insert("prompt_values_supported".into(), json!(["create"]));
        }
        map.insert(
            "account_management_uri".into(),
            json!(format!("{base}{}", super::account::PATH)),
        );
        map.insert(
            "account_management_actions_supported".into(),
            json!(actions),
        );
    }
    serde_json::from_value(doc)
        .map_err(|e| ApiError::internal(format!("the OAuth 2.0 metadata is not valid: {e}")))
}

/// # `GET /_matrix/client/v1/auth_metadata`
pub async fn auth_metadata_route(State(state): State<AppState>) -> Response {
    match metadata(&state) {
        Ok(doc) => cacheable(Json(doc).into_response()),
        Err(e) => e.into_response(),
    }
}

/// # `GET /.well-known/openid-configuration`
///
/// The same document, with the OpenID Connect fields a discovery client requires.
pub async fn openid_configuration_route(State(state): State<AppState>) -> Response {
    let doc = match metadata(&state)
        .and_then(|m| serde_json::to_value(m).map_err(|e| ApiError::internal(e.to_string())))
    {
        Ok(doc) => doc,
        Err(e) => return e.into_response(),
    };
    let mut doc = doc;
    if let Some(map) = doc.as_object_mut() {
        map.insert(
            "scopes_supported".into(),
            json!(["urn:matrix:client:api:*", "urn:matrix:client:device:*"]),
        );
        map.insert(
            "token_endpoint_auth_methods_supported".into(),
            json!(["none"]),
        );
        map.insert(
            "revocation_endpoint_auth_methods_supported".into(),
            json!(["none"]),
        );
        map.insert("subject_types_supported".into(), json!(["public"]));
        if state.config.oauth.openid_connect {
            let base = state.config.public_baseurl();
            map.insert(
                "scopes_supported".into(),
                json!([
                    "openid",
                    "profile",
                    "email",
                    "phone",
                    "urn:matrix:client:api:*",
                    "urn:matrix:client:device:*"
                ]),
            );
            map.insert("jwks_uri".into(), json!(format!("{base}{}", paths::JWKS)));
            map.insert(
                "userinfo_endpoint".into(),
                json!(format!("{base}{}", paths::USERINFO)),
            );
            map.insert(
                "id_token_signing_alg_values_supported".into(),
                json!([super::oidc::ALGORITHM]),
            );
            map.insert(
                "claims_supported".into(),
                json!([
                    "iss",
                    "sub",
                    "aud",
                    "exp",
                    "iat",
                    "nonce",
                    "at_hash",
                    "preferred_username",
                    "name",
                    "email",
                    "email_verified",
                    "phone_number",
                    "phone_number_verified"
                ]),
            );
        }
    }
    cacheable(Json(doc).into_response())
}

/// The metadata changes only with the configuration: clients may keep it for an hour.
fn cacheable(mut res: Response) -> Response {
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    res
}
