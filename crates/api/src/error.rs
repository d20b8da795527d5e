//! The one error type of the HTTP API and its mapping to Matrix JSON. Every error response
//! Vouch sends is made here; the HTTP status follows from the errcode in [`status_for`].

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use ruma::api::OutgoingResponseExt;
use ruma::api::client::uiaa::{UiaaInfo, UiaaResponse};
use ruma::api::error::{
    Error as MatrixError, ErrorBody, ErrorKind, LimitExceededErrorData, RetryAfter,
    StandardErrorBody, UnknownTokenErrorData,
};
use vouch_storage::StorageError;

/// An error answered to a client.
#[derive(Debug)]
pub enum ApiError {
    /// A Matrix error with a code ruma knows.
    Matrix {
        /// The errcode.
        kind: ErrorKind,
        /// Human-readable text.
        message: String,
    },
    /// A Matrix error with an errcode ruma has no variant for (e.g. `M_SESSION_EXPIRED`).
    Custom {
        /// HTTP status.
        status: StatusCode,
        /// The errcode.
        errcode: &'static str,
        /// Human-readable text.
        message: String,
    },
    /// An identity server's Matrix error, passed through as it was.
    Passthrough {
        /// HTTP status.
        status: StatusCode,
        /// `{errcode, error}`.
        body: serde_json::Value,
    },
    /// A UIA 401 with flows, session and progress.
    Uia(Box<UiaaInfo>),
    /// Something broke inside; logged in full, answered as `M_UNKNOWN` without details.
    Internal(String),
    /// The database cannot be reached; answered 503 with `Retry-After`, logged in full.
    Unavailable(String),
    /// The homeserver Vouch serves (`[homeserver]`) cannot be reached or cannot answer now;
    /// answered 503 with `Retry-After`, logged in full.
    HomeserverUnavailable(String),
}

/// The HTTP status for an errcode (tuwunel's `bad_request_code`, extended).
pub fn status_for(kind: &ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Forbidden
        | ErrorKind::GuestAccessForbidden
        | ErrorKind::ThreepidAuthFailed
        | ErrorKind::ThreepidDenied
        | ErrorKind::UserDeactivated => StatusCode::FORBIDDEN,
        ErrorKind::UnknownToken(_)
        | ErrorKind::MissingToken
        | ErrorKind::Unauthorized
        | ErrorKind::UserLocked => StatusCode::UNAUTHORIZED,
        ErrorKind::LimitExceeded(_) => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_REQUEST,
    }
}

