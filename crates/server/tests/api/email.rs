//! Email verification by the homeserver itself (MSC2263): the three flows end to end over
//! real SMTP, the rules, the link page, and the outbox.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, spawn_with, spawn_with_mail};
use crate::on_both_databases;
use crate::smtp::SmtpSink;

on_both_databases!(
    register_with_email_end_to_end,
    send_attempt_and_client_secret_rules,
    password_reset_by_email,
    add_and_delete_addresses,
    bad_request_token_input,
    uia_threepid_creds_errors_and_legacy_forms,
    next_link_rules_and_redirect,
    inhibit_3pid_errors_hides_which_addresses_exist,
    allowed_3pids_and_disabled_email,
    send_limits_per_address_and_session,
    wrong_tokens_burn_the_session_and_tokens_expire,
    validated_session_is_spent_once,
    required_email_and_gated_registration_mail,
    smtp_down_then_up_delivers_every_mail_once,
    queued_mail_survives_a_restart,
    the_outbox_keeps_to_max_connections_and_reuses_them,
    a_stalled_mail_does_not_confuse_the_next_one,
    deactivation_removes_addresses,
);

const REGISTER: &str = "/_matrix/client/v3/register";

/// Registers `username` with a validated email through the UIA email stage.
pub(crate) async fn register_with_email(
    app: &TestApp,
    sink: &SmtpSink,
    username: &str,
    email: &str,
) -> Value {
    let body = json!({ "username": username, "password": "correct horse battery" });
    let start = app.post(REGISTER, body.clone(), None).await;
    let session = start.body["session"].clone();
    let secret = format!("secret-{username}");
    // Counted before asking: the mail may well arrive before the answer does.
    let before = sink.received().len();
    let sid = app
        .request_email_token("register", email, &secret, 1)
        .await
        .ok()["sid"]
        .clone();
    let mail = sink.wait_for(before + 1).await.pop().unwrap();
    app.confirm(&mail.link()).await;
    let mut b = body;
    b["auth"] = json!({ "type": "m.login.email.identity", "session": session, "threepid_creds": { "sid": sid, "client_secret": secret } });
    app.post(REGISTER, b, None).await.ok().clone()
}

async fn register_with_email_end_to_end(db: Backend) {
    let (app, sink) = spawn_with_mail(db, |_| {}).await;
    let body = json!({ "username": "alice", "password": "correct horse battery" });
    let start = app.post(REGISTER, body.clone(), None).await;
    assert!(
        start.body["flows"]
            .as_array()
            .unwrap()
            .contains(&json!({ "stages": ["m.login.email.identity"] }))
    );
    let session = start.body["session"].clone();

    // Both r0 and v3 serve requestToken; id_server is not needed (MSC2263).
    let r = app
        .post("/_matrix/client/r0/register/email/requestToken", json!({ "email": "  Alice@Example.ORG ", "client_secret": "s3cret", "send_attempt": 1 }), None)
        .await;
    let sid = r.ok()["sid"].as_str().unwrap().to_owned();
    assert!(
        r.body.get("submit_url").is_none(),
        "email is validated by the link, not a code"
    );

    let mail = sink.wait_for(1).await.pop().unwrap();
    assert_eq!(
        mail.to,
        vec!["alice@example.org"],
        "sent to the canonical address"
    );
    assert_eq!(
        mail.header("Auto-Submitted").as_deref(),
        Some("auto-generated")
    );
    assert!(mail.header("Message-ID").unwrap().ends_with("@vouch.test>"));
    assert!(mail.header("Date").is_some());
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some("Confirm your email address for Vouch Test")
    );
    assert!(mail.html().contains("alice@example.org"));
    let link = mail.link();
    assert!(link.starts_with(&app.base), "{link}");

    // Before the link is followed, the stage is a 401 with M_UNAUTHORIZED (clients poll).
    let mut b = body.clone();
    b["auth"] = json!({ "type": "m.login.email.identity", "session": session, "threepid_creds": { "sid": sid, "client_secret": "s3cret" } });
    let early = app.post(REGISTER, b.clone(), None).await;
    assert_eq!(
        (early.status.as_u16(), early.errcode()),
        (401, "M_UNAUTHORIZED"),
        "{:?}",
        early.body
    );

    // Opening the link (what a mail scanner does) validates nothing.
    let page = app.open(&link).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.html.contains("<form method=\"post\""), "{}", page.html);
    assert!(page.html.contains("alice@example.org"));
    assert_eq!(page.headers["cache-control"], "no-store");
    assert_eq!(page.headers["referrer-policy"], "no-referrer");
    assert!(
        page.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    let still = app.post(REGISTER, b.clone(), None).await;
    assert_eq!(still.errcode(), "M_UNAUTHORIZED");

    // Pressing the button does.
    let done = app.confirm(&link).await;
    assert_eq!(done.status, StatusCode::OK);
    assert!(done.html.contains("confirmed"), "{}", done.html);
    // A second click gets a friendly page.
    let again = app.open(&link).await;
    assert!(again.html.contains("already confirmed"), "{}", again.html);

    let r = app.post(REGISTER, b, None).await;
    let token = r.ok()["access_token"].as_str().unwrap().to_owned();
    let threepids = app
        .get("/_matrix/client/v3/account/3pid", Some(&token))
        .await;
    let list = threepids.ok()["threepids"].as_array().unwrap().clone();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["medium"], "email");
    assert_eq!(list[0]["address"], "alice@example.org");
    assert!(
        list[0]["validated_at"].as_u64().unwrap() > 0 && list[0]["added_at"].as_u64().unwrap() > 0
    );

    // Login by address, in any spelling, and by the legacy medium/address fields.
    let login = |address: &str| json!({ "type": "m.login.password", "identifier": { "type": "m.id.thirdparty", "medium": "email", "address": address }, "password": "correct horse battery" });
    let r = app
        .post("/_matrix/client/v3/login", login("ALICE@example.org"), None)
        .await;
    assert_eq!(r.ok()["user_id"], "@alice:vouch.test");
    let r = app
        .post("/_matrix/client/v3/login", json!({ "type": "m.login.password", "medium": "email", "address": "alice@example.org", "password": "correct horse battery" }), None)
        .await;
    assert_eq!(r.ok()["user_id"], "@alice:vouch.test");
    app.post("/_matrix/client/v3/login", login("bob@example.org"), None)
        .await
        .assert_error(403, "M_FORBIDDEN");

    // The address is taken now.
    app.request_email_token("register", "alice@example.org", "other", 1)
        .await
        .assert_error(400, "M_THREEPID_IN_USE");
    app.request_email_token("account/3pid", "ALICE@example.org", "other", 1)
        .await
        .assert_error(400, "M_THREEPID_IN_USE");
    sink.assert_total(1).await;
}

