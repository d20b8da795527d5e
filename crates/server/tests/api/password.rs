//! Changing passwords and deactivating accounts.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{Backend, spawn};
use crate::on_both_databases;

on_both_databases!(
    change_password_logs_out_other_devices,
    keep_devices_when_asked,
    deactivate_account
);

const PASSWORD: &str = "/_matrix/client/v3/account/password";

async fn change_password_logs_out_other_devices(db: Backend) {
    let app = spawn(db).await;
    let (user_id, token, device) = app.register("alice", "correct horse battery").await;
    let r = app
        .post("/_matrix/client/v3/login", json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" }, "password": "correct horse battery", "refresh_token": true }), None)
        .await;
    let other = r.ok()["access_token"].as_str().unwrap().to_owned();
    let other_refresh = r.body["refresh_token"].as_str().unwrap().to_owned();

    // The new password is checked against the policy before UIA starts.
    app.post(PASSWORD, json!({ "new_password": "short" }), Some(&token))
        .await
        .assert_error(400, "M_WEAK_PASSWORD");
    app.post(PASSWORD, json!({}), Some(&token))
        .await
        .assert_error(400, "M_MISSING_PARAM");

    let done = app
        .with_password_uia(
            Method::POST,
            PASSWORD,
            json!({ "new_password": "new battery staple" }),
            &token,
            &user_id,
            "correct horse battery",
        )
        .await;
    done.ok();
    // The caller's device stays; every other device, access token and refresh token is gone.
    let who = app
        .get("/_matrix/client/v3/account/whoami", Some(&token))
        .await;
    assert_eq!(who.ok()["device_id"], json!(device));
    app.get("/_matrix/client/v3/account/whoami", Some(&other))
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");
    app.post(
        "/_matrix/client/v3/refresh",
        json!({ "refresh_token": other_refresh }),
        None,
    )
    .await
    .assert_error(401, "M_UNKNOWN_TOKEN");
    assert_eq!(
        app.get("/_matrix/client/v3/devices", Some(&token))
            .await
            .ok()["devices"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    app.login("alice", "correct horse battery")
        .await
        .assert_error(403, "M_FORBIDDEN");
    app.login_ok("alice", "new battery staple").await;

    // Without an access token, the password is reset by proving control of an address.
    let reset = app
        .post(
            PASSWORD,
            json!({ "new_password": "another good one" }),
            None,
        )
        .await;
    assert_eq!(reset.status, 401);
    assert_eq!(
        reset.body["flows"],
        json!([{ "stages": ["m.login.email.identity"] }])
    );
}

async fn keep_devices_when_asked(db: Backend) {
    let app = spawn(db).await;
    let (user_id, token, _) = app.register("bob", "correct horse battery").await;
    let (other, _) = app.login_ok("bob", "correct horse battery").await;
    app.with_password_uia(
        Method::POST,
        PASSWORD,
        json!({ "new_password": "new battery staple", "logout_devices": false }),
        &token,
        &user_id,
        "correct horse battery",
    )
    .await
    .ok();
    app.get("/_matrix/client/v3/account/whoami", Some(&other))
        .await
        .ok();
}

async fn deactivate_account(db: Backend) {
    let app = spawn(db).await;
    let (user_id, token, _) = app.register("carol", "correct horse battery").await;
    let (other, _) = app.login_ok("carol", "correct horse battery").await;
    app.put(
        &format!("/_matrix/client/v3/profile/{user_id}/displayname"),
        json!({ "displayname": "Carol" }),
        Some(&token),
    )
    .await
    .ok();

    // A session started for another operation cannot authorise deactivation.
    let pw = app
        .post(
            PASSWORD,
            json!({ "new_password": "new battery staple" }),
            Some(&token),
        )
        .await;
    let foreign_session = pw.body["session"].clone();
    let r = app
        .post(
            "/_matrix/client/v3/account/deactivate",
            json!({ "auth": { "type": "m.login.password", "identifier": { "type": "m.id.user", "user": user_id }, "password": "correct horse battery", "session": foreign_session } }),
            Some(&token),
        )
        .await;
    r.assert_error(403, "M_FORBIDDEN");

    let done = app
        .with_password_uia(
            Method::POST,
            "/_matrix/client/v3/account/deactivate",
            json!({ "erase": true }),
            &token,
            &user_id,
            "correct horse battery",
        )
        .await;
    assert_eq!(done.ok()["id_server_unbind_result"], "success");
    for t in [&token, &other] {
        app.get("/_matrix/client/v3/account/whoami", Some(t))
            .await
            .assert_error(401, "M_UNKNOWN_TOKEN");
    }
    // Only the right password learns that the account is deactivated.
    app.login("carol", "wrong horse battery")
        .await
        .assert_error(403, "M_FORBIDDEN");
    app.login("carol", "correct horse battery")
        .await
        .assert_error(403, "M_USER_DEACTIVATED");
    app.get(&format!("/_matrix/client/v3/profile/{user_id}"), None)
        .await
        .assert_error(404, "M_NOT_FOUND");
    // The name stays taken.
    app.post(
        "/_matrix/client/v3/register",
        json!({ "username": "carol", "password": "correct horse battery" }),
        None,
    )
    .await
    .assert_error(400, "M_USER_IN_USE");
}
