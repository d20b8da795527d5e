use axum::extract::State;
use ruma::OwnedDeviceId;
use ruma::api::client::session::login::{
    self, v3::DiscoveryInfo, v3::HomeserverInfo, v3::LoginInfo,
};
use ruma::api::client::uiaa::UserIdentifier;
use ruma::api::error::ErrorKind;

use crate::accounts::{Checked, LoginId};
use crate::client::own_user_id;
use crate::client_ip::ClientIp;
use crate::error::{ApiError, ApiResult};
use crate::ruma_axum::{Ruma, RumaResponse};
use crate::state::AppState;

/// # `POST /_matrix/client/v3/login`
///
/// `m.login.password` with an `m.id.user` or `m.id.thirdparty` identifier, or the legacy
/// top-level `user` / `medium` + `address`.
pub async fn login_route(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    body: Ruma<login::v3::Request>,
) -> ApiResult<RumaResponse<login::v3::Response>> {
    state.limits.login_per_ip.check_ip(ip)?;
    let request = body.body;
    let Checked { user_id, hash } = match &request.login_info {
        LoginInfo::Password(info) => password(&state, info).await?,
        // The legacy SSO redirect's token (the sign-in pages hand it out when OAuth 2.0 is
        // on): single-use, short-lived, issued under a password hash that must still be
        // the account's.
        LoginInfo::Token(t) if state.config.oauth.enabled => {
            let spent = state
                .db
                .spend_login_token(&vouch_core::secrets::token_hash(&t.token), state.now())
                .await?;
            let Some((user_id, hash)) = spent else {
                return Err(ApiError::forbidden(
                    "The login token is invalid, spent or expired",
                ));
            };
            Checked { user_id, hash }
        }
        _ => {
            return Err(ApiError::new(
                ErrorKind::Unknown,
                "Unsupported login type; use m.login.password",
            ));
        }
    };

    crate::accounts::check_new_device(
        request.device_id.as_ref().map(|d| d.as_str()),
        request.initial_device_display_name.as_deref(),
    )?;
    let issued = state.accounts().issue_tokens(
        request.device_id.as_ref().map(ToString::to_string),
        request.initial_device_display_name.clone(),
        request.refresh_token,
        Some(ip.to_string()),
    );
    state
        .accounts()
        .log_in(&user_id, &hash, &issued.login)
        .await?;

    let mut response = login::v3::Response::new(
        own_user_id(&user_id)?,
        issued.access_token,
        OwnedDeviceId::from(issued.login.device_id.as_str()),
    );
    response.refresh_token = issued.refresh_token;
    response.expires_in = issued.expires_in;
    response.well_known = Some(DiscoveryInfo::new(HomeserverInfo::new(
        state
            .config
            .public_baseurl()
            .trim_end_matches('/')
            .to_owned(),
    )));
    Ok(RumaResponse(response))
}

/// `m.login.password`: who the identifier names, and whether the password is theirs.
async fn password(state: &AppState, info: &login::v3::Password) -> ApiResult<Checked> {
    #[expect(
        deprecated,
        reason = "legacy clients still send user / medium + address"
    )]
    let named = match (&info.identifier, &info.user, &info.medium, &info.address) {
        (Some(UserIdentifier::Matrix(m)), _, _, _) => LoginId::User(m.user.clone()),
        (Some(UserIdentifier::Email(e)), _, _, _) => LoginId::Threepid("email", e.address.clone()),
        (Some(UserIdentifier::Msisdn(m)), _, _, _) => LoginId::Threepid("msisdn", m.number.clone()),
        (Some(UserIdentifier::PhoneNumber(p)), _, _, _) => {
            LoginId::Phone(p.country.clone(), p.phone.clone())
        }
        (Some(other), _, _, _) => {
            return Err(ApiError::invalid_param(format!(
                "Login with identifier type {} is not supported",
                other.identifier_type()
            )));
        }
        (None, Some(user), _, _) => LoginId::User(user.clone()),
        (None, None, Some(medium), Some(address)) if medium == "email" => {
            LoginId::Threepid("email", address.clone())
        }
        (None, None, Some(medium), Some(address)) if medium == "msisdn" => {
            LoginId::Threepid("msisdn", address.clone())
        }
        _ => return Err(ApiError::missing_param("identifier is required")),
    };

    state.accounts().check_login(named, &info.password).await
}
