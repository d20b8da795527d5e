//! What the homeserver and clients learn of Vouch as the homeserver's account service.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::state::AppState;

/// The path of the account page Synapse points users at (cross-signing reset).
pub const ACCOUNT_PATH: &str = "_vouch/account";

/// # `GET /.well-known/openid-configuration`
///
/// The two fields Synapse's `matrix_authentication_service` mode reads: `issuer` and
/// `account_management_uri`. Vouch is not (yet) an OAuth 2.0 server, so the document names
/// no authorization or token endpoint, and clients keep using `/login` and `/register`.
pub async fn openid_configuration_route(State(state): State<AppState>) -> Json<Value> {
    let base = state.config.public_baseurl();
    Json(json!({
        "issuer": base,
        "account_management_uri": format!("{base}{ACCOUNT_PATH}"),
    }))
}

/// # `GET /_matrix/client/v1/auth_metadata`
///
/// Answered by Vouch itself, not forwarded: Vouch offers no OAuth 2.0 login yet, and a
/// client that got Synapse's re-served document might try one.
pub async fn auth_metadata_route() -> ApiError {
    ApiError::unrecognized()
}
