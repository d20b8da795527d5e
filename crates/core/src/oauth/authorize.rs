//! An authorization request (RFC 6749 §4.1.1 with PKCE and OpenID Connect's `prompt`), as
//! the authorization endpoint receives it: checked in two steps, because a request whose
//! client or redirect URI is wrong must never be sent anywhere (an open redirect), while
//! every other fault goes back to the client's redirect URI.

use serde::{Deserialize, Serialize};
use url::Url;

use super::client::{ClientMetadata, GRANT_AUTHORIZATION_CODE, GRANT_DEVICE_CODE};
use super::pkce::CodeChallenge;
use super::scope::Scope;

/// The longest `state` or `login_hint` kept, in bytes.
pub const MAX_STATE: usize = 2048;

/// The query of an authorization request, as sent.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawAuthorization {
    /// The registered client.
    pub client_id: Option<String>,
    /// One of its redirect URIs.
    pub redirect_uri: Option<String>,
    /// `code`.
    pub response_type: Option<String>,
    /// `query` (the default) or `fragment`.
    pub response_mode: Option<String>,
    /// What the session may do.
    pub scope: Option<String>,
    /// Opaque; answered back.
    pub state: Option<String>,
    /// PKCE.
    pub code_challenge: Option<String>,
    /// `S256`.
    pub code_challenge_method: Option<String>,
    /// `create` to sign up; `login` to sign in again; `consent`; `none`.
    pub prompt: Option<String>,
    /// Who is expected to sign in (`mxid:@alice:example.org`).
    pub login_hint: Option<String>,
    /// Languages for the pages, most preferred first.
    pub ui_locales: Option<String>,
    /// OpenID Connect: a value the ID token carries back, binding it to this request.
    pub nonce: Option<String>,
}

/// Where the answer goes in the redirect URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponseMode {
    /// In the query.
    Query,
    /// In the fragment (the spec's advice for web clients: the web server never sees it).
    Fragment,
}

/// What the user is first shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Prompt {
    /// Sign in, or consent if already signed in.
    Default,
    /// Sign up (`prompt=create`).
    Create,
    /// Sign in even if already signed in (`prompt=login`).
    Login,
}

/// A checked authorization request, kept while the user signs in and consents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationRequest {
    /// The client.
    pub client_id: String,
    /// What was asked for.
    pub scope: Scope,
    /// What to show first.
    pub prompt: Prompt,
    /// The user expected, if the client said.
    pub login_hint: Option<String>,
    /// The page languages the client asked for.
    pub ui_locales: Vec<String>,
    /// How the user's answer reaches the client.
    pub answer: Answer,
    /// OpenID Connect's `nonce`, for the ID token.
    #[serde(default)]
    pub nonce: Option<String>,
    /// `prompt=consent`: the consent page is shown even to a first-party app.
    #[serde(default)]
    pub consent: bool,
}

/// How the user's answer reaches the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// The browser is sent to the client's redirect URI (the authorization code grant).
    Redirect(Redirect),
    /// The client polls the token endpoint (RFC 8628, the device authorization grant).
    Device,
}

/// Where and how the authorization code grant answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redirect {
    /// Where the answer goes (as sent: it was matched against the registered ones).
    pub redirect_uri: String,
    /// How it goes there.
    pub response_mode: ResponseMode,
    /// Answered back as sent.
    pub state: Option<String>,
    /// PKCE.
    pub code_challenge: CodeChallenge,
}

/// Why an authorization request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorizeError {
    /// Unknown client or a redirect URI it did not register: shown on a page, never
    /// redirected.
    #[error("{0}")]
    Shown(String),
    /// Anything else: sent to the redirect URI as RFC 6749's `error`.
    #[error("{description}")]
    Redirected {
        /// `error`.
        error: &'static str,
        /// `error_description`.
        description: String,
        /// Where the answer goes.
        mode: ResponseMode,
    },
}

