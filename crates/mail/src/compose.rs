//! Turning a template and its context into a complete RFC 5322 message: multipart text +
//! HTML, `Date` from the injected clock, a random `Message-ID`, `Auto-Submitted`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lettre::Message;
use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use vouch_config::EmailSubjects;
use vouch_core::SecretSource;
use vouch_core::secrets::random_string;

use crate::templates::{MailContext, TemplateError, Templates};

/// `Auto-Submitted: auto-generated` (RFC 3834): auto-responders must not answer.
#[derive(Debug, Clone)]
struct AutoSubmitted;

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".to_owned())
    }
}

/// A message could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    /// A template failed.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// The recipient is not an address lettre accepts.
    #[error("invalid recipient address: {0}")]
    Recipient(String),
    /// lettre refused the message.
    #[error("cannot build the message: {0}")]
    Build(String),
}

/// A formatted message, ready for the outbox.
#[derive(Debug, Clone)]
pub struct Composed {
    /// Envelope sender.
    pub envelope_from: String,
    /// Recipient.
    pub recipient: String,
    /// The whole message.
    pub message: String,
}

/// Builds Vouch's mails.
pub struct Composer {
    templates: Arc<Templates>,
    from: Mailbox,
    subjects: EmailSubjects,
    app_name: String,
    server_name: String,
}

impl Composer {
    /// A composer sending as `from`.
    pub fn new(
        templates: Arc<Templates>,
        from: &str,
        subjects: EmailSubjects,
        app_name: String,
        server_name: String,
    ) -> Result<Self, ComposeError> {
        let from: Mailbox = from
            .parse()
            .map_err(|e| ComposeError::Build(format!("[email] from: {e}")))?;
        let composer = Self {
            templates,
            from,
            subjects,
            app_name,
            server_name,
        };
        // Subjects are templates too; check them now.
        for kind in crate::templates::MAILS {
            composer.subject(kind, &MailContext::sample())?;
        }
        Ok(composer)
    }

    /// The templates in use.
    pub fn templates(&self) -> &Templates {
        &self.templates
    }

    /// A context for a mail to `address`.
    pub fn context(&self, address: &str, link: String, expires_in: Duration) -> MailContext {
        MailContext {
            app_name: self.app_name.clone(),
            address: address.to_owned(),
            link,
            code: String::new(),
            expires_in_minutes: expires_in.as_secs().div_ceil(60),
            server_name: self.server_name.clone(),
            lang: "en".into(),
        }
    }

    fn subject(&self, kind: &str, ctx: &MailContext) -> Result<String, TemplateError> {
        if let Some(subject) = self
            .templates
            .translated(&ctx.lang, &format!("subject.{kind}"), ctx)
        {
            return Ok(subject);
        }
        let source = match kind {
            "registration" => &self.subjects.registration,
            "password_reset" => &self.subjects.password_reset,
            "add_threepid" => &self.subjects.add_threepid,
            "already_in_use" => &self.subjects.already_in_use,
            _ => "{{ app_name }}: test message",
        };
        self.templates.render_line(source, ctx)
    }

