//! Verifying email addresses and phone numbers: the shared logic behind the six requestToken
//! endpoints, the UIA `m.login.email.identity` / `m.login.msisdn` stages, and the checks of a
//! validated session before an operation spends it.

use std::net::IpAddr;

use ruma::api::error::ErrorKind;
use serde_json::{Map, Value, json};
use vouch_config::IdentityServerRequests;
use vouch_core::clock::duration_ms;
use vouch_core::secrets::{constant_time_eq, new_opaque_id, random_string, token_hash};
use vouch_core::threepid::{Email, Msisdn, ThirdPartyId, check_next_link};
use vouch_core::uia::Operation;
use vouch_core::validation::{Purpose, SendDecision, TokenCheck};
use vouch_storage::{
    Claim, LimitHit, Limited, NewMessage, NewValidation, Queued, SendLimits, SendWindow,
    StoredValidation, WrongToken,
};

use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, Services};

/// The path of the page behind the link in a verification mail (Vouch's own, not in the
/// Matrix spec).
pub const EMAIL_LINK_PATH: &str = "_vouch/email/validate";

/// The path of Vouch's `submit_url` (the identity-service `submitToken` shape, MSC4183).
pub const SUBMIT_PATH: &str = "_vouch/submit_token";

/// Characters of an email link token: 32 alphanumerics, about 190 bits.
const TOKEN_LEN: usize = 32;

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

/// A validated-to-be address: a canonical email address or phone number.
#[derive(Debug, Clone)]
pub enum Target {
    /// An email address.
    Email(Email),
    /// A phone number.
    Msisdn(Msisdn),
}

