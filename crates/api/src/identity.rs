//! Talking to identity servers, safely: only to trusted ones, over https unless an entry
//! says http, never to private addresses through a name, with timeouts and size limits.
//! Unbind requests are signed (`X-Matrix`) with the server's key (`signing_key.rs`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::public_net::is_public;

use http::StatusCode;
use ruma::api::client::account::ThirdPartyIdRemovalStatus;
use ruma::api::error::ErrorKind;
use serde_json::{Value, json};
use url::Url;
use vouch_storage::Binding;

use crate::error::ApiError;
use crate::state::Services;

/// An identity server Vouch may talk to.
#[derive(Debug, Clone)]
pub struct IdentityServer {
    /// Its base URL.
    pub base: Url,
    /// `host[:port]`, as bindings record it.
    pub name: String,
    /// The entry was an explicit URL: taken as written, private addresses included.
    pub explicit: bool,
}

/// A failed call, as the client should see it.
fn unreachable(what: &str) -> ApiError {
    ApiError::Custom {
        status: StatusCode::BAD_GATEWAY,
        errcode: "M_UNKNOWN",
        message: format!("The identity server {what}"),
    }
}

/// `host[:port]` of a client's `id_server` (which may come with a scheme), lower-cased.
fn host_port(raw: &str) -> Option<String> {
    let url = Url::parse(raw)
        .ok()
        .filter(|u| u.host_str().is_some())
        .or_else(|| Url::parse(&format!("https://{raw}")).ok())?;
    let host = url.host_str()?.to_ascii_lowercase();
    Some(match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host,
    })
}

/// The HTTP clients for identity servers, built once: one whose resolver refuses private
/// addresses (servers trusted by name) and one that goes where its URL says (servers
/// trusted by URL). Neither follows redirects.
pub struct IdentityHttp {
    /// For servers trusted by name.
    pub public_only: reqwest::Client,
    /// For servers trusted by URL.
    pub explicit: reqwest::Client,
}

impl IdentityHttp {
    /// Builds both clients.
    pub fn new(connect_timeout: Duration) -> Result<Self, String> {
        let base = || {
            reqwest::Client::builder()
                .connect_timeout(connect_timeout)
                .redirect(reqwest::redirect::Policy::none())
        };
        Ok(Self {
            public_only: base()
                .dns_resolver(std::sync::Arc::new(crate::public_net::PublicOnlyResolver))
                .build()
                .map_err(|e| e.to_string())?,
            explicit: base().build().map_err(|e| e.to_string())?,
        })
    }
}

/// The trusted identity server a client's `id_server` names, if it is one.
pub fn trusted_identity_server(state: &Services, id_server: &str) -> Option<IdentityServer> {
    let wanted = host_port(id_server)?;
    state
        .config
        .identity_server
        .trusted
        .iter()
        .find_map(|entry| {
            let explicit = entry.starts_with("https://") || entry.starts_with("http://");
            let base = if explicit {
                Url::parse(entry).ok()?
            } else {
                Url::parse(&format!("https://{entry}")).ok()?
            };
            let name = host_port(base.as_str())?;
            (name == wanted).then_some(IdentityServer {
                base,
                name,
                explicit,
            })
        })
}

/// The trusted server for `id_server`, or 400 `M_SERVER_NOT_TRUSTED`.
pub fn require_trusted(state: &Services, id_server: &str) -> Result<IdentityServer, ApiError> {
    trusted_identity_server(state, id_server).ok_or_else(|| {
        ApiError::new(
            ErrorKind::ServerNotTrusted,
            format!("This server does not trust the identity server {id_server}"),
        )
    })
}

