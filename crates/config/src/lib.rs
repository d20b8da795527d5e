//! Vouch's configuration: a TOML file plus `VOUCH_<SECTION>__<KEY>` environment overrides.
//!
//! Every key here is documented in `vouch.example.toml` at the repository root; key names
//! are part of Vouch's interface (other tools rely on them), so keep them stable.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The file `vouch serve` reads from the working directory when no `--config` is given.
pub const DEFAULT_CONFIG_FILE: &str = "vouch.toml";

/// What is shown instead of a secret in `vouch config check`.
const MASK: &str = "********";

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The server name in user IDs (`@alice:<server_name>`).
    pub server_name: String,
    /// The URL clients reach this server at; links in mails and pages are built on it.
    /// Empty: `http://<first listen address>/`.
    pub public_baseurl: String,
    /// HTTP listener.
    pub http: HttpConfig,
    /// Database.
    pub database: DatabaseConfig,
    /// Account registration.
    pub registration: RegistrationConfig,
    /// User-Interactive Authentication.
    pub uia: UiaConfig,
    /// Password hashing and policy.
    pub password: PasswordConfig,
    /// Access and refresh tokens.
    pub session: SessionConfig,
    /// What users may change on their own accounts (advertised in `/capabilities`).
    pub account: AccountConfig,
    /// Email: verification mails, delivery, templates, policies.
    pub email: EmailConfig,
    /// Phone numbers: SMS codes, gateways, abuse controls.
    pub sms: SmsConfig,
    /// What to do with identity servers that clients name.
    pub identity_server: IdentityServerConfig,
    /// Rate limits.
    pub rate_limits: RateLimitsConfig,
    /// Logging.
    pub logging: LoggingConfig,
    /// Prometheus metrics.
    pub metrics: MetricsConfig,
    /// Background removal of expired state.
    pub housekeeping: HousekeepingConfig,
    /// The homeserver Vouch serves accounts for (Synapse's `matrix_authentication_service`).
    pub homeserver: HomeserverConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server_name: "localhost".into(),
            public_baseurl: String::new(),
            http: HttpConfig::default(),
            database: DatabaseConfig::default(),
            registration: RegistrationConfig::default(),
            uia: UiaConfig::default(),
            password: PasswordConfig::default(),
            session: SessionConfig::default(),
            account: AccountConfig::default(),
            email: EmailConfig::default(),
            sms: SmsConfig::default(),
            identity_server: IdentityServerConfig::default(),
            rate_limits: RateLimitsConfig::default(),
            logging: LoggingConfig::default(),
            metrics: MetricsConfig::default(),
            housekeeping: HousekeepingConfig::default(),
            homeserver: HomeserverConfig::default(),
        }
    }
}

/// One value or a list of them (`listen = "a"` or `listen = ["a", "b"]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single value.
    One(String),
    /// Several values.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values as a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// A configured secret (a pepper, a password, a token). It prints and serialises as
/// `********` (so `vouch config check`, logs and `Debug` never show it); code that needs
/// the value asks for it with [`Secret::expose`].
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether it is unset.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { MASK })
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { MASK })
    }
}

/// `[http]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// `host:port` to listen on, or a list of them.
    pub listen: OneOrMany,
    /// Largest request body accepted, in bytes; larger ones get 413 `M_TOO_LARGE`.
    pub max_request_bytes: usize,
    /// Take the client address from `X-Forwarded-For` when the peer is a trusted proxy.
    pub x_forwarded: bool,
    /// Proxies whose `X-Forwarded-For` entries are believed: the client is the rightmost
    /// address not in these ranges. A request from elsewhere is keyed on its peer.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Open client connections per listener at most; one more is closed at once.
    pub max_connections: usize,
    /// Open connections from one client address (its /64 for IPv6) at most; trusted
    /// proxies are not counted.
    pub max_connections_per_ip: usize,
    /// Time a client has to send a request's headers, and to start the next request on
    /// a kept-alive connection.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Time a client has to send a request's body, in all.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Time a client may leave an answer unread (not reading, e.g. pipelining requests
    /// without reading answers) before its connection is closed.
    #[serde(with = "humantime_serde")]
    pub response_write_timeout: Duration,
    /// Request bodies held in memory at once, in bytes, over all connections; a request
    /// that would exceed it waits up to a second for room, then gets 429.
    pub max_buffered_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: OneOrMany::One("127.0.0.1:8008".into()),
            max_request_bytes: 1024 * 1024,
            x_forwarded: false,
            trusted_proxies: vec![
                ipnet::IpNet::from(std::net::IpAddr::from([127, 0, 0, 1])),
                ipnet::IpNet::from(std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
            ],
            max_connections: 10_000,
            max_connections_per_ip: 100,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            response_write_timeout: Duration::from_secs(30),
            max_buffered_bytes: 64 * 1024 * 1024,
        }
    }
}