impl Target {
    /// `email` or `msisdn`.
    pub fn medium(&self) -> &'static str {
        match self {
            Target::Email(_) => "email",
            Target::Msisdn(_) => "msisdn",
        }
    }

    /// The canonical address.
    pub fn address(&self) -> &str {
        match self {
            Target::Email(e) => e.as_str(),
            Target::Msisdn(m) => m.as_str(),
        }
    }
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

    /// Parses a phone number and holds it to the server's country rules.
    pub fn accept_msisdn(&self, country: &str, number: &str) -> ApiResult<Msisdn> {
        let msisdn =
            Msisdn::parse(country, number).map_err(|e| ApiError::invalid_param(e.to_string()))?;
        let sms = &self.config.sms;
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

    /// The send limits a message to `target` must fit: per address, per session and, for
    /// SMS, per destination country. Storage counts them in the transaction that queues the
    /// message, so they hold under concurrency and across instances.
    fn send_limits(&self, target: &Target) -> SendLimits {
        let limits = &self.config.rate_limits;
        if !limits.enabled {
            return SendLimits::default();
        }
        let now = self.now();
        let window = |w: vouch_config::Window| {
            Some(SendWindow {
                max: i64::from(w.max),
                since: now - duration_ms(w.window),
            })
        };
        match target {
            Target::Email(_) => SendLimits {
                per_recipient: window(limits.email_per_address),
                per_session: window(limits.email_per_session),
                per_country: None,
            },
            Target::Msisdn(_) => SendLimits {
                per_recipient: window(limits.sms_per_number),
                per_session: window(limits.sms_per_session),
                per_country: window(limits.sms_per_country),
            },
        }
    }

    /// The 429 for a send limit that refused a message to `target`, with the time until
    /// the oldest counted message leaves the window.
    fn limited(&self, target: &Target, limited: Limited) -> ApiError {
        let limits = &self.config.rate_limits;
        let (w, name) = match (target, limited.hit) {
            (Target::Email(_), LimitHit::Recipient) => {
                (limits.email_per_address, "email_per_address")
            }
            (Target::Email(_), _) => (limits.email_per_session, "email_per_session"),
            (Target::Msisdn(_), LimitHit::Recipient) => (limits.sms_per_number, "sms_per_number"),
            (Target::Msisdn(_), LimitHit::Session) => (limits.sms_per_session, "sms_per_session"),
            (Target::Msisdn(_), LimitHit::Country) => (limits.sms_per_country, "sms_per_country"),
        };
        vouch_metrics::RATE_LIMITED.with_label_values(&[name]).inc();
        let window = duration_ms(w.window);
        let wait = limited
            .oldest
            .map_or(window, |o| o + window - self.now())
            .max(1);
        ApiError::limit_exceeded(std::time::Duration::from_millis(
            u64::try_from(wait).unwrap_or(1),
        ))
    }

    /// Renders mail `kind` to `address` as an outbox row.
    fn mail(
        &self,
        kind: &str,
        address: &str,
        sid: Option<&str>,
        link: String,
        held: bool,
    ) -> ApiResult<NewMessage> {
        let ctx = self
            .composer
            .context(address, link, self.config.email.validation_token_lifetime);
        let composed = self
            .composer
            .compose(kind, &ctx, self.now(), self.secrets.as_ref())
            .map_err(|e| ApiError::internal(format!("composing {kind} mail: {e}")))?;
        Ok(NewMessage {
            id: new_opaque_id(self.secrets.as_ref()),
            channel: "email",
            country: None,
            recipient: composed.recipient,
            sid: sid.map(str::to_owned),
            envelope_from: composed.envelope_from,
            message: composed.message,
            held,
            stand_in: false,
        })
    }

    /// Renders the SMS with `code` to `msisdn` as an outbox row.
    fn sms(&self, msisdn: &Msisdn, sid: &str, code: &str, held: bool) -> ApiResult<NewMessage> {
        let sms = &self.config.sms;
        let ctx = json!({
            "code": code,
            "app_name": self.config.email.app_name,
            "minutes": sms.code_lifetime.as_secs().div_ceil(60),
        });
        let body = self
            .composer
            .templates()
            .render_line(&sms.template, &ctx)
            .map_err(|e| ApiError::internal(format!("rendering the SMS: {e}")))?;
        Ok(NewMessage {
            id: new_opaque_id(self.secrets.as_ref()),
            channel: "sms",
            country: Some(msisdn.country().to_owned()),
            recipient: msisdn.as_str().to_owned(),
            sid: Some(sid.to_owned()),
            envelope_from: sms
                .sender_per_country
                .get(msisdn.country())
                .cloned()
                .unwrap_or_default(),
            message: body,
            held,
            stand_in: false,
        })
    }

    /// A fresh secret for `target` (a link token or a numeric code) and its lifetime.
    fn new_secret(&self, target: &Target) -> (String, i64) {
        match target {
            Target::Email(_) => (
                random_string(self.secrets.as_ref(), ALPHANUMERIC, TOKEN_LEN),
                duration_ms(self.config.email.validation_token_lifetime),
            ),
            Target::Msisdn(_) => {
                let len = usize::try_from(self.config.sms.code_length).unwrap_or(6);
                (
                    random_string(self.secrets.as_ref(), b"0123456789", len),
                    duration_ms(self.config.sms.code_lifetime),
                )
            }
        }
    }

    /// The message carrying `secret` for session `sid`.
    fn message_for(
        &self,
        target: &Target,
        purpose: Purpose,
        sid: &str,
        client_secret: &str,
        secret: &str,
        held: bool,
    ) -> ApiResult<NewMessage> {
        match target {
            Target::Email(e) => self.mail(
                mail_kind(purpose),
                e.as_str(),
                Some(sid),
                self.email_link(sid, client_secret, secret),
                held,
            ),
            Target::Msisdn(m) => self.sms(m, sid, secret, held),
        }
    }

    /// A fresh secret's hash (none for a decoy), when it stops working, and the message
    /// that goes with it for session `sid`.
    fn secret_and_message(
        &self,
        req: &TokenRequest<'_>,
        target: &Target,
        carry: Carry,
        sid: &str,
    ) -> ApiResult<(Option<String>, i64, NewMessage)> {
        let (secret, lifetime) = self.new_secret(target);
        let expires = self.now() + lifetime;
        match carry {
            Carry::Secret { held } => {
                let message =
                    self.message_for(target, req.purpose, sid, req.client_secret, &secret, held)?;
                Ok((Some(token_hash(&secret)), expires, message))
            }
            Carry::Decoy { in_use } => {
                let message = match target {
                    Target::Email(e) => NewMessage {
                        stand_in: !in_use,
                        ..self.mail(
                            "already_in_use",
                            e.as_str(),
                            Some(sid),
                            String::new(),
                            false,
                        )?
                    },
                    Target::Msisdn(m) => NewMessage {
                        stand_in: true,
                        ..self.sms(m, sid, &secret, false)?
                    },
                };
                Ok((None, expires, message))
            }
        }
    }

    /// Wrong secrets a session of `medium` takes before it is burned.
    pub fn max_attempts(&self, medium: &str) -> i64 {
        i64::from(if medium == "msisdn" {
            self.config.sms.max_attempts
        } else {
            self.config.email.max_attempts
        })
    }

    /// The `submit_url` given with SMS sessions.
    pub fn submit_url(&self) -> String {
        format!("{}{SUBMIT_PATH}", self.config.public_baseurl())
    }

    /// Counts a message just queued and, unless it waits (held, or a stand-in that is
    /// never sent), rings the outbox worker.
    fn queued(&self, message: &NewMessage) {
        if message.stand_in {
            return;
        }
        vouch_metrics::OUTBOX
            .with_label_values(&[message.channel, "queued"])
            .inc();
        if !message.held {
            self.wake_mailer();
        }
    }

    /// Rings the outbox worker.
    pub fn wake_mailer(&self) {
        self.mail_wake.notify_one();
    }
}

