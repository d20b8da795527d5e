use axum::extract::State;
use ruma::api::client::account::{ThirdPartyIdRemovalStatus, unbind_3pid};
use ruma::thirdparty::Medium;
use vouch_core::threepid::{Email, Msisdn};
use vouch_storage::Binding;

use crate::auth::AuthedUser;
use crate::error::{ApiError, ApiResult};
use crate::ruma_axum::{Ruma, RumaResponse};
use crate::state::{AppState, Services};

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

/// Unbinds an address from the servers it was bound to (or the one named): the
/// `id_server_unbind_result`. `success` only when every unbind succeeded; `no-support` when
/// there was nowhere to unbind from or one failed.
pub(crate) async fn unbind_address(
    state: &Services,
    user_id: &str,
    medium: &str,
    address: &str,
    id_server: Option<&str>,
) -> ApiResult<ThirdPartyIdRemovalStatus> {
    let mut bindings = state.db.bindings(user_id, Some((medium, address))).await?;
    if let Some(named) = id_server {
        let server = crate::identity::require_trusted(state, named)?;
        bindings.retain(|b| b.id_server == server.name);
        if bindings.is_empty() {
            bindings.push(Binding {
                user_id: user_id.to_owned(),
                medium: medium.to_owned(),
                address: address.to_owned(),
                id_server: server.name,
            });
        }
    }
    if bindings.is_empty() {
        return Ok(ThirdPartyIdRemovalStatus::NoSupport);
    }
    Ok(if crate::identity::unbind_all(state, &bindings).await? {
        ThirdPartyIdRemovalStatus::Success
    } else {
        ThirdPartyIdRemovalStatus::NoSupport
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
