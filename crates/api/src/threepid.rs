//! Verifying email addresses: the shared logic behind the three email requestToken
//! endpoints, the UIA `m.login.email.identity` stage, and the checks of a validated session
//! before an operation spends it.

use std::net::IpAddr;

use ruma::api::error::ErrorKind;
use serde_json::{Map, Value, json};
use vouch_config::IdentityServerRequests;
use vouch_core::clock::duration_ms;
use vouch_core::secrets::{constant_time_eq, new_opaque_id, random_string, token_hash};
use vouch_core::threepid::{Email, check_next_link};
use vouch_core::uia::Operation;
use vouch_core::validation::{Purpose, SendDecision};
use vouch_storage::{Claim, NewMail, NewValidation, StoredValidation};

use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, Services};

/// The path of the page behind the link in a verification mail (Vouch's own, not in the
/// Matrix spec).
pub const EMAIL_LINK_PATH: &str = "_vouch/email/validate";

/// Characters of a link token: 32 alphanumerics, about 190 bits.
const TOKEN_LEN: usize = 32;

/// A requestToken call, as the three endpoints share it.
pub struct EmailTokenRequest<'a> {
    /// What the session will be for.
    pub purpose: Purpose,
    /// The client's secret (grammar already checked by ruma).
    pub client_secret: &'a str,
    /// The address as typed.
    pub email: &'a str,
    /// The client's attempt counter.
    pub send_attempt: i64,
    /// Where to send the user after validating.
    pub next_link: Option<&'a str>,
    /// The raw body, for `id_server` / `id_access_token` (ruma drops a lone `id_server`).
    pub json: Option<&'a Map<String, Value>>,
    /// The client's address.
    pub ip: IpAddr,
}

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

