use axum::extract::State;
use ruma::api::client::profile::set_display_name;

use crate::auth::AuthedUser;
use crate::error::{ApiError, ApiResult};
use crate::ruma_axum::{Ruma, RumaResponse};
use crate::state::AppState;

/// # `PUT /_matrix/client/v3/profile/{userId}/displayname`
pub async fn set_display_name_route(
    State(state): State<AppState>,
    user: AuthedUser,
    body: Ruma<set_display_name::v3::Request>,
) -> ApiResult<RumaResponse<set_display_name::v3::Response>> {
    if body.user_id.as_str() != user.user_id {
        return Err(ApiError::forbidden(
            "You can only change your own display name",
        ));
    }
    if !state.config.account.displayname_change {
        return Err(ApiError::forbidden(
            "Changing the display name is disabled on this server",
        ));
    }
    let name = body.displayname.as_deref().filter(|n| !n.is_empty());
    state
        .accounts()
        .set_displayname(&user.user_id, name)
        .await?;
    Ok(RumaResponse(set_display_name::v3::Response::new()))
}
