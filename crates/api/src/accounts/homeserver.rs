//! Telling the homeserver (`[homeserver]`) of account changes, from the one place every
//! change passes. What a client waits for (a new account, a login's device) is told at
//! once, before the answer, and a homeserver that does not answer refuses the request with
//! 503 before anything is written. What takes something away (devices, a deactivation) is
//! queued durably in the outbox first and retried until the homeserver has it.

use vouch_core::localpart::localpart_of;
use vouch_core::secrets::new_opaque_id;
use vouch_homeserver::Call;
use vouch_storage::NewMessage;

use super::{AccountError, Accounts};

/// The outbox channel of homeserver calls.
pub const CHANNEL: &str = "homeserver";

impl Accounts<'_> {
    /// The localpart of a local user ID.
    pub(super) fn localpart(&self, user_id: &str) -> String {
        localpart_of(user_id, self.s.server_name())
            .unwrap_or(user_id)
            .to_owned()
    }

    /// Makes `call` now; without a homeserver, nothing to do.
    pub(super) async fn tell_now(&self, call: Call) -> Result<(), AccountError> {
        let Some(hs) = self.s.homeserver.as_ref() else {
            return Ok(());
        };
        hs.call(&call).await.map_err(|e| {
            tracing::warn!(error = %e, localpart = call.localpart(), "the homeserver did not take an account change");
            AccountError::HomeserverUnavailable
        })
    }

    /// Queues `call` in the outbox (it survives a crash and a homeserver outage) and rings
    /// the worker; without a homeserver, nothing to do.
    pub(super) async fn tell_later(&self, call: Call) -> Result<(), AccountError> {
        if self.s.homeserver.is_none() {
            return Ok(());
        }
        let message = NewMessage {
            id: new_opaque_id(self.s.secrets.as_ref()),
            channel: CHANNEL,
            country: None,
            recipient: call.localpart().to_owned(),
            sid: None,
            envelope_from: String::new(),
            message: serde_json::to_string(&call)
                .map_err(|e| crate::error::ApiError::internal(e.to_string()))?,
            held: false,
            stand_in: false,
        };
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

    /// Queues the account's current email addresses for the homeserver.
    pub(super) async fn tell_emails_later(&self, user_id: &str) -> Result<(), AccountError> {
        if self.s.homeserver.is_none() {
            return Ok(());
        }
        let emails = self
            .s
            .db
            .threepids(user_id)
            .await?
            .into_iter()
            .filter(|t| t.medium == "email")
            .map(|t| t.address)
            .collect();
        self.tell_later(Call::ProvisionUser {
            localpart: self.localpart(user_id),
            displayname: None,
            emails,
        })
        .await
    }
}
