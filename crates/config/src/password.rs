//! `[password]`: password hashing and policy.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Secret;

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