/// `[database]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://path` (created if missing) or `postgres://user@host/db`.
    pub url: String,
    /// Largest number of pooled connections.
    pub max_connections: u32,
    /// How long a request waits for a database connection; then it is answered 503 with
    /// `Retry-After`, so an unreachable database fails fast.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://vouch-data/vouch.db".into(),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// A policy the user accepts in the `m.login.terms` stage.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TermsPolicy {
    /// The policy's ID (the key under `policies`), e.g. `privacy_policy`.
    pub id: String,
    /// Its version; a new version must be accepted again.
    pub version: String,
    /// Language of `name` and `url` (default `en`).
    #[serde(default = "default_lang")]
    pub lang: String,
    /// Human-readable name.
    pub name: String,
    /// Where the text is.
    pub url: String,
}

fn default_lang() -> String {
    "en".into()
}

/// `[registration]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrationConfig {
    /// Whether `POST /register` creates accounts at all.
    pub enabled: bool,
    /// Media of which the user must verify one to register (`email`, `msisdn`).
    pub require_3pid: Vec<String>,
    /// Whether registration needs a token (`m.login.registration_token`).
    pub registration_token_required: bool,
    /// Whether guest accounts may be made (`kind=guest`).
    pub allow_guests: bool,
    /// Localparts nobody may register.
    pub reserved_localparts: Vec<String>,
    /// Policies accepted in the `m.login.terms` stage; none: no terms stage.
    pub terms: Vec<TermsPolicy>,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            require_3pid: Vec::new(),
            registration_token_required: false,
            allow_guests: false,
            reserved_localparts: Vec::new(),
            terms: Vec::new(),
        }
    }
}

/// `[uia]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UiaConfig {
    /// How long a UIA session lives after it starts.
    #[serde(with = "humantime_serde")]
    pub session_lifetime: Duration,
    /// Flows per operation (`change_password`, `deactivate`, `delete_devices`, `add_threepid`,
    /// `reset_password`, `register`), replacing the built-in ones.
    pub flows: BTreeMap<String, Vec<Vec<String>>>,
    /// Failed stages (wrong password, wrong registration token, …) a session takes before
    /// it is refused for good.
    pub max_stage_failures: u32,
}

impl Default for UiaConfig {
    fn default() -> Self {
        Self {
            session_lifetime: Duration::from_secs(3600),
            flows: BTreeMap::new(),
            max_stage_failures: 10,
        }
    }
}

/// `[password]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PasswordConfig {
    /// `argon2id` or `bcrypt`: the scheme for new hashes. Both always verify.
    pub scheme: PasswordScheme,
    /// bcrypt cost (Synapse's default).
    pub bcrypt_cost: u32,
    /// argon2id memory, KiB.
    pub argon2_m_cost_kib: u32,
    /// argon2id iterations.
    pub argon2_t_cost: u32,
    /// argon2id lanes.
    pub argon2_p_cost: u32,
    /// Secret appended to passwords before bcrypt (Synapse's `password_config.pepper`).
    pub pepper: Secret,
    /// Minimum length in characters.
    pub min_length: usize,
    /// Maximum length in bytes.
    pub max_length: usize,
    /// Require a digit.
    pub require_digit: bool,
    /// Require a symbol.
    pub require_symbol: bool,
    /// Require a lower-case letter.
    pub require_lowercase: bool,
    /// Require an upper-case letter.
    pub require_uppercase: bool,
    /// Password hashes checked at once; 0: one per CPU core. Memory stays flat however
    /// many requests need a hash.
    pub max_concurrent_hashes: usize,
    /// How long a request waits for a hashing slot before it is answered 429.
    #[serde(with = "humantime_serde")]
    pub hash_queue_timeout: Duration,
    /// Ceilings for stored hashes (imported ones too): a hash asking for more is refused
    /// at import and never verified, so one stored hash cannot pin a core or a GiB.
    pub max_argon2_m_cost_kib: u32,
    /// Ceiling for argon2 iterations in a stored hash.
    pub max_argon2_t_cost: u32,
    /// Ceiling for argon2 lanes in a stored hash.
    pub max_argon2_p_cost: u32,
    /// Ceiling for the bcrypt cost of a stored hash.
    pub max_bcrypt_cost: u32,
}

/// Password hashing scheme.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PasswordScheme {
    /// argon2id.
    Argon2id,
    /// bcrypt.
    Bcrypt,
}

impl Default for PasswordConfig {
    fn default() -> Self {
        Self {
            scheme: PasswordScheme::Argon2id,
            bcrypt_cost: 12,
            // OWASP's recommended argon2id parameters.
            argon2_m_cost_kib: 19_456,
            argon2_t_cost: 2,
            argon2_p_cost: 1,
            pepper: Secret::default(),
            min_length: 8,
            max_length: 512,
            require_digit: false,
            require_symbol: false,
            require_lowercase: false,
            require_uppercase: false,
            max_concurrent_hashes: 0,
            hash_queue_timeout: Duration::from_secs(5),
            max_argon2_m_cost_kib: 65_536,
            max_argon2_t_cost: 10,
            max_argon2_p_cost: 4,
            max_bcrypt_cost: 14,
        }
    }
}

