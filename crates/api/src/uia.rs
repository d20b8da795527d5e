//! The UIA gate: loads and stores sessions, checks what each stage's `auth` dict proves, and
//! asks `vouch_core::uia` what that means. Handlers call [`authenticate`] and get either the
//! proof that a flow is complete or a 401 with flows, session and progress.
//!
//! New stage types plug in at [`verify_stage`]; nothing else changes.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ruma::api::client::uiaa::{AuthFlow, AuthType, UiaaInfo, UserIdentifier};
use ruma::api::error::{ErrorKind, StandardErrorBody};
use serde_json::{Value, json};
use vouch_core::clock::duration_ms;
use vouch_core::localpart::localpart_of;
use vouch_core::secrets::new_opaque_id;
use vouch_core::uia::{
    self, DUMMY, EMAIL_IDENTITY, Flow, MSISDN, Operation, PASSWORD, REGISTRATION_TOKEN,
    RegistrationRequirements, TERMS, UiaSession,
};

use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, Services};

/// A completed flow: the session it was completed in and what its stages proved.
#[derive(Debug, Clone)]
pub struct UiaPassed {
    /// The session ID. For `/register` it is spent together with the account; for every
    /// other operation it is already spent.
    pub session_id: String,
    /// `(stage, result)` for each completed stage.
    pub results: Vec<(String, Value)>,
}

impl UiaPassed {
    /// The result of `stage`, if it was completed.
    pub fn result(&self, stage: &str) -> Option<&Value> {
        self.results
            .iter()
            .find(|(s, _)| s == stage)
            .map(|(_, r)| r)
    }

    /// The user a password or 3PID stage identified.
    pub fn identified_user(&self) -> Option<&str> {
        [PASSWORD, EMAIL_IDENTITY, MSISDN]
            .iter()
            .find_map(|stage| self.result(stage)?.get("user_id")?.as_str())
    }

    /// The registration token an `m.login.registration_token` stage accepted.
    pub fn registration_token(&self) -> Option<&str> {
        self.result(REGISTRATION_TOKEN)?.get("token")?.as_str()
    }

    /// The validated addresses the email and phone stages proved.
    pub fn threepids(&self) -> Vec<ProvenThreepid> {
        self.results
            .iter()
            .filter(|(stage, _)| stage == EMAIL_IDENTITY || stage == MSISDN)
            .filter_map(|(_, r)| {
                Some(ProvenThreepid {
                    medium: r.get("medium")?.as_str()?.parse().ok()?,
                    address: r.get("address")?.as_str()?.to_owned(),
                    validated_at: r.get("validated_at")?.as_i64()?,
                    sid: r.get("sid")?.as_str()?.to_owned(),
                })
            })
            .collect()
    }
}

/// An address an email or phone stage proved.
#[derive(Debug, Clone)]
pub struct ProvenThreepid {
    /// Email or phone number.
    pub medium: vouch_core::threepid::Medium,
    /// The canonical address.
    pub address: String,
    /// When it was validated (ms since the epoch).
    pub validated_at: i64,
    /// The validation session that proved it, spent with the operation.
    pub sid: String,
}

/// The flows offered for `op`: the `[uia.flows]` override, or the built-in ones.
pub fn flows_for(state: &Services, op: Operation) -> Vec<Flow> {
    if let Some(flows) = state.config.uia.flows.get(op.as_str()) {
        return flows.clone();
    }
    match op {
        Operation::Register => {
            let reg = &state.config.registration;
            let media = threepid_stages(state);
            let required: Vec<String> = media
                .iter()
                .filter(|(medium, _)| reg.require_3pid.iter().any(|m| m == medium))
                .map(|(_, stage)| (*stage).to_owned())
                .collect();
            let offered = || media.iter().map(|(_, stage)| (*stage).to_owned()).collect();
            uia::registration_flows(&RegistrationRequirements {
                token: reg.registration_token_required,
                terms: !reg.terms.is_empty(),
                optional_3pid_stages: if required.is_empty() {
                    offered()
                } else {
                    Vec::new()
                },
                required_3pid_stages: required,
            })
        }
        // A forgotten password is reset by proving control of an address.
        Operation::ResetPassword => threepid_stages(state)
            .into_iter()
            .map(|(_, stage)| vec![stage.to_owned()])
            .collect(),
        Operation::ChangePassword
        | Operation::Deactivate
        | Operation::DeleteDevices
        | Operation::AddThreepid => vec![vec![PASSWORD.to_owned()]],
    }
}

