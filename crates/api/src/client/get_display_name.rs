use axum::extract::State;
use ruma::api::client::profile::get_display_name;

use crate::client::get_profile::local_profile;
use crate::error::ApiResult;
use crate::ruma_axum::{Ruma, RumaResponse};
use crate::state::AppState;

/// # `GET /_matrix/client/v3/profile/{userId}/displayname`
pub async fn get_display_name_route(
    State(state): State<AppState>,
    body: Ruma<get_display_name::v3::Request>,
) -> ApiResult<RumaResponse<get_display_name::v3::Response>> {
    let user = local_profile(&state, body.user_id.as_str()).await?;
    Ok(RumaResponse(get_display_name::v3::Response::new(
        user.displayname,
    )))
}
