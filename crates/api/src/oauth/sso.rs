//! The legacy SSO redirect (`m.login.sso`, `GET /login/sso/redirect`) served by the
//! sign-in pages, so that clients which prefer it when OAuth 2.0 is on (MSC3824's
//! `oauth_aware_preferred`) sign in the same way as OAuth 2.0 apps: the browser signs in
//! (or is signed in), the user confirms where the login goes, and the client gets a login
//! token (single-use, two minutes, stored hashed) for `m.login.token`.

use axum::Form;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use vouch_core::secrets::{new_token, token_hash};
use vouch_mail::OAuthPageContext;
use vouch_storage::BrowserSession;

use super::authorize::error_page;
use super::browser::{self, render};
use crate::client_ip::ClientIp;
use crate::error::ApiError;
use crate::state::AppState;

/// The page's path.
pub const PATH: &str = "_vouch/sso";
/// How long a login token works.
const LOGIN_TOKEN_MS: i64 = 120_000;

/// Where the client wants the login token.
#[derive(Debug, Default, Deserialize)]
pub struct SsoQuery {
    #[serde(default, rename = "redirectUrl")]
    redirect_url: String,
}

/// The client's redirect URL, if it is one a login may go to: an absolute URL without a
/// fragment, of at most 2 KiB.
fn target(query: &SsoQuery) -> Option<url::Url> {
    let url = url::Url::parse(&query.redirect_url).ok()?;
    (query.redirect_url.len() <= 2048
        && url.fragment().is_none()
        && !matches!(url.scheme(), "javascript" | "data" | "file" | "blob"))
    .then_some(url)
}

fn shown_host(url: &url::Url) -> String {
    url.host_str()
        .map_or_else(|| format!("{}:", url.scheme()), str::to_owned)
}

fn back(state: &AppState, query: &SsoQuery) -> String {
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("redirectUrl", &query.redirect_url)
        .finish();
    format!("{}{PATH}?{q}", state.config.public_baseurl())
}

fn context(
    state: &AppState,
    lang: String,
    title: &str,
    csrf: &str,
    to: &url::Url,
) -> OAuthPageContext {
    OAuthPageContext {
        app_name: state.config.email.app_name.clone(),
        server_name: state.config.server_name.clone(),
        lang,
        title: title.into(),
        csrf: csrf.into(),
        client_name: shown_host(to),
        redirect_host: shown_host(to),
        ..OAuthPageContext::default()
    }
}

/// # `GET /_matrix/client/v3/login/sso/redirect`
pub async fn sso_redirect_route(
    State(state): State<AppState>,
    Query(query): Query<SsoQuery>,
) -> Response {
    if target(&query).is_none() {
        return ApiError::invalid_param("redirectUrl must be an absolute URL without a fragment")
            .into_response();
    }
    // The spec's 302 (axum's `Redirect::to` is a 303).
    (
        StatusCode::FOUND,
        [(http::header::LOCATION, back(&state, &query))],
    )
        .into_response()
}

#[expect(clippy::too_many_arguments, reason = "one page's parts")]
fn sign_in_page(
    state: &AppState,
    lang: String,
    status: StatusCode,
    error: &str,
    csrf: &str,
    query: &SsoQuery,
    to: &url::Url,
    cookies: &[HeaderValue],
) -> Response {
    let mut ctx = context(state, lang, "title.sign_in", csrf, to);
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("redirectUrl", &query.redirect_url)
        .finish();
    ctx.action = format!("{}{PATH}/sign_in?{q}", state.config.public_baseurl());
    ctx.error = error.into();
    render(state, status, "sign_in", &ctx, None, cookies)
}

fn confirm_page(
    state: &AppState,
    lang: String,
    csrf: &str,
    session: &BrowserSession,
    query: &SsoQuery,
    to: &url::Url,
    cookies: &[HeaderValue],
) -> Response {
    let mut ctx = context(state, lang, "title.sso", csrf, to);
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("redirectUrl", &query.redirect_url)
        .finish();
    ctx.action = format!("{}{PATH}/continue?{q}", state.config.public_baseurl());
    ctx.user_id = session.user_id.clone();
    let form_target = browser::form_target(&query.redirect_url);
    render(
        state,
        StatusCode::OK,
        "sso",
        &ctx,
        form_target.as_deref(),
        cookies,
    )
}

