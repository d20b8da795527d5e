//! Wiring: configuration, storage, services and listeners become a running server. The
//! binary (`main.rs`) and the integration tests start the server through the same code.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use tokio::net::TcpListener;
use vouch_config::Config;
use vouch_core::{Clock, SecretSource};
use vouch_storage::Db;

mod listener;

/// A server that is bound to its ports and ready to serve.
pub struct Server {
    listeners: Vec<TcpListener>,
    addrs: Vec<SocketAddr>,
    router: Router,
    db: Db,
    worker: vouch_outbox::Worker,
    housekeeping: Housekeeping,
    metrics: Option<(TcpListener, SocketAddr)>,
    limits: listener::Limits,
    liveness: Arc<vouch_api::health::Liveness>,
}

/// The periodic removal of expired state.
#[derive(Clone)]
struct Housekeeping {
    db: Db,
    clock: Arc<dyn Clock>,
    config: vouch_config::HousekeepingConfig,
}

impl Housekeeping {
    async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut backlog = false;
        loop {
            // A run that could not remove everything is followed by another at once, so
            // housekeeping keeps up with any backlog (e.g. a flood of UIA sessions).
            let pause = if backlog {
                Duration::from_millis(10)
            } else {
                self.config.interval
            };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                _ = stop.changed() => return,
            }
            let keep =
                i64::try_from(self.config.keep_sent_messages.as_millis()).unwrap_or(i64::MAX);
            let batch = i64::from(self.config.batch_size);
            backlog = false;
            match self.db.housekeeping(self.clock.now_ms(), batch, keep).await {
                Ok(p) => {
                    backlog = p.more;
                    for (kind, n) in [
                        ("validation_sessions", p.validation_sessions),
                        ("uia_sessions", p.uia_sessions),
                        ("access_tokens", p.access_tokens),
                        ("refresh_tokens", p.refresh_tokens),
                        ("outbox", p.outbox),
                    ] {
                        vouch_metrics::HOUSEKEEPING
                            .with_label_values(&[kind])
                            .inc_by(n);
                    }
                    if p != vouch_storage::Purged::default() {
                        tracing::info!(?p, "housekeeping removed expired state");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "housekeeping failed; will try again"),
            }
        }
    }
}

/// `GET /metrics`: Prometheus text, with the outbox gauges read from the database.
async fn metrics_handler(
    axum::extract::State((db, clock)): axum::extract::State<(Db, Arc<dyn Clock>)>,
) -> String {
    let now = clock.now_ms();
    match db.pending_by_channel().await {
        Ok(pending) => {
            for channel in ["email", "sms"] {
                let p = pending.iter().find(|p| p.channel == channel);
                vouch_metrics::OUTBOX_PENDING
                    .with_label_values(&[channel])
                    .set(p.map_or(0, |p| p.count));
                let age = p
                    .and_then(|p| p.oldest)
                    .map_or(0, |o| (now - o).max(0) / 1000);
                vouch_metrics::OUTBOX_OLDEST_AGE
                    .with_label_values(&[channel])
                    .set(age);
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics: cannot read the outbox"),
    }
    vouch_metrics::render()
}

/// How often the outbox worker looks for due mail when nothing wakes it.
const OUTBOX_POLL: Duration = Duration::from_millis(500);

impl Server {
    /// Connects the database (running migrations), binds every listen address and builds
    /// the router. An empty `public_baseurl` becomes `http://<first bound address>/`.
    pub async fn build(
        mut config: Config,
        clock: Arc<dyn Clock>,
        secrets: Arc<dyn SecretSource>,
    ) -> anyhow::Result<Self> {
        let db = Db::connect_with(
            &config.database.url,
            config.database.max_connections,
            config.database.acquire_timeout,
        )
        .await
        .with_context(|| {
            format!(
                "cannot open the database at {}",
                redact(&config.database.url)
            )
        })?;
        let mut listeners = Vec::new();
        let mut addrs = Vec::new();
        for addr in config.listen_addrs() {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            addrs.push(listener.local_addr()?);
            listeners.push(listener);
        }
        if let Some(first) = addrs.first().filter(|_| config.public_baseurl.is_empty()) {
            config.public_baseurl = format!("http://{first}/");
        }
        let transport = vouch_mail::Transport::from_config(&config.email)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let sms =
            vouch_sms::Gateway::from_config(&config.sms).map_err(|e| anyhow::anyhow!("{e}"))?;
        let signing_key =
            vouch_api::signing_key::SigningKey::load(&db, secrets.as_ref(), clock.now_ms())
                .await
                .map_err(|e| anyhow::anyhow!("signing key: {e}"))?;
        let services =
            vouch_api::Services::new(config, db.clone(), clock.clone(), secrets, signing_key)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        let worker = vouch_outbox::Worker {
            db: db.clone(),
            transport,
            sms,
            homeserver: services.homeserver.clone(),
            clock: clock.clone(),
            wake: services.mail_wake.clone(),
            poll: OUTBOX_POLL,
        };
        let housekeeping = Housekeeping {
            db: db.clone(),
            clock: clock.clone(),
            config: services.config.housekeeping.clone(),
        };
        let metrics = match services.config.metrics.listen.as_str() {
            "" => None,
            addr => {
                let listener = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} for metrics"))?;
                let bound = listener.local_addr()?;
                Some((listener, bound))
            }
        };
        vouch_metrics::init();
        let limits = listener::Limits {
            max_connections: services.config.http.max_connections,
            max_connections_per_ip: services.config.http.max_connections_per_ip,
            trusted_proxies: services.config.http.trusted_proxies.clone(),
            header_read_timeout: services.config.http.header_read_timeout,
            write_stall_timeout: services.config.http.response_write_timeout,
        };
        let liveness = services.liveness.clone();
        let router = vouch_api::router(Arc::new(services));
        Ok(Self {
            listeners,
            addrs,
            router,
            db,
            worker,
            housekeeping,
            metrics,
            limits,
            liveness,
        })
    }

    /// Where Prometheus metrics are served, if `[metrics] listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(_, a)| *a)
    }

    /// The bound addresses (with real ports when the configuration said port 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Serves until `shutdown` completes, then finishes in-flight requests and closes the
    /// database.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let transport = self.worker.transport.clone();
        tokio::spawn(async move {
            // A clear line when the SMTP server cannot be reached. Mail is queued regardless
            // and delivered once it can be.
            if let Err(e) = transport.check().await {
                tracing::warn!(error = %e, "SMTP server unreachable at start-up; mail will be queued and retried");
            }
        });
        let (stop_worker, worker_stopped) = tokio::sync::watch::channel(false);
        let clock = self.worker.clock.clone();
        let liveness = self.liveness.clone();
        let worker = {
            let (w, stop, live) = (self.worker, worker_stopped.clone(), liveness.clone());
            tokio::spawn(supervise(
                "outbox",
                worker_stopped.clone(),
                move |up| live.outbox.store(up, Ordering::Relaxed),
                move || w.clone().run(stop.clone()),
            ))
        };
        let housekeeping = {
            let (h, stop, live) = (self.housekeeping, worker_stopped.clone(), liveness);
            tokio::spawn(supervise(
                "housekeeping",
                worker_stopped.clone(),
                move |up| live.housekeeping.store(up, Ordering::Relaxed),
                move || h.clone().run(stop.clone()),
            ))
        };
        if let Some((listener, addr)) = self.metrics {
            let app = Router::new()
                .route("/metrics", axum::routing::get(metrics_handler))
                .with_state((self.db.clone(), clock));
            let mut stop = worker_stopped.clone();
            tracing::info!("metrics on http://{addr}/metrics");
            tokio::spawn(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stop.changed().await;
                    })
                    .await;
            });
        }
        let (tx, _) = tokio::sync::broadcast::channel::<()>(1);
        let mut tasks = Vec::new();
        for listener in self.listeners {
            let mut rx = tx.subscribe();
            let router = self.router.clone();
            let limits = self.limits.clone();
            tasks.push(tokio::spawn(listener::serve(
                listener,
                router,
                limits,
                async move {
                    let _ = rx.recv().await;
                },
            )));
        }
        shutdown.await;
        let _ = tx.send(());
        for task in tasks {
            task.await.context("server task panicked")?;
        }
        let _ = stop_worker.send(true);
        let _ = worker.await;
        let _ = housekeeping.await;
        self.db.close().await;
        Ok(())
    }
}

