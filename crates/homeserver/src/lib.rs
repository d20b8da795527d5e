//! The homeserver Vouch serves accounts for: a stock Synapse in its
//! `matrix_authentication_service` mode. Vouch tells it of every account and device change
//! through `/_synapse/mas/*` ([`Call`]), authenticated with the shared secret. The calls are
//! idempotent, so the outbox may send one twice after a crash without harm.

use std::time::Duration;

use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use vouch_core::delivery::SendError;

/// One change Synapse must learn of. Stored as JSON in the outbox when it is queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case", deny_unknown_fields)]
pub enum Call {
    /// Create the user, or update an existing one's profile and addresses.
    ProvisionUser {
        /// The localpart.
        localpart: String,
        /// The display name, if any.
        #[serde(rename = "set_displayname", skip_serializing_if = "Option::is_none")]
        displayname: Option<String>,
        /// Verified email addresses (Synapse shows them to its admins).
        #[serde(rename = "set_emails")]
        emails: Vec<String>,
    },
    /// Create a device, or rename an existing one.
    UpsertDevice {
        /// The localpart.
        localpart: String,
        /// The device ID.
        device_id: String,
        /// Its display name.
        #[serde(skip_serializing_if = "Option::is_none")]
        display_name: Option<String>,
    },
    /// Delete a device (its tokens stop working at Synapse at once).
    DeleteDevice {
        /// The localpart.
        localpart: String,
        /// The device ID.
        device_id: String,
    },
    /// Make the user's devices exactly these (deleting the others).
    SyncDevices {
        /// The localpart.
        localpart: String,
        /// The devices that remain.
        devices: Vec<String>,
    },
    /// Deactivate the user; with `erase`, forget its profile too.
    DeleteUser {
        /// The localpart.
        localpart: String,
        /// GDPR erasure.
        erase: bool,
    },
    /// Undo a deactivation.
    ReactivateUser {
        /// The localpart.
        localpart: String,
    },
    /// Set the display name.
    SetDisplayname {
        /// The localpart.
        localpart: String,
        /// The new display name.
        displayname: String,
    },
    /// Remove the display name.
    UnsetDisplayname {
        /// The localpart.
        localpart: String,
    },
    /// Let the user replace their cross-signing keys without UIA for a while.
    AllowCrossSigningReset {
        /// The localpart.
        localpart: String,
    },
}

impl Call {
    /// The path below `/_synapse/mas/`.
    fn path(&self) -> &'static str {
        match self {
            Call::ProvisionUser { .. } => "provision_user",
            Call::UpsertDevice { .. } => "upsert_device",
            Call::DeleteDevice { .. } => "delete_device",
            Call::SyncDevices { .. } => "sync_devices",
            Call::DeleteUser { .. } => "delete_user",
            Call::ReactivateUser { .. } => "reactivate_user",
            Call::SetDisplayname { .. } => "set_displayname",
            Call::UnsetDisplayname { .. } => "unset_displayname",
            Call::AllowCrossSigningReset { .. } => "allow_cross_signing_reset",
        }
    }

    /// The localpart it is about.
    pub fn localpart(&self) -> &str {
        match self {
            Call::ProvisionUser { localpart, .. }
            | Call::UpsertDevice { localpart, .. }
            | Call::DeleteDevice { localpart, .. }
            | Call::SyncDevices { localpart, .. }
            | Call::DeleteUser { localpart, .. }
            | Call::ReactivateUser { localpart }
            | Call::SetDisplayname { localpart, .. }
            | Call::UnsetDisplayname { localpart }
            | Call::AllowCrossSigningReset { localpart } => localpart,
        }
    }

    /// The JSON body Synapse expects: the call's fields, named as Synapse names them.
    fn body(&self) -> serde_json::Value {
        let mut body = serde_json::to_value(self).unwrap_or_default();
        if let Some(fields) = body.as_object_mut() {
            fields.remove("call");
        }
        body
    }
}

/// What a call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// Synapse created something new (a user, a device) rather than updating it.
    pub created: bool,
}

/// Why a call did not go through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// Synapse could not be reached or could not answer now (5xx, 408, 429): try again.
    Unavailable(String),
    /// Synapse refused (4xx): the same call will be refused again.
    Refused {
        /// The HTTP status.
        status: u16,
        /// Synapse's `errcode`.
        errcode: String,
        /// Synapse's `error` (cut to 300 characters).
        message: String,
    },
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unavailable(why) => f.write_str(why),
            CallError::Refused {
                status,
                errcode,
                message,
            } => write!(f, "homeserver refused ({status} {errcode}): {message}"),
        }
    }
}

impl From<CallError> for SendError {
    fn from(e: CallError) -> Self {
        SendError {
            message: e.to_string(),
            permanent: matches!(e, CallError::Refused { .. }),
        }
    }
}

impl From<SendError> for CallError {
    fn from(e: SendError) -> Self {
        CallError::Unavailable(e.message)
    }
}