/// `[session]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// Lifetime of an access token issued together with a refresh token (clients that send
    /// `refresh_token: true`). Tokens issued without one do not expire.
    #[serde(with = "humantime_serde")]
    pub refreshable_access_token_lifetime: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            refreshable_access_token_lifetime: Duration::from_secs(300),
        }
    }
}

/// `[account]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccountConfig {
    /// Users may change their password (`m.change_password`).
    pub password_change: bool,
    /// Users may add and remove email addresses and phone numbers (`m.3pid_changes`).
    pub threepid_changes: bool,
    /// Users may set their display name.
    pub displayname_change: bool,
    /// Users may set their avatar.
    pub avatar_change: bool,
    /// Devices one account may have; a login that would add one more is refused.
    pub max_devices_per_user: u32,
}

impl Default for AccountConfig {
    fn default() -> Self {
        Self {
            password_change: true,
            threepid_changes: true,
            displayname_change: true,
            avatar_change: true,
            max_devices_per_user: 500,
        }
    }
}

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
    /// Timeout of one SMTP conversation.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
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

/// `[sms]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmsConfig {
    /// Whether the server verifies phone numbers at all. Off: the msisdn requestToken
    /// endpoints answer `M_THREEPID_MEDIUM_NOT_SUPPORTED` and no flow offers SMS.
    pub enabled: bool,
    /// `log` (print the code), `twilio` or `webhook`.
    pub transport: SmsTransport,
    /// Digits in a code.
    pub code_length: u32,
    /// How long a code works.
    #[serde(with = "humantime_serde")]
    pub code_lifetime: Duration,
    /// Wrong codes a session takes before it is burned.
    pub max_attempts: u32,
    /// ISO 3166-1 alpha-2 codes of the countries whose numbers are accepted; empty: all.
    pub allowed_countries: Vec<String>,
    /// Countries whose numbers are refused (checked after `allowed_countries`).
    pub denied_countries: Vec<String>,
    /// The message (minijinja; `code`, `app_name` and `minutes` are available).
    pub template: String,
    /// Sender per country (`{ US = "+15551230000" }`); others use the gateway's default.
    pub sender_per_country: BTreeMap<String, String>,
    /// `[sms.twilio]`.
    pub twilio: TwilioConfig,
    /// `[sms.webhook]`.
    pub webhook: WebhookConfig,
}

/// Which gateway sends SMS.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmsTransport {
    /// Print the message to the log (the embedded default).
    Log,
    /// Twilio's Messages API.
    Twilio,
    /// POST JSON to an operator's URL.
    Webhook,
}

impl Default for SmsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            transport: SmsTransport::Log,
            code_length: 6,
            code_lifetime: Duration::from_secs(600),
            max_attempts: 5,
            allowed_countries: Vec::new(),
            denied_countries: Vec::new(),
            template: "Your {{ app_name }} code is {{ code }}. It works for {{ minutes }} minutes."
                .into(),
            sender_per_country: BTreeMap::new(),
            twilio: TwilioConfig::default(),
            webhook: WebhookConfig::default(),
        }
    }
}

/// `[sms.twilio]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TwilioConfig {
    /// Account SID (`AC…`), also the basic-auth user.
    pub account_sid: String,
    /// Auth token (prefer `auth_token_file`).
    pub auth_token: Secret,
    /// File holding the auth token.
    pub auth_token_file: String,
    /// Sender number (`From`), unless `messaging_service_sid` is set.
    pub from: String,
    /// Messaging Service SID (`MG…`), used instead of `from` when set.
    pub messaging_service_sid: String,
    /// API base URL (tests point it at a fake).
    pub base_url: String,
    /// Timeout of one API call.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for TwilioConfig {
    fn default() -> Self {
        Self {
            account_sid: String::new(),
            auth_token: Secret::default(),
            auth_token_file: String::new(),
            from: String::new(),
            messaging_service_sid: String::new(),
            base_url: "https://api.twilio.com".into(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// `[sms.webhook]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to POST `{"to", "body", "sid"}`.
    pub url: String,
    /// Extra headers, e.g. `{ Authorization = "Bearer …" }`.
    pub headers: BTreeMap<String, String>,
    /// Timeout of one call.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            headers: BTreeMap::new(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// `[identity_server]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityServerConfig {
    /// What to do with a client-supplied `id_server` on requestToken and in UIA
    /// `threepid_creds` for sessions Vouch did not issue: `ignore` (verify locally, never
    /// contact it), `reject` (400 `M_SERVER_NOT_TRUSTED`), `delegate` (proxy to it if it is
    /// in `trusted`, else 400 `M_SERVER_NOT_TRUSTED`).
    pub requests: IdentityServerRequests,
    /// The only identity servers Vouch ever talks to: `host[:port]` (https, and the name
    /// must resolve to public addresses) or an explicit base URL (`https://…` or `http://…`;
    /// taken as written, private addresses included).
    pub trusted: Vec<String>,
    /// Timeout of one call to an identity server.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Largest answer read from an identity server, in bytes.
    pub max_response_bytes: usize,
    /// Operator delegates per medium (`email`, `msisdn`): requestToken for that medium goes
    /// to this identity server with the operator's token (Synapse's
    /// `account_threepid_delegates`, over the v2 API). For migrations.
    pub delegate: BTreeMap<String, OperatorDelegate>,
}

impl Default for IdentityServerConfig {
    fn default() -> Self {
        Self {
            requests: IdentityServerRequests::Ignore,
            trusted: Vec::new(),
            timeout: Duration::from_secs(10),
            max_response_bytes: 64 * 1024,
            delegate: BTreeMap::new(),
        }
    }
}

/// An operator's identity-server delegate for one medium.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OperatorDelegate {
    /// Base URL (also put it in `trusted`).
    pub base_url: String,
    /// The operator's access token on that server (v2 API).
    pub access_token: Secret,
}

/// How a client-supplied `id_server` is treated.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum IdentityServerRequests {
    /// Verify locally; the named server is never contacted.
    #[default]
    Ignore,
    /// Refuse requests that name an identity server.
    Reject,
    /// Proxy to the named server when it is trusted.
    Delegate,
}