/// Calls an identity server. `auth` is the whole `Authorization` header value. Answers
/// (status, JSON); a hang, an oversized or non-JSON answer, or an address that is not
/// allowed is an error the client can read, never a 500.
pub async fn identity_call(
    state: &Services,
    server: &IdentityServer,
    method: http::Method,
    path_and_query: &str,
    auth: Option<String>,
    body: Option<&Value>,
) -> Result<(StatusCode, Value), ApiError> {
    let cfg = &state.config.identity_server;
    let url = server
        .base
        .join(path_and_query.trim_start_matches('/'))
        .map_err(|_| unreachable("address is malformed"))?;
    let client = if server.explicit {
        // Trusted by its URL: the operator said where it is, private or not.
        &state.identity_http.explicit
    } else {
        let private = match url.host() {
            Some(url::Host::Ipv4(ip)) => !is_public(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => !is_public(IpAddr::V6(ip)),
            Some(url::Host::Domain(host)) => {
                let port = url.port_or_known_default().unwrap_or(443);
                // A clear answer for a name that resolves privately now; the client's
                // resolver refuses private addresses again at connect time, so a DNS
                // change in between cannot slip through.
                let addrs: Vec<SocketAddr> =
                    tokio::time::timeout(cfg.timeout, tokio::net::lookup_host((host, port)))
                        .await
                        .map_err(|_| unreachable("name could not be resolved in time"))?
                        .map_err(|_| unreachable("name could not be resolved"))?
                        .collect();
                addrs.is_empty() || addrs.iter().any(|a| !is_public(a.ip()))
            }
            None => true,
        };
        if private {
            return Err(ApiError::new(
                ErrorKind::ServerNotTrusted,
                format!(
                    "The identity server {} resolves to a private address; trust it by its URL if that is intended",
                    server.name
                ),
            ));
        }
        &state.identity_http.public_only
    };
    let mut request = client.request(method, url).timeout(cfg.timeout);
    if let Some(auth) = auth {
        request = request.header(http::header::AUTHORIZATION, auth);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let mut response = request.send().await.map_err(|e| {
        if e.is_timeout() {
            unreachable("did not answer in time")
        } else {
            unreachable("could not be reached")
        }
    })?;
    let status = response.status();
    let mut bytes = Vec::new();
    loop {
        match tokio::time::timeout(cfg.timeout, response.chunk()).await {
            Ok(Ok(Some(chunk))) => {
                bytes.extend_from_slice(&chunk);
                if bytes.len() > cfg.max_response_bytes {
                    return Err(unreachable("answered with too much data"));
                }
            }
            Ok(Ok(None)) => break,
            Ok(Err(_)) => return Err(unreachable("broke off its answer")),
            Err(_) => return Err(unreachable("did not finish its answer in time")),
        }
    }
    let json: Value = serde_json::from_slice(&bytes)
        .map_err(|_| unreachable("answered something that is not JSON"))?;
    if !json.is_object() {
        return Err(unreachable("answered something unexpected"));
    }
    Ok((status, json))
}

/// An identity server's Matrix error, passed through to the client.
pub fn identity_error(_state: &Services, status: StatusCode, body: &Value) -> ApiError {
    match body.get("errcode").and_then(Value::as_str) {
        Some(errcode) if status.is_client_error() => ApiError::Passthrough {
            status,
            body: json!({
                "errcode": errcode,
                "error": body.get("error").and_then(Value::as_str).unwrap_or("The identity server refused"),
            }),
        },
        _ => unreachable(&format!("failed ({status})")),
    }
}

/// The `X-Matrix` authorization of a request to `server` (the identity-service
/// "homeserver-signed request"): method, URI, origin, destination and content signed with
/// the server key.
pub fn x_matrix(
    state: &Services,
    server: &IdentityServer,
    method: &str,
    uri: &str,
    content: &Value,
) -> Result<String, ApiError> {
    let object = json!({
        "method": method,
        "uri": uri,
        "origin": state.server_name(),
        "destination": server.name,
        "content": content,
    });
    let canonical = state.signing_key.signed(state.server_name(), object)?;
    let sig = canonical
        .get("signatures")
        .and_then(|s| s.as_object())
        .and_then(|s| s.get(state.server_name()))
        .and_then(|s| s.as_object())
        .and_then(|s| s.get(&state.signing_key.key_id))
        .and_then(|s| s.as_str())
        .ok_or_else(|| ApiError::internal("signing produced no signature"))?
        .to_owned();
    Ok(format!(
        "X-Matrix origin=\"{}\",destination=\"{}\",key=\"{}\",sig=\"{sig}\"",
        state.server_name(),
        server.name,
        state.signing_key.key_id
    ))
}

/// Unbinds each binding with a signed request; removes the ones that succeeded. `true`
/// when every one succeeded (also when there were none).
pub async fn unbind_all(state: &Services, bindings: &[Binding]) -> Result<bool, ApiError> {
    let mut all = true;
    for b in bindings {
        let Some(server) = trusted_identity_server(state, &b.id_server) else {
            tracing::warn!(
                id_server = b.id_server,
                "cannot unbind: the identity server is no longer trusted"
            );
            all = false;
            continue;
        };
        let uri = "/_matrix/identity/v2/3pid/unbind";
        let content =
            json!({ "mxid": b.user_id, "threepid": { "medium": b.medium, "address": b.address } });
        let auth = x_matrix(state, &server, "POST", uri, &content)?;
        match identity_call(
            state,
            &server,
            http::Method::POST,
            uri,
            Some(auth),
            Some(&content),
        )
        .await
        {
            Ok((status, _)) if status.is_success() => {
                state.db.remove_binding(b).await?;
                tracing::info!(
                    user_id = b.user_id,
                    id_server = b.id_server,
                    medium = b.medium,
                    "unbound"
                );
            }
            Ok((status, body)) => {
                tracing::warn!(id_server = b.id_server, %status, ?body, "unbind refused");
                all = false;
            }
            Err(e) => {
                tracing::warn!(id_server = b.id_server, error = ?e, "unbind failed");
                all = false;
            }
        }
    }
    Ok(all)
}

/// Unbinds an address from the servers it was bound to (or the one named): the
/// `id_server_unbind_result`. `success` only when every unbind succeeded; `no-support` when
/// there was nowhere to unbind from or one failed.
pub async fn unbind_address(
    state: &Services,
    user_id: &str,
    medium: &str,
    address: &str,
    id_server: Option<&str>,
) -> Result<ThirdPartyIdRemovalStatus, ApiError> {
    let mut bindings = state.db.bindings(user_id, Some((medium, address))).await?;
    if let Some(named) = id_server {
        let server = require_trusted(state, named)?;
        bindings.retain(|b| b.id_server == server.name);
        if bindings.is_empty() {
            bindings.push(Binding {
                user_id: user_id.to_owned(),
                medium: medium.to_owned(),
                address: address.to_owned(),
                id_server: server.name,
            });
        }
    }
    if bindings.is_empty() {
        return Ok(ThirdPartyIdRemovalStatus::NoSupport);
    }
    Ok(if unbind_all(state, &bindings).await? {
        ThirdPartyIdRemovalStatus::Success
    } else {
        ThirdPartyIdRemovalStatus::NoSupport
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_server_names() {
        assert_eq!(host_port("Vector.IM").as_deref(), Some("vector.im"));
        assert_eq!(
            host_port("id.example.org:8090").as_deref(),
            Some("id.example.org:8090")
        );
        assert_eq!(
            host_port("https://id.example.org/").as_deref(),
            Some("id.example.org")
        );
        assert_eq!(
            host_port("http://127.0.0.1:9000").as_deref(),
            Some("127.0.0.1:9000")
        );
    }
}
