//! `POST /_synapse/admin/v1/deactivate/{user_id}`.

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use crate::admin::{Admin, bool_field, local_user_id};
use crate::error::{ApiError, ApiResult};
use crate::ruma_axum::JsonBody;
use crate::state::AppState;

/// # `POST /_synapse/admin/v1/deactivate/{user_id}`
pub async fn deactivate_route(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(user_id): Path<String>,
    JsonBody { body, .. }: JsonBody,
) -> ApiResult<Json<Value>> {
    let user_id = local_user_id(&state, &user_id)?;
    if user_id == admin.user_id {
        return Err(ApiError::new(
            ruma::api::error::ErrorKind::Unknown,
            "You may not deactivate yourself",
        ));
    }
    let erase = bool_field(&body, "erase")?.unwrap_or(false);
    let accounts = state.accounts();
    accounts.existing(&user_id).await?;
    accounts.deactivate(&user_id, erase).await?;
    tracing::info!(
        admin = admin.user_id,
        target = user_id,
        erase,
        "admin: deactivated user"
    );
    Ok(Json(json!({ "id_server_unbind_result": "success" })))
}
