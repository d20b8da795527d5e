//! Check-then-write rules under concurrency: many requests released at the same moment
//! (`race::release_together`), as an attacker with many connections sends them. Each test
//! here failed before its fix (issue 11): the attempt cap, the send limits, and decoys that
//! must answer like real sessions under the same limits.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, spawn_with_mail};
use crate::on_both_databases;
use crate::race::{Held, count, release_together};
use crate::sms::{NUMBER, code_in, form, received, request_phone_token, submit, with_twilio};

on_both_databases!(
    racing_wrong_sms_codes_cannot_take_over_an_account,
    racing_wrong_link_tokens_burns_the_session,
    concurrent_sms_requests_hold_the_send_limits,
    concurrent_mail_requests_hold_the_send_limits,
    decoys_answer_like_real_sessions,
    identical_requests_together_make_one_session,
);

/// The path part of a URL the server gave.
fn path_of(url: &str) -> String {
    let u = url::Url::parse(url).expect("a URL");
    u.path().to_owned()
}

/// A wrong six-digit code, different from `code`.
fn wrong_code(code: &str, i: usize) -> String {
    let mut guess = format!("{:06}", (i * 7919) % 1_000_000);
    if guess == code {
        guess = format!("{:06}", (i * 7919 + 1) % 1_000_000);
    }
    guess
}

/// The victim: an account whose phone number was verified and added.
async fn victim_with_phone(app: &TestApp, twilio: &wiremock::MockServer) -> (String, String) {
    let (user_id, token, _) = app.register("victim", "victim's own password").await;
    let r = request_phone_token(app, "account/3pid", "GB", NUMBER, "v1", 1).await;
    let (sid, url) = (
        r.ok()["sid"].clone(),
        r.body["submit_url"].as_str().unwrap().to_owned(),
    );
    let code = code_in(&form(&received(twilio, 1).await[0])["Body"]);
    submit(app, &url, &sid, "v1", &code).await.ok();
    app.with_password_uia(
        Method::POST,
        "/_matrix/client/v3/account/3pid/add",
        json!({ "sid": sid, "client_secret": "v1" }),
        &token,
        &user_id,
        "victim's own password",
    )
    .await
    .ok();
    (user_id, url)
}

/// The attack from the review: a password reset by SMS for someone else's number, a flood
/// of guesses released together, then the reset with `m.login.msisdn`. Only `max_attempts`
/// guesses are ever counted; the session then takes nothing, the right code included.
async fn racing_wrong_sms_codes_cannot_take_over_an_account(db: Backend) {
    let (app, twilio) = with_twilio(db, |c| c.sms.max_attempts = 5).await;
    let (_victim, submit_url) = victim_with_phone(&app, &twilio).await;

    let r = request_phone_token(&app, "account/password", "GB", NUMBER, "attacker", 1).await;
    let sid = r.ok()["sid"].as_str().unwrap().to_owned();
    let code = code_in(&form(&received(&twilio, 2).await[1])["Body"]);
    let guesses: Vec<Held> = (0..120)
        .map(|i| {
            Held::post_json(
                &path_of(&submit_url),
                &json!({ "sid": sid, "client_secret": "attacker", "token": wrong_code(&code, i) }),
            )
        })
        .collect();
    let replies = release_together(&app.base, guesses).await;
    assert_eq!(
        count(&replies, 400, "M_TOKEN_INCORRECT"),
        5,
        "exactly max_attempts guesses are counted: {:?}",
        replies.iter().map(|r| r.errcode()).collect::<Vec<_>>()
    );
    assert_eq!(count(&replies, 400, "M_SESSION_EXPIRED"), 115);

    // The right code no longer works, and the reset is refused.
    submit(&app, &submit_url, &json!(sid), "attacker", &code)
        .await
        .assert_error(400, "M_SESSION_EXPIRED");
    let body = json!({ "new_password": "the attacker's password", "logout_devices": false });
    let start = app
        .post("/_matrix/client/v3/account/password", body.clone(), None)
        .await;
    let mut attempt = body;
    attempt["auth"] = json!({
        "type": "m.login.msisdn",
        "session": start.body["session"],
        "threepid_creds": { "sid": sid, "client_secret": "attacker" },
    });
    let r = app
        .post("/_matrix/client/v3/account/password", attempt, None)
        .await;
    r.assert_error(401, "M_UNAUTHORIZED");
    app.login_ok("victim", "victim's own password").await;
    app.login("victim", "the attacker's password")
        .await
        .assert_error(403, "M_FORBIDDEN");
}

