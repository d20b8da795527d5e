//! Talking to identity servers, safely: only to trusted ones, over https unless an entry
//! says http, never to private addresses through a name, with timeouts and size limits; and
//! the homeserver's ed25519 signing key, which signs unbind requests (`X-Matrix`) and is
//! published at `/_matrix/key/v2/server`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::public_net::is_public;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use http::StatusCode;
use ruma::CanonicalJsonObject;
use ruma::api::error::ErrorKind;
use ruma::signatures::Ed25519KeyPair;
use serde_json::{Value, json};
use url::Url;
use vouch_core::SecretSource;
use vouch_core::secrets::{random_bytes, random_string};
use vouch_storage::{Binding, Db, StorageError};

use crate::error::ApiError;
use crate::state::Services;

/// The homeserver's signing key.
pub struct SigningKey {
    /// `ed25519:<version>`.
    pub key_id: String,
    pair: Ed25519KeyPair,
}

/// PKCS#8 v1 wrapping of a raw ed25519 seed (RFC 8410).
fn pkcs8(seed: &[u8; 32]) -> Vec<u8> {
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(seed);
    der
}

impl SigningKey {
    /// Loads the key from the database, making one (from the injected randomness) on first
    /// start.
    pub async fn load(db: &Db, secrets: &dyn SecretSource, now: i64) -> Result<Self, String> {
        let (key_id, seed) = db
            .signing_key(
                || {
                    let seed: [u8; 32] = random_bytes(secrets);
                    let version = random_string(
                        secrets,
                        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
                        6,
                    );
                    (format!("ed25519:a_{version}"), STANDARD_NO_PAD.encode(seed))
                },
                now,
            )
            .await
            .map_err(|e: StorageError| e.to_string())?;
        let bytes = STANDARD_NO_PAD
            .decode(&seed)
            .map_err(|e| format!("stored signing key: {e}"))?;
        let seed: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "stored signing key has the wrong length".to_owned())?;
        let version = key_id
            .strip_prefix("ed25519:")
            .unwrap_or(&key_id)
            .to_owned();
        let pair = Ed25519KeyPair::from_der(&pkcs8(&seed), version)
            .map_err(|e| format!("signing key: {e}"))?;
        Ok(Self { key_id, pair })
    }

    /// The public key, unpadded base64.
    pub fn public_key(&self) -> String {
        STANDARD_NO_PAD.encode(self.pair.public_key())
    }

    /// Signs `object` as `server_name`, adding its `signatures`.
    pub fn sign(&self, server_name: &str, object: &mut CanonicalJsonObject) -> Result<(), String> {
        ruma::signatures::sign_json(server_name, &self.pair, object).map_err(|e| e.to_string())
    }
}

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

impl Services {
    /// The trusted identity server a client's `id_server` names, if it is one.
    pub fn trusted_identity_server(&self, id_server: &str) -> Option<IdentityServer> {
        let wanted = host_port(id_server)?;
        self.config
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
    pub fn require_trusted(&self, id_server: &str) -> Result<IdentityServer, ApiError> {
        self.trusted_identity_server(id_server).ok_or_else(|| {
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
        &self,
        server: &IdentityServer,
        method: http::Method,
        path_and_query: &str,
        auth: Option<String>,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), ApiError> {
        let cfg = &self.config.identity_server;
        let url = server
            .base
            .join(path_and_query.trim_start_matches('/'))
            .map_err(|_| unreachable("address is malformed"))?;
        let client = if server.explicit {
            // Trusted by its URL: the operator said where it is, private or not.
            &self.identity_http.explicit
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
            &self.identity_http.public_only
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
    pub fn identity_error(&self, status: StatusCode, body: &Value) -> ApiError {
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
        &self,
        server: &IdentityServer,
        method: &str,
        uri: &str,
        content: &Value,
    ) -> Result<String, ApiError> {
        let object = json!({
            "method": method,
            "uri": uri,
            "origin": self.server_name(),
            "destination": server.name,
            "content": content,
        });
        let mut canonical: CanonicalJsonObject = serde_json::from_value(object)
            .map_err(|e| ApiError::internal(format!("canonical JSON: {e}")))?;
        self.signing_key
            .sign(self.server_name(), &mut canonical)
            .map_err(ApiError::internal)?;
        let sig = canonical
            .get("signatures")
            .and_then(|s| s.as_object())
            .and_then(|s| s.get(self.server_name()))
            .and_then(|s| s.as_object())
            .and_then(|s| s.get(&self.signing_key.key_id))
            .and_then(|s| s.as_str())
            .ok_or_else(|| ApiError::internal("signing produced no signature"))?
            .to_owned();
        Ok(format!(
            "X-Matrix origin=\"{}\",destination=\"{}\",key=\"{}\",sig=\"{sig}\"",
            self.server_name(),
            server.name,
            self.signing_key.key_id
        ))
    }

    /// Unbinds each binding with a signed request; removes the ones that succeeded. `true`
    /// when every one succeeded (also when there were none).
    pub async fn unbind_all(&self, bindings: &[Binding]) -> Result<bool, ApiError> {
        let mut all = true;
        for b in bindings {
            let Some(server) = self.trusted_identity_server(&b.id_server) else {
                tracing::warn!(
                    id_server = b.id_server,
                    "cannot unbind: the identity server is no longer trusted"
                );
                all = false;
                continue;
            };
            let uri = "/_matrix/identity/v2/3pid/unbind";
            let content = json!({ "mxid": b.user_id, "threepid": { "medium": b.medium, "address": b.address } });
            let auth = self.x_matrix(&server, "POST", uri, &content)?;
            match self
                .identity_call(&server, http::Method::POST, uri, Some(auth), Some(&content))
                .await
            {
                Ok((status, _)) if status.is_success() => {
                    self.db.remove_binding(b).await?;
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
}

/// How long a published key stays valid in `/_matrix/key/v2/server`.
pub const KEY_VALIDITY: Duration = Duration::from_secs(7 * 86_400);

/// # `GET /_matrix/key/v2/server`
pub async fn get_server_keys_route(
    axum::extract::State(state): axum::extract::State<crate::state::AppState>,
) -> Result<axum::Json<Value>, ApiError> {
    let valid_until = state.now() + i64::try_from(KEY_VALIDITY.as_millis()).unwrap_or(i64::MAX);
    let object = json!({
        "server_name": state.server_name(),
        "valid_until_ts": valid_until,
        "verify_keys": { state.signing_key.key_id.clone(): { "key": state.signing_key.public_key() } },
        "old_verify_keys": {},
    });
    let mut canonical: CanonicalJsonObject = serde_json::from_value(object)
        .map_err(|e| ApiError::internal(format!("canonical JSON: {e}")))?;
    state
        .signing_key
        .sign(state.server_name(), &mut canonical)
        .map_err(ApiError::internal)?;
    Ok(axum::Json(
        serde_json::to_value(canonical).map_err(|e| ApiError::internal(e.to_string()))?,
    ))
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
