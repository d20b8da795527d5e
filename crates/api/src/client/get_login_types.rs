use axum::extract::State;
use ruma::api::client::session::get_login_types::{
    self,
    v3::{LoginType, PasswordLoginType, SsoLoginType, TokenLoginType},
};

use crate::ruma_axum::RumaResponse;
use crate::state::AppState;

/// # `GET /_matrix/client/v3/login`
///
/// Passwords; with the OAuth 2.0 API on, also `m.login.sso` marked `oauth_aware_preferred`
/// (MSC3824, spec v1.18: OAuth-aware clients then sign in and up through the OAuth 2.0
/// pages) and the `m.login.token` its redirect hands out.
pub async fn get_login_types_route(
    State(state): State<AppState>,
) -> RumaResponse<get_login_types::v3::Response> {
    let mut flows = vec![LoginType::Password(PasswordLoginType::new())];
    if state.config.oauth.enabled {
        let mut sso = SsoLoginType::new();
        sso.oauth_aware_preferred = true;
        flows.push(LoginType::Sso(sso));
        flows.push(LoginType::Token(TokenLoginType::new()));
    }
    RumaResponse(get_login_types::v3::Response::new(flows))
}
