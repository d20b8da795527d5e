//! What a session carries: a real secret, or nothing (`inhibit_3pid_errors`), so that a
//! decoy takes the same path as a real session and answers alike.

use vouch_core::secrets::token_hash;
use vouch_storage::NewMessage;

use crate::error::ApiResult;
use crate::state::Services;

use super::Target;
use super::messages;
use super::request_token::TokenRequest;

/// What a session's message carries.
#[derive(Debug, Clone, Copy)]
pub(super) enum Carry {
    /// A link token or code; `held` until the registration's cheap stages pass.
    Secret {
        /// Not sent until released.
        held: bool,
    },
    /// Nothing to validate with (`inhibit_3pid_errors`): the owner of an email address in
    /// use gets a notice instead of a link; otherwise a stand-in row is counted by the
    /// send limits and never sent (an SMS notice would cost money and invite pumping).
    Decoy {
        /// The address belongs to an account.
        in_use: bool,
    },
}

/// A fresh secret's hash (none for a decoy), when it stops working, and the message
/// that goes with it for session `sid`.
pub(super) fn secret_and_message(
    state: &Services,
    req: &TokenRequest<'_>,
    target: &Target,
    carry: Carry,
    sid: &str,
) -> ApiResult<(Option<String>, i64, NewMessage)> {
    let (secret, lifetime) = messages::new_secret(state, target, req.from_pages);
    let expires = state.now() + lifetime;
    match carry {
        Carry::Secret { held } => {
            let message = messages::message_for(
                state,
                target,
                req.purpose,
                sid,
                req.client_secret,
                &secret,
                held,
                req.from_pages,
                &req.lang,
            )?;
            Ok((Some(token_hash(&secret)), expires, message))
        }
        Carry::Decoy { in_use } => {
            let message = match target {
                Target::Email(e) => NewMessage {
                    stand_in: !in_use,
                    ..messages::mail(
                        state,
                        "already_in_use",
                        e.as_str(),
                        Some(sid),
                        String::new(),
                        None,
                        false,
                        &req.lang,
                    )?
                },
                Target::Msisdn(m) => NewMessage {
                    stand_in: true,
                    ..messages::sms(state, m, sid, &secret, false, &req.lang)?
                },
            };
            Ok((None, expires, message))
        }
    }
}
