//! # `POST /oauth2/revoke`
//!
//! Token revocation (RFC 7009) as the spec profiles it: an access or refresh token ends
//! its whole session (the device and every token of it, here and at the homeserver), even
//! when `client_id` is missing or another's; an unknown or already revoked token is no
//! error. Always `200 {}` unless the form is malformed.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use vouch_core::secrets::token_hash;

use super::error::{OAuthError, OAuthForm};
use crate::client_ip::ClientIp;
use crate::state::AppState;

/// The revocation form.
#[derive(Debug, Deserialize)]
pub struct RevokeForm {
    token: Option<String>,
    token_type_hint: Option<String>,
}

/// # `POST /oauth2/revoke`
pub async fn revoke_route(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    OAuthForm(form): OAuthForm<RevokeForm>,
) -> Result<Json<serde_json::Value>, OAuthError> {
    state
        .limits
        .refresh_per_ip
        .check_ip(ip)
        .map_err(OAuthError::from)?;
    let Some(token) = form.token.as_deref().filter(|t| !t.is_empty()) else {
        return Err(OAuthError::invalid_request("token is required"));
    };
    let hash = token_hash(token);
    // An OpenID Connect sign-in's token has no session behind it.
    if state.db.revoke_oidc_token(&hash).await? {
        tracing::info!("OpenID Connect access token revoked");
        return Ok(Json(serde_json::json!({})));
    }
    let refresh_first = form.token_type_hint.as_deref() == Some("refresh_token");
    let as_access = async {
        Ok::<_, OAuthError>(
            state
                .db
                .access_token(&hash)
                .await?
                .map(|t| (t.user_id, t.device_id)),
        )
    };
    let owner = if refresh_first {
        match state
            .db
            .refresh_token_owner(&hash)
            .await?
            .map(|o| (o.user_id, o.device_id))
        {
            Some(owner) => Some(owner),
            None => as_access.await?,
        }
    } else {
        match as_access.await? {
            Some(owner) => Some(owner),
            None => state
                .db
                .refresh_token_owner(&hash)
                .await?
                .map(|o| (o.user_id, o.device_id)),
        }
    };
    if let Some((user_id, device_id)) = owner {
        state
            .accounts()
            .log_out(&user_id, std::slice::from_ref(&device_id))
            .await?;
        tracing::info!(user_id, device_id, "session revoked");
    }
    Ok(Json(serde_json::json!({})))
}
