//! `[rate_limits]`: rate limits: per-IP token buckets and send windows counted in the database.

use std::time::Duration;

use serde::{Deserialize, Serialize};

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
    /// `POST /refresh` and the OAuth 2.0 token endpoint per client IP.
    pub refresh_per_ip: Rate,
    /// OAuth 2.0 client registrations per client IP.
    pub client_registration_per_ip: Rate,
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
            // Clients register once per sign-in.
            client_registration_per_ip: Rate {
                per_second: 0.1,
                burst: 10,
            },
        }
    }
}
