//! `[email]`: email: verification mails, their transport, templates and policies.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Secret;

/// `[email]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmailConfig {
    /// Whether the server verifies email addresses at all. Off: the email requestToken
    /// endpoints answer `M_THREEPID_MEDIUM_NOT_SUPPORTED` and no flow offers email.
    pub enabled: bool,
    /// `log` (print the mail), `file` (write `.eml` files) or `smtp`.
    pub transport: EmailTransport,
    /// The sender, e.g. `Example Chat <noreply@example.org>`.
    pub from: String,
    /// The service's name in mails and pages.
    pub app_name: String,
    /// How long a link in a verification mail works.
    #[serde(with = "humantime_serde")]
    pub validation_token_lifetime: Duration,
    /// Wrong tokens a session takes before it is burned.
    pub max_attempts: u32,
    /// Hosts `next_link` may point at; empty: any http(s) host.
    pub next_link_domain_allowlist: Vec<String>,
    /// Answer "in use" / "not found" with a normal `sid` that never validates (and mail the
    /// owner of an address in use a notice), so that requestToken does not reveal which
    /// addresses have accounts.
    pub inhibit_3pid_errors: bool,
    /// Regular expressions (on the canonical address) of the addresses accepted; empty:
    /// every address. Others get 403 `M_THREEPID_DENIED`.
    pub allowed_3pids: Vec<String>,
    /// Directory with templates that replace the embedded ones (same file names).
    pub template_dir: String,
    /// Subjects of the mails (minijinja; `app_name` is available).
    pub subjects: EmailSubjects,
    /// `[email.smtp]`.
    pub smtp: SmtpConfig,
    /// `[email.file]`.
    pub file: FileTransportConfig,
}

/// Which transport sends mail.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EmailTransport {
    /// Print the mail to the log (the embedded default: no SMTP server needed).
    Log,
    /// Write each mail as an `.eml` file.
    File,
    /// Send over SMTP.
    Smtp,
}

impl Default for EmailConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            transport: EmailTransport::Log,
            from: "Vouch <noreply@localhost>".into(),
            app_name: "Vouch".into(),
            validation_token_lifetime: Duration::from_secs(3600),
            max_attempts: 5,
            next_link_domain_allowlist: Vec::new(),
            inhibit_3pid_errors: false,
            allowed_3pids: Vec::new(),
            template_dir: String::new(),
            subjects: EmailSubjects::default(),
            smtp: SmtpConfig::default(),
            file: FileTransportConfig::default(),
        }
    }
}

/// `[email.subjects]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmailSubjects {
    /// Registration mail.
    pub registration: String,
    /// Password reset mail.
    pub password_reset: String,
    /// Adding an address to an account.
    pub add_threepid: String,
    /// Notice to the owner when someone tries to use an address that has an account.
    pub already_in_use: String,
}

impl Default for EmailSubjects {
    fn default() -> Self {
        Self {
            registration: "Confirm your email address for {{ app_name }}".into(),
            password_reset: "Reset your {{ app_name }} password".into(),
            add_threepid: "Confirm your new email address on {{ app_name }}".into(),
            already_in_use: "Your email address is already registered on {{ app_name }}".into(),
        }
    }
}

/// SMTP connection security.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain text (only for a relay on the same host or network).
    None,
    /// STARTTLS, required.
    Starttls,
    /// Implicit TLS (usually port 465).
    Tls,
}

/// `[email.smtp]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpConfig {
    /// Server host name.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// `none`, `starttls` or `tls`.
    pub tls: SmtpTls,
    /// User name; empty: no authentication.
    pub username: String,
    /// Password (prefer `password_file`).
    pub password: Secret,
    /// File holding the password.
    pub password_file: String,
    /// How long connecting (TCP, TLS, greeting, login) may take, and then each mail; a
    /// mail cut off is tried again later on a new connection.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Connections kept open to the server, each carrying one mail at a time: at most
    /// this many are open at once, and they are reused.
    pub max_connections: u32,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            host: "localhost".into(),
            port: 587,
            tls: SmtpTls::Starttls,
            username: String::new(),
            password: Secret::default(),
            password_file: String::new(),
            timeout: Duration::from_secs(30),
            max_connections: 16,
        }
    }
}

/// `[email.file]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileTransportConfig {
    /// Directory the `.eml` files are written to.
    pub dir: String,
}

impl Default for FileTransportConfig {
    fn default() -> Self {
        Self {
            dir: "vouch-data/mail".into(),
        }
    }
}
