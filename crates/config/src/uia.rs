//! `[uia]`: user-Interactive Authentication.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[uia]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UiaConfig {
    /// How long a UIA session lives after it starts.
    #[serde(with = "humantime_serde")]
    pub session_lifetime: Duration,
    /// Flows per operation (`change_password`, `deactivate`, `delete_devices`, `add_threepid`,
    /// `reset_password`, `register`), replacing the built-in ones.
    pub flows: BTreeMap<String, Vec<Vec<String>>>,
    /// Failed stages (wrong password, wrong registration token, …) a session takes before
    /// it is refused for good.
    pub max_stage_failures: u32,
}

impl Default for UiaConfig {
    fn default() -> Self {
        Self {
            session_lifetime: Duration::from_secs(3600),
            flows: BTreeMap::new(),
            max_stage_failures: 10,
        }
    }
}
