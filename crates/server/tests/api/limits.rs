//! Limits an attacker meets on every path (issue 11): password hashing bounded and limited
//! in every UIA password stage, login limits that reveal nothing, registration tokens and
//! UIA sessions that cannot be guessed or flooded, client addresses that cannot be forged,
//! and logins that cannot outrun a deactivation. Each test failed before its fix.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::email::register_with_email;
use crate::helpers::{Backend, spawn_with, spawn_with_mail};
use crate::on_both_databases;
use crate::race::{Held, count, release_together};

on_both_databases!(
    uia_password_stages_share_the_login_limits,
    password_hashing_is_bounded,
    login_limits_reveal_no_owner,
    registration_tokens_cannot_be_guessed_through_the_fallback_page,
    anonymous_uia_sessions_are_limited,
    forged_forwarded_for_does_not_pick_the_key,
    username_availability_is_limited,
    logins_racing_a_deactivation_keep_no_token,
    uia_sessions_are_bound_to_their_request,
    small_ones,
    made_up_methods_add_no_series,
    a_reused_refresh_token_ends_the_session,
    device_fields_are_bounded,
    housekeeping_keeps_up_with_a_flood,
    every_identifier_of_an_account_shares_its_guess_budget,
    a_request_naming_two_tokens_is_refused,
);

const DEACTIVATE: &str = "/_matrix/client/v3/account/deactivate";

/// A password stage in one request (no session yet), as an attacker sends it.
fn deactivate_with_password(user: &str, password: &str) -> Value {
    json!({ "auth": {
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user },
        "password": password,
    }})
}

fn rate(per_second: f64, burst: u32) -> vouch_config::Rate {
    vouch_config::Rate { per_second, burst }
}

/// Every limit on, generous, so a test can tighten just the one it checks.
fn generous(c: &mut vouch_config::Config) {
    c.rate_limits.enabled = true;
    let r = &mut c.rate_limits;
    for limit in [
        &mut r.login_per_ip,
        &mut r.login_per_account,
        &mut r.failed_login_per_account,
        &mut r.registration_per_ip,
        &mut r.email_per_ip,
        &mut r.sms_per_ip,
        &mut r.uia_sessions_per_ip,
        &mut r.username_available_per_ip,
    ] {
        *limit = rate(100.0, 1000);
    }
}

/// `/account/deactivate` without a token checks a password per request: the login limits
/// apply there too.
async fn uia_password_stages_share_the_login_limits(db: Backend) {
    let app = spawn_with(db, |c| {
        generous(c);
        c.rate_limits.login_per_ip = rate(0.01, 3);
    })
    .await;
    for i in 0..3 {
        let r = app
            .post(
                DEACTIVATE,
                deactivate_with_password(&format!("nobody{i}"), "x"),
                None,
            )
            .await;
        assert_eq!(r.status, 401, "{:?}", r.body);
        assert_eq!(r.body["errcode"], "M_FORBIDDEN");
    }
    app.post(DEACTIVATE, deactivate_with_password("nobody9", "x"), None)
        .await
        .assert_error(429, "M_LIMIT_EXCEEDED");
}

/// Many password checks at once: one hash at a time here, each waiting at most 200 ms for
/// its turn; the rest are told to come back, none fails otherwise.
async fn password_hashing_is_bounded(db: Backend) {
    let app = spawn_with(db, |c| {
        c.password.argon2_m_cost_kib = 8192;
        c.password.argon2_t_cost = 8;
        c.password.max_concurrent_hashes = 1;
        c.password.hash_queue_timeout = Duration::from_millis(200);
    })
    .await;
    let requests: Vec<Held> = (0..40)
        .map(|i| {
            Held::post_json(
                DEACTIVATE,
                &deactivate_with_password(&format!("rnd{i}"), "x"),
            )
        })
        .collect();
    let replies = release_together(&app.base, requests).await;
    let limited = count(&replies, 429, "M_LIMIT_EXCEEDED");
    let refused = replies
        .iter()
        .filter(|r| r.status == 401 && r.body["errcode"] == "M_FORBIDDEN")
        .count();
    assert!(limited > 0, "no request waited past the deadline");
    assert!(refused > 0, "no request got its hash");
    assert_eq!(limited + refused, 40, "every answer is one of the two");
}

