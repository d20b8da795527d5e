//! `POST /account/3pid`, deprecated since r0.6.0 (MSC2290) and without a ruma type.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::auth::AuthedUser;
use crate::client::add_3pid::add_validated_threepid;
use crate::client_ip::ClientIp;
use crate::error::{ApiError, ApiResult};
use crate::ruma_axum::JsonBody;
use crate::state::AppState;

/// # `POST /_matrix/client/v3/account/3pid` (deprecated)
///
/// `three_pid_creds` (or the older `threePidCreds`) names a session of Vouch's. The same
/// rules as `/account/3pid/add` apply, UIA included: adding an address lets its holder reset
/// the password, so a stolen access token alone must not be enough. `id_server` is ignored.
pub async fn add_3pid_deprecated_route(
    State(state): State<AppState>,
    user: AuthedUser,
    ClientIp(ip): ClientIp,
    JsonBody { body, auth }: JsonBody,
) -> ApiResult<Json<Value>> {
    let creds = body
        .get("three_pid_creds")
        .or_else(|| body.get("threePidCreds"))
        .and_then(Value::as_object)
        .ok_or_else(|| ApiError::missing_param("three_pid_creds is required"))?;
    let text = |key: &str| creds.get(key).and_then(Value::as_str);
    let (Some(sid), Some(client_secret)) = (text("sid"), text("client_secret")) else {
        return Err(ApiError::missing_param(
            "three_pid_creds needs sid and client_secret",
        ));
    };
    add_validated_threepid(
        &state,
        &user,
        sid,
        client_secret,
        auth.as_ref(),
        Some(creds),
        ip,
    )
    .await?;
    Ok(Json(json!({})))
}
