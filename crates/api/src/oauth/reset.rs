//! Resetting a forgotten password on the pages: the user names an email address or a phone
//! number, a code goes there (the mail also carries the link) through the validation
//! sessions the requestToken endpoints make, and the code with a new password sets it,
//! through the accounts service (every session of the account ends: its browser sessions
//! with the old password, its devices with `Logout::Everyone`). The page says the same
//! whether or not an account has the address, and a reset belongs to the browser that
//! began it (a `vouch_reset` cookie, stored hashed).

use axum::Form;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use vouch_core::secrets::{new_opaque_id, new_token, token_hash};
use vouch_core::validation::Purpose;
use vouch_mail::OAuthPageContext;
use vouch_storage::PageCode;

use super::browser::{self, render, said};
use crate::accounts::Logout;
use crate::client_ip::ClientIp;
use crate::error::ApiError;
use crate::state::AppState;
use crate::threepid::{Raw, Submitted, TokenRequest, own_session, request_token, submit_secret};

/// The page's path.
pub const PATH: &str = "_vouch/reset";
/// The cookie that ties a reset to its browser.
const RESET_COOKIE: &str = "vouch_reset";
/// How long a reset may take.
const RESET_LIFETIME: std::time::Duration = std::time::Duration::from_secs(3600);

/// Where to go back to after the reset: a page of this server only.
#[derive(Debug, Default, Deserialize)]
pub struct BackQuery {
    #[serde(default)]
    back: String,
}

/// The reset page's address, coming back to `back` (a page of this server) after.
pub fn link(state: &AppState, back: &str) -> String {
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("back", back)
        .finish();
    format!("{}{PATH}?{q}", state.config.public_baseurl())
}

fn back_url(state: &AppState, back: &str) -> String {
    let base = state.config.public_baseurl();
    if back.starts_with(&base) && back.len() <= 2048 {
        back.to_owned()
    } else {
        String::new()
    }
}

fn page(
    state: &AppState,
    headers: &HeaderMap,
    name: &str,
    title: &str,
    back: &str,
) -> (OAuthPageContext, Vec<HeaderValue>) {
    let (csrf, cookie) = browser::csrf(state, headers);
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("back", back)
        .finish();
    let ctx = OAuthPageContext {
        app_name: state.config.email.app_name.clone(),
        server_name: state.config.server_name.clone(),
        lang: browser::language(state, &[], headers),
        title: title.into(),
        csrf,
        action: format!("{}{PATH}{name}?{q}", state.config.public_baseurl()),
        switch_url: back_url(state, back),
        ..OAuthPageContext::default()
    };
    (ctx, cookie.into_iter().collect())
}

/// # `GET /_vouch/reset`
pub async fn reset_page_route(
    State(state): State<AppState>,
    Query(query): Query<BackQuery>,
    headers: HeaderMap,
) -> Response {
    let (ctx, cookies) = page(&state, &headers, "", "title.reset", &query.back);
    render(&state, StatusCode::OK, "reset", &ctx, None, &cookies)
}

/// The address form.
#[derive(Debug, Deserialize)]
pub struct AddressForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    address: String,
}

/// # `POST /_vouch/reset`
pub async fn reset_route(
    State(state): State<AppState>,
    Query(query): Query<BackQuery>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<AddressForm>,
) -> Response {
    let (mut ctx, mut cookies) = page(&state, &headers, "", "title.reset", &query.back);
    if !browser::csrf_ok(&state, &headers, &form.csrf) {
        ctx.error = "msg.form_expired".into();
        return render(&state, StatusCode::FORBIDDEN, "reset", &ctx, None, &cookies);
    }
    let typed = form.address.trim();
    let client_secret = new_opaque_id(state.secrets.as_ref());
    let issued = request_token(
        &state,
        TokenRequest {
            purpose: Purpose::PasswordReset,
            client_secret: &client_secret,
            address: Raw::typed(typed),
            send_attempt: 1,
            next_link: None,
            json: None,
            ip,
            from_pages: true,
            lang: ctx.lang.clone(),
        },
    )
    .await;
    let sid = match issued {
        Ok(issued) => Some(issued.sid.to_string()),
        // No account has the address: the page goes on alike, with no session behind it.
        Err(e) if e.errcode() == "M_THREEPID_NOT_FOUND" => None,
        Err(e) => {
            let (status, why) = said(e);
            ctx.error = why;
            return render(&state, status, "reset", &ctx, None, &cookies);
        }
    };
    let token = new_token(state.secrets.as_ref(), "vrs");
    let reset = PageCode {
        sid,
        client_secret,
        address: typed.chars().take(100).collect(),
        user_id: None,
    };
    let expires = state
        .now()
        .saturating_add(vouch_core::clock::duration_ms(RESET_LIFETIME));
    if let Err(e) = state
        .db
        .create_page_code(&token_hash(&token), &reset, expires)
        .await
    {
        return ApiError::from(e).into_response();
    }
    cookies.push(browser::page_cookie(
        &state,
        RESET_COOKIE,
        &token,
        RESET_LIFETIME,
    ));
    verify_page(
        &state,
        &headers,
        &query.back,
        &reset.address,
        StatusCode::OK,
        "",
        &cookies,
    )
}

