//! Login, tokens, refresh, logout and rate limits.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{Backend, spawn, spawn_with};
use crate::on_both_databases;

on_both_databases!(
    login_identifiers_and_wrong_credentials,
    tokens_missing_unknown_and_logout,
    refresh_tokens_rotate_and_expire,
    login_is_rate_limited_per_ip_and_account,
    bcrypt_hashes_upgrade_on_login,
);

const LOGIN: &str = "/_matrix/client/v3/login";

async fn login_identifiers_and_wrong_credentials(db: Backend) {
    let app = spawn(db).await;
    app.register("alice", "correct horse battery").await;
    let flows = app.get(LOGIN, None).await;
    assert_eq!(flows.ok()["flows"], json!([{ "type": "m.login.password" }]));

    // m.id.user with localpart, full user ID, any case; legacy top-level `user`.
    for user in ["alice", "@alice:vouch.test", "ALICE"] {
        let r = app.login(user, "correct horse battery").await;
        assert_eq!(r.ok()["user_id"], "@alice:vouch.test");
        assert_eq!(
            r.body["well_known"]["m.homeserver"]["base_url"],
            json!(app.base)
        );
    }
    let legacy = app
        .post(LOGIN, json!({ "type": "m.login.password", "user": "alice", "password": "correct horse battery" }), None)
        .await;
    assert_eq!(legacy.ok()["user_id"], "@alice:vouch.test");

    // A chosen device ID and display name.
    let r = app
        .post(
            LOGIN,
            json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" },
                    "password": "correct horse battery", "device_id": "KITCHEN", "initial_device_display_name": "Tablet" }),
            None,
        )
        .await;
    assert_eq!(r.ok()["device_id"], "KITCHEN");
    let token = r.body["access_token"].as_str().unwrap();
    let dev = app
        .get("/_matrix/client/v3/devices/KITCHEN", Some(token))
        .await;
    assert_eq!(dev.ok()["display_name"], "Tablet");

    // Wrong password, unknown user and a user of another server look alike.
    app.login("alice", "wrong")
        .await
        .assert_error(403, "M_FORBIDDEN");
    app.login("nobody", "correct horse battery")
        .await
        .assert_error(403, "M_FORBIDDEN");
    app.login("@alice:elsewhere.org", "correct horse battery")
        .await
        .assert_error(403, "M_FORBIDDEN");
    // An email nobody has is 403 as the spec requires.
    let r = app
        .post(LOGIN, json!({ "type": "m.login.password", "identifier": { "type": "m.id.thirdparty", "medium": "email", "address": "no@one.org" }, "password": "x" }), None)
        .await;
    r.assert_error(403, "M_FORBIDDEN");
    // Unsupported login types.
    app.post(
        LOGIN,
        json!({ "type": "m.login.token", "token": "abc" }),
        None,
    )
    .await
    .assert_error(400, "M_UNKNOWN");
    app.post(LOGIN, json!({ "type": "m.login.magic" }), None)
        .await
        .assert_error(400, "M_UNKNOWN");
}

