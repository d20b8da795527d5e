//! Deactivating an account, and the admin's way back.

use vouch_homeserver::Call;

use super::homeserver::DeviceNotice;
use super::{AccountError, Accounts};

impl Accounts<'_> {
    /// Deactivates `user_id`: no devices, tokens or addresses; with `erase`, no profile
    /// either. The user ID stays taken.
    pub async fn deactivate(&self, user_id: &str, erase: bool) -> Result<(), AccountError> {
        self.tell_later(Call::DeleteUser {
            localpart: self.localpart(user_id),
            erase,
        })
        .await?;
        // The homeserver deletes the devices itself with the user: they are only remembered.
        let no_notice: DeviceNotice = std::sync::Arc::new(|_: &str| None);
        self.s
            .db
            .deactivate(
                user_id,
                erase,
                self.s.now(),
                self.ending(&no_notice).as_ref(),
            )
            .await?;
        self.s.db.end_oidc_tokens(user_id).await?;
        tracing::info!(user_id, erase, "account deactivated");
        Ok(())
    }

    /// Unbinds the user's addresses from the identity servers they were bound at (`only`:
    /// at that one alone), then deactivates: the account page and `/account/deactivate`
    /// alike. Whether every unbind went through.
    pub async fn deactivate_and_unbind(
        &self,
        user_id: &str,
        erase: bool,
        only: Option<&str>,
    ) -> Result<bool, AccountError> {
        // Unbind first, while the bindings are known.
        let mut bindings = self.s.db.bindings(user_id, None).await?;
        if let Some(server) = only {
            bindings.retain(|b| b.id_server == server);
        }
        let unbound = crate::identity::unbind_all(self.s, &bindings).await?;
        self.deactivate(user_id, erase).await?;
        Ok(unbound)
    }

    /// Lets a deactivated account be used again (admin only; it comes back without a
    /// password, devices or addresses until an admin gives it some).
    pub async fn reactivate(&self, user_id: &str) -> Result<(), AccountError> {
        self.s.db.reactivate(user_id).await?;
        self.tell_later(Call::ReactivateUser {
            localpart: self.localpart(user_id),
        })
        .await?;
        tracing::info!(user_id, "account reactivated");
        Ok(())
    }
}
