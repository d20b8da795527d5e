//! Phone parsing: never panics; what it accepts is E.164 digits that parse back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vouch_core::threepid::Msisdn;

fuzz_target!(|input: (&str, &str)| {
    let (country, number) = input;
    if let Ok(m) = Msisdn::parse(country, number) {
        let digits = m.as_str();
        assert!(
            !digits.is_empty() && digits.len() <= 15 && digits.bytes().all(|b| b.is_ascii_digit()),
            "{digits:?}"
        );
        assert_eq!(
            Msisdn::parse_international(digits).map(|x| x.as_str().to_owned()),
            Ok(digits.to_owned())
        );
    }
    let _ = Msisdn::parse_international(number);
});
