use axum::Json;
use axum::extract::{RawQuery, State};
use http::HeaderMap;
use serde_json::{Value, json};

use crate::auth::AuthedUser;
use crate::error::ApiError;
use crate::state::AppState;

/// # `GET /_matrix/client/v3/capabilities`
///
/// Written as JSON rather than through ruma's `Capabilities`, which leaves out every
/// capability that is at its default (`enabled: true`): operators and clients both read
/// this answer, and an explicit `true` is clearer than an absent key.
///
/// In front of a homeserver, the homeserver's answer (room versions, profile fields: its
/// business) with the account capabilities set by Vouch, which owns accounts.
pub async fn get_capabilities_route(
    State(state): State<AppState>,
    user: Result<AuthedUser, ApiError>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let Some(hs) = state.homeserver.as_ref() else {
        return Ok(Json(own_capabilities(&state, &user?)));
    };
    // A token Vouch does not know (an application service's) gets the homeserver's answer
    // as it is.
    let own = user.ok().map(|u| own_capabilities(&state, &u));
    let mut url = hs.base().clone();
    url.set_path("/_matrix/client/v3/capabilities");
    url.set_query(query.as_deref());
    let mut req = state.proxy_http.get(url).timeout(HOMESERVER_WAIT);
    if let Some(auth) = headers.get(http::header::AUTHORIZATION) {
        req = req.header(http::header::AUTHORIZATION, auth);
    }
    let theirs = match req.send().await {
        Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
        _ => None,
    };
    let theirs = theirs.filter(|t| t["capabilities"].is_object());
    match (theirs, own) {
        (Some(mut theirs), Some(own)) => {
            for key in ["m.change_password", "m.3pid_changes", "m.get_login_token"] {
                theirs["capabilities"][key] = own["capabilities"][key].clone();
            }
            Ok(Json(theirs))
        }
        (Some(theirs), None) => Ok(Json(theirs)),
        (None, Some(own)) => {
            tracing::warn!("the homeserver did not answer /capabilities; answering Vouch's own");
            Ok(Json(own))
        }
        (None, None) => Err(ApiError::unknown_token(false)),
    }
}

/// How long `/capabilities` waits for the homeserver's part.
const HOMESERVER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Vouch's own capabilities.
fn own_capabilities(state: &AppState, user: &AuthedUser) -> Value {
    let account = &state.config.account;
    let may_change_password = account.password_change && !user.is_guest;
    json!({
        "capabilities": {
            "m.change_password": { "enabled": may_change_password },
            "m.3pid_changes": { "enabled": account.threepid_changes },
            "m.set_displayname": { "enabled": account.displayname_change },
            "m.set_avatar_url": { "enabled": account.avatar_change },
            "m.profile_fields": {
                "enabled": account.displayname_change || account.avatar_change,
                "disallowed": disallowed_fields(account.displayname_change, account.avatar_change),
            },
            "m.get_login_token": { "enabled": false },
        }
    })
}

fn disallowed_fields(displayname: bool, avatar: bool) -> Vec<&'static str> {
    let mut out = Vec::new();
    if !displayname {
        out.push("displayname");
    }
    if !avatar {
        out.push("avatar_url");
    }
    out
}
