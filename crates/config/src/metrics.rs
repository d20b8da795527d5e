//! `[metrics]`: prometheus metrics.

use serde::{Deserialize, Serialize};

/// `[metrics]`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// `host:port` for Prometheus text at `/metrics`; empty (the default): off. Keep it
    /// off the public network.
    pub listen: String,
}
