//! What every handler can reach: configuration, storage, clock, randomness, hashing and
//! the rate limiters.

use std::sync::Arc;

use vouch_config::{Config, PasswordScheme};
use vouch_core::password::{HashCeilings, PasswordHasher, PasswordPolicy, Scheme};
use vouch_core::{Clock, SecretSource};
use vouch_mail::{Composer, Templates};
use vouch_storage::Db;

use crate::error::{ApiError, ApiResult};
use crate::rate_limit::Limiters;

/// The hasher `[password]` describes.
fn password_hasher(p: &vouch_config::PasswordConfig) -> PasswordHasher {
    PasswordHasher {
        scheme: match p.scheme {
            PasswordScheme::Argon2id => Scheme::Argon2id,
            PasswordScheme::Bcrypt => Scheme::Bcrypt,
        },
        bcrypt_cost: p.bcrypt_cost,
        argon2_m_cost_kib: p.argon2_m_cost_kib,
        argon2_t_cost: p.argon2_t_cost,
        argon2_p_cost: p.argon2_p_cost,
        pepper: p.pepper.expose().to_owned(),
        ceilings: HashCeilings {
            argon2_m_cost_kib: p.max_argon2_m_cost_kib,
            argon2_t_cost: p.max_argon2_t_cost,
            argon2_p_cost: p.max_argon2_p_cost,
            bcrypt_cost: p.max_bcrypt_cost,
        },
    }
}

/// How long a call to the homeserver's account API (or a forwarded connection attempt) may
/// take.
const HOMESERVER_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Shared handler state.
pub type AppState = Arc<Services>;

/// The services behind the API.
pub struct Services {
    /// The configuration.
    pub config: Config,
    /// Storage.
    pub db: Db,
    /// Injected clock.
    pub clock: Arc<dyn Clock>,
    /// Injected randomness.
    pub secrets: Arc<dyn SecretSource>,
    /// Password hashing.
    pub hasher: PasswordHasher,
    /// Password policy.
    pub policy: PasswordPolicy,
    /// Rate limiters.
    pub limits: Limiters,
    /// Renders mails and the pages behind their links.
    pub composer: Composer,
    /// Rung when mail is queued, so the outbox worker sends it at once.
    pub mail_wake: Arc<tokio::sync::Notify>,
    /// The server's signing key (unbind requests, `/_matrix/key/v2/server`).
    pub signing_key: crate::signing_key::SigningKey,
    /// Whether the background tasks run (for `/_vouch/health`).
    pub liveness: Arc<crate::health::Liveness>,
    /// The HTTP clients for identity servers.
    pub identity_http: crate::identity::IdentityHttp,
    /// `[email] allowed_3pids`, compiled.
    pub allowed_3pids: Vec<regex::Regex>,
    /// The homeserver Vouch serves accounts for (`[homeserver]`), if any.
    pub homeserver: Option<vouch_homeserver::Homeserver>,
    /// The HTTP client that forwards clients' requests to the homeserver (no overall
    /// timeout: `/sync` long-polls).
    pub proxy_http: reqwest::Client,
    /// Hashing slots: at most this many hashes run at once, whatever the load.
    hash_slots: Arc<tokio::sync::Semaphore>,
    /// A hash checked against when a login names an unknown user, so that unknown and known
    /// users take the same time.
    dummy_hash: String,
}

