//! The UIA stages `m.login.email.identity` and `m.login.msisdn`.

use ruma::api::error::ErrorKind;
use serde_json::{Map, Value, json};
use vouch_core::uia::Operation;
use vouch_storage::Claim;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

use super::delegation::refresh_delegated;
use super::submission::own_session;
use super::{messages, policy};
use super::{purpose_for, unauthorized};

/// The UIA stage `m.login.email.identity` (and later `m.login.msisdn`): `threepid_creds`
/// (or the legacy `threepidCreds`, an object or a one-element array, with `clientSecret`)
/// must name a validated session of Vouch's for this operation, which this UIA session then
/// holds. A session Vouch issued is checked locally whatever `id_server` says (Element sends
/// its identity server's host there without a token).
pub async fn verify_threepid_stage(
    state: &AppState,
    op: Operation,
    uia_session: &str,
    caller: Option<&str>,
    medium: &str,
    auth: &Map<String, Value>,
) -> ApiResult<Result<Value, ApiError>> {
    let creds = match auth
        .get("threepid_creds")
        .or_else(|| auth.get("threepidCreds"))
    {
        Some(Value::Array(items)) => items.first(),
        other => other,
    };
    let Some(Value::Object(creds)) = creds else {
        return Ok(Err(ApiError::missing_param(
            "auth.threepid_creds is required",
        )));
    };
    let text = |key: &str| creds.get(key).and_then(Value::as_str);
    let (Some(sid), Some(client_secret)) = (
        text("sid"),
        text("client_secret").or_else(|| text("clientSecret")),
    ) else {
        return Ok(Err(ApiError::missing_param(
            "threepid_creds needs sid and client_secret",
        )));
    };
    let local = own_session(state, sid, client_secret).await?;
    let needs_identity_server = match &local {
        None => true,
        Some(s) => s.session.validated_at.is_none() && state.db.delegated_to(sid).await?.is_some(),
    };
    let refreshed = match needs_identity_server {
        true => refresh_delegated(state, op, sid, client_secret, Some(creds)).await?,
        false => Ok(()),
    };
    if let Err(e) = refreshed {
        return Ok(Err(e));
    }
    let Some(stored) = own_session(state, sid, client_secret).await? else {
        return Ok(Err(unauthorized(
            "Unknown validation session; request a new one",
        )));
    };
    let session = &stored.session;
    if session.medium != medium || session.purpose != purpose_for(op) {
        return Ok(Err(unauthorized(
            "This validation session was made for something else",
        )));
    }
    let now = state.now();
    if op == Operation::Register && policy::registration_gated(state) {
        // The flow's order put the token and terms stages before this one, so the
        // registration mail may go out now.
        if state.db.release_held_messages(sid, now).await? > 0 {
            messages::wake_mailer(state);
        }
    }
    // A decoy (inhibit_3pid_errors) lives like a real session whose link was not followed.
    if session.validated_at.is_none() && !session.exhausted(policy::max_attempts(state, medium)) {
        return Ok(Err(unauthorized(
            "Unable to get validated threepid: follow the link in the email or enter the code first",
        )));
    }
    if !session.usable_at(now) {
        return Ok(Err(unauthorized(
            "This validation session cannot be used any more; request a new one",
        )));
    }
    if state.db.claim_validation(sid, uia_session).await? == Claim::Taken {
        return Ok(Err(unauthorized(
            "This validation session is in use by another request",
        )));
    }
    let owner = state.db.threepid_owner(medium, &session.address).await?;
    match (op, caller, &owner) {
        (Operation::Register, _, Some(_)) => {
            return Ok(Err(ApiError::new(
                ErrorKind::ThreepidInUse,
                if medium == "msisdn" {
                    "That phone number is already in use"
                } else {
                    "That email address is already in use"
                },
            )));
        }
        (Operation::Register, _, None) => {}
        (_, Some(me), Some(o)) if o == me => {}
        (_, None, Some(_)) => {}
        _ => {
            return Ok(Err(unauthorized(
                "That address does not belong to this account",
            )));
        }
    }
    Ok(Ok(json!({
        "medium": medium,
        "address": session.address,
        "sid": sid,
        "validated_at": session.validated_at,
        "user_id": owner,
    })))
}
