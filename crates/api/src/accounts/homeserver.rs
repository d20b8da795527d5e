//! Telling the homeserver (`[homeserver]`) of account changes, from the one place every
//! change passes. What a client waits for (a new account, a login's device) is told at
//! once, before the answer, and a homeserver that does not answer refuses the request with
//! 503 before anything is written. What takes something away (devices, a deactivation) is
//! queued durably in the outbox first and retried until the homeserver has it.

use vouch_core::localpart::localpart_of;
use vouch_core::secrets::new_opaque_id;
use vouch_homeserver::{Answer, Call, CallError, Homeserver};
pub(super) use vouch_storage::DeviceNotice;
use vouch_storage::{Ending, NewMessage};

use super::{AccountError, Accounts};

/// `call` as an outbox row for the homeserver.
fn call_message(secrets: &dyn vouch_core::SecretSource, call: &Call) -> Option<NewMessage> {
    Some(NewMessage {
        id: new_opaque_id(secrets),
        channel: CHANNEL,
        country: None,
        recipient: call.localpart().to_owned(),
        sid: None,
        envelope_from: String::new(),
        message: serde_json::to_string(call).ok()?,
        held: false,
        stand_in: false,
    })
}

/// The outbox channel of homeserver calls.
pub const CHANNEL: &str = "homeserver";

/// How long a signed-out device's ID is not handed out again: longer than Synapse caches
/// an introspection answer (two minutes).
pub const REUSE_AFTER: std::time::Duration = std::time::Duration::from_secs(150);

/// The lease on queued calls delivered ahead of an immediate one.
const FLUSH_LEASE_MS: i64 = 30_000;
/// How long a homeserver call the outbox worker claimed may be in flight (the client's
/// 10 s timeout, and a margin); a claim older than that belongs to a worker that died.
const IN_FLIGHT_MS: i64 = 15_000;
/// How often, and how long each time, a flush waits for the worker's delivery in flight.
const FLUSH_WAITS: u32 = 40;
const FLUSH_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

