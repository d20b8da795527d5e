//! HTML pages (UIA fallback now; the email confirmation pages later) with the headers every
//! page must carry: no caching, no referrer, a strict CSP and no framing.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

/// Escapes text for HTML element content and double-quoted attributes (the templates' rule).
pub use vouch_mail::locales::escape;

/// A complete page. `body` must already be escaped. `script` is a fixed inline snippet (the
/// spec's auth-done call); only pages that carry one allow inline script in their CSP.
pub fn page(status: StatusCode, title: &str, body: &str, script: Option<&'static str>) -> Response {
    let script_tag = script
        .map(|s| format!("<script>{s}</script>"))
        .unwrap_or_default();
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>{STYLE}</style></head>\
         <body><main><h1>{title}</h1>{body}</main>{script_tag}</body></html>",
        title = escape(title),
    );
    let csp = match script {
        Some(_) => {
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; \
                    form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        }
        None => NO_SCRIPT_CSP,
    };
    html_response(status, html, csp)
}

/// The CSP of a page without script.
pub const NO_SCRIPT_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// An HTML answer with the headers every page carries and the given CSP.
pub fn html_response(status: StatusCode, html: String, csp: &'static str) -> Response {
    let mut res = (status, html).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    res
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;background:#f4f6f8;color:#17191c;margin:0}\
main{max-width:28rem;margin:4rem auto;background:#fff;padding:2rem;border-radius:8px;\
box-shadow:0 1px 4px rgba(0,0,0,.1)}h1{font-size:1.4rem}button{background:#0b7a75;color:#fff;\
border:0;border-radius:4px;padding:.6rem 1.2rem;font-size:1rem;cursor:pointer}\
input{font-size:1rem;padding:.4rem;width:100%;box-sizing:border-box;margin:.5rem 0}";