const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

fn mail_kind(purpose: Purpose) -> &'static str {
    match purpose {
        Purpose::Register => "registration",
        Purpose::PasswordReset => "password_reset",
        Purpose::AddThreepid => "add_threepid",
    }
}

/// Where the address of a requestToken comes from.
pub enum Raw<'a> {
    /// `email`.
    Email(&'a str),
    /// `country` + `phone_number`.
    Phone {
        /// ISO 3166-1 alpha-2.
        country: &'a str,
        /// As typed.
        number: &'a str,
    },
}

/// A requestToken call, as the six endpoints share it.
pub struct TokenRequest<'a> {
    /// What the session will be for.
    pub purpose: Purpose,
    /// The client's secret.
    pub client_secret: &'a str,
    /// The address as sent.
    pub address: Raw<'a>,
    /// The client's attempt counter.
    pub send_attempt: i64,
    /// Where to send the user after validating.
    pub next_link: Option<&'a str>,
    /// The raw body, for `id_server` / `id_access_token` (ruma drops a lone `id_server`).
    pub json: Option<&'a Map<String, Value>>,
    /// The client's address.
    pub ip: IpAddr,
}

/// What a requestToken answers: the session ID and, where the client must post a code, the
/// `submit_url`.
pub struct Issued {
    /// The session ID.
    pub sid: ruma::OwnedSessionId,
    /// Vouch's own endpoint for SMS codes; an identity server's, if it runs the session and
    /// gave one; none for Vouch's email sessions (the user follows the link).
    pub submit_url: Option<String>,
}

/// The shared requestToken for every endpoint and medium.
pub async fn request_token(state: &AppState, req: TokenRequest<'_>) -> ApiResult<Issued> {
    let phone = matches!(req.address, Raw::Phone { .. });
    let requested = start_session(state, req).await?;
    let sid = ruma::OwnedSessionId::try_from(requested.sid)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let submit_url = if requested.delegated {
        requested.submit_url
    } else if phone {
        Some(state.submit_url())
    } else {
        None
    };
    Ok(Issued { sid, submit_url })
}

