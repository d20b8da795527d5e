use axum::extract::State;
use ruma::OwnedDeviceId;
use ruma::api::client::session::login::{
    self, v3::DiscoveryInfo, v3::HomeserverInfo, v3::LoginInfo,
};
use ruma::api::client::uiaa::UserIdentifier;
use ruma::api::error::ErrorKind;
use vouch_core::localpart::localpart_of;
use vouch_core::threepid::{Msisdn, ThirdPartyId};

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
    state.limits.login_per_ip.check_ip(ip)?;
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

    // The per-account limits are keyed on what the login names: the user ID, or the
    // canonical third-party identifier whether or not anyone owns it. Draining the bucket
    // of an address then says nothing about the account behind it.
    let (key, user_id) = match named {
        Named::User(name) => {
            let user_id = localpart_of(&name, state.server_name())
                .map(|local| format!("@{}:{}", local.to_lowercase(), state.server_name()));
            let key = user_id
                .clone()
                .unwrap_or_else(|| format!("user:{}", name.to_lowercase()));
            (key, user_id)
        }
        Named::Threepid(medium, address) => {
            // Addresses are stored canonical; an unknown or malformed one is a 403 like a
            // bad password (the spec: an unknown 3PID is 403).
            match ThirdPartyId::parse(medium, &address) {
                Ok(id) => (
                    format!("{}:{}", id.medium(), id.address()),
                    state
                        .db
                        .threepid_owner(id.medium().as_str(), id.address())
                        .await?,
                ),
                Err(_) => (format!("{medium}:{}", address.to_lowercase()), None),
            }
        }
        Named::Phone(country, number) => match Msisdn::parse(&country, &number) {
            Ok(m) => (
                format!("msisdn:{}", m.as_str()),
                state.db.threepid_owner("msisdn", m.as_str()).await?,
            ),
            Err(_) => (format!("msisdn:{country}:{number}"), None),
        },
    };
    state.limits.login_per_account.check(&key)?;
    state.limits.failed_login_per_account.check(&key)?;
    // No password longer than the policy allows was ever set: refuse it before it waits
    // for a hashing slot (whoever is named, so the answer says nothing about the account).
    if state.policy.too_long(&info.password) {
        return Err(ApiError::forbidden(BAD_CREDENTIALS));
    }
    let user = match &user_id {
        Some(id) => state.db.user(id).await?,
        None => None,
    };
    // The account's own budget, whichever identifier names it: guesses through its user
    // ID and each of its addresses share it. Spent silently: when it is used up the
    // attempt fails like a wrong password (after a hash, for the same timing), so no
    // identifier's answers tell which account another identifier belongs to.
    let account_spent = user_id.as_ref().is_some_and(|id| {
        state
            .limits
            .failed_login_per_account
            .check(&format!("account:{id}"))
            .is_err()
    });
    let stored = user
        .as_ref()
        .filter(|_| !account_spent)
        .and_then(|u| u.password_hash.clone());
    // An unknown user, a user on another server or an unknown 3PID costs one hash too, like
    // a real check, and gets the same answer as a wrong password.
    if !state
        .verify_password(info.password.clone(), stored.clone())
        .await?
    {
        return Err(ApiError::forbidden(BAD_CREDENTIALS));
    }
    let (Some(user_id), Some(user), Some(mut hash)) = (user_id, user, stored) else {
        return Err(ApiError::forbidden(BAD_CREDENTIALS));
    };
    // Only someone who knows the password learns that the account is deactivated.
    if user.deactivated_at.is_some() {
        return Err(ApiError::new(
            ErrorKind::UserDeactivated,
            "This account has been deactivated",
        ));
    }
    if state.hasher.needs_rehash(&hash) {
        // A stronger hash for next time; a failure here must not fail the login.
        match state.hash_password(info.password.clone()).await {
            Ok(new) => match state.db.upgrade_password_hash(&user_id, &hash, &new).await {
                Ok(true) => hash = new,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(user_id, error = %e, "could not store the upgraded password hash");
                }
            },
            Err(e) => tracing::warn!(user_id, error = ?e, "could not rehash the password"),
        }
    }

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
