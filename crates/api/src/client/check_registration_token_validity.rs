use axum::extract::State;
use ruma::api::client::account::check_registration_token_validity;

use crate::client_ip::ClientIp;
use crate::error::{ApiError, ApiResult};
use crate::ruma_axum::{Ruma, RumaResponse};
use crate::state::AppState;

/// # `GET /_matrix/client/v1/register/m.login.registration_token/validity`
///
/// Rate limited with registration, so that it cannot be used to guess tokens quickly.
pub async fn check_registration_token_validity_route(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    body: Ruma<check_registration_token_validity::v1::Request>,
) -> ApiResult<RumaResponse<check_registration_token_validity::v1::Response>> {
    if !state.config.registration.enabled {
        return Err(ApiError::forbidden(
            "Registration has been disabled on this server",
        ));
    }
    state.limits.registration_per_ip.check_ip(ip)?;
    let token = &body.token;
    if token.is_empty()
        || token.len() > 64
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
    {
        return Err(ApiError::invalid_param(
            "A registration token is 1 to 64 characters of [A-Za-z0-9._~-]",
        ));
    }
    let valid = state
        .db
        .registration_token(token)
        .await?
        .is_some_and(|t| t.is_valid(state.now()));
    Ok(RumaResponse(
        check_registration_token_validity::v1::Response::new(valid),
    ))
}
