//! `[sms]`: phone numbers: SMS codes, gateways and abuse controls.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Secret;

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
