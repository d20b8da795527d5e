//! Releasing many requests at once, the way an attacker with many connections does. Each
//! request is written over its own connection except for its last byte; when every
//! connection holds its request, the last bytes go out together, so the server starts on all
//! of them at the same moment instead of in the order a client loop would send them.

use std::sync::Arc;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::Reply;

/// One request to race.
#[derive(Debug, Clone)]
pub struct Held {
    /// `POST`, `GET`, …
    pub method: &'static str,
    /// Path and query.
    pub path: String,
    /// `Content-Type` and body, if any.
    pub body: Option<(&'static str, String)>,
    /// More header lines.
    pub headers: Vec<(String, String)>,
}

impl Held {
    /// A JSON `POST`.
    pub fn post_json(path: &str, body: &Value) -> Self {
        Self {
            method: "POST",
            path: path.to_owned(),
            body: Some(("application/json", body.to_string())),
            headers: Vec::new(),
        }
    }

    /// The same request with an access token.
    pub fn with_token(mut self, token: &str) -> Self {
        self.headers
            .push(("Authorization".into(), format!("Bearer {token}")));
        self
    }

    /// A form `POST`.
    pub fn post_form(path: &str, fields: &[(&str, &str)]) -> Self {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        Self {
            method: "POST",
            path: path.to_owned(),
            body: Some(("application/x-www-form-urlencoded", body)),
            headers: Vec::new(),
        }
    }

    fn bytes(&self, host: &str) -> Vec<u8> {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n",
            self.method, self.path
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let body = match &self.body {
            Some((kind, body)) => {
                head.push_str(&format!(
                    "Content-Type: {kind}\r\nContent-Length: {}\r\n",
                    body.len()
                ));
                body.as_str()
            }
            None => "",
        };
        head.push_str("\r\n");
        head.push_str(body);
        head.into_bytes()
    }
}

/// Sends every request in `requests` to `base` (`http://host:port`) at once and returns the
/// answers in the same order.
pub async fn release_together(base: &str, requests: Vec<Held>) -> Vec<Reply> {
    let host = base
        .strip_prefix("http://")
        .expect("an http:// base URL")
        .to_owned();
    let barrier = Arc::new(tokio::sync::Barrier::new(requests.len()));
    let mut tasks = Vec::with_capacity(requests.len());
    for req in requests {
        let (host, barrier) = (host.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let bytes = req.bytes(&host);
            let (head, last) = bytes.split_at(bytes.len() - 1);
            let mut conn = TcpStream::connect(&host).await.expect("connect");
            conn.set_nodelay(true).expect("nodelay");
            conn.write_all(head)
                .await
                .expect("write all but the last byte");
            conn.flush().await.expect("flush");
            barrier.wait().await;
            conn.write_all(last).await.expect("write the last byte");
            let mut answer = Vec::new();
            conn.read_to_end(&mut answer)
                .await
                .expect("read the answer");
            parse(&answer)
        }));
    }
    let mut replies = Vec::with_capacity(tasks.len());
    for t in tasks {
        replies.push(t.await.expect("request task"));
    }
    replies
}

/// Parses an HTTP/1.1 answer read to the end of the connection.
fn parse(raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let code: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':')
            && let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.trim().as_bytes()),
                HeaderValue::from_str(v.trim()),
            )
        {
            headers.append(k, v);
        }
    }
    if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"))
    {
        body = dechunk(&body);
    }
    Reply {
        status: StatusCode::from_u16(code).expect("status"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        headers,
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&raw[..eol])
                .split(';')
                .next()
                .unwrap_or("0")
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        out.extend_from_slice(&raw[start..(start + size).min(raw.len())]);
        raw = &raw[(start + size + 2).min(raw.len())..];
    }
    out
}

/// How many answers have `status` and `errcode` (`""` for none).
pub fn count(replies: &[Reply], status: u16, errcode: &str) -> usize {
    replies
        .iter()
        .filter(|r| r.status.as_u16() == status && r.errcode() == errcode)
        .count()
}