/// The per-account login limit is keyed on what the login names. Draining the bucket of an
/// address does not touch the owner's (so it cannot tell whose address it is), and an
/// unknown address is limited exactly like a known one.
async fn login_limits_reveal_no_owner(db: Backend) {
    let (app, sink) = spawn_with_mail(db, |c| {
        generous(c);
        c.rate_limits.login_per_account = rate(0.01, 2);
    })
    .await;
    register_with_email(&app, &sink, "owner", "owner@example.org").await;
    let by_email = |address: &'static str| {
        let app = &app;
        async move {
            app.post(
                "/_matrix/client/v3/login",
                json!({ "type": "m.login.password", "identifier": { "type": "m.id.thirdparty", "medium": "email", "address": address }, "password": "wrong" }),
                None,
            )
            .await
        }
    };
    for address in ["owner@example.org", "nobody@example.org"] {
        by_email(address).await.assert_error(403, "M_FORBIDDEN");
        by_email(address).await.assert_error(403, "M_FORBIDDEN");
        by_email(address)
            .await
            .assert_error(429, "M_LIMIT_EXCEEDED");
    }
    // The owner's own bucket is untouched.
    app.login_ok("owner", "correct horse battery").await;
}

/// The fallback page limits token guesses like `/register` does, and a session takes only
/// `max_stage_failures` guesses in all.
async fn registration_tokens_cannot_be_guessed_through_the_fallback_page(db: Backend) {
    let app = spawn_with(db, |c| {
        generous(c);
        c.registration.registration_token_required = true;
        c.uia.max_stage_failures = 4;
    })
    .await;
    let start = app
        .post(
            "/_matrix/client/v3/register",
            json!({ "username": "guesser", "password": "correct horse battery" }),
            None,
        )
        .await;
    let session = start.body["session"].as_str().unwrap().to_owned();
    let page = "/_matrix/client/v3/auth/m.login.registration_token/fallback/web";
    let guess = |token: String| {
        let (app, session) = (&app, session.clone());
        async move {
            let res = app
                .http
                .post(format!("{}{page}?session={session}", app.base))
                .form(&[("session", session.as_str()), ("token", token.as_str())])
                .send()
                .await
                .unwrap();
            res.status().as_u16()
        }
    };
    for i in 0..4 {
        let status = guess(format!("wrong{i}")).await;
        assert!(status == 200 || status == 401 || status == 403, "{status}");
    }
    // The session's guesses are spent: it is refused for good.
    assert_eq!(guess("wrong-again".into()).await, 403);

    // Per address: a fresh session each time, and still limited.
    let app = spawn_with(db, |c| {
        generous(c);
        c.registration.registration_token_required = true;
        c.rate_limits.registration_per_ip = rate(0.01, 3);
    })
    .await;
    let mut statuses = Vec::new();
    for i in 0..3 {
        let start = app
            .post(
                "/_matrix/client/v3/register",
                json!({ "username": format!("g{i}"), "password": "correct horse battery" }),
                None,
            )
            .await;
        let Some(session) = start.body["session"].as_str() else {
            statuses.push(start.status.as_u16());
            continue;
        };
        let res = app
            .http
            .post(format!("{}{page}?session={session}", app.base))
            .form(&[("session", session), ("token", "nope")])
            .send()
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
    }
    assert!(statuses.contains(&429), "{statuses:?}");
}

/// `POST /account/deactivate {}` stores a session each time: limited per address.
async fn anonymous_uia_sessions_are_limited(db: Backend) {
    let app = spawn_with(db, |c| {
        generous(c);
        c.rate_limits.uia_sessions_per_ip = rate(0.01, 5);
    })
    .await;
    for _ in 0..5 {
        assert_eq!(app.post(DEACTIVATE, json!({}), None).await.status, 401);
    }
    app.post(DEACTIVATE, json!({}), None)
        .await
        .assert_error(429, "M_LIMIT_EXCEEDED");
    app.post(
        "/_matrix/client/v3/account/password",
        json!({ "new_password": "some new password" }),
        None,
    )
    .await
    .assert_error(429, "M_LIMIT_EXCEEDED");
}

