//! Keyed rate limiters (`governor`'s GCRA over a sharded map) on the injected clock.
//!
//! These are per instance: several instances behind a load balancer each allow the full
//! rate. Limits that must hold exactly across instances (mail and SMS sends) live in the
//! database instead.
//!
//! Memory is bounded whatever keys arrive: keys whose state equals a fresh one are dropped
//! every [`CLEANUP_EVERY_MS`], and past [`MAX_KEYS`] live keys a new request is judged by one
//! shared overflow bucket instead of getting a key of its own, so a flood of distinct keys
//! (forged addresses, random user names) costs neither memory nor a scan per request.

use std::hash::{Hash, Hasher};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use governor::clock::{Clock as GovernorClock, Reference as _};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter as Gcra};
use vouch_config::{Rate, RateLimitsConfig};
use vouch_core::Clock;

use crate::error::ApiError;

/// Live keys a limiter keeps before new keys share the overflow bucket.
pub const MAX_KEYS: usize = 100_000;
/// How often stale keys are dropped.
pub const CLEANUP_EVERY_MS: i64 = 10_000;

/// The injected clock as governor sees it.
#[derive(Clone)]
struct InjectedClock(Arc<dyn Clock>);

impl GovernorClock for InjectedClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.0.now_ms()).unwrap_or(0))
    }
}

/// Keys are hashed to 64 bits: the map holds no client-chosen strings (a 1 MB user name
/// costs 8 bytes), and collisions only make two keys share a bucket.
type Key = u64;

/// One keyed limiter.
pub struct RateLimiter {
    name: &'static str,
    enabled: bool,
    clock: InjectedClock,
    gcra: Gcra<Key, DashMapStateStore<Key>, InjectedClock, NoOpMiddleware<Duration>>,
    /// When stale keys were last dropped (ms).
    cleaned_at: AtomicI64,
}

impl RateLimiter {
    /// A limiter allowing `rate`; a disabled one allows everything.
    pub fn new(name: &'static str, rate: Rate, enabled: bool, clock: Arc<dyn Clock>) -> Self {
        let clock = InjectedClock(clock);
        let burst = NonZeroU32::new(rate.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        // One token every 1/per_second seconds; `validate()` keeps per_second positive.
        let period = Duration::from_secs_f64(1.0 / rate.per_second.max(1e-9));
        let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        Self {
            name,
            enabled,
            gcra: Gcra::new(quota, DashMapStateStore::default(), clock.clone()),
            cleaned_at: AtomicI64::new(clock.0.now_ms()),
            clock,
        }
    }

    /// Takes one request's worth from `key`'s bucket, or says how long to wait.
    pub fn check(&self, key: &str) -> Result<(), ApiError> {
        if !self.enabled {
            return Ok(());
        }
        self.housekeep();
        let mut hashed = hash(key);
        if self.gcra.len() >= MAX_KEYS {
            // Full: every request is judged by the one overflow bucket (a key of its own
            // would grow the map).
            hashed = 0;
        }
        match self.gcra.check_key(&hashed) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                vouch_metrics::RATE_LIMITED
                    .with_label_values(&[self.name])
                    .inc();
                let now = self.clock.now();
                let wait = not_until.earliest_possible().duration_since(now);
                Err(ApiError::limit_exceeded(
                    Duration::from(wait).max(Duration::from_millis(1)),
                ))
            }
        }
    }

    /// [`Self::check`] keyed on a client address (its /64 for IPv6).
    pub fn check_ip(&self, ip: std::net::IpAddr) -> Result<(), ApiError> {
        self.check(&crate::client_ip::ClientIp(ip).limit_key())
    }

    /// Drops keys whose state equals a fresh one, at most every [`CLEANUP_EVERY_MS`]; one
    /// caller does it while the others go on.
    fn housekeep(&self) {
        let now = self.clock.0.now_ms();
        let last = self.cleaned_at.load(Ordering::Relaxed);
        if now - last < CLEANUP_EVERY_MS
            || self
                .cleaned_at
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        self.gcra.retain_recent();
        self.gcra.shrink_to_fit();
    }

    /// Live keys held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.gcra.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.gcra.is_empty()
    }
}

fn hash(key: &str) -> Key {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    // 0 is the overflow bucket.
    h.finish().max(1)
}

