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

/// mimalloc instead of the system allocator: password hashes take tens of MiB each, and
/// glibc's allocator kept such freed buffers in per-thread arenas (peak RSS grew past
/// 900 MiB under 300 concurrent hashes, two at a time); mimalloc gives them back.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Accepted anywhere on the line, before or after the subcommand.
    #[arg(long, short, global = true)]
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
    /// Move accounts in from another homeserver.
    Import {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        command: ImportCommand,
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
enum ImportCommand {
    /// Copy users, password hashes, admin flags, deactivation, profiles and addresses from a
    /// Synapse database. Safe to run again: existing accounts are left alone.
    Synapse {
        /// Synapse's SQLite file or its `postgres://` URL.
        #[arg(long)]
        from: String,
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
    /// Create an account.
    CreateUser {
        /// Localpart or full user ID.
        user: String,
        /// The password (or --password-file; without either, read from standard input).
        #[arg(long)]
        password: Option<String>,
        /// A file holding the password.
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Make the account a server admin.
        #[arg(long)]
        admin: bool,
        /// Attach a (verified) email address.
        #[arg(long)]
        email: Vec<String>,
    },
    /// Set an account's password; every device is logged out unless --keep-devices.
    SetPassword {
        /// Localpart or full user ID.
        user: String,
        /// The password (or --password-file; without either, read from standard input).
        #[arg(long)]
        password: Option<String>,
        /// A file holding the password.
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Keep the account's devices logged in.
        #[arg(long)]
        keep_devices: bool,
    },
    /// Attach an email address or phone number to an account.
    #[command(name = "add-3pid")]
    AddThreepid {
        /// Localpart or full user ID.
        user: String,
        /// `email` or `msisdn`.
        medium: String,
        /// The address (phone numbers in international form).
        address: String,
    },
    /// Remove an email address or phone number from an account.
    #[command(name = "remove-3pid")]
    RemoveThreepid {
        /// Localpart or full user ID.
        user: String,
        /// `email` or `msisdn`.
        medium: String,
        /// The address.
        address: String,
    },
    /// Show an account, found by user ID, email address or phone number.
    ShowUser {
        /// `@user:server`, `localpart`, `someone@example.org` or `+447400123456`.
        who: String,
    },
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

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One readable line for operators; no backtrace.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
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
        Command::Import {
            config,
            command: ImportCommand::Synapse { from },
        } => import_synapse(&config, &from).await,
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

async fn import_synapse(arg: &ConfigArg, from: &str) -> anyhow::Result<()> {
    let config = load_config(arg)?;
    let source = vouch_storage::SynapseSource::open(from)
        .await
        .with_context(|| {
            format!(
                "cannot open the Synapse database {}",
                vouch_server::redact(from)
            )
        })?;
    let (names, total) = source.server_names().await?;
    if let Some(other) = names.iter().find(|n| **n != config.server_name) {
        anyhow::bail!(
            "the Synapse database holds users of '{other}', but this server is '{}': refusing to mix two servers' names (set server_name = \"{other}\")",
            config.server_name
        );
    }
    let db = Db::connect(&config.database.url, 4)
        .await
        .with_context(|| {
            format!(
                "cannot open the database at {}",
                vouch_server::redact(&config.database.url)
            )
        })?;
    eprintln!(
        "importing {total} users from Synapse into {}",
        vouch_server::redact(&config.database.url)
    );
    let hasher = vouch_api::state::password_hasher(&config.password);
    let (mut seen, mut created, mut existing, mut threepids, mut conflicts) = (0_i64, 0, 0, 0, 0);
    let mut refused = 0_u64;
    let mut after = String::new();
    loop {
        let page = source.users_after(&after, 500).await?;
        let Some(last) = page.last() else { break };
        after = last.user_id.clone();
        for user in &page {
            if let Err(why) = check_imported(user, &config, &hasher) {
                refused += 1;
                eprintln!("  {}: refused: {why}", user.user_id.escape_debug());
                continue;
            }
            let outcome = db.import_user(user).await?;
            if outcome.created {
                created += 1
            } else {
                existing += 1
            }
            threepids += outcome.threepids_added;
            conflicts += outcome.threepids_conflicting;
            if outcome.threepids_conflicting > 0 {
                eprintln!(
                    "  {}: an address of theirs belongs to another account here; left out",
                    user.user_id.escape_debug()
                );
            }
        }
        seen += i64::try_from(page.len()).unwrap_or(0);
        eprintln!("  {seen}/{total} users");
    }
    println!(
        "imported {created} users ({existing} already here, left as they are), {threepids} addresses ({conflicts} conflicting, left out), {refused} refused"
    );
    db.close().await;
    if refused > 0 {
        anyhow::bail!(
            "{refused} users were refused (see above); the others are in, and a second run skips them"
        );
    }
    Ok(())
}

/// What an imported account must be before it is written: a user ID of this server in
/// the historical grammar, a password hash Vouch can verify within the configured cost
/// ceilings, and a profile of sane size.
fn check_imported(
    user: &vouch_storage::ImportedUser,
    config: &vouch_config::Config,
    hasher: &vouch_core::password::PasswordHasher,
) -> Result<(), String> {
    let expected = format!("@{}:{}", user.localpart, config.server_name);
    if user.user_id != expected
        || !vouch_core::localpart::is_historical_localpart(&user.localpart, &config.server_name)
    {
        return Err("the user ID is not one this server can hold".into());
    }
    if let Some(hash) = &user.password_hash {
        hasher
            .check_stored(hash)
            .map_err(|e| format!("password hash: {e}"))?;
    }
    if user
        .displayname
        .as_ref()
        .is_some_and(|d| d.chars().count() > 256)
    {
        return Err("the display name is longer than 256 characters".into());
    }
    if user.avatar_url.as_ref().is_some_and(|a| a.len() > 1000) {
        return Err("the avatar URL is longer than 1000 bytes".into());
    }
    Ok(())
}

/// The services, for commands that hash passwords or render users without serving.
async fn offline_services(config: &Config, db: Db) -> anyhow::Result<Arc<vouch_api::Services>> {
    let key = vouch_api::identity::SigningKey::load(&db, &OsSecretSource, SystemClock.now_ms())
        .await
        .map_err(|e| anyhow::anyhow!("signing key: {e}"))?;
    let services = vouch_api::Services::new(
        config.clone(),
        db,
        Arc::new(SystemClock),
        Arc::new(OsSecretSource),
        key,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Arc::new(services))
}

/// `alice` or `@alice:server` as a full user ID.
fn full_user_id(config: &Config, user: &str) -> String {
    if user.starts_with('@') {
        user.to_owned()
    } else {
        format!("@{}:{}", user.to_lowercase(), config.server_name)
    }
}

async fn existing_user(db: &Db, config: &Config, user: &str) -> anyhow::Result<String> {
    let user_id = full_user_id(config, user);
    db.user(&user_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no account {user_id}"))?;
    Ok(user_id)
}

/// An address in its canonical form.
fn canonical(medium: &str, address: &str) -> anyhow::Result<String> {
    Ok(match medium {
        "email" => vouch_core::threepid::Email::parse(address)?
            .as_str()
            .to_owned(),
        "msisdn" => vouch_core::threepid::Msisdn::parse_international(address)?
            .as_str()
            .to_owned(),
        other => anyhow::bail!("unknown medium {other} (email or msisdn)"),
    })
}

/// The password from the flag, the file, or standard input (one line); never echoed or logged.
fn read_password(password: Option<String>, file: Option<PathBuf>) -> anyhow::Result<String> {
    if let Some(p) = password {
        return Ok(p);
    }
    if let Some(f) = file {
        let text =
            std::fs::read_to_string(&f).with_context(|| format!("cannot read {}", f.display()))?;
        return Ok(text.trim_end_matches(['\r', '\n']).to_owned());
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let p = line.trim_end_matches(['\r', '\n']).to_owned();
    anyhow::ensure!(
        !p.is_empty(),
        "no password given (use --password, --password-file or standard input)"
    );
    Ok(p)
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
        AdminCommand::CreateUser {
            user,
            password,
            password_file,
            admin,
            email,
        } => {
            let services = offline_services(&config, db.clone()).await?;
            let user_id = full_user_id(&config, &user);
            let localpart = user_id
                .trim_start_matches('@')
                .split(':')
                .next()
                .unwrap_or_default()
                .to_owned();
            let parsed = vouch_core::localpart::Localpart::parse(&localpart, &config.server_name)?;
            anyhow::ensure!(parsed.as_str() == localpart, "user IDs must be lower-case");
            let password = read_password(password, password_file)?;
            let threepids = email
                .iter()
                .map(|e| canonical("email", e).map(|a| ("email".to_owned(), a, now)))
                .collect::<anyhow::Result<Vec<_>>>()?;
            services
                .create_user(vouch_api::accounts::NewUser {
                    localpart: Some(parsed),
                    password: Some(password),
                    admin,
                    threepids,
                    ..vouch_api::accounts::NewUser::default()
                })
                .await
                .map_err(|e| anyhow::anyhow!("cannot create {user_id}: {e}"))?;
            println!(
                "created {user_id}{}",
                if admin { " (server admin)" } else { "" }
            );
        }
        AdminCommand::SetPassword {
            user,
            password,
            password_file,
            keep_devices,
        } => {
            let services = offline_services(&config, db.clone()).await?;
            let user_id = existing_user(&db, &config, &user).await?;
            let password = read_password(password, password_file)?;
            services.policy.check(&password)?;
            let hash = services
                .hash_password(password)
                .await
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            db.set_password(&user_id, &hash, !keep_devices, None)
                .await?;
            println!(
                "password of {user_id} changed{}",
                if keep_devices {
                    ""
                } else {
                    "; all devices logged out"
                }
            );
        }
        AdminCommand::AddThreepid {
            user,
            medium,
            address,
        } => {
            let user_id = existing_user(&db, &config, &user).await?;
            let address = canonical(&medium, &address)?;
            if let Some(owner) = db.threepid_owner(&medium, &address).await? {
                anyhow::bail!("{address} already belongs to {owner}");
            }
            let mut list: Vec<(String, String)> = db
                .threepids(&user_id)
                .await?
                .into_iter()
                .map(|t| (t.medium, t.address))
                .collect();
            list.push((medium.clone(), address.clone()));
            anyhow::ensure!(
                db.replace_threepids(&user_id, &list, now).await?,
                "{address} is already in use"
            );
            println!("added {medium} {address} to {user_id}");
        }
        AdminCommand::RemoveThreepid {
            user,
            medium,
            address,
        } => {
            let user_id = existing_user(&db, &config, &user).await?;
            let address = canonical(&medium, &address)?;
            anyhow::ensure!(
                db.delete_threepid(&user_id, &medium, &address).await?,
                "{user_id} has no {medium} {address}"
            );
            println!("removed {medium} {address} from {user_id}");
        }
        AdminCommand::ShowUser { who } => {
            let services = offline_services(&config, db.clone()).await?;
            let user_id = if who.starts_with('@') || !(who.contains('@') || who.starts_with('+')) {
                full_user_id(&config, &who)
            } else {
                let medium = if who.contains('@') { "email" } else { "msisdn" };
                db.threepid_owner(medium, &canonical(medium, &who)?)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("no account has {who}"))?
            };
            let user = db
                .user(&user_id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no account {user_id}"))?;
            let json = vouch_api::admin::users::user_json(&services, &user)
                .await
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
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
