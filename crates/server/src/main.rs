//! `vouch`: the homeserver binary.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use vouch_config::{Config, DEFAULT_CONFIG_FILE, LogFormat};
use vouch_core::secrets::random_string;
use vouch_core::{Clock, OsSecretSource, SystemClock};
use vouch_server::Server;
use vouch_storage::Db;

#[derive(Parser)]
#[command(
    name = "vouch",
    version,
    about = "A Matrix homeserver that verifies its users' email addresses and phone numbers itself"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct ConfigArg {
    /// Configuration file (default: ./vouch.toml if present, else the embedded defaults).
    #[arg(long, short)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the homeserver.
    Serve(ConfigArg),
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Email tools.
    Email {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        command: EmailCommand,
    },
    /// SMS tools.
    Sms {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        command: SmsCommand,
    },
    /// Administration against the configured database (the server may be running or not).
    Admin {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the configuration and print the effective values (secrets masked).
    Check(ConfigArg),
}

#[derive(Subcommand)]
enum EmailCommand {
    /// Send a test mail through the configured transport, now (not through the outbox).
    Test {
        /// Where to send it.
        address: String,
    },
}

#[derive(Subcommand)]
enum SmsCommand {
    /// Send a test SMS through the configured gateway, now (not through the outbox).
    Test {
        /// The number in international form, e.g. +447400123456.
        number: String,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Registration tokens (`m.login.registration_token`).
    #[command(name = "registration-token", subcommand)]
    RegistrationToken(TokenCommand),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it.
    Create {
        /// The token text (default: 16 random characters).
        #[arg(long)]
        token: Option<String>,
        /// How many registrations it allows (default: unlimited).
        #[arg(long)]
        uses: Option<u32>,
        /// How long it is valid, e.g. "7d" (default: forever).
        #[arg(long, value_parser = humantime_duration)]
        expires_in: Option<Duration>,
    },
    /// List tokens.
    List,
    /// Delete a token.
    Delete {
        /// The token text.
        token: String,
    },
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like 90s, 15m, 12h or 7d"))?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("'{s}' is not a duration like 90s, 15m, 12h or 7d")),
    };
    Ok(Duration::from_secs(secs))
}

fn load_config(arg: &ConfigArg) -> anyhow::Result<Config> {
    let file = match &arg.config {
        Some(path) => Some(path.clone()),
        None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.exists()),
    };
    Config::load(file.as_deref()).map_err(|e| anyhow::anyhow!("{e}"))
}

fn init_logging(config: &Config) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.logging.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match config.logging.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(arg) => serve(&arg).await,
        Command::Config {
            command: ConfigCommand::Check(arg),
        } => {
            let config = load_config(&arg)?;
            print!("{}", config.to_masked_toml());
            eprintln!("configuration OK");
            Ok(())
        }
        Command::Admin { config, command } => admin(&config, command).await,
        Command::Sms {
            config,
            command: SmsCommand::Test { number },
        } => sms_test(&config, &number).await,
        Command::Email {
            config,
            command: EmailCommand::Test { address },
        } => email_test(&config, &address).await,
    }
}

async fn serve(arg: &ConfigArg) -> anyhow::Result<()> {
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

async fn shutdown_signal() {
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

async fn email_test(arg: &ConfigArg, address: &str) -> anyhow::Result<()> {
    let config = load_config(arg)?;
    let email = vouch_core::threepid::Email::parse(address)
        .map_err(|e| anyhow::anyhow!("{address}: {e}"))?;
    let e = &config.email;
    let dir = Some(Path::new(&e.template_dir)).filter(|p| !p.as_os_str().is_empty());
    let templates = vouch_mail::Templates::new(dir)?;
    let composer = vouch_mail::Composer::new(
        Arc::new(templates),
        &e.from,
        e.subjects.clone(),
        e.app_name.clone(),
        config.server_name.clone(),
    )?;
    let transport = vouch_mail::Transport::from_config(e).map_err(|e| anyhow::anyhow!("{e}"))?;
    let ctx = composer.context(email.as_str(), String::new(), Duration::ZERO);
    let mail = composer.compose("test", &ctx, SystemClock.now_ms(), &OsSecretSource)?;
    transport
        .send(&mail.envelope_from, &mail.recipient, &mail.message)
        .await
        .map_err(|e| anyhow::anyhow!("sending failed: {e}"))?;
    println!("test mail sent to {} via {}", email, transport.describe());
    Ok(())
}

async fn sms_test(arg: &ConfigArg, number: &str) -> anyhow::Result<()> {
    let config = load_config(arg)?;
    let msisdn = vouch_core::threepid::Msisdn::parse_international(number).map_err(|e| {
        anyhow::anyhow!("{number}: {e} (use the international form, e.g. +447400123456)")
    })?;
    let gateway =
        vouch_sms::Gateway::from_config(&config.sms).map_err(|e| anyhow::anyhow!("{e}"))?;
    let from = config
        .sms
        .sender_per_country
        .get(msisdn.country())
        .map(String::as_str);
    let body = format!(
        "This is a test message from {}. SMS delivery works.",
        config.email.app_name
    );
    gateway
        .send(&msisdn.e164(), from, &body, None)
        .await
        .map_err(|e| anyhow::anyhow!("sending failed: {e}"))?;
    println!(
        "test SMS sent to {} via {}",
        msisdn.e164(),
        gateway.describe()
    );
    Ok(())
}

async fn admin(arg: &ConfigArg, command: AdminCommand) -> anyhow::Result<()> {
    let config = load_config(arg)?;
    let db = Db::connect(&config.database.url, 2)
        .await
        .with_context(|| {
            format!(
                "cannot open the database at {}",
                vouch_server::redact(&config.database.url)
            )
        })?;
    let now = SystemClock.now_ms();
    match command {
        AdminCommand::RegistrationToken(TokenCommand::Create {
            token,
            uses,
            expires_in,
        }) => {
            let token = token.unwrap_or_else(|| {
                random_string(
                    &OsSecretSource,
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                    16,
                )
            });
            if token.is_empty()
                || token.len() > 64
                || !token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
            {
                anyhow::bail!("a registration token is 1 to 64 characters of [A-Za-z0-9._~-]");
            }
            let expiry = expires_in.map(|d| now.saturating_add(vouch_core::clock::duration_ms(d)));
            if !db
                .create_registration_token(&token, uses.map(i64::from), expiry, now)
                .await?
            {
                anyhow::bail!("a token '{token}' exists already");
            }
            println!("{token}");
        }
        AdminCommand::RegistrationToken(TokenCommand::List) => {
            println!(
                "{:<24} {:>8} {:>8} {:>10}  expires",
                "token", "pending", "used", "allowed"
            );
            for t in db.registration_tokens().await? {
                println!(
                    "{:<24} {:>8} {:>8} {:>10}  {}",
                    t.token,
                    t.pending,
                    t.completed,
                    t.uses_allowed.map_or("unlimited".into(), |n| n.to_string()),
                    t.expiry_time
                        .map_or("never".into(), |ms| format!("{ms} (ms since epoch)")),
                );
            }
        }
        AdminCommand::RegistrationToken(TokenCommand::Delete { token }) => {
            if !db.delete_registration_token(&token).await? {
                anyhow::bail!("no token '{token}'");
            }
            println!("deleted {token}");
        }
    }
    db.close().await;
    Ok(())
}
