//! # `POST /oauth2/token`
//!
//! The authorization code grant (RFC 6749 §4.1.3 with PKCE) and the refresh token grant,
//! for public clients (`client_id` in the form, no secret). A code is checked (client,
//! redirect URI, verifier) before it is spent, and spent by one conditional statement: of
//! many requests with one code, one gets tokens; a code presented after it was spent ends
//! the session it bought (RFC 6749 §4.1.2). Refresh tokens rotate; a spent one presented
//! again ends the session, unless the pair it bought was never used (a lost answer).

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use vouch_core::oauth::AuthorizationRequest;
use vouch_core::oauth::client::{GRANT_AUTHORIZATION_CODE, GRANT_DEVICE_CODE, GRANT_REFRESH_TOKEN};
use vouch_core::secrets::token_hash;
use vouch_storage::{DevicePoll, Exchange};

use super::authorize::load_client;
use super::error::{OAuthError, OAuthForm};
use crate::client_ip::ClientIp;
use crate::error::ApiError;
use crate::state::AppState;

/// The token request's form.
#[derive(Debug, Deserialize)]
pub struct TokenForm {
    grant_type: Option<String>,
    client_id: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
    device_code: Option<String>,
}

/// # `POST /oauth2/token`
pub async fn token_route(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    OAuthForm(form): OAuthForm<TokenForm>,
) -> Result<Response, OAuthError> {
    state
        .limits
        .refresh_per_ip
        .check_ip(ip)
        .map_err(OAuthError::from)?;
    let client_id = form
        .client_id
        .as_deref()
        .ok_or_else(|| OAuthError::invalid_request("client_id is required"))?;
    let client = load_client(&state, client_id)
        .await?
        .ok_or_else(OAuthError::invalid_client)?;
    let grant_type = form.grant_type.as_deref().unwrap_or_default();
    if matches!(
        grant_type,
        GRANT_AUTHORIZATION_CODE | GRANT_REFRESH_TOKEN | GRANT_DEVICE_CODE
    ) && !client.allows_grant(grant_type)
    {
        return Err(OAuthError::new(
            "unauthorized_client",
            format!("this client did not register the {grant_type} grant"),
        ));
    }
    match grant_type {
        GRANT_AUTHORIZATION_CODE => {
            let display_name = client.display_name(&[]);
            authorization_code(&state, client_id, display_name, &form, ip).await
        }
        GRANT_REFRESH_TOKEN => refresh(&state, client_id, &form).await,
        GRANT_DEVICE_CODE => {
            let display_name = client.display_name(&[]);
            device_code(&state, client_id, display_name, &form, ip).await
        }
        "" => Err(OAuthError::invalid_request("grant_type is required")),
        _ => Err(OAuthError::new(
            "unsupported_grant_type",
            "grant_type must be authorization_code, refresh_token or urn:ietf:params:oauth:grant-type:device_code",
        )),
    }
}

/// The token answer; `scope` is left out when it is the one granted before (RFC 6749
/// §5.1); `id_token` for OpenID Connect.
fn tokens(
    issued: &crate::accounts::IssuedTokens,
    scope: Option<&str>,
    id_token: Option<String>,
) -> Response {
    let mut body = serde_json::json!({
        "access_token": issued.access_token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in.map(|d| d.as_secs()),
        "refresh_token": issued.refresh_token,
    });
    if let Some(map) = body.as_object_mut() {
        if let Some(scope) = scope {
            map.insert("scope".into(), scope.into());
        }
        if let Some(id_token) = id_token {
            map.insert("id_token".into(), id_token.into());
        }
    }
    Json(body).into_response()
}

/// What the exchange that spent a replayed code answers, once it ended what it made.
fn replayed(user_id: &str, device_id: &str) -> OAuthError {
    tracing::warn!(
        user_id,
        device_id,
        "an authorization code was presented again; its session was ended"
    );
    OAuthError::invalid_grant()
}

