//! `POST /oauth2/introspect` (RFC 7662), as Synapse's `matrix_authentication_service` mode
//! asks it: who an access token belongs to, for Synapse's every client request.

use axum::Form;
use axum::Json;
use axum::extract::State;
use http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};
use vouch_core::localpart::localpart_of;
use vouch_core::secrets::token_hash;

use crate::accounts::is_scope_safe;
use crate::error::ApiError;
use crate::state::AppState;

/// The scope every Vouch access token grants: the whole client-server API.
pub const CLIENT_API_SCOPE: &str = "urn:matrix:client:api:*";
/// The device scope's prefix.
pub const DEVICE_SCOPE: &str = "urn:matrix:client:device:";
/// Synapse's admin scope, for Vouch's server admins.
pub const ADMIN_SCOPE: &str = "urn:synapse:admin:*";

/// The introspection request.
#[derive(Debug, Deserialize)]
pub struct IntrospectForm {
    /// The token asked about.
    #[serde(default)]
    token: String,
}

/// # `POST /oauth2/introspect`
///
/// Only the homeserver may ask (the shared secret as a Bearer token, compared in constant
/// time; anyone else gets 401). An unknown, expired or revoked token, or one of a
/// deactivated account, is `{"active": false}` at once.
pub async fn introspect_route(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<IntrospectForm>,
) -> Result<Json<Value>, ApiError> {
    let Some(hs) = state.homeserver.as_ref() else {
        return Err(ApiError::unrecognized());
    };
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.get(..7)
                .filter(|p| p.eq_ignore_ascii_case("bearer "))
                .map(|_| &v[7..])
        })
        .unwrap_or("");
    if !hs.is_secret(presented.trim()) {
        return Err(ApiError::Custom {
            status: http::StatusCode::UNAUTHORIZED,
            errcode: "M_UNKNOWN_TOKEN",
            message: "Only the homeserver may introspect tokens".into(),
        });
    }
    let inactive = || Ok(Json(json!({ "active": false })));
    if form.token.is_empty() || form.token.len() > 512 {
        return inactive();
    }
    let Some(info) = state.db.access_token(&token_hash(&form.token)).await? else {
        return inactive();
    };
    let now = state.now();
    let expires_in = match info.expires_at {
        Some(at) if at <= now => return inactive(),
        Some(at) => Some((at - now) / 1000),
        None => None,
    };
    let Some(localpart) = localpart_of(&info.user_id, state.server_name()) else {
        return inactive();
    };
    // A device ID that could add a scope of its own (one imported, or stored before the
    // rule) gets no token through.
    if !is_scope_safe(&info.device_id) {
        tracing::warn!(
            user_id = info.user_id,
            "a token's device ID cannot stand in a scope; inactive"
        );
        return inactive();
    }
    let mut scope = format!("{CLIENT_API_SCOPE} {DEVICE_SCOPE}{}", info.device_id);
    if info.admin() {
        scope.push(' ');
        scope.push_str(ADMIN_SCOPE);
    }
    let mut answer = json!({
        "active": true,
        "scope": scope,
        "username": localpart,
        "sub": info.user_id,
        "device_id": info.device_id,
        "token_type": "access_token",
    });
    if let Some(s) = expires_in {
        answer["expires_in"] = json!(s);
    }
    Ok(Json(answer))
}
