//! `GET /_matrix/key/v2/server`: the server's signing key, self-signed.

use std::time::Duration;

use serde_json::{Value, json};

use crate::error::ApiError;

/// How long a published key stays valid in `/_matrix/key/v2/server`.
pub const KEY_VALIDITY: Duration = Duration::from_secs(7 * 86_400);

/// # `GET /_matrix/key/v2/server`
pub async fn get_server_keys_route(
    axum::extract::State(state): axum::extract::State<crate::state::AppState>,
) -> Result<axum::Json<Value>, ApiError> {
    let valid_until = state.now() + i64::try_from(KEY_VALIDITY.as_millis()).unwrap_or(i64::MAX);
    let object = json!({
        "server_name": state.server_name(),
        "valid_until_ts": valid_until,
        "verify_keys": { state.signing_key.key_id.clone(): { "key": state.signing_key.public_key() } },
        "old_verify_keys": {},
    });
    let canonical = state.signing_key.signed(state.server_name(), object)?;
    Ok(axum::Json(
        serde_json::to_value(canonical).map_err(|e| ApiError::internal(e.to_string()))?,
    ))
}
