//! Phone-number verification by SMS: wiremock plays Twilio and an operator's webhook; the
//! code is read from the request the fake received and submitted to Vouch's `submit_url`.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{Backend, TestApp, spawn_with};
use crate::on_both_databases;

on_both_databases!(
    register_by_phone_with_twilio,
    password_reset_by_phone_through_a_webhook,
    add_and_remove_numbers,
    wrong_codes_burn_and_codes_expire,
    gateway_failure_then_recovery_delivers_once,
    a_gateway_error_in_any_text_does_not_stop_delivery,
    invalid_numbers_countries_and_policies,
    sms_send_limits,
    flows_with_phone_numbers,
    submit_url_bad_input,
    a_number_taken_meanwhile_is_called_a_phone_number,
);

/// A GB mobile number that the numbering data accepts (Ofcom's drama range does not).
pub(crate) const NUMBER: &str = "07400 123456";
const MSISDN: &str = "447400123456";
pub(crate) const TWILIO_PATH: &str = "/2010-04-01/Accounts/AC123/Messages.json";

/// A server sending SMS through a fake Twilio.
pub(crate) async fn with_twilio(
    db: Backend,
    adjust: impl FnOnce(&mut vouch_config::Config),
) -> (TestApp, MockServer) {
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(TWILIO_PATH))
        .and(header("authorization", "Basic QUMxMjM6dG9r")) // AC123:tok
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({ "sid": "SM1", "status": "queued" })),
        )
        .mount(&twilio)
        .await;
    let uri = twilio.uri();
    let app = spawn_with(db, |c| {
        c.sms.enabled = true;
        c.sms.transport = vouch_config::SmsTransport::Twilio;
        c.sms.twilio.base_url = uri;
        c.sms.twilio.account_sid = "AC123".into();
        c.sms.twilio.auth_token = "tok".into();
        c.sms.twilio.from = "+447400000001".into();
        adjust(c);
    })
    .await;
    (app, twilio)
}

