use axum::extract::State;
use ruma::api::client::discovery::discover_homeserver::{self, HomeserverInfo};

use crate::ruma_axum::RumaResponse;
use crate::state::AppState;

/// # `GET /.well-known/matrix/client`
pub async fn discover_homeserver_route(
    State(state): State<AppState>,
) -> RumaResponse<discover_homeserver::Response> {
    let base = state.config.public_baseurl();
    RumaResponse(discover_homeserver::Response::new(HomeserverInfo::new(
        base.trim_end_matches('/').to_owned(),
    )))
}
