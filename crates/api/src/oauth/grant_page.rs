//! The pages of one authorization request: sign in (unless this browser is signed in
//! already), then consent; the answer goes to the client's redirect URI. Every form
//! carries the CSRF token; a request that expired, was answered or never existed gets one
//! page that says so (and nothing about why).

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use vouch_core::oauth::{AuthorizationRequest, ClientMetadata, Prompt, redirect_with};
use vouch_core::secrets::{new_token, token_hash};
use vouch_mail::OAuthPageContext;
use vouch_storage::{BrowserSession, Grant};

use super::authorize::{error_page, load_client};
use super::browser::{self, render};
use super::paths;
use crate::client_ip::ClientIp;
use crate::error::ApiError;
use crate::state::AppState;

/// What the page says when a request cannot go on.
pub(super) const GONE: &str = "msg.gone";

/// An open request with its client.
pub(super) struct Open {
    pub(super) grant: Grant,
    pub(super) request: AuthorizationRequest,
    pub(super) client: ClientMetadata,
    /// The language of the pages (the app's `ui_locales`, else the browser's).
    pub(super) lang: String,
}

async fn open(
    state: &AppState,
    grant_id: &str,
    headers: &HeaderMap,
) -> Result<Option<Open>, ApiError> {
    let Some(grant) = state.db.open_grant(grant_id, state.now()).await? else {
        return Ok(None);
    };
    let request: AuthorizationRequest = serde_json::from_str(&grant.request)
        .map_err(|e| ApiError::internal(format!("stored grant is damaged: {e}")))?;
    let Some(client) = load_client(state, &grant.client_id).await? else {
        return Ok(None);
    };
    let lang = browser::language(state, &request.ui_locales, headers);
    Ok(Some(Open {
        grant,
        request,
        client,
        lang,
    }))
}

/// The open request a page or form names, or the answer instead: a request that expired,
/// was answered or never was (one page for all), or a device request's page reached
/// without its code.
pub(super) async fn open_or_answer(
    state: &AppState,
    grant_id: &str,
    headers: &HeaderMap,
) -> Result<Open, Response> {
    let open = match open(state, grant_id, headers).await {
        Ok(Some(open)) => open,
        Ok(None) => return Err(error_page(state, StatusCode::NOT_FOUND, GONE)),
        Err(e) => return Err(e.into_response()),
    };
    match super::device::unbound(state, &open, headers) {
        Some(elsewhere) => Err(elsewhere),
        None => Ok(open),
    }
}

/// The page's query.
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    /// `sign_in` to sign in as someone else.
    #[serde(default)]
    view: Option<String>,
}

pub(super) fn base_context(
    state: &AppState,
    open: &Open,
    title: &str,
    csrf: &str,
) -> OAuthPageContext {
    let languages: Vec<&str> = open.request.ui_locales.iter().map(String::as_str).collect();
    let host = |uri: &str| {
        url::Url::parse(uri)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_else(|| uri.split(':').next().unwrap_or_default().to_owned() + ":")
    };
    let base = state.config.public_baseurl();
    let page = format!("{base}{}/{}", paths::GRANT, open.grant.grant_id);
    OAuthPageContext {
        app_name: state.config.email.app_name.clone(),
        server_name: state.config.server_name.clone(),
        lang: open.lang.clone(),
        title: title.into(),
        csrf: csrf.into(),
        client_name: open.client.display_name(&languages),
        // A device's app has no redirect URI to prove its host by: the page says so.
        client_host: match open.request.answer {
            vouch_core::oauth::Answer::Redirect(_) => host(&open.client.client_uri),
            vouch_core::oauth::Answer::Device => {
                format!("says it is {}, not verified", host(&open.client.client_uri))
            }
        },
        redirect_host: open
            .request
            .redirect()
            .map_or_else(|| "your device".to_owned(), |r| host(&r.redirect_uri)),
        user_code: open
            .grant
            .user_code
            .as_deref()
            .map(vouch_core::oauth::device::display_user_code)
            .unwrap_or_default(),
        tos_uri: open.client.tos_uri.clone().unwrap_or_default(),
        policy_uri: open.client.policy_uri.clone().unwrap_or_default(),
        device_id: open.request.scope.device_id.clone(),
        identity_only: open.request.scope.identity_only(),
        shares_profile: open.request.scope.profile && state.config.oauth.openid_connect,
        shares_email: open.request.scope.email && state.config.oauth.openid_connect,
        shares_phone: open.request.scope.phone && state.config.oauth.openid_connect,
        switch_url: format!("{page}?view=sign_in"),
        ..OAuthPageContext::default()
    }
}

