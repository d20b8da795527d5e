//! `[oauth]`: the OAuth 2.0 API (the Matrix spec's "next-generation auth", v1.15 onwards).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[oauth]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OAuthConfig {
    /// Offer the OAuth 2.0 API (discovery, client registration, the authorization code,
    /// device and refresh grants, revocation, the sign-in pages) beside `/login` and
    /// `/register`.
    pub enabled: bool,
    /// How long an authorization code may wait to be exchanged.
    #[serde(with = "humantime_serde")]
    pub authorization_code_lifetime: Duration,
    /// How long a user has, from the moment the app opens the sign-in page, to sign in or
    /// sign up and consent.
    #[serde(with = "humantime_serde")]
    pub authorization_request_lifetime: Duration,
    /// How long a browser stays signed in to the sign-in and account pages.
    #[serde(with = "humantime_serde")]
    pub browser_session_lifetime: Duration,
    /// How long a device authorization request's codes work (RFC 8628).
    #[serde(with = "humantime_serde")]
    pub device_code_lifetime: Duration,
    /// How often a device may poll the token endpoint; sooner is `slow_down`.
    #[serde(with = "humantime_serde")]
    pub device_poll_interval: Duration,
    /// OpenID Connect on top: ID tokens for the `openid` scope, `userinfo`, the signing
    /// keys, and sign-ins without a Matrix session.
    pub openid_connect: bool,
    /// How long an ID token is valid (and the access token of a sign-in without a Matrix
    /// session).
    #[serde(with = "humantime_serde")]
    pub id_token_lifetime: Duration,
    /// How long a signing key signs before a new one takes over.
    #[serde(with = "humantime_serde")]
    pub signing_key_rotation: Duration,
    /// Hosts of the web apps the operator runs (`app.example.org`): a web client whose
    /// `client_uri` is on one of them is first-party, and a signed-in user is not asked to
    /// consent (unless it asks for the admin API, replaces a session, or sends
    /// `prompt=consent`).
    pub first_party_client_hosts: Vec<String>,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            authorization_code_lifetime: Duration::from_secs(120),
            authorization_request_lifetime: Duration::from_secs(3600),
            browser_session_lifetime: Duration::from_secs(7 * 24 * 3600),
            device_code_lifetime: Duration::from_secs(600),
            device_poll_interval: Duration::from_secs(5),
            openid_connect: false,
            id_token_lifetime: Duration::from_secs(3600),
            signing_key_rotation: Duration::from_secs(30 * 24 * 3600),
            first_party_client_hosts: Vec::new(),
        }
    }
}
