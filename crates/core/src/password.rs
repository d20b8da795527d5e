//! Password hashing (argon2id by default, bcrypt for Synapse compatibility) and the
//! password policy behind `M_WEAK_PASSWORD`.

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher as _, PasswordVerifier as _, Version,
};

use crate::secrets::{SecretSource, random_bytes};

/// Which algorithm new hashes use. Existing hashes of either kind always verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// argon2id (PHC string `$argon2id$…`).
    Argon2id,
    /// bcrypt (`$2b$…`), as Synapse stores.
    Bcrypt,
}

/// How passwords are hashed.
#[derive(Debug, Clone)]
pub struct PasswordHasher {
    /// Algorithm for new hashes.
    pub scheme: Scheme,
    /// bcrypt cost (Synapse's default is 12).
    pub bcrypt_cost: u32,
    /// argon2 memory in KiB.
    pub argon2_m_cost_kib: u32,
    /// argon2 iterations.
    pub argon2_t_cost: u32,
    /// argon2 lanes.
    pub argon2_p_cost: u32,
    /// Appended to the password before bcrypt, like Synapse's `password_config.pepper`.
    pub pepper: String,
    /// The most a stored hash may ask for.
    pub ceilings: HashCeilings,
}

/// The costs a stored hash may ask for at most. `verify()` takes the costs from the stored
/// hash, so without a ceiling one imported `$argon2id$…t=4294967295` pins a core for good
/// and `m=1048576` costs a GiB per login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashCeilings {
    /// argon2 memory, KiB.
    pub argon2_m_cost_kib: u32,
    /// argon2 iterations.
    pub argon2_t_cost: u32,
    /// argon2 lanes.
    pub argon2_p_cost: u32,
    /// bcrypt cost.
    pub bcrypt_cost: u32,
}

impl Default for HashCeilings {
    fn default() -> Self {
        Self {
            argon2_m_cost_kib: 65_536,
            argon2_t_cost: 10,
            argon2_p_cost: 4,
            bcrypt_cost: 14,
        }
    }
}

/// Why a stored hash is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashRefusal {
    /// Not an argon2 PHC string or a bcrypt hash Vouch understands.
    #[error("not an argon2 or bcrypt hash")]
    Unknown,
    /// It asks for more than the ceilings allow.
    #[error("its cost exceeds the configured ceiling ({0})")]
    TooCostly(String),
}

/// Hashing failed: the configured parameters are out of the algorithm's range.
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

impl PasswordHasher {
    fn argon2(&self) -> Result<Argon2<'static>, HashError> {
        let params = Params::new(
            self.argon2_m_cost_kib,
            self.argon2_t_cost,
            self.argon2_p_cost,
            None,
        )
        .map_err(|e| HashError(e.to_string()))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }

    /// Checks that the parameters are usable, so that a bad configuration fails at start-up
    /// rather than at the first registration.
    pub fn validate(&self) -> Result<(), HashError> {
        self.argon2()?;
        if !(4..=31).contains(&self.bcrypt_cost) {
            return Err(HashError(format!(
                "bcrypt_cost {} is outside 4..=31",
                self.bcrypt_cost
            )));
        }
        Ok(())
    }

    /// Hashes `password` with the configured scheme. CPU-heavy: call it off the async runtime.
    pub fn hash(&self, password: &str, secrets: &dyn SecretSource) -> Result<String, HashError> {
        match self.scheme {
            Scheme::Argon2id => {
                let salt: [u8; 16] = random_bytes(secrets);
                let hash = self
                    .argon2()?
                    .hash_password_with_salt(password.as_bytes(), &salt)
                    .map_err(|e| HashError(e.to_string()))?;
                Ok(hash.to_string())
            }
            Scheme::Bcrypt => {
                let salt: [u8; 16] = random_bytes(secrets);
                let peppered = format!("{password}{}", self.pepper);
                let parts = bcrypt::hash_with_salt(peppered.as_bytes(), self.bcrypt_cost, salt)
                    .map_err(|e| HashError(e.to_string()))?;
                Ok(parts.format_for_version(bcrypt::Version::TwoB))
            }
        }
    }

    /// Whether `stored` is a hash Vouch understands and within the ceilings: checked at
    /// import and before every verification.
    pub fn check_stored(&self, stored: &str) -> Result<(), HashRefusal> {
        let c = &self.ceilings;
        if stored.starts_with("$argon2") {
            let parsed = PasswordHash::new(stored).map_err(|_| HashRefusal::Unknown)?;
            let params = Params::try_from(&parsed).map_err(|_| HashRefusal::Unknown)?;
            if params.m_cost() > c.argon2_m_cost_kib
                || params.t_cost() > c.argon2_t_cost
                || params.p_cost() > c.argon2_p_cost
            {
                return Err(HashRefusal::TooCostly(format!(
                    "argon2 m={} t={} p={}",
                    params.m_cost(),
                    params.t_cost(),
                    params.p_cost()
                )));
            }
            Ok(())
        } else if stored.starts_with("$2") {
            let cost = stored
                .get(4..6)
                .and_then(|c| c.parse::<u32>().ok())
                .ok_or(HashRefusal::Unknown)?;
            if cost > c.bcrypt_cost {
                return Err(HashRefusal::TooCostly(format!("bcrypt cost {cost}")));
            }
            Ok(())
        } else {
            Err(HashRefusal::Unknown)
        }
    }

    /// Whether `password` matches `stored`. Any malformed or unknown hash, or one above the
    /// ceilings, is a mismatch. CPU-heavy: call it off the async runtime.
    pub fn verify(&self, password: &str, stored: &str) -> bool {
        if self.check_stored(stored).is_err() {
            return false;
        }
        if stored.starts_with("$argon2") {
            let Ok(parsed) = PasswordHash::new(stored) else {
                return false;
            };
            // The parameters come from the stored hash, not the configuration.
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        } else if stored.starts_with("$2") {
            let peppered = format!("{password}{}", self.pepper);
            bcrypt::verify(peppered.as_bytes(), stored).unwrap_or(false)
        } else {
            false
        }
    }

    /// Whether a stored hash was made with another scheme or weaker parameters than the
    /// configured ones, so that a successful login should store a fresh hash.
    pub fn needs_rehash(&self, stored: &str) -> bool {
        match self.scheme {
            Scheme::Argon2id => {
                let Ok(parsed) = PasswordHash::new(stored) else {
                    return true;
                };
                let Ok(params) = Params::try_from(&parsed) else {
                    return true;
                };
                parsed.algorithm.as_str() != "argon2id"
                    || params.m_cost() < self.argon2_m_cost_kib
                    || params.t_cost() < self.argon2_t_cost
            }
            Scheme::Bcrypt => match stored.get(4..6).and_then(|c| c.parse::<u32>().ok()) {
                Some(cost) => !stored.starts_with("$2") || cost < self.bcrypt_cost,
                None => true,
            },
        }
    }
}

