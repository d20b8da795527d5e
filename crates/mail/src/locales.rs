//! The words of the pages in each language: TOML catalogues (`locales/<tag>.toml`), the
//! embedded English and French ones, extended or changed by operators' files in
//! `[email] template_dir/locales/`. Templates ask for a word with `t("section.key",
//! name=value)`; the catalogue's text is trusted HTML, the values are escaped.

use std::collections::HashMap;
use std::path::Path;

use crate::templates::TemplateError;

/// The embedded catalogues.
const EMBEDDED: &[(&str, &str)] = &[
    ("en", include_str!("../locales/en.toml")),
    ("fr", include_str!("../locales/fr.toml")),
];

/// Every language's words, by `section.key`.
#[derive(Debug, Default)]
pub struct Catalogues {
    by_lang: HashMap<String, HashMap<String, String>>,
}

fn bad(name: &str, why: String) -> TemplateError {
    TemplateError::new(
        name,
        minijinja::Error::new(minijinja::ErrorKind::BadSerialization, why),
    )
}

/// `[a] b = "x"` as `a.b = "x"`.
fn flatten(
    prefix: &str,
    table: &toml::Table,
    out: &mut HashMap<String, String>,
) -> Result<(), String> {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::String(s) => {
                out.insert(key, s.clone());
            }
            toml::Value::Table(t) => flatten(&key, t, out)?,
            _ => return Err(format!("{key} must be text")),
        }
    }
    Ok(())
}

impl Catalogues {
    /// The embedded catalogues, then every `locales/<tag>.toml` in `override_dir`.
    pub fn load(override_dir: Option<&Path>) -> Result<Self, TemplateError> {
        let mut cats = Self::default();
        for (lang, text) in EMBEDDED {
            cats.merge(lang, text, &format!("locales/{lang}.toml"))?;
        }
        if let Some(dir) = override_dir
            .map(|d| d.join("locales"))
            .filter(|d| d.is_dir())
        {
            let entries = std::fs::read_dir(&dir)
                .map_err(|e| bad("locales", format!("{}: {e}", dir.display())))?;
            for entry in entries.flatten() {
                let path = entry.path();
                let Some(lang) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".toml"))
                    .map(str::to_owned)
                else {
                    continue;
                };
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| bad("locales", format!("{}: {e}", path.display())))?;
                cats.merge(
                    &lang.to_ascii_lowercase(),
                    &text,
                    &path.display().to_string(),
                )?;
            }
        }
        Ok(cats)
    }

    fn merge(&mut self, lang: &str, text: &str, name: &str) -> Result<(), TemplateError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| bad(name, e.to_string()))?;
        let mut words = HashMap::new();
        flatten("", &table, &mut words).map_err(|e| bad(name, e))?;
        self.by_lang
            .entry(lang.to_owned())
            .or_default()
            .extend(words);
        Ok(())
    }

    /// The languages there are words for.
    pub fn languages(&self) -> Vec<String> {
        let mut langs: Vec<String> = self.by_lang.keys().cloned().collect();
        langs.sort();
        langs
    }

    /// The language of `tag` there are words for (`fr-CA` → `fr`), if any.
    pub fn supported(&self, tag: &str) -> Option<String> {
        let tag = tag.trim().to_ascii_lowercase();
        if self.by_lang.contains_key(&tag) {
            return Some(tag);
        }
        let base = tag.split(['-', '_']).next().unwrap_or_default();
        self.by_lang.contains_key(base).then(|| base.to_owned())
    }

    /// The words for `key` in `lang`, else in English.
    pub fn text(&self, lang: &str, key: &str) -> Option<&str> {
        self.by_lang
            .get(lang)
            .and_then(|w| w.get(key))
            .or_else(|| self.by_lang.get("en").and_then(|w| w.get(key)))
            .map(String::as_str)
    }

    /// The English keys `lang` has no words for.
    pub fn missing(&self, lang: &str) -> Vec<String> {
        let (Some(en), Some(other)) = (self.by_lang.get("en"), self.by_lang.get(lang)) else {
            return Vec::new();
        };
        let mut keys: Vec<String> = en
            .keys()
            .filter(|k| !other.contains_key(*k))
            .cloned()
            .collect();
        keys.sort();
        keys
    }
}

/// Escapes text for HTML element content and double-quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn french_is_complete_and_regional_tags_fall_back() {
        let c = Catalogues::load(None).unwrap();
        assert_eq!(
            c.missing("fr"),
            Vec::<String>::new(),
            "every English word has a French one"
        );
        assert_eq!(c.supported("fr-CA").as_deref(), Some("fr"));
        assert_eq!(c.supported("de"), None);
        assert_eq!(c.text("fr", "title.sign_in"), Some("Connexion"));
        assert_eq!(c.text("de", "title.sign_in"), Some("Sign in"));
    }

    #[test]
    fn operators_add_languages_and_change_words() {
        let dir = std::env::temp_dir().join(format!("vouch-locales-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("locales")).unwrap();
        std::fs::write(
            dir.join("locales/de.toml"),
            "[title]\nsign_in = \"Anmelden\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("locales/en.toml"),
            "[title]\nsign_in = \"Log in\"\n",
        )
        .unwrap();
        let c = Catalogues::load(Some(&dir)).unwrap();
        assert_eq!(c.text("de", "title.sign_in"), Some("Anmelden"));
        assert_eq!(c.text("de", "title.sign_up"), Some("Create an account"));
        assert_eq!(c.text("en", "title.sign_in"), Some("Log in"));
        std::fs::write(dir.join("locales/de.toml"), "[title\n").unwrap();
        assert!(
            Catalogues::load(Some(&dir)).is_err(),
            "a broken catalogue fails at load"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
