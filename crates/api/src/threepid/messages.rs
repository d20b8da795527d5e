//! The secrets and the messages that carry them: link tokens and mails, codes and SMS, and
//! telling the outbox worker there is something to send.

use serde_json::json;
use vouch_core::clock::duration_ms;
use vouch_core::secrets::{new_ordered_id, random_string};
use vouch_core::threepid::Msisdn;
use vouch_core::validation::Purpose;
use vouch_storage::NewMessage;

use crate::error::{ApiError, ApiResult};
use crate::state::Services;

use super::{EMAIL_LINK_PATH, Target};

/// Characters of an email link token: 32 alphanumerics, about 190 bits.
pub(super) const TOKEN_LEN: usize = 32;

pub(super) const ALPHANUMERIC: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

pub(super) fn mail_kind(purpose: Purpose) -> &'static str {
    match purpose {
        Purpose::Register => "registration",
        Purpose::PasswordReset => "password_reset",
        Purpose::AddThreepid => "add_threepid",
    }
}

/// The link in a verification mail.
pub(super) fn email_link(state: &Services, sid: &str, client_secret: &str, token: &str) -> String {
    let mut url = format!("{}{EMAIL_LINK_PATH}?", state.config.public_baseurl());
    url.push_str(
        &url::form_urlencoded::Serializer::new(String::new())
            .append_pair("sid", sid)
            .append_pair("client_secret", client_secret)
            .append_pair("token", token)
            .finish(),
    );
    url
}

/// Renders mail `kind` to `address` in `lang` as an outbox row; `code`: a code to type,
/// shown beside the link.
#[expect(clippy::too_many_arguments, reason = "one message's parts")]
pub(super) fn mail(
    state: &Services,
    kind: &str,
    address: &str,
    sid: Option<&str>,
    link: String,
    code: Option<&str>,
    held: bool,
    lang: &str,
) -> ApiResult<NewMessage> {
    let mut ctx =
        state
            .composer
            .context(address, link, state.config.email.validation_token_lifetime);
    ctx.code = code.unwrap_or_default().to_owned();
    if !lang.is_empty() {
        lang.clone_into(&mut ctx.lang);
    }
    let composed = state
        .composer
        .compose(kind, &ctx, state.now(), state.secrets.as_ref())
        .map_err(|e| ApiError::internal(format!("composing {kind} mail: {e}")))?;
    Ok(NewMessage {
        id: new_ordered_id(state.secrets.as_ref(), state.now()),
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

/// Renders the SMS with `code` to `msisdn` in `lang` as an outbox row: `[sms] template`,
/// or in another language its catalogue's `sms.code`.
pub(super) fn sms(
    state: &Services,
    msisdn: &Msisdn,
    sid: &str,
    code: &str,
    held: bool,
    lang: &str,
) -> ApiResult<NewMessage> {
    let sms = &state.config.sms;
    let ctx = json!({
        "code": code,
        "app_name": state.config.email.app_name,
        "minutes": sms.code_lifetime.as_secs().div_ceil(60),
    });
    let templates = state.composer.templates();
    let body = match templates.translated(lang, "sms.code", &ctx) {
        Some(body) => body,
        None => templates
            .render_line(&sms.template, &ctx)
            .map_err(|e| ApiError::internal(format!("rendering the SMS: {e}")))?,
    };
    Ok(NewMessage {
        id: new_ordered_id(state.secrets.as_ref(), state.now()),
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

/// A fresh secret for `target` (a link token or a numeric code) and its lifetime; `typed`:
/// a numeric code for email too (the sign-up page's, where the session's client secret
/// never leaves the server, so only its owner's mailbox can pair the two).
pub(super) fn new_secret(state: &Services, target: &Target, typed: bool) -> (String, i64) {
    let digits = usize::try_from(state.config.sms.code_length).unwrap_or(6);
    match target {
        Target::Email(_) if typed => (
            random_string(state.secrets.as_ref(), b"0123456789", digits),
            duration_ms(state.config.email.validation_token_lifetime),
        ),
        Target::Email(_) => (
            random_string(state.secrets.as_ref(), ALPHANUMERIC, TOKEN_LEN),
            duration_ms(state.config.email.validation_token_lifetime),
        ),
        Target::Msisdn(_) => (
            random_string(state.secrets.as_ref(), b"0123456789", digits),
            duration_ms(state.config.sms.code_lifetime),
        ),
    }
}

/// The message carrying `secret` for session `sid` (`typed`: also as a code to type).
#[expect(clippy::too_many_arguments, reason = "one message's parts")]
pub(super) fn message_for(
    state: &Services,
    target: &Target,
    purpose: Purpose,
    sid: &str,
    client_secret: &str,
    secret: &str,
    held: bool,
    typed: bool,
    lang: &str,
) -> ApiResult<NewMessage> {
    match target {
        Target::Email(e) => mail(
            state,
            mail_kind(purpose),
            e.as_str(),
            Some(sid),
            email_link(state, sid, client_secret, secret),
            typed.then_some(secret),
            held,
            lang,
        ),
        Target::Msisdn(m) => sms(state, m, sid, secret, held, lang),
    }
}

/// Counts a message just queued and, unless it waits (held, or a stand-in that is
/// never sent), rings the outbox worker.
pub(super) fn queued(state: &Services, message: &NewMessage) {
    if message.stand_in {
        return;
    }
    vouch_metrics::OUTBOX
        .with_label_values(&[message.channel, "queued"])
        .inc();
    if !message.held {
        wake_mailer(state);
    }
}

/// Rings the outbox worker.
pub fn wake_mailer(state: &Services) {
    state.mail_wake.notify_one();
}
