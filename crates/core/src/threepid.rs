//! Third-party identifiers as Vouch holds them: canonical email addresses, and the
//! `next_link` a client may ask to be sent to after validating one.

use std::fmt;

use unicode_normalization::UnicodeNormalization as _;

/// Longest address accepted, in characters (after trimming).
pub const MAX_EMAIL_LEN: usize = 500;

/// Why an email address is refused (`M_INVALID_PARAM`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEmail {
    /// Empty or longer than [`MAX_EMAIL_LEN`].
    #[error("the email address must be 1 to {MAX_EMAIL_LEN} characters long")]
    Length,
    /// Not exactly one `@`.
    #[error("the email address must contain exactly one '@'")]
    At,
    /// Whitespace, control characters, invisible or text-direction characters, or
    /// characters that have no place in an address.
    #[error("the email address contains a character that is not allowed")]
    Character,
    /// Empty local part or a malformed domain.
    #[error("the email address is not of the form user@domain")]
    Shape,
}

/// A canonical email address: trimmed, local part case-folded (Unicode default case
/// folding, so `Strauß` and `STRAUSS` are one address) and in NFC, domain mapped by UTS #46
/// to its ASCII form (`bücher.example`, `xn--bcher-kva.example` and a fullwidth spelling
/// are one domain). Two spellings of
/// one address have one canonical form; the database holds only canonical forms.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// Parses and canonicalises an address as a client sent it.
    pub fn parse(raw: &str) -> Result<Self, InvalidEmail> {
        let trimmed = raw.trim();
        let len = trimmed.chars().count();
        if len == 0 || len > MAX_EMAIL_LEN {
            return Err(InvalidEmail::Length);
        }
        if trimmed.chars().any(|c| {
            c.is_whitespace()
                || c.is_control()
                || is_invisible(c)
                || matches!(
                    c,
                    '<' | '>' | '(' | ')' | ',' | ';' | ':' | '\\' | '"' | '[' | ']'
                )
        }) {
            return Err(InvalidEmail::Character);
        }
        let mut parts = trimmed.split('@');
        let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(InvalidEmail::At);
        };
        // The shape is checked on the canonical form, so that form always parses again to
        // itself.
        let local: String = caseless::default_case_fold_str(&local.nfc().collect::<String>())
            .nfc()
            .collect();
        let domain = idna::domain_to_ascii(domain).map_err(|_| InvalidEmail::Shape)?;
        let domain_ok = !domain.is_empty()
            && domain.len() <= 253
            && domain.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            });
        if local.is_empty()
            || local.starts_with('.')
            || local.ends_with('.')
            || local.contains("..")
            || local.chars().any(is_invisible)
            || !domain_ok
        {
            return Err(InvalidEmail::Shape);
        }
        let canonical = format!("{local}@{domain}");
        // Case folding can lengthen text (`ß` becomes `ss`); the stored form must fit too.
        if canonical.chars().count() > MAX_EMAIL_LEN {
            return Err(InvalidEmail::Length);
        }
        Ok(Self(canonical))
    }

    /// The canonical text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Characters that show nothing or turn the text's direction: an address holding one
/// displays as another address (zero-width spaces and joiners, soft hyphens, bidi
/// embeddings, overrides and isolates, the byte-order mark).
fn is_invisible(c: char) -> bool {
    matches!(
        u32::from(c),
        0x00AD
            | 0x034F
            | 0x061C
            | 0x115F..=0x1160
            | 0x17B4..=0x17B5
            | 0x180B..=0x180F
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x206F
            | 0x3164
            | 0xFE00..=0xFE0F
            | 0xFEFF
            | 0xFFA0
            | 0xFFF0..=0xFFFB
            | 0xE0000..=0xE0FFF
    )
}

