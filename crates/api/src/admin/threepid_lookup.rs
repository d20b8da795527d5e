//! `GET /_synapse/admin/v1/threepid/{medium}/users/{address}`.

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};
use vouch_core::threepid::{Email, Msisdn};

use crate::admin::Admin;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// # `GET /_synapse/admin/v1/threepid/{medium}/users/{address}`
pub async fn threepid_lookup_route(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path((medium, address)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let canonical = match medium.as_str() {
        "email" => Email::parse(&address).map(|e| e.as_str().to_owned()).ok(),
        "msisdn" => Msisdn::parse_international(&address)
            .map(|m| m.as_str().to_owned())
            .ok(),
        _ => return Err(ApiError::invalid_param("medium must be email or msisdn")),
    };
    let owner = match canonical {
        Some(c) => state.db.threepid_owner(&medium, &c).await?,
        None => None,
    };
    owner
        .map(|user_id| Json(json!({ "user_id": user_id })))
        .ok_or_else(|| ApiError::not_found("User not found"))
}