/// Waits until the fake has received `n` requests (at most 15 s) and returns them.
pub(crate) async fn received(fake: &MockServer, n: usize) -> Vec<wiremock::Request> {
    for _ in 0..150 {
        let got = fake.received_requests().await.unwrap_or_default();
        if got.len() >= n {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the SMS gateway did not receive {n} requests");
}

/// The form fields of a Twilio request.
pub(crate) fn form(req: &wiremock::Request) -> std::collections::HashMap<String, String> {
    url::form_urlencoded::parse(&req.body)
        .into_owned()
        .collect()
}

/// The code in a message text.
pub(crate) fn code_in(text: &str) -> String {
    text.split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 6)
        .unwrap_or_else(|| panic!("no code in {text:?}"))
        .to_owned()
}

pub(crate) async fn request_phone_token(
    app: &TestApp,
    kind: &str,
    country: &str,
    number: &str,
    secret: &str,
    attempt: u64,
) -> crate::helpers::Reply {
    app.post(
        &format!("/_matrix/client/v3/{kind}/msisdn/requestToken"),
        json!({ "country": country, "phone_number": number, "client_secret": secret, "send_attempt": attempt }),
        None,
    )
    .await
}

pub(crate) async fn submit(
    app: &TestApp,
    url: &str,
    sid: &Value,
    secret: &str,
    code: &str,
) -> crate::helpers::Reply {
    let res = app
        .http
        .post(url)
        .json(&json!({ "sid": sid, "client_secret": secret, "token": code }))
        .send()
        .await
        .unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.json().await.unwrap_or(Value::Null);
    crate::helpers::Reply {
        status,
        body,
        headers,
    }
}

async fn register_by_phone_with_twilio(db: Backend) {
    let (app, twilio) = with_twilio(db, |_| {}).await;
    let body = json!({ "username": "pat", "password": "correct horse battery" });
    let start = app
        .post("/_matrix/client/v3/register", body.clone(), None)
        .await;
    assert!(
        start.body["flows"]
            .as_array()
            .unwrap()
            .contains(&json!({ "stages": ["m.login.msisdn"] }))
    );
    let session = start.body["session"].clone();

    let r = request_phone_token(&app, "register", "GB", NUMBER, "ps", 1).await;
    let sid = r.ok()["sid"].clone();
    let submit_url = r.body["submit_url"].as_str().unwrap().to_owned();
    assert_eq!(submit_url, format!("{}/_vouch/submit_token", app.base));

    let sent = received(&twilio, 1).await;
    let fields = form(&sent[0]);
    assert_eq!(fields["To"], "+447400123456");
    assert_eq!(fields["From"], "+447400000001");
    let code = code_in(&fields["Body"]);
    assert!(fields["Body"].contains("10 minutes"), "{}", fields["Body"]);

    let mut b = body.clone();
    b["auth"] = json!({ "type": "m.login.msisdn", "session": session, "threepid_creds": { "sid": sid, "client_secret": "ps" } });
    let early = app
        .post("/_matrix/client/v3/register", b.clone(), None)
        .await;
    assert_eq!(
        (early.status.as_u16(), early.errcode()),
        (401, "M_UNAUTHORIZED")
    );

    let wrong = if code == "000000" { "111111" } else { "000000" };
    submit(&app, &submit_url, &sid, "ps", wrong)
        .await
        .assert_error(400, "M_TOKEN_INCORRECT");
    // People type codes with spaces.
    let spaced = format!("{} {}", &code[..3], &code[3..]);
    let ok = submit(&app, &submit_url, &sid, "ps", &spaced).await;
    assert_eq!(ok.ok(), &json!({ "success": true }));

    let r = app.post("/_matrix/client/v3/register", b, None).await;
    let token = r.ok()["access_token"].as_str().unwrap().to_owned();
    let list = app
        .get("/_matrix/client/v3/account/3pid", Some(&token))
        .await;
    assert_eq!(list.ok()["threepids"][0]["medium"], "msisdn");
    assert_eq!(list.body["threepids"][0]["address"], MSISDN);

    // Log in by phone: m.id.phone (as typed, with a country) and m.id.thirdparty (MSISDN).
    for identifier in [
        json!({ "type": "m.id.phone", "country": "GB", "phone": NUMBER }),
        json!({ "type": "m.id.phone", "country": "US", "phone": "+44 7400 123456" }),
        json!({ "type": "m.id.thirdparty", "medium": "msisdn", "address": MSISDN }),
    ] {
        let r = app
            .post("/_matrix/client/v3/login", json!({ "type": "m.login.password", "identifier": identifier, "password": "correct horse battery" }), None)
            .await;
        assert_eq!(r.ok()["user_id"], "@pat:vouch.test", "{identifier}");
    }
    let r = app
        .post("/_matrix/client/v3/login", json!({ "type": "m.login.password", "identifier": { "type": "m.id.phone", "country": "GB", "phone": "07400 999999" }, "password": "correct horse battery" }), None)
        .await;
    r.assert_error(403, "M_FORBIDDEN");
    // The number is taken now.
    request_phone_token(&app, "register", "GB", "+447400123456", "other", 1)
        .await
        .assert_error(400, "M_THREEPID_IN_USE");
}

async fn password_reset_by_phone_through_a_webhook(db: Backend) {
    let hook = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/send"))
        .and(header("authorization", "Bearer hook-secret"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&hook)
        .await;
    let url = format!("{}/send", hook.uri());
    let app = spawn_with(db, |c| {
        c.sms.enabled = true;
        c.sms.transport = vouch_config::SmsTransport::Webhook;
        c.sms.webhook.url = url;
        c.sms
            .webhook
            .headers
            .insert("Authorization".into(), "Bearer hook-secret".into());
    })
    .await;
    // Register with a verified number first.
    let (user_id, token, _) = app.register("quinn", "correct horse battery").await;
    let r = request_phone_token(&app, "account/3pid", "GB", NUMBER, "a1", 1).await;
    let (sid, submit_url) = (
        r.ok()["sid"].clone(),
        r.body["submit_url"].as_str().unwrap().to_owned(),
    );
    let sent = received(&hook, 1).await;
    let payload: Value = serde_json::from_slice(&sent[0].body).unwrap();
    assert_eq!(payload["to"], "+447400123456");
    assert_eq!(payload["sid"], sid);
    submit(
        &app,
        &submit_url,
        &sid,
        "a1",
        &code_in(payload["body"].as_str().unwrap()),
    )
    .await
    .ok();
    app.with_password_uia(
        Method::POST,
        "/_matrix/client/v3/account/3pid/add",
        json!({ "sid": sid, "client_secret": "a1" }),
        &token,
        &user_id,
        "correct horse battery",
    )
    .await
    .ok();

    // Forgotten password: the flows offer the phone, the code resets it.
    let start = app
        .post(
            "/_matrix/client/v3/account/password",
            json!({ "new_password": "fresh battery staple" }),
            None,
        )
        .await;
    assert!(
        start.body["flows"]
            .as_array()
            .unwrap()
            .contains(&json!({ "stages": ["m.login.msisdn"] })),
        "{:?}",
        start.body
    );
    request_phone_token(&app, "account/password", "GB", "07400 999999", "r1", 1)
        .await
        .assert_error(400, "M_THREEPID_NOT_FOUND");
    let r = request_phone_token(&app, "account/password", "GB", NUMBER, "r1", 1).await;
    let sid = r.ok()["sid"].clone();
    let sent = received(&hook, 2).await;
    let payload: Value = serde_json::from_slice(&sent[1].body).unwrap();
    submit(
        &app,
        &submit_url,
        &sid,
        "r1",
        &code_in(payload["body"].as_str().unwrap()),
    )
    .await
    .ok();
    let reset = app
        .post(
            "/_matrix/client/v3/account/password",
            json!({ "new_password": "fresh battery staple", "auth": { "type": "m.login.msisdn", "session": start.body["session"], "threepid_creds": { "sid": sid, "client_secret": "r1" } } }),
            None,
        )
        .await;
    reset.ok();
    app.get("/_matrix/client/v3/account/whoami", Some(&token))
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");
    app.login_ok("quinn", "fresh battery staple").await;
}

async fn add_and_remove_numbers(db: Backend) {
    let (app, twilio) = with_twilio(db, |_| {}).await;
    let (user_id, token, _) = app.register("ria", "correct horse battery").await;
    let r = request_phone_token(&app, "account/3pid", "DE", "0151 23456789", "n1", 1).await;
    let (sid, url) = (
        r.ok()["sid"].clone(),
        r.body["submit_url"].as_str().unwrap().to_owned(),
    );
    let code = code_in(&form(&received(&twilio, 1).await[0])["Body"]);
    app.post(
        "/_matrix/client/v3/account/3pid/add",
        json!({ "sid": sid, "client_secret": "n1" }),
        Some(&token),
    )
    .await
    .assert_error(400, "M_THREEPID_AUTH_FAILED");
    submit(&app, &url, &sid, "n1", &code).await.ok();
    app.with_password_uia(
        Method::POST,
        "/_matrix/client/v3/account/3pid/add",
        json!({ "sid": sid, "client_secret": "n1" }),
        &token,
        &user_id,
        "correct horse battery",
    )
    .await
    .ok();
    let list = app
        .get("/_matrix/client/v3/account/3pid", Some(&token))
        .await;
    assert_eq!(list.ok()["threepids"][0]["address"], "4915123456789");
    let del = app
        .post(
            "/_matrix/client/v3/account/3pid/delete",
            json!({ "medium": "msisdn", "address": "+4915123456789" }),
            Some(&token),
        )
        .await;
    assert_eq!(del.ok()["id_server_unbind_result"], "no-support");
    assert_eq!(
        app.get("/_matrix/client/v3/account/3pid", Some(&token))
            .await
            .ok()["threepids"],
        json!([])
    );
}

async fn wrong_codes_burn_and_codes_expire(db: Backend) {
    let (app, twilio) = with_twilio(db, |c| c.sms.max_attempts = 3).await;
    let r = request_phone_token(&app, "register", "GB", NUMBER, "w", 1).await;
    let (sid, url) = (
        r.ok()["sid"].clone(),
        r.body["submit_url"].as_str().unwrap().to_owned(),
    );
    let code = code_in(&form(&received(&twilio, 1).await[0])["Body"]);
    let wrong = if code == "000000" { "111111" } else { "000000" };
    submit(&app, &url, &sid, "w", wrong)
        .await
        .assert_error(400, "M_TOKEN_INCORRECT");
    submit(&app, &url, &sid, "w", wrong)
        .await
        .assert_error(400, "M_TOKEN_INCORRECT");
    // The third wrong code burns the session; the right one is refused afterwards.
    submit(&app, &url, &sid, "w", wrong)
        .await
        .assert_error(400, "M_TOKEN_INCORRECT");
    submit(&app, &url, &sid, "w", &code)
        .await
        .assert_error(400, "M_SESSION_EXPIRED");
    // A resend does not revive it.
    request_phone_token(&app, "register", "GB", NUMBER, "w", 2)
        .await
        .ok();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(twilio.received_requests().await.unwrap().len(), 1);

    // Codes expire after code_lifetime (10 minutes).
    let r = request_phone_token(&app, "register", "GB", "07400 654321", "x", 1).await;
    let sid = r.ok()["sid"].clone();
    let code = code_in(&form(&received(&twilio, 2).await[1])["Body"]);
    app.clock.advance(Duration::from_secs(601));
    submit(&app, &url, &sid, "x", &code)
        .await
        .assert_error(400, "M_SESSION_EXPIRED");
    // A wrong client secret never finds the session.
    submit(&app, &url, &sid, "not-x", &code)
        .await
        .assert_error(400, "M_INVALID_PARAM");
}

async fn gateway_failure_then_recovery_delivers_once(db: Backend) {
    let twilio = MockServer::start().await;
    // The first call fails with 503, the next ones succeed.
    Mock::given(method("POST"))
        .and(path(TWILIO_PATH))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&twilio)
        .await;
    Mock::given(method("POST"))
        .and(path(TWILIO_PATH))
        .respond_with(ResponseTemplate::new(201))
        .with_priority(2)
        .mount(&twilio)
        .await;
    let uri = twilio.uri();
    let app = spawn_with(db, |c| {
        c.sms.enabled = true;
        c.sms.transport = vouch_config::SmsTransport::Twilio;
        c.sms.twilio.base_url = uri;
        c.sms.twilio.account_sid = "AC123".into();
        c.sms.twilio.auth_token = "tok".into();
        c.sms.twilio.messaging_service_sid = "MG9".into();
    })
    .await;
    // The request answers at once although the gateway fails.
    let r = request_phone_token(&app, "register", "GB", NUMBER, "g", 1).await;
    r.ok();
    received(&twilio, 1).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        twilio.received_requests().await.unwrap().len(),
        1,
        "no retry before the backoff"
    );
    app.clock.advance(Duration::from_secs(30));
    let got = received(&twilio, 2).await;
    assert_eq!(form(&got[1])["MessagingServiceSid"], "MG9");
    app.clock.advance(Duration::from_secs(3600));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        twilio.received_requests().await.unwrap().len(),
        2,
        "delivered once, not again"
    );
}

