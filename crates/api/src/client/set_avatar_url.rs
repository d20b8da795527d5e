use axum::extract::State;
use ruma::api::client::profile::set_avatar_url;

use crate::auth::AuthedUser;
use crate::error::{ApiError, ApiResult};
use crate::ruma_axum::{Ruma, RumaResponse};
use crate::state::AppState;

/// # `PUT /_matrix/client/v3/profile/{userId}/avatar_url`
pub async fn set_avatar_url_route(
    State(state): State<AppState>,
    user: AuthedUser,
    body: Ruma<set_avatar_url::v3::Request>,
) -> ApiResult<RumaResponse<set_avatar_url::v3::Response>> {
    if body.user_id.as_str() != user.user_id {
        return Err(ApiError::forbidden("You can only change your own avatar"));
    }
    if !state.config.account.avatar_change {
        return Err(ApiError::forbidden(
            "Changing the avatar is disabled on this server",
        ));
    }
    let url = body
        .avatar_url
        .as_ref()
        .map(|u| u.as_str())
        .filter(|u| !u.is_empty());
    if url.is_some_and(|u| !u.starts_with("mxc://") || u.len() > 1000) {
        return Err(ApiError::invalid_param(
            "avatar_url must be an mxc:// URI of at most 1000 bytes",
        ));
    }
    state.accounts().set_avatar_url(&user.user_id, url).await?;
    Ok(RumaResponse(set_avatar_url::v3::Response::new()))
}