/// Why a phone number is refused (`M_INVALID_PARAM`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPhone {
    /// `country` is not an ISO 3166-1 alpha-2 code the numbering data knows.
    #[error("country must be a two-letter ISO 3166-1 code such as GB or US")]
    Country,
    /// The number does not parse, or is not a valid number in its country's numbering plan.
    #[error("that is not a valid phone number")]
    Number,
}

/// A phone number in the spec's MSISDN form: E.164 digits without the `+`
/// (`447400123456`), parsed with real numbering data.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Msisdn {
    digits: String,
    country: String,
}

impl Msisdn {
    /// Parses a number as typed, dialled from `country` (e.g. `GB` + `07400 123456`).
    /// International input (`+44 …`) works from any country.
    pub fn parse(country: &str, number: &str) -> Result<Self, InvalidPhone> {
        let id: phonenumber::country::Id = country
            .trim()
            .to_ascii_uppercase()
            .parse()
            .map_err(|_| InvalidPhone::Country)?;
        Self::from_parsed(
            phonenumber::parse(Some(id), number.trim()).map_err(|_| InvalidPhone::Number)?,
        )
    }

    /// Parses a number already in MSISDN or E.164 form (`447400123456`, `+447400123456`).
    pub fn parse_international(number: &str) -> Result<Self, InvalidPhone> {
        let compact: String = number
            .chars()
            .filter(|c| !c.is_whitespace() && !matches!(c, '-' | '.' | '(' | ')'))
            .collect();
        let digits = compact.trim_start_matches('+');
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidPhone::Number);
        }
        Self::from_parsed(
            phonenumber::parse(None, format!("+{digits}")).map_err(|_| InvalidPhone::Number)?,
        )
    }

    fn from_parsed(parsed: phonenumber::PhoneNumber) -> Result<Self, InvalidPhone> {
        if !parsed.is_valid() {
            return Err(InvalidPhone::Number);
        }
        let e164 = parsed.format().mode(phonenumber::Mode::E164).to_string();
        let country = parsed
            .country()
            .id()
            .map(|id| id.as_ref().to_owned())
            .unwrap_or_default();
        Ok(Self {
            digits: e164.trim_start_matches('+').to_owned(),
            country,
        })
    }

    /// The MSISDN digits (no `+`): the canonical form stored and shown.
    pub fn as_str(&self) -> &str {
        &self.digits
    }

    /// `+` and the digits, as gateways want it.
    pub fn e164(&self) -> String {
        format!("+{}", self.digits)
    }

    /// The number's country (ISO 3166-1 alpha-2), from the numbering data.
    pub fn country(&self) -> &str {
        &self.country
    }
}

/// Why a `next_link` is refused (`M_INVALID_PARAM`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidNextLink {
    /// Not an absolute URL.
    #[error("next_link is not an absolute URL")]
    NotUrl,
    /// A scheme other than http or https (`javascript:`, `data:`, `file:` …).
    #[error("next_link must be an http or https URL")]
    Scheme,
    /// The host is not on `[email] next_link_domain_allowlist`.
    #[error("next_link's domain is not on this server's allowlist")]
    NotAllowed,
    /// Longer than [`MAX_NEXT_LINK`] bytes (it is stored with the session).
    #[error("next_link is longer than 2048 bytes")]
    TooLong,
    /// A control character (NUL, a line break…), which a URL parser would drop silently.
    #[error("next_link contains a control character")]
    Control,
}

/// The longest `next_link` kept, in bytes: more than any link a client needs, and a bound on
/// what a session row holds.
pub const MAX_NEXT_LINK: usize = 2048;

