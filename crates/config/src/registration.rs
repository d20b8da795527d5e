//! `[registration]`: who may register, and what registration asks for.

use serde::{Deserialize, Serialize};

/// A policy the user accepts in the `m.login.terms` stage.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TermsPolicy {
    /// The policy's ID (the key under `policies`), e.g. `privacy_policy`.
    pub id: String,
    /// Its version; a new version must be accepted again.
    pub version: String,
    /// Language of `name` and `url` (default `en`).
    #[serde(default = "default_lang")]
    pub lang: String,
    /// Human-readable name.
    pub name: String,
    /// Where the text is.
    pub url: String,
}

fn default_lang() -> String {
    "en".into()
}

/// `[registration]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrationConfig {
    /// Whether `POST /register` creates accounts at all.
    pub enabled: bool,
    /// Media of which the user must verify one to register (`email`, `msisdn`).
    pub require_3pid: Vec<String>,
    /// Whether registration needs a token (`m.login.registration_token`).
    pub registration_token_required: bool,
    /// Whether guest accounts may be made (`kind=guest`).
    pub allow_guests: bool,
    /// Localparts nobody may register.
    pub reserved_localparts: Vec<String>,
    /// Policies accepted in the `m.login.terms` stage; none: no terms stage.
    pub terms: Vec<TermsPolicy>,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            require_3pid: Vec::new(),
            registration_token_required: false,
            allow_guests: false,
            reserved_localparts: Vec::new(),
            terms: Vec::new(),
        }
    }
}
