//! The OAuth 2.0 API (Matrix spec v1.15 onwards, `[oauth] enabled`): discovery, dynamic
//! client registration, the authorization code grant with PKCE and its pages, the refresh
//! grant and revocation. Sessions it opens are the same devices and tokens `/login` makes,
//! written by the accounts service, so introspection, `/devices`, the admin API and the
//! homeserver see both alike. The rules themselves are `vouch_core::oauth`'s.

pub mod account;
pub mod account_address;
pub mod account_profile;
pub mod authorize;
pub mod browser;
pub mod device;
pub mod error;
pub mod grant_page;
pub mod metadata;
pub mod oidc;
pub mod registration;
pub mod reset;
pub mod revoke;
pub mod sign_up;
pub mod sso;
pub mod token;

/// Where each endpoint is, under `public_baseurl`.
pub mod paths {
    /// The authorization endpoint.
    pub const AUTHORIZE: &str = "oauth2/authorize";
    /// The token endpoint.
    pub const TOKEN: &str = "oauth2/token";
    /// Dynamic client registration.
    pub const REGISTRATION: &str = "oauth2/registration";
    /// Token revocation.
    pub const REVOKE: &str = "oauth2/revoke";
    /// The sign-in and consent pages of one authorization request (`/{grant_id}`).
    pub const GRANT: &str = "_vouch/oauth/grant";
    /// The device authorization endpoint (RFC 8628).
    pub const DEVICE: &str = "oauth2/device";
    /// Where the user types a device's user code (the `verification_uri`).
    pub const DEVICE_PAGE: &str = "_vouch/oauth/device";
    /// OpenID Connect's signing keys (`jwks_uri`).
    pub const JWKS: &str = "oauth2/keys.json";
    /// OpenID Connect's userinfo endpoint.
    pub const USERINFO: &str = "oauth2/userinfo";
}