/// Checks everything before anything is written, then creates or reuses the session and
/// queues its message in the same transaction (or hands it to an identity server).
async fn start_session(state: &AppState, req: TokenRequest<'_>) -> ApiResult<Requested> {
    let medium = match req.address {
        Raw::Email(_) => "email",
        Raw::Phone { .. } => "msisdn",
    };
    let enabled = if medium == "email" {
        state.config.email.enabled
    } else {
        state.config.sms.enabled
    };
    if !enabled {
        return Err(ApiError::new(
            ErrorKind::ThreepidMediumNotSupported,
            format!(
                "This server does not verify {}",
                if medium == "email" {
                    "email addresses"
                } else {
                    "phone numbers"
                }
            ),
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
                "Changing email addresses and phone numbers is disabled on this server",
            ));
        }
        _ => {}
    }
    let target = match req.address {
        Raw::Email(raw) => Target::Email(state.accept_email(raw)?),
        Raw::Phone { country, number } => Target::Msisdn(state.accept_msisdn(country, number)?),
    };
    let next_link = req
        .next_link
        .map(|l| check_next_link(l, &state.config.email.next_link_domain_allowlist))
        .transpose()
        .map_err(|e| ApiError::invalid_param(e.to_string()))?
        .map(|u| u.to_string());
    match target {
        Target::Email(_) => state.limits.email_per_ip.check_ip(req.ip)?,
        Target::Msisdn(_) => state.limits.sms_per_ip.check_ip(req.ip)?,
    }

    let owner = state.db.threepid_owner(medium, target.address()).await?;
    let refusal = match (req.purpose, &owner) {
        (Purpose::Register | Purpose::AddThreepid, Some(_)) => Some(ApiError::new(
            ErrorKind::ThreepidInUse,
            "That address is already in use",
        )),
        (Purpose::PasswordReset, None) => Some(ApiError::new(
            ErrorKind::ThreepidNotFound,
            "No account has that address",
        )),
        _ => None,
    };
    if let Some(refusal) = refusal {
        if !state.config.email.inhibit_3pid_errors {
            return Err(refusal);
        }
        let decoy = Carry::Decoy {
            in_use: owner.is_some(),
        };
        return issue(state, &req, &target, decoy, None)
            .await
            .map(Requested::local);
    }

    if let Some((server, token)) = delegation(state, medium, req.json)? {
        return delegate_request(state, &req, &target, &server, &token).await;
    }

    let held = req.purpose == Purpose::Register && state.registration_gated();
    issue(state, &req, &target, Carry::Secret { held }, next_link)
        .await
        .map(Requested::local)
}

/// What a session's message carries.
#[derive(Debug, Clone, Copy)]
enum Carry {
    /// A link token or code; `held` until the registration's cheap stages pass.
    Secret {
        /// Not sent until released.
        held: bool,
    },
    /// Nothing to validate with (`inhibit_3pid_errors`): the owner of an email address in
    /// use gets a notice instead of a link; otherwise a stand-in row is counted by the
    /// send limits and never sent (an SMS notice would cost money and invite pumping).
    Decoy {
        /// The address belongs to an account.
        in_use: bool,
    },
}