/// The same cap for the email link page's POST: guesses at the token, released together,
/// burn the session, and the real link then fails.
async fn racing_wrong_link_tokens_burns_the_session(db: Backend) {
    let (app, sink) = spawn_with_mail(db, |c| c.email.max_attempts = 4).await;
    let r = app
        .request_email_token("register", "race@example.org", "rs", 1)
        .await;
    let sid = r.ok()["sid"].as_str().unwrap().to_owned();
    let link = sink.wait_for(1).await[0].link();
    let guesses: Vec<Held> = (0..60)
        .map(|i| {
            Held::post_form(
                "/_vouch/email/validate",
                &[
                    ("sid", sid.as_str()),
                    ("client_secret", "rs"),
                    ("token", &format!("guess{i}")),
                ],
            )
        })
        .collect();
    let replies = release_together(&app.base, guesses).await;
    assert!(
        replies
            .iter()
            .all(|r| r.status == replies[0].status && !r.status.is_success()),
        "every guess gets the one failure page"
    );
    let page = app.confirm(&link).await;
    assert_eq!(
        page.status.as_u16(),
        400,
        "the real link works after the guesses: {}",
        page.html
    );
    let body = json!({ "username": "racer", "password": "correct horse battery" });
    let start = app
        .post("/_matrix/client/v3/register", body.clone(), None)
        .await;
    let mut b = body;
    b["auth"] = json!({ "type": "m.login.email.identity", "session": start.body["session"], "threepid_creds": { "sid": sid, "client_secret": "rs" } });
    app.post("/_matrix/client/v3/register", b, None)
        .await
        .assert_error(401, "M_UNAUTHORIZED");
}

fn generous_ip_limits(c: &mut vouch_config::Config) {
    c.rate_limits.enabled = true;
    let many = vouch_config::Rate {
        per_second: 1000.0,
        burst: 1000,
    };
    c.rate_limits.sms_per_ip = many;
    c.rate_limits.email_per_ip = many;
    c.rate_limits.registration_per_ip = many;
}

