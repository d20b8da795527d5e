//! # `GET /oauth2/authorize`
//!
//! Where the client sends the user's browser. The request is checked (client, redirect
//! URI, PKCE, scope), kept as a grant for `[oauth] authorization_request_lifetime`, and the
//! browser goes on to the grant's page. A request with an unknown client or a redirect URI
//! the client did not register is answered with a page, never redirected; every other
//! fault goes back to the client as RFC 6749's `error`.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::StatusCode;
use vouch_core::oauth::{
    AuthorizationRequest, AuthorizeError, ClientMetadata, RawAuthorization, redirect_with,
};
use vouch_core::secrets::new_opaque_id;
use vouch_storage::Grant;

use super::browser::render;
use super::paths;
use crate::client_ip::ClientIp;
use crate::error::ApiError;
use crate::state::AppState;

/// A registered client, by ID.
pub async fn load_client(
    state: &AppState,
    client_id: &str,
) -> Result<Option<ClientMetadata>, ApiError> {
    let Some(json) = state.db.client(client_id).await? else {
        return Ok(None);
    };
    serde_json::from_str(&json)
        .map(Some)
        .map_err(|e| ApiError::internal(format!("stored client {client_id} is damaged: {e}")))
}

/// An error page of the sign-in pages.
pub fn error_page(state: &AppState, status: StatusCode, message: &str) -> Response {
    let ctx = vouch_mail::OAuthPageContext {
        app_name: state.config.email.app_name.clone(),
        server_name: state.config.server_name.clone(),
        title: "title.error".into(),
        message: message.to_owned(),
        ..Default::default()
    };
    render(state, status, "error", &ctx, None, &[])
}

/// # `GET /oauth2/authorize`
pub async fn authorize_route(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    query: Result<Query<RawAuthorization>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(raw)) = query else {
        return error_page(&state, StatusCode::BAD_REQUEST, "msg.malformed");
    };
    if let Err(e) = state.limits.uia_sessions_per_ip.check_ip(ip) {
        return error_page(&state, StatusCode::TOO_MANY_REQUESTS, &e.to_string());
    }
    let client = match raw.client_id.as_deref() {
        Some(id) => match load_client(&state, id).await {
            Ok(client) => client,
            Err(e) => return e.into_response(),
        },
        None => None,
    };
    let Some(client) = client else {
        return error_page(&state, StatusCode::BAD_REQUEST, "msg.not_registered");
    };
    let redirect_uri = raw.redirect_uri.clone().unwrap_or_default();
    let state_param = raw.state.clone();
    let parsed = AuthorizationRequest::parse(raw, &client).and_then(|request| {
        match request.redirect() {
            Some(r) if request.scope.identity_only() && !state.config.oauth.openid_connect => {
                Err(AuthorizeError::Redirected {
                    error: "invalid_scope",
                    description: "this server does not offer OpenID Connect: the scope must include urn:matrix:client:api:*".into(),
                    mode: r.response_mode,
                })
            }
            _ => Ok(request),
        }
    });
    let request = match parsed {
        Ok(request) => request,
        Err(AuthorizeError::Shown(message)) => {
            return error_page(&state, StatusCode::BAD_REQUEST, &message);
        }
        Err(AuthorizeError::Redirected {
            error,
            description,
            mode,
        }) => {
            let mut params = vec![
                ("error", error),
                ("error_description", description.as_str()),
            ];
            if let Some(s) = &state_param {
                params.push(("state", s.as_str()));
            }
            return match redirect_with(&redirect_uri, mode, &params) {
                Some(to) => Redirect::to(&to).into_response(),
                None => error_page(&state, StatusCode::BAD_REQUEST, &description),
            };
        }
    };
    let grant_id = new_opaque_id(state.secrets.as_ref());
    let now = state.now();
    let grant = Grant {
        grant_id: grant_id.clone(),
        client_id: request.client_id.clone(),
        request: match serde_json::to_string(&request) {
            Ok(json) => json,
            Err(e) => return ApiError::internal(e.to_string()).into_response(),
        },
        created_at: now,
        expires_at: now.saturating_add(vouch_core::clock::duration_ms(
            state.config.oauth.authorization_request_lifetime,
        )),
        signup: None,
        user_code: None,
    };
    if let Err(e) = state.db.create_grant(&grant, None, now).await {
        return ApiError::from(e).into_response();
    }
    let base = state.config.public_baseurl();
    Redirect::to(&format!("{base}{}/{grant_id}", paths::GRANT)).into_response()
}
