//! Presenting a token or code to a session (the link page and `submit_url`), and finding
//! the session a client names.

use vouch_core::secrets::{constant_time_eq, token_hash};
use vouch_core::threepid::check_next_link;
use vouch_core::validation::TokenCheck;
use vouch_storage::{StoredValidation, WrongToken};

use crate::error::ApiResult;
use crate::state::Services;

use super::policy;

/// What presenting a token or code to a session did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    /// It validated the session now; `next_link` is where to send the user, if anywhere.
    Validated {
        /// The checked `next_link`.
        next_link: Option<url::Url>,
    },
    /// Correct, and the session was validated before.
    AlreadyValidated,
    /// Wrong (the session may just have been burned by it).
    Wrong,
    /// The code's lifetime is over, or the session is burned or spent.
    Expired,
    /// No such session, or the client secret does not match.
    Unknown,
}

/// Presents `token` to session `sid`: the link page and `submit_url` share this. The client
/// secret and the token's hash are compared in constant time; a wrong token counts toward
/// the session's cap.
pub async fn submit_secret(
    state: &Services,
    sid: &str,
    client_secret: &str,
    token: &str,
) -> Result<Submitted, vouch_storage::StorageError> {
    let Some(stored) = state.db.validation(sid).await? else {
        return Ok(Submitted::Unknown);
    };
    if !constant_time_eq(&stored.client_secret, client_secret) {
        return Ok(Submitted::Unknown);
    }
    let now = state.now();
    // People type codes with spaces; link tokens have none.
    let token: String = token.chars().filter(|c| !c.is_whitespace()).collect();
    let presented = token_hash(&token);
    let matches = stored
        .token_hash
        .as_deref()
        .is_some_and(|h| constant_time_eq(h, &presented));
    let medium = stored.session.medium.as_str();
    let max_attempts = policy::max_attempts(state, medium);
    match stored.session.check_token(matches, now, max_attempts) {
        TokenCheck::Validated => {
            if !state
                .db
                .mark_validated(sid, &presented, max_attempts, now)
                .await?
            {
                // Wrong guesses used up the attempts first, or the token was replaced or
                // expired meanwhile; a concurrent click with the same token validated it.
                let again = state.db.validation(sid).await?;
                return Ok(match again {
                    Some(s) if s.session.validated_at.is_some() => Submitted::AlreadyValidated,
                    _ => Submitted::Expired,
                });
            }
            vouch_metrics::VALIDATION
                .with_label_values(&[medium, "validated"])
                .inc();
            tracing::info!(sid, medium, purpose = %stored.session.purpose, "address validated");
            let next_link = stored.next_link.as_deref().and_then(|l| {
                check_next_link(l, &state.config.email.next_link_domain_allowlist).ok()
            });
            Ok(Submitted::Validated { next_link })
        }
        TokenCheck::AlreadyValidated => Ok(Submitted::AlreadyValidated),
        // A validated session counts no wrong tokens: there is nothing left to guess.
        TokenCheck::Wrong if stored.session.validated_at.is_some() => Ok(Submitted::Wrong),
        TokenCheck::Wrong => match state.db.spend_wrong_attempt(sid, max_attempts, now).await? {
            WrongToken::Counted { burned } => {
                if burned {
                    vouch_metrics::VALIDATION
                        .with_label_values(&[medium, "burned"])
                        .inc();
                    tracing::warn!(sid, "validation session burned after too many wrong tokens");
                }
                Ok(Submitted::Wrong)
            }
            WrongToken::Refused => Ok(Submitted::Expired),
        },
        TokenCheck::Expired | TokenCheck::Burned => {
            vouch_metrics::VALIDATION
                .with_label_values(&[medium, "expired"])
                .inc();
            Ok(Submitted::Expired)
        }
    }
}

/// The validation session a client names with (`sid`, `client_secret`), if it is Vouch's
/// and the secret matches (compared in constant time).
pub async fn own_session(
    state: &Services,
    sid: &str,
    client_secret: &str,
) -> ApiResult<Option<StoredValidation>> {
    Ok(state
        .db
        .validation(sid)
        .await?
        .filter(|s| constant_time_eq(&s.client_secret, client_secret)))
}
