//! `[session]`: access and refresh tokens.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[session]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// Lifetime of an access token issued together with a refresh token (clients that send
    /// `refresh_token: true`). Tokens issued without one do not expire.
    #[serde(with = "humantime_serde")]
    pub refreshable_access_token_lifetime: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            refreshable_access_token_lifetime: Duration::from_secs(300),
        }
    }
}
