//! Versions, well-known, capabilities, unknown endpoints and CORS.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{Backend, spawn, spawn_with};
use crate::on_both_databases;

on_both_databases!(
    versions_and_well_known,
    unknown_endpoints_and_cors,
    capabilities_follow_config
);

async fn versions_and_well_known(db: Backend) {
    let app = spawn(db).await;
    let v = app.get("/_matrix/client/versions", None).await;
    let versions = v.ok()["versions"].as_array().unwrap().clone();
    for must in ["r0.5.0", "r0.6.0", "r0.6.1", "v1.1", "v1.19"] {
        assert!(
            versions.contains(&json!(must)),
            "{must} missing from {versions:?}"
        );
    }
    assert_eq!(
        v.body["unstable_features"]["m.require_identity_server"],
        json!(false)
    );
    assert_eq!(v.headers["access-control-allow-origin"], "*");

    let wk = app.get("/.well-known/matrix/client", None).await;
    assert_eq!(wk.ok()["m.homeserver"]["base_url"], json!(app.base));
}

async fn unknown_endpoints_and_cors(db: Backend) {
    let app = spawn(db).await;
    // Rooms, sync and federation are out of scope: 404 M_UNRECOGNIZED.
    for path in [
        "/_matrix/client/v3/sync",
        "/_matrix/client/v3/createRoom",
        "/_matrix/federation/v1/version",
        "/nothing",
    ] {
        app.get(path, None)
            .await
            .assert_error(404, "M_UNRECOGNIZED");
    }
    // A known path with the wrong method: 405 M_UNRECOGNIZED.
    app.call(Method::DELETE, "/_matrix/client/v3/login", None, None)
        .await
        .assert_error(405, "M_UNRECOGNIZED");
    app.post("/_matrix/client/versions", json!({}), None)
        .await
        .assert_error(405, "M_UNRECOGNIZED");
    // OPTIONS is answered on every path without running the endpoint, with CORS headers.
    let pre = app
        .call(Method::OPTIONS, "/_matrix/client/v3/register", None, None)
        .await;
    assert!(pre.status.is_success());
    assert_eq!(pre.headers["access-control-allow-origin"], "*");
    let methods = pre.headers["access-control-allow-methods"]
        .to_str()
        .unwrap();
    for m in ["GET", "POST", "PUT", "DELETE", "OPTIONS"] {
        assert!(methods.contains(m), "{methods}");
    }
    let headers = pre.headers["access-control-allow-headers"]
        .to_str()
        .unwrap();
    assert!(
        headers.contains("Authorization") && headers.contains("Content-Type"),
        "{headers}"
    );
    // Errors carry CORS headers too.
    let err = app.get("/_matrix/client/v3/sync", None).await;
    assert_eq!(err.headers["access-control-allow-origin"], "*");
}

async fn capabilities_follow_config(db: Backend) {
    let app = spawn_with(db, |c| {
        c.account.threepid_changes = false;
        c.account.avatar_change = false;
    })
    .await;
    app.get("/_matrix/client/v3/capabilities", None)
        .await
        .assert_error(401, "M_MISSING_TOKEN");
    let (_, token, _) = app.register("carol", "correct horse battery").await;
    let caps = app
        .get("/_matrix/client/v3/capabilities", Some(&token))
        .await;
    let c = &caps.ok()["capabilities"];
    assert_eq!(c["m.change_password"], json!({ "enabled": true }));
    assert_eq!(c["m.3pid_changes"], json!({ "enabled": false }));
    assert_eq!(c["m.set_displayname"], json!({ "enabled": true }));
    assert_eq!(c["m.set_avatar_url"], json!({ "enabled": false }));
    assert_eq!(c["m.profile_fields"]["disallowed"], json!(["avatar_url"]));
    // r0 paths are served as well.
    app.get("/_matrix/client/r0/capabilities", Some(&token))
        .await
        .ok();
}
