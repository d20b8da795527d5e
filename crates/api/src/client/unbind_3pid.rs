use axum::extract::State;
use ruma::api::client::account::unbind_3pid;
use ruma::thirdparty::Medium;
use vouch_core::threepid::{Email, Msisdn};

use crate::auth::AuthedUser;
use crate::error::{ApiError, ApiResult};
use crate::identity::unbind_address;
use crate::ruma_axum::{Ruma, RumaResponse};
use crate::state::AppState;

/// The canonical form of an address a client names.
pub(crate) fn canonical(medium: &Medium, address: &str) -> ApiResult<(&'static str, String)> {
    Ok(match medium {
        Medium::Email => (
            "email",
            Email::parse(address)
                .map(|e| e.as_str().to_owned())
                .unwrap_or_else(|_| address.to_owned()),
        ),
        Medium::Msisdn => (
            "msisdn",
            Msisdn::parse_international(address)
                .map(|m| m.as_str().to_owned())
                .unwrap_or_else(|_| address.to_owned()),
        ),
        other => return Err(ApiError::invalid_param(format!("unknown medium {other}"))),
    })
}

/// # `POST /_matrix/client/v3/account/3pid/unbind`
///
/// Removes the address from identity servers (with a request signed by the homeserver) but
/// keeps it on the account.
pub async fn unbind_3pid_route(
    State(state): State<AppState>,
    user: AuthedUser,
    body: Ruma<unbind_3pid::v3::Request>,
) -> ApiResult<RumaResponse<unbind_3pid::v3::Response>> {
    let (medium, address) = canonical(&body.medium, &body.address)?;
    let result = unbind_address(
        &state,
        &user.user_id,
        medium,
        &address,
        body.id_server.as_deref(),
    )
    .await?;
    Ok(RumaResponse(unbind_3pid::v3::Response::new(result)))
}
