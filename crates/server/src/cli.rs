//! The command line: every command and flag `vouch` takes (clap definitions only).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "vouch",
    version,
    about = "A Matrix homeserver that verifies its users' email addresses and phone numbers itself"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(clap::Args)]
pub(crate) struct ConfigArg {
    /// Configuration file (default: ./vouch.toml if present, else the embedded defaults).
    /// Accepted anywhere on the line, before or after the subcommand.
    #[arg(long, short, global = true)]
    pub(crate) config: Option<PathBuf>,
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
pub(crate) enum ConfigCommand {
    /// Validate the configuration and print the effective values (secrets masked).
    Check(ConfigArg),
}

#[derive(Subcommand)]
pub(crate) enum EmailCommand {
    /// Send a test mail through the configured transport, now (not through the outbox).
    Test {
        /// Where to send it.
        address: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum ImportCommand {
    /// Copy users, password hashes, admin flags, deactivation, profiles and addresses from a
    /// Synapse database. Safe to run again: existing accounts are left alone.
    Synapse {
        /// Synapse's SQLite file or its `postgres://` URL.
        #[arg(long)]
        from: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum SmsCommand {
    /// Send a test SMS through the configured gateway, now (not through the outbox).
    Test {
        /// The number in international form, e.g. +447400123456.
        number: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum AdminCommand {
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
pub(crate) enum TokenCommand {
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

pub(crate) fn humantime_duration(s: &str) -> Result<Duration, String> {
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