/// Runs a background task until `stop` turns true, restarting it (loudly: an error line, a
/// restart counter, `vouch_background_task_up` at 0 meanwhile) whenever it panics or ends
/// on its own. Mail, SMS and clean-up never stop silently.
async fn supervise<F, Fut>(
    name: &'static str,
    mut stop: tokio::sync::watch::Receiver<bool>,
    set_up: impl Fn(bool),
    start: F,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let up = vouch_metrics::TASK_UP.with_label_values(&[name]);
    loop {
        up.set(1);
        set_up(true);
        let ended = tokio::spawn(start()).await;
        up.set(0);
        set_up(false);
        if *stop.borrow() {
            return;
        }
        match ended {
            Err(e) if e.is_panic() => {
                tracing::error!(
                    task = name,
                    "background task panicked; restarting it in 1 s"
                );
            }
            _ => tracing::error!(
                task = name,
                "background task ended on its own; restarting it in 1 s"
            ),
        }
        vouch_metrics::TASK_RESTARTS
            .with_label_values(&[name])
            .inc();
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match url.split_once('@') {
        Some((creds, host)) if creds.contains("://") && creds.matches(':').count() > 1 => {
            let scheme_user = creds.rsplit_once(':').map_or(creds, |(s, _)| s);
            format!("{scheme_user}:********@{host}")
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn a_task_that_panics_is_restarted_loudly() {
        let runs = Arc::new(AtomicU32::new(0));
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let counted = runs.clone();
        let before = vouch_metrics::TASK_RESTARTS
            .with_label_values(&["test-task"])
            .get();
        let supervisor = tokio::spawn(supervise(
            "test-task",
            stop,
            |_| {},
            move || {
                let counted = counted.clone();
                async move {
                    assert!(counted.fetch_add(1, Ordering::SeqCst) > 0, "first run dies");
                    std::future::pending::<()>().await;
                }
            },
        ));
        for _ in 0..50 {
            if runs.load(Ordering::SeqCst) >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(runs.load(Ordering::SeqCst), 2, "restarted after the panic");
        assert_eq!(
            vouch_metrics::TASK_RESTARTS
                .with_label_values(&["test-task"])
                .get(),
            before + 1
        );
        assert_eq!(
            vouch_metrics::TASK_UP
                .with_label_values(&["test-task"])
                .get(),
            1
        );
        stop_tx.send(true).unwrap();
        supervisor.abort();
    }
}
