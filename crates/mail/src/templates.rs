//! Templates: every mail and page Vouch renders. The embedded defaults can be replaced file by
//! file from `[email] template_dir`. `.html` templates are autoescaped.

use std::path::Path;

use minijinja::Environment;
use serde::Serialize;

/// A template failed to load or render.
#[derive(Debug, thiserror::Error)]
#[error("template {name}: {source}")]
pub struct TemplateError {
    name: String,
    #[source]
    source: minijinja::Error,
}

/// The embedded templates, by name.
const EMBEDDED: &[(&str, &str)] = &[
    (
        "mail/layout.html",
        include_str!("../templates/mail/layout.html"),
    ),
    (
        "mail/registration.html",
        include_str!("../templates/mail/registration.html"),
    ),
    (
        "mail/registration.txt",
        include_str!("../templates/mail/registration.txt"),
    ),
    (
        "mail/password_reset.html",
        include_str!("../templates/mail/password_reset.html"),
    ),
    (
        "mail/password_reset.txt",
        include_str!("../templates/mail/password_reset.txt"),
    ),
    (
        "mail/add_threepid.html",
        include_str!("../templates/mail/add_threepid.html"),
    ),
    (
        "mail/add_threepid.txt",
        include_str!("../templates/mail/add_threepid.txt"),
    ),
    (
        "mail/already_in_use.html",
        include_str!("../templates/mail/already_in_use.html"),
    ),
    (
        "mail/already_in_use.txt",
        include_str!("../templates/mail/already_in_use.txt"),
    ),
    (
        "mail/test.html",
        include_str!("../templates/mail/test.html"),
    ),
    ("mail/test.txt", include_str!("../templates/mail/test.txt")),
    (
        "page/layout.html",
        include_str!("../templates/page/layout.html"),
    ),
    (
        "page/confirm.html",
        include_str!("../templates/page/confirm.html"),
    ),
    (
        "page/success.html",
        include_str!("../templates/page/success.html"),
    ),
    (
        "page/already_validated.html",
        include_str!("../templates/page/already_validated.html"),
    ),
    (
        "page/failure.html",
        include_str!("../templates/page/failure.html"),
    ),
];

/// The mails Vouch sends (each has a `.txt` and an `.html` template).
pub const MAILS: &[&str] = &[
    "registration",
    "password_reset",
    "add_threepid",
    "already_in_use",
    "test",
];

/// The pages behind a mail's link.
pub const PAGES: &[&str] = &["confirm", "success", "already_validated", "failure"];

/// What a mail template sees.
#[derive(Debug, Clone, Serialize)]
pub struct MailContext {
    /// The service's name.
    pub app_name: String,
    /// The address the mail goes to.
    pub address: String,
    /// The confirmation link (empty for notices).
    pub link: String,
    /// How long the link works.
    pub expires_in_minutes: u64,
    /// The server name.
    pub server_name: String,
}

impl MailContext {
    /// A context with example values, for checking templates.
    pub fn sample() -> Self {
        Self {
            app_name: "Example Chat".into(),
            address: "alice@example.org".into(),
            link: "https://matrix.example.org/_vouch/email/validate?sid=abc&client_secret=def&token=ghi".into(),
            expires_in_minutes: 60,
            server_name: "example.org".into(),
        }
    }
}

/// What a page template sees.
#[derive(Debug, Clone, Serialize, Default)]
pub struct PageContext {
    /// The service's name.
    pub app_name: String,
    /// The page title.
    pub title: String,
    /// `register`, `password_reset` or `add_threepid`.
    pub purpose: String,
    /// The address being confirmed (confirmation page only).
    pub address: String,
    /// Where the form posts.
    pub action: String,
    /// Hidden form fields.
    pub sid: String,
    /// Hidden form fields.
    pub client_secret: String,
    /// Hidden form fields.
    pub token: String,
}