/// The 3PID stages this server can run: (medium, stage), for the media switched on.
fn threepid_stages(state: &Services) -> Vec<(&'static str, &'static str)> {
    let mut stages = Vec::new();
    if state.config.email.enabled {
        stages.push(("email", EMAIL_IDENTITY));
    }
    if state.config.sms.enabled {
        stages.push(("msisdn", MSISDN));
    }
    stages
}

/// The `params` of the 401 body: the terms policies when a flow has `m.login.terms`.
fn uia_params(state: &Services, flows: &[Flow]) -> Value {
    let mut params = serde_json::Map::new();
    if flows.iter().flatten().any(|s| s == TERMS) {
        let mut policies = serde_json::Map::new();
        for p in &state.config.registration.terms {
            let entry = policies
                .entry(p.id.clone())
                .or_insert_with(|| json!({ "version": p.version }));
            entry[&p.lang] = json!({ "name": p.name, "url": p.url });
        }
        params.insert(TERMS.into(), json!({ "policies": policies }));
    }
    Value::Object(params)
}

fn uia_info(
    state: &Services,
    flows: &[Flow],
    session: &str,
    completed: &[String],
    error: Option<ApiError>,
) -> ApiError {
    let mut info = UiaaInfo::new(
        flows
            .iter()
            .map(|f| AuthFlow::new(f.iter().map(|s| AuthType::from(s.as_str())).collect()))
            .collect(),
    );
    info.session = Some(session.to_owned());
    info.completed = completed
        .iter()
        .map(|s| AuthType::from(s.as_str()))
        .collect();
    info.params = serde_json::value::to_raw_value(&uia_params(state, flows)).ok();
    if let Some(ApiError::Matrix { kind, message }) = error {
        info.auth_error = Some(Box::new(StandardErrorBody::new(kind, message)));
    }
    ApiError::Uia(Box::new(info))
}

/// Runs UIA for `op`. `user_id` is the logged-in user, if the request had an access token.
///
/// Returns the completed flow, or an error to answer: a 401 UIA body (new session, progress,
/// or a failed stage with its errcode), or a plain error for a session that cannot be used.
pub async fn authenticate(
    state: &AppState,
    op: Operation,
    user_id: Option<&str>,
    auth: Option<&Value>,
    ip: IpAddr,
    binding: Option<&str>,
) -> ApiResult<UiaPassed> {
    let flows = flows_for(state, op);
    let now = state.now();
    let auth = match auth {
        None => {
            let session = start_session(state, op, user_id, binding, now, ip).await?;
            return Err(uia_info(state, &flows, &session.id, &[], None));
        }
        Some(Value::Object(map)) => map,
        Some(_) => return Err(ApiError::bad_json("auth must be an object")),
    };

    let session = match auth.get("session") {
        None | Some(Value::Null) => start_session(state, op, user_id, binding, now, ip).await?,
        Some(Value::String(id)) => {
            let Some(stored) = state.db.uia_session(id).await? else {
                return Err(unknown_session());
            };
            stored
                .session
                .check_use(op, user_id, binding, now)
                .map_err(|e| match e {
                    uia::SessionMismatch::Expired => unknown_session(),
                    uia::SessionMismatch::OtherOperation | uia::SessionMismatch::OtherRequest => {
                        ApiError::forbidden(e.to_string())
                    }
                })?;
            stored.session
        }
        Some(_) => return Err(ApiError::bad_json("auth.session must be a string")),
    };
    let mut completed = session.completed.clone();

    match auth.get("type") {
        None | Some(Value::Null) => {}
        Some(Value::String(stage)) => {
            if let Err(rejection) = uia::check_stage(&flows, &completed, stage) {
                let kind = match rejection {
                    uia::StageRejection::NotOffered(_) => ErrorKind::Unrecognized,
                    uia::StageRejection::OutOfOrder(_) => ErrorKind::Forbidden,
                };
                let err = ApiError::new(kind, rejection.to_string());
                return Err(uia_info(state, &flows, &session.id, &completed, Some(err)));
            }
            match verify_stage(state, op, &session.id, user_id, stage, auth, ip).await? {
                Ok(result) => {
                    state
                        .db
                        .complete_uia_stage(&session.id, stage, &result, now)
                        .await?;
                    if !completed.contains(stage) {
                        completed.push(stage.clone());
                    }
                }
                Err(err) => {
                    vouch_metrics::UIA
                        .with_label_values(&[op.as_str(), "stage_failed"])
                        .inc();
                    return Err(uia_info(state, &flows, &session.id, &completed, Some(err)));
                }
            }
        }
        Some(_) => {
            let err = ApiError::bad_json("auth.type must be a string");
            return Err(uia_info(state, &flows, &session.id, &completed, Some(err)));
        }
    }

    if uia::completed_flow(&flows, &completed).is_none() {
        return Err(uia_info(state, &flows, &session.id, &completed, None));
    }
    let results = match state.db.uia_session(&session.id).await? {
        Some(stored) => stored.results,
        None => return Err(unknown_session()),
    };
    // Registration spends the session in the transaction that creates the account, so a
    // failed creation leaves the session usable. Everything else spends it now: exactly
    // one request gets to act on a completed session.
    let passed = UiaPassed {
        session_id: session.id,
        results,
    };
    if op != Operation::Register {
        if !state.db.claim_uia_session(&passed.session_id).await? {
            return Err(unknown_session());
        }
        for proven in passed.threepids() {
            state.db.consume_validation(&proven.sid, now).await?;
        }
    }
    vouch_metrics::UIA
        .with_label_values(&[op.as_str(), "completed"])
        .inc();
    Ok(passed)
}

