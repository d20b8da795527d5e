use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::auth::AuthedUser;
use crate::state::AppState;

/// # `GET /_matrix/client/v3/capabilities`
///
/// Written as JSON rather than through ruma's `Capabilities`, which leaves out every
/// capability that is at its default (`enabled: true`): operators and clients both read
/// this answer, and an explicit `true` is clearer than an absent key.
pub async fn get_capabilities_route(
    State(state): State<AppState>,
    user: AuthedUser,
) -> Json<Value> {
    let account = &state.config.account;
    let may_change_password = account.password_change && !user.is_guest;
    Json(json!({
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
    }))
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