/// SMS pumping: 30 requestTokens for one number released together queue no more SMS than
/// `sms_per_number` allows; the rest are told to wait.
async fn concurrent_sms_requests_hold_the_send_limits(db: Backend) {
    let (app, twilio) = with_twilio(db, |c| {
        generous_ip_limits(c);
        c.rate_limits.sms_per_number = vouch_config::Window {
            max: 3,
            window: Duration::from_secs(3600),
        };
    })
    .await;
    let requests: Vec<Held> = (0..30)
        .map(|i| {
            Held::post_json(
                "/_matrix/client/v3/register/msisdn/requestToken",
                &json!({ "country": "GB", "phone_number": NUMBER, "client_secret": format!("pump{i}"), "send_attempt": 1 }),
            )
        })
        .collect();
    let replies = release_together(&app.base, requests).await;
    assert_eq!(count(&replies, 200, ""), 3);
    assert_eq!(count(&replies, 429, "M_LIMIT_EXCEEDED"), 27);
    received(&twilio, 3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(twilio.received_requests().await.unwrap().len(), 3);
}

/// The same for mail and `email_per_address`.
async fn concurrent_mail_requests_hold_the_send_limits(db: Backend) {
    let (app, sink) = spawn_with_mail(db, |c| {
        generous_ip_limits(c);
        c.rate_limits.email_per_address = vouch_config::Window {
            max: 3,
            window: Duration::from_secs(3600),
        };
    })
    .await;
    let requests: Vec<Held> = (0..30)
        .map(|i| {
            Held::post_json(
                "/_matrix/client/v3/register/email/requestToken",
                &json!({ "email": "flood@example.org", "client_secret": format!("flood{i}"), "send_attempt": 1 }),
            )
        })
        .collect();
    let replies = release_together(&app.base, requests).await;
    assert_eq!(count(&replies, 200, ""), 3);
    assert_eq!(count(&replies, 429, "M_LIMIT_EXCEEDED"), 27);
    sink.wait_for(3).await;
    sink.assert_total(3).await;
}

/// `inhibit_3pid_errors`: a decoy session for a number nobody has answers wrong codes, the
/// attempt cap and the send limits exactly as a real session for a known number does.
async fn decoys_answer_like_real_sessions(db: Backend) {
    let (app, twilio) = with_twilio(db, |c| {
        c.email.inhibit_3pid_errors = true;
        c.sms.max_attempts = 2;
        generous_ip_limits(c);
        c.rate_limits.sms_per_number = vouch_config::Window {
            max: 5,
            window: Duration::from_secs(3600),
        };
        c.rate_limits.sms_per_session = vouch_config::Window {
            max: 2,
            window: Duration::from_secs(3600),
        };
    })
    .await;
    let (_victim, submit_url) = victim_with_phone(&app, &twilio).await;
    // The victim's number took one SMS; give the unknown number one too, so both stand at
    // the same count.
    request_phone_token(&app, "register", "GB", "07400 654321", "pad", 1)
        .await
        .ok();

    let answers = |number: &'static str, secret: &'static str| {
        let (app, url) = (&app, submit_url.clone());
        async move {
            let mut seen: Vec<(u16, String)> = Vec::new();
            let r = request_phone_token(app, "account/password", "GB", number, secret, 1).await;
            let sid: Value = r.ok()["sid"].clone();
            assert!(r.body["submit_url"].is_string());
            // Resends count toward the per-session limit (2), then 429.
            for attempt in 2..=3 {
                let r = request_phone_token(app, "account/password", "GB", number, secret, attempt)
                    .await;
                seen.push((r.status.as_u16(), r.errcode().to_owned()));
            }
            // Wrong codes are counted; the cap (2) burns the session.
            for _ in 0..3 {
                let r = submit(app, &url, &sid, secret, "000000").await;
                seen.push((r.status.as_u16(), r.errcode().to_owned()));
            }
            // Fresh sessions count toward the per-number limit (5), then 429.
            for i in 0..3 {
                let r = request_phone_token(
                    app,
                    "account/password",
                    "GB",
                    number,
                    &format!("{secret}{i}"),
                    1,
                )
                .await;
                seen.push((r.status.as_u16(), r.errcode().to_owned()));
            }
            seen
        }
    };
    let known = answers(NUMBER, "known").await;
    let unknown = answers("07400 654321", "unknown").await;
    assert_eq!(
        known,
        vec![
            (200, String::new()),
            (429, "M_LIMIT_EXCEEDED".to_owned()),
            (400, "M_TOKEN_INCORRECT".to_owned()),
            (400, "M_TOKEN_INCORRECT".to_owned()),
            (400, "M_SESSION_EXPIRED".to_owned()),
            (200, String::new()),
            (200, String::new()),
            (429, "M_LIMIT_EXCEEDED".to_owned()),
        ]
    );
    assert_eq!(unknown, known, "a decoy answers like a real session");
}

/// Twenty identical requestTokens (one address, one client secret, one `send_attempt`)
/// released together make one session and one mail: every answer names the same session.
async fn identical_requests_together_make_one_session(db: Backend) {
    let (app, sink) = spawn_with_mail(db, generous_ip_limits).await;
    let requests: Vec<Held> = (0..20)
        .map(|_| {
            Held::post_json(
                "/_matrix/client/v3/register/email/requestToken",
                &json!({ "email": "twin@example.org", "client_secret": "twins", "send_attempt": 1 }),
            )
        })
        .collect();
    let replies = release_together(&app.base, requests).await;
    assert_eq!(count(&replies, 200, ""), 20);
    let sids: std::collections::HashSet<String> = replies
        .iter()
        .map(|r| r.body["sid"].as_str().expect("a sid").to_owned())
        .collect();
    assert_eq!(sids.len(), 1, "{sids:?}");
    sink.wait_for(1).await;
    sink.assert_total(1).await;
}
