//! `next_link` checking: never panics; what it accepts is http(s) with a host on the
//! allowlist (when there is one).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vouch_core::threepid::check_next_link;

fuzz_target!(|input: (&str, Vec<String>)| {
    let (raw, allowlist) = input;
    if let Ok(url) = check_next_link(raw, &allowlist) {
        assert!(matches!(url.scheme(), "http" | "https"), "{url}");
        let host = url.host_str().expect("a host").to_ascii_lowercase();
        assert!(
            allowlist.is_empty() || allowlist.iter().any(|a| a.eq_ignore_ascii_case(&host)),
            "{url} not in {allowlist:?}"
        );
    }
});