async fn send_attempt_and_client_secret_rules(db: Backend) {
    let (app, sink) = spawn_with_mail(db, |_| {}).await;
    let first = app
        .request_email_token("register", "bob@example.org", "abc", 1)
        .await
        .ok()["sid"]
        .clone();
    sink.wait_for(1).await;
    // Same or lower send_attempt: same sid, no new mail.
    assert_eq!(
        app.request_email_token("register", "bob@example.org", "abc", 1)
            .await
            .ok()["sid"],
        first
    );
    assert_eq!(
        app.request_email_token("register", "BOB@example.org", "abc", 0)
            .await
            .ok()["sid"],
        first
    );
    sink.assert_total(1).await;
    // Higher: same sid, a fresh token; the old link no longer works.
    assert_eq!(
        app.request_email_token("register", "bob@example.org", "abc", 2)
            .await
            .ok()["sid"],
        first
    );
    let mails = sink.wait_for(2).await;
    let (old, new) = (mails[0].link(), mails[1].link());
    assert_ne!(old, new);
    let failed = app.confirm(&old).await;
    assert_eq!(failed.status, StatusCode::BAD_REQUEST);
    assert!(failed.html.contains("cannot be used"), "{}", failed.html);
    assert_eq!(app.confirm(&new).await.status, StatusCode::OK);
    // A new client_secret is a new session.
    let other = app
        .request_email_token("register", "bob@example.org", "xyz", 1)
        .await
        .ok()["sid"]
        .clone();
    assert_ne!(other, first);
    sink.wait_for(3).await;
}

