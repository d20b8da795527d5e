//! OpenID Connect on top of the OAuth 2.0 API (`[oauth] openid_connect`): ID tokens
//! signed with Ed25519 (`EdDSA`, by jsonwebtoken) for the `openid` scope, the signing keys
//! (made from the injected randomness, kept in the database so every instance signs and
//! publishes the same ones, rotated every `signing_key_rotation`) at `jwks_uri`, the
//! userinfo endpoint, and the access tokens of sign-ins that open no Matrix session.
//! What the claims say is `vouch_core::oauth::id_token`'s.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use vouch_core::clock::duration_ms;
use vouch_core::oauth::Scope;
use vouch_core::oauth::id_token::{Binding, Subject, id_token_claims, user_claims};
use vouch_core::secrets::{random_bytes, random_string, token_hash};
use vouch_storage::OidcKey;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The signing algorithm (the only one offered).
pub const ALGORITHM: &str = "EdDSA";

/// A key's `EncodingKey` and public JWK.
fn signer(key: &OidcKey) -> ApiResult<(EncodingKey, Jwk)> {
    let seed: [u8; 32] = STANDARD_NO_PAD
        .decode(&key.private_key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ApiError::internal(format!("signing key {} is damaged", key.kid)))?;
    let encoding = EncodingKey::from_ed_der(&crate::signing_key::pkcs8(&seed));
    let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::EdDSA)
        .map_err(|e| ApiError::internal(format!("signing key {}: {e}", key.kid)))?;
    jwk.common.key_id = Some(key.kid.clone());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    Ok((encoding, jwk))
}

/// The key that signs now: the newest, unless it is older than `signing_key_rotation`, in
/// which case a new one is made (of many requests or instances at once, one makes it).
async fn signing_key(state: &AppState) -> ApiResult<OidcKey> {
    let now = state.now();
    let rotation = duration_ms(state.config.oauth.signing_key_rotation);
    if let Some(key) = state
        .db
        .oidc_keys(now.saturating_sub(rotation))
        .await?
        .into_iter()
        .next()
    {
        return Ok(key);
    }
    let seed: [u8; 32] = random_bytes(state.secrets.as_ref());
    let key = OidcKey {
        kid: random_string(
            state.secrets.as_ref(),
            b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
            16,
        ),
        private_key: STANDARD_NO_PAD.encode(seed),
        created_at: now,
    };
    // Of many first requests (on any instance), one makes the key; the others take it.
    let since = now.saturating_sub(rotation);
    if state.db.add_oidc_key_unless_since(&key, since).await? {
        tracing::info!(kid = key.kid, "new OpenID Connect signing key");
    }
    state
        .db
        .oidc_keys(since)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::internal("no OpenID Connect signing key after making one"))
}

/// The issuer: the public URL, exactly as discovery says it.
pub fn issuer(state: &AppState) -> String {
    state.config.public_baseurl()
}

