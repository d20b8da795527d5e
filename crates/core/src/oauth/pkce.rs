//! Proof Key for Code Exchange (RFC 7636), `S256` only: the Matrix profile and RFC 9700
//! rule out `plain`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::secrets::constant_time_eq;

/// A code challenge a client sent with its authorization request: the unpadded base64url
/// SHA-256 of a verifier it keeps (43 characters).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct CodeChallenge(String);

/// Why a code challenge is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    /// None was sent: PKCE is required.
    #[error("code_challenge is required (PKCE with S256)")]
    Missing,
    /// A method other than `S256`.
    #[error("code_challenge_method must be S256")]
    Method,
    /// Not the base64url of 32 bytes.
    #[error("code_challenge must be the unpadded base64url SHA-256 of the code verifier")]
    Malformed,
}

impl CodeChallenge {
    /// Parses `challenge` sent with `method` (absent means `plain`, RFC 7636 §4.3, which is
    /// refused).
    pub fn parse(challenge: Option<&str>, method: Option<&str>) -> Result<Self, ChallengeError> {
        let challenge = challenge.ok_or(ChallengeError::Missing)?;
        if method != Some("S256") {
            return Err(ChallengeError::Method);
        }
        match URL_SAFE_NO_PAD.decode(challenge) {
            Ok(bytes) if bytes.len() == 32 => Ok(Self(challenge.to_owned())),
            _ => Err(ChallengeError::Malformed),
        }
    }

    /// Whether `verifier` is the one this challenge was made from. A verifier is 43 to 128
    /// characters of `[A-Za-z0-9-._~]` (RFC 7636 §4.1); anything else never matches.
    pub fn verify(&self, verifier: &str) -> bool {
        let well_formed = (43..=128).contains(&verifier.len())
            && verifier
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
        well_formed && constant_time_eq(&s256(verifier), &self.0)
    }

    /// The challenge as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The `S256` transform of a verifier.
pub fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7636 appendix B.
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn the_rfc_example_verifies() {
        let c = CodeChallenge::parse(Some(CHALLENGE), Some("S256")).unwrap();
        assert!(c.verify(VERIFIER));
        assert!(!c.verify("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXx"));
        assert!(!c.verify(""), "an empty verifier never matches");
    }

    #[test]
    fn plain_and_missing_challenges_are_refused() {
        assert_eq!(
            CodeChallenge::parse(Some(VERIFIER), None),
            Err(ChallengeError::Method)
        );
        assert_eq!(
            CodeChallenge::parse(Some(VERIFIER), Some("plain")),
            Err(ChallengeError::Method)
        );
        assert_eq!(
            CodeChallenge::parse(None, Some("S256")),
            Err(ChallengeError::Missing)
        );
        assert_eq!(
            CodeChallenge::parse(Some("short"), Some("S256")),
            Err(ChallengeError::Malformed)
        );
    }
}
