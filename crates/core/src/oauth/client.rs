//! Dynamic client registration (RFC 7591) as the Matrix spec profiles it: which metadata a
//! client may register, and the redirect URI rules that stand in for a client secret (a
//! public client "proves" who it is by where its codes go).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use url::{Host, Url};

/// At most this many redirect URIs per client.
pub const MAX_REDIRECT_URIS: usize = 20;
/// At most this many localised variants of all fields together.
pub const MAX_LOCALISED: usize = 40;
/// The longest URI or name accepted, in bytes.
pub const MAX_VALUE: usize = 2048;

/// The grant types this server supports.
pub const GRANT_AUTHORIZATION_CODE: &str = "authorization_code";
/// Refresh token grant.
pub const GRANT_REFRESH_TOKEN: &str = "refresh_token";
/// RFC 8628's device authorization grant.
pub const GRANT_DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// What a client sends to the registration endpoint. Unknown fields are ignored (RFC 7591
/// §2), except the localised forms of the human-readable ones (`client_name#fr`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ClientRequest {
    /// The client's home page; every other URI shares its host.
    pub client_uri: Option<String>,
    /// The client's name.
    pub client_name: Option<String>,
    /// Its logo.
    pub logo_uri: Option<String>,
    /// Its terms of service.
    pub tos_uri: Option<String>,
    /// Its privacy policy.
    pub policy_uri: Option<String>,
    /// Where codes may be sent.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Response types it will use.
    pub response_types: Option<Vec<String>>,
    /// Grant types it will use.
    pub grant_types: Option<Vec<String>>,
    /// How it authenticates at the token endpoint (only `none` here: public clients).
    pub token_endpoint_auth_method: Option<String>,
    /// `web` (the default) or `native`.
    pub application_type: Option<String>,
    /// Everything else, from which the localised variants are taken.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// A client's registered metadata: what the registration endpoint answers (with the
/// `client_id`) and what the consent page shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientMetadata {
    /// Its home page.
    pub client_uri: String,
    /// Its name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    /// Its logo.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logo_uri: Option<String>,
    /// Its terms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tos_uri: Option<String>,
    /// Its policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_uri: Option<String>,
    /// Where codes may go.
    pub redirect_uris: Vec<String>,
    /// `["code"]` when it uses the authorization code grant.
    pub response_types: Vec<String>,
    /// The grants it may use, of those this server supports.
    pub grant_types: Vec<String>,
    /// Always `none`.
    pub token_endpoint_auth_method: String,
    /// `web` or `native`.
    pub application_type: ApplicationType,
    /// Localised variants: `client_name#fr` and the like.
    #[serde(flatten)]
    pub localised: BTreeMap<String, String>,
}

impl ClientMetadata {
    /// Whether the operator runs this app: a web app whose `client_uri` host is one of
    /// `hosts`. Its redirect URIs are on that host (the registration rules), so only the
    /// operator's own site receives what is sent there. A native app proves no host.
    pub fn is_first_party(&self, hosts: &[String]) -> bool {
        self.application_type == ApplicationType::Web
            && url::Url::parse(&self.client_uri)
                .ok()
                .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
                .is_some_and(|h| hosts.iter().any(|t| t.eq_ignore_ascii_case(&h)))
    }
}

/// RFC 7591's `application_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApplicationType {
    /// Runs in a browser or on a web server.
    Web,
    /// Runs on the user's device.
    Native,
}

/// Why a registration is refused, with RFC 7591's error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// A redirect URI breaks the rules (`invalid_redirect_uri`).
    #[error("{0}")]
    RedirectUri(String),
    /// Any other field does (`invalid_client_metadata`).
    #[error("{0}")]
    Metadata(String),
}

impl ClientError {
    /// RFC 7591's `error` value.
    pub fn code(&self) -> &'static str {
        match self {
            ClientError::RedirectUri(_) => "invalid_redirect_uri",
            ClientError::Metadata(_) => "invalid_client_metadata",
        }
    }
}

fn meta(msg: impl Into<String>) -> ClientError {
    ClientError::Metadata(msg.into())
}

fn redirect(msg: impl Into<String>) -> ClientError {
    ClientError::RedirectUri(msg.into())
}