/// The server's limiters.
pub struct Limiters {
    /// `POST /login` per client address.
    pub login_per_ip: RateLimiter,
    /// `POST /login` per account (or per third-party identifier, known or not).
    pub login_per_account: RateLimiter,
    /// Password checks per account (or third-party identifier) that may fail, in `/login`
    /// and every UIA password stage: one is spent before each check, so once they are
    /// used up even the right password waits and guessing stops.
    pub failed_login_per_account: RateLimiter,
    /// `POST /register` per client address; also every other way a registration token
    /// is tried (validity endpoint, fallback page).
    pub registration_per_ip: RateLimiter,
    /// UIA sessions started per client address.
    pub uia_sessions_per_ip: RateLimiter,
    /// `GET /register/available` per client address.
    pub username_available_per_ip: RateLimiter,
    /// `POST /refresh` and the OAuth 2.0 token endpoint per client address.
    pub refresh_per_ip: RateLimiter,
    /// OAuth 2.0 client registrations per client address.
    pub client_registration_per_ip: RateLimiter,
    /// Email requestToken per client address.
    pub email_per_ip: RateLimiter,
    /// Phone requestToken per client address.
    pub sms_per_ip: RateLimiter,
}

impl Limiters {
    /// Builds the limiters from `[rate_limits]`.
    pub fn new(config: &RateLimitsConfig, clock: Arc<dyn Clock>) -> Self {
        let make = |name, rate| RateLimiter::new(name, rate, config.enabled, clock.clone());
        Self {
            login_per_ip: make("login_per_ip", config.login_per_ip),
            login_per_account: make("login_per_account", config.login_per_account),
            failed_login_per_account: make(
                "failed_login_per_account",
                config.failed_login_per_account,
            ),
            registration_per_ip: make("registration_per_ip", config.registration_per_ip),
            email_per_ip: make("email_per_ip", config.email_per_ip),
            sms_per_ip: make("sms_per_ip", config.sms_per_ip),
            uia_sessions_per_ip: make("uia_sessions_per_ip", config.uia_sessions_per_ip),
            username_available_per_ip: make(
                "username_available_per_ip",
                config.username_available_per_ip,
            ),
            refresh_per_ip: make("refresh_per_ip", config.refresh_per_ip),
            client_registration_per_ip: make(
                "client_registration_per_ip",
                config.client_registration_per_ip,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vouch_core::MockClock;

    fn limiter(per_second: f64, burst: u32, clock: Arc<MockClock>) -> RateLimiter {
        RateLimiter::new("test", Rate { per_second, burst }, true, clock)
    }

    #[test]
    fn bucket_empties_and_refills_with_the_clock() {
        let clock = Arc::new(MockClock::default());
        let limiter = limiter(0.5, 2, clock.clone());
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_ok());
        let err = limiter.check("a").unwrap_err();
        assert_eq!(err.errcode(), "M_LIMIT_EXCEEDED");
        assert!(limiter.check("b").is_ok(), "keys are independent");
        clock.advance(Duration::from_secs(2));
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_err());
    }

    #[test]
    fn disabled_limiter_allows_everything() {
        let limiter = RateLimiter::new(
            "test",
            Rate {
                per_second: 0.01,
                burst: 1,
            },
            false,
            Arc::new(MockClock::default()),
        );
        for _ in 0..100 {
            assert!(limiter.check("a").is_ok());
        }
    }

    #[test]
    fn a_flood_of_keys_stays_bounded_and_is_dropped_when_stale() {
        let clock = Arc::new(MockClock::default());
        let limiter = limiter(1.0, 1, clock.clone());
        for i in 0..(MAX_KEYS + 5_000) {
            let _ = limiter.check(&format!("key{i}"));
        }
        assert!(limiter.len() <= MAX_KEYS + 1, "{} keys", limiter.len());
        // Past the bound new keys share the overflow bucket: one passes, the next waits.
        assert!(limiter.check("late-a").is_err() || limiter.check("late-b").is_err());
        // Once their buckets are full again, the keys are dropped.
        clock.advance(Duration::from_millis(
            u64::try_from(CLEANUP_EVERY_MS).unwrap() + 2_000,
        ));
        let _ = limiter.check("fresh");
        assert!(limiter.len() <= 2, "{} keys after cleanup", limiter.len());
    }
}
