//! `[http]`: the HTTP listener: addresses, proxies, deadlines, connection and body caps.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::OneOrMany;

/// `[http]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// `host:port` to listen on, or a list of them.
    pub listen: OneOrMany<SocketAddr>,
    /// Largest request body accepted, in bytes; larger ones get 413 `M_TOO_LARGE`.
    pub max_request_bytes: usize,
    /// Take the client address from `X-Forwarded-For` when the peer is a trusted proxy.
    pub x_forwarded: bool,
    /// Proxies whose `X-Forwarded-For` entries are believed: the client is the rightmost
    /// address not in these ranges. A request from elsewhere is keyed on its peer.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Open client connections per listener at most; one more is closed at once.
    pub max_connections: usize,
    /// Open connections from one client address (its /64 for IPv6) at most; trusted
    /// proxies are not counted.
    pub max_connections_per_ip: usize,
    /// Time a client has to send a request's headers, and to start the next request on
    /// a kept-alive connection.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Time a client has to send a request's body, in all.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Time a client may leave an answer unread (not reading, e.g. pipelining requests
    /// without reading answers) before its connection is closed.
    #[serde(with = "humantime_serde")]
    pub response_write_timeout: Duration,
    /// Request bodies held in memory at once, in bytes, over all connections; a request
    /// that would exceed it waits up to a second for room, then gets 429.
    pub max_buffered_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: OneOrMany::One(SocketAddr::from(([127, 0, 0, 1], 8008))),
            max_request_bytes: 1024 * 1024,
            x_forwarded: false,
            trusted_proxies: vec![
                ipnet::IpNet::from(std::net::IpAddr::from([127, 0, 0, 1])),
                ipnet::IpNet::from(std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
            ],
            max_connections: 10_000,
            max_connections_per_ip: 100,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            response_write_timeout: Duration::from_secs(30),
            max_buffered_bytes: 64 * 1024 * 1024,
        }
    }
}
