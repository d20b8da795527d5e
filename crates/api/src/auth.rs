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
}

impl AuthedUser {
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

/// The access token in a request, if any.
fn bearer_token(parts: &Parts) -> Option<String> {
    if let Some(value) = parts.headers.get(http::header::AUTHORIZATION) {
        // The scheme is case-insensitive (RFC 9110 §11.1): `bearer` is as valid as `Bearer`.
        let value = value.to_str().ok()?.trim_start();
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned());
    }
    let query = parts.uri.query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v.into_owned())
}

async fn resolve(parts: &Parts, state: &AppState) -> Result<Option<AuthedUser>, ApiError> {
    let Some(token) = bearer_token(parts) else {
        return Ok(None);
    };
    let Some(info) = state.db.access_token(&token_hash(&token)).await? else {
        return Err(ApiError::unknown_token(false));
    };
    if info.expires_at.is_some_and(|t| t <= state.now()) {
        return Err(ApiError::unknown_token(true));
    }
    Ok(Some(AuthedUser {
        user_id: info.user_id,
        device_id: info.device_id,
        is_guest: info.is_guest,
        is_admin: info.is_admin,
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
