//! Verifying email addresses and phone numbers: the shared logic behind the six requestToken
//! endpoints, the UIA `m.login.email.identity` / `m.login.msisdn` stages, and the checks of a
//! validated session before an operation spends it. One concern per module:
//!
//! - `policy`: which addresses, numbers and identity-server fields are accepted;
//! - `limits`: the send limits a message must fit;
//! - `messages`: secrets, and the mails and SMS that carry them;
//! - `decoys`: sessions that carry nothing (`inhibit_3pid_errors`) yet answer alike;
//! - `request_token`: the requestToken every endpoint shares;
//! - `delegation`: sessions a trusted identity server runs;
//! - `submission`: presenting a token or code;
//! - `stage`: the UIA stages.

mod decoys;
mod delegation;
mod limits;
mod messages;
mod policy;
mod request_token;
mod stage;
mod submission;

use ruma::api::error::ErrorKind;
use vouch_core::threepid::{Email, Msisdn};
use vouch_core::uia::Operation;
use vouch_core::validation::Purpose;

use crate::error::ApiError;

pub use delegation::refresh_delegated;
pub use messages::wake_mailer;
pub use policy::check_identity_server;
pub use request_token::{Issued, Raw, TokenBody, TokenRequest, request_token};
pub use stage::verify_threepid_stage;
pub use submission::{Submitted, own_session, submit_secret};

/// The path of the page behind the link in a verification mail (Vouch's own, not in the
/// Matrix spec).
pub const EMAIL_LINK_PATH: &str = "_vouch/email/validate";

/// The path of Vouch's `submit_url` (the identity-service `submitToken` shape, MSC4183).
pub const SUBMIT_PATH: &str = "_vouch/submit_token";

/// A validated-to-be address: a canonical email address or phone number.
#[derive(Debug, Clone)]
pub enum Target {
    /// An email address.
    Email(Email),
    /// A phone number.
    Msisdn(Msisdn),
}

impl Target {
    /// `email` or `msisdn`.
    pub fn medium(&self) -> &'static str {
        match self {
            Target::Email(_) => "email",
            Target::Msisdn(_) => "msisdn",
        }
    }

    /// The canonical address.
    pub fn address(&self) -> &str {
        match self {
            Target::Email(e) => e.as_str(),
            Target::Msisdn(m) => m.as_str(),
        }
    }
}

/// The purpose a validation session must have to serve `op`.
pub(crate) fn purpose_for(op: Operation) -> Purpose {
    match op {
        Operation::Register => Purpose::Register,
        Operation::AddThreepid => Purpose::AddThreepid,
        Operation::ResetPassword
        | Operation::ChangePassword
        | Operation::Deactivate
        | Operation::DeleteDevices => Purpose::PasswordReset,
    }
}

pub(crate) fn unauthorized(message: &str) -> ApiError {
    ApiError::new(ErrorKind::Unauthorized, message)
}