pub(super) fn sign_in_page(
    state: &AppState,
    open: &Open,
    csrf: &str,
    status: StatusCode,
    error: &str,
    username: &str,
    cookies: &[HeaderValue],
) -> Response {
    let base = state.config.public_baseurl();
    let mut ctx = base_context(state, open, "title.sign_in", csrf);
    ctx.action = format!("{base}{}/{}/sign_in", paths::GRANT, open.grant.grant_id);
    ctx.error = error.into();
    if state.config.registration.enabled {
        ctx.sign_up_url = format!(
            "{base}{}/{}?view=sign_up",
            paths::GRANT,
            open.grant.grant_id
        );
    }
    ctx.reset_url = super::reset::link(
        state,
        &format!("{base}{}/{}", paths::GRANT, open.grant.grant_id),
    );
    ctx.username = match (username, &open.request.login_hint) {
        ("", Some(hint)) => hint.strip_prefix("mxid:").unwrap_or(hint).to_owned(),
        (name, _) => name.to_owned(),
    };
    render(state, status, "sign_in", &ctx, None, cookies)
}

pub(super) async fn consent_page(
    state: &AppState,
    open: &Open,
    csrf: &str,
    session: &BrowserSession,
    cookies: &[HeaderValue],
) -> Response {
    let base = state.config.public_baseurl();
    let mut ctx = base_context(state, open, "title.consent", csrf);
    ctx.action = format!("{base}{}/{}/consent", paths::GRANT, open.grant.grant_id);
    ctx.user_id = session.user_id.clone();
    // What the user must know before allowing: the admin API, and a session of theirs that
    // the new one replaces.
    let user = match state.db.user(&session.user_id).await {
        Ok(user) => user,
        Err(e) => return ApiError::from(e).into_response(),
    };
    ctx.admin = open.request.scope.admin && user.is_some_and(|u| u.is_admin);
    match state
        .db
        .device(&session.user_id, &open.request.scope.device_id)
        .await
    {
        Ok(Some(d)) => {
            ctx.replaces = d.display_name.unwrap_or_else(|| d.device_id.clone());
        }
        Ok(None) => {}
        Err(e) => return ApiError::from(e).into_response(),
    }
    // A first-party app is not asked about, unless there is something to warn of.
    if open.request.redirect().is_some()
        && !open.request.consent
        && !ctx.admin
        && ctx.replaces.is_empty()
        && open
            .client
            .is_first_party(&state.config.oauth.first_party_client_hosts)
    {
        let mut res = answer(state, open, session, true).await;
        for cookie in cookies {
            res.headers_mut()
                .append(http::header::SET_COOKIE, cookie.clone());
        }
        return res;
    }
    let target = open
        .request
        .redirect()
        .and_then(|r| browser::form_target(&r.redirect_uri));
    render(
        state,
        StatusCode::OK,
        "consent",
        &ctx,
        target.as_deref(),
        cookies,
    )
}

/// # `GET /_vouch/oauth/grant/{grant_id}`
pub async fn grant_page_route(
    State(state): State<AppState>,
    Path(grant_id): Path<String>,
    Query(query): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    let open = match open_or_answer(&state, &grant_id, &headers).await {
        Ok(open) => open,
        Err(answer) => return answer,
    };
    let (csrf, cookies) = browser::csrf_cookies(&state, &headers);
    let session = match browser::session(&state, &headers).await {
        Ok(session) => session,
        Err(e) => return e.into_response(),
    };
    let view = query.view.as_deref();
    if open.grant.signup.is_some() && view != Some("sign_in") && view != Some("sign_up") {
        return super::sign_up::continue_page(&state, &open, &headers, &csrf, &cookies);
    }
    let wants_sign_up =
        view == Some("sign_up") || (view.is_none() && open.request.prompt == Prompt::Create);
    if wants_sign_up && state.config.registration.enabled {
        return super::sign_up::sign_up_page(
            &state,
            &open,
            &csrf,
            StatusCode::OK,
            "",
            &super::sign_up::SignUpForm::default(),
            &cookies,
        );
    }
    let wants_sign_in = view == Some("sign_in") || open.request.prompt == Prompt::Login;
    match session {
        Some(session) if !wants_sign_in => {
            consent_page(&state, &open, &csrf, &session, &cookies).await
        }
        _ => sign_in_page(&state, &open, &csrf, StatusCode::OK, "", "", &cookies),
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

/// # `POST /_vouch/oauth/grant/{grant_id}/sign_in`
///
/// Checked by the login's rules (the same budgets per address and per account, one answer
/// for every wrong combination); then this browser is signed in and the consent page
/// follows.
pub async fn sign_in_route(
    State(state): State<AppState>,
    Path(grant_id): Path<String>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    let open = match open_or_answer(&state, &grant_id, &headers).await {
        Ok(open) => open,
        Err(answer) => return answer,
    };
    let (csrf, csrf_cookie) = browser::csrf(&state, &headers);
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
        Err((status, why)) => {
            let cookies: Vec<HeaderValue> = csrf_cookie.into_iter().collect();
            return sign_in_page(&state, &open, &csrf, status, &why, &form.username, &cookies);
        }
    };
    tracing::info!(
        user_id = session.user_id,
        client_id = open.grant.client_id,
        "signed in to an authorization request"
    );
    consent_page(&state, &open, &csrf, &session, &[cookie]).await
}

/// The consent form.
#[derive(Debug, Deserialize)]
pub struct ConsentForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    decision: String,
}