impl ApiError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError::Matrix {
            kind,
            message: message.into(),
        }
    }

    /// 400 `M_BAD_JSON`.
    pub fn bad_json(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadJson, message)
    }

    /// 400 `M_NOT_JSON`.
    pub fn not_json(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotJson, message)
    }

    /// 400 `M_MISSING_PARAM`.
    pub fn missing_param(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::MissingParam, message)
    }

    /// 400 `M_INVALID_PARAM`.
    pub fn invalid_param(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidParam, message)
    }

    /// 403 `M_FORBIDDEN`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, message)
    }

    /// 404 `M_NOT_FOUND`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// 404 `M_UNRECOGNIZED`: no such endpoint.
    pub fn unrecognized() -> Self {
        ApiError::Custom {
            status: StatusCode::NOT_FOUND,
            errcode: "M_UNRECOGNIZED",
            message: "Unrecognized request".into(),
        }
    }

    /// 405 `M_UNRECOGNIZED`: a known endpoint with another method.
    pub fn method_not_allowed() -> Self {
        ApiError::Custom {
            status: StatusCode::METHOD_NOT_ALLOWED,
            errcode: "M_UNRECOGNIZED",
            message: "This endpoint does not accept that method".into(),
        }
    }

    /// 401 `M_UNKNOWN_TOKEN`, with `soft_logout` when the token merely expired.
    pub fn unknown_token(soft_logout: bool) -> Self {
        let message = if soft_logout {
            "The access token has expired; refresh it or log in again"
        } else {
            "Unrecognised access token"
        };
        let mut data = UnknownTokenErrorData::new();
        data.soft_logout = soft_logout;
        Self::new(ErrorKind::UnknownToken(data), message)
    }

    /// 429 `M_LIMIT_EXCEEDED` with `retry_after_ms` and `Retry-After`.
    pub fn limit_exceeded(retry_after: Duration) -> Self {
        // Retry-After counts whole seconds; never tell a client to retry sooner than allowed.
        let retry_after = Duration::from_millis(
            retry_after
                .as_millis()
                .max(1)
                .try_into()
                .unwrap_or(u64::MAX),
        );
        let mut data = LimitExceededErrorData::new();
        data.retry_after = Some(RetryAfter::Delay(retry_after));
        Self::new(
            ErrorKind::LimitExceeded(data),
            "Too many requests; retry later",
        )
    }

    /// A failure inside the server.
    pub fn internal(detail: impl Into<String>) -> Self {
        ApiError::Internal(detail.into())
    }

    /// The errcode, for logs and tests.
    pub fn errcode(&self) -> String {
        match self {
            ApiError::Matrix { kind, .. } => kind.errcode().to_string(),
            ApiError::Custom { errcode, .. } => (*errcode).to_owned(),
            ApiError::Uia(_) => "UIA".into(),
            ApiError::Passthrough { body, .. } => {
                body["errcode"].as_str().unwrap_or("M_UNKNOWN").to_owned()
            }
            ApiError::Internal(_)
            | ApiError::Unavailable(_)
            | ApiError::HomeserverUnavailable(_) => "M_UNKNOWN".into(),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        if e.is_unavailable() {
            return ApiError::Unavailable(e.to_string());
        }
        if e.is_bad_text() {
            return ApiError::invalid_param("Text must not contain NUL characters");
        }
        ApiError::Internal(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let response = match self {
            ApiError::Matrix { kind, message } => {
                let status = status_for(&kind);
                let body = ErrorBody::Standard(StandardErrorBody::new(kind, message));
                UiaaResponse::MatrixError(MatrixError::new(status, body))
            }
            ApiError::Custom {
                status,
                errcode,
                message,
            } => {
                let body =
                    ErrorBody::Json(serde_json::json!({ "errcode": errcode, "error": message }));
                UiaaResponse::MatrixError(MatrixError::new(status, body))
            }
            ApiError::Uia(info) => UiaaResponse::AuthResponse(*info),
            ApiError::Passthrough { status, body } => {
                UiaaResponse::MatrixError(MatrixError::new(status, ErrorBody::Json(body)))
            }
            ApiError::Unavailable(ref detail) | ApiError::HomeserverUnavailable(ref detail) => {
                let what = if matches!(self, ApiError::Unavailable(_)) {
                    "database"
                } else {
                    "homeserver"
                };
                tracing::warn!(error = %detail, "{what} unavailable");
                let body = ErrorBody::Json(serde_json::json!({
                    "errcode": "M_UNKNOWN",
                    "error": format!("The {what} is unavailable; try again in a few seconds"),
                }));
                let mut res = UiaaResponse::MatrixError(MatrixError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    body,
                ))
                .try_into_http_response::<Vec<u8>>()
                .map(|r| r.map(axum::body::Body::from).into_response())
                .unwrap_or_else(|_| StatusCode::SERVICE_UNAVAILABLE.into_response());
                res.headers_mut().insert(
                    http::header::RETRY_AFTER,
                    http::HeaderValue::from_static("5"),
                );
                return res;
            }
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                let body = ErrorBody::Standard(StandardErrorBody::new(
                    ErrorKind::Unknown,
                    "Internal server error".into(),
                ));
                UiaaResponse::MatrixError(MatrixError::new(StatusCode::INTERNAL_SERVER_ERROR, body))
            }
        };
        match response.try_into_http_response::<Vec<u8>>() {
            Ok(res) => res.map(axum::body::Body::from).into_response(),
            Err(e) => {
                tracing::error!(error = %e, "cannot serialise an error response");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Matrix { kind, message } => write!(f, "{}: {message}", kind.errcode()),
            ApiError::Custom {
                errcode, message, ..
            } => write!(f, "{errcode}: {message}"),
            ApiError::Internal(detail)
            | ApiError::Unavailable(detail)
            | ApiError::HomeserverUnavailable(detail) => f.write_str(detail),
            other => write!(f, "{}", other.errcode()),
        }
    }
}

impl std::error::Error for ApiError {}

/// Handler result.
pub type ApiResult<T> = Result<T, ApiError>;
