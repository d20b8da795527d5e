//! The device authorization grant (RFC 8628, Matrix spec v1.18), for apps without a
//! browser: the app asks `POST /oauth2/device` for a device code and a user code, shows the
//! user code and the page's address, and polls the token endpoint; the user types the code
//! on the page (or opens the address with the code in it), signs in and consents there.

use axum::Form;
use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use vouch_core::oauth::AuthorizationRequest;
use vouch_core::oauth::device::{display_user_code, new_user_code, normalise_user_code};
use vouch_core::secrets::{new_opaque_id, new_token, token_hash};
use vouch_mail::OAuthPageContext;
use vouch_storage::Grant;

use super::authorize::load_client;
use super::browser::{self, render};
use super::error::{OAuthError, OAuthForm};
use super::grant_page::Open;
use super::paths;
use crate::client_ip::ClientIp;
use crate::error::ApiError;
use crate::state::AppState;

/// The device authorization request's form.
#[derive(Debug, Deserialize)]
pub struct DeviceForm {
    client_id: Option<String>,
    scope: Option<String>,
}

/// # `POST /oauth2/device`
pub async fn device_authorization_route(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    OAuthForm(form): OAuthForm<DeviceForm>,
) -> Result<Json<serde_json::Value>, OAuthError> {
    state
        .limits
        .uia_sessions_per_ip
        .check_ip(ip)
        .map_err(OAuthError::from)?;
    let client_id = form
        .client_id
        .as_deref()
        .ok_or_else(|| OAuthError::invalid_request("client_id is required"))?;
    let client = load_client(&state, client_id)
        .await?
        .ok_or_else(OAuthError::invalid_client)?;
    let request = AuthorizationRequest::device(client_id, form.scope.as_deref(), &client)
        .map_err(|(error, description)| OAuthError::new(error, description))?;
    let device_code = new_token(state.secrets.as_ref(), "vdc");
    let user_code = new_user_code(state.secrets.as_ref());
    let lifetime = state.config.oauth.device_code_lifetime;
    let now = state.now();
    let grant = Grant {
        grant_id: new_opaque_id(state.secrets.as_ref()),
        client_id: client_id.to_owned(),
        request: serde_json::to_string(&request)
            .map_err(|e| OAuthError::from(ApiError::internal(e.to_string())))?,
        created_at: now,
        expires_at: now.saturating_add(vouch_core::clock::duration_ms(lifetime)),
        signup: None,
        user_code: Some(user_code.clone()),
    };
    state
        .db
        .create_grant(&grant, Some(&token_hash(&device_code)), now)
        .await?;
    let page = format!("{}{}", state.config.public_baseurl(), paths::DEVICE_PAGE);
    let shown = display_user_code(&user_code);
    Ok(Json(serde_json::json!({
        "device_code": device_code,
        "user_code": shown,
        "verification_uri": page,
        "verification_uri_complete": format!("{page}?user_code={shown}"),
        "expires_in": lifetime.as_secs(),
        "interval": state.config.oauth.device_poll_interval.as_secs().max(1),
    })))
}

/// The page's query.
#[derive(Debug, Deserialize)]
pub struct CodeQuery {
    #[serde(default)]
    user_code: String,
}

fn code_page(
    state: &AppState,
    lang: String,
    status: StatusCode,
    error: &str,
    typed: &str,
    csrf: &str,
    cookies: &[HeaderValue],
) -> Response {
    let ctx = OAuthPageContext {
        app_name: state.config.email.app_name.clone(),
        server_name: state.config.server_name.clone(),
        lang,
        title: "title.device".into(),
        error: error.into(),
        action: format!("{}{}", state.config.public_baseurl(), paths::DEVICE_PAGE),
        csrf: csrf.into(),
        user_code: typed.into(),
        ..OAuthPageContext::default()
    };
    render(state, status, "device", &ctx, None, cookies)
}

