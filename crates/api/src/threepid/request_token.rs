//! The shared requestToken of the six endpoints: checks everything before anything is
//! written, then creates or reuses the session and queues its message in one transaction
//! (or hands the request to an identity server).

use std::net::IpAddr;

use ruma::api::error::ErrorKind;
use serde_json::{Map, Value};
use vouch_core::secrets::new_ordered_id;
use vouch_core::threepid::check_next_link;
use vouch_core::validation::{Purpose, SendDecision};
use vouch_storage::{NewValidation, Queued};

use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, Services};

use super::decoys::Carry;
use super::delegation::{delegate_request, delegation};
use super::policy::check_identity_server;
use super::{SUBMIT_PATH, Target};
use super::{decoys, limits, messages, policy};

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

impl<'a> Raw<'a> {
    /// An address typed in one field of a page: an email address when it has an `@`, else
    /// a phone number in international form.
    pub fn typed(typed: &'a str) -> Self {
        if typed.contains('@') {
            Raw::Email(typed)
        } else {
            Raw::Phone {
                country: "",
                number: typed,
            }
        }
    }
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
    /// From Vouch's own pages (sign-up, password reset): the secret is a short code the
    /// user types there, shown in the mail beside the link (the session's client secret
    /// never leaves the server), and a sign-up form checked the registration token and
    /// terms already (nothing waits for them).
    pub from_pages: bool,
    /// The language of the mail or SMS (a tag the catalogues have; empty: English): the
    /// page's, or the client's `Accept-Language`. The account holding the address wins
    /// with its own choice.
    pub lang: String,
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

/// A requestToken body as ruma parses it, for any of the six endpoints.
pub trait TokenBody {
    /// The shared request, for a session serving `purpose`; `json` is the raw body, `ip`
    /// the client's address and `lang` the language its `Accept-Language` asks for.
    fn token_request<'a>(
        &'a self,
        purpose: Purpose,
        json: Option<&'a Map<String, Value>>,
        ip: IpAddr,
        lang: String,
    ) -> TokenRequest<'a>;
}

/// `send_attempt` as storage counts it.
fn attempt(send_attempt: ruma::UInt) -> i64 {
    i64::try_from(u64::from(send_attempt)).unwrap_or(i64::MAX)
}

macro_rules! token_body {
    ($($endpoint:ident: $req:ident => $address:expr;)+) => {$(
        impl TokenBody for ruma::api::client::account::$endpoint::v3::Request {
            fn token_request<'a>(
                &'a self,
                purpose: Purpose,
                json: Option<&'a Map<String, Value>>,
                ip: IpAddr,
                lang: String,
            ) -> TokenRequest<'a> {
                let $req = self;
                TokenRequest {
                    purpose,
                    client_secret: self.client_secret.as_str(),
                    address: $address,
                    send_attempt: attempt(self.send_attempt),
                    next_link: self.next_link.as_deref(),
                    json,
                    ip,
                    from_pages: false,
                    lang,
                }
            }
        }
    )+};
}

token_body! {
    request_registration_token_via_email: r => Raw::Email(&r.email);
    request_password_change_token_via_email: r => Raw::Email(&r.email);
    request_3pid_management_token_via_email: r => Raw::Email(&r.email);
    request_registration_token_via_msisdn: r => Raw::Phone { country: &r.country, number: &r.phone_number };
    request_password_change_token_via_msisdn: r => Raw::Phone { country: &r.country, number: &r.phone_number };
    request_3pid_management_token_via_msisdn: r => Raw::Phone { country: &r.country, number: &r.phone_number };
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
        Some(submit_url(state))
    } else {
        None
    };
    Ok(Issued { sid, submit_url })
}

/// Checks everything before anything is written, then creates or reuses the session and
/// queues its message in the same transaction (or hands it to an identity server).
pub(super) async fn start_session(
    state: &AppState,
    mut req: TokenRequest<'_>,
) -> ApiResult<Requested> {
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
        Raw::Email(raw) => Target::Email(policy::accept_email(state, raw)?),
        Raw::Phone { country, number } => {
            Target::Msisdn(policy::accept_msisdn(state, country, number)?)
        }
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

    // Who holds the address and this client's session for it: one read.
    let reads = state
        .db
        .token_request_reads(medium, target.address(), req.client_secret, req.purpose)
        .await?;
    let owner = reads.owner;
    if let Some(chosen) = owner.as_ref().and_then(|o| o.language.clone()) {
        req.lang = chosen;
    }
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
        return issue(state, &req, &target, decoy, None, reads.existing)
            .await
            .map(Requested::local);
    }

    if let Some((server, token)) = delegation(state, medium, req.json)? {
        return delegate_request(state, &req, &target, &server, &token).await;
    }

    let held =
        req.purpose == Purpose::Register && !req.from_pages && policy::registration_gated(state);
    issue(
        state,
        &req,
        &target,
        Carry::Secret { held },
        next_link,
        reads.existing,
    )
    .await
    .map(Requested::local)
}

/// Creates the session for (address, client secret, purpose), or puts a fresh secret on
/// it for a higher `send_attempt`, and queues its message within the send limits, in one
/// transaction. A decoy takes exactly the same path, so retries, resends, expiry, attempt
/// caps and 429s answer alike; it only never has a token. `existing`: the session the
/// client has for this address and purpose, as read before. Returns the `sid`.
pub(super) async fn issue(
    state: &AppState,
    req: &TokenRequest<'_>,
    target: &Target,
    carry: Carry,
    next_link: Option<String>,
    existing: Option<vouch_storage::StoredValidation>,
) -> ApiResult<String> {
    let medium = target.medium();
    let now = state.now();
    let limits = limits::send_limits(state, target);
    if let Some(existing) = existing {
        let sid = existing.session.sid.clone();
        if existing.session.on_request(req.send_attempt) == SendDecision::Resend {
            let (hash, expires, message) =
                decoys::secret_and_message(state, req, target, carry, &sid)?;
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
                Queued::Done => messages::queued(state, &message),
                Queued::Raced => {}
                Queued::Limited(l) => return Err(limits::limited(state, target, l)),
            }
        }
        return Ok(sid);
    }
    let sid = new_ordered_id(state.secrets.as_ref(), now);
    let (hash, expires, message) = decoys::secret_and_message(state, req, target, carry, &sid)?;
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
            messages::queued(state, &message);
            Ok(sid)
        }
        Queued::Limited(l) => Err(limits::limited(state, target, l)),
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
pub(super) struct Requested {
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

/// The `submit_url` given with SMS sessions.
pub fn submit_url(state: &Services) -> String {
    format!("{}{SUBMIT_PATH}", state.config.public_baseurl())
}