/// A gateway that fails with a multi-byte character at byte 300 of its answer, behind a URL
/// with credentials, echoing the code: the worker records the failure (without the
/// credentials or the code), keeps delivering other messages, and retries this one.
async fn a_gateway_error_in_any_text_does_not_stop_delivery(db: Backend) {
    let hook = MockServer::start().await;
    let echo = format!("{}é rejected 'Your code is 123456'", "x".repeat(299));
    Mock::given(method("POST"))
        .and(path("/send"))
        .respond_with(ResponseTemplate::new(500).set_body_string(echo))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&hook)
        .await;
    Mock::given(method("POST"))
        .and(path("/send"))
        .respond_with(ResponseTemplate::new(200))
        .with_priority(2)
        .mount(&hook)
        .await;
    let url = hook.uri().replace("http://", "http://relay:hunter2@") + "/send?key=s3cret";
    let app = spawn_with(db, |c| {
        c.sms.enabled = true;
        c.sms.transport = vouch_config::SmsTransport::Webhook;
        c.sms.webhook.url = url;
    })
    .await;
    request_phone_token(&app, "register", "GB", NUMBER, "first", 1)
        .await
        .ok();
    received(&hook, 1).await;
    // The worker is still alive: the next message goes out at once.
    request_phone_token(&app, "register", "GB", "07400 654321", "second", 1)
        .await
        .ok();
    let got = received(&hook, 2).await;
    let to: Value = serde_json::from_slice(&got[1].body).unwrap();
    assert_eq!(to["to"], "+447400654321");
    // The failure was kept without the credentials or the code.
    let store = vouch_storage::Db::connect(&app.config.database.url, 2)
        .await
        .unwrap();
    let errors: Vec<(String,)> =
        sqlx::query_as("SELECT last_error FROM outbox WHERE last_error IS NOT NULL")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let error = &errors[0].0;
    assert!(error.contains("HTTP 500"), "{error}");
    for secret in ["hunter2", "s3cret", "123456"] {
        assert!(
            !error.contains(secret),
            "{secret} kept in last_error: {error}"
        );
    }
    // The failed one is retried after its backoff and delivered.
    app.clock.advance(Duration::from_secs(30));
    received(&hook, 3).await;
    // Delivered messages keep no code: their bodies are gone from the outbox.
    let mut kept = Vec::new();
    for _ in 0..50 {
        kept = sqlx::query_as::<_, (String,)>(
            "SELECT message FROM outbox WHERE sent_at IS NULL OR message <> ''",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        if kept.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(kept.is_empty(), "bodies kept after delivery: {kept:?}");
}

async fn invalid_numbers_countries_and_policies(db: Backend) {
    let (app, _twilio) = with_twilio(db, |c| {
        c.sms.denied_countries = vec!["DE".into()];
    })
    .await;
    for kind in ["register", "account/password", "account/3pid"] {
        request_phone_token(&app, kind, "XX", NUMBER, "s", 1)
            .await
            .assert_error(400, "M_INVALID_PARAM");
        request_phone_token(&app, kind, "GB", "123", "s", 1)
            .await
            .assert_error(400, "M_INVALID_PARAM");
        request_phone_token(&app, kind, "GB", "07700 900123", "s", 1)
            .await
            .assert_error(400, "M_INVALID_PARAM");
        request_phone_token(&app, kind, "GB", "call me maybe", "s", 1)
            .await
            .assert_error(400, "M_INVALID_PARAM");
        request_phone_token(&app, kind, "DE", "0151 23456789", "s", 1)
            .await
            .assert_error(403, "M_THREEPID_DENIED");
        app.post(
            &format!("/_matrix/client/v3/{kind}/msisdn/requestToken"),
            json!({ "country": "GB", "client_secret": "s", "send_attempt": 1 }),
            None,
        )
        .await
        .assert_error(400, "M_MISSING_PARAM");
    }
    let allow_only_gb = spawn_with(db, |c| {
        c.sms.enabled = true;
        c.sms.allowed_countries = vec!["GB".into()];
    })
    .await;
    request_phone_token(&allow_only_gb, "register", "US", "+1 415 555 2671", "s", 1)
        .await
        .assert_error(403, "M_THREEPID_DENIED");
    request_phone_token(&allow_only_gb, "register", "GB", NUMBER, "s", 1)
        .await
        .ok();

    // SMS switched off: the medium is not supported (not "denied").
    let off = spawn_with(db, |_| {}).await;
    request_phone_token(&off, "register", "GB", NUMBER, "s", 1)
        .await
        .assert_error(400, "M_THREEPID_MEDIUM_NOT_SUPPORTED");
}

async fn sms_send_limits(db: Backend) {
    let (app, _twilio) = with_twilio(db, |c| {
        c.rate_limits.enabled = true;
        c.rate_limits.registration_per_ip = vouch_config::Rate {
            per_second: 100.0,
            burst: 100,
        };
        c.rate_limits.sms_per_ip = vouch_config::Rate {
            per_second: 100.0,
            burst: 100,
        };
        c.rate_limits.sms_per_number = vouch_config::Window {
            max: 2,
            window: Duration::from_secs(3600),
        };
        c.rate_limits.sms_per_country = vouch_config::Window {
            max: 3,
            window: Duration::from_secs(3600),
        };
    })
    .await;
    request_phone_token(&app, "register", "GB", NUMBER, "a", 1)
        .await
        .ok();
    request_phone_token(&app, "register", "GB", NUMBER, "b", 1)
        .await
        .ok();
    let r = request_phone_token(&app, "register", "GB", NUMBER, "c", 1).await;
    r.assert_error(429, "M_LIMIT_EXCEEDED");
    assert!(r.body["retry_after_ms"].as_u64().unwrap() > 0);
    // Per country: a third GB number is the country's last this hour.
    request_phone_token(&app, "register", "GB", "07400 222222", "a", 1)
        .await
        .ok();
    request_phone_token(&app, "register", "GB", "07400 333333", "a", 1)
        .await
        .assert_error(429, "M_LIMIT_EXCEEDED");
    // Other countries are not affected.
    request_phone_token(&app, "register", "DE", "0151 23456789", "a", 1)
        .await
        .ok();

    let ip = spawn_with(db, |c| {
        c.sms.enabled = true;
        c.rate_limits.enabled = true;
        c.rate_limits.sms_per_ip = vouch_config::Rate {
            per_second: 0.01,
            burst: 1,
        };
    })
    .await;
    request_phone_token(&ip, "register", "GB", NUMBER, "a", 1)
        .await
        .ok();
    request_phone_token(&ip, "register", "GB", "07400 222222", "a", 1)
        .await
        .assert_error(429, "M_LIMIT_EXCEEDED");
}

async fn flows_with_phone_numbers(db: Backend) {
    let either = spawn_with(db, |c| {
        c.sms.enabled = true;
        c.registration.require_3pid = vec!["email".into(), "msisdn".into()];
    })
    .await;
    let r = either
        .post(
            "/_matrix/client/v3/register",
            json!({ "username": "s", "password": "correct horse battery" }),
            None,
        )
        .await;
    assert_eq!(
        r.body["flows"],
        json!([{ "stages": ["m.login.email.identity"] }, { "stages": ["m.login.msisdn"] }])
    );
    let phone_only = spawn_with(db, |c| {
        c.sms.enabled = true;
        c.registration.require_3pid = vec!["msisdn".into()];
    })
    .await;
    let r = phone_only
        .post(
            "/_matrix/client/v3/register",
            json!({ "username": "s", "password": "correct horse battery" }),
            None,
        )
        .await;
    assert_eq!(r.body["flows"], json!([{ "stages": ["m.login.msisdn"] }]));
    let optional = spawn_with(db, |c| c.sms.enabled = true).await;
    let r = optional
        .post(
            "/_matrix/client/v3/register",
            json!({ "username": "s", "password": "correct horse battery" }),
            None,
        )
        .await;
    assert_eq!(
        r.body["flows"],
        json!([{ "stages": ["m.login.dummy"] }, { "stages": ["m.login.email.identity"] }, { "stages": ["m.login.msisdn"] }])
    );
}

async fn submit_url_bad_input(db: Backend) {
    let (app, _twilio) = with_twilio(db, |_| {}).await;
    let url = "/_vouch/submit_token";
    app.post(url, json!({ "client_secret": "x", "token": "1" }), None)
        .await
        .assert_error(400, "M_MISSING_PARAM");
    app.post(
        url,
        json!({ "sid": 5, "client_secret": "x", "token": "1" }),
        None,
    )
    .await
    .assert_error(400, "M_INVALID_PARAM");
    app.post(
        url,
        json!({ "sid": "nosuch", "client_secret": "x", "token": "1" }),
        None,
    )
    .await
    .assert_error(400, "M_INVALID_PARAM");
    app.raw(Method::POST, url, "{oops", None)
        .await
        .assert_error(400, "M_NOT_JSON");
}

/// Two sign-ups verify one number; the second to finish is told the *phone number* is in
/// use (not an email address).
async fn a_number_taken_meanwhile_is_called_a_phone_number(db: Backend) {
    let (app, twilio) = with_twilio(db, |_| {}).await;
    let mut pending = Vec::new();
    for (i, name) in ["first", "second"].into_iter().enumerate() {
        let body = json!({ "username": name, "password": "correct horse battery" });
        let start = app
            .post("/_matrix/client/v3/register", body.clone(), None)
            .await;
        let secret = format!("s-{name}");
        let r = request_phone_token(&app, "register", "GB", NUMBER, &secret, 1).await;
        let (sid, url) = (
            r.ok()["sid"].clone(),
            r.body["submit_url"].as_str().unwrap().to_owned(),
        );
        let code = code_in(&form(&received(&twilio, i + 1).await[i])["Body"]);
        submit(&app, &url, &sid, &secret, &code).await.ok();
        let mut b = body;
        b["auth"] = json!({ "type": "m.login.msisdn", "session": start.body["session"], "threepid_creds": { "sid": sid, "client_secret": secret } });
        pending.push(b);
    }
    app.post("/_matrix/client/v3/register", pending[0].clone(), None)
        .await
        .ok();
    let late = app
        .post("/_matrix/client/v3/register", pending[1].clone(), None)
        .await;
    assert_eq!(late.status.as_u16(), 401, "{:?}", late.body);
    assert_eq!(late.body["errcode"], "M_THREEPID_IN_USE");
    assert!(
        late.body["error"]
            .as_str()
            .unwrap()
            .contains("phone number"),
        "{:?}",
        late.body
    );
}
