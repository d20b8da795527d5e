use axum::extract::State;
use ruma::OwnedMxcUri;
use ruma::api::client::profile::get_avatar_url;

use crate::client::get_profile::local_profile;
use crate::error::ApiResult;
use crate::ruma_axum::{Ruma, RumaResponse};
use crate::state::AppState;

/// # `GET /_matrix/client/v3/profile/{userId}/avatar_url`
pub async fn get_avatar_url_route(
    State(state): State<AppState>,
    body: Ruma<get_avatar_url::v3::Request>,
) -> ApiResult<RumaResponse<get_avatar_url::v3::Response>> {
    let user = local_profile(&state, body.user_id.as_str()).await?;
    Ok(RumaResponse(get_avatar_url::v3::Response::new(
        user.avatar_url.map(OwnedMxcUri::from),
    )))
}
