//! Email canonicalisation: never panics; what it accepts is canonical, stable, and safe to
//! put in a header (one `@`, no whitespace or control characters, at most 500 characters).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vouch_core::threepid::Email;

fuzz_target!(|raw: &str| {
    if let Ok(email) = Email::parse(raw) {
        let s = email.as_str();
        assert_eq!(s.matches('@').count(), 1, "{s:?}");
        assert!(
            !s.chars().any(|c| c.is_whitespace() || c.is_control()),
            "{s:?}"
        );
        assert!(s.chars().count() <= 500);
        assert_eq!(
            Email::parse(s).map(|e| e.as_str().to_owned()),
            Ok(s.to_owned()),
            "canonical form is a fixed point"
        );
    }
});
