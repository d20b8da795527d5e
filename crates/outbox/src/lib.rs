//! The outbox worker: claims due messages (mail and SMS) with a lease, delivers them, and
//! reschedules failures with exponential backoff. Several workers (one per instance) share
//! one outbox; a lease keeps two from sending the same message, and a worker that dies
//! leaves its claims to the others when the lease runs out.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use tokio::sync::{Notify, watch};
use vouch_core::Clock;
use vouch_storage::{Db, QueuedMessage};

use vouch_mail::Transport;
use vouch_sms::Gateway;

/// How long a claim holds before another worker may retry the mail.
pub const LEASE_MS: i64 = vouch_storage::DELIVERY_LEASE_MS;
/// The longest one delivery may take, whatever the transport's own timeouts (which do
/// not cover every way a server can stall).
pub const DELIVERY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(90);
/// Mails claimed per round.
const BATCH: i64 = 32;
/// First retry delay; doubles per failed attempt.
const FIRST_RETRY_MS: i64 = 5_000;
/// Longest retry delay.
const MAX_RETRY_MS: i64 = 3_600_000;
/// A mail not delivered within this time is given up.
pub const GIVE_UP_AFTER_MS: i64 = 48 * 3_600_000;
/// Permanent refusals (5xx) are retried this many times (a misconfigured relay can be
/// fixed), then given up.
const PERMANENT_ATTEMPTS: i64 = 3;

/// When to retry after `attempts` failed attempts.
pub fn retry_delay_ms(attempts: i64) -> i64 {
    let exp = u32::try_from(attempts.clamp(0, 20)).unwrap_or(20);
    FIRST_RETRY_MS
        .saturating_mul(1_i64 << exp)
        .min(MAX_RETRY_MS)
}

/// The outbox worker's handles.
#[derive(Clone)]
pub struct Worker {
    /// Storage.
    pub db: Db,
    /// Where mail goes.
    pub transport: Transport,
    /// Where SMS go.
    pub sms: Gateway,
    /// The homeserver told of account changes (`homeserver` rows), if one is configured.
    pub homeserver: Option<vouch_homeserver::Homeserver>,
    /// The injected clock (due times and backoff are in its time).
    pub clock: Arc<dyn Clock>,
    /// Rung when a mail is queued, so it goes out at once.
    pub wake: Arc<Notify>,
    /// How often to look for due mail when nothing rings.
    pub poll: Duration,
}

