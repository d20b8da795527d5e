use axum::extract::State;
use ruma::api::client::account::{ThirdPartyIdRemovalStatus, delete_3pid};
use ruma::thirdparty::Medium;
use vouch_core::threepid::{Email, Msisdn};

use crate::auth::AuthedUser;
use crate::error::{ApiError, ApiResult};
use crate::ruma_axum::{Ruma, RumaResponse};
use crate::state::AppState;

/// # `POST /_matrix/client/v3/account/3pid/delete`
///
/// Removes the address from the account (200 even if it was not there, as Synapse does).
/// Vouch never bound it to an identity server, so there is nothing it could unbind:
/// `no-support`.
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
    let (medium, address) = match &body.medium {
        Medium::Email => (
            "email",
            Email::parse(&body.address)
                .map(|e| e.as_str().to_owned())
                .unwrap_or_else(|_| body.address.clone()),
        ),
        Medium::Msisdn => (
            "msisdn",
            Msisdn::parse_international(&body.address)
                .map(|m| m.as_str().to_owned())
                .unwrap_or_else(|_| body.address.clone()),
        ),
        other => return Err(ApiError::invalid_param(format!("unknown medium {other}"))),
    };
    if state
        .db
        .delete_threepid(&user.user_id, medium, &address)
        .await?
    {
        tracing::info!(user_id = user.user_id, medium, "address removed");
    }
    Ok(RumaResponse(delete_3pid::v3::Response::new(
        ThirdPartyIdRemovalStatus::NoSupport,
    )))
}
