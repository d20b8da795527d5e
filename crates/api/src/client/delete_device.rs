use axum::extract::State;
use ruma::api::client::device::delete_device;
use vouch_core::uia::Operation;

use vouch_core::secrets::token_hash;

use crate::auth::AuthedUser;
use crate::client_ip::ClientIp;
use crate::error::ApiResult;
use crate::ruma_axum::{Ruma, RumaResponse};
use crate::state::AppState;
use crate::uia::authenticate;

/// # `DELETE /_matrix/client/v3/devices/{deviceId}`
///
/// UIA, then the device and its tokens are gone (200 even if it already was).
pub async fn delete_device_route(
    State(state): State<AppState>,
    user: AuthedUser,
    ClientIp(ip): ClientIp,
    body: Ruma<delete_device::v3::Request>,
) -> ApiResult<RumaResponse<delete_device::v3::Response>> {
    user.no_oauth_uia(&state)?;
    authenticate(
        &state,
        Operation::DeleteDevices,
        Some(&user.user_id),
        body.auth.as_ref(),
        ip,
        Some(&token_hash(body.device_id.as_str())),
    )
    .await?;
    state
        .accounts()
        .log_out(&user.user_id, &[body.device_id.to_string()])
        .await?;
    Ok(RumaResponse(delete_device::v3::Response::new()))
}