/// A limit counted in the database, so that it holds across instances: at most `max`
/// events per `window`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Events allowed per window.
    pub max: u32,
    /// The window.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
}

/// A token bucket: `burst` requests at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Sustained rate.
    pub per_second: f64,
    /// Bucket size.
    pub burst: u32,
}

/// `[rate_limits]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitsConfig {
    /// `false` turns every limit off (for test rigs).
    pub enabled: bool,
    /// `POST /login` attempts per client IP.
    pub login_per_ip: Rate,
    /// `POST /login` attempts per account.
    pub login_per_account: Rate,
    /// Failed logins per account.
    pub failed_login_per_account: Rate,
    /// `POST /register` requests per client IP (every UIA round counts).
    pub registration_per_ip: Rate,
    /// Email requestToken calls per client IP (per instance).
    pub email_per_ip: Rate,
    /// Verification mails per address (counted in the database, across instances).
    pub email_per_address: Window,
    /// Verification mails per validation session (counted in the database).
    pub email_per_session: Window,
    /// Phone requestToken calls per client IP (per instance).
    pub sms_per_ip: Rate,
    /// SMS per number (counted in the database, across instances).
    pub sms_per_number: Window,
    /// SMS per validation session (counted in the database).
    pub sms_per_session: Window,
    /// SMS per destination country (counted in the database): a brake on SMS pumping.
    pub sms_per_country: Window,
    /// User-Interactive Authentication sessions started per client IP (every endpoint
    /// that starts one: register, password, deactivate, devices, 3PIDs).
    pub uia_sessions_per_ip: Rate,
    /// `GET /register/available` per client IP.
    pub username_available_per_ip: Rate,
    /// `POST /refresh` per client IP.
    pub refresh_per_ip: Rate,
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        // Synapse's defaults for rc_login and rc_registration.
        let synapse = Rate {
            per_second: 0.17,
            burst: 3,
        };
        Self {
            enabled: true,
            login_per_ip: synapse,
            login_per_account: synapse,
            failed_login_per_account: synapse,
            registration_per_ip: Rate {
                per_second: 0.17,
                burst: 10,
            },
            email_per_ip: Rate {
                per_second: 0.1,
                burst: 5,
            },
            email_per_address: Window {
                max: 5,
                window: Duration::from_secs(3600),
            },
            email_per_session: Window {
                max: 3,
                window: Duration::from_secs(3600),
            },
            sms_per_ip: Rate {
                per_second: 0.05,
                burst: 3,
            },
            sms_per_number: Window {
                max: 3,
                window: Duration::from_secs(3600),
            },
            sms_per_session: Window {
                max: 3,
                window: Duration::from_secs(3600),
            },
            sms_per_country: Window {
                max: 200,
                window: Duration::from_secs(3600),
            },
            uia_sessions_per_ip: Rate {
                per_second: 0.5,
                burst: 20,
            },
            // Synapse limits the availability check like registration.
            username_available_per_ip: Rate {
                per_second: 0.17,
                burst: 10,
            },
            // Clients refresh every few minutes per device; a few devices behind one
            // address fit easily.
            refresh_per_ip: Rate {
                per_second: 1.0,
                burst: 30,
            },
        }
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// `host:port` for Prometheus text at `/metrics`; empty (the default): off. Keep it
    /// off the public network.
    pub listen: String,
}

/// `[housekeeping]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HousekeepingConfig {
    /// How often expired state is removed.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Rows removed per statement (bounded, so a large backlog never blocks the database).
    pub batch_size: u32,
    /// How long delivered or given-up messages stay in the outbox (for inspection).
    #[serde(with = "humantime_serde")]
    pub keep_sent_messages: Duration,
}