fn unknown_session() -> ApiError {
    ApiError::Custom {
        status: http::StatusCode::BAD_REQUEST,
        errcode: "M_UNKNOWN",
        message: "Unknown or expired authentication session; start again without a session".into(),
    }
}

async fn start_session(
    state: &Services,
    op: Operation,
    user_id: Option<&str>,
    binding: Option<&str>,
    now: i64,
    ip: IpAddr,
) -> ApiResult<UiaSession> {
    // Every session is a stored row: without this, anonymous `POST /account/deactivate {}`
    // would write thousands a second.
    state.limits.uia_sessions_per_ip.check_ip(ip)?;
    let id = new_opaque_id(state.secrets.as_ref());
    let expires_at = now.saturating_add(duration_ms(state.config.uia.session_lifetime));
    state
        .db
        .create_uia_session(&id, op, user_id, binding, now, expires_at)
        .await?;
    vouch_metrics::UIA
        .with_label_values(&[op.as_str(), "started"])
        .inc();
    Ok(UiaSession {
        id,
        operation: op,
        user_id: user_id.map(str::to_owned),
        binding: binding.map(str::to_owned),
        expires_at,
        completed: Vec::new(),
    })
}

/// Checks what one stage's `auth` dict proves. `Ok(Ok(result))`: the stage is complete;
/// `Ok(Err(e))`: it failed and may be retried (answered as a 401 with `e`'s errcode);
/// `Err`: the request fails outright.
async fn verify_stage(
    state: &AppState,
    op: Operation,
    session_id: &str,
    user_id: Option<&str>,
    stage: &str,
    auth: &serde_json::Map<String, Value>,
    ip: IpAddr,
) -> ApiResult<Result<Value, ApiError>> {
    if uia::REGISTRATION_ONLY.contains(&stage) && op != Operation::Register {
        return Ok(Err(ApiError::forbidden(format!(
            "{stage} is only valid when registering"
        ))));
    }
    // Stages that can be guessed spend one of the session's guesses first, so that
    // concurrent guesses in one session cannot pass the cap together.
    if (stage == PASSWORD || stage == REGISTRATION_TOKEN)
        && !state
            .db
            .spend_uia_guess(session_id, i64::from(state.config.uia.max_stage_failures))
            .await?
    {
        return Err(ApiError::forbidden(
            "Too many failed attempts in this authentication session; start a new one",
        ));
    }
    Ok(match stage {
        DUMMY => Ok(json!({})),
        TERMS => {
            let accepted: BTreeMap<&str, &str> = state
                .config
                .registration
                .terms
                .iter()
                .map(|p| (p.id.as_str(), p.version.as_str()))
                .collect();
            Ok(json!({ "policies": accepted }))
        }
        REGISTRATION_TOKEN => {
            let Some(token) = auth.get("token").and_then(Value::as_str) else {
                return Ok(Err(ApiError::missing_param("auth.token is required")));
            };
            match state.db.registration_token(token).await? {
                Some(t) if t.is_valid(state.now()) => Ok(json!({ "token": token })),
                _ => Err(ApiError::forbidden("Invalid registration token")),
            }
        }
        PASSWORD => verify_password_stage(state, user_id, auth, ip).await?,
        EMAIL_IDENTITY | MSISDN => {
            let medium = if stage == MSISDN { "msisdn" } else { "email" };
            crate::threepid::verify_threepid_stage(state, op, session_id, user_id, medium, auth)
                .await?
        }
        other => Err(ApiError::new(
            ErrorKind::Unrecognized,
            format!("Authentication type {other} is not supported here"),
        )),
    })
}

