//! Random secrets: access tokens, session IDs, salts. Tokens are stored only as hashes and
//! compared in constant time.

use std::sync::Mutex;

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Where random bytes come from. Injected, so that tests can make it deterministic.
pub trait SecretSource: Send + Sync + 'static {
    /// Fills `buf` with random bytes.
    fn fill(&self, buf: &mut [u8]);
}

/// The operating system's CSPRNG.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsSecretSource;

impl SecretSource for OsSecretSource {
    #[expect(
        clippy::disallowed_methods,
        reason = "the one place that reads the OS random source"
    )]
    fn fill(&self, buf: &mut [u8]) {
        // getrandom only fails when the OS has no entropy source at all; a homeserver
        // that cannot make secrets must not go on making guessable ones.
        if let Err(e) = getrandom::fill(buf) {
            panic!("the operating system's random source failed: {e}");
        }
    }
}

/// A seeded ChaCha20 generator for tests: the same seed gives the same tokens.
#[derive(Debug)]
pub struct SeededSecretSource(Mutex<ChaCha20Rng>);

impl SeededSecretSource {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(Mutex::new(ChaCha20Rng::seed_from_u64(seed)))
    }
}

impl SecretSource for SeededSecretSource {
    fn fill(&self, buf: &mut [u8]) {
        let mut rng = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        rng.fill_bytes(buf);
    }
}

const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const LOWER_ALPHANUMERIC: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const UPPER_ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// A random string of `len` characters drawn uniformly from `alphabet` (rejection sampling,
/// so no character is more likely than another).
pub fn random_string(source: &dyn SecretSource, alphabet: &[u8], len: usize) -> String {
    assert!(!alphabet.is_empty() && alphabet.len() <= 256);
    let limit = 256 - (256 % alphabet.len());
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        source.fill(&mut buf);
        for &b in &buf {
            if usize::from(b) < limit && out.len() < len {
                out.push(char::from(alphabet[usize::from(b) % alphabet.len()]));
            }
        }
    }
    out
}

/// A new access or refresh token: a recognisable prefix and 40 alphanumeric characters
/// (about 238 bits).
pub fn new_token(source: &dyn SecretSource, prefix: &str) -> String {
    format!("{prefix}_{}", random_string(source, ALPHANUMERIC, 40))
}

/// An opaque identifier (UIA session, validation session): 24 alphanumeric characters.
pub fn new_opaque_id(source: &dyn SecretSource) -> String {
    random_string(source, ALPHANUMERIC, 24)
}

/// An opaque identifier that sorts by creation time: `now_ms` in base 36 (nine characters,
/// fixed width until the year 5138), then 16 random alphanumerics (about 95 bits). Rows
/// keyed by it are appended to their indexes instead of each landing on a random page,
/// which is what a write costs most (validation sessions, outbox rows).
pub fn new_ordered_id(source: &dyn SecretSource, now_ms: i64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut n = u64::try_from(now_ms).unwrap_or(0);
    let mut time = [b'0'; 9];
    for slot in time.iter_mut().rev() {
        *slot = DIGITS[usize::try_from(n % 36).unwrap_or(0)];
        n /= 36;
    }
    let mut id = String::with_capacity(25);
    id.extend(time.iter().map(|&b| char::from(b)));
    id.push_str(&random_string(source, ALPHANUMERIC, 16));
    id
}

/// A device ID in the style clients expect: ten upper-case letters.
pub fn new_device_id(source: &dyn SecretSource) -> String {
    random_string(source, UPPER_ALPHA, 10)
}

/// A generated localpart for registrations without a username.
pub fn new_localpart(source: &dyn SecretSource) -> String {
    random_string(source, LOWER_ALPHANUMERIC, 12)
}

/// Random bytes, e.g. a password salt.
pub fn random_bytes<const N: usize>(source: &dyn SecretSource) -> [u8; N] {
    let mut buf = [0u8; N];
    source.fill(&mut buf);
    buf
}

/// The form in which a token is stored and looked up: hex SHA-256. Tokens carry enough
/// entropy that a fast hash is the right tool (a slow one is for passwords).
pub fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 0xf)]));
    }
    out
}

/// Compares two secrets in time that does not depend on where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_ids_sort_by_time_and_differ_within_a_millisecond() {
        let source = SeededSecretSource::new(3);
        let earlier = new_ordered_id(&source, 1_767_225_600_000);
        let same_ms = new_ordered_id(&source, 1_767_225_600_000);
        let later = new_ordered_id(&source, 1_767_225_600_001);
        let much_later = new_ordered_id(&source, 4_102_444_800_000);
        assert_eq!(earlier.len(), 25);
        assert_ne!(earlier, same_ms);
        assert!(earlier[..9] == same_ms[..9] && earlier[..9] < later[..9]);
        assert!(later < much_later, "{later} < {much_later}");
        assert!(earlier.bytes().all(|b| b.is_ascii_alphanumeric()));
    }

    #[test]
    fn seeded_source_is_deterministic_and_tokens_are_well_formed() {
        let a = new_token(&SeededSecretSource::new(7), "syt");
        let b = new_token(&SeededSecretSource::new(7), "syt");
        assert_eq!(a, b);
        assert!(a.starts_with("syt_"));
        assert_eq!(a.len(), 44);
        assert!(a[4..].chars().all(|c| c.is_ascii_alphanumeric()));
        let c = new_token(&SeededSecretSource::new(8), "syt");
        assert_ne!(a, c);
    }

    #[test]
    fn os_tokens_differ() {
        assert_ne!(
            new_token(&OsSecretSource, "x"),
            new_token(&OsSecretSource, "x")
        );
        let d = new_device_id(&OsSecretSource);
        assert_eq!(d.len(), 10);
        assert!(d.chars().all(|c| c.is_ascii_uppercase()));
    }

    #[test]
    fn token_hash_is_sha256_hex() {
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(constant_time_eq("same", "same"));
        assert!(!constant_time_eq("same", "sama"));
        assert!(!constant_time_eq("same", "samey"));
    }
}