impl Services {
    /// Builds the services from a validated configuration.
    pub fn new(
        config: Config,
        db: Db,
        clock: Arc<dyn Clock>,
        secrets: Arc<dyn SecretSource>,
        signing_key: crate::signing_key::SigningKey,
    ) -> Result<Self, String> {
        let p = &config.password;
        let hasher = password_hasher(p);
        hasher.validate().map_err(|e| e.to_string())?;
        let policy = PasswordPolicy {
            min_length: p.min_length,
            max_length: p.max_length,
            require_digit: p.require_digit,
            require_symbol: p.require_symbol,
            require_lowercase: p.require_lowercase,
            require_uppercase: p.require_uppercase,
        };
        let dummy_hash = hasher
            .hash("vouch dummy password for timing", secrets.as_ref())
            .map_err(|e| e.to_string())?;
        let limits = Limiters::new(&config.rate_limits, clock.clone());
        let config_timeout = config.identity_server.timeout;
        let slots = match p.max_concurrent_hashes {
            0 => std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
            n => n,
        };
        let e = &config.email;
        let template_dir =
            Some(std::path::Path::new(&e.template_dir)).filter(|p| !p.as_os_str().is_empty());
        let templates = Templates::new(template_dir).map_err(|e| e.to_string())?;
        let composer = Composer::new(
            Arc::new(templates),
            &e.from,
            e.subjects.clone(),
            e.app_name.clone(),
            config.server_name.clone(),
        )
        .map_err(|e| e.to_string())?;
        let allowed_3pids = e
            .allowed_3pids
            .iter()
            .map(|p| regex::Regex::new(p).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        let homeserver = if config.homeserver.enabled() {
            let secret = config.homeserver.load_secret()?;
            Some(vouch_homeserver::Homeserver::new(
                &config.homeserver.url,
                secret.expose().to_owned(),
                HOMESERVER_CALL_TIMEOUT,
            )?)
        } else {
            None
        };
        let proxy_http = reqwest::Client::builder()
            .connect_timeout(HOMESERVER_CALL_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            homeserver,
            proxy_http,
            config,
            db,
            clock,
            secrets,
            hasher,
            policy,
            limits,
            composer,
            mail_wake: Arc::new(tokio::sync::Notify::new()),
            allowed_3pids,
            liveness: Arc::new(crate::health::Liveness::default()),
            identity_http: crate::identity::IdentityHttp::new(config_timeout)?,
            signing_key,
            hash_slots: Arc::new(tokio::sync::Semaphore::new(slots)),
            dummy_hash,
        })
    }

    /// The accounts service: every change to an account goes through it.
    pub fn accounts(self: &Arc<Self>) -> crate::accounts::Accounts<'_> {
        crate::accounts::Accounts::new(self)
    }

    /// Now, in ms since the epoch.
    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The server name.
    pub fn server_name(&self) -> &str {
        &self.config.server_name
    }

    /// Hashes a password off the async runtime.
    pub async fn hash_password(self: &Arc<Self>, password: String) -> ApiResult<String> {
        let slot = self.hash_slot().await?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            this.hasher.hash(&password, this.secrets.as_ref())
        })
        .await
        .map_err(|e| ApiError::internal(format!("hashing task failed: {e}")))?
        .map_err(|e| ApiError::internal(e.to_string()))
    }

    /// Checks a password off the async runtime. With no stored hash (unknown user, or an
    /// account without a password) it checks against a dummy hash and answers `false`, in
    /// about the same time as a real check.
    pub async fn verify_password(
        self: &Arc<Self>,
        password: String,
        stored: Option<String>,
    ) -> ApiResult<bool> {
        let slot = self.hash_slot().await?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            match stored {
                Some(hash) => this.hasher.verify(&password, &hash),
                None => {
                    let _ = this.hasher.verify(&password, &this.dummy_hash);
                    false
                }
            }
        })
        .await
        .map_err(|e| ApiError::internal(format!("hashing task failed: {e}")))
    }

    /// Waits for a hashing slot, at most `[password] hash_queue_timeout`; then 429. The slot
    /// is held until the hash is done, even if the request is dropped meanwhile.
    async fn hash_slot(&self) -> ApiResult<tokio::sync::OwnedSemaphorePermit> {
        let wait = self.config.password.hash_queue_timeout;
        match tokio::time::timeout(wait, self.hash_slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(ApiError::internal("hashing slots closed")),
            Err(_) => {
                vouch_metrics::RATE_LIMITED
                    .with_label_values(&["password_hashing"])
                    .inc();
                Err(ApiError::limit_exceeded(std::time::Duration::from_secs(1)))
            }
        }
    }
}