impl Services {
    /// Parses an address and holds it to the server's policy.
    pub fn accept_email(&self, raw: &str) -> ApiResult<Email> {
        let email = Email::parse(raw).map_err(|e| ApiError::invalid_param(e.to_string()))?;
        if email.as_str().parse::<lettre::Address>().is_err() {
            return Err(ApiError::invalid_param(
                "the email address is not one mail can be sent to",
            ));
        }
        if !self.allowed_3pids.is_empty()
            && !self
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

    /// The link in a verification mail.
    fn email_link(&self, sid: &str, client_secret: &str, token: &str) -> String {
        let mut url = format!("{}{EMAIL_LINK_PATH}?", self.config.public_baseurl());
        url.push_str(
            &url::form_urlencoded::Serializer::new(String::new())
                .append_pair("sid", sid)
                .append_pair("client_secret", client_secret)
                .append_pair("token", token)
                .finish(),
        );
        url
    }

    /// Whether registration mail waits until the cheap gates (registration token, terms)
    /// are passed in a UIA session.
    fn registration_gated(&self) -> bool {
        self.config.registration.registration_token_required
            || !self.config.registration.terms.is_empty()
    }

    /// Checks the per-address and per-session send limits, counted in the database so that
    /// they hold across instances.
    async fn check_send_limits(&self, address: &str, sid: Option<&str>) -> ApiResult<()> {
        let limits = &self.config.rate_limits;
        if !limits.enabled {
            return Ok(());
        }
        let now = self.now();
        let over = |count: i64, oldest: Option<i64>, max: u32, window: i64| {
            (count >= i64::from(max)).then(|| {
                let wait = oldest.map_or(window, |o| o + window - now).max(1);
                ApiError::limit_exceeded(std::time::Duration::from_millis(
                    u64::try_from(wait).unwrap_or(1),
                ))
            })
        };
        let w = limits.email_per_address;
        let (n, oldest) = self
            .db
            .mails_to_since(address, now - duration_ms(w.window))
            .await?;
        if let Some(e) = over(n, oldest, w.max, duration_ms(w.window)) {
            return Err(e);
        }
        if let Some(sid) = sid {
            let w = limits.email_per_session;
            let (n, oldest) = self
                .db
                .mails_for_session_since(sid, now - duration_ms(w.window))
                .await?;
            if let Some(e) = over(n, oldest, w.max, duration_ms(w.window)) {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Renders mail `kind` to `address` as an outbox row.
    fn mail(
        &self,
        kind: &str,
        address: &str,
        sid: Option<&str>,
        link: String,
        held: bool,
    ) -> ApiResult<NewMail> {
        let ctx = self
            .composer
            .context(address, link, self.config.email.validation_token_lifetime);
        let composed = self
            .composer
            .compose(kind, &ctx, self.now(), self.secrets.as_ref())
            .map_err(|e| ApiError::internal(format!("composing {kind} mail: {e}")))?;
        Ok(NewMail {
            id: new_opaque_id(self.secrets.as_ref()),
            recipient: composed.recipient,
            sid: sid.map(str::to_owned),
            envelope_from: composed.envelope_from,
            message: composed.message,
            held,
        })
    }

    /// Rings the outbox worker.
    pub fn wake_mailer(&self) {
        self.mail_wake.notify_one();
    }
}

fn mail_kind(purpose: Purpose) -> &'static str {
    match purpose {
        Purpose::Register => "registration",
        Purpose::PasswordReset => "password_reset",
        Purpose::AddThreepid => "add_threepid",
    }
}

/// The shared requestToken: checks everything before anything is written, then creates or
/// reuses the session and queues its mail in the same transaction. Returns the `sid`.
pub async fn request_email_token(
    state: &AppState,
    req: EmailTokenRequest<'_>,
) -> ApiResult<String> {
    if !state.config.email.enabled {
        return Err(ApiError::new(
            ErrorKind::ThreepidMediumNotSupported,
            "This server does not verify email addresses",
        ));
    }
    if !vouch_core::threepid::valid_client_secret(req.client_secret) {
        return Err(ApiError::invalid_param(
            "client_secret must be 1 to 255 characters of [0-9a-zA-Z.=_-]",
        ));
    }
    check_identity_server(state, req.json)?;
    match req.purpose {
        Purpose::Register if !state.config.registration.enabled => {
            return Err(ApiError::forbidden(
                "Registration has been disabled on this server",
            ));
        }
        Purpose::AddThreepid if !state.config.account.threepid_changes => {
            return Err(ApiError::forbidden(
                "Changing email addresses is disabled on this server",
            ));
        }
        _ => {}
    }
    let email = state.accept_email(req.email)?;
    let next_link = req
        .next_link
        .map(|l| check_next_link(l, &state.config.email.next_link_domain_allowlist))
        .transpose()
        .map_err(|e| ApiError::invalid_param(e.to_string()))?
        .map(|u| u.to_string());
    state.limits.email_per_ip.check(&req.ip.to_string())?;

    let owner = state.db.threepid_owner("email", email.as_str()).await?;
    let refusal = match (req.purpose, &owner) {
        (Purpose::Register | Purpose::AddThreepid, Some(_)) => Some(ApiError::new(
            ErrorKind::ThreepidInUse,
            "That email address is already in use",
        )),
        (Purpose::PasswordReset, None) => Some(ApiError::new(
            ErrorKind::ThreepidNotFound,
            "No account has that email address",
        )),
        _ => None,
    };
    if let Some(refusal) = refusal {
        if !state.config.email.inhibit_3pid_errors {
            return Err(refusal);
        }
        return decoy(state, &req, &email, owner.is_some()).await;
    }

    let now = state.now();
    let lifetime = duration_ms(state.config.email.validation_token_lifetime);
    if let Some(existing) = state
        .db
        .find_validation("email", email.as_str(), req.client_secret, req.purpose)
        .await?
    {
        let sid = existing.session.sid.clone();
        if existing.session.on_request(req.send_attempt) == SendDecision::Resend {
            state.check_send_limits(email.as_str(), Some(&sid)).await?;
            let token = random_string(
                state.secrets.as_ref(),
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                TOKEN_LEN,
            );
            let held = req.purpose == Purpose::Register && state.registration_gated();
            let mail = state.mail(
                mail_kind(req.purpose),
                email.as_str(),
                Some(&sid),
                state.email_link(&sid, req.client_secret, &token),
                held,
            )?;
            if state
                .db
                .resend_validation(
                    &sid,
                    req.send_attempt,
                    &token_hash(&token),
                    now + lifetime,
                    &mail,
                    now,
                )
                .await?
            {
                state.wake_mailer();
            }
        }
        return Ok(sid);
    }

    state.check_send_limits(email.as_str(), None).await?;
    let sid = new_opaque_id(state.secrets.as_ref());
    let token = random_string(
        state.secrets.as_ref(),
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
        TOKEN_LEN,
    );
    let held = req.purpose == Purpose::Register && state.registration_gated();
    let mail = state.mail(
        mail_kind(req.purpose),
        email.as_str(),
        Some(&sid),
        state.email_link(&sid, req.client_secret, &token),
        held,
    )?;
    let new = NewValidation {
        sid: sid.clone(),
        medium: "email".into(),
        address: email.as_str().to_owned(),
        client_secret: req.client_secret.to_owned(),
        purpose: req.purpose,
        token_hash: Some(token_hash(&token)),
        token_expires_at: now + lifetime,
        send_attempt: req.send_attempt,
        next_link,
        decoy: false,
    };
    if state.db.create_validation(&new, Some(&mail), now).await? {
        if !held {
            state.wake_mailer();
        }
        return Ok(sid);
    }
    // A concurrent identical request created the session first: answer with its sid.
    state
        .db
        .find_validation("email", email.as_str(), req.client_secret, req.purpose)
        .await?
        .map(|s| s.session.sid)
        .ok_or_else(|| ApiError::internal("validation session vanished"))
}

/// `inhibit_3pid_errors`: answer like a real send. The session is stored (burned, so it
/// never validates) so that a retry gets the same `sid`, as a real one would; the owner of an
/// address in use is sent a notice (within the address's send limit) instead of a link.
async fn decoy(
    state: &AppState,
    req: &EmailTokenRequest<'_>,
    email: &Email,
    in_use: bool,
) -> ApiResult<String> {
    if let Some(existing) = state
        .db
        .find_validation("email", email.as_str(), req.client_secret, req.purpose)
        .await?
    {
        return Ok(existing.session.sid);
    }
    let now = state.now();
    let sid = new_opaque_id(state.secrets.as_ref());
    // Rendered in both cases, so both take the time a real request takes.
    let notice = state.mail(
        "already_in_use",
        email.as_str(),
        Some(&sid),
        String::new(),
        false,
    )?;
    let send_notice = in_use && state.check_send_limits(email.as_str(), None).await.is_ok();
    let new = NewValidation {
        sid: sid.clone(),
        medium: "email".into(),
        address: email.as_str().to_owned(),
        client_secret: req.client_secret.to_owned(),
        purpose: req.purpose,
        token_hash: None,
        token_expires_at: now,
        send_attempt: req.send_attempt,
        next_link: None,
        decoy: true,
    };
    state
        .db
        .create_validation(&new, send_notice.then_some(&notice), now)
        .await?;
    if send_notice {
        state.wake_mailer();
    }
    Ok(sid)
}

/// The validation session a client names with (`sid`, `client_secret`), if it is Vouch's
/// and the secret matches (compared in constant time).
pub async fn own_session(
    state: &Services,
    sid: &str,
    client_secret: &str,
) -> ApiResult<Option<StoredValidation>> {
    Ok(state
        .db
        .validation(sid)
        .await?
        .filter(|s| constant_time_eq(&s.client_secret, client_secret)))
}

/// The purpose a validation session must have to serve `op`.
fn purpose_for(op: Operation) -> Purpose {
    match op {
        Operation::Register => Purpose::Register,
        Operation::AddThreepid => Purpose::AddThreepid,
        Operation::ResetPassword
        | Operation::ChangePassword
        | Operation::Deactivate
        | Operation::DeleteDevices => Purpose::PasswordReset,
    }
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(ErrorKind::Unauthorized, message)
}

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
    let Some(stored) = own_session(state, sid, client_secret).await? else {
        return Ok(Err(unauthorized(
            "Unknown validation session; request a new email",
        )));
    };
    let session = &stored.session;
    if session.medium != medium || session.purpose != purpose_for(op) {
        return Ok(Err(unauthorized(
            "This validation session was made for something else",
        )));
    }
    let now = state.now();
    if op == Operation::Register && state.registration_gated() {
        // The flow's order put the token and terms stages before this one, so the
        // registration mail may go out now.
        if state.db.release_held_mail(sid, now).await? > 0 {
            state.wake_mailer();
        }
    }
    // A decoy (inhibit_3pid_errors) looks like a session whose link was not followed yet.
    let decoy = stored.token_hash.is_none();
    if session.validated_at.is_none() && (decoy || (!session.burned && !session.consumed)) {
        return Ok(Err(unauthorized(
            "Unable to get validated threepid: follow the link in the email first",
        )));
    }
    if !session.usable_at(now) {
        return Ok(Err(unauthorized(
            "This validation session cannot be used any more; request a new email",
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
                "That email address is already in use",
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