async fn password_reset_by_email(db: Backend) {
    let (app, sink) = spawn_with_mail(db, |_| {}).await;
    let reg = register_with_email(&app, &sink, "carol", "carol@example.org").await;
    let old_token = reg["access_token"].as_str().unwrap().to_owned();
    let (other_token, _) = app.login_ok("carol", "correct horse battery").await;

    app.request_email_token("account/password", "nobody@example.org", "r1", 1)
        .await
        .assert_error(400, "M_THREEPID_NOT_FOUND");
    let sid = app
        .request_email_token("account/password", "Carol@Example.org", "r1", 1)
        .await
        .ok()["sid"]
        .clone();
    let mail = sink.wait_for(2).await.pop().unwrap();
    assert_eq!(
        mail.to,
        vec!["carol@example.org"],
        "reset mail goes to the stored address"
    );
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some("Reset your Vouch Test password")
    );

    let body = json!({ "new_password": "brand new battery", "auth": { "type": "m.login.email.identity", "threepid_creds": { "sid": sid, "client_secret": "r1" } } });
    let early = app
        .post("/_matrix/client/v3/account/password", body.clone(), None)
        .await;
    assert_eq!(
        (early.status.as_u16(), early.errcode()),
        (401, "M_UNAUTHORIZED"),
        "{:?}",
        early.body
    );
    let session = early.body["session"].clone();
    app.confirm(&mail.link()).await;
    let mut b = body;
    b["auth"]["session"] = session;
    app.post("/_matrix/client/v3/account/password", b.clone(), None)
        .await
        .ok();

    // logout_devices defaults to true: every device and token is gone.
    for t in [&old_token, &other_token] {
        app.get("/_matrix/client/v3/account/whoami", Some(t))
            .await
            .assert_error(401, "M_UNKNOWN_TOKEN");
    }
    app.login("carol", "correct horse battery")
        .await
        .assert_error(403, "M_FORBIDDEN");
    app.login_ok("carol", "brand new battery").await;
    // The proof is spent: it cannot reset the password again.
    b["auth"].as_object_mut().unwrap().remove("session");
    let replay = app
        .post("/_matrix/client/v3/account/password", b, None)
        .await;
    assert_eq!(
        (replay.status.as_u16(), replay.errcode()),
        (401, "M_UNAUTHORIZED"),
        "{:?}",
        replay.body
    );
}

async fn add_and_delete_addresses(db: Backend) {
    let (app, sink) = spawn_with_mail(db, |_| {}).await;
    let (user_id, token, _) = app.register("dave", "correct horse battery").await;
    let sid = app
        .request_email_token("account/3pid", "dave@example.org", "add1", 1)
        .await
        .ok()["sid"]
        .clone();
    let mail = sink.wait_for(1).await.pop().unwrap();
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some("Confirm your new email address on Vouch Test")
    );

    let add = json!({ "sid": sid, "client_secret": "add1" });
    // Not validated yet: refused before any password is asked for.
    app.post(
        "/_matrix/client/v3/account/3pid/add",
        add.clone(),
        Some(&token),
    )
    .await
    .assert_error(400, "M_THREEPID_AUTH_FAILED");
    app.confirm(&mail.link()).await;
    // A wrong client_secret does not find the session.
    app.post(
        "/_matrix/client/v3/account/3pid/add",
        json!({ "sid": sid, "client_secret": "wrong" }),
        Some(&token),
    )
    .await
    .assert_error(400, "M_THREEPID_AUTH_FAILED");
    let added = app
        .with_password_uia(
            Method::POST,
            "/_matrix/client/v3/account/3pid/add",
            add.clone(),
            &token,
            &user_id,
            "correct horse battery",
        )
        .await;
    added.ok();
    let list = app
        .get("/_matrix/client/v3/account/3pid", Some(&token))
        .await;
    assert_eq!(list.ok()["threepids"][0]["address"], "dave@example.org");
    // Spent: adding again fails.
    app.post("/_matrix/client/v3/account/3pid/add", add, Some(&token))
        .await
        .assert_error(400, "M_THREEPID_AUTH_FAILED");

    let del = app
        .post(
            "/_matrix/client/v3/account/3pid/delete",
            json!({ "medium": "email", "address": "DAVE@example.org" }),
            Some(&token),
        )
        .await;
    assert_eq!(del.ok()["id_server_unbind_result"], "no-support");
    assert_eq!(
        app.get("/_matrix/client/v3/account/3pid", Some(&token))
            .await
            .ok()["threepids"],
        json!([])
    );

    // The deprecated POST /account/3pid follows the same rules, UIA included.
    let sid = app
        .request_email_token("account/3pid", "dave2@example.org", "add2", 1)
        .await
        .ok()["sid"]
        .clone();
    let mail = sink.wait_for(2).await.pop().unwrap();
    app.confirm(&mail.link()).await;
    let legacy = app
        .with_password_uia(Method::POST, "/_matrix/client/r0/account/3pid", json!({ "three_pid_creds": { "sid": sid, "client_secret": "add2", "id_server": "id.example.org", "id_access_token": "x" } }), &token, &user_id, "correct horse battery")
        .await;
    legacy.ok();
    assert_eq!(
        app.get("/_matrix/client/v3/account/3pid", Some(&token))
            .await
            .ok()["threepids"][0]["address"],
        "dave2@example.org"
    );

    // With m.3pid_changes off, the endpoints refuse.
    let locked = spawn_with(db, |c| c.account.threepid_changes = false).await;
    let (_, t, _) = locked.register("erin", "correct horse battery").await;
    locked
        .request_email_token("account/3pid", "erin@example.org", "s", 1)
        .await
        .assert_error(403, "M_FORBIDDEN");
    locked
        .post(
            "/_matrix/client/v3/account/3pid/delete",
            json!({ "medium": "email", "address": "x@y.org" }),
            Some(&t),
        )
        .await
        .assert_error(403, "M_FORBIDDEN");
}

