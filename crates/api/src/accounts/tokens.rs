//! Sessions: the tokens a login, a registration or a refresh hands out, and logging out
//! (one device, some, or all).

use std::time::Duration;

use vouch_core::secrets::{new_device_id, new_token, token_hash};
use vouch_homeserver::Call;
use vouch_storage::{LoginWritten, NewLogin, Refreshed, RefreshedSession};

use super::{AccountError, Accounts};
use crate::error::{ApiError, ApiResult};

/// Longest device display name, in characters (Synapse's limit).
pub const MAX_DEVICE_DISPLAY_NAME: usize = 100;
/// Longest device ID a client may choose, in bytes.
pub const MAX_DEVICE_ID: usize = 255;

/// Whether `device_id` can stand in an OAuth 2.0 scope token (RFC 6749 §3.3: printable
/// ASCII other than space, `"` and `\`), as it does in the scopes `/oauth2/introspect`
/// gives the homeserver: a space in a device ID would add a scope of the client's choosing.
pub fn is_scope_safe(device_id: &str) -> bool {
    !device_id.is_empty()
        && device_id.len() <= MAX_DEVICE_ID
        && device_id
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

/// Checks what a client asks its new device to be called: a device ID of at most
/// [`MAX_DEVICE_ID`] printable ASCII characters other than space, `"` and `\`
/// ([`is_scope_safe`]), a display name of at most [`MAX_DEVICE_DISPLAY_NAME`] characters.
/// Nothing larger is stored (or logged).
pub fn check_new_device(device_id: Option<&str>, display_name: Option<&str>) -> ApiResult<()> {
    if device_id.is_some_and(|d| !is_scope_safe(d)) {
        return Err(ApiError::invalid_param(format!(
            "device_id must be 1 to {MAX_DEVICE_ID} printable ASCII characters other than space, \" and \\"
        )));
    }
    if display_name.is_some_and(|n| n.chars().count() > MAX_DEVICE_DISPLAY_NAME) {
        return Err(ApiError::invalid_param(format!(
            "A device display name is at most {MAX_DEVICE_DISPLAY_NAME} characters"
        )));
    }
    if display_name.is_some_and(|n| n.contains('\0')) {
        return Err(ApiError::invalid_param(
            "A device display name must not contain NUL characters",
        ));
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

impl Accounts<'_> {
    /// Mints tokens for `device_id` (a new device ID when `None`). Access tokens issued with
    /// a refresh token expire after `[session] refreshable_access_token_lifetime`.
    pub fn issue_tokens(
        &self,
        device_id: Option<String>,
        display_name: Option<String>,
        want_refresh: bool,
        ip: Option<String>,
    ) -> IssuedTokens {
        let secrets = self.s.secrets.as_ref();
        let access_token = new_token(secrets, "vat");
        let refresh_token = want_refresh.then(|| new_token(secrets, "vrt"));
        let expires_in =
            want_refresh.then_some(self.s.config.session.refreshable_access_token_lifetime);
        let access_expires_at = expires_in.map(|d| {
            self.s
                .now()
                .saturating_add(vouch_core::clock::duration_ms(d))
        });
        IssuedTokens {
            login: NewLogin {
                device_id: device_id.unwrap_or_else(|| new_device_id(secrets)),
                display_name,
                access_token_hash: token_hash(&access_token),
                access_expires_at,
                refresh_token_hash: refresh_token.as_deref().map(token_hash),
                ip,
                oauth_client_id: None,
                oauth_scope: None,
            },
            access_token,
            refresh_token,
            expires_in,
        }
    }

    /// Writes a login's device and tokens for `user_id`, if `checked_hash` (the password hash
    /// the login was checked against) is still the account's and the account is active, in
    /// the transaction that writes the token: a deactivation or password change that wins
    /// the race leaves the login without a token.
    pub async fn log_in(
        &self,
        user_id: &str,
        checked_hash: &str,
        login: &NewLogin,
    ) -> Result<(), AccountError> {
        let max = self.s.config.account.max_devices_per_user;
        let localpart = self.localpart(user_id);
        self.check_device_reuse(user_id, &login.device_id).await?;
        let existed = self.s.homeserver.is_some()
            && self.s.db.device(user_id, &login.device_id).await?.is_some();
        self.tell_device(user_id, login).await?;
        let written = match self
            .s
            .db
            .create_login(user_id, checked_hash, login, i64::from(max), self.s.now())
            .await?
        {
            LoginWritten::Done => {
                tracing::info!(user_id, device_id = login.device_id, "logged in");
                return Ok(());
            }
            LoginWritten::Stale => AccountError::StaleCredentials,
            LoginWritten::TooManyDevices => AccountError::TooManyDevices(max),
        };
        // A device the homeserver was told of that never came to be here goes there too
        // (one that was here before, or that a concurrent login made, stays).
        let made_meanwhile = self.s.db.device(user_id, &login.device_id).await?.is_some();
        if !existed && !made_meanwhile {
            self.tell_later(Call::DeleteDevice {
                localpart,
                device_id: login.device_id.clone(),
            })
            .await?;
        }
        Err(written)
    }

    /// Opens an OAuth 2.0 session for `user_id` (who approved it with the password hash
    /// `checked_hash`): the device the scope names, owned by `client_id` (tokens it had
    /// before are revoked), granted `scope`, with a refresh token. The login's rules apply
    /// (device limit, the account still active with that password, the homeserver told
    /// first).
    #[expect(clippy::too_many_arguments, reason = "one session's parts")]
    pub async fn open_oauth_session(
        &self,
        user_id: &str,
        checked_hash: &str,
        client_id: &str,
        device_id: &str,
        scope: &str,
        display_name: Option<String>,
        ip: Option<String>,
    ) -> Result<IssuedTokens, AccountError> {
        let mut issued = self.issue_tokens(Some(device_id.to_owned()), display_name, true, ip);
        issued.login.oauth_client_id = Some(client_id.to_owned());
        issued.login.oauth_scope = Some(scope.to_owned());
        self.log_in(user_id, checked_hash, &issued.login).await?;
        Ok(issued)
    }

    /// Spends a refresh token for a new pair on the same device. `None`: unknown, expired
    /// or spent; a reused one has logged its device out, here and at the homeserver.
    /// `retry` (the OAuth 2.0 grant): a spent token may be presented again while the pair
    /// it bought is unused, for a client whose answer was lost.
    pub async fn refresh(
        &self,
        refresh_token: &str,
        next: &NewLogin,
        retry: bool,
    ) -> Result<Option<RefreshedSession>, AccountError> {
        match self
            .s
            .db
            .refresh(&token_hash(refresh_token), next, self.s.now(), None, retry)
            .await?
        {
            Refreshed::Done(session) => Ok(Some(session)),
            Refreshed::Reused(gone) => {
                // The device went in the refresh's transaction; remembering it and telling
                // the homeserver follow (a crash in between leaves a device at the
                // homeserver whose tokens are all inactive here).
                let notice = self.device_notice(&gone.user_id);
                if let Some(ending) = self.ending(&notice) {
                    self.s
                        .db
                        .note_ended_devices(
                            &gone.user_id,
                            std::slice::from_ref(&gone.device_id),
                            ending.now,
                        )
                        .await?;
                    if let Some(message) = notice(&gone.device_id) {
                        self.s.db.enqueue_message(&message, ending.now).await?;
                    }
                    self.devices_ended(std::slice::from_ref(&gone.device_id));
                }
                Ok(None)
            }
            Refreshed::Unknown => Ok(None),
        }
    }

    /// Logs `device_ids` of `user_id` out: the devices and every token issued to them go
    /// (devices already gone are no error).
    pub async fn log_out(&self, user_id: &str, device_ids: &[String]) -> Result<(), AccountError> {
        let notice = self.device_notice(user_id);
        let ended = self
            .s
            .db
            .delete_devices(user_id, device_ids, self.ending(&notice).as_ref())
            .await?;
        self.devices_ended(&ended);
        tracing::info!(user_id, devices = device_ids.len(), "logged out");
        Ok(())
    }

    /// Logs every device of `user_id` out, and every browser signed in to the account
    /// pages (which could otherwise open new sessions).
    /// Opens an OpenID Connect sign-in without a Matrix session for `user_id`, approved by
    /// a browser signed in with `checked_hash`: an access token that only works at
    /// userinfo, for `[oauth] id_token_lifetime`, written only while the account is active
    /// and its password unchanged. The token and its lifetime in seconds.
    pub async fn open_oidc_sign_in(
        &self,
        user_id: &str,
        checked_hash: &str,
        client_id: &str,
        scope: &str,
    ) -> Result<(String, u64), AccountError> {
        let token = vouch_core::secrets::new_token(self.s.secrets.as_ref(), "voi");
        let lifetime = self.s.config.oauth.id_token_lifetime;
        let written = self
            .s
            .db
            .create_oidc_token(
                &vouch_core::secrets::token_hash(&token),
                &vouch_storage::OidcToken {
                    user_id: user_id.to_owned(),
                    client_id: client_id.to_owned(),
                    scope: scope.to_owned(),
                },
                checked_hash,
                self.s
                    .now()
                    .saturating_add(vouch_core::clock::duration_ms(lifetime)),
            )
            .await?;
        if !written {
            return Err(AccountError::StaleCredentials);
        }
        Ok((token, lifetime.as_secs()))
    }

    pub async fn log_out_all(&self, user_id: &str) -> Result<(), AccountError> {
        self.s.db.end_browser_sessions_of(user_id).await?;
        self.s
            .db
            .withdraw_approvals_of(user_id, self.s.now())
            .await?;
        self.s.db.end_oidc_tokens(user_id).await?;
        let notice = self.device_notice(user_id);
        let ended = self
            .s
            .db
            .delete_all_devices(user_id, self.ending(&notice).as_ref())
            .await?;
        self.devices_ended(&ended);
        tracing::info!(user_id, "logged out everywhere");
        Ok(())
    }
}