/// The client of one Synapse.
#[derive(Clone)]
pub struct Homeserver {
    base: url::Url,
    secret: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for Homeserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Homeserver")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl Homeserver {
    /// A client of the Synapse at `base` (its client listener), with the shared secret.
    pub fn new(base: &str, secret: String, timeout: Duration) -> Result<Self, String> {
        let mut base = url::Url::parse(base).map_err(|e| format!("[homeserver] url: {e}"))?;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self { base, secret, http })
    }

    /// The base URL.
    pub fn base(&self) -> &url::Url {
        &self.base
    }

    /// Whether `presented` is the shared secret, compared in constant time.
    pub fn is_secret(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq as _;
        presented.len() == self.secret.len()
            && bool::from(presented.as_bytes().ct_eq(self.secret.as_bytes()))
    }

    fn url(&self, path: &str) -> Result<url::Url, SendError> {
        self.base
            .join(&format!("_synapse/mas/{path}"))
            .map_err(|e| SendError {
                message: format!("homeserver URL: {e}"),
                permanent: true,
            })
    }

    /// Sends `request` with the shared secret; unreachable is [`CallError::Unavailable`].
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, CallError> {
        request.bearer_auth(&self.secret).send().await.map_err(|e| {
            CallError::Unavailable(format!("homeserver unreachable: {}", without_url(&e)))
        })
    }

    /// Makes `call` at Synapse. Deleting what is already gone counts as done.
    pub async fn call(&self, call: &Call) -> Result<Answer, CallError> {
        let response = self
            .send(self.http.post(self.url(call.path())?).json(&call.body()))
            .await?;
        let status = response.status();
        if status.is_success() {
            return Ok(Answer {
                created: status == StatusCode::CREATED,
            });
        }
        if status == StatusCode::NOT_FOUND
            && matches!(call, Call::DeleteDevice { .. } | Call::DeleteUser { .. })
        {
            return Ok(Answer { created: false });
        }
        let text = response.text().await.unwrap_or_default();
        if worth_retrying(status) {
            let text: String = text.chars().take(200).collect();
            return Err(CallError::Unavailable(format!(
                "homeserver answered {status} to {}: {text}",
                call.path()
            )));
        }
        Err(refused(status, &text, "M_UNKNOWN"))
    }

    /// Whether Synapse would create `localpart`: `Ok` when it is free there, `Refused` with
    /// Synapse's words (`M_USER_IN_USE`, `M_EXCLUSIVE` for an application service's
    /// namespace, `M_INVALID_USERNAME`) when not.
    pub async fn localpart_available(&self, localpart: &str) -> Result<(), CallError> {
        let mut url = self.url("is_localpart_available")?;
        url.query_pairs_mut().append_pair("localpart", localpart);
        let response = self.send(self.http.get(url)).await?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        if worth_retrying(status) {
            return Err(CallError::Unavailable(format!(
                "homeserver answered {status} to is_localpart_available"
            )));
        }
        let text = response.text().await.unwrap_or_default();
        Err(refused(status, &text, "M_USER_IN_USE"))
    }
}

/// Whether Synapse's answer says "not now" (5xx, 408, 429) rather than "no".
fn worth_retrying(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
}

/// Synapse's refusal: its `errcode` (else `fallback`) and `error`, cut to 300 characters.
fn refused(status: StatusCode, text: &str, fallback: &str) -> CallError {
    let body: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    let field = |k: &str| {
        body.get(k)
            .and_then(serde_json::Value::as_str)
            .map(|s| s.chars().take(300).collect::<String>())
    };
    CallError::Refused {
        status: status.as_u16(),
        errcode: field("errcode").unwrap_or_else(|| fallback.to_owned()),
        message: field("error").unwrap_or_else(|| format!("the homeserver answered {status}")),
    }
}

/// A reqwest error's text without its URL (which holds nothing secret here, but keeps
/// log lines short).
fn without_url(e: &reqwest::Error) -> String {
    let mut e = e.to_string();
    if let Some(at) = e.find(" for url (") {
        e.truncate(at);
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_round_trip_through_the_outbox_json() {
        let call = Call::UpsertDevice {
            localpart: "alice".into(),
            device_id: "DEV".into(),
            display_name: None,
        };
        let text = serde_json::to_string(&call).unwrap();
        assert_eq!(serde_json::from_str::<Call>(&text).unwrap(), call);
        assert_eq!(
            call.body(),
            serde_json::json!({ "localpart": "alice", "device_id": "DEV" })
        );
        let provision = Call::ProvisionUser {
            localpart: "bob".into(),
            displayname: Some("Bob".into()),
            emails: vec!["bob@example.org".into()],
        };
        assert_eq!(
            provision.body(),
            serde_json::json!({ "localpart": "bob", "set_displayname": "Bob", "set_emails": ["bob@example.org"] })
        );
    }

    #[test]
    fn the_secret_is_compared_whole() {
        let hs =
            Homeserver::new("http://127.0.0.1:1", "s".repeat(32), Duration::from_secs(1)).unwrap();
        assert!(hs.is_secret(&"s".repeat(32)));
        assert!(!hs.is_secret(&"s".repeat(31)));
        assert!(!hs.is_secret(""));
        assert_eq!(
            hs.url("query_user").unwrap().as_str(),
            "http://127.0.0.1:1/_synapse/mas/query_user"
        );
    }
}
