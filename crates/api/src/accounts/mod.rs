//! The accounts service: every way an account changes (created, imported, logged in or
//! out, its password, addresses, profile, admin flag, deactivation) goes through
//! [`Accounts`], whichever door it comes through: the client API, the admin API, the
//! command line or an import. The rules live here once (the password policy, hashing,
//! unique user IDs and addresses, the registration token's uses) with the one mapping of
//! what can go wrong to a Matrix error.

mod create;
mod credentials;
mod deactivate;
mod homeserver;
mod password;
mod profile;
mod threepids;
mod tokens;

use ruma::api::error::ErrorKind;

pub use create::NewUser;
pub use credentials::{BAD_CREDENTIALS, Checked, LoginId};
pub use homeserver::CHANNEL as HOMESERVER_CHANNEL;
pub use password::Logout;
pub use tokens::{
    IssuedTokens, MAX_DEVICE_DISPLAY_NAME, MAX_DEVICE_ID, check_new_device, is_scope_safe,
};

use crate::error::ApiError;
use crate::state::AppState;

/// The accounts service, borrowed from the shared state (`state.accounts()`).
pub struct Accounts<'s> {
    s: &'s AppState,
}

impl<'s> Accounts<'s> {
    /// The accounts service over `state`.
    pub fn new(state: &'s AppState) -> Self {
        Self { s: state }
    }

    /// The account `user_id`, which must exist (deactivated or not).
    pub async fn existing(&self, user_id: &str) -> Result<vouch_storage::User, AccountError> {
        self.s
            .db
            .user(user_id)
            .await
            .map_err(ApiError::from)?
            .ok_or(AccountError::NotFound)
    }
}

/// Why an account was not created.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The password breaks the policy.
    #[error("{0}")]
    WeakPassword(String),
    /// The user ID is taken.
    #[error("That user ID is already taken")]
    UserInUse,
    /// An address belongs to another account.
    #[error("That address is already in use")]
    ThreepidInUse,
    /// The registration token was used up or expired meanwhile.
    #[error("The registration token has been used up or has expired")]
    TokenUsedUp,
    /// The authentication session was used by a concurrent request.
    #[error("This authentication session has already been used")]
    SessionSpent,
    /// The device ID was signed out moments ago (in front of a homeserver); it may be used
    /// again after this long.
    #[error(
        "This device was signed out moments ago; sign in again shortly or with a new device ID"
    )]
    DeviceJustEnded(std::time::Duration),
    /// No such account.
    #[error("User not found")]
    NotFound,
    /// The password checked at login is no longer the account's, or the account was
    /// deactivated meanwhile.
    #[error("Invalid username or password")]
    StaleCredentials,
    /// The account has as many devices as `[account] max_devices_per_user` allows.
    #[error("This account has {0} devices already; sign out of some first")]
    TooManyDevices(u32),
    /// The homeserver did not take a change the answer depends on.
    #[error("The homeserver is unavailable; try again shortly")]
    HomeserverUnavailable,
    /// The homeserver refused a change the answer depends on (a name in an application
    /// service's namespace, say); its words are passed on.
    #[error("{message}")]
    HomeserverRefused {
        /// Its HTTP status.
        status: u16,
        /// Its errcode.
        errcode: String,
        /// Its message.
        message: String,
    },
    /// An imported account that this server cannot hold safely.
    #[error("{0}")]
    Refused(String),
    /// Anything else (storage, hashing).
    #[error(transparent)]
    Other(#[from] ApiError),
}

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> Self {
        let message = e.to_string();
        match e {
            AccountError::WeakPassword(_) => ApiError::new(ErrorKind::WeakPassword, message),
            AccountError::UserInUse => ApiError::new(ErrorKind::UserInUse, message),
            AccountError::ThreepidInUse => ApiError::new(ErrorKind::ThreepidInUse, message),
            AccountError::NotFound => ApiError::not_found(message),
            AccountError::HomeserverUnavailable => ApiError::HomeserverUnavailable(message),
            AccountError::DeviceJustEnded(wait) => ApiError::limit_exceeded(wait),
            AccountError::HomeserverRefused {
                status, errcode, ..
            } => ApiError::Passthrough {
                status: http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_REQUEST),
                body: serde_json::json!({ "errcode": errcode, "error": message }),
            },
            AccountError::TokenUsedUp
            | AccountError::SessionSpent
            | AccountError::Refused(_)
            | AccountError::StaleCredentials
            | AccountError::TooManyDevices(_) => ApiError::forbidden(message),
            AccountError::Other(e) => e,
        }
    }
}

impl From<vouch_storage::StorageError> for AccountError {
    fn from(e: vouch_storage::StorageError) -> Self {
        AccountError::Other(e.into())
    }
}
