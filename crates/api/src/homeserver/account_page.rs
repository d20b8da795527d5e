//! The page behind the `account_management_uri` Synapse gives clients. Today it serves one
//! action: confirming a cross-signing reset (Synapse answers a key replacement with a UIA
//! stage that points here), after which Vouch lets Synapse accept the new keys for a while.

use axum::Form;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Deserialize;

use crate::accounts::LoginId;
use crate::client_ip::ClientIp;
use crate::pages::{escape, page};
use crate::state::AppState;

/// The action Synapse's cross-signing stage names.
pub const CROSS_SIGNING_RESET: &str = "org.matrix.cross_signing_reset";
/// Where the confirmation form posts.
pub const CROSS_SIGNING_RESET_PATH: &str = "/_vouch/account/cross_signing_reset";

/// The page's query.
#[derive(Debug, Deserialize)]
pub struct AccountQuery {
    /// What the user came to do.
    #[serde(default)]
    action: Option<String>,
}

/// # `GET /_vouch/account`
pub async fn account_page_route(Query(query): Query<AccountQuery>) -> Response {
    if query.action.as_deref() == Some(CROSS_SIGNING_RESET) {
        return cross_signing_page();
    }
    page(
        StatusCode::OK,
        "Your account",
        "<p>Manage your addresses, phone numbers, password and devices from your Matrix app.</p>",
        None,
    )
}

/// The confirmation form of a cross-signing reset.
pub fn cross_signing_page() -> Response {
    {
        page(
            StatusCode::OK,
            "Reset your encryption identity",
            &format!(
                "<p>Your app asked to replace your cross-signing keys. Anyone who does this can \
                 impersonate you to the people you talk to, so confirm it is you.</p>\
                 <form method=\"post\" action=\"{CROSS_SIGNING_RESET_PATH}\">\
                 <label>User name<input name=\"user\" autocomplete=\"username\" required></label>\
                 <label>Password<input name=\"password\" type=\"password\" \
                 autocomplete=\"current-password\" required></label>\
                 <button type=\"submit\">Allow the reset</button></form>"
            ),
            None,
        )
    }
}

/// The confirmation form.
#[derive(Debug, Deserialize)]
pub struct ResetForm {
    /// A localpart or user ID.
    #[serde(default)]
    user: String,
    /// The account's password.
    #[serde(default)]
    password: String,
}

/// # `POST /_vouch/account/cross_signing_reset`
///
/// The password is checked by the login's rules (the same budgets, the same answer for
/// every wrong combination); then the homeserver accepts new keys for this user for ten
/// minutes.
pub async fn cross_signing_reset_route(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Form(form): Form<ResetForm>,
) -> Response {
    let refused = |status: StatusCode, why: &str| {
        page(
            status,
            "Not allowed",
            &format!(
                "<p>{}</p><p><a href=\"/_vouch/account?action={CROSS_SIGNING_RESET}\">Try again</a></p>",
                escape(why)
            ),
            None,
        )
    };
    if let Err(e) = state.limits.login_per_ip.check_ip(ip) {
        return refused(StatusCode::TOO_MANY_REQUESTS, &e.to_string());
    }
    let accounts = state.accounts();
    let checked = match accounts
        .check_login(LoginId::User(form.user), &form.password)
        .await
    {
        Ok(checked) => checked,
        Err(e) => {
            let why = e.to_string();
            return refused(e.into_response().status(), &why);
        }
    };
    match accounts.allow_cross_signing_reset(&checked.user_id).await {
        Ok(()) => page(
            StatusCode::OK,
            "Reset allowed",
            "<p>Go back to your app and finish the reset within ten minutes.</p>",
            None,
        ),
        Err(e) => refused(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}