/// `m.login.password`: `identifier` (or the legacy top-level `user`) and `password`. For a
/// logged-in request the identified user must be the caller.
async fn verify_password_stage(
    state: &AppState,
    caller: Option<&str>,
    auth: &serde_json::Map<String, Value>,
    ip: IpAddr,
) -> ApiResult<Result<Value, ApiError>> {
    // The same limits as `/login`: every password check costs a hash.
    state.limits.login_per_ip.check_ip(ip)?;
    let Some(password) = auth.get("password").and_then(Value::as_str) else {
        return Ok(Err(ApiError::missing_param("auth.password is required")));
    };
    let named = match auth.get("identifier") {
        Some(raw) => match serde_json::from_value::<UserIdentifier>(raw.clone()) {
            Ok(UserIdentifier::Matrix(m)) => Some(m.user),
            Ok(_) => {
                return Ok(Err(ApiError::forbidden(
                    "Only m.id.user identifiers are supported here",
                )));
            }
            Err(e) => return Ok(Err(ApiError::bad_json(format!("auth.identifier: {e}")))),
        },
        None => auth.get("user").and_then(Value::as_str).map(str::to_owned),
    };
    let user_id = match (named, caller) {
        (Some(name), caller) => {
            let Some(local) = localpart_of(&name, state.server_name()) else {
                return Ok(Err(ApiError::forbidden("Invalid username or password")));
            };
            let full = format!("@{}:{}", local.to_lowercase(), state.server_name());
            if caller.is_some_and(|c| c != full) {
                return Ok(Err(ApiError::forbidden(
                    "The identifier does not match the logged-in user",
                )));
            }
            full
        }
        (None, Some(caller)) => caller.to_owned(),
        (None, None) => return Ok(Err(ApiError::missing_param("auth.identifier is required"))),
    };
    state.limits.login_per_account.check(&user_id)?;
    state.limits.failed_login_per_account.check(&user_id)?;
    if state.policy.too_long(password) {
        return Ok(Err(ApiError::forbidden("Invalid username or password")));
    }
    let user = state
        .db
        .user(&user_id)
        .await?
        .filter(|u| u.deactivated_at.is_none());
    let stored = user.and_then(|u| u.password_hash);
    if state.verify_password(password.to_owned(), stored).await? {
        Ok(Ok(json!({ "user_id": user_id })))
    } else {
        Ok(Err(ApiError::forbidden("Invalid username or password")))
    }
}

/// Completes `stage` in an existing session from outside the API request (the fallback
/// page). `Ok(Err(e))`: the stage failed and may be retried.
pub async fn complete_stage_out_of_band(
    state: &AppState,
    session_id: &str,
    stage: &str,
    auth: &serde_json::Map<String, Value>,
    ip: IpAddr,
) -> ApiResult<Result<(), ApiError>> {
    let now = state.now();
    let Some(stored) = state.db.uia_session(session_id).await? else {
        return Ok(Err(unknown_session()));
    };
    if stored.session.expires_at <= now {
        return Ok(Err(unknown_session()));
    }
    let op = stored.session.operation;
    let flows = flows_for(state, op);
    if let Err(rejection) = uia::check_stage(&flows, &stored.session.completed, stage) {
        return Ok(Err(ApiError::forbidden(rejection.to_string())));
    }
    match verify_stage(
        state,
        op,
        session_id,
        stored.session.user_id.as_deref(),
        stage,
        auth,
        ip,
    )
    .await?
    {
        Ok(result) => {
            state
                .db
                .complete_uia_stage(session_id, stage, &result, now)
                .await?;
            Ok(Ok(()))
        }
        Err(e) => Ok(Err(e)),
    }
}