fn verify_page(
    state: &AppState,
    headers: &HeaderMap,
    back: &str,
    address: &str,
    status: StatusCode,
    error: &str,
    cookies: &[HeaderValue],
) -> Response {
    let (mut ctx, mut more) = page(state, headers, "/verify", "title.reset", back);
    ctx.email = address.to_owned();
    ctx.error = error.into();
    more.extend_from_slice(cookies);
    render(state, status, "reset_verify", &ctx, None, &more)
}

/// The code form.
#[derive(Debug, Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    password: String,
}

/// # `POST /_vouch/reset/verify`
pub async fn reset_verify_route(
    State(state): State<AppState>,
    Query(query): Query<BackQuery>,
    headers: HeaderMap,
    Form(form): Form<CodeForm>,
) -> Response {
    let reset = match browser::cookie(&state, &headers, RESET_COOKIE) {
        Some(token) => match state.db.page_code(&token_hash(token), state.now()).await {
            Ok(reset) => reset.filter(|r| r.user_id.is_none()),
            Err(e) => return ApiError::from(e).into_response(),
        },
        None => None,
    };
    let Some(reset) = reset else {
        let (mut ctx, cookies) = page(&state, &headers, "", "title.reset", &query.back);
        ctx.error = "msg.reset_again".into();
        return render(
            &state,
            StatusCode::BAD_REQUEST,
            "reset",
            &ctx,
            None,
            &cookies,
        );
    };
    let again = |status: StatusCode, error: &str| {
        verify_page(
            &state,
            &headers,
            &query.back,
            &reset.address,
            status,
            error,
            &[],
        )
    };
    if !browser::csrf_ok(&state, &headers, &form.csrf) {
        return again(StatusCode::FORBIDDEN, "msg.form_expired");
    }
    // The new password is held to the policy before the code is spent.
    if let Err(e) = state.accounts().check_password(&form.password) {
        let (status, why) = said(e.into());
        return again(status, &why);
    }
    let Some(sid) = reset.sid.as_deref() else {
        return again(StatusCode::BAD_REQUEST, "msg.code_wrong");
    };
    match submit_secret(&state, sid, &reset.client_secret, form.code.trim()).await {
        Ok(Submitted::Validated { .. } | Submitted::AlreadyValidated) => {}
        Ok(Submitted::Wrong) => return again(StatusCode::BAD_REQUEST, "msg.code_wrong"),
        Ok(Submitted::Expired | Submitted::Unknown) => {
            return again(StatusCode::BAD_REQUEST, "msg.reset_again");
        }
        Err(e) => return ApiError::from(e).into_response(),
    }
    let session = match own_session(&state, sid, &reset.client_secret).await {
        Ok(Some(s)) if s.session.purpose == Purpose::PasswordReset => s,
        Ok(_) => return again(StatusCode::BAD_REQUEST, "msg.reset_again"),
        Err(e) => return e.into_response(),
    };
    let owner = match state
        .db
        .threepid_owner(&session.session.medium, &session.session.address)
        .await
    {
        Ok(Some(owner)) => owner,
        Ok(None) => return again(StatusCode::BAD_REQUEST, "msg.reset_again"),
        Err(e) => return ApiError::from(e).into_response(),
    };
    // Single use: of two resets with one code, one sets the password.
    match state.db.consume_validation(sid, state.now()).await {
        Ok(true) => {}
        Ok(false) => return again(StatusCode::BAD_REQUEST, "msg.reset_again"),
        Err(e) => return ApiError::from(e).into_response(),
    }
    if let Err(e) = state
        .accounts()
        .set_password(&owner, form.password.clone(), Logout::Everyone)
        .await
    {
        let (status, why) = said(e.into());
        return again(status, &why);
    }
    tracing::info!(user_id = owner, "password reset on the pages");
    let (mut ctx, cookies) = page(&state, &headers, "", "title.reset_done", &query.back);
    ctx.message = "msg.reset_done".into();
    render(&state, StatusCode::OK, "done", &ctx, None, &cookies)
}
