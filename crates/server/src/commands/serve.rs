//! `vouch serve`.

use std::path::Path;
use std::sync::Arc;

use vouch_config::DEFAULT_CONFIG_FILE;
use vouch_core::{OsSecretSource, SystemClock};
use vouch_server::Server;

use crate::cli::ConfigArg;
use crate::commands::{init_logging, load_config};

pub(crate) async fn serve(arg: &ConfigArg) -> anyhow::Result<()> {
    let config = load_config(arg)?;
    init_logging(&config);
    if let Some(path) = &arg.config {
        tracing::info!(file = %path.display(), "configuration loaded");
    } else if Path::new(DEFAULT_CONFIG_FILE).exists() {
        tracing::info!(file = DEFAULT_CONFIG_FILE, "configuration loaded");
    } else {
        tracing::info!("no configuration file; running on the embedded defaults");
    }
    let server_name = config.server_name.clone();
    let db_url = vouch_server::redact(&config.database.url);
    let server = Server::build(config, Arc::new(SystemClock), Arc::new(OsSecretSource)).await?;
    for addr in server.local_addrs() {
        tracing::info!(server_name, database = db_url, "listening on http://{addr}");
    }
    server.run_until(shutdown_signal()).await
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