/// Creates the session for (address, client secret, purpose), or puts a fresh secret on
/// it for a higher `send_attempt`, and queues its message within the send limits, in one
/// transaction. A decoy takes exactly the same path, so retries, resends, expiry, attempt
/// caps and 429s answer alike; it only never has a token. Returns the `sid`.
async fn issue(
    state: &AppState,
    req: &TokenRequest<'_>,
    target: &Target,
    carry: Carry,
    next_link: Option<String>,
) -> ApiResult<String> {
    let medium = target.medium();
    let now = state.now();
    let limits = state.send_limits(target);
    let existing = state
        .db
        .find_validation(medium, target.address(), req.client_secret, req.purpose)
        .await?;
    if let Some(existing) = existing {
        let sid = existing.session.sid.clone();
        if existing.session.on_request(req.send_attempt) == SendDecision::Resend {
            let (hash, expires, message) = state.secret_and_message(req, target, carry, &sid)?;
            let resent = state
                .db
                .resend_validation(
                    &sid,
                    req.send_attempt,
                    hash.as_deref(),
                    expires,
                    &message,
                    &limits,
                    now,
                )
                .await?;
            match resent {
                Queued::Done => state.queued(&message),
                Queued::Raced => {}
                Queued::Limited(l) => return Err(state.limited(target, l)),
            }
        }
        return Ok(sid);
    }
    let sid = new_opaque_id(state.secrets.as_ref());
    let (hash, expires, message) = state.secret_and_message(req, target, carry, &sid)?;
    let new = NewValidation {
        sid: sid.clone(),
        medium: medium.into(),
        address: target.address().to_owned(),
        client_secret: req.client_secret.to_owned(),
        purpose: req.purpose,
        token_hash: hash,
        token_expires_at: expires,
        send_attempt: req.send_attempt,
        next_link,
    };
    match state
        .db
        .create_validation(&new, &message, &limits, now)
        .await?
    {
        Queued::Done => {
            if matches!(carry, Carry::Secret { .. }) {
                vouch_metrics::VALIDATION
                    .with_label_values(&[medium, "created"])
                    .inc();
            }
            state.queued(&message);
            Ok(sid)
        }
        Queued::Limited(l) => Err(state.limited(target, l)),
        // A concurrent identical request created the session first: answer with its sid.
        Queued::Raced => state
            .db
            .find_validation(medium, target.address(), req.client_secret, req.purpose)
            .await?
            .map(|s| s.session.sid)
            .ok_or_else(|| ApiError::internal("validation session vanished")),
    }
}

/// What a requestToken answers.
#[derive(Debug, Clone)]
struct Requested {
    /// The session ID.
    pub sid: String,
    /// Where a code goes, when an identity server runs the session and gave one.
    pub submit_url: Option<String>,
    /// An identity server runs the session.
    pub delegated: bool,
}

impl Requested {
    fn local(sid: String) -> Self {
        Self {
            sid,
            submit_url: None,
            delegated: false,
        }
    }
}

/// Whether this requestToken goes to an identity server, and with which token: the
/// operator's delegate for the medium, or (`requests = "delegate"`) the trusted server the
/// client named with its own token.
fn delegation(
    state: &Services,
    medium: &str,
    json: Option<&Map<String, Value>>,
) -> ApiResult<Option<(crate::identity::IdentityServer, String)>> {
    let cfg = &state.config.identity_server;
    if let Some(d) = cfg.delegate.get(medium) {
        let server = state.require_trusted(&d.base_url)?;
        return Ok(Some((server, d.access_token.expose().to_owned())));
    }
    let text = |k: &str| json.and_then(|j| j.get(k)).and_then(Value::as_str);
    match (cfg.requests, text("id_server"), text("id_access_token")) {
        (IdentityServerRequests::Delegate, Some(id_server), Some(token)) => {
            Ok(Some((state.require_trusted(id_server)?, token.to_owned())))
        }
        _ => Ok(None),
    }
}

