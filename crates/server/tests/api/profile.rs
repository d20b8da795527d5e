//! Profiles: display name and avatar.

use serde_json::json;

use crate::helpers::{Backend, spawn, spawn_with};
use crate::on_both_databases;

on_both_databases!(profile_round_trip, profile_changes_can_be_disabled);

async fn profile_round_trip(db: Backend) {
    let app = spawn(db).await;
    let (user_id, token, _) = app.register("alice", "correct horse battery").await;
    let (bob, bob_token, _) = app.register("bob", "correct horse battery").await;
    let base = format!("/_matrix/client/v3/profile/{user_id}");
    // A new account starts with its localpart as display name, as Synapse does.
    assert_eq!(app.get(&base, None).await.ok()["displayname"], "alice");

    app.put(
        &format!("{base}/displayname"),
        json!({ "displayname": "Alice <A>" }),
        Some(&token),
    )
    .await
    .ok();
    app.put(
        &format!("{base}/avatar_url"),
        json!({ "avatar_url": "mxc://vouch.test/abc" }),
        Some(&token),
    )
    .await
    .ok();
    let p = app.get(&base, None).await;
    assert_eq!(
        p.ok(),
        &json!({ "displayname": "Alice <A>", "avatar_url": "mxc://vouch.test/abc" })
    );
    assert_eq!(
        app.get(&format!("{base}/displayname"), None).await.ok()["displayname"],
        "Alice <A>"
    );
    assert_eq!(
        app.get(&format!("{base}/avatar_url"), None).await.ok()["avatar_url"],
        "mxc://vouch.test/abc"
    );

    app.put(
        &format!("{base}/avatar_url"),
        json!({ "avatar_url": "https://evil.example/x.png" }),
        Some(&token),
    )
    .await
    .assert_error(400, "M_INVALID_PARAM");
    app.put(
        &format!("{base}/displayname"),
        json!({ "displayname": "x".repeat(300) }),
        Some(&token),
    )
    .await
    .assert_error(400, "M_INVALID_PARAM");
    app.put(
        &format!("{base}/displayname"),
        json!({ "displayname": "Mallory" }),
        Some(&bob_token),
    )
    .await
    .assert_error(403, "M_FORBIDDEN");
    app.put(
        &format!("{base}/displayname"),
        json!({ "displayname": "x" }),
        None,
    )
    .await
    .assert_error(401, "M_MISSING_TOKEN");

    app.get("/_matrix/client/v3/profile/@nobody:vouch.test", None)
        .await
        .assert_error(404, "M_NOT_FOUND");
    app.get("/_matrix/client/v3/profile/@someone:elsewhere.org", None)
        .await
        .assert_error(404, "M_NOT_FOUND");
    app.get("/_matrix/client/v3/profile/not-a-user-id", None)
        .await
        .assert_error(400, "M_INVALID_PARAM");
    assert!(bob.starts_with("@bob:"));
}

async fn profile_changes_can_be_disabled(db: Backend) {
    let app = spawn_with(db, |c| c.account.displayname_change = false).await;
    let (user_id, token, _) = app.register("carol", "correct horse battery").await;
    app.put(
        &format!("/_matrix/client/v3/profile/{user_id}/displayname"),
        json!({ "displayname": "C" }),
        Some(&token),
    )
    .await
    .assert_error(403, "M_FORBIDDEN");
}
