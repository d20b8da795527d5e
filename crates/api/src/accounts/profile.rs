//! The profile and flags of an account: display name, avatar, server admin.

use vouch_homeserver::Call;

use super::{AccountError, Accounts};

impl Accounts<'_> {
    /// Sets (or with `None` clears) the display name.
    pub async fn set_displayname(
        &self,
        user_id: &str,
        name: Option<&str>,
    ) -> Result<(), AccountError> {
        self.s.db.set_displayname(user_id, name).await?;
        let localpart = self.localpart(user_id);
        self.tell_later(match name {
            Some(n) => Call::SetDisplayname {
                localpart,
                displayname: n.to_owned(),
            },
            None => Call::UnsetDisplayname { localpart },
        })
        .await?;
        Ok(())
    }

    /// Sets (or with `None` clears) the avatar URL.
    pub async fn set_avatar_url(
        &self,
        user_id: &str,
        url: Option<&str>,
    ) -> Result<(), AccountError> {
        self.s.db.set_avatar_url(user_id, url).await?;
        Ok(())
    }

    /// Makes the account a server admin or not.
    pub async fn set_admin(&self, user_id: &str, admin: bool) -> Result<(), AccountError> {
        self.s.db.set_admin(user_id, admin).await?;
        tracing::info!(user_id, admin, "admin flag set");
        Ok(())
    }
}