/// Behind a trusted proxy the client is the rightmost untrusted address: writing another
/// leftmost entry on each request does not give a new bucket.
async fn forged_forwarded_for_does_not_pick_the_key(db: Backend) {
    let app = spawn_with(db, |c| {
        generous(c);
        c.http.x_forwarded = true;
        c.rate_limits.login_per_ip = rate(0.01, 2);
    })
    .await;
    let mut statuses = Vec::new();
    for i in 0..3 {
        let res = app
            .http
            .post(format!("{}/_matrix/client/v3/login", app.base))
            .header("X-Forwarded-For", format!("10.9.9.{i}, 198.51.100.7"))
            .json(&json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "x" }, "password": "y" }))
            .send()
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
    }
    assert_eq!(statuses, vec![403, 403, 429]);
    // Another client behind the same proxy has its own bucket.
    let res = app
        .http
        .post(format!("{}/_matrix/client/v3/login", app.base))
        .header("X-Forwarded-For", "198.51.100.8")
        .json(&json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "x" }, "password": "y" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 403);
}

async fn username_availability_is_limited(db: Backend) {
    let app = spawn_with(db, |c| {
        generous(c);
        c.rate_limits.username_available_per_ip = rate(0.01, 5);
    })
    .await;
    for i in 0..5 {
        app.get(
            &format!("/_matrix/client/v3/register/available?username=probe{i}"),
            None,
        )
        .await
        .ok();
    }
    app.get(
        "/_matrix/client/v3/register/available?username=probe9",
        None,
    )
    .await
    .assert_error(429, "M_LIMIT_EXCEEDED");
}

/// Logins released together with the account's deactivation: whichever order they run in,
/// no token survives the deactivation.
async fn logins_racing_a_deactivation_keep_no_token(db: Backend) {
    let app = spawn_with(db, |_| {}).await;
    let (user_id, token, _) = app.register("racer", "correct horse battery").await;
    let login = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "racer" }, "password": "correct horse battery" });
    let mut requests: Vec<Held> = (0..8)
        .map(|_| Held::post_json("/_matrix/client/v3/login", &login))
        .collect();
    requests.insert(
        4,
        Held::post_json(
            DEACTIVATE,
            &deactivate_with_password(&user_id, "correct horse battery"),
        )
        .with_token(&token),
    );
    let replies = release_together(&app.base, requests).await;
    assert_eq!(replies[4].status, 200, "{:?}", replies[4].body);
    for r in replies
        .iter()
        .filter(|r| r.body["access_token"].is_string())
    {
        let t = r.body["access_token"].as_str().unwrap();
        app.get("/_matrix/client/v3/account/whoami", Some(t))
            .await
            .assert_error(401, "M_UNKNOWN_TOKEN");
    }
    app.login("racer", "correct horse battery")
        .await
        .assert_error(403, "M_USER_DEACTIVATED");
}

/// A password change started with one new password cannot be finished with another.
async fn uia_sessions_are_bound_to_their_request(db: Backend) {
    let app = spawn_with(db, |_| {}).await;
    let (user_id, token, _) = app.register("binder", "correct horse battery").await;
    let first = app
        .post(
            "/_matrix/client/v3/account/password",
            json!({ "new_password": "the password shown" }),
            Some(&token),
        )
        .await;
    let session = first.body["session"].clone();
    app.post(
        "/_matrix/client/v3/account/password",
        json!({ "new_password": "another password", "auth": {
            "type": "m.login.password", "session": session,
            "identifier": { "type": "m.id.user", "user": user_id }, "password": "correct horse battery" } }),
        Some(&token),
    )
    .await
    .assert_error(403, "M_FORBIDDEN");
    app.login_ok("binder", "correct horse battery").await;
}

