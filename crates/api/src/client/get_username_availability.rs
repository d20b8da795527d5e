use axum::extract::State;
use ruma::api::client::account::get_username_availability;

use crate::client::register::{check_available, parse_localpart};
use crate::client_ip::ClientIp;
use crate::error::{ApiError, ApiResult};
use crate::ruma_axum::{Ruma, RumaResponse};
use crate::state::AppState;

/// # `GET /_matrix/client/v3/register/available`
///
/// Does not reserve the name.
pub async fn get_username_availability_route(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    body: Ruma<get_username_availability::v3::Request>,
) -> ApiResult<RumaResponse<get_username_availability::v3::Response>> {
    if !state.config.registration.enabled {
        return Err(ApiError::forbidden(
            "Registration has been disabled on this server",
        ));
    }
    // An unthrottled check lists a server's users at hundreds a second.
    state.limits.username_available_per_ip.check_ip(ip)?;
    let localpart = parse_localpart(&state, &body.username)?;
    check_available(&state, &localpart).await?;
    Ok(RumaResponse(get_username_availability::v3::Response::new(
        true,
    )))
}
