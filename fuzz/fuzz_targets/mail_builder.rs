//! The mail builder: whatever the address, app name and link, no input reaches a header it
//! does not belong in (no injected `Bcc`, one `To`, a one-line `Subject`), and nothing panics.
#![no_main]

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use vouch_core::SeededSecretSource;
use vouch_mail::{Composer, Templates};

static TEMPLATES: LazyLock<Arc<Templates>> =
    LazyLock::new(|| Arc::new(Templates::new(None).expect("templates")));

fuzz_target!(|input: (&str, &str, &str)| {
    let (address, app_name, link) = input;
    let Ok(composer) = Composer::new(
        TEMPLATES.clone(),
        "Vouch <noreply@example.org>",
        vouch_config::EmailSubjects::default(),
        app_name.to_owned(),
        "example.org".into(),
    ) else {
        return;
    };
    let ctx = composer.context(address, link.to_owned(), Duration::from_secs(3600));
    let Ok(mail) = composer.compose("registration", &ctx, 0, &SeededSecretSource::new(1)) else {
        return;
    };
    let parsed = mailparse::parse_mail(mail.message.as_bytes()).expect("the message parses");
    let count = |name: &str| {
        parsed
            .headers
            .iter()
            .filter(|h| h.get_key().eq_ignore_ascii_case(name))
            .count()
    };
    assert_eq!(count("To"), 1);
    assert_eq!(count("From"), 1);
    assert_eq!(count("Subject"), 1);
    assert_eq!(count("Bcc"), 0);
    assert_eq!(count("Cc"), 0);
    assert!(!mail.recipient.contains(['\r', '\n']));
});