impl Default for HousekeepingConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(300),
            batch_size: 1000,
            keep_sent_messages: Duration::from_secs(7 * 86_400),
        }
    }
}

/// `[homeserver]`: a Synapse that delegates every account matter to Vouch.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct HomeserverConfig {
    /// Synapse's client listener, e.g. `http://127.0.0.1:8008`. Empty: Vouch stands alone.
    pub url: String,
    /// The secret shared with Synapse's `matrix_authentication_service.secret` (at least
    /// 32 bytes); or `secret_file`.
    pub secret: Secret,
    /// A file holding the secret (surrounding whitespace is ignored).
    pub secret_file: String,
}

/// The shortest shared secret accepted, in bytes.
pub const MIN_HOMESERVER_SECRET: usize = 32;

impl HomeserverConfig {
    /// Whether a homeserver is configured.
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }

    /// The shared secret, from `secret` or `secret_file`.
    pub fn load_secret(&self) -> Result<Secret, String> {
        let secret = match (self.secret.is_empty(), self.secret_file.is_empty()) {
            (false, true) => self.secret.expose().to_owned(),
            (true, false) => std::fs::read_to_string(&self.secret_file)
                .map_err(|e| format!("[homeserver] secret_file {}: {e}", self.secret_file))?
                .trim()
                .to_owned(),
            (false, false) => return Err("[homeserver] set secret or secret_file, not both".into()),
            (true, true) => {
                return Err(
                    "[homeserver] url needs secret or secret_file: the value of Synapse's \
                     matrix_authentication_service.secret"
                        .into(),
                );
            }
        };
        if secret.len() < MIN_HOMESERVER_SECRET {
            return Err(format!(
                "[homeserver] the secret is {} bytes; use at least {MIN_HOMESERVER_SECRET} random \
                 bytes (e.g. `openssl rand -hex 32`), the same in Synapse's \
                 matrix_authentication_service.secret",
                secret.len()
            ));
        }
        Ok(Secret::from(secret))
    }
}

/// `[logging]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    /// `human` or `json`.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `vouch=debug,info`. `RUST_LOG` wins when set.
    pub level: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

/// The configuration could not be loaded or is inconsistent.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or an environment value could not be read or parsed.
    #[error("{0}")]
    Load(String),
    /// The values do not make sense together.
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