/// An OpenID Connect sign-in without a Matrix session: an access token for userinfo and
/// the ID token, no refresh token, no device.
async fn open_sign_in(
    state: &AppState,
    approved: &vouch_storage::ApprovedGrant,
    client_id: &str,
    request: &AuthorizationRequest,
) -> Result<(Response, String), OAuthError> {
    let scope = request.scope.granted(false);
    let (access_token, expires_in) = state
        .accounts()
        .open_oidc_sign_in(
            &approved.user_id,
            &approved.password_hash,
            client_id,
            &scope,
        )
        .await?;
    let id_token = super::oidc::id_token(
        state,
        &approved.user_id,
        client_id,
        &request.scope,
        request.nonce.as_deref(),
        &access_token,
    )
    .await?;
    tracing::info!(
        user_id = approved.user_id,
        client_id,
        "OpenID Connect sign-in"
    );
    let answer = Json(serde_json::json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "scope": scope,
        "id_token": id_token,
    }))
    .into_response();
    Ok((answer, access_token))
}

async fn authorization_code(
    state: &AppState,
    client_id: &str,
    display_name: String,
    form: &TokenForm,
    ip: std::net::IpAddr,
) -> Result<Response, OAuthError> {
    let (Some(code), Some(verifier)) = (form.code.as_deref(), form.code_verifier.as_deref()) else {
        return Err(OAuthError::invalid_request(
            "code and code_verifier are required",
        ));
    };
    let code_hash = token_hash(code);
    let Some(found) = state.db.find_code(&code_hash).await? else {
        return Err(OAuthError::invalid_grant());
    };
    let request: AuthorizationRequest =
        serde_json::from_str(&found.grant.request).map_err(|e| {
            OAuthError::from(ApiError::internal(format!("stored grant is damaged: {e}")))
        })?;
    let Some(redirect) = request.redirect() else {
        return Err(OAuthError::invalid_grant());
    };
    // Checked before the code is spent: a stolen code without its verifier burns nothing.
    if found.grant.client_id != client_id
        || form.redirect_uri.as_deref() != Some(redirect.redirect_uri.as_str())
        || !redirect.code_challenge.verify(verifier)
    {
        return Err(OAuthError::invalid_grant());
    }
    match state.db.exchange_code(&code_hash, state.now()).await? {
        Exchange::Fresh(approved) if request.scope.identity_only() => {
            let (answer, access_token) =
                open_sign_in(state, &approved, client_id, &request).await?;
            if state.db.code_replayed(&approved.grant.grant_id).await? {
                state
                    .db
                    .revoke_oidc_token(&token_hash(&access_token))
                    .await?;
                return Err(replayed(&approved.user_id, ""));
            }
            Ok(answer)
        }
        Exchange::Fresh(approved) => {
            let answer =
                open_session(state, &approved, client_id, display_name, &request, ip).await?;
            // A replay that came before the session was written could not end it: this
            // exchange does.
            if state.db.code_replayed(&approved.grant.grant_id).await? {
                state
                    .accounts()
                    .log_out(
                        &approved.user_id,
                        std::slice::from_ref(&request.scope.device_id),
                    )
                    .await?;
                return Err(replayed(&approved.user_id, &request.scope.device_id));
            }
            Ok(answer)
        }
        Exchange::Reused(approved) => {
            // The code was copied (or the client retried): what it bought ends.
            if state
                .db
                .device_client(&approved.user_id, &request.scope.device_id)
                .await?
                .as_deref()
                == Some(client_id)
            {
                state
                    .accounts()
                    .log_out(
                        &approved.user_id,
                        std::slice::from_ref(&request.scope.device_id),
                    )
                    .await?;
                tracing::warn!(
                    user_id = approved.user_id,
                    device_id = request.scope.device_id,
                    "an authorization code was presented again; its session was ended"
                );
            }
            Err(OAuthError::invalid_grant())
        }
        Exchange::Unknown => Err(OAuthError::invalid_grant()),
    }
}

