//! `/_synapse/admin/v1/registration_tokens[...]`.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{Value, json};
use vouch_core::secrets::random_string;
use vouch_storage::RegistrationToken;

use crate::admin::Admin;
use crate::error::{ApiError, ApiResult};
use crate::ruma_axum::JsonBody;
use crate::state::AppState;

fn token_json(t: &RegistrationToken) -> Value {
    json!({
        "token": t.token,
        "uses_allowed": t.uses_allowed,
        // Synapse's field: registrations in progress holding a use. Vouch spends a use only
        // in the transaction that creates the account, so none is ever held.
        "pending": 0,
        "completed": t.completed,
        "expiry_time": t.expiry_time,
    })
}

/// A token's grammar: 1 to 64 of `[A-Za-z0-9._~-]`.
pub fn valid_token(token: &str) -> bool {
    (1..=64).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
}

/// `null` or a non-negative integer, for `uses_allowed` / `expiry_time`.
fn optional_number(
    body: &serde_json::Map<String, Value>,
    key: &str,
) -> ApiResult<Option<Option<i64>>> {
    match body.get(key) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(v) => v
            .as_i64()
            .filter(|n| *n >= 0)
            .map(|n| Some(Some(n)))
            .ok_or_else(|| {
                ApiError::invalid_param(format!("{key} must be null or a non-negative integer"))
            }),
    }
}

/// Query of the list endpoint.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    valid: Option<String>,
}

/// # `GET /_synapse/admin/v1/registration_tokens`
pub async fn list_route(
    State(state): State<AppState>,
    Admin(_): Admin,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let now = state.now();
    let want = match q.valid.as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(ApiError::invalid_param("valid must be true or false")),
    };
    let tokens: Vec<Value> = state
        .db
        .registration_tokens()
        .await?
        .iter()
        .filter(|t| want.is_none_or(|w| t.is_valid(now) == w))
        .map(token_json)
        .collect();
    Ok(Json(json!({ "registration_tokens": tokens })))
}

/// # `POST /_synapse/admin/v1/registration_tokens/new`
pub async fn new_route(
    State(state): State<AppState>,
    Admin(admin): Admin,
    JsonBody { body, .. }: JsonBody,
) -> ApiResult<Json<Value>> {
    let token = match body.get("token") {
        Some(Value::String(t)) => {
            if !valid_token(t) {
                return Err(ApiError::invalid_param(
                    "token must be 1 to 64 characters of [A-Za-z0-9._~-]",
                ));
            }
            t.clone()
        }
        Some(_) => return Err(ApiError::invalid_param("token must be a string")),
        None => {
            let length = match body.get("length") {
                None => 16,
                Some(v) => v.as_u64().filter(|n| (1..=64).contains(n)).ok_or_else(|| {
                    ApiError::invalid_param("length must be an integer from 1 to 64")
                })?,
            };
            random_string(
                state.secrets.as_ref(),
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-",
                usize::try_from(length).unwrap_or(16),
            )
        }
    };
    let uses_allowed = optional_number(&body, "uses_allowed")?.flatten();
    let expiry_time = optional_number(&body, "expiry_time")?.flatten();
    if expiry_time.is_some_and(|t| t < state.now()) {
        return Err(ApiError::invalid_param("expiry_time is in the past"));
    }
    if !state
        .db
        .create_registration_token(&token, uses_allowed, expiry_time, state.now())
        .await?
    {
        return Err(ApiError::invalid_param(format!(
            "Token already exists: {token}"
        )));
    }
    tracing::info!(admin = admin.user_id, "admin: created a registration token");
    let made = state
        .db
        .registration_token(&token)
        .await?
        .ok_or_else(|| ApiError::internal("token vanished"))?;
    Ok(Json(token_json(&made)))
}

/// # `GET /_synapse/admin/v1/registration_tokens/{token}`
pub async fn get_route(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(token): Path<String>,
) -> ApiResult<Json<Value>> {
    let t = state
        .db
        .registration_token(&token)
        .await?
        .ok_or_else(|| ApiError::not_found("No such registration token"))?;
    Ok(Json(token_json(&t)))
}

/// # `PUT /_synapse/admin/v1/registration_tokens/{token}`
pub async fn put_route(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(token): Path<String>,
    JsonBody { body, .. }: JsonBody,
) -> ApiResult<Json<Value>> {
    let uses_allowed = optional_number(&body, "uses_allowed")?;
    let expiry_time = optional_number(&body, "expiry_time")?;
    if !state
        .db
        .update_registration_token(&token, uses_allowed, expiry_time)
        .await?
    {
        return Err(ApiError::not_found("No such registration token"));
    }
    tracing::info!(admin = admin.user_id, "admin: changed a registration token");
    let t = state
        .db
        .registration_token(&token)
        .await?
        .ok_or_else(|| ApiError::internal("token vanished"))?;
    Ok(Json(token_json(&t)))
}

/// # `DELETE /_synapse/admin/v1/registration_tokens/{token}`
pub async fn delete_route(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(token): Path<String>,
) -> ApiResult<Json<Value>> {
    if !state.db.delete_registration_token(&token).await? {
        return Err(ApiError::not_found("No such registration token"));
    }
    tracing::info!(admin = admin.user_id, "admin: deleted a registration token");
    Ok(Json(json!({})))
}
