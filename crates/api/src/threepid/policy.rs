//! What a server accepts: which addresses and numbers, which identity-server fields, when
//! registration mail waits, how many wrong guesses a session takes.

use ruma::api::error::ErrorKind;
use serde_json::{Map, Value};
use vouch_config::IdentityServerRequests;
use vouch_core::threepid::{Email, Msisdn};

use crate::error::{ApiError, ApiResult};
use crate::state::Services;

/// MSC2263: `id_server` is optional. When given it needs `id_access_token` (on all three
/// endpoints alike); with `[identity_server] requests = "reject"` it is refused. In the
/// default `ignore` mode the named server is never contacted.
pub fn check_identity_server(state: &Services, json: Option<&Map<String, Value>>) -> ApiResult<()> {
    let Some(json) = json else { return Ok(()) };
    let present = |key: &str| json.get(key).is_some_and(|v| !v.is_null());
    if !present("id_server") {
        return Ok(());
    }
    if !present("id_access_token") {
        return Err(ApiError::missing_param(
            "id_access_token is required when id_server is given",
        ));
    }
    if state.config.identity_server.requests == IdentityServerRequests::Reject {
        return Err(ApiError::new(
            ErrorKind::ServerNotTrusted,
            "This server verifies addresses itself and does not use identity servers",
        ));
    }
    Ok(())
}

/// Parses an address and holds it to the server's policy.
pub fn accept_email(state: &Services, raw: &str) -> ApiResult<Email> {
    let email = Email::parse(raw).map_err(|e| ApiError::invalid_param(e.to_string()))?;
    if email.as_str().parse::<lettre::Address>().is_err() {
        return Err(ApiError::invalid_param(
            "the email address is not one mail can be sent to",
        ));
    }
    if !state.allowed_3pids.is_empty()
        && !state
            .allowed_3pids
            .iter()
            .any(|r| r.is_match(email.as_str()))
    {
        return Err(ApiError::new(
            ErrorKind::ThreepidDenied,
            "This server does not accept that email address",
        ));
    }
    Ok(email)
}

/// Parses a phone number and holds it to the server's country rules.
pub fn accept_msisdn(state: &Services, country: &str, number: &str) -> ApiResult<Msisdn> {
    // No country: the number is in international form (the sign-up page asks for it so).
    let parsed = if country.is_empty() {
        Msisdn::parse_international(number)
    } else {
        Msisdn::parse(country, number)
    };
    let msisdn = parsed.map_err(|e| ApiError::invalid_param(e.to_string()))?;
    let sms = &state.config.sms;
    let c = msisdn.country();
    if (!sms.allowed_countries.is_empty() && !sms.allowed_countries.iter().any(|a| a == c))
        || sms.denied_countries.iter().any(|d| d == c)
    {
        return Err(ApiError::new(
            ErrorKind::ThreepidDenied,
            "This server does not send codes to numbers in that country",
        ));
    }
    Ok(msisdn)
}

/// Whether registration mail waits until the cheap gates (registration token, terms)
/// are passed in a UIA session.
pub(super) fn registration_gated(state: &Services) -> bool {
    state.config.registration.registration_token_required
        || !state.config.registration.terms.is_empty()
}

/// Wrong secrets a session of `medium` takes before it is burned.
pub fn max_attempts(state: &Services, medium: &str) -> i64 {
    i64::from(if medium == "msisdn" {
        state.config.sms.max_attempts
    } else {
        state.config.email.max_attempts
    })
}