/// # `POST /_vouch/oauth/grant/{grant_id}/consent`
///
/// Allow: a code (stored hashed, single-use, valid `[oauth] authorization_code_lifetime`)
/// goes to the client's redirect URI with its `state`. Cancel: `access_denied` goes there.
pub async fn consent_route(
    State(state): State<AppState>,
    Path(grant_id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<ConsentForm>,
) -> Response {
    let open = match open_or_answer(&state, &grant_id, &headers).await {
        Ok(open) => open,
        Err(answer) => return answer,
    };
    let (csrf, cookies) = browser::csrf_cookies(&state, &headers);
    let session = match browser::session(&state, &headers).await {
        Ok(session) => session,
        Err(e) => return e.into_response(),
    };
    // `prompt=login`: only a sign-in made for this request counts.
    let fresh = |s: &BrowserSession| {
        open.request.prompt != Prompt::Login || s.created_at >= open.grant.created_at
    };
    let Some(session) =
        session.filter(|s| browser::csrf_ok(&state, &headers, &form.csrf) && fresh(s))
    else {
        return sign_in_page(
            &state,
            &open,
            &csrf,
            StatusCode::FORBIDDEN,
            "msg.sign_in_again",
            "",
            &cookies,
        );
    };
    match form.decision.as_str() {
        "allow" => answer(&state, &open, &session, true).await,
        "deny" => answer(&state, &open, &session, false).await,
        _ => consent_page(&state, &open, &csrf, &session, &cookies).await,
    }
}

/// The user's answer (`allow`) to an open request, by `session`: a code (stored hashed,
/// single-use, valid `[oauth] authorization_code_lifetime`) or `access_denied` to the
/// client's redirect URI with its `state`, or the device's page.
async fn answer(state: &AppState, open: &Open, session: &BrowserSession, allow: bool) -> Response {
    let grant_id = &open.grant.grant_id;
    let redirect = open.request.redirect();
    let mut params: Vec<(&str, &str)> = Vec::new();
    let now = state.now();
    let code;
    if allow {
        code = new_token(state.secrets.as_ref(), "vac");
        // A device polls for its answer: no code, and the request's own expiry.
        let (code_hash, expires) = match redirect {
            Some(_) => (
                Some(token_hash(&code)),
                now.saturating_add(vouch_core::clock::duration_ms(
                    state.config.oauth.authorization_code_lifetime,
                )),
            ),
            None => (None, open.grant.expires_at),
        };
        match state
            .db
            .approve_grant(grant_id, session, code_hash.as_deref(), expires, now)
            .await
        {
            Ok(true) => {}
            Ok(false) => return error_page(state, StatusCode::NOT_FOUND, GONE),
            Err(e) => return ApiError::from(e).into_response(),
        }
        tracing::info!(
            user_id = session.user_id,
            client_id = open.grant.client_id,
            "authorization approved"
        );
        params.push(("code", &code));
    } else {
        match state.db.deny_grant(grant_id, now).await {
            Ok(true) => {}
            Ok(false) => return error_page(state, StatusCode::NOT_FOUND, GONE),
            Err(e) => return ApiError::from(e).into_response(),
        }
        params.push(("error", "access_denied"));
        params.push(("error_description", "The user declined"));
    }
    let Some(redirect) = redirect else {
        return super::device::done_page(state, open, allow);
    };
    if let Some(s) = &redirect.state {
        params.push(("state", s));
    }
    match redirect_with(&redirect.redirect_uri, redirect.response_mode, &params) {
        Some(to) => Redirect::to(&to).into_response(),
        None => error_page(state, StatusCode::BAD_REQUEST, GONE),
    }
}
