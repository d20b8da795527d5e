//! Where SMS go: Twilio's Messages API, an operator's JSON webhook (any other provider or a
//! relay), or the log (the embedded default, so phone sign-up can be tried with no
//! provider). Requests never call a gateway themselves: the outbox worker does.

use std::collections::BTreeMap;

use reqwest::StatusCode;
use vouch_config::{SmsConfig, SmsTransport};

pub use vouch_core::delivery::SendError;

/// A configured gateway.
#[derive(Clone)]
pub enum Gateway {
    /// Twilio.
    Twilio {
        /// HTTP client with the configured timeout.
        client: reqwest::Client,
        /// `{base_url}/2010-04-01/Accounts/{sid}/Messages.json`.
        url: String,
        /// Account SID (basic-auth user).
        account_sid: String,
        /// Auth token (basic-auth password).
        auth_token: String,
        /// Default sender number.
        from: String,
        /// Messaging Service SID, used instead of `from` when set.
        messaging_service_sid: String,
    },
    /// A JSON webhook.
    Webhook {
        /// HTTP client with the configured timeout.
        client: reqwest::Client,
        /// Where to POST.
        url: String,
        /// Extra headers.
        headers: BTreeMap<String, String>,
    },
    /// Print to the log.
    Log,
}

impl Gateway {
    /// Builds the gateway `[sms]` describes.
    pub fn from_config(config: &SmsConfig) -> Result<Self, String> {
        match config.transport {
            SmsTransport::Log => Ok(Gateway::Log),
            SmsTransport::Twilio => {
                let t = &config.twilio;
                let auth_token = if t.auth_token_file.is_empty() {
                    t.auth_token.expose().to_owned()
                } else {
                    std::fs::read_to_string(&t.auth_token_file)
                        .map_err(|e| {
                            format!("[sms.twilio] auth_token_file {}: {e}", t.auth_token_file)
                        })?
                        .trim_end_matches(['\r', '\n'])
                        .to_owned()
                };
                let client = reqwest::Client::builder()
                    .timeout(t.timeout)
                    .build()
                    .map_err(|e| format!("[sms.twilio] {e}"))?;
                Ok(Gateway::Twilio {
                    client,
                    url: format!(
                        "{}/2010-04-01/Accounts/{}/Messages.json",
                        t.base_url.trim_end_matches('/'),
                        t.account_sid
                    ),
                    account_sid: t.account_sid.clone(),
                    auth_token,
                    from: t.from.clone(),
                    messaging_service_sid: t.messaging_service_sid.clone(),
                })
            }
            SmsTransport::Webhook => {
                let w = &config.webhook;
                let client = reqwest::Client::builder()
                    .timeout(w.timeout)
                    .build()
                    .map_err(|e| format!("[sms.webhook] {e}"))?;
                Ok(Gateway::Webhook {
                    client,
                    url: w.url.clone(),
                    headers: w.headers.clone(),
                })
            }
        }
    }

    /// A description for logs and outbox rows: no credentials, no query string.
    pub fn describe(&self) -> String {
        match self {
            Gateway::Twilio { url, .. } => format!("twilio ({})", redact_url(url)),
            Gateway::Webhook { url, .. } => format!("webhook ({})", redact_url(url)),
            Gateway::Log => "log".into(),
        }
    }

    /// Sends `body` to `to` (E.164 with `+`). `from` overrides the default sender;
    /// `sid` is the validation session, passed to webhooks for correlation.
    pub async fn send(
        &self,
        to: &str,
        from: Option<&str>,
        body: &str,
        sid: Option<&str>,
    ) -> Result<(), SendError> {
        match self {
            Gateway::Twilio {
                client,
                url,
                account_sid,
                auth_token,
                from: default_from,
                messaging_service_sid,
            } => {
                let mut form = vec![("To", to.to_owned()), ("Body", body.to_owned())];
                match from.filter(|f| !f.is_empty()) {
                    Some(f) => form.push(("From", f.to_owned())),
                    None if !messaging_service_sid.is_empty() => {
                        form.push(("MessagingServiceSid", messaging_service_sid.clone()));
                    }
                    None => form.push(("From", default_from.clone())),
                }
                let request = client
                    .post(url)
                    .basic_auth(account_sid, Some(auth_token))
                    .form(&form);
                check(self.describe(), request.send().await).await
            }
            Gateway::Webhook {
                client,
                url,
                headers,
            } => {
                let mut request = client
                    .post(url)
                    .json(&serde_json::json!({ "to": to, "body": body, "sid": sid }));
                for (name, value) in headers {
                    request = request.header(name, value);
                }
                check(self.describe(), request.send().await).await
            }
            Gateway::Log => {
                tracing::info!(
                    to,
                    "SMS (transport = \"log\"; configure [sms] transport to send it): {body}"
                );
                Ok(())
            }
        }
    }
}

/// Turns a gateway's answer into success or a classified failure.
async fn check(
    gateway: String,
    result: Result<reqwest::Response, reqwest::Error>,
) -> Result<(), SendError> {
    let response = result.map_err(|e| SendError {
        // The URL may carry credentials; the description already names the gateway.
        message: format!("{gateway}: {}", e.without_url()),
        permanent: false,
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let text = gateway_text(&response.text().await.unwrap_or_default());
    let permanent = status.is_client_error()
        && status != StatusCode::REQUEST_TIMEOUT
        && status != StatusCode::TOO_MANY_REQUESTS;
    Err(SendError {
        message: format!("{gateway}: HTTP {status}: {text}"),
        permanent,
    })
}

/// A URL as logs may show it: scheme, host, port and path; no user, password or query
/// (webhook URLs often carry a key in either).
fn redact_url(raw: &str) -> String {
    match reqwest::Url::parse(raw) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            url.to_string()
        }
        Err(_) => "(unparsable URL)".into(),
    }
}

/// A gateway's error text as it may be logged and kept: its first 300 characters (cut on
/// a character boundary, whatever the bytes), with every run of four or more digits masked,
/// since gateways echo the message and its code back.
fn gateway_text(text: &str) -> String {
    let mut out = String::new();
    let mut digits = String::new();
    for c in text.chars().take(300) {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        flush_digits(&mut out, &mut digits);
        out.push(c);
    }
    flush_digits(&mut out, &mut digits);
    out
}

fn flush_digits(out: &mut String, digits: &mut String) {
    if digits.len() >= 4 {
        out.push_str(&"#".repeat(digits.len()));
    } else {
        out.push_str(digits);
    }
    digits.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_text_cuts_on_a_character_boundary() {
        // A multi-byte character across byte 300 used to panic the outbox worker.
        let text = format!("{}é{}", "a".repeat(299), "b".repeat(50));
        let cut = gateway_text(&text);
        assert_eq!(cut.chars().count(), 300);
        assert!(cut.ends_with('é'));
        let all_wide = "é".repeat(400);
        assert_eq!(gateway_text(&all_wide).chars().count(), 300);
    }

    #[test]
    fn gateway_text_masks_codes() {
        assert_eq!(
            gateway_text("rejected 'Your code is 123456' (error 21211, HTTP 400)"),
            "rejected 'Your code is ######' (error #####, HTTP 400)"
        );
    }

    #[test]
    fn urls_lose_credentials_and_queries() {
        assert_eq!(
            redact_url("https://user:pw@sms.example.net/send?key=s3cret"),
            "https://sms.example.net/send"
        );
    }
}
