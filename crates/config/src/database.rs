//! `[database]`: the database connection.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[database]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://path` (created if missing) or `postgres://user@host/db`.
    pub url: String,
    /// Largest number of pooled connections.
    pub max_connections: u32,
    /// How long a request waits for a database connection; then it is answered 503 with
    /// `Retry-After`, so an unreachable database fails fast.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://vouch-data/vouch.db".into(),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}