impl Accounts<'_> {
    /// The localpart of a local user ID.
    pub(super) fn localpart(&self, user_id: &str) -> String {
        localpart_of(user_id, self.s.server_name())
            .unwrap_or(user_id)
            .to_owned()
    }

    /// Makes `call` now, after the user's calls still queued (so that a device deleted while
    /// the homeserver was away is not deleted after a newer login made it again); without a
    /// homeserver, nothing to do (and nothing created).
    pub(super) async fn tell_now(&self, call: Call) -> Result<Answer, AccountError> {
        let Some(hs) = self.s.homeserver.as_ref() else {
            return Ok(Answer { created: false });
        };
        self.flush_queued(hs, call.localpart()).await?;
        hs.call(&call).await.map_err(|e| {
            tracing::warn!(error = %e, localpart = call.localpart(), "the homeserver did not take an account change");
            match e {
                CallError::Unavailable(_) => AccountError::HomeserverUnavailable,
                CallError::Refused {
                    status,
                    errcode,
                    message,
                } => AccountError::HomeserverRefused {
                    status,
                    errcode,
                    message,
                },
            }
        })
    }

    /// What deleting devices of `user_id` also does in front of a homeserver: each device
    /// deleted is remembered as ended and gets a queued `delete_device`, in the transaction
    /// that deletes it (so exactly the devices deleted are told, and a crash loses
    /// neither). `None` without a homeserver.
    pub(super) fn ending(&self, notice: &DeviceNotice) -> Option<Ending> {
        self.s.homeserver.as_ref().map(|_| Ending {
            now: self.s.now(),
            notice: notice.clone(),
        })
    }

    /// The notice for a deleted device of `user_id`: `delete_device` at the homeserver.
    pub(super) fn device_notice(&self, user_id: &str) -> DeviceNotice {
        let localpart = self.localpart(user_id);
        let secrets = self.s.secrets.clone();
        std::sync::Arc::new(move |device_id: &str| {
            call_message(
                secrets.as_ref(),
                &Call::DeleteDevice {
                    localpart: localpart.clone(),
                    device_id: device_id.to_owned(),
                },
            )
        })
    }

    /// After devices were deleted with an [`Ending`]: ring the outbox worker.
    pub(super) fn devices_ended(&self, ended: &[String]) {
        if self.s.homeserver.is_some() && !ended.is_empty() {
            crate::threepid::wake_mailer(self.s);
        }
    }

    /// In front of a homeserver, a device ID signed out less than [`REUSE_AFTER`] ago is not
    /// handed out again: the homeserver may still hold an answer saying the old token is
    /// good, and would take it for the new device's.
    pub(super) async fn check_device_reuse(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<(), AccountError> {
        if self.s.homeserver.is_none() {
            return Ok(());
        }
        let window = i64::try_from(REUSE_AFTER.as_millis()).unwrap_or(i64::MAX);
        let now = self.s.now();
        if let Some(ended_at) = self
            .s
            .db
            .device_ended_after(user_id, device_id, now - window)
            .await?
        {
            let left = u64::try_from(ended_at + window - now).unwrap_or(1).max(1);
            return Err(AccountError::DeviceJustEnded(
                std::time::Duration::from_millis(left),
            ));
        }
        Ok(())
    }

    /// Tells the homeserver of a login's device before its token is answered. An account
    /// the homeserver does not know yet (made before Vouch served it) is made known first.
    pub(super) async fn tell_device(
        &self,
        user_id: &str,
        login: &vouch_storage::NewLogin,
    ) -> Result<(), AccountError> {
        let upsert = Call::UpsertDevice {
            localpart: self.localpart(user_id),
            device_id: login.device_id.clone(),
            display_name: login.display_name.clone(),
        };
        match self.tell_now(upsert.clone()).await {
            Err(AccountError::HomeserverRefused { status: 404, .. }) => {
                let user = self.existing(user_id).await?;
                let emails = self.emails(user_id).await?;
                self.tell_now(Call::ProvisionUser {
                    localpart: self.localpart(user_id),
                    displayname: user.displayname,
                    emails,
                })
                .await?;
                self.tell_now(upsert).await.map(|_| ())
            }
            other => other.map(|_| ()),
        }
    }

    /// Queues `call` in the outbox (it survives a crash and a homeserver outage) and rings
    /// the worker; without a homeserver, nothing to do.
    pub(super) async fn tell_later(&self, call: Call) -> Result<(), AccountError> {
        if self.s.homeserver.is_none() {
            return Ok(());
        }
        let message = call_message(self.s.secrets.as_ref(), &call)
            .ok_or_else(|| crate::error::ApiError::internal("a homeserver call as JSON"))?;
        self.s.db.enqueue_message(&message, self.s.now()).await?;
        crate::threepid::wake_mailer(self.s);
        Ok(())
    }

    /// Lets the user replace their cross-signing keys at the homeserver (for ten minutes),
    /// once they have proved who they are.
    pub async fn allow_cross_signing_reset(&self, user_id: &str) -> Result<(), AccountError> {
        self.tell_now(Call::AllowCrossSigningReset {
            localpart: self.localpart(user_id),
        })
        .await?;

        tracing::info!(user_id, "cross-signing reset allowed");
        Ok(())
    }

    /// Delivers the calls about `localpart` still waiting in the outbox, oldest first,
    /// after the one the outbox worker may be delivering right now.
    async fn flush_queued(&self, hs: &Homeserver, localpart: &str) -> Result<(), AccountError> {
        let db = &self.s.db;
        // Nearly always nothing waits: a read, not a write, on every login.
        if !db.has_waiting_for(CHANNEL, localpart).await? {
            return Ok(());
        }
        let mut waiting = None;
        for _ in 0..FLUSH_WAITS {
            waiting = db
                .claim_waiting_for(
                    CHANNEL,
                    localpart,
                    self.s.now(),
                    FLUSH_LEASE_MS,
                    IN_FLIGHT_MS,
                )
                .await?;
            if waiting.is_some() {
                break;
            }
            tokio::time::sleep(FLUSH_WAIT).await;
        }
        let Some(waiting) = waiting else {
            return Err(AccountError::HomeserverUnavailable);
        };
        let mut rest: Vec<String> = waiting.iter().map(|m| m.id.clone()).collect();
        for message in waiting {
            rest.retain(|id| *id != message.id);
            let call = match serde_json::from_str::<Call>(&message.message) {
                Ok(call) => call,
                Err(e) => {
                    let why = format!("unreadable homeserver call: {e}");
                    db.mark_message_failed(&message.id, &why, None, self.s.now())
                        .await?;
                    continue;
                }
            };
            match hs.call(&call).await {
                Ok(_) => db.mark_message_sent(&message.id, self.s.now()).await?,
                Err(e @ CallError::Refused { .. }) => {
                    tracing::error!(error = %e, localpart, "the homeserver refused a queued call; giving it up");
                    db.mark_message_failed(&message.id, &e.to_string(), None, self.s.now())
                        .await?;
                }
                Err(CallError::Unavailable(_)) => {
                    // Back to the worker as they were: its backoff is not this request's.
                    rest.push(message.id);
                    db.release_messages(&rest).await?;
                    return Err(AccountError::HomeserverUnavailable);
                }
            }
        }
        Ok(())
    }

    /// The account's email addresses.
    async fn emails(&self, user_id: &str) -> Result<Vec<String>, AccountError> {
        Ok(self
            .s
            .db
            .threepids(user_id)
            .await?
            .into_iter()
            .filter(|t| t.medium == "email")
            .map(|t| t.address)
            .collect())
    }

    /// Queues the account's current email addresses for the homeserver.
    pub(super) async fn tell_emails_later(&self, user_id: &str) -> Result<(), AccountError> {
        if self.s.homeserver.is_none() {
            return Ok(());
        }
        let emails = self.emails(user_id).await?;
        self.tell_later(Call::ProvisionUser {
            localpart: self.localpart(user_id),
            displayname: None,
            emails,
        })
        .await
    }
}
