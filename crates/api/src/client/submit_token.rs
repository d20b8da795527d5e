//! Vouch's `submit_url`: where a client posts the code the user received by SMS. Same body,
//! answers and errors as the identity service's `POST /validate/{medium}/submitToken`
//! (spec v1.18, MSC4183), with no access token.

use axum::Json;
use axum::extract::State;
use http::StatusCode;
use ruma::api::error::ErrorKind;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::ruma_axum::JsonBody;
use crate::state::AppState;
use crate::threepid::{Submitted, submit_secret};

/// # `POST /_vouch/submit_token`
pub async fn submit_token_route(
    State(state): State<AppState>,
    JsonBody { body, .. }: JsonBody,
) -> ApiResult<Json<Value>> {
    let field = |key: &str| match body.get(key) {
        Some(Value::String(s)) => Ok(s.as_str()),
        Some(_) => Err(ApiError::invalid_param(format!("{key} must be a string"))),
        None => Err(ApiError::missing_param(format!("{key} is required"))),
    };
    let (sid, client_secret, token) = (field("sid")?, field("client_secret")?, field("token")?);
    match submit_secret(&state, sid, client_secret, token).await? {
        Submitted::Validated { .. } | Submitted::AlreadyValidated => {
            Ok(Json(json!({ "success": true })))
        }
        Submitted::Wrong => Err(ApiError::new(
            ErrorKind::TokenIncorrect,
            "The code is not correct",
        )),
        Submitted::Expired => Err(ApiError::Custom {
            status: StatusCode::BAD_REQUEST,
            errcode: "M_SESSION_EXPIRED",
            message: "The code has expired or was tried too often; request a new one".into(),
        }),
        Submitted::Unknown => Err(ApiError::invalid_param("Unknown session or client secret")),
    }
}