async fn bad_request_token_input(db: Backend) {
    let (app, sink) = spawn_with_mail(db, |_| {}).await;
    for kind in ["register", "account/password", "account/3pid"] {
        let path = format!("/_matrix/client/v3/{kind}/email/requestToken");
        let post = |body: Value| app.post(&path, body, None);
        for secret in ["has space", "", "ü", &"a".repeat(256)] {
            post(json!({ "email": "x@example.org", "client_secret": secret, "send_attempt": 1 }))
                .await
                .assert_error(400, "M_INVALID_PARAM");
        }
        post(json!({ "email": "x@example.org", "client_secret": "s", "send_attempt": "1" }))
            .await
            .assert_error(400, "M_BAD_JSON");
        post(json!({ "email": "x@example.org", "client_secret": "s", "send_attempt": -1 }))
            .await
            .assert_error(400, "M_BAD_JSON");
        post(json!({ "client_secret": "s", "send_attempt": 1 }))
            .await
            .assert_error(400, "M_MISSING_PARAM");
        post(json!({ "email": "x@example.org", "client_secret": "s" }))
            .await
            .assert_error(400, "M_MISSING_PARAM");
        for email in [
            "no-at",
            "a@@b.org",
            "a b@c.org",
            "a@b.org\r\nBcc: v@x.org",
            "<a@b.org>",
            "@b.org",
            "a@",
            &format!("{}@b.org", "a".repeat(600)),
        ] {
            post(json!({ "email": email, "client_secret": "s", "send_attempt": 1 }))
                .await
                .assert_error(400, "M_INVALID_PARAM");
        }
        app.raw(Method::POST, &path, "{not json", None)
            .await
            .assert_error(400, "M_NOT_JSON");
        // id_server without id_access_token is refused alike on all three endpoints.
        post(json!({ "email": "x@example.org", "client_secret": "s", "send_attempt": 1, "id_server": "id.example.org" }))
            .await
            .assert_error(400, "M_MISSING_PARAM");
    }
    // In the default `ignore` mode an id_server with a token is accepted and never contacted:
    // the mail comes from Vouch.
    let r = app
        .post("/_matrix/client/v3/register/email/requestToken", json!({ "email": "x@example.org", "client_secret": "s", "send_attempt": 1, "id_server": "127.0.0.1:1", "id_access_token": "tok" }), None)
        .await;
    r.ok();
    assert_eq!(sink.wait_for(1).await.len(), 1);
    sink.assert_total(1).await;

    let strict = spawn_with(db, |c| {
        c.identity_server.requests = vouch_config::IdentityServerRequests::Reject
    })
    .await;
    strict
        .post("/_matrix/client/v3/register/email/requestToken", json!({ "email": "x@example.org", "client_secret": "s", "send_attempt": 1, "id_server": "id.example.org", "id_access_token": "tok" }), None)
        .await
        .assert_error(400, "M_SERVER_NOT_TRUSTED");
    strict
        .request_email_token("register", "x@example.org", "s", 1)
        .await
        .ok();
}

async fn uia_threepid_creds_errors_and_legacy_forms(db: Backend) {
    let (app, sink) = spawn_with_mail(db, |_| {}).await;
    let body = json!({ "username": "fay", "password": "correct horse battery" });
    let start = app.post(REGISTER, body.clone(), None).await;
    let session = start.body["session"].clone();
    let attempt = |auth: Value| {
        let mut b = body.clone();
        b["auth"] = auth;
        app.post(REGISTER, b, None)
    };
    for (auth, errcode) in [
        (
            json!({ "type": "m.login.email.identity", "session": session }),
            "M_MISSING_PARAM",
        ),
        (
            json!({ "type": "m.login.email.identity", "session": session, "threepid_creds": "oops" }),
            "M_MISSING_PARAM",
        ),
        (
            json!({ "type": "m.login.email.identity", "session": session, "threepid_creds": { "sid": 5 } }),
            "M_MISSING_PARAM",
        ),
        (
            json!({ "type": "m.login.email.identity", "session": session, "threepid_creds": { "sid": "nosuch", "client_secret": "x" } }),
            "M_UNAUTHORIZED",
        ),
    ] {
        let r = attempt(auth.clone()).await;
        assert_eq!(
            (r.status.as_u16(), r.errcode()),
            (401, errcode),
            "{auth} gave {:?}",
            r.body
        );
        assert_eq!(r.body["session"], session);
    }
    // Element adds its identity server's host without a token; a local sid is checked
    // locally anyway. The legacy camelCase array form works too.
    let sid = app
        .request_email_token("register", "fay@example.org", "fs", 1)
        .await
        .ok()["sid"]
        .clone();
    app.confirm(&sink.wait_for(1).await[0].link()).await;
    let r = attempt(json!({ "type": "m.login.email.identity", "session": session, "threepidCreds": [{ "sid": sid, "clientSecret": "fs", "id_server": "vector.im" }] })).await;
    assert_eq!(r.ok()["user_id"], "@fay:vouch.test");
}

