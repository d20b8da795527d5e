//! `[account]`: what users may change on their own accounts.

use serde::{Deserialize, Serialize};

/// `[account]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccountConfig {
    /// Users may change their password (`m.change_password`).
    pub password_change: bool,
    /// Users may add and remove email addresses and phone numbers (`m.3pid_changes`).
    pub threepid_changes: bool,
    /// Users may set their display name.
    pub displayname_change: bool,
    /// Users may set their avatar.
    pub avatar_change: bool,
    /// Devices one account may have; a login that would add one more is refused.
    pub max_devices_per_user: u32,
}

impl Default for AccountConfig {
    fn default() -> Self {
        Self {
            password_change: true,
            threepid_changes: true,
            displayname_change: true,
            avatar_change: true,
            max_devices_per_user: 500,
        }
    }
}
