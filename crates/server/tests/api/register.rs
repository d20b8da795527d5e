//! `POST /register` and its helpers: UIA flows, username and password checks, tokens,
//! terms, guests, races.

use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, spawn, spawn_with};
use crate::on_both_databases;

on_both_databases!(
    register_login_whoami_with_the_dummy_flow,
    username_checks_come_before_uia,
    password_is_required_and_policed,
    registration_disabled_and_guests,
    concurrent_registrations_of_one_name,
    registration_token_stage,
    terms_stage_has_policies_in_params,
    inhibit_login_and_generated_username,
    availability_endpoint,
);

const REGISTER: &str = "/_matrix/client/v3/register";

/// Starts a registration and returns the 401 body.
async fn start(app: &TestApp, body: Value) -> Value {
    let r = app.post(REGISTER, body, None).await;
    assert_eq!(r.status, 401, "{:?}", r.body);
    r.body
}

async fn register_login_whoami_with_the_dummy_flow(db: Backend) {
    let app = spawn(db).await;
    let body = json!({ "username": "Alice", "password": "correct horse battery", "initial_device_display_name": "Laptop" });
    let uia = start(&app, body.clone()).await;
    // Email is offered beside the plain flow when no 3PID is required.
    assert_eq!(
        uia["flows"],
        json!([{ "stages": ["m.login.dummy"] }, { "stages": ["m.login.email.identity"] }])
    );
    assert_eq!(uia["params"], json!({}));
    let session = uia["session"].as_str().unwrap();
    assert!(session.len() >= 16);

    // Polling without a stage keeps the session and reports no progress.
    let mut poll = body.clone();
    poll["auth"] = json!({ "session": session });
    let again = app.post(REGISTER, poll, None).await;
    assert_eq!(again.status, 401);
    assert_eq!(again.body["session"], json!(session));

    let mut done = body.clone();
    done["auth"] = json!({ "type": "m.login.dummy", "session": session });
    let r = app.post(REGISTER, done.clone(), None).await;
    let b = r.ok();
    // Usernames are lower-cased on creation.
    assert_eq!(b["user_id"], "@alice:vouch.test");
    let token = b["access_token"].as_str().unwrap();
    let device = b["device_id"].as_str().unwrap();
    assert!(b.get("refresh_token").is_none());

    let who = app
        .get("/_matrix/client/v3/account/whoami", Some(token))
        .await;
    assert_eq!(who.ok()["user_id"], "@alice:vouch.test");
    assert_eq!(who.body["device_id"], json!(device));
    assert_ne!(who.body["is_guest"], json!(true), "absent means false");
    let devices = app.get("/_matrix/client/v3/devices", Some(token)).await;
    assert_eq!(devices.ok()["devices"][0]["display_name"], "Laptop");

    // The spent session cannot create a second account.
    done["username"] = json!("alice2");
    let replay = app.post(REGISTER, done, None).await;
    assert_eq!(replay.status, 400, "{:?}", replay.body);

    // The same works on r0.
    let r0 = app
        .post(
            "/_matrix/client/r0/register",
            json!({ "username": "bob", "password": "correct horse battery" }),
            None,
        )
        .await;
    assert_eq!(r0.status, 401);
}

async fn username_checks_come_before_uia(db: Backend) {
    let app = spawn_with(db, |c| {
        c.registration.reserved_localparts = vec!["admin".into()]
    })
    .await;
    app.register("taken", "correct horse battery").await;
    let cases = [
        ("taken", "M_USER_IN_USE"),
        ("TAKEN", "M_USER_IN_USE"),
        ("admin", "M_USER_IN_USE"),
        ("has space", "M_INVALID_USERNAME"),
        ("ünïcode", "M_INVALID_USERNAME"),
        ("_bridge", "M_INVALID_USERNAME"),
        ("", "M_INVALID_USERNAME"),
    ];
    for (name, errcode) in cases {
        let r = app
            .post(
                REGISTER,
                json!({ "username": name, "password": "correct horse battery" }),
                None,
            )
            .await;
        r.assert_error(400, errcode);
    }
    let long = "a".repeat(250);
    app.post(
        REGISTER,
        json!({ "username": long, "password": "correct horse battery" }),
        None,
    )
    .await
    .assert_error(400, "M_INVALID_USERNAME");
}