/// # `GET /_vouch/oauth/device`
pub async fn device_page_route(
    State(state): State<AppState>,
    Query(query): Query<CodeQuery>,
    headers: HeaderMap,
) -> Response {
    let (csrf, cookie) = browser::csrf(&state, &headers);
    let typed: String = query.user_code.chars().take(20).collect();
    code_page(
        &state,
        browser::language(&state, &[], &headers),
        StatusCode::OK,
        "",
        &typed,
        &csrf,
        &cookie.into_iter().collect::<Vec<_>>(),
    )
}

/// The code form.
#[derive(Debug, Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    user_code: String,
}

/// # `POST /_vouch/oauth/device`
///
/// Finds the request the user code names and goes on to its sign-in and consent pages.
/// Guessing codes is held back by the login's per-address limit; a wrong, expired or
/// answered code reads alike.
pub async fn device_code_route(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<CodeForm>,
) -> Response {
    let (csrf, cookies) = browser::csrf_cookies(&state, &headers);
    let typed: String = form.user_code.chars().take(20).collect();
    if !browser::csrf_ok(&state, &headers, &form.csrf) {
        return code_page(
            &state,
            browser::language(&state, &[], &headers),
            StatusCode::FORBIDDEN,
            "msg.form_expired",
            &typed,
            &csrf,
            &cookies,
        );
    }
    if state.limits.login_per_ip.check_ip(ip).is_err() {
        return code_page(
            &state,
            browser::language(&state, &[], &headers),
            StatusCode::TOO_MANY_REQUESTS,
            "msg.too_many",
            &typed,
            &csrf,
            &cookies,
        );
    }
    let grant = match normalise_user_code(&typed) {
        Some(code) => match state.db.grant_by_user_code(&code, state.now()).await {
            Ok(grant) => grant,
            Err(e) => return ApiError::from(e).into_response(),
        },
        None => None,
    };
    match grant {
        Some(grant) => {
            // The request's pages open only in the browser that typed its code: a link to
            // them sent by someone else leads back here.
            let mut res = Redirect::to(&format!(
                "{}{}/{}",
                state.config.public_baseurl(),
                paths::GRANT,
                grant.grant_id
            ))
            .into_response();
            res.headers_mut().append(
                http::header::SET_COOKIE,
                browser::page_cookie(
                    &state,
                    browser::DEVICE_COOKIE,
                    &grant.grant_id,
                    state.config.oauth.device_code_lifetime,
                ),
            );
            for c in cookies {
                res.headers_mut().append(http::header::SET_COOKIE, c);
            }
            res
        }
        None => code_page(
            &state,
            browser::language(&state, &[], &headers),
            StatusCode::BAD_REQUEST,
            "msg.code_invalid",
            &typed,
            &csrf,
            &cookies,
        ),
    }
}

/// What the browser shows once a device's request is answered.
pub(super) fn done_page(state: &AppState, open: &Open, allowed: bool) -> Response {
    let mut ctx = super::grant_page::base_context(state, open, "", "");
    if allowed {
        ctx.title = "title.signed_in".into();
        ctx.message = "msg.device_signed_in".into();
    } else {
        ctx.title = "title.cancelled".into();
        ctx.message = "msg.cancelled".into();
    }
    render(state, StatusCode::OK, "done", &ctx, None, &[])
}

/// For a device authorization request whose pages this browser did not reach by typing
/// the user code, the way to the code page (a phisher's link to the request's consent page
/// skips nothing); `None` otherwise.
pub(super) fn unbound(state: &AppState, open: &Open, headers: &HeaderMap) -> Option<Response> {
    if !matches!(open.request.answer, vouch_core::oauth::Answer::Device) {
        return None;
    }
    let typed = browser::cookie(state, headers, browser::DEVICE_COOKIE)
        .is_some_and(|c| vouch_core::secrets::constant_time_eq(c, &open.grant.grant_id));
    (!typed).then(|| {
        Redirect::to(&format!(
            "{}{}",
            state.config.public_baseurl(),
            paths::DEVICE_PAGE
        ))
        .into_response()
    })
}
