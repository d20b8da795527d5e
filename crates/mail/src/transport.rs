//! Where mail goes: an SMTP server, `.eml` files in a directory, or the log.

use std::path::PathBuf;

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{Address, AsyncFileTransport, AsyncTransport, Tokio1Executor};
use vouch_config::{EmailConfig, EmailTransport};

use crate::smtp_pool;

pub use vouch_core::delivery::SendError;

/// A configured transport.
#[derive(Clone)]
pub enum Transport {
    /// SMTP (a pool of connections), with the server's description for logs and how long
    /// one mail may take.
    Smtp(smtp_pool::Pool, String, std::time::Duration),
    /// `.eml` files.
    File(AsyncFileTransport<Tokio1Executor>, PathBuf),
    /// Print to the log.
    Log,
}

impl Transport {
    /// Builds the transport `[email]` describes.
    pub fn from_config(config: &EmailConfig) -> Result<Self, String> {
        match config.transport {
            EmailTransport::Log => Ok(Transport::Log),
            EmailTransport::File => {
                let dir = PathBuf::from(&config.file.dir);
                std::fs::create_dir_all(&dir)
                    .map_err(|e| format!("[email.file] dir {}: {e}", dir.display()))?;
                Ok(Transport::File(AsyncFileTransport::new(&dir), dir))
            }
            EmailTransport::Smtp => {
                let s = &config.smtp;
                let mut credentials = None;
                if !s.username.is_empty() {
                    let password = if s.password_file.is_empty() {
                        s.password.expose().to_owned()
                    } else {
                        std::fs::read_to_string(&s.password_file)
                            .map_err(|e| {
                                format!("[email.smtp] password_file {}: {e}", s.password_file)
                            })?
                            .trim_end_matches(['\r', '\n'])
                            .to_owned()
                    };
                    credentials = Some(Credentials::new(s.username.clone(), password));
                }
                let connector =
                    smtp_pool::Connector::new(&s.host, s.port, s.tls, s.timeout, credentials)
                        .map_err(|e| format!("[email.smtp] {e}"))?;
                let pool = smtp_pool::pool(
                    connector,
                    usize::try_from(s.max_connections).unwrap_or(usize::MAX),
                )
                .map_err(|e| format!("[email.smtp] {e}"))?;
                let describe = format!("smtp://{}:{} ({:?})", s.host, s.port, s.tls).to_lowercase();
                Ok(Transport::Smtp(pool, describe, s.timeout))
            }
        }
    }

    /// A description for logs ("smtp://host:port (starttls)", "file:…", "log").
    pub fn describe(&self) -> String {
        match self {
            Transport::Smtp(_, d, _) => d.clone(),
            Transport::File(_, dir) => format!("file:{}", dir.display()),
            Transport::Log => "log".into(),
        }
    }

    /// Checks that the SMTP server answers (other transports always do).
    pub async fn check(&self) -> Result<(), String> {
        match self {
            // A connection of the pool, kept there for the first mails: the server never
            // sees more than `max_connections` at once.
            Transport::Smtp(pool, d, _) => match pool.get().await {
                Ok(_) => Ok(()),
                Err(e) => Err(format!("{d}: {e}")),
            },
            _ => Ok(()),
        }
    }

    /// Delivers one formatted message.
    pub async fn send(
        &self,
        envelope_from: &str,
        recipient: &str,
        message: &str,
    ) -> Result<(), SendError> {
        let fail = |message: String, permanent| SendError { message, permanent };
        let from: Address = envelope_from
            .parse()
            .map_err(|e| fail(format!("sender {envelope_from}: {e}"), true))?;
        let to: Address = recipient
            .parse()
            .map_err(|e| fail(format!("recipient {recipient}: {e}"), true))?;
        let envelope =
            Envelope::new(Some(from), vec![to]).map_err(|e| fail(e.to_string(), true))?;
        match self {
            Transport::Smtp(pool, d, timeout) => {
                smtp_pool::send(pool, *timeout, &envelope, message.as_bytes())
                    .await
                    .map_err(|e| fail(format!("{d}: {e}"), e.is_permanent()))
            }
            Transport::File(t, dir) => t
                .send_raw(&envelope, message.as_bytes())
                .await
                .map(|_| ())
                .map_err(|e| fail(format!("writing to {}: {e}", dir.display()), false)),
            Transport::Log => {
                let text = mailparse::parse_mail(message.as_bytes())
                    .ok()
                    .and_then(|m| {
                        m.subparts
                            .first()
                            .and_then(|p| p.get_body().ok())
                            .or_else(|| m.get_body().ok())
                    })
                    .unwrap_or_else(|| message.to_owned());
                tracing::info!(
                    to = recipient,
                    "mail (transport = \"log\"; configure [email] transport to send it):\n{text}"
                );
                Ok(())
            }
        }
    }
}