/// # `GET /_vouch/sso`
pub async fn sso_page_route(
    State(state): State<AppState>,
    Query(query): Query<SsoQuery>,
    headers: HeaderMap,
) -> Response {
    let Some(to) = target(&query) else {
        return error_page(&state, StatusCode::BAD_REQUEST, "msg.malformed");
    };
    let lang = browser::language(&state, &[], &headers);
    let (csrf, cookies) = browser::csrf_cookies(&state, &headers);
    match browser::session(&state, &headers).await {
        Ok(Some(session)) => confirm_page(&state, lang, &csrf, &session, &query, &to, &cookies),
        Ok(None) => sign_in_page(
            &state,
            lang,
            StatusCode::OK,
            "",
            &csrf,
            &query,
            &to,
            &cookies,
        ),
        Err(e) => e.into_response(),
    }
}

/// A form of the SSO pages.
#[derive(Debug, Deserialize)]
pub struct SsoForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    decision: String,
}

/// # `POST /_vouch/sso/sign_in`
pub async fn sso_sign_in_route(
    State(state): State<AppState>,
    Query(query): Query<SsoQuery>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<SsoForm>,
) -> Response {
    let Some(to) = target(&query) else {
        return error_page(&state, StatusCode::BAD_REQUEST, "msg.malformed");
    };
    let lang = browser::language(&state, &[], &headers);
    let (csrf, cookies) = browser::csrf_cookies(&state, &headers);
    let again = |status: StatusCode, error: &str| {
        sign_in_page(
            &state,
            lang.clone(),
            status,
            error,
            &csrf,
            &query,
            &to,
            &cookies,
        )
    };
    let signed_in = browser::sign_in_with_password(
        &state,
        ip,
        &headers,
        &form.csrf,
        &form.username,
        &form.password,
    )
    .await;
    let (session, cookie) = match signed_in {
        Ok(x) => x,
        Err((status, why)) => return again(status, &why),
    };
    let mut all = cookies.clone();
    all.push(cookie);
    confirm_page(&state, lang, &csrf, &session, &query, &to, &all)
}

/// # `POST /_vouch/sso/continue`
///
/// The user confirmed where the login goes: a login token is made and the browser sent
/// there with it (`loginToken`); cancelled, the browser goes nowhere.
pub async fn sso_continue_route(
    State(state): State<AppState>,
    Query(query): Query<SsoQuery>,
    headers: HeaderMap,
    Form(form): Form<SsoForm>,
) -> Response {
    let Some(mut to) = target(&query) else {
        return error_page(&state, StatusCode::BAD_REQUEST, "msg.malformed");
    };
    let lang = browser::language(&state, &[], &headers);
    let (csrf, cookies) = browser::csrf_cookies(&state, &headers);
    let session = match browser::session(&state, &headers).await {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let Some(session) = session.filter(|_| browser::csrf_ok(&state, &headers, &form.csrf)) else {
        return sign_in_page(
            &state,
            lang,
            StatusCode::FORBIDDEN,
            "msg.sign_in_again",
            &csrf,
            &query,
            &to,
            &cookies,
        );
    };
    if form.decision != "allow" {
        let mut ctx = context(&state, lang, "title.cancelled", &csrf, &to);
        ctx.message = "msg.cancelled".into();
        return render(&state, StatusCode::OK, "done", &ctx, None, &cookies);
    }
    let token = new_token(state.secrets.as_ref(), "vlt");
    let expires = state.now().saturating_add(LOGIN_TOKEN_MS);
    if let Err(e) = state
        .db
        .create_login_token(&token_hash(&token), &session, expires)
        .await
    {
        return ApiError::from(e).into_response();
    }
    to.query_pairs_mut().append_pair("loginToken", &token);
    tracing::info!(
        user_id = session.user_id,
        "login token issued through the SSO redirect"
    );
    Redirect::to(to.as_str()).into_response()
}
