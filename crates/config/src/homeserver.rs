//! `[homeserver]`: the homeserver Vouch serves accounts for.

use serde::{Deserialize, Serialize};

use crate::Secret;

/// `[homeserver]`: a Synapse that delegates every account matter to Vouch.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct HomeserverConfig {
    /// Synapse's client listener, e.g. `http://127.0.0.1:8008`. Empty: Vouch stands alone.
    pub url: String,
    /// The secret shared with Synapse's `matrix_authentication_service.secret` (at least
    /// 32 bytes); or `secret_file`.
    pub secret: Secret,
    /// A file holding the secret (surrounding whitespace is ignored).
    pub secret_file: String,
}

/// The shortest shared secret accepted, in bytes.
pub const MIN_HOMESERVER_SECRET: usize = 32;

impl HomeserverConfig {
    /// Whether a homeserver is configured.
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }

    /// The shared secret, from `secret` or `secret_file`.
    pub fn load_secret(&self) -> Result<Secret, String> {
        let secret = match (self.secret.is_empty(), self.secret_file.is_empty()) {
            (false, true) => self.secret.expose().to_owned(),
            (true, false) => std::fs::read_to_string(&self.secret_file)
                .map_err(|e| format!("[homeserver] secret_file {}: {e}", self.secret_file))?
                .trim()
                .to_owned(),
            (false, false) => return Err("[homeserver] set secret or secret_file, not both".into()),
            (true, true) => {
                return Err(
                    "[homeserver] url needs secret or secret_file: the value of Synapse's \
                     matrix_authentication_service.secret"
                        .into(),
                );
            }
        };
        if secret.len() < MIN_HOMESERVER_SECRET {
            return Err(format!(
                "[homeserver] the secret is {} bytes; use at least {MIN_HOMESERVER_SECRET} random \
                 bytes (e.g. `openssl rand -hex 32`), the same in Synapse's \
                 matrix_authentication_service.secret",
                secret.len()
            ));
        }
        Ok(Secret::from(secret))
    }
}
