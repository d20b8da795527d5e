//! Issuing access and refresh tokens, shared by login, registration and refresh.

use std::time::Duration;

use vouch_core::secrets::{new_device_id, new_token, token_hash};
use vouch_storage::NewLogin;

use crate::error::{ApiError, ApiResult};
use crate::state::Services;

/// Longest device display name, in characters (Synapse's limit).
pub const MAX_DEVICE_DISPLAY_NAME: usize = 100;
/// Longest device ID a client may choose, in bytes.
pub const MAX_DEVICE_ID: usize = 255;

/// Checks what a client asks its new device to be called: a device ID of at most
/// [`MAX_DEVICE_ID`] bytes without control characters, a display name of at most
/// [`MAX_DEVICE_DISPLAY_NAME`] characters. Nothing larger is stored (or logged).
pub fn check_new_device(device_id: Option<&str>, display_name: Option<&str>) -> ApiResult<()> {
    if device_id
        .is_some_and(|d| d.is_empty() || d.len() > MAX_DEVICE_ID || d.chars().any(char::is_control))
    {
        return Err(ApiError::invalid_param(format!(
            "device_id must be 1 to {MAX_DEVICE_ID} bytes without control characters"
        )));
    }
    if display_name.is_some_and(|n| n.chars().count() > MAX_DEVICE_DISPLAY_NAME) {
        return Err(ApiError::invalid_param(format!(
            "A device display name is at most {MAX_DEVICE_DISPLAY_NAME} characters"
        )));
    }
    Ok(())
}

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