impl AuthorizationRequest {
    /// Checks `raw` for the registered `client`. The redirect URI is checked first: until
    /// it is, no error may be redirected.
    pub fn parse(raw: RawAuthorization, client: &ClientMetadata) -> Result<Self, AuthorizeError> {
        let client_id = raw
            .client_id
            .ok_or_else(|| AuthorizeError::Shown("The request names no client".into()))?;
        let redirect_uri = raw
            .redirect_uri
            .ok_or_else(|| AuthorizeError::Shown("The request names no redirect_uri".into()))?;
        if !client.redirect_uri_matches(&redirect_uri) {
            return Err(AuthorizeError::Shown(
                "The app asked to send you to an address it did not register".into(),
            ));
        }
        let mode = match raw.response_mode.as_deref() {
            None | Some("query") => ResponseMode::Query,
            Some("fragment") => ResponseMode::Fragment,
            Some(_) => {
                return Err(AuthorizeError::Redirected {
                    error: "invalid_request",
                    description: "response_mode must be query or fragment".into(),
                    mode: ResponseMode::Query,
                });
            }
        };
        let fail = |error: &'static str, description: String| AuthorizeError::Redirected {
            error,
            description,
            mode,
        };
        if raw.response_type.as_deref() != Some("code") {
            return Err(fail(
                "unsupported_response_type",
                "response_type must be code".into(),
            ));
        }
        if !client.allows_grant(GRANT_AUTHORIZATION_CODE) {
            return Err(fail(
                "unauthorized_client",
                "this client did not register the authorization_code grant".into(),
            ));
        }
        if raw.state.as_ref().is_some_and(|s| s.len() > MAX_STATE)
            || raw.login_hint.as_ref().is_some_and(|s| s.len() > MAX_STATE)
            || raw.nonce.as_ref().is_some_and(|s| s.len() > MAX_STATE)
        {
            return Err(fail(
                "invalid_request",
                format!("state, login_hint and nonce are at most {MAX_STATE} bytes"),
            ));
        }
        let code_challenge = CodeChallenge::parse(
            raw.code_challenge.as_deref(),
            raw.code_challenge_method.as_deref(),
        )
        .map_err(|e| fail("invalid_request", e.to_string()))?;
        let scope = Scope::parse(raw.scope.as_deref().unwrap_or_default())
            .map_err(|e| fail("invalid_scope", e.to_string()))?;
        let mut prompt = Prompt::Default;
        let mut consent = false;
        for value in raw.prompt.as_deref().unwrap_or_default().split(' ') {
            match value {
                "" | "select_account" => {}
                "consent" => consent = true,
                "create" => prompt = Prompt::Create,
                "login" => prompt = Prompt::Login,
                // Consent is always asked for, so a request that allows no interaction
                // can never be answered.
                "none" => {
                    return Err(fail(
                        "interaction_required",
                        "this server always asks the user".into(),
                    ));
                }
                other => {
                    return Err(fail(
                        "invalid_request",
                        format!(
                            "unsupported prompt value '{}'",
                            other.chars().take(40).collect::<String>()
                        ),
                    ));
                }
            }
        }
        let ui_locales = raw
            .ui_locales
            .as_deref()
            .unwrap_or_default()
            .split(' ')
            .filter(|l| !l.is_empty() && l.len() <= 35)
            .take(10)
            .map(str::to_owned)
            .collect();
        Ok(Self {
            client_id,
            scope,
            prompt,
            login_hint: raw.login_hint,
            ui_locales,
            answer: Answer::Redirect(Redirect {
                redirect_uri,
                response_mode: mode,
                state: raw.state,
                code_challenge,
            }),
            nonce: raw.nonce,
            consent,
        })
    }

    /// Checks a device authorization request (RFC 8628 §3.1: `client_id` and `scope`) for
    /// the registered `client`; the error is RFC 6749's `(error, description)`.
    pub fn device(
        client_id: &str,
        scope: Option<&str>,
        client: &ClientMetadata,
    ) -> Result<Self, (&'static str, String)> {
        if !client.allows_grant(GRANT_DEVICE_CODE) {
            return Err((
                "unauthorized_client",
                "this client did not register the device_code grant".into(),
            ));
        }
        let scope = Scope::parse(scope.unwrap_or_default())
            .map_err(|e| ("invalid_scope", e.to_string()))?;
        if scope.identity_only() {
            return Err((
                "invalid_scope",
                "the device grant opens Matrix sessions: the scope must include urn:matrix:client:api:*".into(),
            ));
        }
        // A device's app proves nothing of where it comes from (no redirect URI): it is
        // never given the admin API.
        if scope.admin {
            return Err((
                "invalid_scope",
                "the admin API is not granted through the device grant".into(),
            ));
        }
        Ok(Self {
            client_id: client_id.to_owned(),
            scope,
            prompt: Prompt::Default,
            login_hint: None,
            ui_locales: Vec::new(),
            answer: Answer::Device,
            nonce: None,
            consent: true,
        })
    }

    /// The redirect answer, for the authorization code grant.
    pub fn redirect(&self) -> Option<&Redirect> {
        match &self.answer {
            Answer::Redirect(r) => Some(r),
            Answer::Device => None,
        }
    }
}