/// Proxies a requestToken to an identity server (v2 API, Bearer token) and records the
/// session it runs, so the UIA stage and `/account/3pid/add` can ask it later.
async fn delegate_request(
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
    let (status, answer) = state
        .identity_call(
            server,
            http::Method::POST,
            &path,
            Some(format!("Bearer {token}")),
            Some(&body),
        )
        .await?;
    if !status.is_success() {
        return Err(state.identity_error(status, &answer));
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
        Some(base) => match state.trusted_identity_server(&base) {
            Some(s) => (s, true),
            None => {
                return Ok(Err(ApiError::new(
                    ErrorKind::ServerNotTrusted,
                    "That identity server is no longer trusted",
                )));
            }
        },
        None => match (cfg.requests, text("id_server")) {
            (IdentityServerRequests::Delegate, Some(is)) => match state.trusted_identity_server(is)
            {
                Some(s) => (s, false),
                None => {
                    return Ok(Err(ApiError::new(
                        ErrorKind::ServerNotTrusted,
                        format!("This server does not trust {is}"),
                    )));
                }
            },
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
        state
            .trusted_identity_server(&d.base_url)
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
    let (status, answer) = state
        .identity_call(
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

/// What presenting a token or code to a session did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    /// It validated the session now; `next_link` is where to send the user, if anywhere.
    Validated {
        /// The checked `next_link`.
        next_link: Option<url::Url>,
    },
    /// Correct, and the session was validated before.
    AlreadyValidated,
    /// Wrong (the session may just have been burned by it).
    Wrong,
    /// The code's lifetime is over, or the session is burned or spent.
    Expired,
    /// No such session, or the client secret does not match.
    Unknown,
}

/// Presents `token` to session `sid`: the link page and `submit_url` share this. The client
/// secret and the token's hash are compared in constant time; a wrong token counts toward
/// the session's cap.
pub async fn submit_secret(
    state: &Services,
    sid: &str,
    client_secret: &str,
    token: &str,
) -> Result<Submitted, vouch_storage::StorageError> {
    let Some(stored) = state.db.validation(sid).await? else {
        return Ok(Submitted::Unknown);
    };
    if !constant_time_eq(&stored.client_secret, client_secret) {
        return Ok(Submitted::Unknown);
    }
    let now = state.now();
    // People type codes with spaces; links carry tokens verbatim.
    let token: String = if stored.session.medium == "msisdn" {
        token.chars().filter(|c| !c.is_whitespace()).collect()
    } else {
        token.to_owned()
    };
    let presented = token_hash(&token);
    let matches = stored
        .token_hash
        .as_deref()
        .is_some_and(|h| constant_time_eq(h, &presented));
    let medium = stored.session.medium.as_str();
    let max_attempts = state.max_attempts(medium);
    match stored.session.check_token(matches, now, max_attempts) {
        TokenCheck::Validated => {
            if !state
                .db
                .mark_validated(sid, &presented, max_attempts, now)
                .await?
            {
                // Wrong guesses used up the attempts first, or the token was replaced or
                // expired meanwhile; a concurrent click with the same token validated it.
                let again = state.db.validation(sid).await?;
                return Ok(match again {
                    Some(s) if s.session.validated_at.is_some() => Submitted::AlreadyValidated,
                    _ => Submitted::Expired,
                });
            }
            vouch_metrics::VALIDATION
                .with_label_values(&[medium, "validated"])
                .inc();
            tracing::info!(sid, medium, purpose = %stored.session.purpose, "address validated");
            let next_link = stored.next_link.as_deref().and_then(|l| {
                check_next_link(l, &state.config.email.next_link_domain_allowlist).ok()
            });
            Ok(Submitted::Validated { next_link })
        }
        TokenCheck::AlreadyValidated => Ok(Submitted::AlreadyValidated),
        // A validated session counts no wrong tokens: there is nothing left to guess.
        TokenCheck::Wrong if stored.session.validated_at.is_some() => Ok(Submitted::Wrong),
        TokenCheck::Wrong => match state.db.spend_wrong_attempt(sid, max_attempts, now).await? {
            WrongToken::Counted { burned } => {
                if burned {
                    vouch_metrics::VALIDATION
                        .with_label_values(&[medium, "burned"])
                        .inc();
                    tracing::warn!(sid, "validation session burned after too many wrong tokens");
                }
                Ok(Submitted::Wrong)
            }
            WrongToken::Refused => Ok(Submitted::Expired),
        },
        TokenCheck::Expired | TokenCheck::Burned => {
            vouch_metrics::VALIDATION
                .with_label_values(&[medium, "expired"])
                .inc();
            Ok(Submitted::Expired)
        }
    }
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
    if op == Operation::Register && state.registration_gated() {
        // The flow's order put the token and terms stages before this one, so the
        // registration mail may go out now.
        if state.db.release_held_messages(sid, now).await? > 0 {
            state.wake_mailer();
        }
    }
    // A decoy (inhibit_3pid_errors) lives like a real session whose link was not followed.
    if session.validated_at.is_none() && !session.exhausted(state.max_attempts(medium)) {
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
