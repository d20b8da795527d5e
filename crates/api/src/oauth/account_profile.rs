//! The account page's profile forms: the display name, and the password (the current one
//! first, the new one held to the policy). Both go through the accounts service like
//! `PUT /profile/{userId}/displayname` and `/account/password`, the homeserver told alike,
//! and obey the same `[account]` switches.

use axum::Form;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use serde::Deserialize;
use vouch_storage::BrowserSession;

use super::account::{ActionQuery, acting, overview};
use super::browser::{self, said};
use crate::accounts::{LoginId, Logout};
use crate::state::AppState;

/// The display-name form.
#[derive(Debug, Deserialize)]
pub struct NameForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    displayname: String,
}

/// # `POST /_vouch/account/profile`
///
/// Sets the display name (an empty one clears it).
pub async fn profile_route(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<NameForm>,
) -> Response {
    let (session, v) = match acting(&state, &headers, &form.csrf).await {
        Ok(x) => x,
        Err(res) => return res,
    };
    let notice = if !state.config.account.displayname_change {
        "msg.not_here".to_owned()
    } else {
        let name = form.displayname.trim();
        let name = (!name.is_empty()).then_some(name);
        match state
            .accounts()
            .set_displayname(&session.user_id, name)
            .await
        {
            Ok(()) => "msg.name_saved".to_owned(),
            Err(e) => said(e.into()).1,
        }
    };
    overview(&state, &session, &v, &notice, &ActionQuery::default()).await
}

/// The password form.
#[derive(Debug, Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    csrf: String,
    /// The current password.
    #[serde(default)]
    password: String,
    #[serde(default)]
    new_password: String,
    /// Present (a checked box) to sign every session out, as `logout_devices` does.
    #[serde(default)]
    sign_out_all: Option<String>,
}

/// # `POST /_vouch/account/password`
///
/// Changes the password after the current one (the login's rules and budgets). The
/// browser's session, opened with the old password, is opened again with the new one;
/// with the box checked every signed-in session ends.
pub async fn password_route(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<PasswordForm>,
) -> Response {
    let (session, mut v) = match acting(&state, &headers, &form.csrf).await {
        Ok(x) => x,
        Err(res) => return res,
    };
    let changed = change_password(&state, &session.user_id, &form).await;
    let (session, notice) = match changed {
        Ok(renewed) => {
            match browser::open_session(&state, &renewed).await {
                Ok(cookie) => v.cookies.push(cookie),
                Err(e) => return e.into_response(),
            }
            let notice = if form.sign_out_all.is_some() {
                "msg.password_changed_all".to_owned()
            } else {
                "msg.password_changed".to_owned()
            };
            (renewed, notice)
        }
        Err(why) => (session, why),
    };
    overview(&state, &session, &v, &notice, &ActionQuery::default()).await
}

/// Changes `user_id`'s password as the form asks: the browser session to open with the
/// new one, or what the page should say.
async fn change_password(
    state: &AppState,
    user_id: &str,
    form: &PasswordForm,
) -> Result<BrowserSession, String> {
    if !state.config.account.password_change {
        return Err("msg.not_here".into());
    }
    let accounts = state.accounts();
    // The new one is held to the policy before the current one is checked, so a weak
    // password costs no guess from the login's budget.
    accounts
        .check_password(&form.new_password)
        .map_err(|e| said(e.into()).1)?;
    accounts
        .check_login(LoginId::User(user_id.to_owned()), &form.password)
        .await
        .map_err(|e| said(e).1)?;
    let logout = if form.sign_out_all.is_some() {
        Logout::Everyone
    } else {
        Logout::Nobody
    };
    accounts
        .set_password(user_id, form.new_password.clone(), logout)
        .await
        .map_err(|e| said(e.into()).1)?;
    let user = accounts
        .existing(user_id)
        .await
        .map_err(|e| said(e.into()).1)?;
    Ok(BrowserSession {
        user_id: user_id.to_owned(),
        password_hash: user.password_hash.unwrap_or_default(),
        created_at: state.now(),
    })
}

/// The language form.
#[derive(Debug, Deserialize)]
pub struct LanguageForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    language: String,
}

/// # `POST /_vouch/account/language`
///
/// Chooses the language of the account's pages and mails.
pub async fn language_route(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LanguageForm>,
) -> Response {
    let (session, mut v) = match acting(&state, &headers, &form.csrf).await {
        Ok(x) => x,
        Err(res) => return res,
    };
    let notice = match state
        .accounts()
        .set_language(&session.user_id, Some(form.language.trim()))
        .await
    {
        Ok(()) => {
            form.language.trim().clone_into(&mut v.lang);
            "msg.language_saved".to_owned()
        }
        Err(e) => said(e.into()).1,
    };
    overview(&state, &session, &v, &notice, &ActionQuery::default()).await
}
