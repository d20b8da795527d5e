//! The admin API, with Synapse's paths and JSON so existing admin tools work
//! (`/_synapse/admin/...`). Only server admins may call it; every action is logged with who
//! did it.

pub mod deactivate;
pub mod registration_tokens;
pub mod reset_password;
pub mod threepid_lookup;
pub mod users;

use axum::extract::FromRequestParts;
use http::request::Parts;

use crate::auth::AuthedUser;
use crate::error::ApiError;
use crate::state::AppState;

/// A request by a server admin.
#[derive(Debug, Clone)]
pub struct Admin(pub AuthedUser);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let user = AuthedUser::from_request_parts(parts, state).await?;
        if !user.is_admin {
            return Err(ApiError::forbidden("You are not a server admin"));
        }
        Ok(Admin(user))
    }
}

/// Checks that a user ID in a path is a local one, as the admin API only manages those.
pub(crate) fn local_user_id(state: &AppState, user_id: &str) -> Result<String, ApiError> {
    let server = user_id
        .strip_prefix('@')
        .and_then(|r| r.split_once(':'))
        .map(|(_, s)| s);
    match server {
        Some(s) if s == state.server_name() => Ok(user_id.to_owned()),
        Some(_) => Err(ApiError::invalid_param("Can only manage local users")),
        None => Err(ApiError::invalid_param("Not a valid user ID")),
    }
}

/// A string field of an admin request's body: `None` when absent or `null`.
pub(crate) fn text_field(
    body: &serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Result<Option<String>, ApiError> {
    match body.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::bad_json(format!("{key} must be a string"))),
    }
}

/// A true-or-false field of an admin request's body: `None` when absent or `null`.
pub(crate) fn bool_field(
    body: &serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Result<Option<bool>, ApiError> {
    match body.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::bad_json(format!("{key} must be true or false"))),
    }
}
