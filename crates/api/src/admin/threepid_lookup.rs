//! `GET /_synapse/admin/v1/threepid/{medium}/users/{address}`.

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};
use vouch_core::threepid::{InvalidThreepid, ThirdPartyId};

use crate::admin::Admin;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// # `GET /_synapse/admin/v1/threepid/{medium}/users/{address}`
pub async fn threepid_lookup_route(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path((medium, address)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let owner = match ThirdPartyId::parse(&medium, &address) {
        Ok(id) => {
            state
                .db
                .threepid_owner(id.medium().as_str(), id.address())
                .await?
        }
        Err(InvalidThreepid::Medium(_)) => {
            return Err(ApiError::invalid_param("medium must be email or msisdn"));
        }
        Err(_) => None,
    };
    owner
        .map(|user_id| Json(json!({ "user_id": user_id })))
        .ok_or_else(|| ApiError::not_found("User not found"))
}
