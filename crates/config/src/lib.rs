//! Vouch's configuration: a TOML file plus `VOUCH_<SECTION>__<KEY>` environment overrides.
//!
//! Every key here is documented in `vouch.example.toml` at the repository root; key names
//! are part of Vouch's interface (other tools rely on them), so keep them stable.

use std::net::SocketAddr;
use std::path::Path;

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
    /// The OAuth 2.0 API.
    pub oauth: OAuthConfig,
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
            oauth: OAuthConfig::default(),
        }
    }
}

/// One value or a list of them (`listen = "a"` or `listen = ["a", "b"]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    /// A single value.
    One(T),
    /// Several values.
    Many(Vec<T>),
}

impl<T: Clone> OneOrMany<T> {
    /// The values as a list.
    pub fn to_vec(&self) -> Vec<T> {
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

mod account;
mod database;
mod email;
mod homeserver;
mod housekeeping;
mod http;
mod identity_server;
mod logging;
mod metrics;
mod oauth;
mod password;
mod rate_limits;
mod registration;
mod session;
mod sms;
mod uia;

pub use account::*;
pub use database::*;
pub use email::*;
pub use homeserver::*;
pub use housekeeping::*;
pub use http::*;
pub use identity_server::*;
pub use logging::*;
pub use metrics::*;
pub use oauth::*;
pub use password::*;
pub use rate_limits::*;
pub use registration::*;
pub use session::*;
pub use sms::*;
pub use uia::*;

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
        if self.http.listen.to_vec().is_empty() {
            problems.push("[http] listen needs at least one address".into());
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
            ("client_registration_per_ip", r.client_registration_per_ip),
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
        self.http.listen.to_vec()
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
                .map_or_else(|| "127.0.0.1:8008".to_owned(), |a| a.to_string());
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
        // What the example documents, key by key under its section: `key = …` or
        // `# key = …` below `[section]` (or `# [section]`); a map's own sub-sections
        // (`[identity_server.delegate.email]`) document the map.
        let mut documented = std::collections::BTreeSet::new();
        let mut section = String::new();
        for line in text.lines() {
            let line = line.trim_start_matches('#').trim();
            if let Some(name) = line
                .strip_prefix('[')
                .and_then(|l| l.strip_suffix(']'))
                .map(|l| l.trim_matches(|c| c == '[' || c == ']'))
                .filter(|l| {
                    l.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
                })
            {
                section = format!("{name}.");
                for (at, _) in name.match_indices('.') {
                    documented.insert(name[..at].to_owned());
                }
                documented.insert(name.to_owned());
                continue;
            }
            if let Some((key, value)) = line.split_once('=') {
                let key = key.trim();
                if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    documented.insert(format!("{section}{key}"));
                    // An inline table documents its own keys: `rate = { per_second = 1, burst = 5 }`.
                    if let Some(inner) = value.trim().strip_prefix('{') {
                        for part in inner.trim_end_matches('}').split(',') {
                            if let Some((k, _)) = part.split_once('=') {
                                documented.insert(format!("{section}{key}.{}", k.trim()));
                            }
                        }
                    }
                }
            }
        }
        let missing: Vec<&String> = all.iter().filter(|k| !documented.contains(*k)).collect();
        assert!(
            missing.is_empty(),
            "vouch.example.toml does not document {missing:?} under their sections"
        );
    }

    #[test]
    fn a_listen_address_that_is_not_one_is_refused_when_read() {
        let e = Config::from_toml("[http]\nlisten = \"localhost\"").unwrap_err();
        assert!(e.to_string().contains("listen"), "{e}");
        let e = Config::from_toml("[http]\nlisten = [\"127.0.0.1:1\", \"::1\"]").unwrap_err();
        assert!(e.to_string().contains("listen"), "{e}");
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