/// The server's password policy.
#[derive(Debug, Clone, Default)]
pub struct PasswordPolicy {
    /// Minimum length in characters.
    pub min_length: usize,
    /// Maximum length in bytes (hashing work and bcrypt's 72-byte limit make a cap sensible).
    pub max_length: usize,
    /// At least one ASCII digit.
    pub require_digit: bool,
    /// At least one character that is neither a letter nor a digit.
    pub require_symbol: bool,
    /// At least one lower-case letter.
    pub require_lowercase: bool,
    /// At least one upper-case letter.
    pub require_uppercase: bool,
}

/// Why a password is refused (`M_WEAK_PASSWORD`); the text is shown to the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeakPassword {
    /// Shorter than `min_length`.
    #[error("the password must be at least {0} characters long")]
    TooShort(usize),
    /// Longer than `max_length`.
    #[error("the password must be at most {0} bytes long")]
    TooLong(usize),
    /// No digit.
    #[error("the password must contain a digit")]
    NoDigit,
    /// No symbol.
    #[error("the password must contain a symbol")]
    NoSymbol,
    /// No lower-case letter.
    #[error("the password must contain a lower-case letter")]
    NoLowercase,
    /// No upper-case letter.
    #[error("the password must contain an upper-case letter")]
    NoUppercase,
}

impl PasswordPolicy {
    /// Whether `password` is longer than any password this policy lets be set, so that it
    /// cannot match a stored hash made under it (checked before any hashing).
    pub fn too_long(&self, password: &str) -> bool {
        self.max_length > 0 && password.len() > self.max_length
    }

