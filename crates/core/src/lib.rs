//! Vouch's domain: the rules for accounts, passwords, secrets and User-Interactive
//! Authentication (UIA).
//!
//! Nothing here speaks HTTP or SQL. Time and randomness come in through [`Clock`] and
//! [`SecretSource`] so that expiry and token generation are testable without sleeping.

pub mod clock;
pub mod delivery;
pub mod localpart;
pub mod oauth;
pub mod password;
pub mod secrets;
pub mod threepid;
pub mod uia;
pub mod validation;

pub use clock::{Clock, MockClock, SystemClock};
pub use secrets::{OsSecretSource, SecretSource, SeededSecretSource};
