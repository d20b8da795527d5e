//! The browser side of the sign-in pages: the session cookie (a random token, stored
//! hashed, that lasts `[oauth] browser_session_lifetime` and ends when the password
//! changes), the CSRF token every form carries (double-submitted: a cookie and a hidden
//! field that must match), and the headers every page gets.

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Serialize;
use vouch_core::secrets::{constant_time_eq, new_token, token_hash};
use vouch_storage::BrowserSession;

use crate::accounts::LoginId;
use crate::error::ApiResult;
use crate::state::AppState;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "vouch_session";
/// The CSRF cookie's name.
pub const CSRF_COOKIE: &str = "vouch_csrf";
/// The cookie that ties a sign-up waiting for its codes to the browser that began it.
pub const SIGNUP_COOKIE: &str = "vouch_signup";
/// The cookie that ties a device authorization request's pages to the browser that typed
/// its user code.
pub const DEVICE_COOKIE: &str = "vouch_device";

/// A cookie of the pages (HTTP only, `SameSite=Lax`, `Secure` on https) for `max_age`.
pub fn page_cookie(
    state: &AppState,
    name: &str,
    value: &str,
    max_age: std::time::Duration,
) -> HeaderValue {
    set_cookie(state, name, value, "Lax", Some(max_age.as_secs()))
}

/// A cookie's name as set and read: `__Host-` before it when the public URL is https, so
/// that no other host of the site (a sibling or parent domain) can set it in this browser
/// (browsers keep such cookies to the host that set them, `Secure`, with `Path=/`).
fn cookie_name<'n>(state: &AppState, name: &'n str) -> std::borrow::Cow<'n, str> {
    if secure(state) {
        std::borrow::Cow::Owned(format!("__Host-{name}"))
    } else {
        std::borrow::Cow::Borrowed(name)
    }
}

fn secure(state: &AppState) -> bool {
    state.config.public_baseurl().starts_with("https:")
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie<'h>(state: &AppState, headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let name = cookie_name(state, name);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name.as_ref())
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// The signed-in user of this browser, if any.
pub async fn session(state: &AppState, headers: &HeaderMap) -> ApiResult<Option<BrowserSession>> {
    match cookie(state, headers, SESSION_COOKIE) {
        Some(token) => Ok(state
            .db
            .browser_session(&token_hash(token), state.now())
            .await?),
        None => Ok(None),
    }
}

/// Opens a browser session for `session` and returns the `Set-Cookie` value.
pub async fn open_session(state: &AppState, session: &BrowserSession) -> ApiResult<HeaderValue> {
    let token = new_token(state.secrets.as_ref(), "vbs");
    let lifetime = state.config.oauth.browser_session_lifetime;
    let now = state.now();
    state
        .db
        .create_browser_session(
            &token_hash(&token),
            session,
            now,
            now.saturating_add(vouch_core::clock::duration_ms(lifetime)),
        )
        .await?;
    Ok(set_cookie(
        state,
        SESSION_COOKIE,
        &token,
        "Lax",
        Some(lifetime.as_secs()),
    ))
}

/// A `Set-Cookie` value: HTTP only, `Secure` when the public URL is https.
fn set_cookie(
    state: &AppState,
    name: &str,
    value: &str,
    same_site: &str,
    max_age: Option<u64>,
) -> HeaderValue {
    let secure = if secure(state) { "; Secure" } else { "" };
    let name = cookie_name(state, name);
    let age = max_age
        .map(|s| format!("; Max-Age={s}"))
        .unwrap_or_default();
    // Only alphanumerics and `_` reach here (tokens and names of ours).
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite={same_site}{secure}{age}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("vouch_invalid=; Path=/"))
}

/// The CSRF token of this browser, and the cookie to set if it had none.
pub fn csrf(state: &AppState, headers: &HeaderMap) -> (String, Option<HeaderValue>) {
    match cookie(state, headers, CSRF_COOKIE) {
        Some(token)
            if token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
        {
            (token.to_owned(), None)
        }
        _ => {
            let token = new_token(state.secrets.as_ref(), "vcs");
            let cookie = set_cookie(state, CSRF_COOKIE, &token, "Strict", None);
            (token, Some(cookie))
        }
    }
}

pub use crate::language::language;

/// [`csrf`], with the cookie to set (if any) as the list a page's answer carries.
pub fn csrf_cookies(state: &AppState, headers: &HeaderMap) -> (String, Vec<HeaderValue>) {
    let (csrf, cookie) = csrf(state, headers);
    (csrf, cookie.into_iter().collect())
}