async fn small_ones(db: Backend) {
    let app = spawn_with(db, |_| {}).await;
    let (admin_id, _, _) = app.register("boss", "correct horse battery").await;
    app.register("under_score", "correct horse battery").await;
    app.register("plain", "correct horse battery").await;
    // Token-bearing answers are not cached.
    let r = app.login("plain", "correct horse battery").await;
    assert_eq!(r.headers["cache-control"], "no-store");
    let token = r.body["access_token"].as_str().unwrap().to_owned();
    // `bearer` is as good as `Bearer`.
    let res = app
        .http
        .get(format!("{}/_matrix/client/v3/account/whoami", app.base))
        .header("Authorization", format!("bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    // A password longer than any the policy lets be set is refused before any hashing.
    app.login("plain", &"x".repeat(10_000))
        .await
        .assert_error(403, "M_FORBIDDEN");
    // A login body without `type` is refused before anything parses it.
    app.post(
        "/_matrix/client/v3/login",
        json!({ "identifier": { "type": "m.id.user", "user": "plain" }, "password": "x" }),
        None,
    )
    .await
    .assert_error(400, "M_MISSING_PARAM");

    // Admins: no self-demotion or self-deactivation; search text is literal.
    let store = vouch_storage::Db::connect(&app.config.database.url, 2)
        .await
        .unwrap();
    store.set_admin(&admin_id, true).await.unwrap();
    let admin = app.login_ok("boss", "correct horse battery").await.0;
    let me = format!("/_synapse/admin/v2/users/{admin_id}");
    app.put(&me, json!({ "admin": false }), Some(&admin))
        .await
        .assert_error(400, "M_UNKNOWN");
    app.put(&me, json!({ "deactivated": true }), Some(&admin))
        .await
        .assert_error(400, "M_UNKNOWN");
    app.post(
        &format!("/_synapse/admin/v1/deactivate/{admin_id}"),
        json!({}),
        Some(&admin),
    )
    .await
    .assert_error(400, "M_UNKNOWN");
    let found = app
        .get("/_synapse/admin/v2/users?name=_", Some(&admin))
        .await;
    let names: Vec<&str> = found.ok()["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["@under_score:vouch.test"], "{found:?}");
}

/// Made-up HTTP methods never become metric labels.
async fn made_up_methods_add_no_series(db: Backend) {
    let app = spawn_with(db, |c| c.metrics.listen = "127.0.0.1:0".into()).await;
    for i in 0..30 {
        let method = Method::from_bytes(format!("BREW{i}").as_bytes()).unwrap();
        app.http
            .request(method, format!("{}/_matrix/client/versions", app.base))
            .send()
            .await
            .unwrap();
    }
    let text = app
        .http
        .get(app.metrics_url.clone().unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains("BREW"), "a made-up method became a label");
    assert!(text.contains("method=\"other\""));
}

/// A refresh token presented a second time was copied: the device is logged out, so the
/// copy and the original both stop working.
async fn a_reused_refresh_token_ends_the_session(db: Backend) {
    let app = spawn_with(db, |c| {
        generous(c);
        c.rate_limits.refresh_per_ip = rate(0.01, 3);
    })
    .await;
    app.register("refresher", "correct horse battery").await;
    let login = app
        .post(
            "/_matrix/client/v3/login",
            json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "refresher" }, "password": "correct horse battery", "refresh_token": true }),
            None,
        )
        .await;
    let first = login.ok()["refresh_token"].as_str().unwrap().to_owned();
    let next = app
        .post(
            "/_matrix/client/v3/refresh",
            json!({ "refresh_token": first }),
            None,
        )
        .await;
    let (access, second) = (
        next.ok()["access_token"].as_str().unwrap().to_owned(),
        next.body["refresh_token"].as_str().unwrap().to_owned(),
    );
    app.get("/_matrix/client/v3/account/whoami", Some(&access))
        .await
        .ok();
    // The thief replays the first token.
    app.post(
        "/_matrix/client/v3/refresh",
        json!({ "refresh_token": first }),
        None,
    )
    .await
    .assert_error(401, "M_UNKNOWN_TOKEN");
    app.get("/_matrix/client/v3/account/whoami", Some(&access))
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");
    app.post(
        "/_matrix/client/v3/refresh",
        json!({ "refresh_token": second }),
        None,
    )
    .await
    .assert_error(401, "M_UNKNOWN_TOKEN");
    // And /refresh is limited per address.
    app.post(
        "/_matrix/client/v3/refresh",
        json!({ "refresh_token": "nope" }),
        None,
    )
    .await
    .assert_error(429, "M_LIMIT_EXCEEDED");
}

