//! The one port for clients, in front of a homeserver: every request Vouch does not answer
//! itself goes to `[homeserver] url`, streamed both ways (long polls and uploads included),
//! without hop-by-hop headers and with the client's address in `X-Forwarded-For`. Synapse's `/_synapse/mas/*` API is never reachable through it.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
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
    // The client's address as Vouch worked it out (through `trusted_proxies`), and only
    // that: whatever a client wrote there itself is not passed on as if it were true.
    if let Ok(v) = HeaderValue::from_str(&ip.to_string()) {
        headers.insert(HeaderName::from_static("x-forwarded-for"), v);
    }
    let upstream = state
        .proxy_http
        .request(parts.method.clone(), url)
        .headers(headers)
        .body(reqwest::Body::wrap_stream(body.into_data_stream()))
        .send()
        .await;
    let answer = match upstream {
        Ok(answer) => answer,
        Err(e) => {
            tracing::warn!(error = %e.without_url(), "the homeserver did not answer a forwarded request");
            return ApiError::Unavailable(
                "The homeserver is unavailable; try again shortly".into(),
            )
            .into_response();
        }
    };
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let headers = end_to_end(answer.headers());
    let mut res = Response::new(Body::from_stream(answer.bytes_stream()));
    *res.status_mut() = status;
    *res.headers_mut() = headers;
    res
}

/// An application service's `/register` (`"type": "m.login.application_service"`) is the
/// homeserver's business: it is forwarded; every other registration is Vouch's. The body is
/// read within `[http] max_request_bytes` and `body_read_timeout` to tell which.
pub async fn appservice_register(
    state: State<AppState>,
    ip: ClientIp,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    let register = req.method() == http::Method::POST
        && (path == "/_matrix/client/v3/register" || path == "/_matrix/client/r0/register");
    if !register {
        return next.run(req).await;
    }
    let http = &state.config.http;
    let (parts, body) = req.into_parts();
    let bytes = match tokio::time::timeout(
        http.body_read_timeout,
        axum::body::to_bytes(body, http.max_request_bytes),
    )
    .await
    {
        Ok(Ok(bytes)) => bytes,
        _ => return crate::ruma_axum::too_large(http.max_request_bytes).into_response(),
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
