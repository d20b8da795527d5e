use axum::extract::State;
use ruma::OwnedDeviceId;
use ruma::api::client::session::login::{
    self, v3::DiscoveryInfo, v3::HomeserverInfo, v3::LoginInfo,
};
use ruma::api::client::uiaa::UserIdentifier;
use ruma::api::error::ErrorKind;
use vouch_core::localpart::localpart_of;
use vouch_core::threepid::{Email, Msisdn};

use crate::client::own_user_id;
use crate::client_ip::ClientIp;
use crate::error::{ApiError, ApiResult};
use crate::ruma_axum::{Ruma, RumaResponse};
use crate::state::AppState;

/// Said for every wrong-credential case, so that answers do not tell which part was wrong.
const BAD_CREDENTIALS: &str = "Invalid username or password";

/// Who a login names, before the password is checked.
enum Named {
    /// A localpart or user ID.
    User(String),
    /// `m.id.phone`: (country, number as typed).
    Phone(String, String),
    /// A 3PID: (medium, address as sent).
    Threepid(&'static str, String),
}

/// # `POST /_matrix/client/v3/login`
///
/// `m.login.password` with an `m.id.user` or `m.id.thirdparty` identifier, or the legacy
/// top-level `user` / `medium` + `address`.
pub async fn login_route(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    body: Ruma<login::v3::Request>,
) -> ApiResult<RumaResponse<login::v3::Response>> {
    state.limits.login_per_ip.check(&ip.to_string())?;
    let request = body.body;
    let LoginInfo::Password(info) = &request.login_info else {
        return Err(ApiError::new(
            ErrorKind::Unknown,
            "Unsupported login type; use m.login.password",
        ));
    };
    #[expect(
        deprecated,
        reason = "legacy clients still send user / medium + address"
    )]
    let named = match (&info.identifier, &info.user, &info.medium, &info.address) {
        (Some(UserIdentifier::Matrix(m)), _, _, _) => Named::User(m.user.clone()),
        (Some(UserIdentifier::Email(e)), _, _, _) => Named::Threepid("email", e.address.clone()),
        (Some(UserIdentifier::Msisdn(m)), _, _, _) => Named::Threepid("msisdn", m.number.clone()),
        (Some(UserIdentifier::PhoneNumber(p)), _, _, _) => {
            Named::Phone(p.country.clone(), p.phone.clone())
        }
        (Some(other), _, _, _) => {
            return Err(ApiError::invalid_param(format!(
                "Login with identifier type {} is not supported",
                other.identifier_type()
            )));
        }
        (None, Some(user), _, _) => Named::User(user.clone()),
        (None, None, Some(medium), Some(address)) if medium == "email" => {
            Named::Threepid("email", address.clone())
        }
        (None, None, Some(medium), Some(address)) if medium == "msisdn" => {
            Named::Threepid("msisdn", address.clone())
        }
        _ => return Err(ApiError::missing_param("identifier is required")),
    };

    let user_id = match named {
        Named::User(name) => localpart_of(&name, state.server_name())
            .map(|local| format!("@{}:{}", local.to_lowercase(), state.server_name())),
        Named::Threepid(medium, address) => {
            // Addresses are stored canonical; an unknown or malformed one is a 403 like a
            // bad password (the spec: an unknown 3PID is 403).
            let canonical = match medium {
                "email" => Email::parse(&address).ok().map(|e| e.as_str().to_owned()),
                _ => Msisdn::parse_international(&address)
                    .ok()
                    .map(|m| m.as_str().to_owned()),
            };
            match canonical {
                Some(c) => state.db.threepid_owner(medium, &c).await?,
                None => None,
            }
        }
        Named::Phone(country, number) => match Msisdn::parse(&country, &number) {
            Ok(m) => state.db.threepid_owner("msisdn", m.as_str()).await?,
            Err(_) => None,
        },
    };
    // A user on another server or an unknown 3PID still costs one hash, like a real check.
    let Some(user_id) = user_id else {
        let _ = state.verify_password(info.password.clone(), None).await?;
        return Err(ApiError::forbidden(BAD_CREDENTIALS));
    };

    state.limits.login_per_account.check(&user_id)?;
    state.limits.failed_login_per_account.peek(&user_id)?;
    let user = state.db.user(&user_id).await?;
    let stored = user.as_ref().and_then(|u| u.password_hash.clone());
    let deactivated = user.as_ref().is_some_and(|u| u.deactivated_at.is_some());
    if deactivated {
        let _ = state.verify_password(info.password.clone(), None).await?;
        return Err(ApiError::new(
            ErrorKind::UserDeactivated,
            "This account has been deactivated",
        ));
    }
    if !state
        .verify_password(info.password.clone(), stored.clone())
        .await?
    {
        state.limits.failed_login_per_account.check(&user_id)?;
        return Err(ApiError::forbidden(BAD_CREDENTIALS));
    }
    if let Some(old) = stored.filter(|h| state.hasher.needs_rehash(h)) {
        // A stronger hash for next time; a failure here must not fail the login.
        match state.hash_password(info.password.clone()).await {
            Ok(new) => {
                if let Err(e) = state.db.upgrade_password_hash(&user_id, &old, &new).await {
                    tracing::warn!(user_id, error = %e, "could not store the upgraded password hash");
                }
            }
            Err(e) => tracing::warn!(user_id, error = ?e, "could not rehash the password"),
        }
    }

    let issued = state.issue_tokens(
        request.device_id.as_ref().map(ToString::to_string),
        request.initial_device_display_name.clone(),
        request.refresh_token,
        Some(ip.to_string()),
    );
    state
        .db
        .create_login(&user_id, &issued.login, state.now())
        .await?;
    tracing::info!(user_id, device_id = issued.login.device_id, "logged in");

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
