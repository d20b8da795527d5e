//! Setting an account's password, and which devices stay logged in when it changes.

use super::{AccountError, Accounts};

/// Which devices a password change logs out.
#[derive(Debug, Clone, Copy)]
pub enum Logout<'a> {
    /// None: every device stays logged in.
    Nobody,
    /// Every device but this one (the one that asked for the change).
    AllBut(&'a str),
    /// Every device.
    Everyone,
}

impl Logout<'_> {
    /// The spec's `logout_devices` flag, sent from device `caller` (none for a reset without
    /// an access token, or an admin).
    pub fn from_flag(logout_devices: bool, caller: Option<&str>) -> Logout<'_> {
        match (logout_devices, caller) {
            (false, _) => Logout::Nobody,
            (true, Some(device)) => Logout::AllBut(device),
            (true, None) => Logout::Everyone,
        }
    }
}

impl Accounts<'_> {
    /// Holds `password` to the policy, hashes it and makes it `user_id`'s, logging out the
    /// devices `logout` names in the same transaction.
    pub async fn set_password(
        &self,
        user_id: &str,
        password: String,
        logout: Logout<'_>,
    ) -> Result<(), AccountError> {
        self.check_password(&password)?;
        let hash = self.s.hash_password(password).await?;
        let (logout_devices, keep) = match logout {
            Logout::Nobody => (false, None),
            Logout::AllBut(device) => (true, Some(device)),
            Logout::Everyone => (true, None),
        };
        let notice = self.device_notice(user_id);
        let ended = self
            .s
            .db
            .set_password(
                user_id,
                &hash,
                logout_devices,
                keep,
                self.ending(&notice).as_ref(),
            )
            .await?;
        self.devices_ended(&ended);
        if logout_devices {
            // OpenID Connect sign-ins are sessions too (with no device to keep).
            self.s.db.end_oidc_tokens(user_id).await?;
        }
        tracing::info!(user_id, logout_devices, "password changed");
        Ok(())
    }

    /// Holds a new password to `[password]`'s policy.
    pub fn check_password(&self, password: &str) -> Result<(), AccountError> {
        self.s
            .policy
            .check(password)
            .map_err(|weak| AccountError::WeakPassword(weak.to_string()))
    }
}
