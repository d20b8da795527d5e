//! 3PID validation sessions: the rules for `send_attempt`, link tokens and codes, attempt
//! caps, expiry and single use. Storage applies the outcomes atomically; this decides them.

use std::fmt;
use std::str::FromStr;

/// What a validation session is for. A session serves only its own purpose: a session
/// made for registration cannot reset a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// `/register/{medium}/requestToken`.
    Register,
    /// `/account/password/{medium}/requestToken`.
    PasswordReset,
    /// `/account/3pid/{medium}/requestToken`.
    AddThreepid,
}

impl Purpose {
    /// Stable name for storage and templates.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Register => "register",
            Purpose::PasswordReset => "password_reset",
            Purpose::AddThreepid => "add_threepid",
        }
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Purpose {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            Purpose::Register,
            Purpose::PasswordReset,
            Purpose::AddThreepid,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
        .ok_or_else(|| format!("unknown validation purpose '{s}'"))
    }
}

/// How long a validated session can still be used by the operation that needs it
/// (the identity-service spec's 24 hours).
pub const VALIDATED_SESSION_LIFETIME_MS: i64 = 24 * 3600 * 1000;

/// A validation session as the rules see it.
#[derive(Debug, Clone)]
pub struct ValidationSession {
    /// Session ID given to the client.
    pub sid: String,
    /// `email` or `msisdn`.
    pub medium: String,
    /// Canonical address.
    pub address: String,
    /// What it is for.
    pub purpose: Purpose,
    /// Highest `send_attempt` seen.
    pub send_attempt: i64,
    /// When the current token stops working (ms).
    pub token_expires_at: i64,
    /// When it was validated (ms).
    pub validated_at: Option<i64>,
    /// Wrong tokens presented so far.
    pub failed_attempts: i64,
    /// Burned (too many wrong tokens, or a decoy that never validates).
    pub burned: bool,
    /// Spent by the operation it authorised.
    pub consumed: bool,
}

/// What a repeated requestToken does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendDecision {
    /// Answer with the same `sid` and send nothing (a retry, or nothing left to do).
    SameSid,
    /// Answer with the same `sid` and send a fresh token.
    Resend,
}

impl ValidationSession {
    /// The spec's rule: only a `send_attempt` greater than the last one sends again. A
    /// validated, spent or burned session never sends again (a burned session would otherwise
    /// hand an attacker a fresh set of guesses).
    pub fn on_request(&self, send_attempt: i64) -> SendDecision {
        if send_attempt <= self.send_attempt
            || self.validated_at.is_some()
            || self.burned
            || self.consumed
        {
            SendDecision::SameSid
        } else {
            SendDecision::Resend
        }
    }

    /// Whether the session can be claimed by an operation at `now`: validated, not burned,
    /// not spent, and validated recently enough.
    pub fn usable_at(&self, now: i64) -> bool {
        !self.burned
            && !self.consumed
            && self
                .validated_at
                .is_some_and(|t| now < t.saturating_add(VALIDATED_SESSION_LIFETIME_MS))
    }

    /// Whether the session takes no more tokens: burned, spent, or out of attempts (a
    /// session whose count reached the cap is burned even where no `burned_at` was written,
    /// e.g. after the cap was lowered).
    pub fn exhausted(&self, max_attempts: i64) -> bool {
        self.burned || self.consumed || self.failed_attempts >= max_attempts
    }

    /// Judges a presented token as the stored session stands. `matches` is the constant-time
    /// comparison of its hash with the stored one. This is a first look only: storage
    /// applies the outcome with a conditional write that re-checks the cap, so concurrent
    /// guesses cannot all pass on one stale read.
    pub fn check_token(&self, matches: bool, now: i64, max_attempts: i64) -> TokenCheck {
        if self.validated_at.is_some() {
            return if matches {
                TokenCheck::AlreadyValidated
            } else {
                TokenCheck::Wrong
            };
        }
        if self.exhausted(max_attempts) {
            return TokenCheck::Burned;
        }
        if now >= self.token_expires_at {
            return TokenCheck::Expired;
        }
        if matches {
            TokenCheck::Validated
        } else {
            TokenCheck::Wrong
        }
    }
}

/// The outcome of presenting a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenCheck {
    /// Correct: the session is now validated.
    Validated,
    /// Correct, and the session was validated before (a second click).
    AlreadyValidated,
    /// Wrong: one attempt is to be spent.
    Wrong,
    /// The token's lifetime is over.
    Expired,
    /// The session was burned or spent.
    Burned,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> ValidationSession {
        ValidationSession {
            sid: "s".into(),
            medium: "email".into(),
            address: "a@b.org".into(),
            purpose: Purpose::Register,
            send_attempt: 1,
            token_expires_at: 1_000,
            validated_at: None,
            failed_attempts: 0,
            burned: false,
            consumed: false,
        }
    }

    #[test]
    fn send_attempt_rules() {
        let s = session();
        assert_eq!(s.on_request(1), SendDecision::SameSid);
        assert_eq!(s.on_request(0), SendDecision::SameSid);
        assert_eq!(s.on_request(2), SendDecision::Resend);
        let validated = ValidationSession {
            validated_at: Some(5),
            ..session()
        };
        assert_eq!(validated.on_request(9), SendDecision::SameSid);
        let burned = ValidationSession {
            burned: true,
            ..session()
        };
        assert_eq!(burned.on_request(9), SendDecision::SameSid);
    }

    #[test]
    fn tokens_expire_burn_and_validate_once() {
        let s = session();
        assert_eq!(s.check_token(true, 999, 5), TokenCheck::Validated);
        assert_eq!(s.check_token(true, 1_000, 5), TokenCheck::Expired);
        assert_eq!(s.check_token(false, 0, 5), TokenCheck::Wrong);
        let four_wrong = ValidationSession {
            failed_attempts: 4,
            ..session()
        };
        assert_eq!(four_wrong.check_token(false, 0, 5), TokenCheck::Wrong);
        // At the cap the session takes nothing, the right token included.
        let five_wrong = ValidationSession {
            failed_attempts: 5,
            ..session()
        };
        assert_eq!(five_wrong.check_token(true, 0, 5), TokenCheck::Burned);
        assert_eq!(five_wrong.check_token(true, 0, 6), TokenCheck::Validated);
        let burned = ValidationSession {
            burned: true,
            ..session()
        };
        assert_eq!(burned.check_token(true, 0, 5), TokenCheck::Burned);
        let validated = ValidationSession {
            validated_at: Some(10),
            ..session()
        };
        assert_eq!(
            validated.check_token(true, 5_000, 5),
            TokenCheck::AlreadyValidated
        );
        assert!(validated.usable_at(10 + VALIDATED_SESSION_LIFETIME_MS - 1));
        assert!(!validated.usable_at(10 + VALIDATED_SESSION_LIFETIME_MS));
        let spent = ValidationSession {
            consumed: true,
            ..validated
        };
        assert!(!spent.usable_at(11));
        assert!(!session().usable_at(0));
    }

    #[test]
    fn purposes_round_trip() {
        for p in [
            Purpose::Register,
            Purpose::PasswordReset,
            Purpose::AddThreepid,
        ] {
            assert_eq!(p.as_str().parse::<Purpose>(), Ok(p));
        }
    }
}
