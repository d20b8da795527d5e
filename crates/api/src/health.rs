//! `GET /_vouch/health`: whether this instance can do its work, for load balancers and
//! monitors. 200 when the database answers and the background tasks run; 503 otherwise,
//! with what is wrong. It reveals nothing about accounts and needs no token.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;

use crate::state::AppState;

/// The path it is served at.
pub const HEALTH_PATH: &str = "/_vouch/health";

/// Whether the background tasks run; set by the supervisor that runs them.
#[derive(Debug, Default)]
pub struct Liveness {
    /// The outbox worker (mail and SMS).
    pub outbox: AtomicBool,
    /// Housekeeping.
    pub housekeeping: AtomicBool,
}

/// # `GET /_vouch/health`
pub async fn health_route(State(state): State<AppState>) -> Response {
    let database = matches!(
        tokio::time::timeout(Duration::from_secs(2), state.db.ping()).await,
        Ok(Ok(()))
    );
    let outbox = state.liveness.outbox.load(Ordering::Relaxed);
    let housekeeping = state.liveness.housekeeping.load(Ordering::Relaxed);
    let up = |ok: bool| if ok { "ok" } else { "down" };
    let healthy = database && outbox && housekeeping;
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": up(healthy),
            "database": up(database),
            "outbox_worker": up(outbox),
            "housekeeping": up(housekeeping),
        })),
    )
        .into_response()
}
