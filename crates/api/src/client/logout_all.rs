use axum::extract::State;
use ruma::api::client::session::logout_all;

use crate::auth::AuthedUser;
use crate::error::ApiResult;
use crate::ruma_axum::{Ruma, RumaResponse};
use crate::state::AppState;

/// # `POST /_matrix/client/v3/logout/all`
///
/// Ends every access token and deletes every device of the user, this one included.
pub async fn logout_all_route(
    State(state): State<AppState>,
    user: AuthedUser,
    _body: Ruma<logout_all::v3::Request>,
) -> ApiResult<RumaResponse<logout_all::v3::Response>> {
    state.accounts().log_out_all(&user.user_id).await?;
    Ok(RumaResponse(logout_all::v3::Response::new()))
}
