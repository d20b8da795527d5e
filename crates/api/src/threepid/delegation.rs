//! Sessions an identity server runs: handing a requestToken to a trusted one, and asking it
//! later whether the session was validated.

use ruma::api::error::ErrorKind;
use serde_json::{Map, Value, json};
use vouch_config::IdentityServerRequests;
use vouch_core::threepid::ThirdPartyId;
use vouch_core::uia::Operation;

use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, Services};

use super::request_token::{Raw, Requested, TokenRequest};
use super::{Target, purpose_for, unauthorized};

/// Whether this requestToken goes to an identity server, and with which token: the
/// operator's delegate for the medium, or (`requests = "delegate"`) the trusted server the
/// client named with its own token.
pub(super) fn delegation(
    state: &Services,
    medium: &str,
    json: Option<&Map<String, Value>>,
) -> ApiResult<Option<(crate::identity::IdentityServer, String)>> {
    let cfg = &state.config.identity_server;
    if let Some(d) = cfg.delegate.get(medium) {
        let server = crate::identity::require_trusted(state, &d.base_url)?;
        return Ok(Some((server, d.access_token.expose().to_owned())));
    }
    let text = |k: &str| json.and_then(|j| j.get(k)).and_then(Value::as_str);
    match (cfg.requests, text("id_server"), text("id_access_token")) {
        (IdentityServerRequests::Delegate, Some(id_server), Some(token)) => Ok(Some((
            crate::identity::require_trusted(state, id_server)?,
            token.to_owned(),
        ))),
        _ => Ok(None),
    }
}

/// Proxies a requestToken to an identity server (v2 API, Bearer token) and records the
/// session it runs, so the UIA stage and `/account/3pid/add` can ask it later.
pub(super) async fn delegate_request(
    state: &AppState,
    req: &TokenRequest<'_>,
    target: &Target,
    server: &crate::identity::IdentityServer,
    token: &str,
) -> ApiResult<Requested> {
    let medium = target.medium();
    let mut body = json!({ "client_secret": req.client_secret, "send_attempt": req.send_attempt });
    match (&req.address, target) {
        (Raw::Phone { country, number }, _) => {
            body["country"] = json!(country);
            body["phone_number"] = json!(number);
        }
        (_, t) => body["email"] = json!(t.address()),
    }
    if let Some(link) = req.next_link {
        body["next_link"] = json!(link);
    }
    let path = format!("/_matrix/identity/v2/validate/{medium}/requestToken");
    let (status, answer) = crate::identity::identity_call(
        state,
        server,
        http::Method::POST,
        &path,
        Some(format!("Bearer {token}")),
        Some(&body),
    )
    .await?;
    if !status.is_success() {
        return Err(crate::identity::identity_error(state, status, &answer));
    }
    let sid = answer
        .get("sid")
        .and_then(Value::as_str)
        .filter(|s| vouch_core::threepid::valid_client_secret(s))
        .ok_or_else(|| ApiError::Custom {
            status: http::StatusCode::BAD_GATEWAY,
            errcode: "M_UNKNOWN",
            message: "The identity server answered without a usable sid".into(),
        })?
        .to_owned();
    let base = server.base.to_string();
    state
        .db
        .create_delegated_validation(
            &sid,
            medium,
            target.address(),
            req.client_secret,
            req.purpose,
            &base,
            state.now(),
        )
        .await?;
    tracing::info!(
        medium,
        id_server = server.name,
        "requestToken delegated to an identity server"
    );
    let submit_url = answer
        .get("submit_url")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(Requested {
        sid,
        submit_url,
        delegated: true,
    })
}

/// Asks the identity server that runs `sid` (recorded at requestToken, or named in the
/// client's `threepid_creds` with `requests = "delegate"`) whether it is validated, and
/// records the answer. `Ok(Err)`: not usable, with the error for the client.
pub async fn refresh_delegated(
    state: &AppState,
    op: Operation,
    sid: &str,
    client_secret: &str,
    creds: Option<&Map<String, Value>>,
) -> ApiResult<Result<(), ApiError>> {
    let cfg = &state.config.identity_server;
    let text = |k: &str| creds.and_then(|c| c.get(k)).and_then(Value::as_str);
    let (server, known) = match state.db.delegated_to(sid).await? {
        Some(base) => match crate::identity::trusted_identity_server(state, &base) {
            Some(s) => (s, true),
            None => {
                return Ok(Err(ApiError::new(
                    ErrorKind::ServerNotTrusted,
                    "That identity server is no longer trusted",
                )));
            }
        },
        None => match (cfg.requests, text("id_server")) {
            (IdentityServerRequests::Delegate, Some(is)) => {
                match crate::identity::trusted_identity_server(state, is) {
                    Some(s) => (s, false),
                    None => {
                        return Ok(Err(ApiError::new(
                            ErrorKind::ServerNotTrusted,
                            format!("This server does not trust {is}"),
                        )));
                    }
                }
            }
            (IdentityServerRequests::Reject, Some(_)) => {
                return Ok(Err(ApiError::new(
                    ErrorKind::ServerNotTrusted,
                    "This server does not use identity servers",
                )));
            }
            _ => {
                return Ok(Err(unauthorized(
                    "Unknown validation session; request a new one",
                )));
            }
        },
    };
    let operator = cfg.delegate.values().find(|d| {
        crate::identity::trusted_identity_server(state, &d.base_url)
            .is_some_and(|s| s.name == server.name)
    });
    let Some(token) = text("id_access_token")
        .map(str::to_owned)
        .or_else(|| operator.map(|d| d.access_token.expose().to_owned()))
    else {
        return Ok(Err(ApiError::missing_param(
            "threepid_creds.id_access_token is needed for a session an identity server runs",
        )));
    };
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("sid", sid)
        .append_pair("client_secret", client_secret)
        .finish();
    let path = format!("/_matrix/identity/v2/3pid/getValidated3pid?{query}");
    let (status, answer) = crate::identity::identity_call(
        state,
        &server,
        http::Method::GET,
        &path,
        Some(format!("Bearer {token}")),
        None,
    )
    .await?;
    if !status.is_success() {
        let why = answer
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("not validated");
        return Ok(Err(unauthorized(&format!(
            "Unable to get validated threepid from the identity server: {why}"
        ))));
    }
    let (Some(medium), Some(address), Some(validated_at)) = (
        answer.get("medium").and_then(Value::as_str),
        answer.get("address").and_then(Value::as_str),
        answer.get("validated_at").and_then(Value::as_i64),
    ) else {
        return Ok(Err(unauthorized(
            "The identity server's answer was incomplete",
        )));
    };
    let Ok(reported) = ThirdPartyId::parse(medium, address) else {
        return Ok(Err(unauthorized(
            "The identity server reported an address Vouch cannot use",
        )));
    };
    let (medium, address) = (reported.medium().as_str(), reported.address().to_owned());
    let now = state.now();
    if !known {
        let base = server.base.to_string();
        state
            .db
            .create_delegated_validation(
                sid,
                medium,
                &address,
                client_secret,
                purpose_for(op),
                &base,
                now,
            )
            .await?;
    }
    state
        .db
        .mark_delegated_validated(sid, &address, validated_at, now)
        .await?;
    Ok(Ok(()))
}
