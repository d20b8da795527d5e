//! `[identity_server]`: what to do with identity servers that clients name.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Secret;

/// `[identity_server]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityServerConfig {
    /// What to do with a client-supplied `id_server` on requestToken and in UIA
    /// `threepid_creds` for sessions Vouch did not issue: `ignore` (verify locally, never
    /// contact it), `reject` (400 `M_SERVER_NOT_TRUSTED`), `delegate` (proxy to it if it is
    /// in `trusted`, else 400 `M_SERVER_NOT_TRUSTED`).
    pub requests: IdentityServerRequests,
    /// The only identity servers Vouch ever talks to: `host[:port]` (https, and the name
    /// must resolve to public addresses) or an explicit base URL (`https://…` or `http://…`;
    /// taken as written, private addresses included).
    pub trusted: Vec<String>,
    /// Timeout of one call to an identity server.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Largest answer read from an identity server, in bytes.
    pub max_response_bytes: usize,
    /// Operator delegates per medium (`email`, `msisdn`): requestToken for that medium goes
    /// to this identity server with the operator's token (Synapse's
    /// `account_threepid_delegates`, over the v2 API). For migrations.
    pub delegate: BTreeMap<String, OperatorDelegate>,
}

impl Default for IdentityServerConfig {
    fn default() -> Self {
        Self {
            requests: IdentityServerRequests::Ignore,
            trusted: Vec::new(),
            timeout: Duration::from_secs(10),
            max_response_bytes: 64 * 1024,
            delegate: BTreeMap::new(),
        }
    }
}

/// An operator's identity-server delegate for one medium.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OperatorDelegate {
    /// Base URL (also put it in `trusted`).
    pub base_url: String,
    /// The operator's access token on that server (v2 API).
    pub access_token: Secret,
}

/// How a client-supplied `id_server` is treated.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum IdentityServerRequests {
    /// Verify locally; the named server is never contacted.
    #[default]
    Ignore,
    /// Refuse requests that name an identity server.
    Reject,
    /// Proxy to the named server when it is trusted.
    Delegate,
}
