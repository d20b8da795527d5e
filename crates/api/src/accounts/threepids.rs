//! The email addresses and phone numbers attached to an account.

use ruma::api::client::account::ThirdPartyIdRemovalStatus;
use vouch_core::threepid::{Medium, ThirdPartyId};
use vouch_storage::AddThreepidError;

use super::{AccountError, Accounts};

impl Accounts<'_> {
    /// Attaches the address a validation session `sid` proved, spending the session, in one
    /// transaction. [`AccountError::SessionSpent`]: a concurrent request spent it first.
    pub async fn add_validated_threepid(
        &self,
        user_id: &str,
        threepid: &ThirdPartyId,
        validated_at: i64,
        sid: &str,
    ) -> Result<(), AccountError> {
        let medium = threepid.medium().as_str();
        self.s
            .db
            .add_threepid(
                user_id,
                medium,
                threepid.address(),
                validated_at,
                sid,
                self.s.now(),
            )
            .await
            .map_err(|e| match e {
                AddThreepidError::InUse => AccountError::ThreepidInUse,
                AddThreepidError::SessionSpent => AccountError::SessionSpent,
                AddThreepidError::Storage(e) => e.into(),
            })?;
        tracing::info!(user_id, medium, "address added");
        self.tell_emails_later(user_id).await
    }

    /// Attaches an address an admin vouches for, keeping the account's others as they are.
    pub async fn add_threepid(
        &self,
        user_id: &str,
        threepid: &ThirdPartyId,
    ) -> Result<(), AccountError> {
        let mut list: Vec<(String, String)> = self
            .s
            .db
            .threepids(user_id)
            .await?
            .into_iter()
            .map(|t| (t.medium, t.address))
            .collect();
        list.push((
            threepid.medium().as_str().to_owned(),
            threepid.address().to_owned(),
        ));
        self.replace_threepids(user_id, &list).await
    }

    /// Makes `list` (medium, canonical address) the account's addresses: the ones it keeps
    /// keep their dates. [`AccountError::ThreepidInUse`]: another account holds one.
    pub async fn replace_threepids(
        &self,
        user_id: &str,
        list: &[(String, String)],
    ) -> Result<(), AccountError> {
        if !self
            .s
            .db
            .replace_threepids(user_id, list, self.s.now())
            .await?
        {
            return Err(AccountError::ThreepidInUse);
        }
        tracing::info!(user_id, addresses = list.len(), "addresses replaced");
        self.tell_emails_later(user_id).await
    }

    /// Removes an address from the account. `false`: it had no such address. The address is
    /// taken as stored, so one that no longer parses (imported, or older rules) can go too.
    pub async fn remove_threepid(
        &self,
        user_id: &str,
        medium: Medium,
        address: &str,
    ) -> Result<bool, AccountError> {
        let medium = medium.as_str();
        let removed = self.s.db.delete_threepid(user_id, medium, address).await?;
        if removed {
            tracing::info!(user_id, medium, "address removed");
            self.tell_emails_later(user_id).await?;
        }
        Ok(removed)
    }

    /// Removes an address from the account (nothing if it had none) and unbinds it from the
    /// identity servers it was bound to through Vouch (`id_server`: that one, which must be
    /// trusted): `/account/3pid/delete` and the account page alike. Whether the account had
    /// it, and `success` when every unbind went through, `no-support` when there was
    /// nowhere to unbind or one failed.
    pub async fn remove_and_unbind_threepid(
        &self,
        user_id: &str,
        medium: Medium,
        address: &str,
        id_server: Option<&str>,
    ) -> Result<(bool, ThirdPartyIdRemovalStatus), AccountError> {
        let removed = self.remove_threepid(user_id, medium, address).await?;
        let unbound =
            crate::identity::unbind_address(self.s, user_id, medium.as_str(), address, id_server)
                .await?;
        Ok((removed, unbound))
    }
}
