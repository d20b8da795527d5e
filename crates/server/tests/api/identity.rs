//! Identity servers: optional and never trusted blindly. wiremock plays the identity server;
//! the tests check what it receives (Bearer tokens, bodies, signed unbind requests verified
//! against the key Vouch publishes) and what clients get when it misbehaves.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use ruma::CanonicalJsonObject;
use ruma::serde::Base64;
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{Backend, TestApp, spawn_with, spawn_with_mail};
use crate::on_both_databases;

on_both_databases!(
    request_modes_ignore_reject_delegate,
    delegated_session_completes_registration,
    bind_and_signed_unbinds,
    unsafe_and_broken_identity_servers,
    operator_delegate_for_phone_numbers,
);

fn requests(mode: &str) -> vouch_config::IdentityServerRequests {
    match mode {
        "reject" => vouch_config::IdentityServerRequests::Reject,
        "delegate" => vouch_config::IdentityServerRequests::Delegate,
        _ => vouch_config::IdentityServerRequests::Ignore,
    }
}

/// `host:port` of a wiremock server, as a client names it.
fn name(is: &MockServer) -> String {
    is.uri().trim_start_matches("http://").to_owned()
}

async fn request_modes_ignore_reject_delegate(db: Backend) {
    let is = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/_matrix/identity/v2/validate/email/requestToken"))
        .and(header("authorization", "Bearer is-token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "sid": "is-sid-1" })))
        .mount(&is)
        .await;
    let body = |id_server: &str| json!({ "email": "d@example.org", "client_secret": "cs", "send_attempt": 1, "id_server": id_server, "id_access_token": "is-token" });
    let path_ = "/_matrix/client/v3/register/email/requestToken";

    // ignore: the named server is never contacted, Vouch sends the mail.
    let (ignore, sink) = spawn_with_mail(db, |c| c.identity_server.trusted = vec![is.uri()]).await;
    let r = ignore.post(path_, body(&name(&is)), None).await;
    assert_ne!(r.ok()["sid"], "is-sid-1");
    sink.wait_for(1).await;
    assert!(is.received_requests().await.unwrap().is_empty());

    // reject: any id_server is refused; without one, Vouch verifies itself.
    let reject = spawn_with(db, |c| c.identity_server.requests = requests("reject")).await;
    reject
        .post(path_, body(&name(&is)), None)
        .await
        .assert_error(400, "M_SERVER_NOT_TRUSTED");
    reject
        .request_email_token("register", "d@example.org", "cs", 1)
        .await
        .ok();

    // delegate: a trusted server gets the request with the client's token; an untrusted one
    // is refused; without id_server, Vouch verifies itself.
    let uri = is.uri();
    let delegate = spawn_with(db, |c| {
        c.identity_server.requests = requests("delegate");
        c.identity_server.trusted = vec![uri];
    })
    .await;
    let r = delegate.post(path_, body(&name(&is)), None).await;
    assert_eq!(r.ok()["sid"], "is-sid-1");
    let got = is.received_requests().await.unwrap();
    assert_eq!(got.len(), 1);
    let sent: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(
        sent,
        json!({ "client_secret": "cs", "email": "d@example.org", "send_attempt": 1 })
    );
    delegate
        .post(path_, body("untrusted.example.org"), None)
        .await
        .assert_error(400, "M_SERVER_NOT_TRUSTED");
    // In every mode, id_server without id_access_token is a missing parameter.
    delegate
        .post(path_, json!({ "email": "d@example.org", "client_secret": "cs", "send_attempt": 1, "id_server": name(&is) }), None)
        .await
        .assert_error(400, "M_MISSING_PARAM");
    delegate
        .request_email_token("register", "local@example.org", "cs", 1)
        .await
        .ok();
    assert_eq!(is.received_requests().await.unwrap().len(), 1);
}

async fn delegated_session_completes_registration(db: Backend) {
    let is = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/_matrix/identity/v2/validate/email/requestToken"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "sid": "is-sid-2" })))
        .mount(&is)
        .await;
    // Not validated at first, then validated.
    Mock::given(method("GET"))
        .and(path("/_matrix/identity/v2/3pid/getValidated3pid"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(json!({ "errcode": "M_SESSION_NOT_VALIDATED", "error": "not yet" })),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&is)
        .await;
    Mock::given(method("GET"))
        .and(path("/_matrix/identity/v2/3pid/getValidated3pid"))
        .and(query_param("sid", "is-sid-2"))
        .and(query_param("client_secret", "cs2"))
        .and(header("authorization", "Bearer is-token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "medium": "email", "address": "Eve@Example.org", "validated_at": 1_767_225_600_000_i64 })))
        .with_priority(2)
        .mount(&is)
        .await;
    let uri = is.uri();
    let app = spawn_with(db, |c| {
        c.identity_server.requests = requests("delegate");
        c.identity_server.trusted = vec![uri];
    })
    .await;
    let id_server = name(&is);
    let sid = app
        .post(
            "/_matrix/client/v3/register/email/requestToken",
            json!({ "email": "eve@example.org", "client_secret": "cs2", "send_attempt": 1, "id_server": id_server, "id_access_token": "is-token" }),
            None,
        )
        .await
        .ok()["sid"]
        .clone();
    let body = json!({ "username": "eve", "password": "correct horse battery" });
    let start = app
        .post("/_matrix/client/v3/register", body.clone(), None)
        .await;
    let mut b = body;
    b["auth"] = json!({ "type": "m.login.email.identity", "session": start.body["session"],
                        "threepid_creds": { "sid": sid, "client_secret": "cs2", "id_server": id_server, "id_access_token": "is-token" } });
    let early = app
        .post("/_matrix/client/v3/register", b.clone(), None)
        .await;
    assert_eq!(
        (early.status.as_u16(), early.errcode()),
        (401, "M_UNAUTHORIZED"),
        "{:?}",
        early.body
    );
    let done = app.post("/_matrix/client/v3/register", b, None).await;
    let token = done.ok()["access_token"].as_str().unwrap().to_owned();
    let list = app
        .get("/_matrix/client/v3/account/3pid", Some(&token))
        .await;
    assert_eq!(
        list.ok()["threepids"][0]["address"],
        "eve@example.org",
        "recorded locally, canonical"
    );
}

/// Fetches Vouch's published key and checks its self-signature.
async fn published_key(app: &TestApp) -> (String, String) {
    let keys = app.get("/_matrix/key/v2/server", None).await;
    let body = keys.ok().clone();
    assert_eq!(body["server_name"], "vouch.test");
    let (key_id, key) = body["verify_keys"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .map(|(k, v)| (k.clone(), v["key"].as_str().unwrap().to_owned()))
        .unwrap();
    assert!(key_id.starts_with("ed25519:"));
    let object: CanonicalJsonObject = serde_json::from_value(body).unwrap();
    let map = key_map(&key_id, &key);
    ruma::signatures::verify_json(&map, &object).expect("the key response is signed with the key");
    (key_id, key)
}

fn key_map(key_id: &str, key: &str) -> ruma::signatures::PublicKeyMap {
    let mut set = BTreeMap::new();
    set.insert(key_id.to_owned(), Base64::parse(key).unwrap());
    let mut map = BTreeMap::new();
    map.insert("vouch.test".to_owned(), set);
    map
}

/// Checks that an unbind request the fake received is signed by Vouch's published key.
fn assert_signed(req: &wiremock::Request, destination: &str, key_id: &str, key: &str) {
    let auth = req
        .headers
        .get("authorization")
        .expect("an Authorization header")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(auth.starts_with("X-Matrix "), "{auth}");
    let field = |k: &str| {
        auth.trim_start_matches("X-Matrix ")
            .split(',')
            .find_map(|p| p.trim().strip_prefix(&format!("{k}=")))
            .map(|v| v.trim_matches('"').to_owned())
            .unwrap_or_else(|| panic!("{k} missing from {auth}"))
    };
    assert_eq!(field("origin"), "vouch.test");
    assert_eq!(field("destination"), destination);
    assert_eq!(field("key"), key_id);
    let content: Value = serde_json::from_slice(&req.body).unwrap();
    let signed = json!({
        "method": "POST",
        "uri": req.url.path(),
        "origin": "vouch.test",
        "destination": destination,
        "content": content,
        "signatures": { "vouch.test": { key_id: field("sig") } },
    });
    let object: CanonicalJsonObject = serde_json::from_value(signed).unwrap();
    ruma::signatures::verify_json(&key_map(key_id, key), &object)
        .expect("the unbind request is signed by the published key");
}

async fn bind_and_signed_unbinds(db: Backend) {
    let is = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/_matrix/identity/v2/3pid/bind"))
        .and(header("authorization", "Bearer bind-token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({ "medium": "email", "address": "fay@example.org", "mxid": "@fay:vouch.test" }),
        ))
        .mount(&is)
        .await;
    Mock::given(method("POST"))
        .and(path("/_matrix/identity/v2/3pid/unbind"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&is)
        .await;
    let uri = is.uri();
    let app = spawn_with(db, |c| c.identity_server.trusted = vec![uri]).await;
    let (key_id, key) = published_key(&app).await;
    let id_server = name(&is);
    let (user_id, token, _) = app.register("fay", "correct horse battery").await;
    let bind = json!({ "sid": "bind-sid", "client_secret": "bcs", "id_server": id_server, "id_access_token": "bind-token" });
    app.post(
        "/_matrix/client/v3/account/3pid/bind",
        bind.clone(),
        Some(&token),
    )
    .await
    .ok();
    let got = is.received_requests().await.unwrap();
    let sent: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(
        sent,
        json!({ "sid": "bind-sid", "client_secret": "bcs", "mxid": user_id })
    );

    // Unbind keeps the address on the account (it was never on it here) and signs the request.
    let r = app
        .post(
            "/_matrix/client/v3/account/3pid/unbind",
            json!({ "medium": "email", "address": "Fay@example.org" }),
            Some(&token),
        )
        .await;
    assert_eq!(r.ok()["id_server_unbind_result"], "success");
    let unbind = is.received_requests().await.unwrap().pop().unwrap();
    assert_signed(&unbind, &id_server, &key_id, &key);
    assert_eq!(
        serde_json::from_slice::<Value>(&unbind.body).unwrap(),
        json!({ "mxid": user_id, "threepid": { "medium": "email", "address": "fay@example.org" } })
    );
    // Nothing is bound any more: no-support.
    let r = app
        .post(
            "/_matrix/client/v3/account/3pid/unbind",
            json!({ "medium": "email", "address": "fay@example.org" }),
            Some(&token),
        )
        .await;
    assert_eq!(r.ok()["id_server_unbind_result"], "no-support");

    // Delete and deactivate unbind what was bound.
    app.post(
        "/_matrix/client/v3/account/3pid/bind",
        bind.clone(),
        Some(&token),
    )
    .await
    .ok();
    let r = app
        .post(
            "/_matrix/client/v3/account/3pid/delete",
            json!({ "medium": "email", "address": "fay@example.org" }),
            Some(&token),
        )
        .await;
    assert_eq!(r.ok()["id_server_unbind_result"], "success");
    app.post("/_matrix/client/v3/account/3pid/bind", bind, Some(&token))
        .await
        .ok();
    let before = is.received_requests().await.unwrap().len();
    let d = app
        .with_password_uia(
            Method::POST,
            "/_matrix/client/v3/account/deactivate",
            json!({}),
            &token,
            &user_id,
            "correct horse battery",
        )
        .await;
    assert_eq!(d.ok()["id_server_unbind_result"], "success");
    let all = is.received_requests().await.unwrap();
    assert_eq!(all.len(), before + 1);
    assert_signed(all.last().unwrap(), &id_server, &key_id, &key);

    // The identity server's errors are passed through.
    let failing = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(
            json!({ "errcode": "M_SESSION_NOT_VALIDATED", "error": "Session not validated" }),
        ))
        .mount(&failing)
        .await;
    let uri = failing.uri();
    let app = spawn_with(db, |c| c.identity_server.trusted = vec![uri]).await;
    let (_, token, _) = app.register("gil", "correct horse battery").await;
    app.post("/_matrix/client/v3/account/3pid/bind", json!({ "sid": "s", "client_secret": "c", "id_server": name(&failing), "id_access_token": "t" }), Some(&token))
        .await
        .assert_error(400, "M_SESSION_NOT_VALIDATED");
    // A failed unbind makes the result no-support.
    let r = app
        .post(
            "/_matrix/client/v3/account/3pid/unbind",
            json!({ "medium": "email", "address": "g@example.org", "id_server": name(&failing) }),
            Some(&token),
        )
        .await;
    assert_eq!(r.ok()["id_server_unbind_result"], "no-support");
}

async fn unsafe_and_broken_identity_servers(db: Backend) {
    let slow = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_delay(Duration::from_secs(5))
                .set_body_json(json!({})),
        )
        .mount(&slow)
        .await;
    let garbage = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>not json"))
        .mount(&garbage)
        .await;
    let huge = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_string(format!(
            "{{\"medium\":\"email\",\"address\":\"{}\"}}",
            "a".repeat(200_000)
        )))
        .mount(&huge)
        .await;
    let port = slow.address().port();
    let (slow_uri, garbage_uri, huge_uri) = (slow.uri(), garbage.uri(), huge.uri());
    let app = spawn_with(db, |c| {
        c.identity_server.timeout = Duration::from_secs(1);
        // A bare name is https and must resolve to a public address: localhost does not.
        c.identity_server.trusted =
            vec![slow_uri, garbage_uri, huge_uri, format!("localhost:{port}")];
    })
    .await;
    let (_, token, _) = app.register("hal", "correct horse battery").await;
    let bind = |id_server: String| json!({ "sid": "s", "client_secret": "c", "id_server": id_server, "id_access_token": "t" });
    let started = std::time::Instant::now();
    let r = app
        .post(
            "/_matrix/client/v3/account/3pid/bind",
            bind(name(&slow)),
            Some(&token),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.errcode()),
        (502, "M_UNKNOWN"),
        "{:?}",
        r.body
    );
    assert!(r.body["error"].as_str().unwrap().contains("in time"));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the timeout holds"
    );
    let r = app
        .post(
            "/_matrix/client/v3/account/3pid/bind",
            bind(name(&garbage)),
            Some(&token),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.errcode()), (502, "M_UNKNOWN"));
    let r = app
        .post(
            "/_matrix/client/v3/account/3pid/bind",
            bind(name(&huge)),
            Some(&token),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.errcode()), (502, "M_UNKNOWN"));
    assert!(r.body["error"].as_str().unwrap().contains("too much"));
    app.post(
        "/_matrix/client/v3/account/3pid/bind",
        bind(format!("localhost:{port}")),
        Some(&token),
    )
    .await
    .assert_error(400, "M_SERVER_NOT_TRUSTED");
    // Names that are not trusted, including private addresses, are never contacted.
    for id_server in [
        "evil.example.org",
        "169.254.169.254",
        "127.0.0.1:1",
        "10.0.0.1",
    ] {
        app.post(
            "/_matrix/client/v3/account/3pid/bind",
            bind(id_server.to_owned()),
            Some(&token),
        )
        .await
        .assert_error(400, "M_SERVER_NOT_TRUSTED");
    }
}

