//! `[housekeeping]`: background removal of expired state.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[housekeeping]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HousekeepingConfig {
    /// How often expired state is removed.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Rows removed per statement (bounded, so a large backlog never blocks the database).
    pub batch_size: u32,
    /// How long delivered or given-up messages stay in the outbox (for inspection).
    #[serde(with = "humantime_serde")]
    pub keep_sent_messages: Duration,
}

impl Default for HousekeepingConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(300),
            batch_size: 1000,
            keep_sent_messages: Duration::from_secs(7 * 86_400),
        }
    }
}
