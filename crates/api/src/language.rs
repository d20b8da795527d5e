//! Which language a page, mail or SMS speaks: the app's `ui_locales`, else the
//! `Accept-Language` header by its weights, else English, among the languages the
//! catalogues have (`vouch_mail::Templates::language`). An account's stored choice, where
//! there is an account, is applied by the caller.

use axum::extract::FromRequestParts;
use http::request::Parts;
use http::{HeaderMap, header};

use crate::state::AppState;

/// The language of the pages: the first of `preferred` (the app's `ui_locales`) there are
/// words for, else the browser's `Accept-Language` by its weights, else English.
pub fn language(state: &AppState, preferred: &[String], headers: &HeaderMap) -> String {
    let templates = state.composer.templates();
    if let Some(lang) = preferred.iter().find_map(|l| templates.language(l)) {
        return lang;
    }
    let mut asked: Vec<(f32, &str)> = headers
        .get_all(header::ACCEPT_LANGUAGE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .take(20)
        .filter_map(|part| {
            let mut bits = part.trim().split(';');
            let tag = bits.next()?.trim();
            let q = bits
                .find_map(|b| b.trim().strip_prefix("q="))
                .and_then(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            (!tag.is_empty() && q > 0.0).then_some((q, tag))
        })
        .collect();
    asked.sort_by(|a, b| b.0.total_cmp(&a.0));
    asked
        .into_iter()
        .find_map(|(_, tag)| templates.language(tag))
        .unwrap_or_else(|| "en".into())
}

/// The language a request's `Accept-Language` asks for (English when none is had).
#[derive(Debug, Clone)]
pub struct AcceptLanguage(pub String);

impl FromRequestParts<AppState> for AcceptLanguage {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(language(state, &[], &parts.headers)))
    }
}