async fn next_link_rules_and_redirect(db: Backend) {
    let (app, sink) = spawn_with_mail(db, |c| {
        c.email.next_link_domain_allowlist = vec!["app.example.org".into()]
    })
    .await;
    for kind in ["register", "account/password", "account/3pid"] {
        for bad in [
            "javascript:alert(1)",
            "data:text/html,hi",
            "//evil.example/x",
            "https://evil.example/x",
            "file:///etc/passwd",
            "not a url",
        ] {
            let r = app
                .post(&format!("/_matrix/client/v3/{kind}/email/requestToken"), json!({ "email": "n@example.org", "client_secret": "s", "send_attempt": 1, "next_link": bad }), None)
                .await;
            r.assert_error(400, "M_INVALID_PARAM");
        }
    }
    let r = app
        .post("/_matrix/client/v3/register/email/requestToken", json!({ "email": "n@example.org", "client_secret": "s", "send_attempt": 1, "next_link": "https://app.example.org/welcome?step=2" }), None)
        .await;
    let sid = r.ok()["sid"].as_str().unwrap().to_owned();
    let done = app.confirm(&sink.wait_for(1).await[0].link()).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    let location = done.headers["location"].to_str().unwrap();
    assert_eq!(
        location,
        format!("https://app.example.org/welcome?step=2&sid={sid}")
    );
}

async fn inhibit_3pid_errors_hides_which_addresses_exist(db: Backend) {
    let (app, sink) = spawn_with_mail(db, |c| c.email.inhibit_3pid_errors = true).await;
    register_with_email(&app, &sink, "gus", "gus@example.org").await;
    let mails_before = sink.received().len();

    // In use: a normal-looking answer, and the owner gets a notice instead of a link.
    let r = app
        .request_email_token("register", "gus@example.org", "probe", 1)
        .await;
    let decoy = r.ok()["sid"].clone();
    let fresh = app
        .request_email_token("register", "new@example.org", "probe", 1)
        .await;
    assert_eq!(r.status, fresh.status);
    assert_eq!(
        r.body.as_object().unwrap().keys().collect::<Vec<_>>(),
        fresh.body.as_object().unwrap().keys().collect::<Vec<_>>()
    );
    let mails = sink.wait_for(mails_before + 2).await;
    let notice = mails
        .iter()
        .find(|m| {
            m.to == vec!["gus@example.org"]
                && m.header("Subject").unwrap().contains("already registered")
        })
        .expect("notice to the owner");
    assert!(
        !notice.text().contains("/_vouch/email/validate"),
        "the notice carries no link"
    );
    // The same request again: the same sid, as for a real session.
    assert_eq!(
        app.request_email_token("register", "gus@example.org", "probe", 1)
            .await
            .ok()["sid"],
        decoy
    );

    // Unknown address on password reset: 200, no mail.
    app.request_email_token("account/password", "ghost@example.org", "probe", 1)
        .await
        .ok();
    sink.assert_total(mails_before + 2).await;

    // The decoy never validates: it looks like a session whose link was not followed.
    let body = json!({ "username": "mallory", "password": "correct horse battery" });
    let start = app.post(REGISTER, body.clone(), None).await;
    let mut b = body;
    b["auth"] = json!({ "type": "m.login.email.identity", "session": start.body["session"], "threepid_creds": { "sid": decoy, "client_secret": "probe" } });
    let r = app.post(REGISTER, b, None).await;
    assert_eq!((r.status.as_u16(), r.errcode()), (401, "M_UNAUTHORIZED"));
}

async fn allowed_3pids_and_disabled_email(db: Backend) {
    let (app, _sink) = spawn_with_mail(db, |c| {
        c.email.allowed_3pids = vec![r"^[^@]+@example\.org$".into()]
    })
    .await;
    app.request_email_token("register", "a@example.org", "s", 1)
        .await
        .ok();
    for kind in ["register", "account/password", "account/3pid"] {
        app.request_email_token(kind, "a@elsewhere.org", "s", 1)
            .await
            .assert_error(403, "M_THREEPID_DENIED");
    }
    let off = spawn_with(db, |c| c.email.enabled = false).await;
    for kind in ["register", "account/password", "account/3pid"] {
        off.request_email_token(kind, "a@example.org", "s", 1)
            .await
            .assert_error(400, "M_THREEPID_MEDIUM_NOT_SUPPORTED");
    }
    let start = off
        .post(
            REGISTER,
            json!({ "username": "h", "password": "correct horse battery" }),
            None,
        )
        .await;
    assert_eq!(
        start.body["flows"],
        json!([{ "stages": ["m.login.dummy"] }])
    );
}

