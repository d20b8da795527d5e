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

impl TemplateError {
    pub(crate) fn new(name: &str, source: minijinja::Error) -> Self {
        Self {
            name: name.to_owned(),
            source,
        }
    }
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
        "mail/fr/registration.html",
        include_str!("../templates/mail/fr/registration.html"),
    ),
    (
        "mail/fr/registration.txt",
        include_str!("../templates/mail/fr/registration.txt"),
    ),
    (
        "mail/fr/password_reset.html",
        include_str!("../templates/mail/fr/password_reset.html"),
    ),
    (
        "mail/fr/password_reset.txt",
        include_str!("../templates/mail/fr/password_reset.txt"),
    ),
    (
        "mail/fr/add_threepid.html",
        include_str!("../templates/mail/fr/add_threepid.html"),
    ),
    (
        "mail/fr/add_threepid.txt",
        include_str!("../templates/mail/fr/add_threepid.txt"),
    ),
    (
        "mail/fr/already_in_use.html",
        include_str!("../templates/mail/fr/already_in_use.html"),
    ),
    (
        "mail/fr/already_in_use.txt",
        include_str!("../templates/mail/fr/already_in_use.txt"),
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
    (
        "page/oauth/layout.html",
        include_str!("../templates/page/oauth/layout.html"),
    ),
    (
        "page/oauth/sign_in.html",
        include_str!("../templates/page/oauth/sign_in.html"),
    ),
    (
        "page/oauth/consent.html",
        include_str!("../templates/page/oauth/consent.html"),
    ),
    (
        "page/oauth/sign_up.html",
        include_str!("../templates/page/oauth/sign_up.html"),
    ),
    (
        "page/oauth/verify.html",
        include_str!("../templates/page/oauth/verify.html"),
    ),
    (
        "page/oauth/device.html",
        include_str!("../templates/page/oauth/device.html"),
    ),
    (
        "page/oauth/done.html",
        include_str!("../templates/page/oauth/done.html"),
    ),
    (
        "page/oauth/account.html",
        include_str!("../templates/page/oauth/account.html"),
    ),
    (
        "page/oauth/sso.html",
        include_str!("../templates/page/oauth/sso.html"),
    ),
    (
        "page/oauth/reset.html",
        include_str!("../templates/page/oauth/reset.html"),
    ),
    (
        "page/oauth/reset_verify.html",
        include_str!("../templates/page/oauth/reset_verify.html"),
    ),
    (
        "page/oauth/account_verify.html",
        include_str!("../templates/page/oauth/account_verify.html"),
    ),
    (
        "page/oauth/error.html",
        include_str!("../templates/page/oauth/error.html"),
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

/// The OAuth 2.0 sign-in pages (`page/oauth/<name>.html`).
pub const OAUTH_PAGES: &[&str] = &[
    "sign_in",
    "sign_up",
    "verify",
    "consent",
    "device",
    "done",
    "account",
    "sso",
    "reset",
    "reset_verify",
    "account_verify",
    "error",
];

/// A policy to accept on the sign-up page.
#[derive(Debug, Clone, Serialize, Default)]
pub struct TermsLink {
    /// Its name.
    pub name: String,
    /// Where it is.
    pub url: String,
}

/// What an OAuth 2.0 page sees (every field, so one sample renders them all).
#[derive(Debug, Clone, Serialize, Default)]
pub struct OAuthPageContext {
    /// The service's name.
    pub app_name: String,
    /// The server name.
    pub server_name: String,
    /// The page's language.
    pub lang: String,
    /// The page title.
    pub title: String,
    /// What went wrong, shown above the form.
    pub error: String,
    /// A message (error page).
    pub message: String,
    /// Where the form posts.
    pub action: String,
    /// The form's CSRF token.
    pub csrf: String,
    /// The client's name.
    pub client_name: String,
    /// The client's host.
    pub client_host: String,
    /// Where the user is sent back to.
    pub redirect_host: String,
    /// The client's terms.
    pub tos_uri: String,
    /// The client's privacy policy.
    pub policy_uri: String,
    /// The signed-in user.
    pub user_id: String,
    /// The device the session gets.
    pub device_id: String,
    /// The user name to fill in.
    pub username: String,
    /// The sign-up page, if sign-up is open.
    pub sign_up_url: String,
    /// The sign-in page for another account (or the sign-up page's way back).
    pub switch_url: String,
    /// Sign-up: email addresses can be verified.
    pub email_enabled: bool,
    /// Sign-up: phone numbers can be verified.
    pub phone_enabled: bool,
    /// Sign-up: an email address is required.
    pub email_required: bool,
    /// Sign-up: a phone number is required.
    pub phone_required: bool,
    /// Sign-up: what must be verified, in words (one of several media).
    pub required_3pid: String,
    /// Sign-up: a registration token is asked for.
    pub token_required: bool,
    /// Sign-up: policies to accept.
    pub terms: Vec<TermsLink>,
    /// Sign-up: the email address typed (verify: the one a code went to).
    pub email: String,
    /// Sign-up: the phone number typed (verify: the one a code went to).
    pub phone: String,
    /// Sign-in: the password reset page.
    pub reset_url: String,
    /// Sign-up: the registration token typed.
    pub registration_token: String,
    /// A device authorization request's user code, as shown (`BCDF-GHJK`).
    pub user_code: String,
    /// Consent: the client asked for the admin API, and the user is an admin.
    pub admin: bool,
    /// Consent: the name of the user's session that the new one replaces (same device ID).
    pub replaces: String,
    /// Consent: an OpenID Connect sign-in (who the user is), no Matrix session.
    pub identity_only: bool,
    /// Consent: the app asks for the display name and user name (`profile`).
    pub shares_profile: bool,
    /// Consent: the app asks for the email address (`email`).
    pub shares_email: bool,
    /// Consent: the app asks for the phone number (`phone`).
    pub shares_phone: bool,
    /// Account page: what was just done.
    pub notice: String,
    /// Account page: the user's addresses and numbers.
    pub threepids: Vec<ThreepidLine>,
    /// Account page: the display name may be changed here.
    pub can_change_name: bool,
    /// Account page: the password may be changed here.
    pub can_change_password: bool,
    /// Account page: addresses and numbers may be added and removed here.
    pub can_change_threepids: bool,
    /// Account page: the signed-in sessions.
    pub devices: Vec<DeviceLine>,
    /// Account page: the session an app asked to sign out (`org.matrix.device_delete`).
    pub confirm_device: String,
    /// Account page: the languages to choose from.
    pub languages: Vec<LanguageLine>,
}

/// A language the pages and mails speak.
#[derive(Debug, Clone, Serialize, Default)]
pub struct LanguageLine {
    /// Its tag (`fr`).
    pub tag: String,
    /// Its name in itself (`Français`).
    pub name: String,
}

/// An email address or phone number on the account page.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ThreepidLine {
    /// `email` or `msisdn`.
    pub medium: String,
    /// As stored (a phone number's digits).
    pub address: String,
    /// As shown (a phone number with its `+`).
    pub shown: String,
}

/// A signed-in session on the account page.
#[derive(Debug, Clone, Serialize, Default)]
pub struct DeviceLine {
    /// Its device ID.
    pub device_id: String,
    /// Its name (the device ID when it has none).
    pub name: String,
    /// Where it was last seen from.
    pub last_seen: String,
}

impl OAuthPageContext {
    /// Example values, for checking templates.
    pub fn sample() -> Self {
        Self {
            app_name: "Example Chat".into(),
            server_name: "example.org".into(),
            lang: "en".into(),
            title: "Sign in".into(),
            error: "Invalid username or password".into(),
            message: "This request has expired".into(),
            action: "/_vouch/oauth/grant/abc/sign_in".into(),
            csrf: "vcs_abc".into(),
            client_name: "Element".into(),
            client_host: "element.io".into(),
            redirect_host: "io.element.app:".into(),
            tos_uri: "https://element.io/terms".into(),
            policy_uri: "https://element.io/privacy".into(),
            user_id: "@alice:example.org".into(),
            device_id: "ABCDEFGHIJ".into(),
            username: "alice".into(),
            sign_up_url: "/_vouch/oauth/grant/abc?view=sign_up".into(),
            switch_url: "/_vouch/oauth/grant/abc?view=sign_in".into(),
            email_enabled: true,
            phone_enabled: true,
            email_required: false,
            phone_required: false,
            required_3pid: "Give an email address or a phone number.".into(),
            token_required: true,
            terms: vec![TermsLink {
                name: "Privacy policy".into(),
                url: "https://example.org/privacy".into(),
            }],
            email: "alice@example.org".into(),
            phone: "447400123456".into(),
            registration_token: "abc".into(),
            reset_url: "/_vouch/reset".into(),
            user_code: "BCDF-GHJK".into(),
            admin: true,
            identity_only: false,
            shares_profile: true,
            shares_email: true,
            shares_phone: true,
            replaces: "Alice's phone".into(),
            notice: "Signed out ABCDEFGHIJ.".into(),
            threepids: vec![
                ThreepidLine {
                    medium: "email".into(),
                    address: "alice@example.org".into(),
                    shown: "alice@example.org".into(),
                },
                ThreepidLine {
                    medium: "msisdn".into(),
                    address: "447400123456".into(),
                    shown: "+447400123456".into(),
                },
            ],
            can_change_name: true,
            can_change_password: true,
            can_change_threepids: true,
            languages: vec![
                LanguageLine {
                    tag: "en".into(),
                    name: "English".into(),
                },
                LanguageLine {
                    tag: "fr".into(),
                    name: "Français".into(),
                },
            ],
            devices: vec![DeviceLine {
                device_id: "ABCDEFGHIJ".into(),
                name: "Alice's phone".into(),
                last_seen: "192.0.2.1".into(),
            }],
            confirm_device: "ABCDEFGHIJ".into(),
        }
    }
}

/// What a mail template sees.
#[derive(Debug, Clone, Serialize)]
pub struct MailContext {
    /// The service's name.
    pub app_name: String,
    /// The address the mail goes to.
    pub address: String,
    /// The confirmation link (empty for notices).
    pub link: String,
    /// A code to type instead of opening the link (empty: none).
    pub code: String,
    /// How long the link works.
    pub expires_in_minutes: u64,
    /// The server name.
    pub server_name: String,
    /// The mail's language (a tag the catalogues have).
    pub lang: String,
}

impl MailContext {
    /// A context with example values, for checking templates.
    pub fn sample() -> Self {
        Self {
            app_name: "Example Chat".into(),
            address: "alice@example.org".into(),
            link: "https://matrix.example.org/_vouch/email/validate?sid=abc&client_secret=def&token=ghi".into(),
            code: "123456".into(),
            expires_in_minutes: 60,
            server_name: "example.org".into(),
            lang: "en".into(),
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
    catalogues: std::sync::Arc<crate::locales::Catalogues>,
}

impl Templates {
    /// Loads the embedded templates, with files in `override_dir` (if given) taking their
    /// place. Every template is rendered once with sample values, so a broken override
    /// fails at start-up rather than in a user's password reset.
    pub fn new(override_dir: Option<&Path>) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        let catalogues = std::sync::Arc::new(crate::locales::Catalogues::load(override_dir)?);
        let words = catalogues.clone();
        // `t("section.key", name=value)`: the words in the page's `lang`, values escaped; a
        // text that is no key (a message made elsewhere) is shown as it is, escaped.
        env.add_function(
            "t",
            move |state: &minijinja::State, key: &str, kwargs: minijinja::value::Kwargs| {
                let lang = state
                    .lookup("lang")
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_else(|| "en".into());
                let Some(text) = words.text(&lang, key) else {
                    return Ok(minijinja::Value::from_safe_string(crate::locales::escape(
                        key,
                    )));
                };
                let mut out = text.to_owned();
                for name in kwargs.args() {
                    let value: minijinja::Value = kwargs.get(name)?;
                    let shown = value
                        .as_str()
                        .map_or_else(|| value.to_string(), str::to_owned);
                    out = out.replace(&format!("{{{name}}}"), &crate::locales::escape(&shown));
                }
                Ok::<_, minijinja::Error>(minijinja::Value::from_safe_string(out))
            },
        );
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
        let templates = Self { env, catalogues };
        templates.check()?;
        Ok(templates)
    }

    /// Renders every template with sample values.
    pub fn check(&self) -> Result<(), TemplateError> {
        for lang in self.catalogues.languages() {
            let ctx = MailContext {
                lang: lang.clone(),
                ..MailContext::sample()
            };
            for mail in MAILS {
                for ext in ["txt", "html"] {
                    self.render(&self.mail_template(mail, ext, &lang), &ctx)?;
                }
            }
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
        for lang in self.catalogues.languages() {
            for page in OAUTH_PAGES {
                let ctx = OAuthPageContext {
                    lang: lang.clone(),
                    ..OAuthPageContext::sample()
                };
                self.render(&format!("page/oauth/{page}.html"), &ctx)?;
            }
        }
        Ok(())
    }

    /// The template of mail `kind` (`ext`: `txt` or `html`) in `lang`: `mail/<lang>/…` when
    /// there is one (embedded, or in the override directory), else the English
    /// `mail/<kind>.<ext>`.
    pub fn mail_template(&self, kind: &str, ext: &str, lang: &str) -> String {
        let plain = !lang.is_empty()
            && lang != "en"
            && lang.len() <= 16
            && lang.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if plain {
            let name = format!("mail/{lang}/{kind}.{ext}");
            if self.env.get_template(&name).is_ok() {
                return name;
            }
        }
        format!("mail/{kind}.{ext}")
    }

    /// A one-line text (a mail's subject, an SMS) in `lang` from its catalogue, `{name}`
    /// replaced by `ctx`'s values unescaped and control characters by spaces; none in
    /// English (the configuration's words are English) or when the catalogue has no such
    /// key.
    pub fn translated<C: Serialize>(&self, lang: &str, key: &str, ctx: &C) -> Option<String> {
        if lang.is_empty() || lang == "en" {
            return None;
        }
        let mut text = self.catalogues.text(lang, key)?.to_owned();
        if let Ok(serde_json::Value::Object(values)) = serde_json::to_value(ctx) {
            for (name, value) in values {
                let shown = match value {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                text = text.replace(&format!("{{{name}}}"), &shown);
            }
        }
        Some(
            text.chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect(),
        )
    }

    /// The languages the catalogues have, each named in itself (`language.name`).
    pub fn languages(&self) -> Vec<LanguageLine> {
        self.catalogues
            .languages()
            .into_iter()
            .map(|tag| LanguageLine {
                name: self
                    .catalogues
                    .text(&tag, "language.name")
                    .unwrap_or(&tag)
                    .to_owned(),
                tag,
            })
            .collect()
    }

    /// The language of `tag` the pages have words for (`fr-CA` → `fr`), if any.
    pub fn language(&self, tag: &str) -> Option<String> {
        self.catalogues.supported(tag)
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
