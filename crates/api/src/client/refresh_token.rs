use axum::extract::State;
use ruma::api::client::session::refresh_token;

use crate::client_ip::ClientIp;
use crate::error::{ApiError, ApiResult};
use crate::ruma_axum::{Ruma, RumaResponse};
use crate::state::AppState;

/// # `POST /_matrix/client/v3/refresh`
///
/// Spends the refresh token and issues a new pair on the same device. The old refresh token
/// and the access token issued with it stop working at once (a stricter reading of the spec,
/// which lets them live until the new pair is first used).
pub async fn refresh_token_route(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    body: Ruma<refresh_token::v3::Request>,
) -> ApiResult<RumaResponse<refresh_token::v3::Response>> {
    state.limits.refresh_per_ip.check_ip(ip)?;
    // An OAuth 2.0 session refreshes at the token endpoint, under its client and rotation
    // rules (the spec: clients use the API their token came from).
    let hash = vouch_core::secrets::token_hash(&body.refresh_token);
    if let Some(owner) = state.db.refresh_token_owner(&hash).await?
        && owner.oauth_client_id.is_some()
    {
        return Err(ApiError::unknown_token(false));
    }
    let accounts = state.accounts();
    let issued = accounts.issue_tokens(None, None, true, None);
    let refreshed = accounts
        .refresh(&body.refresh_token, &issued.login, false)
        .await?;
    if refreshed.is_none() {
        return Err(ApiError::unknown_token(false));
    }
    let mut response = refresh_token::v3::Response::new(issued.access_token);
    response.refresh_token = issued.refresh_token;
    response.expires_in_ms = issued.expires_in;
    Ok(RumaResponse(response))
}