async fn tokens_missing_unknown_and_logout(db: Backend) {
    let app = spawn(db).await;
    let (_, token, device) = app.register("bob", "correct horse battery").await;
    let whoami = "/_matrix/client/v3/account/whoami";
    app.get(whoami, None)
        .await
        .assert_error(401, "M_MISSING_TOKEN");
    let unknown = app.get(whoami, Some("vat_notatoken")).await;
    unknown.assert_error(401, "M_UNKNOWN_TOKEN");
    assert_ne!(
        unknown.body["soft_logout"],
        json!(true),
        "an unknown token is a hard logout"
    );
    // The deprecated query parameter still works (v1.19 allows it).
    app.get(&format!("{whoami}?access_token={token}"), None)
        .await
        .ok();

    let (second, second_device) = app.login_ok("bob", "correct horse battery").await;
    app.post("/_matrix/client/v3/logout", json!({}), Some(&token))
        .await
        .ok();
    app.get(whoami, Some(&token))
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");
    let devices = app.get("/_matrix/client/v3/devices", Some(&second)).await;
    let ids: Vec<&str> = devices.ok()["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![second_device.as_str()], "logout removed {device}");

    // An empty body is fine for logout/all, which ends every session.
    let (third, _) = app.login_ok("bob", "correct horse battery").await;
    app.raw(
        reqwest::Method::POST,
        "/_matrix/client/v3/logout/all",
        "",
        Some(&second),
    )
    .await
    .ok();
    app.get(whoami, Some(&second))
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");
    app.get(whoami, Some(&third))
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");
}

async fn refresh_tokens_rotate_and_expire(db: Backend) {
    let app = spawn(db).await;
    app.register("carol", "correct horse battery").await;
    let r = app
        .post(LOGIN, json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "carol" },
                             "password": "correct horse battery", "refresh_token": true }), None)
        .await;
    let b = r.ok().clone();
    assert_eq!(b["expires_in_ms"], json!(300_000));
    let access = b["access_token"].as_str().unwrap();
    let refresh = b["refresh_token"].as_str().unwrap();
    let whoami = "/_matrix/client/v3/account/whoami";
    app.get(whoami, Some(access)).await.ok();

    // After its lifetime the access token is soft-logged-out.
    app.clock.advance(Duration::from_secs(301));
    let expired = app.get(whoami, Some(access)).await;
    expired.assert_error(401, "M_UNKNOWN_TOKEN");
    assert_eq!(expired.body["soft_logout"], json!(true));

    let next = app
        .post(
            "/_matrix/client/v3/refresh",
            json!({ "refresh_token": refresh }),
            None,
        )
        .await;
    let n = next.ok().clone();
    let new_access = n["access_token"].as_str().unwrap();
    assert!(n["refresh_token"].is_string());
    assert_eq!(n["expires_in_ms"], json!(300_000));
    let who = app.get(whoami, Some(new_access)).await;
    assert_eq!(
        who.ok()["device_id"],
        b["device_id"],
        "refreshed tokens stay on the device"
    );
    // A spent refresh token is refused.
    app.post(
        "/_matrix/client/v3/refresh",
        json!({ "refresh_token": refresh }),
        None,
    )
    .await
    .assert_error(401, "M_UNKNOWN_TOKEN");
    app.post("/_matrix/client/v3/refresh", json!({}), None)
        .await
        .assert_error(400, "M_MISSING_PARAM");
}

async fn login_is_rate_limited_per_ip_and_account(db: Backend) {
    let app = spawn_with(db, |c| {
        c.rate_limits.enabled = true;
        c.rate_limits.login_per_ip = vouch_config::Rate {
            per_second: 0.1,
            burst: 4,
        };
        c.rate_limits.failed_login_per_account = vouch_config::Rate {
            per_second: 0.1,
            burst: 2,
        };
        c.rate_limits.registration_per_ip = vouch_config::Rate {
            per_second: 1.0,
            burst: 100,
        };
    })
    .await;
    app.register("dan", "correct horse battery").await;
    app.login("dan", "wrong")
        .await
        .assert_error(403, "M_FORBIDDEN");
    app.login("dan", "wrong")
        .await
        .assert_error(403, "M_FORBIDDEN");
    // Two failures used the account's budget: even the right password waits now.
    let limited = app.login("dan", "correct horse battery").await;
    limited.assert_error(429, "M_LIMIT_EXCEEDED");
    assert!(
        limited.body["retry_after_ms"].as_u64().unwrap() > 0,
        "{:?}",
        limited.body
    );
    assert!(limited.headers.contains_key("retry-after"));
    // The fourth request from this address within the burst, then the address is limited.
    let r = app.login("nobody", "x").await;
    r.assert_error(403, "M_FORBIDDEN");
    app.login("nobody", "x")
        .await
        .assert_error(429, "M_LIMIT_EXCEEDED");
    // Time heals both.
    app.clock.advance(Duration::from_secs(60));
    app.login_ok("dan", "correct horse battery").await;
}

async fn bcrypt_hashes_upgrade_on_login(db: Backend) {
    // Accounts made under bcrypt keep working after the server moves to argon2id.
    let bcrypt_app = spawn_with(db, |c| {
        c.password.scheme = vouch_config::PasswordScheme::Bcrypt
    })
    .await;
    bcrypt_app.register("erin", "correct horse battery").await;
    bcrypt_app.login_ok("erin", "correct horse battery").await;
    let url = bcrypt_app.config.database.url.clone();
    let dir_guard = bcrypt_app;
    let argon_app = spawn_with(db, |c| c.database.url = url.clone()).await;
    let stored = || async {
        use sqlx::Connection as _;
        let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
        let (hash,): (String,) =
            sqlx::query_as("SELECT password_hash FROM users WHERE localpart = 'erin'")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        hash
    };
    assert!(stored().await.starts_with("$2b$"));
    argon_app.login_ok("erin", "correct horse battery").await;
    // The successful login stored a fresh argon2id hash of the same password.
    assert!(
        stored().await.starts_with("$argon2id$"),
        "{}",
        stored().await
    );
    argon_app
        .login("erin", "not it")
        .await
        .assert_error(403, "M_FORBIDDEN");
    argon_app.login_ok("erin", "correct horse battery").await;
    drop(dir_guard);
}
