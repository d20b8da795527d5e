//! The profile and flags of an account: display name, avatar, server admin.

use vouch_homeserver::Call;

use super::{AccountError, Accounts};
use crate::error::ApiError;

/// Longest display name accepted (Synapse's limit).
pub const MAX_DISPLAYNAME: usize = 256;

impl Accounts<'_> {
    /// Sets (or with `None` clears) the display name, of at most [`MAX_DISPLAYNAME`]
    /// characters.
    pub async fn set_displayname(
        &self,
        user_id: &str,
        name: Option<&str>,
    ) -> Result<(), AccountError> {
        if name.is_some_and(|n| n.chars().count() > MAX_DISPLAYNAME) {
            return Err(AccountError::Other(ApiError::invalid_param(format!(
                "A display name is at most {MAX_DISPLAYNAME} characters"
            ))));
        }
        if name.is_some_and(|n| n.contains('\0')) {
            return Err(AccountError::Other(ApiError::invalid_param(
                "A display name must not contain NUL characters",
            )));
        }
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

    /// Sets (or with `None` clears) the language of the account's pages and mails, one the
    /// catalogues have.
    pub async fn set_language(
        &self,
        user_id: &str,
        language: Option<&str>,
    ) -> Result<(), AccountError> {
        let known = match language {
            Some(tag) => Some(self.s.composer.templates().language(tag).ok_or_else(|| {
                AccountError::Other(ApiError::invalid_param(format!(
                    "No pages or mails are written in {}",
                    tag.chars().take(20).collect::<String>()
                )))
            })?),
            None => None,
        };
        self.s.db.set_language(user_id, known.as_deref()).await?;
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
