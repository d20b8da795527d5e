//! Security tests that would fail if a defence were gone. (Token guessing, prefetch, replay,
//! next_link, logout on reset and SSRF have their tests beside the features: see
//! docs/SECURITY.md for the map.)

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Backend, spawn_with_mail};
use crate::on_both_databases;

on_both_databases!(
    enumeration_answers_look_alike,
    markup_and_template_syntax_stay_text,
    every_html_page_refuses_framing_and_caching
);

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn enumeration_answers_look_alike(db: Backend) {
    let (app, sink) = spawn_with_mail(db, |c| c.email.inhibit_3pid_errors = true).await;
    // An account with an address.
    let body = json!({ "username": "known", "password": "correct horse battery" });
    let start = app
        .post("/_matrix/client/v3/register", body.clone(), None)
        .await;
    let sid = app
        .request_email_token("register", "known@example.org", "k", 1)
        .await
        .ok()["sid"]
        .clone();
    app.confirm(&sink.wait_for(1).await[0].link()).await;
    let mut b = body;
    b["auth"] = json!({ "type": "m.login.email.identity", "session": start.body["session"], "threepid_creds": { "sid": sid, "client_secret": "k" } });
    app.post("/_matrix/client/v3/register", b, None).await.ok();

    // Password reset: known and unknown addresses answer alike (status, keys, sid shape)...
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for i in 0..30 {
        for (address, times) in [
            ("known@example.org", &mut known),
            (format!("nobody{i}@example.org").as_str(), &mut unknown),
        ] {
            let t = Instant::now();
            let r = app
                .request_email_token("account/password", address, &format!("probe{i}"), 1)
                .await;
            times.push(t.elapsed());
            assert_eq!(r.status, StatusCode::OK, "{address}: {:?}", r.body);
            let keys: Vec<&String> = r.body.as_object().unwrap().keys().collect();
            assert_eq!(keys, vec!["sid"]);
            let sid = r.body["sid"].as_str().unwrap();
            assert!(
                sid.len() == 25 && sid.chars().all(|c| c.is_ascii_alphanumeric()),
                "{sid}"
            );
        }
    }
    // ...and take comparable time. Reported, not asserted: shared CI machines are noisy.
    let (mk, mu) = (median(known), median(unknown));
    eprintln!(
        "enumeration timing ({db:?}): password reset requestToken median known {mk:?}, unknown {mu:?}"
    );
    // Registration: an address in use answers like a free one.
    let used = app
        .request_email_token("register", "known@example.org", "r", 1)
        .await;
    let free = app
        .request_email_token("register", "free@example.org", "r", 1)
        .await;
    assert_eq!(
        (used.status, used.body.as_object().unwrap().len()),
        (free.status, free.body.as_object().unwrap().len())
    );
}

async fn markup_and_template_syntax_stay_text(db: Backend) {
    let (app, sink) = spawn_with_mail(db, |_| {}).await;
    // Legal in an address's local part: braces, ampersand, apostrophe.
    let address = "{{7*7}}&'x@example.org";
    app.request_email_token("register", address, "s", 1)
        .await
        .ok();
    let mail = sink.wait_for(1).await.pop().unwrap();
    let html = mail.html();
    assert!(
        html.contains("{{7*7}}&amp;&#x27;x@example.org"),
        "escaped in HTML: {html}"
    );
    // Where the address stands, not anywhere: a random sid or token may hold "49".
    assert!(
        !html.contains("49&amp;&#x27;x@example.org"),
        "not evaluated as a template: {html}"
    );
    assert!(
        mail.text().contains("{{7*7}}&'x@example.org"),
        "plain in the text part"
    );
    assert_eq!(mail.to, vec![address]);
    let page = app.open(&mail.link()).await;
    assert!(
        page.html.contains("{{7*7}}&amp;&#x27;x@example.org"),
        "{}",
        page.html
    );
    assert!(!page.html.contains("49&amp;&#x27;x@example.org"));
    // Line breaks never reach a header: such addresses are refused before any mail.
    app.request_email_token(
        "register",
        "a@example.org\r\nBcc: victim@example.org",
        "s",
        1,
    )
    .await
    .assert_error(400, "M_INVALID_PARAM");
    // A display name with markup is stored and returned as text; it appears in no mail.
    let (user_id, token, _) = app.register("mallory", "correct horse battery").await;
    let evil = "<script>alert(1)</script>{{7*7}}\r\nBcc: x@y.org";
    app.put(
        &format!("/_matrix/client/v3/profile/{user_id}/displayname"),
        json!({ "displayname": evil }),
        Some(&token),
    )
    .await
    .ok();
    assert_eq!(
        app.get(
            &format!("/_matrix/client/v3/profile/{user_id}/displayname"),
            None
        )
        .await
        .ok()["displayname"],
        evil
    );
    sink.assert_total(1).await;
}

async fn every_html_page_refuses_framing_and_caching(db: Backend) {
    let (app, sink) = spawn_with_mail(db, |c| {
        c.registration.terms = vec![vouch_config::TermsPolicy {
            id: "tos".into(),
            version: "1".into(),
            lang: "en".into(),
            name: "Terms".into(),
            url: "https://example.org/tos".into(),
        }]
    })
    .await;
    let start = app
        .post(
            "/_matrix/client/v3/register",
            json!({ "username": "p", "password": "correct horse battery" }),
            None,
        )
        .await;
    let session = start.body["session"].as_str().unwrap().to_owned();
    // (Registration mail waits for the terms stage; an add-address mail goes out at once.)
    app.request_email_token("account/3pid", "p@example.org", "s", 1)
        .await
        .ok();
    let link = sink.wait_for(1).await[0].link();
    let fallback = format!(
        "{}/_matrix/client/v3/auth/m.login.terms/fallback/web?session={session}",
        app.base
    );
    let mut pages = vec![
        ("fallback GET", app.open(&fallback).await),
        ("confirmation", app.open(&link).await),
        (
            "failure",
            app.open(&link.replace("token=", "token=x")).await,
        ),
    ];
    pages.push(("success", app.confirm(&link).await));
    pages.push(("already confirmed", app.open(&link).await));
    let done = app
        .http
        .post(&fallback)
        .form(&[("session", session.as_str())])
        .send()
        .await
        .unwrap();
    let headers = done.headers().clone();
    pages.push((
        "fallback POST",
        crate::helpers::Page {
            status: done.status(),
            headers,
            html: done.text().await.unwrap(),
        },
    ));
    for (name, page) in pages {
        let h = &page.headers;
        assert_eq!(h["cache-control"], "no-store", "{name}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{name}");
        assert_eq!(h["x-frame-options"], "DENY", "{name}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{name}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("frame-ancestors 'none'")
                && csp.contains("form-action 'self'")
                && csp.contains("default-src 'none'"),
            "{name}: {csp}"
        );
        assert!(
            h["content-type"].to_str().unwrap().starts_with("text/html"),
            "{name}"
        );
    }
}