/// Parses an `https` URL with no user or password, as `client_uri`, `tos_uri` and
/// `policy_uri` must be.
fn https_url(field: &str, value: &str) -> Result<Url, ClientError> {
    if value.len() > MAX_VALUE {
        return Err(meta(format!("{field} is longer than {MAX_VALUE} bytes")));
    }
    let url = Url::parse(value).map_err(|_| meta(format!("{field} is not a URL")))?;
    if url.scheme() != "https" || url.host().is_none() {
        return Err(meta(format!("{field} must be an https URL")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(meta(format!(
            "{field} must not hold a user name or password"
        )));
    }
    Ok(url)
}

/// Whether `host` is `base` or a subdomain of it (the spec's "common base").
fn within(host: Option<Host<&str>>, base: &str) -> bool {
    match host {
        Some(Host::Domain(h)) => {
            let h = h.to_ascii_lowercase();
            h == base || h.ends_with(&format!(".{base}"))
        }
        Some(Host::Ipv4(ip)) => ip.to_string() == base,
        Some(Host::Ipv6(ip)) => format!("[{ip}]") == base,
        None => false,
    }
}

/// The host of a parsed `https` URL, lowercased.
fn host_of(url: &Url) -> String {
    url.host_str().unwrap_or_default().to_ascii_lowercase()
}

impl ClientMetadata {
    /// Checks a registration request against the spec's rules and keeps what this server
    /// understands.
    pub fn register(req: ClientRequest) -> Result<Self, ClientError> {
        let client_uri = req
            .client_uri
            .as_deref()
            .ok_or_else(|| meta("client_uri is required"))?;
        let base_url = https_url("client_uri", client_uri)?;
        let base = host_of(&base_url);
        let same_base = |field: &str, value: &str| -> Result<String, ClientError> {
            let url = https_url(field, value)?;
            if !within(url.host(), &base) {
                return Err(meta(format!(
                    "{field} must be on the host of client_uri ({base}) or a subdomain of it"
                )));
            }
            Ok(value.to_owned())
        };
        let application_type = match req.application_type.as_deref() {
            None | Some("web") => ApplicationType::Web,
            Some("native") => ApplicationType::Native,
            Some(_) => return Err(meta("application_type must be web or native")),
        };
        match req.token_endpoint_auth_method.as_deref() {
            None | Some("none") => {}
            Some(_) => {
                return Err(meta(
                    "token_endpoint_auth_method must be none: this server registers public clients only",
                ));
            }
        }
        let grant_types: Vec<String> = req
            .grant_types
            .unwrap_or_else(|| vec![GRANT_AUTHORIZATION_CODE.to_owned()])
            .into_iter()
            .filter(|g| {
                [
                    GRANT_AUTHORIZATION_CODE,
                    GRANT_REFRESH_TOKEN,
                    GRANT_DEVICE_CODE,
                ]
                .contains(&g.as_str())
            })
            .fold(Vec::new(), |mut acc, g| {
                if !acc.contains(&g) {
                    acc.push(g);
                }
                acc
            });
        let response_types: Vec<String> = req
            .response_types
            .unwrap_or_else(|| vec!["code".to_owned()])
            .into_iter()
            .filter(|r| r == "code")
            .take(1)
            .collect();
        let uses_code = grant_types.iter().any(|g| g == GRANT_AUTHORIZATION_CODE);
        if uses_code && response_types.is_empty() {
            return Err(meta(
                "response_types must include code to use the authorization_code grant",
            ));
        }
        if uses_code && req.redirect_uris.is_empty() {
            return Err(redirect(
                "redirect_uris needs at least one URI to use the authorization_code grant",
            ));
        }
        if req.redirect_uris.len() > MAX_REDIRECT_URIS {
            return Err(redirect(format!(
                "at most {MAX_REDIRECT_URIS} redirect_uris may be registered"
            )));
        }
        for uri in &req.redirect_uris {
            check_redirect_uri(uri, application_type, &base)?;
        }
        let client_name = req.client_name.map(|n| check_name(&n)).transpose()?;
        let logo_uri = req
            .logo_uri
            .map(|u| same_base("logo_uri", &u))
            .transpose()?;
        let tos_uri = req.tos_uri.map(|u| same_base("tos_uri", &u)).transpose()?;
        let policy_uri = req
            .policy_uri
            .map(|u| same_base("policy_uri", &u))
            .transpose()?;
        let mut localised = BTreeMap::new();
        for (key, value) in &req.other {
            let Some((field, tag)) = key.split_once('#') else {
                continue;
            };
            if !["client_name", "logo_uri", "tos_uri", "policy_uri"].contains(&field) {
                continue;
            }
            if !is_language_tag(tag) {
                return Err(meta(format!("{key}: '{tag}' is not a language tag")));
            }
            let Some(value) = value.as_str() else {
                return Err(meta(format!("{key} must be a string")));
            };
            let value = if field == "client_name" {
                check_name(value)?
            } else {
                same_base(key, value)?
            };
            localised.insert(key.clone(), value);
        }
        if localised.len() > MAX_LOCALISED {
            return Err(meta(format!(
                "at most {MAX_LOCALISED} localised values may be registered"
            )));
        }
        Ok(Self {
            client_uri: client_uri.to_owned(),
            client_name,
            logo_uri,
            tos_uri,
            policy_uri,
            redirect_uris: req.redirect_uris,
            response_types,
            grant_types,
            token_endpoint_auth_method: "none".to_owned(),
            application_type,
            localised,
        })
    }

    /// Whether the client registered this grant type.
    pub fn allows_grant(&self, grant: &str) -> bool {
        self.grant_types.iter().any(|g| g == grant)
    }

    /// The registered redirect URI `uri` matches, exactly, except that a native client's
    /// loopback URI matches on any port (RFC 8252 §7.3).
    pub fn redirect_uri_matches(&self, uri: &str) -> bool {
        self.redirect_uris.iter().any(|registered| {
            registered == uri
                || (self.application_type == ApplicationType::Native
                    && loopback_without_port(registered) == loopback_without_port(uri)
                    && loopback_without_port(uri).is_some())
        })
    }

    /// The name to show for `languages` (most preferred first), falling back to the plain
    /// name and then to the client's host.
    pub fn display_name(&self, languages: &[&str]) -> String {
        languages
            .iter()
            .find_map(|l| self.localised.get(&format!("client_name#{l}")))
            .or(self.client_name.as_ref())
            .cloned()
            .unwrap_or_else(|| {
                Url::parse(&self.client_uri)
                    .map(|u| host_of(&u))
                    .unwrap_or_default()
            })
    }
}

/// An `http` loopback URI with its port removed, to compare with a registered one.
fn loopback_without_port(uri: &str) -> Option<String> {
    let mut url = Url::parse(uri).ok()?;
    if url.scheme() != "http" || !is_loopback(&url) {
        return None;
    }
    url.set_port(None).ok()?;
    Some(url.to_string())
}

fn is_loopback(url: &Url) -> bool {
    matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"))
}

/// The spec's redirect URI validation.
fn check_redirect_uri(uri: &str, kind: ApplicationType, base: &str) -> Result<(), ClientError> {
    if uri.len() > MAX_VALUE {
        return Err(redirect(format!(
            "a redirect URI is longer than {MAX_VALUE} bytes"
        )));
    }
    let url = Url::parse(uri).map_err(|_| redirect(format!("'{uri}' is not a URI")))?;
    if url.fragment().is_some() {
        return Err(redirect(format!("'{uri}' has a fragment")));
    }
    let web_rules = |url: &Url| -> Result<(), ClientError> {
        if url.scheme() != "https" {
            return Err(redirect(format!("'{uri}' must use https")));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(redirect(format!(
                "'{uri}' must not hold a user name or password"
            )));
        }
        if !within(url.host(), base) {
            return Err(redirect(format!(
                "'{uri}' must be on the host of client_uri ({base}) or a subdomain of it"
            )));
        }
        Ok(())
    };
    match (kind, url.scheme()) {
        (ApplicationType::Web, _) | (ApplicationType::Native, "https") => web_rules(&url),
        (ApplicationType::Native, "http") => {
            if !is_loopback(&url) {
                return Err(redirect(format!(
                    "'{uri}': a native client's http redirect URI must be on localhost, 127.0.0.1 or [::1]"
                )));
            }
            if url.port().is_some() {
                return Err(redirect(format!(
                    "'{uri}': register a loopback redirect URI without a port; any port is accepted when it is used"
                )));
            }
            Ok(())
        }
        (ApplicationType::Native, scheme) => {
            // A private-use scheme: the client URI's host reversed, then optionally more
            // labels (`com.example.app` for example.com), and no authority.
            let reversed: Vec<&str> = base.split('.').rev().collect();
            let labels: Vec<&str> = scheme.split('.').collect();
            let prefixed = reversed.len() >= 2
                && labels.len() >= reversed.len()
                && labels[..reversed.len()] == reversed[..];
            if !prefixed {
                return Err(redirect(format!(
                    "'{uri}': a private-use scheme must start with the client_uri's host in reverse order ({})",
                    reversed.join(".")
                )));
            }
            if uri[scheme.len() + 1..].starts_with("//") {
                return Err(redirect(format!(
                    "'{uri}': a private-use URI has no authority (one slash after the scheme, or none)"
                )));
            }
            Ok(())
        }
    }
}

/// A client name: 1 to 256 characters, no control characters and none of the invisible
/// or direction-changing ones (a right-to-left override makes one name look like another).
fn check_name(name: &str) -> Result<String, ClientError> {
    let n = name.chars().count();
    // Controls, Unicode's default-ignorable code points, line and paragraph separators, and
    // the blanks that pass for letters (Hangul fillers, the braille blank).
    let sly = |c: char| {
        c.is_control()
            || matches!(
                c,
                '\u{00AD}'
                    | '\u{034F}'
                    | '\u{061C}'
                    | '\u{115F}'..='\u{1160}'
                    | '\u{17B4}'..='\u{17B5}'
                    | '\u{180B}'..='\u{180F}'
                    | '\u{200B}'..='\u{200F}'
                    | '\u{2028}'..='\u{202E}'
                    | '\u{2060}'..='\u{206F}'
                    | '\u{2800}'
                    | '\u{3164}'
                    | '\u{FE00}'..='\u{FE0F}'
                    | '\u{FEFF}'
                    | '\u{FFA0}'
                    | '\u{1D173}'..='\u{1D17A}'
                    | '\u{E0000}'..='\u{E0FFF}'
            )
    };
    let visible = name.chars().any(|c| !c.is_whitespace());
    if n == 0 || n > 256 || !visible || name.chars().any(sly) {
        return Err(meta(
            "client_name must be 1 to 256 characters without control, invisible or direction characters",
        ));
    }
    Ok(name.to_owned())
}

/// A BCP 47 language tag, loosely: letters, digits and hyphens, 2 to 35 characters.
fn is_language_tag(tag: &str) -> bool {
    (2..=35).contains(&tag.len())
        && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && tag.as_bytes()[0].is_ascii_alphabetic()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(kind: &str, uris: &[&str]) -> ClientRequest {
        ClientRequest {
            client_uri: Some("https://example.com/".into()),
            redirect_uris: uris.iter().map(|s| (*s).to_owned()).collect(),
            application_type: Some(kind.into()),
            grant_types: Some(vec!["authorization_code".into(), "refresh_token".into()]),
            ..ClientRequest::default()
        }
    }

    #[test]
    fn the_specs_valid_redirect_uris_register() {
        for uri in [
            "https://example.com/callback",
            "https://app.example.com/callback",
            "https://example.com:5173/?query=value",
        ] {
            ClientMetadata::register(req("web", &[uri])).unwrap_or_else(|e| panic!("{uri}: {e}"));
        }
        for uri in [
            "com.example.app:/callback",
            "com.example:/",
            "com.example:callback",
            "http://localhost/callback",
            "http://127.0.0.1/callback",
            "http://[::1]/callback",
            "https://app.example.com/native",
        ] {
            ClientMetadata::register(req("native", &[uri]))
                .unwrap_or_else(|e| panic!("{uri}: {e}"));
        }
    }

    #[test]
    fn the_specs_invalid_redirect_uris_are_refused() {
        for uri in [
            "https://example.com/callback#fragment",
            "http://example.com/callback",
            "http://localhost/",
            "https://app.com/callback",
            "https://evil.com/?example.com",
            "https://user:pw@example.com/",
            "https://notexample.com/",
        ] {
            let e = ClientMetadata::register(req("web", &[uri])).unwrap_err();
            assert_eq!(e.code(), "invalid_redirect_uri", "{uri}");
        }
        for uri in [
            "example:/callback",
            "com.example.app://callback",
            "https://localhost/callback",
            "http://localhost:1234/callback",
            "com:/x",
            "http://10.0.0.1/callback",
        ] {
            let e = ClientMetadata::register(req("native", &[uri])).unwrap_err();
            assert_eq!(e.code(), "invalid_redirect_uri", "{uri}");
        }
    }

    #[test]
    fn metadata_rules() {
        let mut r = req("web", &["https://example.com/cb"]);
        r.client_uri = None;
        assert_eq!(
            ClientMetadata::register(r).unwrap_err().code(),
            "invalid_client_metadata"
        );
        let mut r = req("web", &["https://example.com/cb"]);
        r.client_uri = Some("http://example.com/".into());
        assert!(ClientMetadata::register(r).is_err());
        let mut r = req("web", &["https://example.com/cb"]);
        r.logo_uri = Some("https://elsewhere.org/logo.png".into());
        assert!(ClientMetadata::register(r).is_err());
        let mut r = req("web", &["https://example.com/cb"]);
        r.token_endpoint_auth_method = Some("client_secret_basic".into());
        assert!(ClientMetadata::register(r).is_err());
        let mut r = req("web", &[]);
        assert_eq!(
            ClientMetadata::register(r.clone()).unwrap_err().code(),
            "invalid_redirect_uri"
        );
        // A client that only uses the device grant needs no redirect URI.
        r.grant_types = Some(vec![GRANT_DEVICE_CODE.into(), "token-exchange".into()]);
        let m = ClientMetadata::register(r).unwrap();
        assert_eq!(m.grant_types, vec![GRANT_DEVICE_CODE.to_owned()]);
    }

    #[test]
    fn localised_names_are_kept_and_chosen() {
        let mut r = req("web", &["https://example.com/cb"]);
        r.client_name = Some("Digital mailbox".into());
        r.other
            .insert("client_name#fr".into(), "Boîte aux lettres".into());
        r.other
            .insert("tos_uri#fr".into(), "https://example.com/fr/tos".into());
        r.other.insert("unrelated#x".into(), 5.into());
        for name in [
            "Elem\u{202E}tnem",
            "A\u{3164}B",
            "\u{E0041}x",
            "   ",
            "a\u{00AD}b",
            "x\u{2028}y",
        ] {
            let mut sly = r.clone();
            sly.client_name = Some(name.into());
            assert!(
                ClientMetadata::register(sly).is_err(),
                "{name:?} is refused"
            );
        }
        let m = ClientMetadata::register(r.clone()).unwrap();
        assert_eq!(m.display_name(&["de", "fr"]), "Boîte aux lettres");
        assert_eq!(m.display_name(&["de"]), "Digital mailbox");
        assert!(!m.localised.contains_key("unrelated#x"));
        r.other
            .insert("tos_uri#de".into(), "https://evil.org/tos".into());
        assert!(ClientMetadata::register(r).is_err());
    }

    #[test]
    fn loopback_redirects_match_on_any_port_for_native_clients_only() {
        let native = ClientMetadata::register(req("native", &["http://127.0.0.1/cb"])).unwrap();
        assert!(native.redirect_uri_matches("http://127.0.0.1:4567/cb"));
        assert!(native.redirect_uri_matches("http://127.0.0.1/cb"));
        assert!(!native.redirect_uri_matches("http://127.0.0.1:4567/other"));
        assert!(!native.redirect_uri_matches("http://localhost:4567/cb"));
        let web = ClientMetadata::register(req("web", &["https://example.com/cb"])).unwrap();
        assert!(web.redirect_uri_matches("https://example.com/cb"));
        assert!(!web.redirect_uri_matches("https://example.com/cb?x=1"));
        assert!(!web.redirect_uri_matches("https://example.com:443/cb/"));
    }
}