async fn send_limits_per_address_and_session(db: Backend) {
    let (app, sink) = spawn_with_mail(db, |c| {
        c.rate_limits.enabled = true;
        c.rate_limits.login_per_ip = vouch_config::Rate {
            per_second: 100.0,
            burst: 100,
        };
        c.rate_limits.registration_per_ip = vouch_config::Rate {
            per_second: 100.0,
            burst: 100,
        };
        c.rate_limits.email_per_ip = vouch_config::Rate {
            per_second: 100.0,
            burst: 100,
        };
        c.rate_limits.email_per_address = vouch_config::Window {
            max: 3,
            window: Duration::from_secs(3600),
        };
        c.rate_limits.email_per_session = vouch_config::Window {
            max: 2,
            window: Duration::from_secs(3600),
        };
    })
    .await;
    // Per session: the first send and one resend, then 429.
    app.request_email_token("register", "lim@example.org", "one", 1)
        .await
        .ok();
    app.request_email_token("register", "lim@example.org", "one", 2)
        .await
        .ok();
    let r = app
        .request_email_token("register", "lim@example.org", "one", 3)
        .await;
    r.assert_error(429, "M_LIMIT_EXCEEDED");
    assert!(r.body["retry_after_ms"].as_u64().unwrap() > 0);
    assert!(r.headers.contains_key("retry-after"));
    // Per address, the first send of a new client_secret included.
    app.request_email_token("register", "lim@example.org", "two", 1)
        .await
        .ok();
    app.request_email_token("register", "lim@example.org", "three", 1)
        .await
        .assert_error(429, "M_LIMIT_EXCEEDED");
    // Another address is not affected.
    app.request_email_token("register", "other@example.org", "x", 1)
        .await
        .ok();
    sink.wait_for(4).await;
    // The window moves on.
    app.clock.advance(Duration::from_secs(3601));
    app.request_email_token("register", "lim@example.org", "four", 1)
        .await
        .ok();

    // Per client address.
    let ip_limited = spawn_with(db, |c| {
        c.rate_limits.enabled = true;
        c.rate_limits.email_per_ip = vouch_config::Rate {
            per_second: 0.01,
            burst: 2,
        };
    })
    .await;
    ip_limited
        .request_email_token("register", "a@example.org", "s", 1)
        .await
        .ok();
    ip_limited
        .request_email_token("register", "b@example.org", "s", 1)
        .await
        .ok();
    ip_limited
        .request_email_token("register", "c@example.org", "s", 1)
        .await
        .assert_error(429, "M_LIMIT_EXCEEDED");
}

async fn wrong_tokens_burn_the_session_and_tokens_expire(db: Backend) {
    let (app, sink) = spawn_with_mail(db, |c| c.email.max_attempts = 3).await;
    app.request_email_token("register", "ivy@example.org", "s", 1)
        .await
        .ok();
    let link = sink.wait_for(1).await[0].link();
    let wrong = link.replace("token=", "token=x");
    for _ in 0..3 {
        assert_eq!(app.confirm(&wrong).await.status, StatusCode::BAD_REQUEST);
    }
    // Burned: even the right token fails now, and a resend does not revive it.
    assert_eq!(app.confirm(&link).await.status, StatusCode::BAD_REQUEST);
    app.request_email_token("register", "ivy@example.org", "s", 2)
        .await
        .ok();
    sink.assert_total(1).await;

    // Expiry: the link works for validation_token_lifetime.
    app.request_email_token("register", "jay@example.org", "s", 1)
        .await
        .ok();
    let link = sink.wait_for(2).await[1].link();
    app.clock.advance(Duration::from_secs(3601));
    let page = app.confirm(&link).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.html.contains("cannot be used"));
}

