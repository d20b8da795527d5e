//! The account page behind `account_management_uri` (Matrix spec v1.18): what an OAuth 2.0
//! app deep-links to for everything it cannot do itself — the profile, the signed-in
//! sessions (view, sign out), deactivation and, in front of a homeserver, the cross-signing
//! reset. A browser signs in here like on the authorization pages (the same cookie, the
//! login's rules); every form carries the CSRF token, and what cannot be undone asks for the
//! password again.

use axum::Form;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use vouch_mail::{DeviceLine, OAuthPageContext, ThreepidLine};
use vouch_storage::BrowserSession;

use super::browser::{self, render, said};
use crate::accounts::LoginId;
use crate::client_ip::ClientIp;
use crate::error::ApiError;
use crate::state::AppState;

/// Where the page is.
pub const PATH: &str = crate::homeserver::discovery::ACCOUNT_PATH;

/// The actions the page serves (`account_management_actions_supported`), standalone; in
/// front of a homeserver the cross-signing reset too.
pub const ACTIONS: &[&str] = &[
    "org.matrix.profile",
    "org.matrix.devices_list",
    "org.matrix.device_view",
    "org.matrix.device_delete",
    "org.matrix.account_deactivate",
];

/// The page's query: the action an app deep-links to.
#[derive(Debug, Default, Deserialize)]
pub struct ActionQuery {
    #[serde(default)]
    pub(super) action: Option<String>,
    #[serde(default)]
    pub(super) device_id: Option<String>,
}

/// What every page for this browser carries: the CSRF token (and its cookie, if new) and
/// the language.
pub(super) struct Visit {
    pub(super) csrf: String,
    pub(super) cookies: Vec<HeaderValue>,
    pub(super) lang: String,
}

pub(super) fn visit(state: &AppState, headers: &HeaderMap) -> Visit {
    let (csrf, cookie) = browser::csrf(state, headers);
    Visit {
        csrf,
        cookies: cookie.into_iter().collect(),
        lang: browser::language(state, &[], headers),
    }
}

pub(super) fn context(state: &AppState, title: &str, v: &Visit) -> OAuthPageContext {
    OAuthPageContext {
        app_name: state.config.email.app_name.clone(),
        server_name: state.config.server_name.clone(),
        lang: v.lang.clone(),
        title: title.into(),
        csrf: v.csrf.clone(),
        action: format!("{}{PATH}", state.config.public_baseurl()),
        ..OAuthPageContext::default()
    }
}

/// The sign-in form of the account page (back to `query`'s action after).
fn sign_in(
    state: &AppState,
    status: StatusCode,
    error: &str,
    v: &Visit,
    query: &ActionQuery,
) -> Response {
    let mut ctx = context(state, "title.sign_in", v);
    let back = serde_urlencoded_query(query);
    ctx.action = format!("{}{PATH}/sign_in{back}", state.config.public_baseurl());
    ctx.error = error.into();
    render(state, status, "sign_in", &ctx, None, &v.cookies)
}

/// `?action=…&device_id=…` again, for the way back after signing in.
fn serde_urlencoded_query(query: &ActionQuery) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    if let Some(a) = &query.action {
        q.append_pair("action", a);
    }
    if let Some(d) = &query.device_id {
        q.append_pair("device_id", d);
    }
    let q = q.finish();
    if q.is_empty() { q } else { format!("?{q}") }
}

