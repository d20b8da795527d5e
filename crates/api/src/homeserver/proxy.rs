//! The one port for clients, in front of a homeserver: every request Vouch does not answer
//! itself goes to `[homeserver] url`, streamed both ways (long polls and uploads included),
//! without hop-by-hop headers and with the client's address in `X-Forwarded-For`.
//! Synapse's `/_synapse/mas/*` API is never reachable through it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};

use crate::client_ip::ClientIp;
use crate::error::ApiError;
use crate::state::AppState;

/// Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// Whether `path`, as the homeserver would read it (percent-decoded, repeated slashes
/// collapsed), is its private API or tries to climb out of its segments.
fn refused(path: &str) -> bool {
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    let segments: Vec<&str> = decoded.split('/').filter(|s| !s.is_empty()).collect();
    if segments
        .iter()
        .any(|s| *s == "." || *s == ".." || s.contains('\\'))
    {
        return true;
    }
    matches!(segments.as_slice(), [first, second, ..] if first.eq_ignore_ascii_case("_synapse") && second.eq_ignore_ascii_case("mas"))
}

/// Copies the end-to-end headers of `from`.
fn end_to_end(from: &HeaderMap) -> HeaderMap {
    let listed: Vec<String> = from
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_ascii_lowercase())
        .collect();
    let mut out = HeaderMap::with_capacity(from.len());
    for (name, value) in from {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n) || listed.iter().any(|l| l == n) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// Headers in which a client describes where its request came from; replaced, not passed on.
const CLIENT_ORIGIN_HEADERS: &[&str] = &[
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "forwarded",
    "x-real-ip",
];

/// The client's body arrived whole (or is still arriving).
const BODY_OK: u8 = 0;
/// The client's body could not be read (bad chunked encoding, a dropped connection).
const BODY_BROKEN: u8 = 1;
/// The client stopped sending its body for longer than `body_read_timeout`.
const BODY_STALLED: u8 = 2;

/// The slowest a forwarded body may arrive, on average, once `body_read_timeout` has
/// passed: a trickle of bytes cannot hold a connection to the homeserver open for ever,
/// while a real upload over a slow link (100 KiB/s and more) goes through.
const MIN_BODY_BYTES_PER_SECOND: u64 = 8 * 1024;

/// The client's body as a stream for the homeserver. A client that sends nothing for
/// `idle`, or on average less than [`MIN_BODY_BYTES_PER_SECOND`] after `idle`, is cut off,
/// and `fault` says why a body ended early.
fn client_body(
    body: Body,
    idle: std::time::Duration,
    fault: Arc<AtomicU8>,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static {
    let started = tokio::time::Instant::now();
    futures::stream::unfold(
        (body.into_data_stream(), false, 0_u64),
        move |(mut stream, done, received)| {
            let fault = fault.clone();
            async move {
                if done {
                    return None;
                }
                let (item, why) = match tokio::time::timeout(idle, stream.next()).await {
                    Ok(None) => return None,
                    Ok(Some(Ok(chunk))) => {
                        let received = received + chunk.len() as u64;
                        let late = started.elapsed().saturating_sub(idle);
                        let owed = late.as_secs() * MIN_BODY_BYTES_PER_SECOND;
                        if received >= owed {
                            return Some((Ok(chunk), (stream, false, received)));
                        }
                        (
                            std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                "request body too slow",
                            ),
                            BODY_STALLED,
                        )
                    }
                    Ok(Some(Err(e))) => (std::io::Error::other(e.to_string()), BODY_BROKEN),
                    Err(_) => (
                        std::io::Error::new(std::io::ErrorKind::TimedOut, "request body stalled"),
                        BODY_STALLED,
                    ),
                };
                fault.store(why, Ordering::Relaxed);
                Some((Err(item), (stream, true, received)))
            }
        },
    )
}

/// The answer when the homeserver gave none: the client's fault (a broken or stalled
/// body), a homeserver that cannot be reached, or one that dropped the request.
fn upstream_failed(e: reqwest::Error, fault: u8) -> Response {
    let e = e.without_url();
    match fault {
        BODY_STALLED => return crate::router::body_late(),
        BODY_BROKEN => return crate::router::body_unreadable(),
        _ if e.is_connect() => ApiError::HomeserverUnavailable(e.to_string()),
        _ => {
            tracing::warn!(error = %e, "the homeserver dropped a forwarded request");
            ApiError::Custom {
                status: StatusCode::BAD_GATEWAY,
                errcode: "M_UNKNOWN",
                message: "The homeserver did not answer this request (too large, or it failed)"
                    .into(),
            }
        }
    }
    .into_response()
}

