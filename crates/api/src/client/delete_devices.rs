use axum::extract::State;
use ruma::api::client::device::delete_devices;
use vouch_core::uia::Operation;

use vouch_core::secrets::token_hash;

use crate::auth::AuthedUser;
use crate::client_ip::ClientIp;
use crate::error::ApiResult;
use crate::ruma_axum::{Ruma, RumaResponse};
use crate::state::AppState;
use crate::uia::authenticate;

/// # `POST /_matrix/client/v3/delete_devices`
pub async fn delete_devices_route(
    State(state): State<AppState>,
    user: AuthedUser,
    ClientIp(ip): ClientIp,
    body: Ruma<delete_devices::v3::Request>,
) -> ApiResult<RumaResponse<delete_devices::v3::Response>> {
    user.no_oauth_uia(&state)?;
    let mut ids: Vec<String> = body.devices.iter().map(ToString::to_string).collect();
    ids.sort();
    authenticate(
        &state,
        Operation::DeleteDevices,
        Some(&user.user_id),
        body.auth.as_ref(),
        ip,
        Some(&token_hash(&ids.join("\0"))),
    )
    .await?;
    state.accounts().log_out(&user.user_id, &ids).await?;
    Ok(RumaResponse(delete_devices::v3::Response::new()))
}