async fn operator_delegate_for_phone_numbers(db: Backend) {
    let is = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/_matrix/identity/v2/validate/msisdn/requestToken"))
        .and(header("authorization", "Bearer operator-token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({ "sid": "msisdn-sid", "submit_url": "https://id.example.org/submit" }),
        ))
        .mount(&is)
        .await;
    Mock::given(method("GET"))
        .and(path("/_matrix/identity/v2/3pid/getValidated3pid"))
        .and(header("authorization", "Bearer operator-token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "medium": "msisdn", "address": "447400123456", "validated_at": 1_767_225_600_000_i64 })))
        .mount(&is)
        .await;
    let uri = is.uri();
    let app = spawn_with(db, |c| {
        c.sms.enabled = true;
        c.identity_server.trusted = vec![uri.clone()];
        c.identity_server.delegate.insert(
            "msisdn".into(),
            vouch_config::OperatorDelegate {
                base_url: uri,
                access_token: "operator-token".into(),
            },
        );
    })
    .await;
    let (user_id, token, _) = app.register("ida", "correct horse battery").await;
    let r = app
        .post("/_matrix/client/v3/account/3pid/msisdn/requestToken", json!({ "country": "GB", "phone_number": "07400 123456", "client_secret": "oc", "send_attempt": 1 }), None)
        .await;
    assert_eq!(r.ok()["sid"], "msisdn-sid");
    assert_eq!(
        r.body["submit_url"], "https://id.example.org/submit",
        "the client submits the code to the identity server"
    );
    let sent: Value =
        serde_json::from_slice(&is.received_requests().await.unwrap()[0].body).unwrap();
    assert_eq!(sent["country"], "GB");
    assert_eq!(sent["phone_number"], "07400 123456");
    // /account/3pid/add asks the identity server with the operator's token.
    app.with_password_uia(
        Method::POST,
        "/_matrix/client/v3/account/3pid/add",
        json!({ "sid": "msisdn-sid", "client_secret": "oc" }),
        &token,
        &user_id,
        "correct horse battery",
    )
    .await
    .ok();
    let list = app
        .get("/_matrix/client/v3/account/3pid", Some(&token))
        .await;
    assert_eq!(list.ok()["threepids"][0]["address"], "447400123456");
}