/// What is known of `user_id` for the claims.
async fn subject(state: &AppState, user_id: &str) -> ApiResult<Subject> {
    let user = state
        .db
        .user(user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such account"))?;
    let threepids = state.db.threepids(user_id).await?;
    let first = |medium: &str| {
        threepids
            .iter()
            .find(|t| t.medium == medium)
            .map(|t| t.address.clone())
    };
    Ok(Subject {
        user_id: user.user_id,
        localpart: user.localpart,
        display_name: user.displayname,
        email: first("email"),
        phone: first("msisdn"),
    })
}

/// An ID token for `user_id`, issued to `client_id` with `access_token`.
pub async fn id_token(
    state: &AppState,
    user_id: &str,
    client_id: &str,
    scope: &Scope,
    nonce: Option<&str>,
    access_token: &str,
) -> ApiResult<String> {
    let key = signing_key(state).await?;
    let (encoding, _) = signer(&key)?;
    let subject = subject(state, user_id).await?;
    let issued_at = state.now() / 1000;
    let issuer = issuer(state);
    let lifetime = i64::try_from(state.config.oauth.id_token_lifetime.as_secs()).unwrap_or(3600);
    let claims = id_token_claims(
        &subject,
        scope,
        &Binding {
            issuer: &issuer,
            client_id,
            nonce,
            access_token,
            issued_at,
            expires_at: issued_at.saturating_add(lifetime),
        },
    );
    let mut head = Header::new(Algorithm::EdDSA);
    head.kid = Some(key.kid);
    jsonwebtoken::encode(&head, &claims, &encoding)
        .map_err(|e| ApiError::internal(format!("signing an ID token: {e}")))
}

/// # `GET /oauth2/keys.json`
///
/// The keys that may have signed a valid ID token: every key made within
/// `signing_key_rotation` + `id_token_lifetime`.
pub async fn jwks_route(State(state): State<AppState>) -> Response {
    if !state.config.oauth.openid_connect {
        return ApiError::unrecognized().into_response();
    }
    match jwks(&state).await {
        Ok(set) => {
            let mut res = Json(set).into_response();
            res.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            );
            res
        }
        Err(e) => e.into_response(),
    }
}

async fn jwks(state: &AppState) -> ApiResult<JwkSet> {
    // There is always one that signs.
    signing_key(state).await?;
    let window = duration_ms(state.config.oauth.signing_key_rotation)
        .saturating_add(duration_ms(state.config.oauth.id_token_lifetime));
    let keys = state
        .db
        .oidc_keys(state.now().saturating_sub(window))
        .await?;
    let mut set = JwkSet { keys: Vec::new() };
    for key in &keys {
        set.keys.push(signer(key)?.1);
    }
    Ok(set)
}

/// RFC 6750's answer to a request without a usable bearer token.
fn bearer_error(status: StatusCode, error: &str, description: &str) -> Response {
    let challenge = format!("Bearer error=\"{error}\", error_description=\"{description}\"");
    let mut res = (
        status,
        Json(serde_json::json!({ "error": error, "error_description": description })),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    res
}

/// # `GET` and `POST /oauth2/userinfo`
///
/// Who the bearer of an access token is: a Matrix session's token whose scope has
/// `openid`, or a sign-in's without a Matrix session; the claims its scope grants.
pub async fn userinfo_route(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !state.config.oauth.openid_connect {
        return ApiError::unrecognized().into_response();
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        })
        .map(|(_, t)| t.trim().to_owned());
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return bearer_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request",
            "an access token is required",
        );
    };
    match userinfo(&state, &token).await {
        Ok(Info::Claims(claims)) => Json(claims).into_response(),
        Ok(Info::Unknown) => bearer_error(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "the access token is unknown, expired or revoked",
        ),
        Ok(Info::NoOpenId) => bearer_error(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            "the access token was not granted the openid scope",
        ),
        Err(e) => e.into_response(),
    }
}

/// What userinfo finds for a token.
enum Info {
    Claims(serde_json::Map<String, serde_json::Value>),
    Unknown,
    NoOpenId,
}

async fn userinfo(state: &AppState, token: &str) -> ApiResult<Info> {
    let hash = token_hash(token);
    let now = state.now();
    let granted = match state.db.oidc_token(&hash, now).await? {
        Some(t) => Some((t.user_id, t.scope)),
        None => state
            .db
            .access_token(&hash)
            .await?
            .filter(|t| t.expires_at.is_none_or(|at| at > now))
            // A `/login` session was granted no scope: never `openid`.
            .map(|t| (t.user_id, t.oauth_scope.unwrap_or_default())),
    };
    let Some((user_id, scope)) = granted else {
        return Ok(Info::Unknown);
    };
    let Some(scope) = Scope::parse(&scope).ok().filter(|s| s.openid) else {
        return Ok(Info::NoOpenId);
    };
    let subject = subject(state, &user_id).await?;
    Ok(Info::Claims(user_claims(&subject, &scope)))
}
