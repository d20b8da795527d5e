//! The UIA engine across operations: session binding, expiry, order, and the fallback pages.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::helpers::{Backend, spawn, spawn_with};
use crate::on_both_databases;

on_both_databases!(
    sessions_expire_and_stay_with_their_operation,
    stages_in_order_and_flows_from_config,
    fallback_page_completes_terms,
    a_damaged_stored_stage_is_an_error_not_an_empty_result,
);

async fn sessions_expire_and_stay_with_their_operation(db: Backend) {
    let app = spawn(db).await;
    let (user_id, token, _) = app.register("alice", "correct horse battery").await;
    let (_, other_token, _) = app.register("bob", "correct horse battery").await;
    let reg = app
        .post(
            "/_matrix/client/v3/register",
            json!({ "username": "x1", "password": "correct horse battery" }),
            None,
        )
        .await;
    let reg_session = reg.body["session"].clone();

    // A registration session cannot authorise a device deletion...
    let r = app
        .post("/_matrix/client/v3/delete_devices", json!({ "devices": [], "auth": { "type": "m.login.password", "identifier": { "type": "m.id.user", "user": user_id }, "password": "correct horse battery", "session": reg_session } }), Some(&token))
        .await;
    r.assert_error(403, "M_FORBIDDEN");
    // ...and alice's session cannot be finished by bob.
    let mine = app
        .post(
            "/_matrix/client/v3/delete_devices",
            json!({ "devices": [] }),
            Some(&token),
        )
        .await;
    let r = app
        .post("/_matrix/client/v3/delete_devices", json!({ "devices": [], "auth": { "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "bob" }, "password": "correct horse battery", "session": mine.body["session"] } }), Some(&other_token))
        .await;
    r.assert_error(403, "M_FORBIDDEN");

    // After the lifetime the session is gone.
    app.clock.advance(Duration::from_secs(3601));
    let r = app
        .post("/_matrix/client/v3/register", json!({ "username": "x1", "password": "correct horse battery", "auth": { "type": "m.login.dummy", "session": reg_session } }), None)
        .await;
    r.assert_error(400, "M_UNKNOWN");
    // A completed session is spent: it cannot authorise a second action.
    let first = app
        .with_password_uia(
            Method::POST,
            "/_matrix/client/v3/delete_devices",
            json!({ "devices": [] }),
            &token,
            &user_id,
            "correct horse battery",
        )
        .await;
    first.ok();
}

async fn stages_in_order_and_flows_from_config(db: Backend) {
    let app = spawn_with(db, |c| {
        c.uia.flows.insert(
            "delete_devices".into(),
            vec![vec!["m.login.password".into(), "m.login.dummy".into()]],
        );
    })
    .await;
    let (user_id, token, _) = app.register("carol", "correct horse battery").await;
    let start = app
        .post(
            "/_matrix/client/v3/delete_devices",
            json!({ "devices": [] }),
            Some(&token),
        )
        .await;
    assert_eq!(
        start.body["flows"],
        json!([{ "stages": ["m.login.password", "m.login.dummy"] }])
    );
    let session = start.body["session"].clone();
    // Dummy before password is out of order.
    let r = app
        .post(
            "/_matrix/client/v3/delete_devices",
            json!({ "devices": [], "auth": { "type": "m.login.dummy", "session": session } }),
            Some(&token),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.errcode()),
        (401, "M_FORBIDDEN"),
        "{:?}",
        r.body
    );
    let r = app
        .post("/_matrix/client/v3/delete_devices", json!({ "devices": [], "auth": { "type": "m.login.password", "identifier": { "type": "m.id.user", "user": user_id }, "password": "correct horse battery", "session": session } }), Some(&token))
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["completed"], json!(["m.login.password"]));
    let r = app
        .post(
            "/_matrix/client/v3/delete_devices",
            json!({ "devices": [], "auth": { "type": "m.login.dummy", "session": session } }),
            Some(&token),
        )
        .await;
    r.ok();
    // Registration-only stages are refused elsewhere.
    let start = app
        .post(
            "/_matrix/client/v3/delete_devices",
            json!({ "devices": [] }),
            Some(&token),
        )
        .await;
    let r = app
        .post("/_matrix/client/v3/delete_devices", json!({ "devices": [], "auth": { "type": "m.login.terms", "session": start.body["session"] } }), Some(&token))
        .await;
    assert_eq!(r.status, 401);
}

async fn fallback_page_completes_terms(db: Backend) {
    let app = spawn_with(db, |c| {
        c.registration.terms = vec![vouch_config::TermsPolicy {
            id: "tos".into(),
            version: "2".into(),
            lang: "en".into(),
            name: "Terms <of> Service".into(),
            url: "https://example.org/tos".into(),
        }]
    })
    .await;
    let body = json!({ "username": "dora", "password": "correct horse battery" });
    let start = app
        .post("/_matrix/client/v3/register", body.clone(), None)
        .await;
    let session = start.body["session"].as_str().unwrap().to_owned();
    let page_url = format!(
        "{}/_matrix/client/v3/auth/m.login.terms/fallback/web?session={session}",
        app.base
    );
    let page = app.http.get(&page_url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let h = page.headers().clone();
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert!(
        h["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    let html = page.text().await.unwrap();
    assert!(
        html.contains("Terms &lt;of&gt; Service"),
        "names are escaped: {html}"
    );
    assert!(html.contains("<form method=\"post\""));

    let done = app
        .http
        .post(&page_url)
        .form(&[("session", session.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    assert!(done.text().await.unwrap().contains("onAuthDone"));
    // The client finishes with just the session.
    let mut b = body;
    b["auth"] = json!({ "session": session });
    app.post("/_matrix/client/v3/register", b, None).await.ok();

    // Stages without a fallback page are unknown.
    app.get(
        "/_matrix/client/v3/auth/m.login.password/fallback/web?session=x",
        None,
    )
    .await
    .assert_error(404, "M_UNRECOGNIZED");
}

/// A stored stage result that does not parse fails the request (and is logged), instead of
/// quietly counting as an empty result.
async fn a_damaged_stored_stage_is_an_error_not_an_empty_result(db: Backend) {
    let app = spawn(db).await;
    let body = json!({ "username": "damaged", "password": "correct horse battery" });
    let start = app
        .post("/_matrix/client/v3/register", body.clone(), None)
        .await;
    let session = start.body["session"].as_str().unwrap().to_owned();
    let store = vouch_storage::Db::connect(&app.config.database.url, 2)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO uia_stages (session_id, stage, result, completed_at) VALUES ($1, 'm.login.terms', '{not json', 0)",
    )
    .bind(&session)
    .execute(store.pool())
    .await
    .unwrap();
    let mut b = body;
    b["auth"] = json!({ "type": "m.login.dummy", "session": session });
    app.post("/_matrix/client/v3/register", b, None)
        .await
        .assert_error(500, "M_UNKNOWN");
    app.login("damaged", "correct horse battery")
        .await
        .assert_error(403, "M_FORBIDDEN");
}