async fn validated_session_is_spent_once(db: Backend) {
    let (app, sink) = spawn_with_mail(db, |_| {}).await;
    let sid = app
        .request_email_token("register", "kim@example.org", "s", 1)
        .await
        .ok()["sid"]
        .clone();
    app.confirm(&sink.wait_for(1).await[0].link()).await;
    let creds = json!({ "sid": sid, "client_secret": "s" });
    let start = |name: &'static str| {
        app.post(
            REGISTER,
            json!({ "username": name, "password": "correct horse battery" }),
            None,
        )
    };
    let first = start("kim").await.body["session"].clone();
    let second = start("kim2").await.body["session"].clone();
    let stage = |name: &str, session: &Value| json!({ "username": name, "password": "correct horse battery", "auth": { "type": "m.login.email.identity", "session": session, "threepid_creds": creds } });
    // The first UIA session claims it; a second UIA session cannot use it.
    let claimed = app.post(REGISTER, stage("kim", &first), None).await;
    claimed.ok();
    let r = app.post(REGISTER, stage("kim2", &second), None).await;
    assert_eq!(
        (r.status.as_u16(), r.errcode()),
        (401, "M_UNAUTHORIZED"),
        "{:?}",
        r.body
    );
    // Nor can a fresh one after it was spent.
    let third = start("kim3").await.body["session"].clone();
    let r = app.post(REGISTER, stage("kim3", &third), None).await;
    assert_eq!((r.status.as_u16(), r.errcode()), (401, "M_UNAUTHORIZED"));
    // And a registration session cannot serve a password reset.
    let reset = app
        .post("/_matrix/client/v3/account/password", json!({ "new_password": "xxxxxxxxxx", "auth": { "type": "m.login.email.identity", "threepid_creds": creds } }), None)
        .await;
    assert_eq!(
        (reset.status.as_u16(), reset.errcode()),
        (401, "M_UNAUTHORIZED")
    );
}

async fn required_email_and_gated_registration_mail(db: Backend) {
    let (app, sink) = spawn_with_mail(db, |c| {
        c.registration.require_3pid = vec!["email".into()];
        c.registration.registration_token_required = true;
    })
    .await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vouch"))
        .args([
            "admin",
            "registration-token",
            "create",
            "--token",
            "invite1",
        ])
        .env("VOUCH_DATABASE__URL", &app.config.database.url)
        .output()
        .unwrap();
    assert!(out.status.success());
    let body = json!({ "username": "lou", "password": "correct horse battery" });
    let start = app.post(REGISTER, body.clone(), None).await;
    assert_eq!(
        start.body["flows"],
        json!([{ "stages": ["m.login.registration_token", "m.login.email.identity"] }])
    );
    let session = start.body["session"].clone();

    // requestToken answers at once, but no mail goes out before the token stage is passed.
    let sid = app
        .request_email_token("register", "lou@example.org", "s", 1)
        .await
        .ok()["sid"]
        .clone();
    let email_stage = json!({ "type": "m.login.email.identity", "session": session, "threepid_creds": { "sid": sid, "client_secret": "s" } });
    let mut b = body.clone();
    b["auth"] = email_stage.clone();
    let early = app.post(REGISTER, b.clone(), None).await;
    assert_eq!(
        (early.status.as_u16(), early.errcode()),
        (401, "M_FORBIDDEN"),
        "out of order: {:?}",
        early.body
    );
    sink.assert_total(0).await;

    let mut t = body.clone();
    t["auth"] =
        json!({ "type": "m.login.registration_token", "token": "invite1", "session": session });
    let r = app.post(REGISTER, t, None).await;
    assert_eq!(r.body["completed"], json!(["m.login.registration_token"]));
    // The client's first poll of the email stage releases the mail.
    let poll = app.post(REGISTER, b.clone(), None).await;
    assert_eq!(poll.errcode(), "M_UNAUTHORIZED");
    let mail = sink.wait_for(1).await.pop().unwrap();
    app.confirm(&mail.link()).await;
    app.post(REGISTER, b, None).await.ok();

    // Without email the flow cannot complete: the dummy stage is not offered.
    let start = app
        .post(
            REGISTER,
            json!({ "username": "max", "password": "correct horse battery" }),
            None,
        )
        .await;
    let r = app
        .post(REGISTER, json!({ "username": "max", "password": "correct horse battery", "auth": { "type": "m.login.dummy", "session": start.body["session"] } }), None)
        .await;
    assert_eq!((r.status.as_u16(), r.errcode()), (401, "M_UNRECOGNIZED"));
}

