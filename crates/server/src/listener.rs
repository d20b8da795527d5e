//! Serving HTTP/1.1 on a listener with the limits a slow or hostile client meets: at most
//! `[http] max_connections` open connections (one more is closed at once), request headers
//! complete within `header_read_timeout` (also the idle time allowed between requests on a
//! kept-alive connection), and a request body within `body_read_timeout` in all (the
//! router reads it), and at most `max_connections_per_ip` from one client address. Shutdown stops accepting and lets in-flight requests finish.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

/// What one listener enforces.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections at most.
    pub max_connections: usize,
    /// Open connections from one client address (its /64 for IPv6) at most; trusted
    /// proxies, which carry many clients' connections, are not counted.
    pub max_connections_per_ip: usize,
    /// The trusted proxies.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Time for a request's headers (and idle time between requests).
    pub header_read_timeout: Duration,
    /// Time a client may leave an answer unread before the connection is closed.
    pub write_stall_timeout: Duration,
}

/// Open connections per client address.
#[derive(Default)]
struct PerAddress(std::sync::Mutex<std::collections::HashMap<String, usize>>);

impl PerAddress {
    /// Counts one more connection from `key`, unless it has `max` already.
    fn enter(self: &Arc<Self>, key: String, max: usize) -> Option<AddressSlot> {
        let mut open = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = open.entry(key.clone()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            table: self.clone(),
            key,
        })
    }
}

/// One connection counted against its address; dropping it uncounts it.
struct AddressSlot {
    table: Arc<PerAddress>,
    key: String,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self
            .table
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then waits for open
/// connections to finish their requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_address = Arc::new(PerAddress::default());
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment, never spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Full: closing at once costs less than letting it wait in the queue.
            vouch_metrics::RATE_LIMITED
                .with_label_values(&["max_connections"])
                .inc();
            drop(stream);
            continue;
        };
        let client =
            vouch_api::client_ip::ClientIp(vouch_api::client_ip::resolve(peer.ip(), &[], &[]));
        let trusted = limits.trusted_proxies.iter().any(|n| n.contains(&client.0));
        let address_slot = if trusted {
            None
        } else {
            match per_address.enter(client.limit_key(), limits.max_connections_per_ip) {
                Some(s) => Some(s),
                None => {
                    vouch_metrics::RATE_LIMITED
                        .with_label_values(&["max_connections_per_ip"])
                        .inc();
                    drop(stream);
                    continue;
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = tower::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            router.clone().oneshot(req.map(axum::body::Body::new))
        });
        let io = TokioIo::new(StallGuard::new(stream, limits.write_stall_timeout));
        let conn = builder.serve_connection(io, TowerToHyperService::new(service));
        let watched = graceful.watch(conn);
        tokio::spawn(async move {
            // A client that breaks off or times out is no error of ours.
            let _ = watched.await;
            drop(address_slot);
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// A connection whose writes may not stall: when the client stops reading (its window
/// and our send buffer full) for longer than `stall`, the write fails and the connection
/// closes. Without it, a client that pipelines requests and never reads the answers holds
/// its connection (and its slot) for good, since no read deadline ever fires.
pub(crate) struct StallGuard<T> {
    inner: T,
    stall: Duration,
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<T> StallGuard<T> {
    pub(crate) fn new(inner: T, stall: Duration) -> Self {
        Self {
            inner,
            stall,
            timer: None,
        }
    }

    /// Called when a write could not proceed: starts or checks the stall timer.
    fn stalled<R>(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<R>> {
        let stall = self.stall;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        match timer.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client stopped reading",
            ))),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }

    fn progressed<R>(&mut self, r: std::io::Result<R>) -> std::task::Poll<std::io::Result<R>> {
        self.timer = None;
        std::task::Poll::Ready(r)
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for StallGuard<T> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for StallGuard<T> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        match std::pin::Pin::new(&mut this.inner).poll_write(cx, buf) {
            std::task::Poll::Ready(r) => this.progressed(r),
            std::task::Poll::Pending => this.stalled(cx),
        }
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        match std::pin::Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            std::task::Poll::Ready(r) => this.progressed(r),
            std::task::Poll::Pending => this.stalled(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        match std::pin::Pin::new(&mut this.inner).poll_flush(cx) {
            std::task::Poll::Ready(r) => this.progressed(r),
            std::task::Poll::Pending => this.stalled(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
