use std::collections::HashMap;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use ruma::api::client::uiaa::get_uiaa_fallback_page;
use serde_json::{Value, json};
use vouch_core::uia::{DUMMY, REGISTRATION_TOKEN, TERMS};

use crate::client_ip::ClientIp;
use crate::error::{ApiError, ApiResult};
use crate::homeserver::account_page::CROSS_SIGNING_RESET;
use crate::homeserver::discovery::ACCOUNT_PATH;
use crate::pages::{escape, page};
use crate::ruma_axum::Ruma;
use crate::state::AppState;
use crate::uia::complete_stage_out_of_band;

/// The snippet the spec requires once a fallback stage is done.
const AUTH_DONE: &str = "if (window.onAuthDone) { window.onAuthDone(); } \
else if (window.opener && window.opener.postMessage) { window.opener.postMessage(\"authDone\", \"*\"); }";

const STAGES_WITH_FALLBACK: &[&str] = &[DUMMY, TERMS, REGISTRATION_TOKEN];

fn form(state: &AppState, stage: &str, session: &str, error: Option<&str>) -> Response {
    let error = error
        .map(|e| format!("<p role=\"alert\"><strong>{}</strong></p>", escape(e)))
        .unwrap_or_default();
    let (title, fields) = match stage {
        TERMS => {
            let items: String = state
                .config
                .registration
                .terms
                .iter()
                .map(|p| {
                    format!(
                        "<li><a href=\"{}\">{}</a> (version {})</li>",
                        escape(&p.url),
                        escape(&p.name),
                        escape(&p.version)
                    )
                })
                .collect();
            (
                "Terms and conditions",
                format!("<p>Please read and accept:</p><ul>{items}</ul>"),
            )
        }
        REGISTRATION_TOKEN => (
            "Registration token",
            "<label for=\"token\">Enter the registration token you were given</label>\
             <input id=\"token\" name=\"token\" autocomplete=\"off\" required>"
                .to_owned(),
        ),
        _ => ("Confirm", String::new()),
    };
    let button = if stage == TERMS {
        "I accept"
    } else {
        "Continue"
    };
    let body = format!(
        "{error}<form method=\"post\"><input type=\"hidden\" name=\"session\" value=\"{}\">{fields}\
         <button type=\"submit\">{button}</button></form>",
        escape(session)
    );
    page(StatusCode::OK, title, &body, None)
}

/// # `GET /_matrix/client/v3/auth/{authType}/fallback/web?session=`
///
/// A page that performs the stage; its form posts back to the same URL.
pub async fn get_uiaa_fallback_page_route(
    State(state): State<AppState>,
    body: Ruma<get_uiaa_fallback_page::v3::Request>,
) -> ApiResult<Response> {
    let stage = body.auth_type.to_string();
    // In front of a homeserver, its cross-signing reset stage is confirmed on Vouch's
    // account page.
    if state.homeserver.is_some() && (stage == "m.oauth" || stage == CROSS_SIGNING_RESET) {
        let to = format!(
            "{}{ACCOUNT_PATH}?action={CROSS_SIGNING_RESET}",
            state.config.public_baseurl()
        );
        return Ok(axum::response::Redirect::to(&to).into_response());
    }
    if !STAGES_WITH_FALLBACK.contains(&stage.as_str()) {
        return Err(ApiError::unrecognized());
    }
    Ok(form(&state, &stage, &body.session, None))
}

/// # `POST /_matrix/client/v3/auth/{authType}/fallback/web`
///
/// Completes the stage in the session, then runs the spec's `onAuthDone` snippet; the
/// client then retries its request with just the session.
pub async fn post_uiaa_fallback_page_route(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(auth_type): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    Form(fields): Form<HashMap<String, String>>,
) -> ApiResult<Response> {
    if !STAGES_WITH_FALLBACK.contains(&auth_type.as_str()) {
        return Err(ApiError::unrecognized());
    }
    let Some(session) = fields.get("session").or_else(|| query.get("session")) else {
        return Err(ApiError::missing_param("session is required"));
    };
    let mut auth = serde_json::Map::new();
    if let Some(token) = fields.get("token") {
        auth.insert("token".into(), Value::String(token.clone()));
    }
    // A registration token tried here is limited like one tried through `/register` or
    // the validity endpoint.
    if auth_type == "m.login.registration_token" {
        state.limits.registration_per_ip.check_ip(ip)?;
    }
    match complete_stage_out_of_band(&state, session, &auth_type, &auth, ip).await? {
        Ok(()) => Ok(page(
            StatusCode::OK,
            "Done",
            "<p>Thank you. You may now close this window and return to your application.</p>",
            Some(AUTH_DONE),
        )),
        Err(err) => {
            let message = match &err {
                ApiError::Matrix { message, .. } | ApiError::Custom { message, .. } => {
                    message.clone()
                }
                _ => json!("That did not work; please try again.").to_string(),
            };
            Ok(form(&state, &auth_type, session, Some(&message)))
        }
    }
}