impl Worker {
    /// Runs until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(
            transport = self.transport.describe(),
            "mail outbox worker started"
        );
        loop {
            if *shutdown.borrow() {
                break;
            }
            let claimed = match self
                .db
                .claim_due_messages(self.clock.now_ms(), LEASE_MS, BATCH)
                .await
            {
                Ok(mails) => mails,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox: cannot read the queue; retrying");
                    Vec::new()
                }
            };
            let full = i64::try_from(claimed.len()).unwrap_or(0) >= BATCH;
            // A user's homeserver calls go one per round (oldest first): after one went
            // out, the next may be due at once.
            let chained = claimed.iter().any(|m| m.channel == "homeserver");
            // The batch goes out concurrently (over the SMTP pool's connections); one slow
            // recipient server or gateway call does not hold up the rest. Each delivery is
            // recorded as soon as it is made (on SQLite the marks that arrive together
            // share one commit), so a crash in the middle of a round sends again only what
            // was in flight.
            let worker = &self;
            futures::future::join_all(claimed.into_iter().map(|mail| async move {
                if let Some(id) = worker.deliver_in_time(mail).await
                    && let Err(e) = worker
                        .db
                        .mark_message_sent(&id, worker.clock.now_ms())
                        .await
                {
                    // The lease runs out and the message is tried again: at worst sent
                    // twice, never lost.
                    tracing::warn!(error = %e, id, "outbox: cannot record a delivery");
                }
            }))
            .await;
            vouch_metrics::OUTBOX_HEARTBEAT.set(self.clock.now_ms() / 1000);
            if full || chained {
                continue;
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.poll) => {}
                _ = shutdown.changed() => {}
            }
        }
        tracing::info!("outbox worker stopped");
    }

    /// [`Self::deliver_guarded`] within [`DELIVERY_DEADLINE`]: a server that takes the
    /// connection and never answers cannot hold the worker (and every message behind it)
    /// for ever. A delivery cut off counts as a failed attempt and is retried.
    async fn deliver_in_time(&self, mail: QueuedMessage) -> Option<String> {
        let (id, channel, attempts) = (mail.id.clone(), mail.channel.clone(), mail.attempts);
        match tokio::time::timeout(DELIVERY_DEADLINE, self.deliver_guarded(mail)).await {
            Ok(sent) => sent,
            Err(_) => {
                let now = self.clock.now_ms();
                let retry_in = retry_delay_ms(attempts);
                tracing::error!(
                    id,
                    channel,
                    retry_in_ms = retry_in,
                    "outbox: a delivery did not finish in time; it will be retried"
                );
                vouch_metrics::OUTBOX
                    .with_label_values(&[channel.as_str(), "retried"])
                    .inc();
                if let Err(e) = self
                    .db
                    .mark_message_failed(
                        &id,
                        "delivery did not finish in time",
                        Some(now + retry_in),
                        now,
                    )
                    .await
                {
                    tracing::warn!(id, error = %e, "outbox: cannot record the delivery outcome");
                }
                None
            }
        }
    }

    /// [`Self::deliver`], surviving a panic in it: the message is recorded as a failed
    /// attempt and retried after the usual backoff, and the worker goes on with the rest.
    async fn deliver_guarded(&self, mail: QueuedMessage) -> Option<String> {
        let (id, channel, attempts) = (mail.id.clone(), mail.channel.clone(), mail.attempts);
        match AssertUnwindSafe(self.deliver(mail)).catch_unwind().await {
            Ok(sent) => sent,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                let now = self.clock.now_ms();
                let retry_in = retry_delay_ms(attempts);
                tracing::error!(id, channel, error = %what, retry_in_ms = retry_in, "outbox: delivering a message panicked; it will be retried");
                vouch_metrics::OUTBOX
                    .with_label_values(&[channel.as_str(), "retried"])
                    .inc();
                let error = format!("delivery panicked: {what}");
                if let Err(e) = self
                    .db
                    .mark_message_failed(&id, &error, Some(now + retry_in), now)
                    .await
                {
                    tracing::warn!(id, error = %e, "outbox: cannot record the delivery outcome");
                }
                None
            }
        }
    }

    /// Makes a queued homeserver call (a [`vouch_homeserver::Call`] as JSON).
    async fn tell_homeserver(&self, message: &str) -> Result<(), (String, bool)> {
        let Some(hs) = &self.homeserver else {
            return Err(("no [homeserver] is configured".into(), true));
        };
        let call: vouch_homeserver::Call = serde_json::from_str(message)
            .map_err(|e| (format!("unreadable homeserver call: {e}"), true))?;
        hs.call(&call).await.map(|_| ()).map_err(|e| {
            let e = vouch_core::delivery::SendError::from(e);
            (e.message, e.permanent)
        })
    }

    /// Sends one message. A failure is recorded here; a success returns the message's id,
    /// for the caller to record with the rest of the batch.
    async fn deliver(&self, mail: QueuedMessage) -> Option<String> {
        let result = match mail.channel.as_str() {
            "sms" => {
                let from = Some(mail.envelope_from.as_str()).filter(|f| !f.is_empty());
                let to = format!("+{}", mail.recipient);
                self.sms
                    .send(&to, from, &mail.message, mail.sid.as_deref())
                    .await
                    .map_err(|e| (e.message, e.permanent))
            }
            "homeserver" => self.tell_homeserver(&mail.message).await,
            _ => self
                .transport
                .send(&mail.envelope_from, &mail.recipient, &mail.message)
                .await
                .map_err(|e| (e.message, e.permanent)),
        };
        let now = self.clock.now_ms();
        let attempts = mail.attempts + 1;
        let recorded = match result {
            Ok(()) => {
                tracing::info!(
                    id = mail.id,
                    channel = mail.channel,
                    to = mail.recipient,
                    attempts,
                    "delivered"
                );
                vouch_metrics::OUTBOX
                    .with_label_values(&[mail.channel.as_str(), "sent"])
                    .inc();
                // A homeserver call is recorded at once, not with the batch: a slow mail in
                // the same batch must not keep the user's next call (or a login waiting for
                // it) behind.
                if mail.channel == "homeserver" {
                    if let Err(e) = self.db.mark_message_sent(&mail.id, now).await {
                        tracing::warn!(id = mail.id, error = %e, "outbox: cannot record the delivery");
                    }
                    return None;
                }
                return Some(mail.id);
            }
            Err((message, permanent)) => {
                // What the homeserver must learn (a device gone, an account deactivated) is
                // retried for as long as it takes; mail and SMS go stale.
                let too_old =
                    mail.channel != "homeserver" && now - mail.created_at >= GIVE_UP_AFTER_MS;
                let give_up = too_old || (permanent && attempts >= PERMANENT_ATTEMPTS);
                let retry_in = retry_delay_ms(attempts - 1);
                if give_up {
                    tracing::error!(id = mail.id, channel = mail.channel, to = mail.recipient, attempts, error = %message, "delivery failed; giving up");
                } else {
                    tracing::warn!(id = mail.id, channel = mail.channel, to = mail.recipient, attempts, retry_in_ms = retry_in, permanent, error = %message, "delivery failed; will retry");
                }
                let event = if give_up { "failed" } else { "retried" };
                vouch_metrics::OUTBOX
                    .with_label_values(&[mail.channel.as_str(), event])
                    .inc();
                let next = (!give_up).then_some(now + retry_in);
                self.db
                    .mark_message_failed(&mail.id, &message, next, now)
                    .await
            }
        };
        if let Err(e) = recorded {
            // The lease runs out and the message is tried again.
            tracing::warn!(id = mail.id, error = %e, "outbox: cannot record the delivery outcome");
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(retry_delay_ms(0), 5_000);
        assert_eq!(retry_delay_ms(1), 10_000);
        assert_eq!(retry_delay_ms(3), 40_000);
        assert_eq!(retry_delay_ms(10), MAX_RETRY_MS);
        assert_eq!(retry_delay_ms(1_000), MAX_RETRY_MS);
    }
}