/// Checks a client's `next_link`: absolute, http(s), with a host, and, when `allowlist` is not
/// empty, on a host it names (exactly, case-insensitively). Scheme-relative links
/// (`//evil.example`) are not absolute and are refused.
pub fn check_next_link(raw: &str, allowlist: &[String]) -> Result<url::Url, InvalidNextLink> {
    if raw.len() > MAX_NEXT_LINK {
        return Err(InvalidNextLink::TooLong);
    }
    if raw.trim().chars().any(char::is_control) {
        return Err(InvalidNextLink::Control);
    }
    let url = url::Url::parse(raw.trim()).map_err(|_| InvalidNextLink::NotUrl)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(InvalidNextLink::Scheme);
    }
    let host = url
        .host_str()
        .ok_or(InvalidNextLink::NotUrl)?
        .to_ascii_lowercase();
    if !allowlist.is_empty() && !allowlist.iter().any(|d| d.eq_ignore_ascii_case(&host)) {
        return Err(InvalidNextLink::NotAllowed);
    }
    Ok(url)
}

/// Checks a `client_secret` against the spec grammar `[0-9a-zA-Z.=_-]{1,255}`.
pub fn valid_client_secret(s: &str) -> bool {
    (1..=255).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'=' | b'_' | b'-'))
}

/// The kind of a third-party identifier: a closed set, spelt as the spec spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Medium {
    /// An email address.
    Email,
    /// A phone number (MSISDN).
    Msisdn,
}

impl Medium {
    /// `email` or `msisdn`.
    pub fn as_str(self) -> &'static str {
        match self {
            Medium::Email => "email",
            Medium::Msisdn => "msisdn",
        }
    }
}

impl fmt::Display for Medium {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Medium {
    type Err = InvalidThreepid;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "email" => Ok(Medium::Email),
            "msisdn" => Ok(Medium::Msisdn),
            other => Err(InvalidThreepid::Medium(other.chars().take(40).collect())),
        }
    }
}

/// Why a third-party identifier is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidThreepid {
    /// Neither `email` nor `msisdn`.
    #[error("unknown medium '{0}' (email or msisdn)")]
    Medium(String),
    /// Not an email address Vouch accepts.
    #[error(transparent)]
    Email(#[from] InvalidEmail),
    /// Not a phone number Vouch accepts.
    #[error(transparent)]
    Phone(#[from] InvalidPhone),
}

/// A third-party identifier in canonical form: parsed once, where it enters (a client's
/// login or admin request, an identity server's answer, the command line, an import), and
/// compared and stored as it is from then on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ThirdPartyId {
    medium: Medium,
    address: String,
}

impl ThirdPartyId {
    /// Parses `address` of `medium` as the spec's APIs carry it: an email address in any
    /// case and spelling, or a phone number in international form (`+44…` or `44…`).
    pub fn parse(medium: &str, address: &str) -> Result<Self, InvalidThreepid> {
        let medium: Medium = medium.parse()?;
        let address = match medium {
            Medium::Email => Email::parse(address)?.as_str().to_owned(),
            Medium::Msisdn => Msisdn::parse_international(address)?.as_str().to_owned(),
        };
        Ok(Self { medium, address })
    }

    /// Its medium.
    pub fn medium(&self) -> Medium {
        self.medium
    }