/// Whether a form's `csrf` field matches this browser's CSRF cookie.
pub fn csrf_ok(state: &AppState, headers: &HeaderMap, field: &str) -> bool {
    cookie(state, headers, CSRF_COOKIE)
        .is_some_and(|c| !field.is_empty() && constant_time_eq(c, field))
}

/// Renders `page/oauth/<name>.html` with `ctx`, with the headers every page carries.
/// `form_target`: an origin (or scheme) the page's forms may end up at besides this
/// server (the consent form is answered with a redirect to the client, and browsers hold
/// redirects after a form to `form-action` too).
pub fn render<C: Serialize>(
    state: &AppState,
    status: StatusCode,
    name: &str,
    ctx: &C,
    form_target: Option<&str>,
    cookies: &[HeaderValue],
) -> Response {
    let html = match state
        .composer
        .templates()
        .render(&format!("page/oauth/{name}.html"), ctx)
    {
        Ok(html) => html,
        Err(e) => return crate::error::ApiError::internal(e.to_string()).into_response(),
    };
    let csp = format!(
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' https:; form-action 'self'{}; frame-ancestors 'none'; base-uri 'none'",
        form_target.map(|t| format!(" {t}")).unwrap_or_default()
    );
    let mut res = crate::pages::html_response(status, html, "");
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    for c in cookies {
        h.append(header::SET_COOKIE, c.clone());
    }
    res
}

/// The CSP source that lets a form's redirect reach `redirect_uri`: its origin for http(s)
/// (any port on loopback, as the client may pick one), its scheme for a private-use one.
pub fn form_target(redirect_uri: &str) -> Option<String> {
    let url = url::Url::parse(redirect_uri).ok()?;
    match url.scheme() {
        "http" if matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]")) => {
            Some(format!("http://{}:*", url.host_str()?))
        }
        "https" | "http" => Some(url.origin().ascii_serialization()),
        scheme => Some(format!("{scheme}:")),
    }
}

/// What a page says for an error of the rest of Vouch, and its status: the message of a
/// Matrix error without its errcode; for a failure inside, words that give nothing away
/// (the error itself is logged by the Matrix answer it is turned into).
pub fn said(e: crate::error::ApiError) -> (StatusCode, String) {
    use crate::error::ApiError;
    let message = match &e {
        ApiError::Matrix { message, .. } | ApiError::Custom { message, .. } => message.clone(),
        ApiError::Passthrough { body, .. } => body["error"].as_str().unwrap_or_default().to_owned(),
        _ => String::new(),
    };
    let status = e.into_response().status();
    if status.is_server_error() || message.is_empty() {
        return (
            status,
            "Something went wrong on our side; please try again shortly.".into(),
        );
    }
    (status, message)
}

/// What the sign-in form's user name field names: an email address, a phone number in
/// international form, or a user name or ID.
fn login_id(username: &str) -> LoginId {
    let name = username.trim();
    if name.contains('@') && !name.starts_with('@') {
        LoginId::Threepid("email", name.to_owned())
    } else if name.starts_with('+')
        && name[1..]
            .chars()
            .all(|c| c.is_ascii_digit() || c == ' ' || c == '-')
    {
        LoginId::Threepid(
            "msisdn",
            name.chars().filter(char::is_ascii_digit).collect(),
        )
    } else {
        LoginId::User(name.to_owned())
    }
}

/// Signs this browser in with the sign-in form's fields, by the login's rules (the form's
/// CSRF token, the per-address limit, then the password check with its budgets and one
/// answer for every wrong combination): the session and its cookie, or what the form
/// should say and with which status.
pub async fn sign_in_with_password(
    state: &AppState,
    ip: std::net::IpAddr,
    headers: &HeaderMap,
    csrf_field: &str,
    username: &str,
    password: &str,
) -> Result<(BrowserSession, HeaderValue), (StatusCode, String)> {
    if !csrf_ok(state, headers, csrf_field) {
        return Err((StatusCode::FORBIDDEN, "msg.form_expired".into()));
    }
    if state.limits.login_per_ip.check_ip(ip).is_err() {
        return Err((StatusCode::TOO_MANY_REQUESTS, "msg.too_many".into()));
    }
    let checked = state
        .accounts()
        .check_login(login_id(username), password)
        .await
        .map_err(said)?;
    let session = BrowserSession {
        user_id: checked.user_id,
        password_hash: checked.hash,
        created_at: state.now(),
    };
    let cookie = open_session(state, &session).await.map_err(said)?;
    Ok((session, cookie))
}
