use axum::extract::State;
use ruma::api::client::account::delete_3pid;

use crate::auth::AuthedUser;
use crate::client::unbind_3pid::canonical;
use crate::error::{ApiError, ApiResult};
use crate::ruma_axum::{Ruma, RumaResponse};
use crate::state::AppState;

/// # `POST /_matrix/client/v3/account/3pid/delete`
///
/// Removes the address from the account (200 even if it was not there, as Synapse does) and
/// unbinds it from the identity servers it was bound to through Vouch (or the one named):
/// `success` when every unbind succeeded, `no-support` when it was never bound or one failed.
pub async fn delete_3pid_route(
    State(state): State<AppState>,
    user: AuthedUser,
    body: Ruma<delete_3pid::v3::Request>,
) -> ApiResult<RumaResponse<delete_3pid::v3::Response>> {
    user.not_guest()?;
    if !state.config.account.threepid_changes {
        return Err(ApiError::forbidden(
            "Changing email addresses and phone numbers is disabled on this server",
        ));
    }
    let (medium, address) = canonical(&body.medium, &body.address)?;
    let typed = medium
        .parse()
        .map_err(|_| ApiError::invalid_param(format!("unknown medium {medium}")))?;
    let (_, result) = state
        .accounts()
        .remove_and_unbind_threepid(&user.user_id, typed, &address, body.id_server.as_deref())
        .await?;
    Ok(RumaResponse(delete_3pid::v3::Response::new(result)))
}