async fn password_is_required_and_policed(db: Backend) {
    let app = spawn_with(db, |c| {
        c.password.min_length = 10;
        c.password.require_digit = true;
    })
    .await;
    app.post(REGISTER, json!({ "username": "dave" }), None)
        .await
        .assert_error(400, "M_MISSING_PARAM");
    let short = app
        .post(
            REGISTER,
            json!({ "username": "dave", "password": "short1" }),
            None,
        )
        .await;
    short.assert_error(400, "M_WEAK_PASSWORD");
    assert!(short.body["error"].as_str().unwrap().contains("10"));
    app.post(
        REGISTER,
        json!({ "username": "dave", "password": "longenoughbutnodigit" }),
        None,
    )
    .await
    .assert_error(400, "M_WEAK_PASSWORD");
    let ok = app
        .post(
            REGISTER,
            json!({ "username": "dave", "password": "longenough1" }),
            None,
        )
        .await;
    assert_eq!(ok.status, 401);
}

async fn registration_disabled_and_guests(db: Backend) {
    let closed = spawn_with(db, |c| c.registration.enabled = false).await;
    closed
        .post(
            REGISTER,
            json!({ "username": "x", "password": "correct horse battery" }),
            None,
        )
        .await
        .assert_error(403, "M_FORBIDDEN");
    closed
        .get("/_matrix/client/v3/register/available?username=x", None)
        .await
        .assert_error(403, "M_FORBIDDEN");

    let no_guests = spawn(db).await;
    no_guests
        .post(&format!("{REGISTER}?kind=guest"), json!({}), None)
        .await
        .assert_error(403, "M_GUEST_ACCESS_FORBIDDEN");

    let guests = spawn_with(db, |c| c.registration.allow_guests = true).await;
    let r = guests
        .post(
            &format!("{REGISTER}?kind=guest"),
            json!({ "username": "ignored", "password": "ignored" }),
            None,
        )
        .await;
    let b = r.ok();
    assert_ne!(
        b["user_id"], "@ignored:vouch.test",
        "guests do not choose their name"
    );
    let token = b["access_token"].as_str().unwrap();
    let who = guests
        .get("/_matrix/client/v3/account/whoami", Some(token))
        .await;
    assert_eq!(who.ok()["is_guest"], json!(true));
    // Guests cannot change a password they do not have.
    guests
        .post(
            "/_matrix/client/v3/account/password",
            json!({ "new_password": "correct horse battery" }),
            Some(token),
        )
        .await
        .assert_error(403, "M_GUEST_ACCESS_FORBIDDEN");
    // An unknown kind is a bad parameter.
    guests
        .post(&format!("{REGISTER}?kind=robot"), json!({}), None)
        .await
        .assert_error(400, "M_INVALID_PARAM");
}

async fn concurrent_registrations_of_one_name(db: Backend) {
    let app = spawn(db).await;
    // Both pass the pre-UIA availability check, then race to create the account.
    let mut bodies = Vec::new();
    for _ in 0..8 {
        let uia = start(
            &app,
            json!({ "username": "racer", "password": "correct horse battery" }),
        )
        .await;
        bodies.push(json!({
            "username": "racer",
            "password": "correct horse battery",
            "auth": { "type": "m.login.dummy", "session": uia["session"] },
        }));
    }
    let replies =
        futures::future::join_all(bodies.into_iter().map(|b| app.post(REGISTER, b, None))).await;
    let ok = replies.iter().filter(|r| r.status == 200).count();
    assert_eq!(ok, 1, "exactly one registration wins: {replies:?}");
    for r in replies.iter().filter(|r| r.status != 200) {
        r.assert_error(400, "M_USER_IN_USE");
    }
    // The winner can log in; no half-made account stands in the way.
    app.login_ok("racer", "correct horse battery").await;
}

