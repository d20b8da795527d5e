//! The commands: one module per command group; configuration loading and logging set-up
//! shared by them.

pub(crate) mod admin;
pub(crate) mod email;
pub(crate) mod import;
pub(crate) mod serve;
pub(crate) mod sms;

use std::path::PathBuf;

use tracing_subscriber::EnvFilter;
use vouch_config::{Config, DEFAULT_CONFIG_FILE, LogFormat};

use crate::cli::ConfigArg;

pub(crate) fn load_config(arg: &ConfigArg) -> anyhow::Result<Config> {
    let file = match &arg.config {
        Some(path) => Some(path.clone()),
        None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.exists()),
    };
    Config::load(file.as_deref()).map_err(|e| anyhow::anyhow!("{e}"))
}

pub(crate) fn init_logging(config: &Config) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.logging.level));
    // Colour only for a person at a terminal: not in files, pipes or journald, nor when
    // NO_COLOR is set (no-color.org).
    let colour = std::io::IsTerminal::is_terminal(&std::io::stdout())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour);
    match config.logging.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
}

/// The configured database, for a command (`connections` pooled), with an error that
/// names it without its password.
pub(crate) async fn open_database(
    config: &Config,
    connections: u32,
) -> anyhow::Result<vouch_storage::Db> {
    use anyhow::Context as _;
    vouch_storage::Db::connect(&config.database.url, connections)
        .await
        .with_context(|| {
            format!(
                "cannot open the database at {}",
                vouch_server::redact(&config.database.url)
            )
        })
}
