use axum::extract::State;
use ruma::api::client::session::logout;

use crate::auth::AuthedUser;
use crate::error::ApiResult;
use crate::ruma_axum::{Ruma, RumaResponse};
use crate::state::AppState;

/// # `POST /_matrix/client/v3/logout`
///
/// Ends this access token and deletes its device.
pub async fn logout_route(
    State(state): State<AppState>,
    user: AuthedUser,
    _body: Ruma<logout::v3::Request>,
) -> ApiResult<RumaResponse<logout::v3::Response>> {
    state
        .accounts()
        .log_out(&user.user_id, std::slice::from_ref(&user.device_id))
        .await?;
    Ok(RumaResponse(logout::v3::Response::new()))
}
