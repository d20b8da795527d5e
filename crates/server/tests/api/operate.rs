//! Operating Vouch: the Synapse-compatible admin API, the admin command line, moving in from
//! a real Synapse database, metrics, and housekeeping.

use std::process::Command;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Connection as _;

use crate::helpers::{Backend, TestApp, spawn_with};
use crate::on_both_databases;

on_both_databases!(
    admin_api_users_and_threepids,
    admin_api_registration_tokens,
    admin_cli_commands,
    import_from_a_real_synapse_database,
    import_never_touches_existing_accounts_and_refuses_bad_rows,
    metrics_move_with_what_happens,
    housekeeping_removes_exactly_what_expired,
);

/// Runs the real binary against the test server's database.
fn vouch(app: &TestApp, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vouch"))
        .args(args)
        .env_remove("RUST_LOG")
        .env("VOUCH_DATABASE__URL", &app.config.database.url)
        .env("VOUCH_SERVER_NAME", &app.config.server_name)
        .env("VOUCH_PASSWORD__ARGON2_M_COST_KIB", "1024")
        .env("VOUCH_PASSWORD__ARGON2_T_COST", "1")
        .env(
            "VOUCH_PASSWORD__PEPPER",
            app.config.password.pepper.expose(),
        )
        .output()
        .expect("vouch runs")
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An admin made with the CLI, logged in.
async fn admin_token(app: &TestApp) -> String {
    ok(&vouch(
        app,
        &[
            "admin",
            "create-user",
            "boss",
            "--password",
            "boss battery staple",
            "--admin",
        ],
    ));
    app.login_ok("boss", "boss battery staple").await.0
}

async fn admin_api_users_and_threepids(db: Backend) {
    let app = spawn_with(db, |_| {}).await;
    let admin = admin_token(&app).await;
    let (bob, bob_token, _) = app.register("bob", "correct horse battery").await;

    // Non-admins get 403 M_FORBIDDEN on every admin endpoint; no token, 401.
    for (method, path) in [
        (Method::GET, "/_synapse/admin/v2/users".to_owned()),
        (Method::GET, format!("/_synapse/admin/v2/users/{bob}")),
        (Method::PUT, format!("/_synapse/admin/v2/users/{bob}")),
        (
            Method::GET,
            "/_synapse/admin/v1/threepid/email/users/x@y.org".to_owned(),
        ),
        (
            Method::POST,
            format!("/_synapse/admin/v1/reset_password/{bob}"),
        ),
        (Method::POST, format!("/_synapse/admin/v1/deactivate/{bob}")),
        (
            Method::GET,
            "/_synapse/admin/v1/registration_tokens".to_owned(),
        ),
        (
            Method::POST,
            "/_synapse/admin/v1/registration_tokens/new".to_owned(),
        ),
    ] {
        app.call(method.clone(), &path, Some(json!({})), Some(&bob_token))
            .await
            .assert_error(403, "M_FORBIDDEN");
        app.call(method, &path, Some(json!({})), None)
            .await
            .assert_error(401, "M_MISSING_TOKEN");
    }

    // Create with PUT: 201 and the user object.
    let carol = "@carol:vouch.test";
    let r = app
        .put(
            &format!("/_synapse/admin/v2/users/{carol}"),
            json!({ "password": "carol battery staple", "displayname": "Carol", "threepids": [{ "medium": "email", "address": "Carol@Example.org" }] }),
            Some(&admin),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["name"], carol);
    assert_eq!(r.body["displayname"], "Carol");
    assert_eq!(r.body["threepids"][0]["address"], "carol@example.org");
    assert_eq!(r.body["admin"], false);
    assert_eq!(r.body["deactivated"], false);
    app.login_ok("carol", "carol battery staple").await;

    // Modify: password (logging out), admin, addresses. The unique-address rule holds.
    let (carol_token, _) = app.login_ok("carol", "carol battery staple").await;
    let r = app
        .put(
            &format!("/_synapse/admin/v2/users/{carol}"),
            json!({ "password": "new carol battery", "admin": true }),
            Some(&admin),
        )
        .await;
    assert_eq!(r.ok()["admin"], true);
    app.get("/_matrix/client/v3/account/whoami", Some(&carol_token))
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");
    app.login_ok("carol", "new carol battery").await;
    app.put(
        &format!("/_synapse/admin/v2/users/{bob}"),
        json!({ "threepids": [{ "medium": "email", "address": "carol@example.org" }] }),
        Some(&admin),
    )
    .await
    .assert_error(400, "M_THREEPID_IN_USE");
    let r = app
        .put(&format!("/_synapse/admin/v2/users/{bob}"), json!({ "threepids": [{ "medium": "msisdn", "address": "+447400123456" }], "displayname": "Bobby" }), Some(&admin))
        .await;
    assert_eq!(r.ok()["threepids"][0]["address"], "447400123456");

    let found = app
        .get(
            "/_synapse/admin/v1/threepid/email/users/CAROL@example.org",
            Some(&admin),
        )
        .await;
    assert_eq!(found.ok()["user_id"], carol);
    assert_eq!(
        app.get(
            "/_synapse/admin/v1/threepid/msisdn/users/447400123456",
            Some(&admin)
        )
        .await
        .ok()["user_id"],
        bob
    );
    app.get(
        "/_synapse/admin/v1/threepid/email/users/nobody@example.org",
        Some(&admin),
    )
    .await
    .assert_error(404, "M_NOT_FOUND");

    // List with paging and filters.
    let list = app
        .get("/_synapse/admin/v2/users?limit=2", Some(&admin))
        .await;
    assert_eq!(list.ok()["total"], 3);
    assert_eq!(list.body["users"].as_array().unwrap().len(), 2);
    assert_eq!(list.body["next_token"], "2");
    let rest = app
        .get("/_synapse/admin/v2/users?limit=2&from=2", Some(&admin))
        .await;
    assert_eq!(rest.ok()["users"].as_array().unwrap().len(), 1);
    assert!(rest.body.get("next_token").is_none());
    let named = app
        .get("/_synapse/admin/v2/users?name=bobby", Some(&admin))
        .await;
    assert_eq!(named.ok()["users"][0]["name"], bob);
    app.get("/_synapse/admin/v2/users?limit=x", Some(&admin))
        .await
        .assert_error(400, "M_INVALID_PARAM");

    // Reset password and deactivate.
    app.post(
        &format!("/_synapse/admin/v1/reset_password/{bob}"),
        json!({ "new_password": "reset battery staple" }),
        Some(&admin),
    )
    .await
    .ok();
    app.get("/_matrix/client/v3/account/whoami", Some(&bob_token))
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");
    app.login_ok("bob", "reset battery staple").await;
    app.post(
        &format!("/_synapse/admin/v1/reset_password/{bob}"),
        json!({ "new_password": "x" }),
        Some(&admin),
    )
    .await
    .assert_error(400, "M_WEAK_PASSWORD");
    let d = app
        .post(
            &format!("/_synapse/admin/v1/deactivate/{bob}"),
            json!({ "erase": true }),
            Some(&admin),
        )
        .await;
    assert_eq!(d.ok()["id_server_unbind_result"], "success");
    app.login("bob", "reset battery staple")
        .await
        .assert_error(403, "M_USER_DEACTIVATED");
    let shown = app
        .get(&format!("/_synapse/admin/v2/users/{bob}"), Some(&admin))
        .await;
    assert_eq!(shown.ok()["deactivated"], true);
    assert_eq!(shown.body["threepids"], json!([]));
    let with_deactivated = app
        .get("/_synapse/admin/v2/users?deactivated=true", Some(&admin))
        .await;
    assert_eq!(with_deactivated.ok()["total"], 3);
    assert_eq!(
        app.get("/_synapse/admin/v2/users", Some(&admin)).await.ok()["total"],
        2
    );
    app.get("/_synapse/admin/v2/users/@nobody:vouch.test", Some(&admin))
        .await
        .assert_error(404, "M_NOT_FOUND");
    app.get("/_synapse/admin/v2/users/@x:elsewhere.org", Some(&admin))
        .await
        .assert_error(400, "M_INVALID_PARAM");
}

async fn admin_api_registration_tokens(db: Backend) {
    let app = spawn_with(db, |c| c.registration.registration_token_required = true).await;
    let admin = admin_token(&app).await;
    let base = "/_synapse/admin/v1/registration_tokens";
    let made = app
        .post(
            &format!("{base}/new"),
            json!({ "token": "welcome", "uses_allowed": 1 }),
            Some(&admin),
        )
        .await;
    assert_eq!(
        made.ok(),
        &json!({ "token": "welcome", "uses_allowed": 1, "pending": 0, "completed": 0, "expiry_time": null })
    );
    let random = app
        .post(&format!("{base}/new"), json!({ "length": 8 }), Some(&admin))
        .await;
    assert_eq!(random.ok()["token"].as_str().unwrap().len(), 8);
    app.post(
        &format!("{base}/new"),
        json!({ "token": "welcome" }),
        Some(&admin),
    )
    .await
    .assert_error(400, "M_INVALID_PARAM");
    app.post(
        &format!("{base}/new"),
        json!({ "token": "bad token" }),
        Some(&admin),
    )
    .await
    .assert_error(400, "M_INVALID_PARAM");
    app.post(
        &format!("{base}/new"),
        json!({ "uses_allowed": -1 }),
        Some(&admin),
    )
    .await
    .assert_error(400, "M_INVALID_PARAM");

    // Spend it through a registration, then see the count.
    let body = json!({ "username": "newbie", "password": "correct horse battery" });
    let start = app
        .post("/_matrix/client/v3/register", body.clone(), None)
        .await;
    let mut b = body;
    b["auth"] = json!({ "type": "m.login.registration_token", "token": "welcome", "session": start.body["session"] });
    app.post("/_matrix/client/v3/register", b, None).await.ok();
    let got = app.get(&format!("{base}/welcome"), Some(&admin)).await;
    assert_eq!(got.ok()["completed"], 1);
    let valid = app.get(&format!("{base}?valid=true"), Some(&admin)).await;
    assert_eq!(
        valid.ok()["registration_tokens"].as_array().unwrap().len(),
        1,
        "only the random one is still valid"
    );
    let changed = app
        .put(
            &format!("{base}/welcome"),
            json!({ "uses_allowed": null }),
            Some(&admin),
        )
        .await;
    assert_eq!(changed.ok()["uses_allowed"], Value::Null);
    assert_eq!(
        app.get(&format!("{base}?valid=false"), Some(&admin))
            .await
            .ok()["registration_tokens"],
        json!([])
    );
    app.call(
        Method::DELETE,
        &format!("{base}/welcome"),
        None,
        Some(&admin),
    )
    .await
    .ok();
    app.get(&format!("{base}/welcome"), Some(&admin))
        .await
        .assert_error(404, "M_NOT_FOUND");
    app.call(
        Method::DELETE,
        &format!("{base}/welcome"),
        None,
        Some(&admin),
    )
    .await
    .assert_error(404, "M_NOT_FOUND");
}

async fn admin_cli_commands(db: Backend) {
    let app = spawn_with(db, |_| {}).await;
    let out = ok(&vouch(
        &app,
        &[
            "admin",
            "create-user",
            "dora",
            "--password",
            "dora battery staple",
            "--email",
            "Dora@Example.org",
        ],
    ));
    assert!(out.contains("@dora:vouch.test"));
    assert!(
        !vouch(
            &app,
            &[
                "admin",
                "create-user",
                "dora",
                "--password",
                "dora battery staple"
            ]
        )
        .status
        .success(),
        "exists"
    );
    assert!(
        !vouch(&app, &["admin", "create-user", "weak", "--password", "x"])
            .status
            .success(),
        "policy applies"
    );
    let (token, _) = app.login_ok("dora", "dora battery staple").await;

    let before: Value = serde_json::from_str(&ok(&vouch(
        &app,
        &["admin", "show-user", "dora@example.org"],
    )))
    .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    ok(&vouch(
        &app,
        &["admin", "add-3pid", "dora", "msisdn", "+447400123456"],
    ));
    let shown: Value =
        serde_json::from_str(&ok(&vouch(&app, &["admin", "show-user", "+447400123456"]))).unwrap();
    assert_eq!(shown["name"], "@dora:vouch.test");
    assert_eq!(shown["threepids"].as_array().unwrap().len(), 2);
    // The address she had keeps its dates.
    let email = |v: &Value| {
        v["threepids"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["medium"] == "email")
            .cloned()
            .unwrap()
    };
    assert_eq!(email(&shown), email(&before));
    // --config is accepted after the subcommand too.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vouch.toml");
    std::fs::write(&file, "").unwrap();
    let file = file.display().to_string();
    ok(&vouch(
        &app,
        &["admin", "show-user", "dora", "--config", &file],
    ));
    ok(&vouch(
        &app,
        &["admin", "--config", &file, "show-user", "dora"],
    ));
    let by_email: Value = serde_json::from_str(&ok(&vouch(
        &app,
        &["admin", "show-user", "dora@example.org"],
    )))
    .unwrap();
    assert_eq!(by_email["name"], "@dora:vouch.test");
    let by_id: Value = serde_json::from_str(&ok(&vouch(
        &app,
        &["admin", "show-user", "@dora:vouch.test"],
    )))
    .unwrap();
    assert_eq!(by_id["displayname"], "dora");
    ok(&vouch(
        &app,
        &["admin", "remove-3pid", "dora", "email", "dora@example.org"],
    ));
    assert!(
        !vouch(&app, &["admin", "show-user", "dora@example.org"])
            .status
            .success()
    );
    assert!(
        !vouch(
            &app,
            &["admin", "remove-3pid", "dora", "email", "dora@example.org"]
        )
        .status
        .success()
    );

    ok(&vouch(
        &app,
        &[
            "admin",
            "set-password",
            "dora",
            "--password",
            "another battery",
        ],
    ));
    app.get("/_matrix/client/v3/account/whoami", Some(&token))
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");
    app.login_ok("dora", "another battery").await;
    let list = ok(&vouch(&app, &["admin", "registration-token", "list"]));
    assert!(list.starts_with("token"));
}

async fn import_from_a_real_synapse_database(db: Backend) {
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/synapse.db");
    // The fixture was made by Synapse with `pepper: fixture-pepper` (see make_synapse_db.sh).
    let app = spawn_with(db, |c| {
        c.server_name = "synapse.test".into();
        c.password.pepper = "fixture-pepper".into();
    })
    .await;
    let out = ok(&vouch(&app, &["import", "synapse", "--from", fixture]));
    assert!(
        out.contains("imported 4 users (0 already here, left as they are), 3 addresses"),
        "{out}"
    );
    // Idempotent: a second run changes nothing.
    let again = ok(&vouch(&app, &["import", "synapse", "--from", fixture]));
    assert!(
        again.contains("imported 0 users (4 already here, left as they are), 0 addresses"),
        "{again}"
    );

    // Devices and their sessions came along: a client logged in on Synapse stays logged in.
    let mut synapse_db = sqlx::SqliteConnection::connect(&format!("sqlite://{fixture}?mode=ro"))
        .await
        .unwrap();
    let (session, device): (String, String) = sqlx::query_as(
        "SELECT token, device_id FROM access_tokens WHERE user_id = '@bob:synapse.test'",
    )
    .fetch_one(&mut synapse_db)
    .await
    .unwrap();
    let me = app
        .get("/_matrix/client/v3/account/whoami", Some(&session))
        .await;
    assert_eq!(me.ok()["user_id"], "@bob:synapse.test");
    assert_eq!(me.body["device_id"], device.as_str());
    assert!(out.contains("4 devices with their sessions"), "{out}");

    // Synapse's bcrypt hashes (with its pepper) keep working.
    let alice = app.login_ok("alice", "alice password").await.0;
    app.login_ok("bob", "bob password").await;
    app.login("bob", "wrong")
        .await
        .assert_error(403, "M_FORBIDDEN");
    // Synapse removed carol's hash when it deactivated her: nothing proves the password,
    // so the answer is a wrong password's, which does not reveal the deactivation.
    app.login("carol", "carol password")
        .await
        .assert_error(403, "M_FORBIDDEN");
    // Admin flags, profiles and addresses came along.
    let bob = app
        .get("/_synapse/admin/v2/users/@bob:synapse.test", Some(&alice))
        .await;
    assert_eq!(bob.ok()["displayname"], "Bob Builder");
    assert_eq!(bob.body["avatar_url"], "mxc://synapse.test/bob");
    let addresses: Vec<&str> = bob.body["threepids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["address"].as_str().unwrap())
        .collect();
    assert_eq!(addresses, vec!["bob@example.org", "447400123456"]);
    let login = json!({ "type": "m.login.password", "identifier": { "type": "m.id.thirdparty", "medium": "email", "address": "BOB@example.org" }, "password": "bob password" });
    app.post("/_matrix/client/v3/login", login, None).await.ok();

    // A server with another name refuses.
    let other = spawn_with(db, |_| {}).await;
    let refused = vouch(&other, &["import", "synapse", "--from", fixture]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("refusing to mix"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// A Synapse user whose name already exists here is left alone, addresses included (they
/// would let whoever holds them reset the existing account's password); rows Vouch cannot
/// hold safely are refused by name, printed escaped; the rest is imported.
async fn import_never_touches_existing_accounts_and_refuses_bad_rows(db: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("synapse.db");
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/synapse.db");
    for suffix in ["", "-wal", "-shm"] {
        let from = format!("{fixture}{suffix}");
        if std::path::Path::new(&from).exists() {
            std::fs::copy(&from, format!("{}{suffix}", copy.display())).unwrap();
        }
    }
    {
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", copy.display()))
            .await
            .unwrap();
        // A hash that would pin a core for good, and a name that rewrites a terminal.
        sqlx::query("UPDATE users SET password_hash = '$argon2id$v=19$m=1048576,t=4294967295,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g' WHERE name = '@alice:synapse.test'")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query("INSERT INTO users (name, password_hash, creation_ts) SELECT '@' || char(27) || '[2Jevil:synapse.test', password_hash, creation_ts FROM users WHERE name = '@bob:synapse.test'")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let app = spawn_with(db, |c| {
        c.server_name = "synapse.test".into();
        c.password.pepper = "fixture-pepper".into();
    })
    .await;
    // Someone here already is bob.
    app.register("bob", "the local bob's password").await;
    let path = copy.display().to_string();
    let out = vouch(&app, &["import", "synapse", "--from", &path]);
    assert!(!out.status.success(), "refusals make the run fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stderr.contains('\u{1b}') && !stdout.contains('\u{1b}'),
        "raw escape printed"
    );
    assert!(
        stderr.contains("@alice:synapse.test: refused: password hash"),
        "{stderr}"
    );
    assert!(stderr.contains("\\u{1b}[2Jevil"), "{stderr}");
    assert!(stdout.contains("2 refused"), "{stdout}");
    // The local bob keeps his password and has no addresses of the other bob's.
    app.login_ok("bob", "the local bob's password").await;
    app.login("bob", "bob password")
        .await
        .assert_error(403, "M_FORBIDDEN");
    let store = vouch_storage::Db::connect(&app.config.database.url, 2)
        .await
        .unwrap();
    assert!(
        store
            .threepid_owner("email", "bob@example.org")
            .await
            .unwrap()
            .is_none()
    );
    // Alice was refused; dave and carol came in.
    app.login("alice", "alice password")
        .await
        .assert_error(403, "M_FORBIDDEN");
}

async fn metrics_move_with_what_happens(db: Backend) {
    let (app, sink) = crate::helpers::spawn_with_mail(db, |c| {
        c.metrics.listen = "127.0.0.1:0".into();
        c.rate_limits.enabled = true;
        c.rate_limits.login_per_ip = vouch_config::Rate {
            per_second: 0.001,
            burst: 2,
        };
    })
    .await;
    let url = app.metrics_url.clone().expect("metrics are on");
    let scrape = || async {
        app.http
            .get(&url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    // Metrics are process-wide and tests share a process: compare before and after.
    let value = |text: &str, series: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let before = scrape().await;
    app.request_email_token("register", "m@example.org", "s", 1)
        .await
        .ok();
    sink.wait_for(1).await;
    app.login("nobody", "x")
        .await
        .assert_error(403, "M_FORBIDDEN");
    app.login("nobody", "x").await;
    app.login("nobody", "x")
        .await
        .assert_error(429, "M_LIMIT_EXCEEDED");
    app.post(
        "/_matrix/client/v3/register",
        json!({ "username": "mm", "password": "correct horse battery" }),
        None,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = scrape().await;
    for (series, at_least) in [
        (
            "vouch_outbox_messages_total{channel=\"email\",event=\"queued\"}",
            1.0,
        ),
        (
            "vouch_outbox_messages_total{channel=\"email\",event=\"sent\"}",
            1.0,
        ),
        (
            "vouch_validation_sessions_total{event=\"created\",medium=\"email\"}",
            1.0,
        ),
        ("vouch_rate_limited_total{limiter=\"login_per_ip\"}", 1.0),
        (
            "vouch_uia_sessions_total{operation=\"register\",outcome=\"started\"}",
            1.0,
        ),
        (
            "vouch_http_requests_total{endpoint=\"/_matrix/client/v3/login\",method=\"POST\",status=\"403\"}",
            2.0,
        ),
    ] {
        let delta = value(&after, series) - value(&before, series);
        assert!(delta >= at_least, "{series} moved by {delta}:\n{after}");
    }
    assert!(after.contains(
        "vouch_http_request_duration_seconds_bucket{endpoint=\"/_matrix/client/v3/login\""
    ));
    assert!(after.contains("vouch_outbox_pending{channel=\"email\"}"));
    assert!(!after.contains("m@example.org"), "no addresses in labels");
}

async fn housekeeping_removes_exactly_what_expired(db: Backend) {
    let (app, sink) = crate::helpers::spawn_with_mail(db, |c| {
        c.housekeeping.interval = Duration::from_millis(200);
        c.housekeeping.keep_sent_messages = Duration::from_secs(3600);
    })
    .await;
    // State that will expire: a UIA session, a validation session and its (sent) mail, a
    // spent refresh token.
    app.post(
        "/_matrix/client/v3/register",
        json!({ "username": "old", "password": "correct horse battery" }),
        None,
    )
    .await;
    app.request_email_token("register", "old@example.org", "s", 1)
        .await
        .ok();
    sink.wait_for(1).await;
    app.register("keeper", "correct horse battery").await;
    let r = app
        .post("/_matrix/client/v3/login", json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "keeper" }, "password": "correct horse battery", "refresh_token": true }), None)
        .await;
    let refresh = r.ok()["refresh_token"].as_str().unwrap().to_owned();
    app.post(
        "/_matrix/client/v3/refresh",
        json!({ "refresh_token": refresh }),
        None,
    )
    .await
    .ok();

    app.clock.advance(Duration::from_secs(2 * 86_400));
    // Fresh state that must stay.
    let live_uia = app
        .post(
            "/_matrix/client/v3/register",
            json!({ "username": "new", "password": "correct horse battery" }),
            None,
        )
        .await;
    app.request_email_token("register", "new@example.org", "s", 1)
        .await
        .ok();
    sink.wait_for(2).await;
    tokio::time::sleep(Duration::from_millis(800)).await;

    let mut conn = sqlx::AnyConnection::connect(&app.config.database.url)
        .await
        .unwrap();
    let count = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql);
    let uia: Vec<String> = sqlx::query_scalar("SELECT session_id FROM uia_sessions")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        uia,
        vec![live_uia.body["session"].as_str().unwrap().to_owned()],
        "only the live UIA session is left"
    );
    let addresses: Vec<String> = sqlx::query_scalar("SELECT address FROM validation_sessions")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(addresses, vec!["new@example.org"]);
    let outbox: Vec<String> = sqlx::query_scalar("SELECT recipient FROM outbox")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        outbox,
        vec!["new@example.org"],
        "the old sent mail is gone, the new one stays"
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM refresh_tokens WHERE used_at IS NOT NULL")
            .fetch_one(&mut conn)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM refresh_tokens")
            .fetch_one(&mut conn)
            .await
            .unwrap(),
        1,
        "the live refresh token stays"
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM users")
            .fetch_one(&mut conn)
            .await
            .unwrap(),
        1,
        "accounts are never touched"
    );
}
