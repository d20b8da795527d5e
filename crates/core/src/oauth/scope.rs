//! The scopes a Matrix client asks for (the spec's `urn:matrix:client:…` scopes, the
//! unstable `urn:matrix:org.matrix.msc2967.client:…` forms clients still send, and
//! OpenID Connect's `openid`), parsed once into what the session may do.

/// The stable prefix of the Matrix scopes.
const STABLE: &str = "urn:matrix:client:";
/// The unstable (MSC2967) prefix.
const UNSTABLE: &str = "urn:matrix:org.matrix.msc2967.client:";

/// The longest scope accepted, in bytes.
pub const MAX_SCOPE: usize = 1024;

/// Synapse's admin API scope.
pub const ADMIN: &str = "urn:synapse:admin:*";

/// The longest device ID a scope may carry, in bytes.
pub const MAX_SCOPE_DEVICE_ID: usize = 255;

/// What a client asked for and may be granted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Scope {
    /// Full access to the client-server API (`urn:matrix:client:api:*`).
    pub api: bool,
    /// The device the session is bound to (`urn:matrix:client:device:<id>`).
    pub device_id: String,
    /// OpenID Connect (`openid`): an ID token with the tokens.
    pub openid: bool,
    /// OpenID Connect's `profile`: the name and user name in the ID token and userinfo.
    #[serde(default)]
    pub profile: bool,
    /// OpenID Connect's `email`: the account's email address.
    #[serde(default)]
    pub email: bool,
    /// OpenID Connect's `phone`: the account's phone number.
    #[serde(default)]
    pub phone: bool,
    /// The homeserver's admin API (`urn:synapse:admin:*`), granted to admins only.
    pub admin: bool,
    /// The scope exactly as the client sent it (tokens answer it back).
    pub requested: String,
}

/// Why a scope is refused (OAuth's `invalid_scope`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// Neither `urn:matrix:client:api:*` (a Matrix session) nor `openid` alone (an
    /// OpenID Connect sign-in, with no Matrix session and no device).
    #[error(
        "the scope must include urn:matrix:client:api:* (a Matrix session) or openid without Matrix scopes (an OpenID Connect sign-in)"
    )]
    NoApi,
    /// The scope is longer than [`MAX_SCOPE`].
    #[error("the scope is longer than {MAX_SCOPE} bytes")]
    TooLong,
    /// No device scope: a Matrix session needs one device.
    #[error("the scope must name exactly one device (urn:matrix:client:device:<device ID>)")]
    NoDevice,
    /// Two device scopes (with different IDs).
    #[error("the scope names more than one device")]
    TwoDevices,
    /// A device ID outside the unreserved characters of RFC 3986 or too long.
    #[error(
        "a device ID in a scope is 1 to {MAX_SCOPE_DEVICE_ID} printable ASCII characters other than space, '\"' and '\\'"
    )]
    BadDevice,
    /// A scope this server does not grant.
    #[error("unknown scope '{0}'")]
    Unknown(String),
}

impl Scope {
    /// Parses a space-separated scope.
    pub fn parse(scope: &str) -> Result<Self, ScopeError> {
        if scope.len() > MAX_SCOPE {
            return Err(ScopeError::TooLong);
        }
        let mut api = false;
        let mut openid = false;
        let (mut profile, mut email, mut phone) = (false, false, false);
        let mut admin = false;
        let mut device: Option<&str> = None;
        for token in scope.split(' ').filter(|t| !t.is_empty()) {
            let matrix = token
                .strip_prefix(STABLE)
                .or_else(|| token.strip_prefix(UNSTABLE));
            match (token, matrix) {
                ("openid", _) => openid = true,
                ("profile", _) => profile = true,
                ("email", _) => email = true,
                ("phone", _) => phone = true,
                (ADMIN, _) => admin = true,
                (_, Some("api:*")) => api = true,
                (_, Some(rest)) if rest.starts_with("device:") => {
                    let id = &rest["device:".len()..];
                    if !is_scope_device_id(id) {
                        return Err(ScopeError::BadDevice);
                    }
                    match device {
                        Some(seen) if seen != id => return Err(ScopeError::TwoDevices),
                        _ => device = Some(id),
                    }
                }
                _ => return Err(ScopeError::Unknown(token.chars().take(100).collect())),
            }
        }
        let device_id = match (api, openid, device) {
            (true, _, Some(id)) => id.to_owned(),
            (true, _, None) => return Err(ScopeError::NoDevice),
            // An OpenID Connect sign-in names no device and grants no Matrix API.
            (false, true, None) if !admin => String::new(),
            (false, _, _) => return Err(ScopeError::NoApi),
        };
        Ok(Self {
            api,
            device_id,
            openid,
            profile,
            email,
            phone,
            admin,
            requested: scope
                .split(' ')
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
                .join(" "),
        })
    }
}