/// The redirect URI with `params` added in the query (after any the client registered) or
/// the fragment. `None` if `redirect_uri` is not a URL (it was registered as one).
pub fn redirect_with(
    redirect_uri: &str,
    mode: ResponseMode,
    params: &[(&str, &str)],
) -> Option<String> {
    let mut url = Url::parse(redirect_uri).ok()?;
    match mode {
        ResponseMode::Query => {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in params {
                pairs.append_pair(k, v);
            }
        }
        ResponseMode::Fragment => {
            let fragment = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(params)
                .finish();
            url.set_fragment(Some(&fragment));
        }
    }
    Some(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::client::ClientRequest;

    fn client() -> ClientMetadata {
        ClientMetadata::register(ClientRequest {
            client_uri: Some("https://example.com/".into()),
            redirect_uris: vec!["https://example.com/cb?app=1".into()],
            grant_types: Some(vec!["authorization_code".into()]),
            ..ClientRequest::default()
        })
        .unwrap()
    }

    fn raw() -> RawAuthorization {
        RawAuthorization {
            client_id: Some("c1".into()),
            redirect_uri: Some("https://example.com/cb?app=1".into()),
            response_type: Some("code".into()),
            scope: Some("urn:matrix:client:api:* urn:matrix:client:device:DEV1".into()),
            state: Some("xyz".into()),
            code_challenge: Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into()),
            code_challenge_method: Some("S256".into()),
            ..RawAuthorization::default()
        }
    }

    #[test]
    fn a_good_request_parses() {
        let mut r = raw();
        r.prompt = Some("create".into());
        let a = AuthorizationRequest::parse(r, &client()).unwrap();
        assert_eq!(a.prompt, Prompt::Create);
        assert_eq!(a.redirect().unwrap().response_mode, ResponseMode::Query);
        assert_eq!(a.scope.device_id, "DEV1");
        // The device grant needs the client to have registered it.
        assert_eq!(
            AuthorizationRequest::device("c1", Some("urn:matrix:client:device:D"), &client())
                .unwrap_err()
                .0,
            "unauthorized_client"
        );
    }

    #[test]
    fn a_foreign_redirect_uri_is_never_redirected_to() {
        for uri in [
            "https://example.com/cb",
            "https://example.com/cb?app=1&x=2",
            "https://evil.org/cb?app=1",
        ] {
            let mut r = raw();
            r.redirect_uri = Some(uri.into());
            r.response_type = Some("token".into());
            assert!(matches!(
                AuthorizationRequest::parse(r, &client()),
                Err(AuthorizeError::Shown(_))
            ));
        }
    }

    #[test]
    fn other_faults_go_back_to_the_client() {
        let mut r = raw();
        r.code_challenge_method = Some("plain".into());
        let e = AuthorizationRequest::parse(r, &client()).unwrap_err();
        assert!(matches!(
            e,
            AuthorizeError::Redirected {
                error: "invalid_request",
                ..
            }
        ));
        let mut r = raw();
        r.scope = Some("urn:matrix:client:api:*".into());
        let e = AuthorizationRequest::parse(r, &client()).unwrap_err();
        assert!(matches!(
            e,
            AuthorizeError::Redirected {
                error: "invalid_scope",
                ..
            }
        ));
        let mut r = raw();
        r.prompt = Some("none".into());
        r.response_mode = Some("fragment".into());
        let e = AuthorizationRequest::parse(r, &client()).unwrap_err();
        assert!(matches!(
            e,
            AuthorizeError::Redirected {
                error: "interaction_required",
                mode: ResponseMode::Fragment,
                ..
            }
        ));
    }

    #[test]
    fn answers_keep_the_registered_query() {
        let q = redirect_with(
            "https://example.com/cb?app=1",
            ResponseMode::Query,
            &[("code", "a b"), ("state", "s&t")],
        )
        .unwrap();
        assert_eq!(q, "https://example.com/cb?app=1&code=a+b&state=s%26t");
        let f = redirect_with(
            "https://example.com/cb?app=1",
            ResponseMode::Fragment,
            &[("code", "c")],
        )
        .unwrap();
        assert_eq!(f, "https://example.com/cb?app=1#code=c");
        let n =
            redirect_with("com.example.app:/cb", ResponseMode::Query, &[("code", "c")]).unwrap();
        assert_eq!(n, "com.example.app:/cb?code=c");
    }
}
