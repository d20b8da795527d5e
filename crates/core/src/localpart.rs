//! User ID localparts, parsed once at the edge (spec: "User Identifiers").

use std::fmt;

/// Why a requested username cannot become a localpart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocalpartError {
    /// Empty username.
    #[error("the username must not be empty")]
    Empty,
    /// A character outside `[a-z0-9._=\-/+]` (after lower-casing).
    #[error("the username may only contain a-z, 0-9, '.', '_', '=', '-', '/' and '+'")]
    BadCharacter,
    /// Names starting with `_` are kept for application services, as Synapse does.
    #[error("the username may not begin with '_'")]
    Underscore,
    /// `@localpart:server_name` would be over 255 bytes.
    #[error("the user ID would be longer than 255 bytes")]
    TooLong,
}

/// A valid localpart of a user on this server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Localpart(String);

impl Localpart {
    /// Parses a username as a client sent it: lower-cased first (the spec lets servers
    /// lower-case on creation), then held to the grammar and the 255-byte user ID limit.
    pub fn parse(username: &str, server_name: &str) -> Result<Self, LocalpartError> {
        let lower = username.to_lowercase();
        if lower.is_empty() {
            return Err(LocalpartError::Empty);
        }
        if !lower.bytes().all(
            |b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+'),
        ) {
            return Err(LocalpartError::BadCharacter);
        }
        if lower.starts_with('_') {
            return Err(LocalpartError::Underscore);
        }
        if lower.len() + server_name.len() + 2 > 255 {
            return Err(LocalpartError::TooLong);
        }
        Ok(Self(lower))
    }

    /// The localpart text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `@localpart:server_name`.
    pub fn user_id(&self, server_name: &str) -> String {
        format!("@{}:{server_name}", self.0)
    }
}

impl fmt::Display for Localpart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `localpart` is one the spec's historical grammar allows (printable ASCII but
/// `:`), as older servers created them, within the 255-byte user ID limit. What an import
/// may bring in; new accounts follow [`Localpart::parse`].
pub fn is_historical_localpart(localpart: &str, server_name: &str) -> bool {
    !localpart.is_empty()
        && localpart.len() + server_name.len() + 2 <= 255
        && localpart
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b':')
}

/// The localpart of `user`, when `user` is a full user ID on `server_name` or a bare localpart.
/// Used for login identifiers, which may be either.
pub fn localpart_of<'a>(user: &'a str, server_name: &str) -> Option<&'a str> {
    match user.strip_prefix('@') {
        Some(rest) => {
            let (local, server) = rest.split_once(':')?;
            (server == server_name).then_some(local)
        }
        None => Some(user),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_cases_and_checks_grammar() {
        assert_eq!(
            Localpart::parse("Alice", "example.org").unwrap().as_str(),
            "alice"
        );
        assert_eq!(
            Localpart::parse("a.b_c=d-e/f+g", "x").unwrap().as_str(),
            "a.b_c=d-e/f+g"
        );
        assert_eq!(Localpart::parse("", "x"), Err(LocalpartError::Empty));
        assert_eq!(
            Localpart::parse("a b", "x"),
            Err(LocalpartError::BadCharacter)
        );
        assert_eq!(
            Localpart::parse("al:ice", "x"),
            Err(LocalpartError::BadCharacter)
        );
        assert_eq!(
            Localpart::parse("é", "x"),
            Err(LocalpartError::BadCharacter)
        );
        assert_eq!(
            Localpart::parse("_bridge", "x"),
            Err(LocalpartError::Underscore)
        );
        let long = "a".repeat(250);
        assert_eq!(
            Localpart::parse(&long, "example.org"),
            Err(LocalpartError::TooLong)
        );
        assert_eq!(Localpart::parse("bob", "x").unwrap().user_id("x"), "@bob:x");
    }

    #[test]
    fn login_identifiers() {
        assert_eq!(localpart_of("@bob:x.org", "x.org"), Some("bob"));
        assert_eq!(localpart_of("bob", "x.org"), Some("bob"));
        assert_eq!(localpart_of("@bob:other.org", "x.org"), None);
        assert_eq!(localpart_of("@bob", "x.org"), None);
    }
}
