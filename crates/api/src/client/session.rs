//! Issuing access and refresh tokens, shared by login, registration and refresh.

use std::time::Duration;

use vouch_core::secrets::{new_device_id, new_token, token_hash};
use vouch_storage::NewLogin;

use crate::state::Services;

/// The secrets handed to the client, and what storage keeps of them.
pub struct IssuedTokens {
    /// What to store.
    pub login: NewLogin,
    /// The access token, in clear, for the response only.
    pub access_token: String,
    /// The refresh token, in clear, if the client asked for one.
    pub refresh_token: Option<String>,
    /// The access token's lifetime, with refresh tokens.
    pub expires_in: Option<Duration>,
}

impl Services {
    /// Mints tokens for `device_id` (a new device ID when `None`). Access tokens issued with
    /// a refresh token expire after `[session] refreshable_access_token_lifetime`.
    pub fn issue_tokens(
        &self,
        device_id: Option<String>,
        display_name: Option<String>,
        want_refresh: bool,
        ip: Option<String>,
    ) -> IssuedTokens {
        let secrets = self.secrets.as_ref();
        let access_token = new_token(secrets, "vat");
        let refresh_token = want_refresh.then(|| new_token(secrets, "vrt"));
        let expires_in =
            want_refresh.then_some(self.config.session.refreshable_access_token_lifetime);
        let access_expires_at =
            expires_in.map(|d| self.now().saturating_add(vouch_core::clock::duration_ms(d)));
        IssuedTokens {
            login: NewLogin {
                device_id: device_id.unwrap_or_else(|| new_device_id(secrets)),
                display_name,
                access_token_hash: token_hash(&access_token),
                access_expires_at,
                refresh_token_hash: refresh_token.as_deref().map(token_hash),
                ip,
            },
            access_token,
            refresh_token,
            expires_in,
        }
    }
}