/// Forwards the request to the homeserver and streams its answer back.
pub async fn forward(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    req: Request,
) -> Response {
    let Some(hs) = state.homeserver.as_ref() else {
        return ApiError::unrecognized().into_response();
    };
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    if !path.starts_with('/') || refused(path) {
        return ApiError::unrecognized().into_response();
    }
    let mut url = hs.base().clone();
    url.set_path(&format!("{}{}", url.path().trim_end_matches('/'), path));
    url.set_query(parts.uri.query());
    let mut headers = end_to_end(&parts.headers);
    // What a client says about where the request came from is not passed on as if it
    // were true: the address is the one Vouch worked out (through `trusted_proxies`), the
    // scheme the one of `public_baseurl`.
    for spoofable in CLIENT_ORIGIN_HEADERS {
        headers.remove(*spoofable);
    }
    if let Ok(v) = HeaderValue::from_str(&ip.to_string()) {
        headers.insert(HeaderName::from_static("x-forwarded-for"), v);
    }
    let scheme = if state.config.public_baseurl().starts_with("https:") {
        "https"
    } else {
        "http"
    };
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(scheme),
    );
    let fault = Arc::new(AtomicU8::new(BODY_OK));
    let body = client_body(body, state.config.http.body_read_timeout, fault.clone());
    let upstream = state
        .proxy_http
        .request(parts.method.clone(), url)
        .headers(headers)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await;
    let answer = match upstream {
        Ok(answer) => answer,
        Err(e) => return upstream_failed(e, fault.load(Ordering::Relaxed)),
    };
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let headers = end_to_end(answer.headers());
    let mut res = Response::new(Body::from_stream(answer.bytes_stream()));
    *res.status_mut() = status;
    *res.headers_mut() = headers;
    res
}

/// What application services do is the homeserver's business, even on paths Vouch answers
/// for users: a request that acts for a user by `?user_id=` (only an application service
/// may) is forwarded, and so is a `/register` with `"type": "m.login.application_service"`
/// (its body is read within `[http] max_request_bytes` and `body_read_timeout` to tell).
pub async fn homeserver_first(
    state: State<AppState>,
    ip: ClientIp,
    req: Request,
    next: Next,
) -> Response {
    let asserts_user = req
        .uri()
        .query()
        .is_some_and(|q| url::form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "user_id"));
    if asserts_user {
        // Only an application service may act for a user, and its token is not one of
        // Vouch's: a Vouch token with `?user_id=` stays with Vouch (which ignores it).
        let (parts, body) = req.into_parts();
        let vouch_token = match crate::auth::bearer_token(&parts) {
            Ok(Some(token)) => state
                .db
                .access_token(&vouch_core::secrets::token_hash(&token))
                .await
                .map(|t| t.is_some()),
            Ok(None) => Ok(false),
            Err(e) => return e.into_response(),
        };
        let req = Request::from_parts(parts, body);
        match vouch_token {
            Ok(false) => return forward(state, ip, req).await,
            Ok(true) => return next.run(req).await,
            Err(e) => return ApiError::from(e).into_response(),
        }
    }
    let path = req.uri().path();
    let register = req.method() == http::Method::POST
        && (path == "/_matrix/client/v3/register" || path == "/_matrix/client/r0/register");
    if !register {
        return next.run(req).await;
    }
    let http = &state.config.http;
    let (parts, body) = req.into_parts();
    let bytes =
        match crate::router::read_body_within(body, http.max_request_bytes, http.body_read_timeout)
            .await
        {
            Ok(bytes) => bytes,
            Err(refused) => return refused,
        };
    let appservice = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| Some(v.get("type")?.as_str()? == "m.login.application_service"))
        .unwrap_or(false);
    let req = Request::from_parts(parts, Body::from(bytes));
    if appservice {
        forward(state, ip, req).await
    } else {
        next.run(req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_private_api_and_climbing_paths_are_refused() {
        for path in [
            "/_synapse/mas/query_user",
            "/_synapse/MAS/delete_user",
            "/%5Fsynapse/mas/provision_user",
            "//_synapse//mas/x",
            "/_matrix/client/../../_synapse/mas/x",
            "/_matrix/client/%2e%2e/x",
            "/_matrix/client/v3/..%5c..%5cx",
        ] {
            assert!(refused(path), "{path}");
        }
        for path in [
            "/_matrix/client/v3/sync",
            "/_synapse/admin/v1/rooms",
            "/_matrix/media/v3/upload",
        ] {
            assert!(!refused(path), "{path}");
        }
    }

    #[test]
    fn hop_by_hop_headers_stay_behind() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret-Hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        let out = end_to_end(&h);
        assert_eq!(out.len(), 1);
        assert!(out.contains_key(header::AUTHORIZATION));
    }
}