/// Device IDs and names a client chooses are bounded before anything is stored.
async fn device_fields_are_bounded(db: Backend) {
    let app = spawn_with(db, |c| c.account.max_devices_per_user = 2).await;
    app.register("devicer", "correct horse battery").await;
    let login = |device_id: String, name: String| {
        let app = &app;
        async move {
            app.post(
                "/_matrix/client/v3/login",
                json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "devicer" }, "password": "correct horse battery", "device_id": device_id, "initial_device_display_name": name }),
                None,
            )
            .await
        }
    };
    login("D".repeat(256), "phone".into())
        .await
        .assert_error(400, "M_INVALID_PARAM");
    login("DEV1".into(), "n".repeat(101))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    // A NUL is refused alike on both databases (PostgreSQL cannot store it).
    login("DEV1".into(), "my\u{0}phone".into())
        .await
        .assert_error(400, "M_INVALID_PARAM");
    login("DEV1".into(), "n".repeat(100)).await.ok();
    // Two devices here (registration's and DEV1): a third is one too many; logging in
    // again on a device the account has is fine.
    login("DEV2".into(), "x".into())
        .await
        .assert_error(403, "M_FORBIDDEN");
    login("DEV1".into(), "x".into()).await.ok();
    app.post(
        "/_matrix/client/v3/register",
        json!({ "username": "big", "password": "correct horse battery", "device_id": "x".repeat(1 << 16) }),
        None,
    )
    .await
    .assert_error(400, "M_INVALID_PARAM");
}

/// A flood of stored UIA sessions is cleared at once, not `50 × batch_size` rows per
/// `interval`: a run that leaves a backlog is followed by another straight away.
async fn housekeeping_keeps_up_with_a_flood(db: Backend) {
    let app = spawn_with(db, |c| {
        c.housekeeping.interval = Duration::from_secs(2);
        c.housekeeping.batch_size = 2;
    })
    .await;
    let requests: Vec<Held> = (0..300)
        .map(|_| Held::post_json(DEACTIVATE, &json!({})))
        .collect();
    for chunk in requests.chunks(100) {
        release_together(&app.base, chunk.to_vec()).await;
    }
    let store = vouch_storage::Db::connect(&app.config.database.url, 2)
        .await
        .unwrap();
    let count = || async {
        sqlx::query_as::<_, (i64,)>("SELECT COUNT(*) FROM uia_sessions")
            .fetch_one(store.pool())
            .await
            .unwrap()
            .0
    };
    assert_eq!(count().await, 300);
    app.clock.advance(Duration::from_secs(2 * 3600));
    // The first run starts within 2 s; one run removes at most 100 rows here.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(count().await, 0, "the backlog waited for the next interval");
}

/// Guesses through an account's email address and through its user ID draw on one
/// budget: once it is spent, even the right password fails like a wrong one (so the
/// answers say nothing about which account an address belongs to).
async fn every_identifier_of_an_account_shares_its_guess_budget(db: Backend) {
    let (app, sink) = spawn_with_mail(db, |c| {
        generous(c);
        c.rate_limits.failed_login_per_account = rate(0.01, 3);
    })
    .await;
    register_with_email(&app, &sink, "budget", "budget@example.org").await;
    for _ in 0..3 {
        app.post(
            "/_matrix/client/v3/login",
            json!({ "type": "m.login.password", "identifier": { "type": "m.id.thirdparty", "medium": "email", "address": "budget@example.org" }, "password": "wrong" }),
            None,
        )
        .await
        .assert_error(403, "M_FORBIDDEN");
    }
    app.login("budget", "correct horse battery")
        .await
        .assert_error(403, "M_FORBIDDEN");
    // Time refills it.
    app.clock.advance(Duration::from_secs(1000));
    app.login_ok("budget", "correct horse battery").await;
}

/// Two tokens in one request (two headers, or a header and a query parameter): refused,
/// as Synapse does, instead of one being picked.
async fn a_request_naming_two_tokens_is_refused(db: Backend) {
    let app = spawn_with(db, |_| {}).await;
    let (_, token, _) = app.register("twotokens", "correct horse battery").await;
    let url = format!("{}/_matrix/client/v3/account/whoami", app.base);
    let two_headers = app
        .http
        .get(&url)
        .header("Authorization", format!("Bearer {token}"))
        .header("Authorization", "Bearer other")
        .send()
        .await
        .unwrap();
    assert_eq!(two_headers.status().as_u16(), 401);
    let mixed = app
        .http
        .get(format!("{url}?access_token=other"))
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(mixed.status().as_u16(), 401);
    let body: Value = mixed.json().await.unwrap();
    assert_eq!(body["errcode"], "M_MISSING_TOKEN");
    app.get(
        &format!("/_matrix/client/v3/account/whoami?access_token={token}"),
        None,
    )
    .await
    .ok();
}
