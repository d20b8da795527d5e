use axum::extract::State;
use ruma::api::client::account::bind_3pid;
use serde_json::{Value, json};
use vouch_core::threepid::ThirdPartyId;
use vouch_storage::Binding;

use crate::auth::AuthedUser;
use crate::error::{ApiError, ApiResult};
use crate::ruma_axum::{Ruma, RumaResponse};
use crate::state::AppState;

/// # `POST /_matrix/client/v3/account/3pid/bind`
///
/// Publishes an address on an identity server (for discovery by others): proxied to the
/// server's `/3pid/bind` with the client's `id_access_token`, and remembered so that it can
/// be unbound later. Only trusted servers; their Matrix errors are passed through.
pub async fn bind_3pid_route(
    State(state): State<AppState>,
    user: AuthedUser,
    body: Ruma<bind_3pid::v3::Request>,
) -> ApiResult<RumaResponse<bind_3pid::v3::Response>> {
    user.not_guest()?;
    let info = &body.identity_server_info;
    let server = crate::identity::require_trusted(&state, &info.id_server)?;
    let request =
        json!({ "sid": body.sid, "client_secret": body.client_secret, "mxid": user.user_id });
    let (status, answer) = crate::identity::identity_call(
        &state,
        &server,
        http::Method::POST,
        "/_matrix/identity/v2/3pid/bind",
        Some(format!("Bearer {}", info.id_access_token)),
        Some(&request),
    )
    .await?;
    if !status.is_success() {
        return Err(crate::identity::identity_error(&state, status, &answer));
    }
    let (Some(medium), Some(address)) = (
        answer.get("medium").and_then(Value::as_str),
        answer.get("address").and_then(Value::as_str),
    ) else {
        return Err(ApiError::Custom {
            status: http::StatusCode::BAD_GATEWAY,
            errcode: "M_UNKNOWN",
            message: "The identity server's answer did not say what it bound".into(),
        });
    };
    // An address the identity server spelt in a way Vouch does not parse is kept as it
    // said, so the unbind later names what it bound.
    let canonical = ThirdPartyId::parse(medium, address)
        .map_or_else(|_| address.to_owned(), |id| id.address().to_owned());
    let binding = Binding {
        user_id: user.user_id.clone(),
        medium: medium.to_owned(),
        address: canonical,
        id_server: server.name.clone(),
    };
    state.db.add_binding(&binding, state.now()).await?;
    tracing::info!(
        user_id = user.user_id,
        id_server = server.name,
        medium,
        "address bound on an identity server"
    );
    Ok(RumaResponse(bind_3pid::v3::Response::new()))
}
