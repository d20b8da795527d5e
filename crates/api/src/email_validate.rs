//! The page behind the link in a verification mail (`/_vouch/email/validate`).
//!
//! GET only renders a confirmation page whose button POSTs: mail scanners that prefetch
//! links cannot spend the token. POST checks it and shows success (or redirects to the
//! client's `next_link` with `sid` appended), a friendly page for a second click, or one
//! generic failure page for every other cause, so the page reveals nothing about sessions.

use axum::Form;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Deserialize;
use vouch_mail::PageContext;

use crate::state::{AppState, Services};
use crate::threepid::{EMAIL_LINK_PATH, Submitted, own_session, submit_secret};

/// The link's parameters.
#[derive(Debug, Deserialize)]
pub struct LinkParams {
    #[serde(default)]
    sid: String,
    #[serde(default)]
    client_secret: String,
    #[serde(default)]
    token: String,
}

fn render(
    state: &Services,
    status: StatusCode,
    page: &str,
    title: &str,
    mut ctx: PageContext,
) -> Response {
    ctx.app_name = state.config.email.app_name.clone();
    ctx.title = title.to_owned();
    let html = match state
        .composer
        .templates()
        .render(&format!("page/{page}.html"), &ctx)
    {
        Ok(html) => html,
        Err(e) => {
            tracing::error!(error = %e, "cannot render the {page} page");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    crate::pages::html_response(status, html, crate::pages::NO_SCRIPT_CSP)
}

fn failure(state: &Services) -> Response {
    render(
        state,
        StatusCode::BAD_REQUEST,
        "failure",
        "This link does not work",
        PageContext::default(),
    )
}

/// # `GET /_vouch/email/validate?sid=&client_secret=&token=`
pub async fn get_email_validate_route(
    State(state): State<AppState>,
    Query(p): Query<LinkParams>,
) -> Response {
    let Ok(Some(stored)) = own_session(&state, &p.sid, &p.client_secret).await else {
        return failure(&state);
    };
    if stored.session.validated_at.is_some() {
        return render(
            &state,
            StatusCode::OK,
            "already_validated",
            "Already confirmed",
            PageContext::default(),
        );
    }
    let ctx = PageContext {
        purpose: stored.session.purpose.as_str().to_owned(),
        address: stored.session.address.clone(),
        action: format!("/{EMAIL_LINK_PATH}"),
        sid: p.sid,
        client_secret: p.client_secret,
        token: p.token,
        ..PageContext::default()
    };
    render(
        &state,
        StatusCode::OK,
        "confirm",
        "Confirm your email address",
        ctx,
    )
}

/// # `POST /_vouch/email/validate`
pub async fn post_email_validate_route(
    State(state): State<AppState>,
    Form(p): Form<LinkParams>,
) -> Response {
    match validate(&state, &p).await {
        Ok(page) => page,
        Err(e) => {
            tracing::error!(error = ?e, "email validation failed inside the server");
            failure(&state)
        }
    }
}

async fn validate(
    state: &AppState,
    p: &LinkParams,
) -> Result<Response, vouch_storage::StorageError> {
    Ok(
        match submit_secret(state, &p.sid, &p.client_secret, &p.token).await? {
            Submitted::Validated {
                next_link: Some(mut url),
            } => {
                url.query_pairs_mut().append_pair("sid", &p.sid);
                let mut res = Redirect::to(url.as_str()).into_response();
                res.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                res.headers_mut().insert(
                    header::REFERRER_POLICY,
                    HeaderValue::from_static("no-referrer"),
                );
                res
            }
            Submitted::Validated { next_link: None } => render(
                state,
                StatusCode::OK,
                "success",
                "Email address confirmed",
                PageContext::default(),
            ),
            Submitted::AlreadyValidated => render(
                state,
                StatusCode::OK,
                "already_validated",
                "Already confirmed",
                PageContext::default(),
            ),
            Submitted::Wrong | Submitted::Expired | Submitted::Unknown => failure(state),
        },
    )
}