/// The loaded templates.
pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// Loads the embedded templates, with files in `override_dir` (if given) taking their
    /// place. Every template is rendered once with sample values, so a broken override
    /// fails at start-up rather than in a user's password reset.
    pub fn new(override_dir: Option<&Path>) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        let overrides = override_dir.map(minijinja::path_loader);
        env.set_loader(move |name| {
            let overridden = match &overrides {
                Some(load) => load(name)?,
                None => None,
            };
            if overridden.is_some() {
                return Ok(overridden);
            }
            Ok(EMBEDDED
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, src)| minijinja::TemplateSource::from(*src)))
        });
        let templates = Self { env };
        templates.check()?;
        Ok(templates)
    }

    /// Renders every template with sample values.
    pub fn check(&self) -> Result<(), TemplateError> {
        for mail in MAILS {
            self.render(&format!("mail/{mail}.txt"), &MailContext::sample())?;
            self.render(&format!("mail/{mail}.html"), &MailContext::sample())?;
        }
        for page in PAGES {
            let ctx = PageContext {
                app_name: "Example Chat".into(),
                title: "Title".into(),
                purpose: "register".into(),
                address: "alice@example.org".into(),
                action: "/x".into(),
                ..PageContext::default()
            };
            self.render(&format!("page/{page}.html"), &ctx)?;
        }
        Ok(())
    }

    /// Renders template `name`.
    pub fn render<C: Serialize>(&self, name: &str, ctx: &C) -> Result<String, TemplateError> {
        let wrap = |source| TemplateError {
            name: name.to_owned(),
            source,
        };
        self.env
            .get_template(name)
            .map_err(wrap)?
            .render(minijinja::Value::from(minijinja::value::Serde(ctx)))
            .map_err(wrap)
    }

    /// Renders a one-line template such as a configured subject. Line breaks and control
    /// characters become spaces: a subject is a header and must stay one line.
    pub fn render_line<C: Serialize>(
        &self,
        source: &str,
        ctx: &C,
    ) -> Result<String, TemplateError> {
        let text = self
            .env
            .render_str(source, minijinja::Value::from(minijinja::value::Serde(ctx)))
            .map_err(|source| TemplateError {
                name: "subject".into(),
                source,
            })?;
        Ok(text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect::<String>()
            .trim()
            .to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_template_renders() {
        let t = Templates::new(None).unwrap();
        let html = t
            .render("mail/registration.html", &MailContext::sample())
            .unwrap();
        assert!(html.contains("alice@example.org") && html.contains("Example Chat"));
        assert!(
            html.contains("sid=abc&amp;client_secret=def"),
            "HTML is escaped: {html}"
        );
        let text = t
            .render("mail/registration.txt", &MailContext::sample())
            .unwrap();
        assert!(
            text.contains("sid=abc&client_secret=def"),
            "text is not escaped: {text}"
        );
    }

    #[test]
    fn markup_in_values_never_renders_as_markup() {
        let t = Templates::new(None).unwrap();
        let ctx = MailContext {
            address: "<script>alert(1)</script>{{ 7*7 }}@x.org".into(),
            ..MailContext::sample()
        };
        let html = t.render("mail/registration.html", &ctx).unwrap();
        assert!(
            !html.contains("<script>") && html.contains("&lt;script&gt;"),
            "{html}"
        );
        assert!(
            !html.contains("49"),
            "values are not evaluated as templates: {html}"
        );
    }

    #[test]
    fn subjects_stay_on_one_line() {
        let t = Templates::new(None).unwrap();
        let s = t
            .render_line(
                "Hi {{ app_name }}",
                &serde_json::json!({ "app_name": "A\r\nBcc: x@y.org" }),
            )
            .unwrap();
        assert!(!s.contains('\r') && !s.contains('\n'), "{s:?}");
    }

    #[test]
    fn overrides_replace_embedded_templates_and_are_checked() {
        let dir = std::env::temp_dir().join(format!("vouch-tpl-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("mail")).unwrap();
        std::fs::write(
            dir.join("mail/registration.txt"),
            "Custom {{ app_name }}: {{ link }}",
        )
        .unwrap();
        let t = Templates::new(Some(&dir)).unwrap();
        let text = t
            .render("mail/registration.txt", &MailContext::sample())
            .unwrap();
        assert!(text.starts_with("Custom Example Chat: https://"), "{text}");
        // The others are still the embedded ones.
        assert!(
            t.render("mail/password_reset.txt", &MailContext::sample())
                .unwrap()
                .contains("reset")
        );
        std::fs::write(dir.join("mail/registration.txt"), "{% if %}").unwrap();
        assert!(
            Templates::new(Some(&dir)).is_err(),
            "a broken override fails at load"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