async fn refresh(
    state: &AppState,
    client_id: &str,
    form: &TokenForm,
) -> Result<Response, OAuthError> {
    let Some(token) = form.refresh_token.as_deref() else {
        return Err(OAuthError::invalid_request("refresh_token is required"));
    };
    // A refresh token is the client's it was issued to.
    let Some(owner) = state.db.refresh_token_owner(&token_hash(token)).await? else {
        return Err(OAuthError::invalid_grant());
    };
    if owner.oauth_client_id.as_deref() != Some(client_id) {
        return Err(OAuthError::invalid_grant());
    }
    let device_id = owner.device_id;
    let accounts = state.accounts();
    let issued = accounts.issue_tokens(Some(device_id.clone()), None, true, None);
    if accounts
        .refresh(token, &issued.login, true)
        .await?
        .is_none()
    {
        return Err(OAuthError::invalid_grant());
    }
    Ok(tokens(&issued, None, None))
}

/// Opens the session an approved grant buys, and answers its tokens.
async fn open_session(
    state: &AppState,
    approved: &vouch_storage::ApprovedGrant,
    client_id: &str,
    display_name: String,
    request: &AuthorizationRequest,
    ip: std::net::IpAddr,
) -> Result<Response, OAuthError> {
    // The admin API only if asked for and the user is an admin now.
    let is_admin = state
        .db
        .user(&approved.user_id)
        .await?
        .is_some_and(|u| u.is_admin);
    let scope = request.scope.granted(is_admin);
    let issued = state
        .accounts()
        .open_oauth_session(
            &approved.user_id,
            &approved.password_hash,
            client_id,
            &request.scope.device_id,
            &scope,
            Some(
                display_name
                    .chars()
                    .take(crate::accounts::MAX_DEVICE_DISPLAY_NAME)
                    .collect(),
            ),
            Some(ip.to_string()),
        )
        .await?;
    tracing::info!(
        user_id = approved.user_id,
        device_id = request.scope.device_id,
        client_id,
        "OAuth 2.0 session opened"
    );
    let id_token = if request.scope.openid && state.config.oauth.openid_connect {
        Some(
            super::oidc::id_token(
                state,
                &approved.user_id,
                client_id,
                &request.scope,
                request.nonce.as_deref(),
                &issued.access_token,
            )
            .await?,
        )
    } else {
        None
    };
    Ok(tokens(&issued, Some(&scope), id_token))
}

/// RFC 8628 §3.4: a device polls with its device code until the user has answered.
async fn device_code(
    state: &AppState,
    client_id: &str,
    display_name: String,
    form: &TokenForm,
    ip: std::net::IpAddr,
) -> Result<Response, OAuthError> {
    let Some(device_code) = form.device_code.as_deref() else {
        return Err(OAuthError::invalid_request("device_code is required"));
    };
    let interval = vouch_core::clock::duration_ms(state.config.oauth.device_poll_interval);
    let poll = state
        .db
        .poll_device(&token_hash(device_code), client_id, state.now(), interval)
        .await?;
    let approved = match poll {
        DevicePoll::Approved(approved) => approved,
        DevicePoll::Pending => {
            return Err(OAuthError::new(
                "authorization_pending",
                "The user has not answered yet",
            ));
        }
        DevicePoll::SlowDown => {
            return Err(OAuthError::new("slow_down", "Poll less often"));
        }
        DevicePoll::Denied => {
            return Err(OAuthError::new("access_denied", "The user declined"));
        }
        DevicePoll::Expired => {
            return Err(OAuthError::new(
                "expired_token",
                "The device code has expired",
            ));
        }
        DevicePoll::Spent | DevicePoll::Unknown => return Err(OAuthError::invalid_grant()),
    };
    let request: AuthorizationRequest =
        serde_json::from_str(&approved.grant.request).map_err(|e| {
            OAuthError::from(ApiError::internal(format!("stored grant is damaged: {e}")))
        })?;
    open_session(state, &approved, client_id, display_name, &request, ip).await
}
