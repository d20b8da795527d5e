//! What a failed delivery (a mail, an SMS, a call to the homeserver) tells the outbox: what
//! went wrong, and whether trying again can help.

/// A delivery attempt failed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    /// What went wrong, for the log and the outbox row (never a secret or a code).
    pub message: String,
    /// Refused for good (an SMTP 5xx, a gateway's 4xx other than 408/429); retrying the
    /// same message will not help.
    pub permanent: bool,
}
