use axum::extract::State;
use ruma::api::client::device::update_device;

use crate::auth::AuthedUser;
use crate::error::{ApiError, ApiResult};
use crate::ruma_axum::{Ruma, RumaResponse};
use crate::state::AppState;

/// # `PUT /_matrix/client/v3/devices/{deviceId}`
pub async fn update_device_route(
    State(state): State<AppState>,
    user: AuthedUser,
    body: Ruma<update_device::v3::Request>,
) -> ApiResult<RumaResponse<update_device::v3::Response>> {
    crate::accounts::check_new_device(None, body.display_name.as_deref())?;
    if body.display_name.is_some() {
        let found = state
            .db
            .rename_device(
                &user.user_id,
                body.device_id.as_str(),
                body.display_name.as_deref(),
            )
            .await?;
        if !found {
            return Err(ApiError::not_found("No such device"));
        }
    } else if state
        .db
        .device(&user.user_id, body.device_id.as_str())
        .await?
        .is_none()
    {
        return Err(ApiError::not_found("No such device"));
    }
    Ok(RumaResponse(update_device::v3::Response::new()))
}