    /// Renders mail `kind` (`registration`, `password_reset`, `add_threepid`,
    /// `already_in_use`, `test`) to `ctx.address`.
    pub fn compose(
        &self,
        kind: &str,
        ctx: &MailContext,
        now_ms: i64,
        secrets: &dyn SecretSource,
    ) -> Result<Composed, ComposeError> {
        // A bare address, never a `Name <addr>` mailbox: the recipient is also the SMTP
        // envelope, and a display name is where line breaks could hide (found by fuzzing).
        let address: lettre::Address = ctx
            .address
            .parse()
            .map_err(|_| ComposeError::Recipient(ctx.address.clone()))?;
        let to = Mailbox::new(None, address.clone());
        let text = self
            .templates
            .render(&self.templates.mail_template(kind, "txt", &ctx.lang), ctx)?;
        let html = self
            .templates
            .render(&self.templates.mail_template(kind, "html", &ctx.lang), ctx)?;
        let date = SystemTime::UNIX_EPOCH
            + Duration::from_millis(u64::try_from(now_ms).unwrap_or_default());
        let domain = self.from.email.domain().to_owned();
        let message_id = format!(
            "<{}@{domain}>",
            random_string(secrets, b"abcdefghijklmnopqrstuvwxyz0123456789", 24)
        );
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(self.subject(kind, ctx)?)
            .date(date)
            .message_id(Some(message_id))
            .header(AutoSubmitted)
            .multipart(
                MultiPart::alternative()
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_PLAIN)
                            .body(text),
                    )
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_HTML)
                            .body(html),
                    ),
            )
            .map_err(|e| ComposeError::Build(e.to_string()))?;
        let formatted = String::from_utf8(message.formatted())
            .map_err(|e| ComposeError::Build(e.to_string()))?;
        Ok(Composed {
            envelope_from: self.from.email.to_string(),
            recipient: address.to_string(),
            message: formatted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vouch_core::SeededSecretSource;

    fn composer() -> Composer {
        Composer::new(
            Arc::new(Templates::new(None).unwrap()),
            "Example Chat <noreply@example.org>",
            EmailSubjects::default(),
            "Example Chat".into(),
            "example.org".into(),
        )
        .unwrap()
    }

    #[test]
    fn messages_have_the_headers_mail_needs() {
        let c = composer();
        let ctx = c.context(
            "alice@example.org",
            "https://x.example/_vouch?sid=1".into(),
            Duration::from_secs(3600),
        );
        let m = c
            .compose(
                "registration",
                &ctx,
                1_767_225_600_000,
                &SeededSecretSource::new(1),
            )
            .unwrap();
        let parsed = mailparse::parse_mail(m.message.as_bytes()).unwrap();
        let h = |name: &str| {
            parsed
                .headers
                .iter()
                .find(|h| h.get_key().eq_ignore_ascii_case(name))
                .map(|h| h.get_value())
        };
        assert_eq!(h("Auto-Submitted").as_deref(), Some("auto-generated"));
        assert_eq!(
            h("Subject").as_deref(),
            Some("Confirm your email address for Example Chat")
        );
        assert_eq!(
            h("Date").as_deref(),
            Some("Thu, 01 Jan 2026 00:00:00 +0000")
        );
        assert!(h("Message-ID").unwrap().ends_with("@example.org>"));
        assert_eq!(h("To").as_deref(), Some("alice@example.org"));
        assert_eq!(parsed.subparts.len(), 2, "text and HTML");
        assert!(
            parsed.subparts[0]
                .get_body()
                .unwrap()
                .contains("https://x.example/_vouch?sid=1")
        );
        assert_eq!(m.envelope_from, "noreply@example.org");
    }

    #[test]
    fn a_trailing_line_break_never_reaches_the_envelope() {
        // Found by the `mail_builder` fuzz target: lettre's mailbox parser accepted this and
        // the raw string became the recipient.
        let c = composer();
        let ctx = c.context("e@e--=20\r", String::new(), Duration::from_secs(60));
        if let Ok(m) = c.compose("registration", &ctx, 0, &SeededSecretSource::new(1)) {
            assert!(!m.recipient.contains(['\r', '\n']), "{:?}", m.recipient);
        }
    }

    #[test]
    fn no_header_injection_from_the_address() {
        let c = composer();
        for evil in [
            "\"\r\n\" <a@example.org>",
            "Name\r\nBcc: v@example.org <a@example.org>",
            "a@example.org\r\nBcc: victim@example.org",
            "a@example.org\nSubject: x",
            "\"a\r\n\"@example.org",
        ] {
            let ctx = c.context(evil, String::new(), Duration::from_secs(60));
            assert!(
                c.compose("registration", &ctx, 0, &SeededSecretSource::new(1))
                    .is_err(),
                "{evil:?}"
            );
        }
    }
}
