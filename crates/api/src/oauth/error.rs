//! The OAuth 2.0 endpoints' one error type: RFC 6749 §5.2 JSON (`error`,
//! `error_description`), not Matrix JSON — the spec leaves these endpoints to their own
//! RFCs. Errors from the rest of Vouch (storage down, a rate limit) are mapped here once.

use axum::Json;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::de::DeserializeOwned;

use crate::accounts::AccountError;
use crate::error::ApiError;

/// An OAuth 2.0 error answer.
#[derive(Debug)]
pub struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
    retry_after: Option<HeaderValue>,
}

impl OAuthError {
    /// 400 with `error`.
    pub fn new(error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error,
            description: description.into(),
            retry_after: None,
        }
    }

    /// `invalid_request`.
    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new("invalid_request", description)
    }

    /// `invalid_grant`: a code or refresh token that is unknown, spent, expired, or not
    /// this client's (all said alike).
    pub fn invalid_grant() -> Self {
        Self::new(
            "invalid_grant",
            "The code or refresh token is invalid, expired, spent or not this client's",
        )
    }

    /// `invalid_client` (401): no such client.
    pub fn invalid_client() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            ..Self::new("invalid_client", "Unknown client_id")
        }
    }

    /// The `error` code.
    pub fn code(&self) -> &'static str {
        self.error
    }
}

impl From<ApiError> for OAuthError {
    fn from(e: ApiError) -> Self {
        // The Matrix answer knows the status (and logs what must be logged); keep that.
        let res = e.into_response();
        let status = res.status();
        let retry_after = res.headers().get(header::RETRY_AFTER).cloned();
        let (error, description) = match status {
            StatusCode::TOO_MANY_REQUESTS => ("slow_down", "Too many requests; try again later"),
            s if s.is_server_error() => (
                "temporarily_unavailable",
                "The server cannot answer now; try again shortly",
            ),
            _ => ("invalid_request", "The request was refused"),
        };
        Self {
            status,
            error,
            description: description.into(),
            retry_after,
        }
    }
}

impl From<AccountError> for OAuthError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::StaleCredentials => Self::new(
                "invalid_grant",
                "The account was deactivated or its password changed since the approval",
            ),
            AccountError::TooManyDevices(_) => Self::new("invalid_grant", e.to_string()),
            other => ApiError::from(other).into(),
        }
    }
}

impl From<vouch_storage::StorageError> for OAuthError {
    fn from(e: vouch_storage::StorageError) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut res = (
            self.status,
            Json(serde_json::json!({
                "error": self.error,
                "error_description": self.description,
            })),
        )
            .into_response();
        if let Some(v) = self.retry_after {
            res.headers_mut().insert(header::RETRY_AFTER, v);
        }
        res
    }
}

/// A form body (`application/x-www-form-urlencoded`), refused with an OAuth error rather
/// than axum's plain text.
pub struct OAuthForm<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OAuthForm<T> {
    type Rejection = OAuthError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Form::<T>::from_request(req, state).await {
            Ok(axum::Form(value)) => Ok(Self(value)),
            Err(e) => Err(OAuthError::invalid_request(e.body_text())),
        }
    }
}
