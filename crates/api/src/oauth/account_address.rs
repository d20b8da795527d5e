//! The account page's addresses and numbers: add one (the password again, as UIA asks
//! for `/account/3pid/add`; then a code sent there, through the validation sessions the
//! requestToken endpoints make, with a client secret that never leaves the server), or
//! remove one (unbound from the identity servers it was bound to). Both through the
//! accounts service, under `[account] threepid_changes`. An address being added belongs to
//! the browser that asked (a `vouch_add` cookie, stored hashed) and to its account.

use axum::Form;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use vouch_core::secrets::{new_opaque_id, new_token, token_hash};
use vouch_core::threepid::{Medium, ThirdPartyId};
use vouch_core::validation::Purpose;
use vouch_storage::{BrowserSession, PageCode};

use super::account::{ActionQuery, Visit, acting, context, in_account_language, overview};
use super::browser::{self, render, said};
use crate::accounts::{AccountError, LoginId};
use crate::error::ApiError;
use crate::state::AppState;
use crate::threepid::{Raw, Submitted, TokenRequest, own_session, request_token, submit_secret};

/// The cookie that ties an address being added to its browser.
const ADD_COOKIE: &str = "vouch_add";
/// How long adding an address may take.
const ADD_LIFETIME: std::time::Duration = std::time::Duration::from_secs(3600);

/// The form that asks for a code.
#[derive(Debug, Deserialize)]
pub struct AddForm {
    #[serde(default)]
    csrf: String,
    /// An email address, or a phone number in international form.
    #[serde(default)]
    address: String,
    /// The account's password, again.
    #[serde(default)]
    password: String,
}

/// # `POST /_vouch/account/address`
///
/// Sends a code to the address typed, after the password.
pub async fn add_route(
    State(state): State<AppState>,
    crate::client_ip::ClientIp(ip): crate::client_ip::ClientIp,
    headers: HeaderMap,
    Form(form): Form<AddForm>,
) -> Response {
    let (session, mut v) = match acting(&state, &headers, &form.csrf).await {
        Ok(x) => x,
        Err(res) => return res,
    };
    // The mail and the code page speak the account's language.
    if let Err(res) = in_account_language(&state, &session, &mut v).await {
        return res;
    }
    let sent = send_code(&state, &session, ip, &v.lang, &form).await;
    match sent {
        Ok((code, token)) => {
            v.cookies.push(browser::page_cookie(
                &state,
                ADD_COOKIE,
                &token,
                ADD_LIFETIME,
            ));
            verify_page(&state, &v, &code.address, StatusCode::OK, "")
        }
        Err(why) => overview(&state, &session, &v, &why, &ActionQuery::default()).await,
    }
}

/// Checks the password and sends the code: the code under way and its cookie's token, or
/// what the page should say.
async fn send_code(
    state: &AppState,
    session: &BrowserSession,
    ip: std::net::IpAddr,
    lang: &str,
    form: &AddForm,
) -> Result<(PageCode, String), String> {
    if !state.config.account.threepid_changes {
        return Err("msg.not_here".into());
    }
    state
        .accounts()
        .check_login(LoginId::User(session.user_id.clone()), &form.password)
        .await
        .map_err(|e| said(e).1)?;
    let typed = form.address.trim();
    let client_secret = new_opaque_id(state.secrets.as_ref());
    let issued = request_token(
        state,
        TokenRequest {
            purpose: Purpose::AddThreepid,
            client_secret: &client_secret,
            address: Raw::typed(typed),
            send_attempt: 1,
            next_link: None,
            json: None,
            ip,
            from_pages: true,
            lang: lang.to_owned(),
        },
    )
    .await
    .map_err(|e| said(e).1)?;
    let code = PageCode {
        sid: Some(issued.sid.to_string()),
        client_secret,
        address: typed.chars().take(100).collect(),
        user_id: Some(session.user_id.clone()),
    };
    let token = new_token(state.secrets.as_ref(), "vad");
    let expires = state
        .now()
        .saturating_add(vouch_core::clock::duration_ms(ADD_LIFETIME));
    state
        .db
        .create_page_code(&token_hash(&token), &code, expires)
        .await
        .map_err(|e| said(e.into()).1)?;
    Ok((code, token))
}

/// The page that asks for the code sent to `address`.
fn verify_page(
    state: &AppState,
    v: &Visit,
    address: &str,
    status: StatusCode,
    error: &str,
) -> Response {
    let mut ctx = context(state, "title.add_address", v);
    ctx.action = format!(
        "{}{}/address/verify",
        state.config.public_baseurl(),
        super::account::PATH
    );
    ctx.email = address.to_owned();
    ctx.error = error.into();
    render(state, status, "account_verify", &ctx, None, &v.cookies)
}