    /// Its canonical address.
    pub fn address(&self) -> &str {
        &self.address
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canonical_form_always_parses_to_itself() {
        // Found by fuzzing: `İ` lowercases to `i` + U+0307; the domain's ASCII form holds it.
        for raw in [
            "a@İ",
            "Ab.C@Example.ORG",
            "ÅSA@bücher.example",
            "A\u{30a}sa@x.org",
        ] {
            let e = Email::parse(raw).unwrap();
            assert_eq!(Email::parse(e.as_str()).unwrap(), e, "{raw}");
        }
    }

    #[test]
    fn case_folding_cannot_push_an_address_past_the_length_limit() {
        // 249 `ß` fold to 498 characters; with `@b.c` the stored form would be 502.
        let raw = format!("{}@b.c", "ß".repeat(249));
        assert!(raw.chars().count() <= MAX_EMAIL_LEN);
        assert!(matches!(Email::parse(&raw), Err(InvalidEmail::Length)));
        let fits = format!("{}@b.c", "ß".repeat(200));
        assert_eq!(Email::parse(&fits).unwrap().as_str().chars().count(), 404);
    }

    #[test]
    fn canonical_emails() {
        assert_eq!(
            Email::parse("  Alice@Example.ORG ").unwrap().as_str(),
            "alice@example.org"
        );
        assert_eq!(
            Email::parse("Strauß@Example.com").unwrap(),
            Email::parse("STRAUSS@example.com").unwrap()
        );
        assert_eq!(
            Email::parse("a.b+tag@sub.example.org").unwrap().as_str(),
            "a.b+tag@sub.example.org"
        );
        assert_eq!(
            Email::parse("ÄLICE@bücher.example").unwrap().as_str(),
            "älice@xn--bcher-kva.example"
        );
    }

    #[test]
    fn one_mailbox_has_one_canonical_form() {
        let one = Email::parse("victim@bücher.example").unwrap();
        for other in [
            "victim@xn--bcher-kva.example",
            "victim@BÜCHER.example",
            "victim@bu\u{308}cher.example",
            "victim@ｂüｃｈｅｒ．ｅｘａｍｐｌｅ",
        ] {
            assert_eq!(Email::parse(other).unwrap(), one, "{other}");
        }
        // A decomposed local part is the composed one.
        assert_eq!(
            Email::parse("a\u{30a}sa@x.org").unwrap(),
            Email::parse("åsa@x.org").unwrap()
        );
    }

    #[test]
    fn third_party_ids_parse_once_to_their_canonical_form() {
        let e = ThirdPartyId::parse("email", " Bob@Example.ORG ").unwrap();
        assert_eq!(
            (e.medium(), e.address()),
            (Medium::Email, "bob@example.org")
        );
        let m = ThirdPartyId::parse("msisdn", "+44 7400 123456").unwrap();
        assert_eq!((m.medium(), m.address()), (Medium::Msisdn, "447400123456"));
        assert!(matches!(
            ThirdPartyId::parse("fax", "1"),
            Err(InvalidThreepid::Medium(_))
        ));
        assert!(matches!(
            ThirdPartyId::parse("email", "nope"),
            Err(InvalidThreepid::Email(_))
        ));
        assert_eq!("msisdn".parse::<Medium>(), Ok(Medium::Msisdn));
        assert_eq!(Medium::Email.to_string(), "email");
    }

    #[test]
    fn invisible_and_direction_characters_are_refused() {
        for raw in [
            "vic\u{200b}tim@example.org",
            "victim@exa\u{200d}mple.org",
            "\u{202e}gro.elpmaxe@mitciv",
            "victim\u{2066}@example.org",
            "\u{feff}victim@example.org",
            "vic\u{ad}tim@example.org",
        ] {
            assert_eq!(Email::parse(raw), Err(InvalidEmail::Character), "{raw:?}");
        }
    }

    #[test]
    fn malformed_emails() {
        for (raw, err) in [
            ("", InvalidEmail::Length),
            ("   ", InvalidEmail::Length),
            ("no-at-sign", InvalidEmail::At),
            ("two@@example.org", InvalidEmail::At),
            ("a@b@c", InvalidEmail::At),
            ("has space@example.org", InvalidEmail::Character),
            ("line\r\nbreak@example.org", InvalidEmail::Character),
            ("tab\t@example.org", InvalidEmail::Character),
            ("<a@example.org>", InvalidEmail::Character),
            ("Name <a@example.org>", InvalidEmail::Character),
            (
                "x@example.org\r\nBcc: victim@example.org",
                InvalidEmail::Character,
            ),
            ("@example.org", InvalidEmail::Shape),
            ("a@", InvalidEmail::Shape),
            ("a@.example.org", InvalidEmail::Shape),
            ("a@example..org", InvalidEmail::Shape),
            (".a@example.org", InvalidEmail::Shape),
            ("a@exa_mple.org", InvalidEmail::Shape),
        ] {
            assert_eq!(Email::parse(raw), Err(err), "{raw:?}");
        }
        let long = format!("{}@example.org", "a".repeat(500));
        assert_eq!(Email::parse(&long), Err(InvalidEmail::Length));
    }

    #[test]
    fn phone_numbers() {
        let gb = Msisdn::parse("GB", "07400 123456").unwrap();
        assert_eq!(gb.as_str(), "447400123456");
        assert_eq!(gb.e164(), "+447400123456");
        assert_eq!(gb.country(), "GB");
        assert_eq!(Msisdn::parse("gb", "+44 7400 123456").unwrap(), gb);
        assert_eq!(
            Msisdn::parse("US", "+44 7400 123456").unwrap(),
            gb,
            "international input from anywhere"
        );
        assert_eq!(Msisdn::parse_international("447400123456").unwrap(), gb);
        assert_eq!(Msisdn::parse_international("+447400123456").unwrap(), gb);
        assert_eq!(Msisdn::parse_international("+44 7400 123-456").unwrap(), gb);
        let de = Msisdn::parse("DE", "0151 23456789").unwrap();
        assert_eq!((de.as_str(), de.country()), ("4915123456789", "DE"));
        assert_eq!(
            Msisdn::parse("XX", "07400 123456"),
            Err(InvalidPhone::Country)
        );
        assert_eq!(
            Msisdn::parse("GBR", "07400 123456"),
            Err(InvalidPhone::Country)
        );
        assert_eq!(Msisdn::parse("GB", "123"), Err(InvalidPhone::Number));
        assert_eq!(
            Msisdn::parse("GB", "not a number"),
            Err(InvalidPhone::Number)
        );
        // Ofcom's drama range parses but is not a valid number.
        assert_eq!(
            Msisdn::parse("GB", "07700 900123"),
            Err(InvalidPhone::Number)
        );
        assert_eq!(
            Msisdn::parse_international("44abc"),
            Err(InvalidPhone::Number)
        );
    }

    #[test]
    fn next_links() {
        let none: Vec<String> = vec![];
        assert!(check_next_link("https://app.example.org/done?x=1", &none).is_ok());
        assert!(check_next_link("http://localhost:3000/", &none).is_ok());
        for bad in [
            "javascript:alert(1)",
            "data:text/html,hi",
            "file:///etc/passwd",
            "ftp://x.org/",
        ] {
            assert_eq!(
                check_next_link(bad, &none),
                Err(InvalidNextLink::Scheme),
                "{bad}"
            );
        }
        assert_eq!(
            check_next_link("//evil.example/x", &none),
            Err(InvalidNextLink::NotUrl)
        );
        assert_eq!(
            check_next_link("/relative", &none),
            Err(InvalidNextLink::NotUrl)
        );
        let long = format!("https://app.example.org/{}", "a".repeat(MAX_NEXT_LINK));
        assert_eq!(check_next_link(&long, &none), Err(InvalidNextLink::TooLong));
        for bad in [
            "https://a.example/\u{0}x",
            "https://a.example/x\u{0}",
            "https://a.example/\nx",
        ] {
            assert_eq!(
                check_next_link(bad, &none),
                Err(InvalidNextLink::Control),
                "{bad:?}"
            );
        }
        let allow = vec!["app.example.org".to_owned()];
        assert!(check_next_link("https://APP.example.org/x", &allow).is_ok());
        assert_eq!(
            check_next_link("https://evil.example/x", &allow),
            Err(InvalidNextLink::NotAllowed)
        );
        assert_eq!(
            check_next_link("https://app.example.org.evil.example/", &allow),
            Err(InvalidNextLink::NotAllowed)
        );
    }

    #[test]
    fn client_secrets() {
        assert!(valid_client_secret("abc.DEF=_-09"));
        assert!(!valid_client_secret(""));
        assert!(!valid_client_secret("has space"));
        assert!(!valid_client_secret("ü"));
        assert!(!valid_client_secret(&"a".repeat(256)));
        assert!(valid_client_secret(&"a".repeat(255)));
    }
}
