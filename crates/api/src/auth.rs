//! Access-token authentication: `Authorization: Bearer` (or the deprecated `access_token`
//! query parameter, which v1.19 still allows).

use axum::extract::FromRequestParts;
use http::request::Parts;
use ruma::api::error::ErrorKind;
use vouch_core::secrets::token_hash;

use crate::error::ApiError;
use crate::state::AppState;

/// The user and device behind a valid access token.
#[derive(Debug, Clone)]
pub struct AuthedUser {
    /// The user ID.
    pub user_id: String,
    /// The device ID.
    pub device_id: String,
    /// A guest account.
    pub is_guest: bool,
    /// A server admin.
    pub is_admin: bool,
    /// The token came from the OAuth 2.0 API.
    pub oauth: bool,
}

impl AuthedUser {
    /// Refuses an OAuth 2.0 session an endpoint that needs User-Interactive Authentication
    /// (the spec: those "can't be used when an access token is obtained with" the OAuth
    /// 2.0 API), pointing at the account page where the same is done.
    pub fn no_oauth_uia(&self, state: &AppState) -> Result<(), ApiError> {
        if !self.oauth {
            return Ok(());
        }
        Err(ApiError::forbidden(format!(
            "This session was opened through OAuth 2.0; do this on the account page: {}{}",
            state.config.public_baseurl(),
            crate::oauth::account::PATH
        )))
    }

    /// Refuses guests with 403 `M_GUEST_ACCESS_FORBIDDEN`.
    pub fn not_guest(&self) -> Result<(), ApiError> {
        if self.is_guest {
            Err(ApiError::new(
                ErrorKind::GuestAccessForbidden,
                "Guest accounts cannot do this",
            ))
        } else {
            Ok(())
        }
    }
}

/// The access token in a request, if any. Like Synapse, a request that names more than one
/// (two `Authorization` headers, two `access_token` parameters, or one of each) is refused
/// rather than having one picked for it.
pub(crate) fn bearer_token(parts: &Parts) -> Result<Option<String>, ApiError> {
    let ambiguous = |what: &str| ApiError::new(ErrorKind::MissingToken, what.to_owned());
    let headers: Vec<_> = parts
        .headers
        .get_all(http::header::AUTHORIZATION)
        .iter()
        .collect();
    let params: Vec<String> = parts
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .filter(|(k, _)| k == "access_token")
                .map(|(_, v)| v.into_owned())
                .collect()
        })
        .unwrap_or_default();
    match (headers.as_slice(), params.as_slice()) {
        ([], []) => Ok(None),
        ([value], []) => {
            // The scheme is case-insensitive (RFC 9110 §11.1): `bearer` is as valid as `Bearer`.
            let token = value
                .to_str()
                .ok()
                .map(str::trim_start)
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token.trim().to_owned());
            Ok(token)
        }
        ([], [token]) => Ok(Some(token.clone())),
        ([], _) => Err(ambiguous("Too many access_token query parameters")),
        (_, []) => Err(ambiguous("Too many Authorization headers")),
        _ => Err(ambiguous(
            "Mixing Authorization headers and access_token query parameters",
        )),
    }
}

async fn resolve(parts: &Parts, state: &AppState) -> Result<Option<AuthedUser>, ApiError> {
    let Some(token) = bearer_token(parts)? else {
        return Ok(None);
    };
    let Some(info) = state.db.access_token(&token_hash(&token)).await? else {
        return Err(ApiError::unknown_token(false));
    };
    if info.expires_at.is_some_and(|t| t <= state.now()) {
        return Err(ApiError::unknown_token(true));
    }
    let is_admin = info.admin();
    let oauth = info.oauth_scope.is_some();
    Ok(Some(AuthedUser {
        user_id: info.user_id,
        device_id: info.device_id,
        is_guest: info.is_guest,
        is_admin,
        oauth,
    }))
}

impl FromRequestParts<AppState> for AuthedUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        resolve(parts, state)
            .await?
            .ok_or_else(|| ApiError::new(ErrorKind::MissingToken, "Missing access token"))
    }
}

/// For endpoints where the access token is optional: `None` without one, 401 with a bad one.
#[derive(Debug, Clone)]
pub struct MaybeAuthed(pub Option<AuthedUser>);

impl FromRequestParts<AppState> for MaybeAuthed {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(MaybeAuthed(resolve(parts, state).await?))
    }
}
