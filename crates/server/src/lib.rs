//! Wiring: configuration, storage, services and listeners become a running server. The
//! binary (`main.rs`) and the integration tests start the server through the same code.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use tokio::net::TcpListener;
use vouch_config::Config;
use vouch_core::{Clock, SecretSource};
use vouch_storage::Db;

/// A server that is bound to its ports and ready to serve.
pub struct Server {
    listeners: Vec<TcpListener>,
    addrs: Vec<SocketAddr>,
    router: Router,
    db: Db,
    worker: vouch_outbox::Worker,
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
        let db = Db::connect(&config.database.url, config.database.max_connections)
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
        let services = vouch_api::Services::new(config, db.clone(), clock.clone(), secrets)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let worker = vouch_outbox::Worker {
            db: db.clone(),
            transport,
            sms,
            clock,
            wake: services.mail_wake.clone(),
            poll: OUTBOX_POLL,
        };
        let router = vouch_api::router(Arc::new(services));
        Ok(Self {
            listeners,
            addrs,
            router,
            db,
            worker,
        })
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
        let worker = tokio::spawn(self.worker.run(worker_stopped));
        let (tx, _) = tokio::sync::broadcast::channel::<()>(1);
        let mut tasks = Vec::new();
        for listener in self.listeners {
            let mut rx = tx.subscribe();
            let app = self
                .router
                .clone()
                .into_make_service_with_connect_info::<SocketAddr>();
            tasks.push(tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = rx.recv().await;
                    })
                    .await
            }));
        }
        shutdown.await;
        let _ = tx.send(());
        for task in tasks {
            task.await
                .context("server task panicked")?
                .context("server failed")?;
        }
        let _ = stop_worker.send(true);
        let _ = worker.await;
        self.db.close().await;
        Ok(())
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
