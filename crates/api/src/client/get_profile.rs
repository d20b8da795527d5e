use axum::extract::State;
use ruma::api::client::profile::get_profile;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::ruma_axum::{Ruma, RumaResponse};
use crate::state::{AppState, Services};

/// The local, active user's profile, or 404 `M_NOT_FOUND` (also for other servers' users:
/// Vouch has no federation).
pub(crate) async fn local_profile(
    state: &Services,
    user_id: &str,
) -> ApiResult<vouch_storage::User> {
    state
        .db
        .user(user_id)
        .await?
        .filter(|u| u.deactivated_at.is_none())
        .ok_or_else(|| ApiError::not_found("Profile not found"))
}

/// # `GET /_matrix/client/v3/profile/{userId}`
pub async fn get_profile_route(
    State(state): State<AppState>,
    body: Ruma<get_profile::v3::Request>,
) -> ApiResult<RumaResponse<get_profile::v3::Response>> {
    let user = local_profile(&state, body.user_id.as_str()).await?;
    let mut response = get_profile::v3::Response::new();
    if let Some(name) = user.displayname {
        response.set("displayname".into(), Value::String(name));
    }
    if let Some(url) = user.avatar_url {
        response.set("avatar_url".into(), Value::String(url));
    }
    Ok(RumaResponse(response))
}