impl Scope {
    /// An OpenID Connect sign-in alone: who the user is, no Matrix session.
    pub fn identity_only(&self) -> bool {
        !self.api
    }

    /// The scope granted to a user (`is_admin`): what was asked for, without the admin API
    /// unless the user is an admin; each token once.
    pub fn granted(&self, is_admin: bool) -> String {
        let mut out: Vec<&str> = Vec::new();
        for token in self.requested.split(' ') {
            if (token != ADMIN || is_admin) && !out.contains(&token) {
                out.push(token);
            }
        }
        out.join(" ")
    }
}

/// Whether `id` may be a device ID in a scope: the characters RFC 6749 §3.3 allows in a
/// scope token (printable ASCII other than space, `"` and `\`), so that it never brings
/// another scope with it. The spec advises clients to use RFC 3986's unreserved characters
/// but Element X's QR login uses base64 (`+`, `/`), so no more is asked.
pub fn is_scope_device_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_SCOPE_DEVICE_ID
        && id
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_unstable_forms_parse_alike() {
        let s =
            Scope::parse("urn:matrix:client:api:* urn:matrix:client:device:ABCDEFGHIJ").unwrap();
        assert!(s.api && !s.openid);
        assert_eq!(s.device_id, "ABCDEFGHIJ");
        let u = Scope::parse(
            "openid  urn:matrix:org.matrix.msc2967.client:api:* urn:matrix:org.matrix.msc2967.client:device:ABCDEFGHIJ",
        )
        .unwrap();
        assert!(u.api && u.openid);
        assert_eq!(u.device_id, "ABCDEFGHIJ");
        assert!(!u.requested.contains("  "), "{}", u.requested);
        // Both forms of one device are one device.
        let both = Scope::parse(
            "urn:matrix:client:api:* urn:matrix:client:device:X1 urn:matrix:org.matrix.msc2967.client:device:X1",
        )
        .unwrap();
        assert_eq!(both.device_id, "X1");
    }

    #[test]
    fn what_cannot_be_granted_is_refused() {
        let api = |rest: &str| format!("urn:matrix:client:api:* {rest}");
        assert_eq!(
            Scope::parse("urn:matrix:client:api:*"),
            Err(ScopeError::NoDevice)
        );
        assert_eq!(
            Scope::parse("urn:matrix:client:device:A"),
            Err(ScopeError::NoApi)
        );
        assert_eq!(
            Scope::parse(&api(&"openid ".repeat(200))),
            Err(ScopeError::TooLong)
        );
        assert_eq!(
            Scope::parse(&api(
                "urn:matrix:client:device:A urn:matrix:client:device:B"
            )),
            Err(ScopeError::TwoDevices)
        );
        assert_eq!(
            Scope::parse(&api("urn:matrix:client:device:a\"b")),
            Err(ScopeError::BadDevice)
        );
        assert_eq!(
            Scope::parse(&api("urn:matrix:client:device:")),
            Err(ScopeError::BadDevice)
        );
        let admin = Scope::parse(&api("urn:matrix:client:device:A urn:synapse:admin:*")).unwrap();
        assert!(admin.admin);
        assert_eq!(
            admin.granted(false),
            "urn:matrix:client:api:* urn:matrix:client:device:A",
            "the admin scope goes to admins only"
        );
        assert!(admin.granted(true).ends_with("urn:synapse:admin:*"));
        assert!(matches!(
            Scope::parse(&api("urn:matrix:client:device:A urn:synapse:admin:x")),
            Err(ScopeError::Unknown(_))
        ));
    }

    #[test]
    fn openid_alone_is_a_sign_in_without_a_session() {
        let oidc = Scope::parse("openid profile email phone").unwrap();
        assert!(oidc.identity_only() && oidc.openid && oidc.profile && oidc.email && oidc.phone);
        assert_eq!(oidc.device_id, "");
        assert_eq!(Scope::parse("profile email"), Err(ScopeError::NoApi));
        assert_eq!(
            Scope::parse("openid urn:matrix:client:device:A"),
            Err(ScopeError::NoApi),
            "a device without the API"
        );
        assert_eq!(
            Scope::parse("openid urn:synapse:admin:*"),
            Err(ScopeError::NoApi),
            "the admin API without a Matrix session"
        );
        let both = Scope::parse("openid email urn:matrix:client:api:* urn:matrix:client:device:D")
            .unwrap();
        assert!(!both.identity_only() && both.email);
    }
}
