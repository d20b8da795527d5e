//! OpenID Connect's claims about a user: what an ID token and userinfo say, by the scope
//! granted (`openid` always gives `sub`, the Matrix user ID; `profile` the user name and
//! display name; `email` and `phone` the account's first verified address and number).
//! The signing is `vouch-api`'s (jsonwebtoken); this is only what is said.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use sha2::{Digest, Sha512};

use super::scope::Scope;

/// What is known of a user, for the claims.
#[derive(Debug, Clone, Default)]
pub struct Subject {
    /// The Matrix user ID (`sub`).
    pub user_id: String,
    /// The localpart (`preferred_username`).
    pub localpart: String,
    /// The display name (`name`), if any.
    pub display_name: Option<String>,
    /// The first verified email address, if any.
    pub email: Option<String>,
    /// The first verified phone number (digits, no `+`), if any.
    pub phone: Option<String>,
}

/// The user's claims that `scope` grants.
pub fn user_claims(subject: &Subject, scope: &Scope) -> Map<String, Value> {
    let mut claims = Map::new();
    claims.insert("sub".into(), subject.user_id.clone().into());
    if scope.profile {
        claims.insert(
            "preferred_username".into(),
            subject.localpart.clone().into(),
        );
        if let Some(name) = &subject.display_name {
            claims.insert("name".into(), name.clone().into());
        }
    }
    if scope.email
        && let Some(email) = &subject.email
    {
        claims.insert("email".into(), email.clone().into());
        claims.insert("email_verified".into(), true.into());
    }
    if scope.phone
        && let Some(phone) = &subject.phone
    {
        claims.insert("phone_number".into(), format!("+{phone}").into());
        claims.insert("phone_number_verified".into(), true.into());
    }
    claims
}

/// What binds an ID token to its request and client.
#[derive(Debug, Clone)]
pub struct Binding<'a> {
    /// The issuer (the server's public URL, exactly as discovery says it).
    pub issuer: &'a str,
    /// The client (`aud`).
    pub client_id: &'a str,
    /// The request's `nonce`, if it sent one.
    pub nonce: Option<&'a str>,
    /// The access token issued with it (`at_hash`).
    pub access_token: &'a str,
    /// Issued at, in seconds.
    pub issued_at: i64,
    /// Valid until, in seconds.
    pub expires_at: i64,
}

/// An ID token's claims: the user's (by `scope`) and the binding's.
pub fn id_token_claims(
    subject: &Subject,
    scope: &Scope,
    binding: &Binding<'_>,
) -> Map<String, Value> {
    let mut claims = user_claims(subject, scope);
    claims.insert("iss".into(), binding.issuer.into());
    claims.insert("aud".into(), binding.client_id.into());
    claims.insert("iat".into(), binding.issued_at.into());
    claims.insert("exp".into(), binding.expires_at.into());
    claims.insert("at_hash".into(), at_hash(binding.access_token).into());
    if let Some(nonce) = binding.nonce {
        claims.insert("nonce".into(), nonce.into());
    }
    claims
}

/// `at_hash` for an EdDSA (Ed25519) ID token: the left half of the access token's SHA-512,
/// base64url (OpenID Connect Core §3.1.3.6, with Ed25519's hash).
pub fn at_hash(access_token: &str) -> String {
    let digest = Sha512::digest(access_token.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest[..digest.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Subject {
        Subject {
            user_id: "@alice:example.org".into(),
            localpart: "alice".into(),
            display_name: Some("Alice".into()),
            email: Some("alice@example.org".into()),
            phone: Some("447700900123".into()),
        }
    }

    #[test]
    fn a_scope_says_only_what_it_grants() {
        let bare = user_claims(&alice(), &Scope::parse("openid").unwrap());
        assert_eq!(bare.len(), 1, "{bare:?}");
        assert_eq!(bare["sub"], "@alice:example.org");
        let all = user_claims(
            &alice(),
            &Scope::parse("openid profile email phone").unwrap(),
        );
        assert_eq!(all["preferred_username"], "alice");
        assert_eq!(all["name"], "Alice");
        assert_eq!(all["email"], "alice@example.org");
        assert_eq!(all["email_verified"], true);
        assert_eq!(all["phone_number"], "+447700900123");
        let no_mail = user_claims(
            &Subject {
                email: None,
                ..alice()
            },
            &Scope::parse("openid email").unwrap(),
        );
        assert!(!no_mail.contains_key("email_verified"));
    }

    #[test]
    fn an_id_token_is_bound_to_its_request() {
        let claims = id_token_claims(
            &alice(),
            &Scope::parse("openid").unwrap(),
            &Binding {
                issuer: "https://id.example.org/",
                client_id: "c1",
                nonce: Some("n-0S6_WzA2Mj"),
                access_token: "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y",
                issued_at: 1_000,
                expires_at: 4_600,
            },
        );
        assert_eq!(claims["iss"], "https://id.example.org/");
        assert_eq!(claims["aud"], "c1");
        assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");
        assert_eq!(claims["exp"], 4_600);
        // Half of SHA-512 (32 bytes) is 43 base64url characters.
        assert_eq!(claims["at_hash"].as_str().map(str::len), Some(43));
    }
}
