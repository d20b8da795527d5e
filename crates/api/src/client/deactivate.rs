use axum::extract::State;
use ruma::api::client::account::{ThirdPartyIdRemovalStatus, deactivate};
use vouch_core::uia::Operation;

use crate::auth::MaybeAuthed;
use crate::client_ip::ClientIp;
use crate::error::{ApiError, ApiResult};
use crate::ruma_axum::{Ruma, RumaResponse};
use crate::state::AppState;
use crate::uia::authenticate;

/// # `POST /_matrix/client/v3/account/deactivate`
///
/// UIA, then the account loses its password, devices, tokens and addresses (and with
/// `erase` its profile). Nothing was bound to an identity server, so the unbind result is
/// `success`, as the spec requires when there is nothing to unbind.
pub async fn deactivate_route(
    State(state): State<AppState>,
    MaybeAuthed(user): MaybeAuthed,
    ClientIp(ip): ClientIp,
    body: Ruma<deactivate::v3::Request>,
) -> ApiResult<RumaResponse<deactivate::v3::Response>> {
    if let Some(user) = &user {
        user.not_guest()?;
        user.no_oauth_uia(&state)?;
    }
    let caller = user.as_ref().map(|u| u.user_id.as_str());
    let binding = format!("erase={}", body.erase);
    let passed = authenticate(
        &state,
        Operation::Deactivate,
        caller,
        body.auth.as_ref(),
        ip,
        Some(&binding),
    )
    .await?;
    let user_id = match (caller, passed.identified_user()) {
        (Some(id), _) | (None, Some(id)) => id.to_owned(),
        (None, None) => {
            return Err(ApiError::forbidden(
                "The authentication did not identify an account",
            ));
        }
    };
    // The spec wants `success` when there was nothing to unbind.
    let only = match body.id_server.as_deref() {
        Some(named) => Some(crate::identity::require_trusted(&state, named)?.name),
        None => None,
    };
    let unbound = state
        .accounts()
        .deactivate_and_unbind(&user_id, body.erase, only.as_deref())
        .await?;
    let result = if unbound {
        ThirdPartyIdRemovalStatus::Success
    } else {
        ThirdPartyIdRemovalStatus::NoSupport
    };
    Ok(RumaResponse(deactivate::v3::Response::new(result)))
}
