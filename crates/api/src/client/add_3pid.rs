use axum::extract::State;
use ruma::api::client::account::add_3pid;
use ruma::api::error::ErrorKind;
use vouch_core::threepid::ThirdPartyId;
use vouch_core::uia::Operation;
use vouch_core::validation::Purpose;

use vouch_core::secrets::token_hash;

use crate::accounts::AccountError;
use crate::auth::AuthedUser;
use crate::client_ip::ClientIp;
use crate::error::{ApiError, ApiResult};
use crate::ruma_axum::{Ruma, RumaResponse};
use crate::state::AppState;
use crate::threepid::{own_session, refresh_delegated};
use crate::uia::authenticate;

/// Adds the address of a validated `/account/3pid/{medium}/requestToken` session to the
/// caller's account, after UIA; shared with the deprecated `POST /account/3pid`.
pub(crate) async fn add_validated_threepid(
    state: &AppState,
    user: &AuthedUser,
    sid: &str,
    client_secret: &str,
    auth: Option<&serde_json::Value>,
    creds: Option<&serde_json::Map<String, serde_json::Value>>,
    ip: std::net::IpAddr,
) -> ApiResult<()> {
    user.not_guest()?;
    user.no_oauth_uia(state)?;
    if !state.config.account.threepid_changes {
        return Err(ApiError::forbidden(
            "Changing email addresses and phone numbers is disabled on this server",
        ));
    }
    // Checked before UIA, so nobody types a password for a session that cannot work.
    // The deprecated endpoint documents 403 for this; `/3pid/add` lists no such error, so
    // it gets the generic 400 for a request that cannot be honoured.
    let not_validated = || {
        let message = "The address has not been validated; follow the link or enter the code first";
        match creds {
            Some(_) => ApiError::new(ErrorKind::ThreepidAuthFailed, message),
            None => ApiError::Custom {
                status: http::StatusCode::BAD_REQUEST,
                errcode: "M_THREEPID_AUTH_FAILED",
                message: message.into(),
            },
        }
    };
    // A session an identity server runs is asked about first (with the operator's token,
    // or the client's from the deprecated endpoint's `three_pid_creds`).
    let local = own_session(state, sid, client_secret).await?;
    if local
        .as_ref()
        .is_none_or(|s| s.session.validated_at.is_none())
    {
        let _ = refresh_delegated(state, Operation::AddThreepid, sid, client_secret, creds).await?;
    }
    let stored = own_session(state, sid, client_secret)
        .await?
        .ok_or_else(not_validated)?;
    if stored.session.purpose != Purpose::AddThreepid || !stored.session.usable_at(state.now()) {
        return Err(not_validated());
    }
    authenticate(
        state,
        Operation::AddThreepid,
        Some(&user.user_id),
        auth,
        ip,
        Some(&token_hash(sid)),
    )
    .await?;
    let validated_at = stored.session.validated_at.unwrap_or_default();
    let threepid = ThirdPartyId::parse(&stored.session.medium, &stored.session.address)
        .map_err(|e| ApiError::internal(format!("stored session address: {e}")))?;
    state
        .accounts()
        .add_validated_threepid(&user.user_id, &threepid, validated_at, sid)
        .await
        .map_err(|e| match e {
            AccountError::SessionSpent => not_validated(),
            e => e.into(),
        })
}

/// # `POST /_matrix/client/v3/account/3pid/add`
pub async fn add_3pid_route(
    State(state): State<AppState>,
    user: AuthedUser,
    ClientIp(ip): ClientIp,
    body: Ruma<add_3pid::v3::Request>,
) -> ApiResult<RumaResponse<add_3pid::v3::Response>> {
    add_validated_threepid(
        &state,
        &user,
        body.sid.as_str(),
        body.client_secret.as_str(),
        body.auth.as_ref(),
        None,
        ip,
    )
    .await?;
    Ok(RumaResponse(add_3pid::v3::Response::new()))
}
