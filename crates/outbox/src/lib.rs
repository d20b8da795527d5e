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
/// Messages claimed at most at once.
const BATCH: usize = 32;
/// Deliveries in flight at most (each also waits for a connection of the SMTP pool).
const MAX_IN_FLIGHT: usize = 2 * BATCH;
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
    /// Runs until `shutdown` turns true, then lets the deliveries in flight finish.
    ///
    /// Deliveries run side by side as tasks of their own (over the SMTP pool's
    /// connections), at most [`MAX_IN_FLIGHT`] at a time: one slow recipient server or
    /// gateway call holds up no other message, and the next claim is made while the last
    /// ones are still going out rather than after the slowest of a round. Each delivery is
    /// recorded as soon as it is made (on SQLite the marks that arrive together share one
    /// commit), so a crash sends again only what was in flight.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(
            transport = self.transport.describe(),
            "mail outbox worker started"
        );
        let worker = Arc::new(self);
        let mut flying = tokio::task::JoinSet::new();
        // Whether the last claim took all it asked for (more is waiting), and whether
        // something may have become due since (a mail queued, the poll interval passed, a
        // user's homeserver call made, after which the next one is due).
        let (mut more, mut due) = (true, true);
        loop {
            if *shutdown.borrow() {
                break;
            }
            let room = MAX_IN_FLIGHT - flying.len().min(MAX_IN_FLIGHT);
            // While the queue is long, a claim waits for a full batch's room (few claims,
            // each taking many); once it is drained, anything that became due goes out at
            // once, whatever slower deliveries are still under way.
            if room > 0 && (if more { room >= BATCH } else { due }) {
                let ask = room.min(BATCH);
                let claimed = match worker
                    .db
                    .claim_due_messages(
                        worker.clock.now_ms(),
                        LEASE_MS,
                        i64::try_from(ask).unwrap_or(1),
                    )
                    .await
                {
                    Ok(mails) => mails,
                    Err(e) => {
                        tracing::warn!(error = %e, "outbox: cannot read the queue; retrying");
                        Vec::new()
                    }
                };
                (more, due) = (claimed.len() >= ask, false);
                for mail in claimed {
                    let worker = worker.clone();
                    flying.spawn(async move { worker.deliver_and_record(mail).await });
                }
                vouch_metrics::OUTBOX_HEARTBEAT.set(worker.clock.now_ms() / 1000);
                if more && flying.len() + BATCH <= MAX_IN_FLIGHT {
                    continue;
                }
            }
            tokio::select! {
                Some(done) = flying.join_next(), if !flying.is_empty() => {
                    // Room was made; a homeserver call made may have made the user's next
                    // one due.
                    due |= log_task_end(done);
                }
                () = worker.wake.notified() => due = true,
                () = tokio::time::sleep(worker.poll) => due = true,
                _ = shutdown.changed() => {}
            }
        }
        while let Some(done) = flying.join_next().await {
            log_task_end(done);
        }
        tracing::info!("outbox worker stopped");
    }

    /// Delivers `mail` and records a success (a failure is recorded where it happens).
    /// `true` for a homeserver call (which the user's next one waited for).
    async fn deliver_and_record(&self, mail: QueuedMessage) -> bool {
        let homeserver = mail.channel == "homeserver";
        if let Some(id) = self.deliver_in_time(mail).await
            && let Err(e) = self.db.mark_message_sent(&id, self.clock.now_ms()).await
        {
            // The lease runs out and the message is tried again: at worst sent twice,
            // never lost.
            tracing::warn!(error = %e, id, "outbox: cannot record a delivery");
        }
        homeserver
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
    /// for the caller to record.
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

/// Logs a delivery task that ended other than by returning (a panic outside the guard,
/// which [`Worker::deliver_guarded`] should make impossible): never silently.
/// `true` when the task made a homeserver call.
fn log_task_end(done: Result<bool, tokio::task::JoinError>) -> bool {
    done.unwrap_or_else(|e| {
        tracing::error!(error = %e, "outbox: a delivery task failed; the message is retried when its lease runs out");
        false
    })
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
