//! The send limits a message must fit, and the 429 when it does not.

use vouch_core::clock::duration_ms;
use vouch_storage::{LimitHit, Limited, SendLimits, SendWindow};

use crate::error::ApiError;
use crate::state::Services;

use super::Target;

/// The send limits a message to `target` must fit: per address, per session and, for
/// SMS, per destination country. Storage counts them in the transaction that queues the
/// message, so they hold under concurrency and across instances.
pub(super) fn send_limits(state: &Services, target: &Target) -> SendLimits {
    let limits = &state.config.rate_limits;
    if !limits.enabled {
        return SendLimits::default();
    }
    let now = state.now();
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
pub(super) fn limited(state: &Services, target: &Target, limited: Limited) -> ApiError {
    let limits = &state.config.rate_limits;
    let (w, name) = match (target, limited.hit) {
        (Target::Email(_), LimitHit::Recipient) => (limits.email_per_address, "email_per_address"),
        (Target::Email(_), _) => (limits.email_per_session, "email_per_session"),
        (Target::Msisdn(_), LimitHit::Recipient) => (limits.sms_per_number, "sms_per_number"),
        (Target::Msisdn(_), LimitHit::Session) => (limits.sms_per_session, "sms_per_session"),
        (Target::Msisdn(_), LimitHit::Country) => (limits.sms_per_country, "sms_per_country"),
    };
    vouch_metrics::RATE_LIMITED.with_label_values(&[name]).inc();
    let window = duration_ms(w.window);
    let wait = limited
        .oldest
        .map_or(window, |o| o + window - state.now())
        .max(1);
    ApiError::limit_exceeded(std::time::Duration::from_millis(
        u64::try_from(wait).unwrap_or(1),
    ))
}
