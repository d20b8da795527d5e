//! Devices: list, get, rename, delete with UIA.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{Backend, spawn};
use crate::on_both_databases;

on_both_databases!(device_management);

async fn device_management(db: Backend) {
    let app = spawn(db).await;
    let (user_id, token, first) = app.register("alice", "correct horse battery").await;
    let (other_token, second) = app.login_ok("alice", "correct horse battery").await;
    let (_, third) = app.login_ok("alice", "correct horse battery").await;

    let list = app.get("/_matrix/client/v3/devices", Some(&token)).await;
    let devices = list.ok()["devices"].as_array().unwrap().clone();
    assert_eq!(devices.len(), 3);
    assert!(
        devices
            .iter()
            .all(|d| d["last_seen_ts"].is_u64() && d["last_seen_ip"] == "127.0.0.1"),
        "{devices:?}"
    );

    let path = format!("/_matrix/client/v3/devices/{second}");
    app.put(&path, json!({ "display_name": "Work phone" }), Some(&token))
        .await
        .ok();
    assert_eq!(
        app.get(&path, Some(&token)).await.ok()["display_name"],
        "Work phone"
    );
    app.get("/_matrix/client/v3/devices/NOSUCH", Some(&token))
        .await
        .assert_error(404, "M_NOT_FOUND");
    app.put(
        "/_matrix/client/v3/devices/NOSUCH",
        json!({ "display_name": "x" }),
        Some(&token),
    )
    .await
    .assert_error(404, "M_NOT_FOUND");

    // Deleting needs UIA; a wrong password is a retryable 401 with M_FORBIDDEN.
    let first_try = app
        .call(Method::DELETE, &path, Some(json!({})), Some(&token))
        .await;
    assert_eq!(first_try.status, 401);
    let session = first_try.body["session"].clone();
    let wrong = app
        .call(
            Method::DELETE,
            &path,
            Some(json!({ "auth": { "type": "m.login.password", "identifier": { "type": "m.id.user", "user": user_id }, "password": "nope", "session": session } })),
            Some(&token),
        )
        .await;
    assert_eq!(
        (wrong.status.as_u16(), wrong.errcode()),
        (401, "M_FORBIDDEN"),
        "{:?}",
        wrong.body
    );
    assert_eq!(
        wrong.body["flows"],
        json!([{ "stages": ["m.login.password"] }])
    );
    // Someone else's identity cannot authorise it either.
    let other_user = app
        .call(
            Method::DELETE,
            &path,
            Some(json!({ "auth": { "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "mallory" }, "password": "x", "session": session } })),
            Some(&token),
        )
        .await;
    assert_eq!(other_user.status, 401);
    let deleted = app
        .with_password_uia(
            Method::DELETE,
            &path,
            json!({}),
            &token,
            &user_id,
            "correct horse battery",
        )
        .await;
    deleted.ok();
    app.get("/_matrix/client/v3/account/whoami", Some(&other_token))
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");
    // Deleting a device that is gone is still 200 once authorised.
    app.with_password_uia(
        Method::DELETE,
        &path,
        json!({}),
        &token,
        &user_id,
        "correct horse battery",
    )
    .await
    .ok();

    let bulk = app
        .with_password_uia(
            Method::POST,
            "/_matrix/client/v3/delete_devices",
            json!({ "devices": [third] }),
            &token,
            &user_id,
            "correct horse battery",
        )
        .await;
    bulk.ok();
    let left = app.get("/_matrix/client/v3/devices", Some(&token)).await;
    assert_eq!(left.ok()["devices"].as_array().unwrap().len(), 1);
    assert_eq!(left.body["devices"][0]["device_id"], json!(first));
}