async fn registration_token_stage(db: Backend) {
    let app = spawn_with(db, |c| c.registration.registration_token_required = true).await;
    let bin = env!("CARGO_BIN_EXE_vouch");
    // Tokens are made with the CLI against the same database.
    let out = std::process::Command::new(bin)
        .args([
            "admin",
            "registration-token",
            "create",
            "--token",
            "letmein",
            "--uses",
            "1",
        ])
        .env("VOUCH_DATABASE__URL", &app.config.database.url)
        .output()
        .expect("run vouch");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "letmein");

    let validity = "/_matrix/client/v1/register/m.login.registration_token/validity";
    assert_eq!(
        app.get(&format!("{validity}?token=letmein"), None)
            .await
            .ok()["valid"],
        json!(true)
    );
    assert_eq!(
        app.get(&format!("{validity}?token=nope"), None).await.ok()["valid"],
        json!(false)
    );
    app.get(&format!("{validity}?token=bad%20token"), None)
        .await
        .assert_error(400, "M_INVALID_PARAM");

    let body = json!({ "username": "erin", "password": "correct horse battery" });
    let uia = start(&app, body.clone()).await;
    assert_eq!(
        uia["flows"],
        json!([{ "stages": ["m.login.registration_token"] }, { "stages": ["m.login.registration_token", "m.login.email.identity"] }])
    );
    let session = uia["session"].clone();

    // The dummy stage is not offered; a wrong token is a retryable 401 with an errcode.
    let mut b = body.clone();
    b["auth"] = json!({ "type": "m.login.dummy", "session": session });
    let r = app.post(REGISTER, b.clone(), None).await;
    assert_eq!(
        (r.status.as_u16(), r.errcode()),
        (401, "M_UNRECOGNIZED"),
        "{:?}",
        r.body
    );
    b["auth"] =
        json!({ "type": "m.login.registration_token", "token": "wrong", "session": session });
    let r = app.post(REGISTER, b.clone(), None).await;
    assert_eq!((r.status.as_u16(), r.errcode()), (401, "M_FORBIDDEN"));
    assert_eq!(r.body["session"], session);
    b["auth"] =
        json!({ "type": "m.login.registration_token", "token": "letmein", "session": session });
    app.post(REGISTER, b, None).await.ok();

    // One use only: the next registration's token stage fails.
    assert_eq!(
        app.get(&format!("{validity}?token=letmein"), None)
            .await
            .ok()["valid"],
        json!(false)
    );
    let body = json!({ "username": "frank", "password": "correct horse battery" });
    let uia = start(&app, body.clone()).await;
    let mut b = body;
    b["auth"] = json!({ "type": "m.login.registration_token", "token": "letmein", "session": uia["session"] });
    let r = app.post(REGISTER, b, None).await;
    assert_eq!((r.status.as_u16(), r.errcode()), (401, "M_FORBIDDEN"));
}

async fn terms_stage_has_policies_in_params(db: Backend) {
    let app = spawn_with(db, |c| {
        c.registration.terms = vec![vouch_config::TermsPolicy {
            id: "privacy_policy".into(),
            version: "1.0".into(),
            lang: "en".into(),
            name: "Privacy Policy".into(),
            url: "https://example.org/privacy".into(),
        }]
    })
    .await;
    let body = json!({ "username": "gina", "password": "correct horse battery" });
    let uia = start(&app, body.clone()).await;
    assert_eq!(
        uia["flows"],
        json!([{ "stages": ["m.login.terms"] }, { "stages": ["m.login.terms", "m.login.email.identity"] }])
    );
    assert_eq!(
        uia["params"]["m.login.terms"]["policies"]["privacy_policy"],
        json!({ "version": "1.0", "en": { "name": "Privacy Policy", "url": "https://example.org/privacy" } })
    );
    let mut b = body;
    b["auth"] = json!({ "type": "m.login.terms", "session": uia["session"] });
    app.post(REGISTER, b, None).await.ok();
}

async fn inhibit_login_and_generated_username(db: Backend) {
    let app = spawn(db).await;
    let body =
        json!({ "username": "hank", "password": "correct horse battery", "inhibit_login": true });
    let uia = start(&app, body.clone()).await;
    let mut b = body;
    b["auth"] = json!({ "type": "m.login.dummy", "session": uia["session"] });
    let r = app.post(REGISTER, b, None).await;
    assert_eq!(r.ok()["user_id"], "@hank:vouch.test");
    assert!(
        r.body.get("access_token").is_none() && r.body.get("device_id").is_none(),
        "{:?}",
        r.body
    );
    app.login_ok("hank", "correct horse battery").await;

    // No username: the server makes one.
    let body = json!({ "password": "correct horse battery", "refresh_token": true, "device_id": "MYPHONE" });
    let uia = start(&app, body.clone()).await;
    let mut b = body;
    b["auth"] = json!({ "type": "m.login.dummy", "session": uia["session"] });
    let r = app.post(REGISTER, b, None).await;
    let user_id = r.ok()["user_id"].as_str().unwrap();
    assert!(
        user_id.ends_with(":vouch.test") && user_id.len() > 14,
        "{user_id}"
    );
    assert_eq!(r.body["device_id"], "MYPHONE");
    assert!(r.body["refresh_token"].is_string());
    assert!(r.body["expires_in_ms"].as_u64().unwrap() > 0);
}

async fn availability_endpoint(db: Backend) {
    let app = spawn(db).await;
    app.register("ivy", "correct horse battery").await;
    let free = app
        .get("/_matrix/client/v3/register/available?username=ivan", None)
        .await;
    assert_eq!(free.ok()["available"], json!(true));
    app.get("/_matrix/client/v3/register/available?username=Ivy", None)
        .await
        .assert_error(400, "M_USER_IN_USE");
    app.get("/_matrix/client/v3/register/available?username=i%20v", None)
        .await
        .assert_error(400, "M_INVALID_USERNAME");
    app.get("/_matrix/client/v3/register/available", None)
        .await
        .assert_error(400, "M_MISSING_PARAM");
}
