use axum::extract::State;
use ruma::api::client::device::update_device;

use crate::auth::AuthedUser;
use crate::error::{ApiError, ApiResult};
use crate::ruma_axum::{Ruma, RumaResponse};
use crate::state::AppState;

/// Longest device display name accepted (Synapse's limit).
const MAX_DISPLAY_NAME: usize = 100;

/// # `PUT /_matrix/client/v3/devices/{deviceId}`
pub async fn update_device_route(
    State(state): State<AppState>,
    user: AuthedUser,
    body: Ruma<update_device::v3::Request>,
) -> ApiResult<RumaResponse<update_device::v3::Response>> {
    if body
        .display_name
        .as_ref()
        .is_some_and(|n| n.chars().count() > MAX_DISPLAY_NAME)
    {
        return Err(ApiError::invalid_param(format!(
            "A device display name is at most {MAX_DISPLAY_NAME} characters"
        )));
    }
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
