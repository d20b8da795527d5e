//! `POST /_synapse/admin/v1/reset_password/{user_id}`.

use axum::Json;
use axum::extract::{Path, State};
use ruma::api::error::ErrorKind;
use serde_json::{Value, json};

use crate::admin::{Admin, local_user_id};
use crate::error::{ApiError, ApiResult};
use crate::ruma_axum::JsonBody;
use crate::state::AppState;

/// # `POST /_synapse/admin/v1/reset_password/{user_id}`
///
/// `new_password`, `logout_devices` (default true).
pub async fn reset_password_route(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(user_id): Path<String>,
    JsonBody { body, .. }: JsonBody,
) -> ApiResult<Json<Value>> {
    let user_id = local_user_id(&state, &user_id)?;
    let new_password = match body.get("new_password") {
        Some(Value::String(p)) => p.clone(),
        Some(_) => return Err(ApiError::bad_json("new_password must be a string")),
        None => return Err(ApiError::missing_param("new_password is required")),
    };
    let logout_devices = match body.get("logout_devices") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::bad_json("logout_devices must be true or false")),
    };
    state
        .db
        .user(&user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("User not found"))?;
    state
        .policy
        .check(&new_password)
        .map_err(|w| ApiError::new(ErrorKind::WeakPassword, w.to_string()))?;
    let hash = state.hash_password(new_password).await?;
    state
        .db
        .set_password(&user_id, &hash, logout_devices, None)
        .await?;
    tracing::info!(
        admin = admin.user_id,
        target = user_id,
        logout_devices,
        "admin: reset password"
    );
    Ok(Json(json!({})))
}