impl Config {
    /// Loads the embedded defaults, then `file` (if given), then `VOUCH_` environment
    /// variables, and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, Env::prefixed("VOUCH_"))
    }

    fn load_from(file: Option<&Path>, env: Env) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Load(format!(
                    "configuration file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        // `VOUCH_TEST_*` belongs to the test suite, not to the server.
        let env = env
            .filter(|key| !key.as_str().to_ascii_lowercase().starts_with("test_"))
            .split("__");
        let config: Config = figment
            .merge(env)
            .extract()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML document on top of the defaults, without environment overrides.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(text))
            .extract()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the values against each other; collects every problem, not just the first.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if self.server_name.is_empty()
            || self
                .server_name
                .chars()
                .any(|c| c.is_whitespace() || c == '/' || c == '@')
        {
            problems.push(format!(
                "server_name '{}' is not a valid server name",
                self.server_name
            ));
        }
        if !self.public_baseurl.is_empty() {
            match url::Url::parse(&self.public_baseurl) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => problems.push(format!(
                    "public_baseurl '{}' must be an http(s) URL",
                    self.public_baseurl
                )),
            }
        }
        let listen = self.http.listen.to_vec();
        if listen.is_empty() {
            problems.push("[http] listen needs at least one address".into());
        }
        for addr in &listen {
            if addr.parse::<SocketAddr>().is_err() {
                problems.push(format!("[http] listen '{addr}' is not a host:port address"));
            }
        }
        if !(self.database.url.starts_with("sqlite:") || self.database.url.starts_with("postgres"))
        {
            problems.push("[database] url must start with sqlite:// or postgres://".into());
        }
        if self.http.max_connections == 0
            || self.http.max_connections_per_ip == 0
            || self.http.header_read_timeout.is_zero()
            || self.http.body_read_timeout.is_zero()
            || self.http.response_write_timeout.is_zero()
            || self.http.max_buffered_bytes < self.http.max_request_bytes
        {
            problems.push(
                "[http] max_connections, max_connections_per_ip and the timeouts must be above zero, and max_buffered_bytes at least max_request_bytes"
                    .into(),
            );
        }
        if self.database.max_connections == 0 {
            problems.push("[database] max_connections must be at least 1".into());
        }
        for medium in &self.registration.require_3pid {
            if medium != "email" && medium != "msisdn" {
                problems.push(format!(
                    "[registration] require_3pid: unknown medium '{medium}' (email, msisdn)"
                ));
            }
        }
        for policy in &self.registration.terms {
            if policy.id.is_empty() || policy.version.is_empty() || policy.url.is_empty() {
                problems.push("[[registration.terms]] entries need id, version and url".into());
            }
        }
        const STAGES: &[&str] = &[
            "m.login.dummy",
            "m.login.password",
            "m.login.registration_token",
            "m.login.terms",
            "m.login.email.identity",
            "m.login.msisdn",
        ];
        const OPERATIONS: &[&str] = &[
            "register",
            "change_password",
            "reset_password",
            "deactivate",
            "delete_devices",
            "add_threepid",
        ];
        for (op, flows) in &self.uia.flows {
            if !OPERATIONS.contains(&op.as_str()) {
                problems.push(format!("[uia.flows] unknown operation '{op}'"));
            }
            if flows.is_empty() || flows.iter().any(Vec::is_empty) {
                problems.push(format!(
                    "[uia.flows] {op}: every flow needs at least one stage"
                ));
            }
            for stage in flows.iter().flatten() {
                if !STAGES.contains(&stage.as_str()) {
                    problems.push(format!("[uia.flows] {op}: unknown stage '{stage}'"));
                }
            }
        }
        let p = &self.password;
        if !(4..=31).contains(&p.bcrypt_cost) {
            problems.push("[password] bcrypt_cost must be between 4 and 31".into());
        }
        if p.argon2_m_cost_kib < 8 * p.argon2_p_cost.max(1)
            || p.argon2_t_cost == 0
            || p.argon2_p_cost == 0
        {
            problems.push(
                "[password] argon2 costs are out of range (m_cost ≥ 8 × p_cost KiB, t_cost ≥ 1, p_cost ≥ 1)"
                    .into(),
            );
        }
        if p.max_length > 0 && p.max_length < p.min_length {
            problems.push("[password] max_length is smaller than min_length".into());
        }
        if p.bcrypt_cost > p.max_bcrypt_cost
            || p.argon2_m_cost_kib > p.max_argon2_m_cost_kib
            || p.argon2_t_cost > p.max_argon2_t_cost
            || p.argon2_p_cost > p.max_argon2_p_cost
        {
            problems.push(
                "[password] the hashing costs exceed the max_* ceilings (new hashes would never verify)"
                    .into(),
            );
        }
        if p.hash_queue_timeout.is_zero() {
            problems.push("[password] hash_queue_timeout must be above zero".into());
        }
        let r = &self.rate_limits;
        for (name, rate) in [
            ("login_per_ip", r.login_per_ip),
            ("login_per_account", r.login_per_account),
            ("failed_login_per_account", r.failed_login_per_account),
            ("registration_per_ip", r.registration_per_ip),
            ("email_per_ip", r.email_per_ip),
            ("sms_per_ip", r.sms_per_ip),
            ("uia_sessions_per_ip", r.uia_sessions_per_ip),
            ("username_available_per_ip", r.username_available_per_ip),
            ("refresh_per_ip", r.refresh_per_ip),
        ] {
            if !(rate.per_second > 0.0 && rate.per_second.is_finite()) || rate.burst == 0 {
                problems.push(format!(
                    "[rate_limits] {name} needs per_second > 0 and burst ≥ 1"
                ));
            }
        }
        for (name, w) in [
            ("email_per_address", r.email_per_address),
            ("email_per_session", r.email_per_session),
            ("sms_per_number", r.sms_per_number),
            ("sms_per_session", r.sms_per_session),
            ("sms_per_country", r.sms_per_country),
        ] {
            if w.max == 0 || w.window.is_zero() {
                problems.push(format!(
                    "[rate_limits] {name} needs max ≥ 1 and a window > 0"
                ));
            }
        }
        let e = &self.email;
        for pattern in &e.allowed_3pids {
            if let Err(err) = regex::Regex::new(pattern) {
                problems.push(format!(
                    "[email] allowed_3pids: '{pattern}' is not a regular expression: {err}"
                ));
            }
        }
        if e.max_attempts == 0 {
            problems.push("[email] max_attempts must be at least 1".into());
        }
        if e.validation_token_lifetime.is_zero() {
            problems.push("[email] validation_token_lifetime must be longer than 0".into());
        }
        if !is_mailbox(&e.from) {
            problems.push(format!(
                "[email] from '{}' is not an address like 'Name <user@example.org>'",
                e.from
            ));
        }
        if e.transport == EmailTransport::Smtp && e.smtp.host.is_empty() {
            problems.push("[email.smtp] host is required with transport = \"smtp\"".into());
        }
        if !e.smtp.password.is_empty() && !e.smtp.password_file.is_empty() {
            problems.push("[email.smtp] set password or password_file, not both".into());
        }
        let sms = &self.sms;
        if !(4..=10).contains(&sms.code_length) {
            problems.push("[sms] code_length must be between 4 and 10".into());
        }
        if sms.max_attempts == 0 || sms.code_lifetime.is_zero() {
            problems.push("[sms] max_attempts and code_lifetime must be more than 0".into());
        }
        for c in sms
            .allowed_countries
            .iter()
            .chain(&sms.denied_countries)
            .chain(sms.sender_per_country.keys())
        {
            if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
                problems.push(format!(
                    "[sms] '{c}' is not an ISO 3166-1 alpha-2 country code like GB"
                ));
            }
        }
        if sms.transport == SmsTransport::Twilio {
            let t = &sms.twilio;
            if t.account_sid.is_empty() || (t.auth_token.is_empty() && t.auth_token_file.is_empty())
            {
                problems.push(
                    "[sms.twilio] account_sid and auth_token (or auth_token_file) are required"
                        .into(),
                );
            }
            if t.from.is_empty()
                && t.messaging_service_sid.is_empty()
                && sms.sender_per_country.is_empty()
            {
                problems.push("[sms.twilio] set from or messaging_service_sid".into());
            }
        }
        if sms.transport == SmsTransport::Webhook
            && !(sms.webhook.url.starts_with("http://") || sms.webhook.url.starts_with("https://"))
        {
            problems.push("[sms.webhook] url must be an http(s) URL".into());
        }
        if self.registration.require_3pid.iter().any(|m| m == "msisdn") && !sms.enabled {
            problems
                .push("[registration] require_3pid names msisdn, but [sms] enabled = false".into());
        }
        if self.registration.require_3pid.iter().any(|m| m == "email") && !e.enabled {
            problems.push(
                "[registration] require_3pid names email, but [email] enabled = false".into(),
            );
        }
        if !self.metrics.listen.is_empty() && self.metrics.listen.parse::<SocketAddr>().is_err() {
            problems.push(format!(
                "[metrics] listen '{}' is not a host:port address",
                self.metrics.listen
            ));
        }
        let hs = &self.homeserver;
        if hs.enabled() {
            match url::Url::parse(&hs.url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                _ => problems.push(format!(
                    "[homeserver] url '{}' must be an http(s) URL such as http://127.0.0.1:8008",
                    hs.url
                )),
            }
            if let Err(e) = hs.load_secret() {
                problems.push(e);
            }
            if self.registration.allow_guests {
                problems.push(
                    "[registration] allow_guests: guests are not available in front of a homeserver"
                        .into(),
                );
            }
        }
        if self.housekeeping.batch_size == 0 || self.housekeeping.interval.is_zero() {
            problems.push("[housekeeping] interval and batch_size must be more than 0".into());
        }
        for entry in &self.identity_server.trusted {
            let explicit = entry.starts_with("https://") || entry.starts_with("http://");
            let parsed = if explicit {
                url::Url::parse(entry)
            } else {
                url::Url::parse(&format!("https://{entry}"))
            };
            if !parsed
                .is_ok_and(|u| u.host_str().is_some() && (u.path() == "/" || u.path().is_empty()))
            {
                problems.push(format!(
                    "[identity_server] trusted: '{entry}' is not host[:port] or a base URL"
                ));
            }
        }
        for (medium, d) in &self.identity_server.delegate {
            if medium != "email" && medium != "msisdn" {
                problems.push(format!(
                    "[identity_server.delegate] unknown medium '{medium}'"
                ));
            }
            if !(d.base_url.starts_with("https://") || d.base_url.starts_with("http://"))
                || d.access_token.is_empty()
            {
                problems.push(format!("[identity_server.delegate] {medium}: base_url (http/https) and access_token are required"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// The first listen address.
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        self.http
            .listen
            .to_vec()
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect()
    }

    /// The public base URL, always ending in `/`.
    pub fn public_baseurl(&self) -> String {
        let base = if self.public_baseurl.is_empty() {
            let first = self
                .http
                .listen
                .to_vec()
                .into_iter()
                .next()
                .unwrap_or_default();
            format!("http://{first}/")
        } else {
            self.public_baseurl.clone()
        };
        if base.ends_with('/') {
            base
        } else {
            format!("{base}/")
        }
    }

    /// The effective configuration as TOML, with secrets masked (`vouch config check`).
    pub fn to_masked_toml(&self) -> String {
        let mut masked = self.clone();
        // `Secret` fields serialise masked by themselves; header values and URLs are
        // strings that may carry secrets.
        for value in masked.sms.webhook.headers.values_mut() {
            *value = MASK.into();
        }
        masked.database.url = mask_url_password(&masked.database.url);
        masked.sms.webhook.url = mask_url_password(&masked.sms.webhook.url);
        masked.sms.twilio.base_url = mask_url_password(&masked.sms.twilio.base_url);
        toml::to_string_pretty(&masked).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// A minimal check of `From` addresses (`Name <user@host>` or `user@host`), so that the
/// configuration crate does not need the mail library; the mailer checks fully at start-up.
fn is_mailbox(s: &str) -> bool {
    let s = s.trim();
    let addr = match (s.rfind('<'), s.ends_with('>')) {
        (Some(i), true) => &s[i + 1..s.len() - 1],
        (None, false) => s,
        _ => return false,
    };
    let mut parts = addr.split('@');
    matches!((parts.next(), parts.next(), parts.next()),
        (Some(l), Some(d), None) if !l.is_empty() && !d.is_empty() && !addr.contains(char::is_whitespace))
}

/// Hides the secrets a URL may carry: the password of `postgres://user:password@host/db`
/// and the value of every query parameter (`?password=`, `?key=`, `?token=` …).
fn mask_url_password(raw: &str) -> String {
    let Ok(mut u) = url::Url::parse(raw) else {
        return raw.to_owned();
    };
    if u.password().is_some() {
        let _ = u.set_password(Some(MASK));
    }
    if u.query().is_some() {
        let names: Vec<String> = u.query_pairs().map(|(k, _)| k.into_owned()).collect();
        u.query_pairs_mut()
            .clear()
            .extend_pairs(names.iter().map(|k| (k.as_str(), MASK)));
    }
    u.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_are_valid() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.server_name, "localhost");
        assert_eq!(c.listen_addrs(), vec!["127.0.0.1:8008".parse().unwrap()]);
        assert_eq!(c.public_baseurl(), "http://127.0.0.1:8008/");
        assert!(c.database.url.starts_with("sqlite://vouch-data/"));
    }

    #[test]
    fn the_example_file_parses_and_names_every_key() {
        let text = include_str!("../../../vouch.example.toml");
        let c = Config::from_toml(text).unwrap();
        assert_eq!(c.server_name, "example.org");
        // Every key that the defaults have must be documented in the example.
        let defaults = toml::to_string(&Config::default()).unwrap();
        let table: toml::Table = toml::from_str(&defaults).unwrap();
        fn keys(prefix: &str, t: &toml::Table, out: &mut Vec<String>) {
            for (k, v) in t {
                match v {
                    toml::Value::Table(inner) if !inner.is_empty() => {
                        keys(&format!("{prefix}{k}."), inner, out)
                    }
                    _ => out.push(format!("{prefix}{k}")),
                }
            }
        }
        let mut all = Vec::new();
        keys("", &table, &mut all);
        for key in all {
            let leaf = key.rsplit('.').next().unwrap();
            assert!(
                text.contains(&format!("{leaf} =")) || text.contains(&format!("# {leaf} =")),
                "vouch.example.toml does not document {key}"
            );
        }
    }

    #[test]
    fn lists_and_single_values_for_listen() {
        let c = Config::from_toml("[http]\nlisten = [\"127.0.0.1:1\", \"[::1]:2\"]").unwrap();
        assert_eq!(c.listen_addrs().len(), 2);
    }

    #[test]
    fn every_problem_is_reported() {
        let err = Config::from_toml(
            "server_name = \"\"\n[database]\nurl = \"mysql://x\"\n[password]\nbcrypt_cost = 99\n\
             [registration]\nrequire_3pid = [\"fax\"]\n[uia.flows]\nderegister = [[\"m.login.magic\"]]\n\
             [email]\nfrom = \"not an address\"\nallowed_3pids = [\"(unclosed\"]",
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "server_name",
            "[database] url",
            "bcrypt_cost",
            "fax",
            "deregister",
            "[email] from",
            "(unclosed",
            "m.login.magic",
        ] {
            assert!(err.contains(needle), "{needle} missing from: {err}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = Config::from_toml("[registration]\nenabeld = true")
            .unwrap_err()
            .to_string();
        assert!(err.contains("enabeld"), "{err}");
    }

    #[test]
    #[expect(clippy::result_large_err, reason = "figment's Jail closure signature")]
    fn environment_overrides_use_double_underscore_sections() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("VOUCH_SERVER_NAME", "env.example");
            jail.set_env("VOUCH_REGISTRATION__ENABLED", "false");
            jail.set_env("VOUCH_RATE_LIMITS__ENABLED", "false");
            jail.set_env("VOUCH_TEST_POSTGRES_URL", "postgres://ignored");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.server_name, "env.example");
            assert!(!c.registration.enabled);
            assert!(!c.rate_limits.enabled);
            Ok(())
        });
    }

    #[test]
    fn secrets_hide_themselves() {
        let mut c = Config::default();
        c.sms.twilio.auth_token = "tw-secret".into();
        c.email.smtp.password = "smtp-secret".into();
        assert_eq!(c.sms.twilio.auth_token.expose(), "tw-secret");
        for shown in [format!("{c:?}"), c.to_masked_toml()] {
            assert!(!shown.contains("tw-secret") && !shown.contains("smtp-secret"));
        }
    }

    #[test]
    fn secrets_are_masked() {
        let mut c = Config::default();
        c.password.pepper = "sekrit".into();
        c.database.url = "postgres://vouch:hunter2@db/vouch?sslmode=require&password=pw2".into();
        c.sms.webhook.url = "https://relay:hooksecret@sms.example.net/send?key=k3y".into();
        let shown = c.to_masked_toml();
        for secret in ["sekrit", "hunter2", "pw2", "hooksecret", "k3y"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("********"));
    }
}
