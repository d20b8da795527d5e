//! OAuth 2.0 as the Matrix spec profiles it (v1.15 onwards): client registration, the
//! authorization request, PKCE and scopes. The rules only; the endpoints and pages are
//! in `vouch-api`, the rows in `vouch-storage`.

pub mod authorize;
pub mod client;
pub mod device;
pub mod id_token;
pub mod pkce;
pub mod scope;

pub use authorize::{
    Answer, AuthorizationRequest, AuthorizeError, Prompt, RawAuthorization, Redirect, ResponseMode,
    redirect_with,
};
pub use client::{ApplicationType, ClientError, ClientMetadata, ClientRequest};
pub use pkce::CodeChallenge;
pub use scope::Scope;
