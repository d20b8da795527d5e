//! `POST /_synapse/admin/v1/reset_password/{user_id}`.

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use crate::accounts::Logout;

use crate::admin::{Admin, bool_field, local_user_id, text_field};
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
    let new_password = text_field(&body, "new_password")?
        .ok_or_else(|| ApiError::missing_param("new_password is required"))?;
    let logout_devices = bool_field(&body, "logout_devices")?.unwrap_or(true);
    let accounts = state.accounts();
    accounts.existing(&user_id).await?;
    accounts
        .set_password(
            &user_id,
            new_password,
            Logout::from_flag(logout_devices, None),
        )
        .await?;
    tracing::info!(
        admin = admin.user_id,
        target = user_id,
        logout_devices,
        "admin: reset password"
    );
    Ok(Json(json!({})))
}
