//! Token-bucket rate limiters keyed by client address or account, on the injected clock.
//!
//! These are per instance: several instances behind a load balancer each allow the full
//! rate. Limits that must hold exactly across instances (mail and SMS sends) live in the
//! database instead.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vouch_config::{Rate, RateLimitsConfig};
use vouch_core::Clock;

use crate::error::ApiError;

/// Buckets beyond this many are pruned (full ones dropped) so memory stays bounded.
const PRUNE_AT: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated_ms: i64,
}

/// One keyed limiter.
pub struct RateLimiter {
    name: &'static str,
    rate: Rate,
    enabled: bool,
    clock: Arc<dyn Clock>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// A limiter allowing `rate`; a disabled one allows everything.
    pub fn new(name: &'static str, rate: Rate, enabled: bool, clock: Arc<dyn Clock>) -> Self {
        Self {
            name,
            rate,
            enabled,
            clock,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refuse(&self, bucket: &Bucket) -> ApiError {
        vouch_metrics::RATE_LIMITED
            .with_label_values(&[self.name])
            .inc();
        ApiError::limit_exceeded(self.wait_for_one(bucket))
    }

    fn refill(&self, bucket: &mut Bucket, now: i64) {
        let elapsed = (now - bucket.updated_ms).max(0) as f64 / 1000.0;
        bucket.tokens =
            (bucket.tokens + elapsed * self.rate.per_second).min(f64::from(self.rate.burst));
        bucket.updated_ms = now;
    }

    fn wait_for_one(&self, bucket: &Bucket) -> Duration {
        let missing = (1.0 - bucket.tokens).max(0.0);
        Duration::from_secs_f64(missing / self.rate.per_second)
    }

    /// Takes one request's worth from `key`'s bucket, or says how long to wait.
    pub fn check(&self, key: &str) -> Result<(), ApiError> {
        if !self.enabled {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= PRUNE_AT {
            let burst = f64::from(self.rate.burst);
            let per_second = self.rate.per_second;
            buckets.retain(|_, b| {
                b.tokens + (now - b.updated_ms).max(0) as f64 / 1000.0 * per_second < burst
            });
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: f64::from(self.rate.burst),
            updated_ms: now,
        });
        self.refill(bucket, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(self.refuse(bucket))
        }
    }

    /// Like [`check`](Self::check) but takes nothing: for limits counted only on failure.
    pub fn peek(&self, key: &str) -> Result<(), ApiError> {
        if !self.enabled {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(bucket) = buckets.get_mut(key) else {
            return Ok(());
        };
        self.refill(bucket, now);
        if bucket.tokens >= 1.0 {
            Ok(())
        } else {
            Err(self.refuse(bucket))
        }
    }
}

/// The server's limiters.
pub struct Limiters {
    /// `POST /login` per client address.
    pub login_per_ip: RateLimiter,
    /// `POST /login` per account.
    pub login_per_account: RateLimiter,
    /// Failed logins per account.
    pub failed_login_per_account: RateLimiter,
    /// `POST /register` per client address.
    pub registration_per_ip: RateLimiter,
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vouch_core::MockClock;

    #[test]
    fn bucket_empties_and_refills_with_the_clock() {
        let clock = Arc::new(MockClock::default());
        let limiter = RateLimiter::new(
            "test",
            Rate {
                per_second: 0.5,
                burst: 2,
            },
            true,
            clock.clone(),
        );
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_ok());
        let err = limiter.check("a").unwrap_err();
        assert_eq!(err.errcode(), "M_LIMIT_EXCEEDED");
        assert!(limiter.check("b").is_ok(), "keys are independent");
        clock.advance(Duration::from_secs(2));
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_err());
        assert!(limiter.peek("a").is_err());
        clock.advance(Duration::from_secs(2));
        assert!(limiter.peek("a").is_ok());
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
}
