use axum::extract::State;
use ruma::api::client::account::change_password;
use ruma::api::error::ErrorKind;
use vouch_core::uia::Operation;

use vouch_core::secrets::token_hash;

use crate::accounts::Logout;
use crate::auth::MaybeAuthed;
use crate::client_ip::ClientIp;
use crate::error::{ApiError, ApiResult};
use crate::ruma_axum::{Ruma, RumaResponse};
use crate::state::AppState;
use crate::uia::authenticate;

/// # `POST /_matrix/client/v3/account/password`
///
/// With an access token: UIA by password, then the new password; with `logout_devices`
/// (the default) every other device and its tokens end, the caller's stays. Without one
/// (forgotten password): UIA by a verified email or phone number, which identifies the
/// account.
pub async fn change_password_route(
    State(state): State<AppState>,
    MaybeAuthed(user): MaybeAuthed,
    ClientIp(ip): ClientIp,
    body: Ruma<change_password::v3::Request>,
) -> ApiResult<RumaResponse<change_password::v3::Response>> {
    if !state.config.account.password_change {
        return Err(ApiError::forbidden(
            "Password changes are disabled on this server",
        ));
    }
    if let Some(user) = &user {
        user.not_guest()?;
        user.no_oauth_uia(&state)?;
    }
    state.accounts().check_password(&body.new_password)?;

    let (op, caller) = match &user {
        Some(u) => (Operation::ChangePassword, Some(u.user_id.as_str())),
        None => (Operation::ResetPassword, None),
    };
    if crate::uia::flows_for(&state, op).is_empty() {
        return Err(ApiError::new(
            ErrorKind::MissingToken,
            "This server cannot reset passwords without an access token; log in first",
        ));
    }
    // The session is bound to this new password: it cannot finish a change to another.
    let binding = token_hash(&format!("{}\0{}", body.new_password, body.logout_devices));
    let passed = authenticate(&state, op, caller, body.auth.as_ref(), ip, Some(&binding)).await?;
    let user_id = match (&user, passed.identified_user()) {
        (Some(u), _) => u.user_id.clone(),
        (None, Some(id)) => id.to_owned(),
        (None, None) => {
            return Err(ApiError::forbidden(
                "The authentication did not identify an account",
            ));
        }
    };
    let caller = user.as_ref().map(|u| u.device_id.as_str());
    state
        .accounts()
        .set_password(
            &user_id,
            body.new_password.clone(),
            Logout::from_flag(body.logout_devices, caller),
        )
        .await?;
    Ok(RumaResponse(change_password::v3::Response::new()))
}