/// The account page for `session`'s user, with `notice` above it.
pub(super) async fn overview(
    state: &AppState,
    session: &BrowserSession,
    v: &Visit,
    notice: &str,
    query: &ActionQuery,
) -> Response {
    let user = match state.db.user(&session.user_id).await {
        Ok(Some(user)) => user,
        Ok(None) => return ApiError::not_found("no such account").into_response(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let (devices, threepids) = match (
        state.db.devices(&session.user_id).await,
        state.db.threepids(&session.user_id).await,
    ) {
        (Ok(d), Ok(t)) => (d, t),
        (Err(e), _) | (_, Err(e)) => return ApiError::from(e).into_response(),
    };
    let mut ctx = context(state, "title.account", v);
    if let Some(lang) = &user.language {
        ctx.lang.clone_from(lang);
    }
    ctx.languages = state.composer.templates().languages();
    ctx.user_id = session.user_id.clone();
    ctx.message = user.displayname.clone().unwrap_or_default();
    ctx.notice = notice.into();
    ctx.threepids = threepids
        .into_iter()
        .map(|t| ThreepidLine {
            shown: if t.medium == "msisdn" {
                format!("+{}", t.address)
            } else {
                t.address.clone()
            },
            medium: t.medium,
            address: t.address,
        })
        .collect();
    let rules = &state.config.account;
    ctx.can_change_name = rules.displayname_change;
    ctx.can_change_password = rules.password_change;
    ctx.can_change_threepids = rules.threepid_changes;
    // A deep link to one device shows that one first.
    let wanted = query.device_id.as_deref();
    let mut lines: Vec<DeviceLine> = devices
        .into_iter()
        .map(|d| DeviceLine {
            name: d
                .display_name
                .clone()
                .unwrap_or_else(|| d.device_id.clone()),
            device_id: d.device_id,
            last_seen: d.last_seen_ip.unwrap_or_default(),
        })
        .collect();
    if let Some(w) = wanted {
        lines.sort_by_key(|l| l.device_id != w);
    }
    ctx.devices = lines;
    ctx.confirm_device = match (query.action.as_deref(), wanted) {
        (Some("org.matrix.device_delete" | "org.matrix.session_end"), Some(d)) => d.to_owned(),
        _ => String::new(),
    };
    render(state, StatusCode::OK, "account", &ctx, None, &v.cookies)
}

/// Speaks the account's own language on `v`'s pages, where it chose one (the overview
/// reads it with the rest of the account).
pub(super) async fn in_account_language(
    state: &AppState,
    session: &BrowserSession,
    v: &mut Visit,
) -> Result<(), Response> {
    let user = state
        .db
        .user(&session.user_id)
        .await
        .map_err(|e| ApiError::from(e).into_response())?;
    if let Some(lang) = user.and_then(|u| u.language) {
        v.lang = lang;
    }
    Ok(())
}

/// # `GET /_vouch/account`
pub async fn account_route(
    State(state): State<AppState>,
    Query(query): Query<ActionQuery>,
    headers: HeaderMap,
) -> Response {
    if query.action.as_deref() == Some(crate::homeserver::account_page::CROSS_SIGNING_RESET)
        && state.homeserver.is_some()
    {
        return crate::homeserver::account_page::cross_signing_page();
    }
    let v = visit(&state, &headers);
    match browser::session(&state, &headers).await {
        Ok(Some(session)) => overview(&state, &session, &v, "", &query).await,
        Ok(None) => sign_in(&state, StatusCode::OK, "", &v, &query),
        Err(e) => e.into_response(),
    }
}

/// The sign-in form.
#[derive(Debug, Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

/// # `POST /_vouch/account/sign_in`
pub async fn sign_in_route(
    State(state): State<AppState>,
    Query(query): Query<ActionQuery>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    let v = visit(&state, &headers);
    let signed_in = browser::sign_in_with_password(
        &state,
        ip,
        &headers,
        &form.csrf,
        &form.username,
        &form.password,
    )
    .await;
    let cookie = match signed_in {
        Ok((_, cookie)) => cookie,
        Err((status, why)) => return sign_in(&state, status, &why, &v, &query),
    };
    let mut res = Redirect::to(&format!(
        "{}{PATH}{}",
        state.config.public_baseurl(),
        serde_urlencoded_query(&query)
    ))
    .into_response();
    res.headers_mut().append(http::header::SET_COOKIE, cookie);
    res
}

/// A form of the signed-in page.
#[derive(Debug, Deserialize)]
pub struct PageForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    device_id: String,
    #[serde(default)]
    password: String,
}

/// The signed-in session a form of the page may act for, or the answer to give instead.
pub(super) async fn acting(
    state: &AppState,
    headers: &HeaderMap,
    csrf_field: &str,
) -> Result<(BrowserSession, Visit), Response> {
    let v = visit(state, headers);
    let session = browser::session(state, headers)
        .await
        .map_err(IntoResponse::into_response)?;
    match session {
        Some(s) if browser::csrf_ok(state, headers, csrf_field) => Ok((s, v)),
        _ => Err(sign_in(
            state,
            StatusCode::FORBIDDEN,
            "msg.sign_in_again",
            &v,
            &ActionQuery::default(),
        )),
    }
}

/// # `POST /_vouch/account/sign_out`
///
/// Signs one of the user's sessions out, like `DELETE /devices/{deviceId}` (here and at the
/// homeserver), through the accounts service.
pub async fn sign_out_route(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<PageForm>,
) -> Response {
    let (session, v) = match acting(&state, &headers, &form.csrf).await {
        Ok(x) => x,
        Err(res) => return res,
    };
    if let Err(e) = state
        .accounts()
        .log_out(&session.user_id, std::slice::from_ref(&form.device_id))
        .await
    {
        return ApiError::from(e).into_response();
    }
    let notice = format!("Signed out {}.", form.device_id);
    overview(&state, &session, &v, &notice, &ActionQuery::default()).await
}

/// # `POST /_vouch/account/deactivate`
///
/// Asks for the password again (the login's rules), then deactivates the account the way
/// `/account/deactivate` does: addresses unbound from identity servers, every session
/// ended, here and at the homeserver.
pub async fn deactivate_route(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<PageForm>,
) -> Response {
    let (session, v) = match acting(&state, &headers, &form.csrf).await {
        Ok(x) => x,
        Err(res) => return res,
    };
    let accounts = state.accounts();
    if let Err(e) = accounts
        .check_login(LoginId::User(session.user_id.clone()), &form.password)
        .await
    {
        let (_, why) = said(e);
        return overview(
            &state,
            &session,
            &v,
            &format!("Not deactivated: {why}"),
            &ActionQuery::default(),
        )
        .await;
    }
    if let Err(e) = accounts
        .deactivate_and_unbind(&session.user_id, false, None)
        .await
    {
        let (status, why) = said(e.into());
        let mut ctx = context(&state, "title.not_deactivated", &v);
        ctx.message = why;
        return render(&state, status, "done", &ctx, None, &v.cookies);
    }
    let mut ctx = context(&state, "title.deactivated", &v);
    ctx.message = "msg.deactivated".into();
    render(&state, StatusCode::OK, "done", &ctx, None, &v.cookies)
}

/// # `POST /_vouch/account/sign_out_browser`
pub async fn sign_out_browser_route(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<PageForm>,
) -> Response {
    let v = visit(&state, &headers);
    if browser::csrf_ok(&state, &headers, &form.csrf)
        && let Some(token) = browser::cookie(&state, &headers, browser::SESSION_COOKIE)
        && let Err(e) = state
            .db
            .end_browser_session(&vouch_core::secrets::token_hash(token))
            .await
    {
        return ApiError::from(e).into_response();
    }
    sign_in(&state, StatusCode::OK, "", &v, &ActionQuery::default())
}
