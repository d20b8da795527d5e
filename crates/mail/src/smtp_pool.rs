//! Pooled SMTP connections with Nagle's algorithm off.
//!
//! lettre 0.11.23 writes a message's body and its closing `.` as two writes and leaves
//! `TCP_NODELAY` unset, so the five-byte `.` waits for the server's delayed ACK of the
//! body: about 40 ms a mail on Linux, whatever the server's speed (fixed upstream after
//! that release, lettre pull request 1159, not yet published). Vouch opens the TCP
//! connection itself with `TCP_NODELAY` and hands it to lettre's SMTP client; a deadpool
//! pool keeps at most `[email.smtp] max_connections` of them.

use std::sync::Arc;
use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use tokio::net::TcpStream;
use vouch_config::SmtpTls;

/// A connection idle this long since its last mail is asked `NOOP` before it carries
/// another (some relays close idle connections after a few seconds); under load each is
/// reused within milliseconds and pays no extra round trip.
const IDLE_CHECK: Duration = Duration::from_secs(2);

/// A pooled connection and when it last carried a mail.
pub struct Pooled {
    /// The SMTP connection.
    pub conn: AsyncSmtpConnection,
    /// When it was opened or last finished a mail.
    pub last_used: std::time::Instant,
}

/// Why no connection could be had or a mail not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SmtpFailure {
    /// Connecting (or the TLS handshake) failed or timed out.
    #[error("{0}")]
    Connect(std::io::Error),
    /// The server or the SMTP dialogue failed.
    #[error("{0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
}

impl SmtpFailure {
    /// Whether retrying cannot help (a 5xx answer).
    pub fn is_permanent(&self) -> bool {
        matches!(self, SmtpFailure::Smtp(e) if e.is_permanent())
    }
}

/// Opens connections to the configured server: TCP with `TCP_NODELAY`, then implicit TLS,
/// `EHLO`, `STARTTLS` and `AUTH` as `[email.smtp]` says.
pub struct Connector {
    host: String,
    port: u16,
    timeout: Duration,
    hello: ClientId,
    credentials: Option<Credentials>,
    starttls: Option<TlsParameters>,
    implicit: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
}

impl Connector {
    /// A connector for `host:port`; connecting and greeting take at most `timeout`.
    pub fn new(
        host: &str,
        port: u16,
        tls: SmtpTls,
        timeout: Duration,
        credentials: Option<Credentials>,
    ) -> Result<Self, String> {
        let starttls = match tls {
            SmtpTls::Starttls => {
                Some(TlsParameters::new(host.to_owned()).map_err(|e| e.to_string())?)
            }
            _ => None,
        };
        let implicit = match tls {
            SmtpTls::Tls => {
                let roots = rustls::RootCertStore::from_iter(
                    webpki_roots::TLS_SERVER_ROOTS.iter().cloned(),
                );
                let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::aws_lc_rs::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
                let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                    .map_err(|e| format!("host {host}: {e}"))?;
                Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
            }
            _ => None,
        };
        Ok(Self {
            host: host.to_owned(),
            port,
            timeout,
            hello: ClientId::default(),
            credentials,
            starttls,
            implicit,
        })
    }

    /// A new connection, greeted (and authenticated) and ready for a mail.
    pub async fn connect(&self) -> Result<AsyncSmtpConnection, SmtpFailure> {
        tokio::time::timeout(self.timeout, self.connect_now())
            .await
            .map_err(|_| {
                SmtpFailure::Connect(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no SMTP greeting within {:?}", self.timeout),
                ))
            })?
    }

    async fn connect_now(&self) -> Result<AsyncSmtpConnection, SmtpFailure> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(SmtpFailure::Connect)?;
        tcp.set_nodelay(true).map_err(SmtpFailure::Connect)?;
        let stream: Box<dyn AsyncTokioStream> = match &self.implicit {
            Some((connector, name)) => Box::new(TlsStream(
                connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(SmtpFailure::Connect)?,
            )),
            None => Box::new(tcp),
        };
        let mut conn = AsyncSmtpConnection::connect_with_transport(stream, &self.hello).await?;
        if let Some(params) = &self.starttls {
            conn.starttls(params.clone(), &self.hello).await?;
        }
        if let Some(credentials) = &self.credentials {
            conn.auth(DEFAULT_MECHANISMS, credentials).await?;
        }
        Ok(conn)
    }
}

impl managed::Manager for Connector {
    type Type = Pooled;
    type Error = SmtpFailure;

    async fn create(&self) -> Result<Pooled, SmtpFailure> {
        Ok(Pooled {
            conn: self.connect().await?,
            last_used: std::time::Instant::now(),
        })
    }

    async fn recycle(&self, pooled: &mut Pooled, _: &Metrics) -> RecycleResult<SmtpFailure> {
        // A failed command leaves the connection marked broken (lettre sends QUIT then).
        if pooled.conn.has_broken() {
            return Err(RecycleError::message("the connection failed"));
        }
        if pooled.last_used.elapsed() > IDLE_CHECK && !pooled.conn.test_connected().await {
            return Err(RecycleError::message("the server closed the connection"));
        }
        Ok(())
    }
}

/// Sends one mail over a pooled connection within `timeout`. A connection whose exchange
/// did not finish (cut off by the timeout, or the caller gave up on it) is closed, never
/// pooled again: its next reply would be the unfinished mail's, one behind every command.
pub async fn send(
    pool: &Pool,
    timeout: Duration,
    envelope: &lettre::address::Envelope,
    message: &[u8],
) -> Result<(), SmtpFailure> {
    let pooled = pool.get().await.map_err(|e| match e {
        managed::PoolError::Backend(e) => e,
        other => SmtpFailure::Connect(std::io::Error::other(other.to_string())),
    })?;
    let mut sending = Unfinished(Some(pooled));
    let Some(held) = sending.0.as_mut() else {
        return Err(SmtpFailure::Connect(std::io::Error::other(
            "no pooled connection",
        )));
    };
    let sent = tokio::time::timeout(timeout, held.conn.send(envelope, message)).await;
    match sent {
        Ok(answer) => {
            // Finished (sent, or refused with the connection marked broken if it must
            // go): back to the pool, whose check closes a broken one.
            if let Some(mut pooled) = sending.0.take() {
                pooled.last_used = std::time::Instant::now();
            }
            answer.map(|_| ()).map_err(SmtpFailure::from)
        }
        Err(_) => Err(SmtpFailure::Connect(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("the SMTP server did not take the mail within {timeout:?}"),
        ))),
    }
}

/// A pooled connection in the middle of a mail: dropped unfinished, it is closed.
struct Unfinished(Option<managed::Object<Connector>>);

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(pooled) = self.0.take() {
            drop(managed::Object::take(pooled));
        }
    }
}

/// The pool: at most `max_connections` open at once; a sender waits for a free one.
pub type Pool = managed::Pool<Connector>;

/// Builds the pool.
pub fn pool(connector: Connector, max_connections: usize) -> Result<Pool, String> {
    managed::Pool::builder(connector)
        .max_size(max_connections.max(1))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| e.to_string())
}

/// An implicit-TLS stream as lettre's client takes it.
#[derive(Debug)]
struct TlsStream(tokio_rustls::client::TlsStream<TcpStream>);

impl AsyncTokioStream for TlsStream {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl tokio::io::AsyncRead for TlsStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
