use axum::extract::State;
use ruma::api::client::device::get_device;

use crate::auth::AuthedUser;
use crate::client::get_devices::to_ruma;
use crate::error::{ApiError, ApiResult};
use crate::ruma_axum::{Ruma, without_nulls};
use crate::state::AppState;

/// # `GET /_matrix/client/v3/devices/{deviceId}`
pub async fn get_device_route(
    State(state): State<AppState>,
    user: AuthedUser,
    body: Ruma<get_device::v3::Request>,
) -> ApiResult<axum::response::Response> {
    let device = state
        .db
        .device(&user.user_id, body.device_id.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found("No such device"))?;
    Ok(without_nulls(get_device::v3::Response::new(to_ruma(
        device,
    ))))
}