async fn smtp_down_then_up_delivers_every_mail_once(db: Backend) {
    let (app, sink) = spawn_with_mail(db, |_| {}).await;
    sink.set_up(false);
    let mut sids = Vec::new();
    for i in 0..4 {
        let r = app
            .request_email_token("register", &format!("u{i}@example.org"), "s", 1)
            .await;
        sids.push(r.ok()["sid"].clone());
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(sink.received().is_empty());
    sink.set_up(true);
    // Retries follow the (mock) clock's backoff.
    app.clock.advance(Duration::from_secs(3600));
    let got = sink.wait_for(4).await;
    let mut to: Vec<String> = got.iter().map(|m| m.to[0].clone()).collect();
    to.sort();
    assert_eq!(
        to,
        vec![
            "u0@example.org",
            "u1@example.org",
            "u2@example.org",
            "u3@example.org"
        ]
    );
    app.clock.advance(Duration::from_secs(3600));
    sink.assert_total(4).await;
}

/// An operator's relay sees at most `[email.smtp] max_connections` connections at once,
/// and a burst of mail reuses them rather than opening one per mail.
async fn the_outbox_keeps_to_max_connections_and_reuses_them(db: Backend) {
    let (app, sink) = spawn_with_mail(db, |c| {
        c.email.smtp.max_connections = 2;
        c.rate_limits.enabled = false;
    })
    .await;
    let addresses: Vec<String> = (0..30).map(|i| format!("burst{i}@example.org")).collect();
    let sends = addresses
        .iter()
        .map(|a| app.request_email_token("register", a, "s", 1));
    for r in futures::future::join_all(sends).await {
        r.ok();
    }
    let got = sink.wait_for(30).await;
    let mut to: Vec<String> = got.iter().map(|m| m.to[0].clone()).collect();
    to.sort();
    to.dedup();
    assert_eq!(to.len(), 30, "every address got its mail once: {to:?}");
    let (accepted, most_open) = sink.connections();
    assert!(most_open <= 2, "{most_open} connections were open at once");
    // The start-up check's connection is one of the two.
    assert!(
        accepted <= 2,
        "{accepted} connections were opened for 30 mails"
    );
    sink.assert_total(30).await;
}

/// A relay that holds back its answer to a mail past `[email.smtp] timeout` gets that
/// mail again later; the connection it stalled is not reused, so the next mail's refusal
/// is read as a refusal (not as the late answer to the stalled mail) and that mail is
/// retried rather than recorded as delivered.
async fn a_stalled_mail_does_not_confuse_the_next_one(db: Backend) {
    let (app, sink) = spawn_with_mail(db, |c| {
        c.email.smtp.max_connections = 1;
        c.email.smtp.timeout = Duration::from_millis(800);
    })
    .await;
    sink.stall_next_mail(2_000);
    app.request_email_token("register", "stalled@example.org", "s", 1)
        .await
        .ok();
    // The stalled mail arrives (late); Vouch gave up on it after 0.8 s.
    sink.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sink.refuse_mail(true);
    app.request_email_token("register", "refused@example.org", "s", 1)
        .await
        .ok();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sink.refuse_mail(false);
    // Both are retried on the (mock) clock's backoff: the refused one was not marked sent.
    app.clock.advance(Duration::from_secs(3600));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let to: Vec<String> = sink.received().iter().map(|m| m.to[0].clone()).collect();
        if to.iter().any(|t| t == "refused@example.org") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the refused mail was never sent again: {to:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn queued_mail_survives_a_restart(db: Backend) {
    let sink = SmtpSink::start().await;
    sink.set_up(false);
    let dir = tempfile::tempdir().unwrap();
    let url_for_sqlite = format!("sqlite://{}", dir.path().join("restart.db").display());
    let first = spawn_with(db, |c| {
        crate::helpers::mail_to(c, &sink);
        if db == Backend::Sqlite {
            c.database.url = url_for_sqlite.clone();
        }
    })
    .await;
    for i in 0..3 {
        first
            .request_email_token("register", &format!("r{i}@example.org"), "s", 1)
            .await
            .ok();
    }
    let url = first.config.database.url.clone();
    // The server goes away with the mail still queued.
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    sink.set_up(true);
    let second = spawn_with(db, |c| {
        crate::helpers::mail_to(c, &sink);
        c.database.url = url.clone();
    })
    .await;
    second.clock.advance(Duration::from_secs(3600));
    let got = sink.wait_for(3).await;
    assert_eq!(got.len(), 3);
    sink.assert_total(3).await;
}

async fn deactivation_removes_addresses(db: Backend) {
    let (app, sink) = spawn_with_mail(db, |_| {}).await;
    let reg = register_with_email(&app, &sink, "ned", "ned@example.org").await;
    let token = reg["access_token"].as_str().unwrap();
    let user_id = reg["user_id"].as_str().unwrap();
    app.with_password_uia(
        Method::POST,
        "/_matrix/client/v3/account/deactivate",
        json!({}),
        token,
        user_id,
        "correct horse battery",
    )
    .await
    .ok();
    // The address is free again and no longer logs anyone in.
    let login = json!({ "type": "m.login.password", "identifier": { "type": "m.id.thirdparty", "medium": "email", "address": "ned@example.org" }, "password": "correct horse battery" });
    app.post("/_matrix/client/v3/login", login, None)
        .await
        .assert_error(403, "M_FORBIDDEN");
    app.request_email_token("register", "ned@example.org", "again", 1)
        .await
        .ok();
}
