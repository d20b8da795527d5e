//! The device authorization grant's user code (RFC 8628 §6.1): short enough to type from
//! another screen, from an alphabet without vowels (no words) or look-alikes, and read back
//! however the user typed it.

use crate::secrets::{SecretSource, random_string};

/// Twenty consonants: no vowels, so no words; none that look alike.
const ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";
/// Characters in a user code (20^8, about 34 bits; guessing is held back by rate limits and
/// the code's short life).
pub const USER_CODE_LEN: usize = 8;

/// A fresh user code, as stored and compared (`BCDFGHJK`).
pub fn new_user_code(source: &dyn SecretSource) -> String {
    random_string(source, ALPHABET, USER_CODE_LEN)
}

/// A user code as shown: two groups of four (`BCDF-GHJK`).
pub fn display_user_code(code: &str) -> String {
    let (a, b) = code.split_at(code.len().min(USER_CODE_LEN / 2));
    format!("{a}-{b}")
}

/// What the user typed, as stored: upper case, without spaces or dashes; `None` if it
/// cannot be a user code.
pub fn normalise_user_code(typed: &str) -> Option<String> {
    let code: String = typed
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (code.len() == USER_CODE_LEN && code.bytes().all(|b| ALPHABET.contains(&b))).then_some(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SeededSecretSource;

    #[test]
    fn user_codes_read_back_however_typed() {
        let code = new_user_code(&SeededSecretSource::new(7));
        assert_eq!(code.len(), USER_CODE_LEN);
        let shown = display_user_code(&code);
        assert_eq!(shown.len(), USER_CODE_LEN + 1);
        assert_eq!(normalise_user_code(&shown).as_deref(), Some(code.as_str()));
        assert_eq!(
            normalise_user_code(&format!(" {} ", shown.to_lowercase())).as_deref(),
            Some(code.as_str())
        );
        assert_eq!(
            normalise_user_code("ABCD-EFGH"),
            None,
            "vowels are never in a code"
        );
        assert_eq!(normalise_user_code("BCDF-GHJ"), None);
    }
}
