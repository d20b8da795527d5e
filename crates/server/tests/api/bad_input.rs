//! Bad input, endpoint by endpoint: never a 500, always the spec's status and errcode.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{Backend, spawn, spawn_with};
use crate::on_both_databases;

on_both_databases!(
    bad_bodies_get_matrix_errors,
    oversized_bodies_are_refused,
    failed_registration_leaves_nothing
);

async fn bad_bodies_get_matrix_errors(db: Backend) {
    let app = spawn(db).await;
    let (user_id, token, _) = app.register("alice", "correct horse battery").await;
    let t = Some(token.as_str());
    let display = format!("/_matrix/client/v3/profile/{user_id}/displayname");
    // (method, path, raw body, needs token, expected status, expected errcode)
    let table: Vec<(Method, String, &'static str, bool, u16, &str)> = vec![
        (
            Method::POST,
            "/_matrix/client/v3/register".into(),
            "{not json",
            false,
            400,
            "M_NOT_JSON",
        ),
        (
            Method::POST,
            "/_matrix/client/v3/register".into(),
            "[1,2]",
            false,
            400,
            "M_BAD_JSON",
        ),
        (
            Method::POST,
            "/_matrix/client/v3/register".into(),
            "\"string\"",
            false,
            400,
            "M_BAD_JSON",
        ),
        (
            Method::POST,
            "/_matrix/client/v3/register".into(),
            r#"{"username": 5, "password": "x"}"#,
            false,
            400,
            "M_BAD_JSON",
        ),
        (
            Method::POST,
            "/_matrix/client/v3/register".into(),
            r#"{"inhibit_login": "yes"}"#,
            false,
            400,
            "M_BAD_JSON",
        ),
        (
            Method::POST,
            "/_matrix/client/v3/login".into(),
            "",
            false,
            400,
            "M_MISSING_PARAM",
        ),
        (
            Method::POST,
            "/_matrix/client/v3/login".into(),
            "nope",
            false,
            400,
            "M_NOT_JSON",
        ),
        (
            Method::POST,
            "/_matrix/client/v3/login".into(),
            r#"{"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}}"#,
            false,
            400,
            "M_MISSING_PARAM",
        ),
        (
            Method::POST,
            "/_matrix/client/v3/login".into(),
            r#"{"type": "m.login.password", "password": "x"}"#,
            false,
            400,
            "M_MISSING_PARAM",
        ),
        (
            Method::POST,
            "/_matrix/client/v3/login".into(),
            r#"{"type": 7}"#,
            false,
            400,
            "M_BAD_JSON",
        ),
        (
            Method::POST,
            "/_matrix/client/v3/refresh".into(),
            r#"{"refresh_token": 1}"#,
            false,
            400,
            "M_BAD_JSON",
        ),
        (
            Method::POST,
            "/_matrix/client/v3/account/password".into(),
            r#"{"new_password": ["x"]}"#,
            true,
            400,
            "M_BAD_JSON",
        ),
        (
            Method::POST,
            "/_matrix/client/v3/account/password".into(),
            "{{",
            true,
            400,
            "M_NOT_JSON",
        ),
        (
            Method::POST,
            "/_matrix/client/v3/account/deactivate".into(),
            r#"{"erase": "please"}"#,
            true,
            400,
            "M_BAD_JSON",
        ),
        (
            Method::POST,
            "/_matrix/client/v3/delete_devices".into(),
            "{}",
            true,
            400,
            "M_MISSING_PARAM",
        ),
        (
            Method::POST,
            "/_matrix/client/v3/delete_devices".into(),
            r#"{"devices": "ABC"}"#,
            true,
            400,
            "M_BAD_JSON",
        ),
        (
            Method::PUT,
            "/_matrix/client/v3/devices/ABC".into(),
            r#"{"display_name": 12}"#,
            true,
            400,
            "M_BAD_JSON",
        ),
        (
            Method::PUT,
            display.clone(),
            r#"{"displayname": {"a": 1}}"#,
            true,
            400,
            "M_BAD_JSON",
        ),
        (Method::PUT, display, "]]", true, 400, "M_NOT_JSON"),
        // A UIA `auth` that is not an object is a bad body, not a 500.
        (
            Method::POST,
            "/_matrix/client/v3/register".into(),
            r#"{"username": "zed", "password": "correct horse battery", "auth": 5}"#,
            false,
            400,
            "M_BAD_JSON",
        ),
        (
            Method::POST,
            "/_matrix/client/v3/register".into(),
            r#"{"username": "zed", "password": "correct horse battery", "auth": {"session": 5}}"#,
            false,
            400,
            "M_BAD_JSON",
        ),
        (
            Method::POST,
            "/_matrix/client/v3/register".into(),
            r#"{"username": "zed", "password": "correct horse battery", "auth": {"session": "nosuchsession", "type": "m.login.dummy"}}"#,
            false,
            400,
            "M_UNKNOWN",
        ),
    ];
    for (method, path, body, needs_token, status, errcode) in table {
        let r = app
            .raw(
                method.clone(),
                &path,
                body,
                if needs_token { t } else { None },
            )
            .await;
        assert_eq!(
            (r.status.as_u16(), r.errcode()),
            (status, errcode),
            "{method} {path} with {body:?} answered {:?}",
            r.body
        );
        assert!(r.body["error"].is_string());
    }
    // A malformed stage inside a valid session is a retryable UIA 401 with an errcode.
    let start = app
        .post(
            "/_matrix/client/v3/register",
            json!({ "username": "zed", "password": "correct horse battery" }),
            None,
        )
        .await;
    let session = start.body["session"].clone();
    let r = app
        .post("/_matrix/client/v3/register", json!({ "username": "zed", "password": "correct horse battery", "auth": { "type": 12, "session": session } }), None)
        .await;
    assert_eq!(
        (r.status.as_u16(), r.errcode()),
        (401, "M_BAD_JSON"),
        "{:?}",
        r.body
    );
    assert_eq!(r.body["session"], session);
}

async fn oversized_bodies_are_refused(db: Backend) {
    // A small limit, so the whole body fits in the socket buffers before the answer comes.
    let app = spawn_with(db, |c| c.http.max_request_bytes = 4096).await;
    let huge = format!("{{\"username\": \"{}\"}}", "a".repeat(8000));
    let r = app
        .send(
            app.http
                .post(format!("{}/_matrix/client/v3/register", app.base))
                .header("content-type", "application/json")
                .body(huge),
        )
        .await;
    r.assert_error(413, "M_TOO_LARGE");
}

async fn failed_registration_leaves_nothing(db: Backend) {
    let app = spawn(db).await;
    // Refused before UIA, refused in UIA: neither leaves an account behind.
    app.post(
        "/_matrix/client/v3/register",
        json!({ "username": "ghost", "password": "short" }),
        None,
    )
    .await
    .assert_error(400, "M_WEAK_PASSWORD");
    let start = app
        .post(
            "/_matrix/client/v3/register",
            json!({ "username": "ghost", "password": "correct horse battery" }),
            None,
        )
        .await;
    assert_eq!(start.status, 401);
    let free = app
        .get("/_matrix/client/v3/register/available?username=ghost", None)
        .await;
    assert_eq!(free.ok()["available"], json!(true));
    app.login("ghost", "correct horse battery")
        .await
        .assert_error(403, "M_FORBIDDEN");
}