/// The code form.
#[derive(Debug, Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
}

/// # `POST /_vouch/account/address/verify`
///
/// Adds the address whose code this is to the signed-in account.
pub async fn verify_route(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<CodeForm>,
) -> Response {
    let (session, mut v) = match acting(&state, &headers, &form.csrf).await {
        Ok(x) => x,
        Err(res) => return res,
    };
    if let Err(res) = in_account_language(&state, &session, &mut v).await {
        return res;
    }
    let pending = match browser::cookie(&state, &headers, ADD_COOKIE) {
        Some(token) => match state.db.page_code(&token_hash(token), state.now()).await {
            Ok(code) => code,
            Err(e) => return ApiError::from(e).into_response(),
        },
        None => None,
    };
    // Only the account that asked may finish it.
    let Some(pending) = pending.filter(|p| p.user_id.as_deref() == Some(session.user_id.as_str()))
    else {
        return overview(
            &state,
            &session,
            &v,
            "msg.add_again",
            &ActionQuery::default(),
        )
        .await;
    };
    match add_by_code(&state, &session, &pending, form.code.trim()).await {
        Ok(()) => {
            overview(
                &state,
                &session,
                &v,
                "msg.address_added",
                &ActionQuery::default(),
            )
            .await
        }
        Err(Retry::Code(why)) => {
            verify_page(&state, &v, &pending.address, StatusCode::BAD_REQUEST, &why)
        }
        Err(Retry::Start(why)) => {
            overview(&state, &session, &v, &why, &ActionQuery::default()).await
        }
    }
}

/// What a failed code asks for: the code again, or starting again.
enum Retry {
    Code(String),
    Start(String),
}

async fn add_by_code(
    state: &AppState,
    session: &BrowserSession,
    pending: &PageCode,
    code: &str,
) -> Result<(), Retry> {
    let again = |why: &str| Retry::Start(why.to_owned());
    let Some(sid) = pending.sid.as_deref() else {
        return Err(again("msg.add_again"));
    };
    match submit_secret(state, sid, &pending.client_secret, code).await {
        Ok(Submitted::Validated { .. } | Submitted::AlreadyValidated) => {}
        Ok(Submitted::Wrong) => return Err(Retry::Code("msg.code_wrong".into())),
        Ok(Submitted::Expired | Submitted::Unknown) => return Err(again("msg.add_again")),
        Err(e) => return Err(again(&said(e.into()).1)),
    }
    let stored = match own_session(state, sid, &pending.client_secret).await {
        Ok(Some(s)) if s.session.purpose == Purpose::AddThreepid => s,
        Ok(_) => return Err(again("msg.add_again")),
        Err(e) => return Err(again(&said(e).1)),
    };
    let threepid = ThirdPartyId::parse(&stored.session.medium, &stored.session.address)
        .map_err(|_| again("msg.add_again"))?;
    let validated_at = stored.session.validated_at.unwrap_or_default();
    state
        .accounts()
        .add_validated_threepid(&session.user_id, &threepid, validated_at, sid)
        .await
        .map_err(|e| match e {
            AccountError::SessionSpent => again("msg.add_again"),
            e => again(&said(e.into()).1),
        })
}

/// The remove button's form.
#[derive(Debug, Deserialize)]
pub struct RemoveForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    medium: String,
    #[serde(default)]
    address: String,
}

/// # `POST /_vouch/account/address/remove`
///
/// Removes one of the account's addresses, like `/account/3pid/delete`.
pub async fn remove_route(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<RemoveForm>,
) -> Response {
    let (session, v) = match acting(&state, &headers, &form.csrf).await {
        Ok(x) => x,
        Err(res) => return res,
    };
    let notice = if !state.config.account.threepid_changes {
        "msg.not_here".to_owned()
    } else {
        match form.medium.parse::<Medium>() {
            Err(_) => "msg.malformed".to_owned(),
            Ok(medium) => match state
                .accounts()
                .remove_and_unbind_threepid(&session.user_id, medium, &form.address, None)
                .await
            {
                Ok((true, _)) => "msg.address_removed".to_owned(),
                Ok((false, _)) => "msg.address_not_yours".to_owned(),
                Err(e) => said(e.into()).1,
            },
        }
    };
    overview(&state, &session, &v, &notice, &ActionQuery::default()).await
}