    /// Checks a new password against the policy.
    pub fn check(&self, password: &str) -> Result<(), WeakPassword> {
        if password.chars().count() < self.min_length {
            return Err(WeakPassword::TooShort(self.min_length));
        }
        if self.max_length > 0 && password.len() > self.max_length {
            return Err(WeakPassword::TooLong(self.max_length));
        }
        if self.require_digit && !password.chars().any(|c| c.is_ascii_digit()) {
            return Err(WeakPassword::NoDigit);
        }
        if self.require_symbol && password.chars().all(char::is_alphanumeric) {
            return Err(WeakPassword::NoSymbol);
        }
        if self.require_lowercase && !password.chars().any(char::is_lowercase) {
            return Err(WeakPassword::NoLowercase);
        }
        if self.require_uppercase && !password.chars().any(char::is_uppercase) {
            return Err(WeakPassword::NoUppercase);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::SeededSecretSource;

    fn hasher(scheme: Scheme) -> PasswordHasher {
        PasswordHasher {
            scheme,
            bcrypt_cost: 4,
            argon2_m_cost_kib: 64,
            argon2_t_cost: 1,
            argon2_p_cost: 1,
            pepper: String::new(),
            ceilings: HashCeilings::default(),
        }
    }

    #[test]
    fn hashes_above_the_ceilings_are_refused_without_hashing() {
        let h = hasher(Scheme::Argon2id);
        // Would take hours and 1 GiB if verified.
        let costly = "$argon2id$v=19$m=1048576,t=4294967295,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
        assert!(matches!(
            h.check_stored(costly),
            Err(HashRefusal::TooCostly(_))
        ));
        let started = std::time::Instant::now();
        assert!(!h.verify("anything", costly));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert!(matches!(
            h.check_stored("$2b$31$lNzrd6XRY1bachP2RtOfgeXVA0V/SZaDEl7fJgYrqzKtdxWg43OYG"),
            Err(HashRefusal::TooCostly(_))
        ));
        assert_eq!(h.check_stored("plain"), Err(HashRefusal::Unknown));
        let ok = h.hash("pw", &SeededSecretSource::new(2)).unwrap();
        assert_eq!(h.check_stored(&ok), Ok(()));
    }

    #[test]
    fn argon2id_round_trip() {
        let h = hasher(Scheme::Argon2id);
        let hash = h
            .hash("correct horse", &SeededSecretSource::new(1))
            .unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{hash}");
        assert!(h.verify("correct horse", &hash));
        assert!(!h.verify("wrong horse", &hash));
        assert!(!h.needs_rehash(&hash));
        let stronger = PasswordHasher {
            argon2_m_cost_kib: 128,
            ..h.clone()
        };
        assert!(stronger.needs_rehash(&hash));
    }

    #[test]
    fn bcrypt_round_trip_and_scheme_switch() {
        let h = hasher(Scheme::Bcrypt);
        let hash = h.hash("pässword", &SeededSecretSource::new(1)).unwrap();
        assert!(hash.starts_with("$2b$04$"), "{hash}");
        assert!(h.verify("pässword", &hash));
        assert!(!h.verify("password", &hash));
        // An argon2 server still verifies bcrypt hashes and wants to rehash them.
        let a = hasher(Scheme::Argon2id);
        assert!(a.verify("pässword", &hash));
        assert!(a.needs_rehash(&hash));
    }

    #[test]
    fn verifies_a_hash_made_by_synapse() {
        // Made by Python's bcrypt (as Synapse uses it): bcrypt.hashpw(b"hunter2", bcrypt.gensalt(4)).
        let synapse = "$2b$04$lNzrd6XRY1bachP2RtOfgeXVA0V/SZaDEl7fJgYrqzKtdxWg43OYG";
        let h = hasher(Scheme::Argon2id);
        assert!(h.verify("hunter2", synapse));
        assert!(!h.verify("hunter3", synapse));
        // bcrypt.hashpw(b"hunter2" + b"pep", ...): Synapse with `pepper: pep`.
        let peppered = "$2b$04$bGdngg8HPopH94vVSj4uyeu9MtzQ8kT6FwwcqXkBXw5Mxy4lJ8YEW";
        let with_pepper = PasswordHasher {
            pepper: "pep".into(),
            ..h.clone()
        };
        assert!(with_pepper.verify("hunter2", peppered));
        assert!(!h.verify("hunter2", peppered));
    }

    #[test]
    fn pepper_is_appended_like_synapse() {
        let h = PasswordHasher {
            pepper: "pep".into(),
            ..hasher(Scheme::Bcrypt)
        };
        let hash = h.hash("pw", &SeededSecretSource::new(3)).unwrap();
        assert!(h.verify("pw", &hash));
        let unpeppered = hasher(Scheme::Bcrypt);
        assert!(unpeppered.verify("pwpep", &hash));
    }

    #[test]
    fn garbage_hashes_never_verify() {
        let h = hasher(Scheme::Argon2id);
        assert!(!h.verify("", ""));
        assert!(!h.verify("x", "$argon2id$broken"));
        assert!(!h.verify("x", "$2b$zz$"));
        assert!(!h.verify("x", "plaintext"));
    }

    #[test]
    fn policy() {
        let p = PasswordPolicy {
            min_length: 8,
            max_length: 16,
            require_digit: true,
            require_symbol: true,
            require_lowercase: true,
            require_uppercase: true,
        };
        assert_eq!(p.check("short"), Err(WeakPassword::TooShort(8)));
        assert_eq!(p.check(&"a".repeat(17)), Err(WeakPassword::TooLong(16)));
        assert_eq!(p.check("abcdefgh"), Err(WeakPassword::NoDigit));
        assert_eq!(p.check("abcdefg1"), Err(WeakPassword::NoSymbol));
        assert_eq!(p.check("ABCDEF1!"), Err(WeakPassword::NoLowercase));
        assert_eq!(p.check("abcdef1!"), Err(WeakPassword::NoUppercase));
        assert_eq!(p.check("Abcdef1!"), Ok(()));
        assert_eq!(PasswordPolicy::default().check(""), Ok(()));
    }
}
