//! The storage crate's own contract, query by query, on SQLite and (with
//! `VOUCH_TEST_POSTGRES_URL`) on PostgreSQL: what each conditional statement lets through
//! once and refuses after. The server's tests cover the same through HTTP; these say which
//! query holds which promise.

use sqlx::Connection as _;
use vouch_core::secrets::token_hash;
use vouch_core::validation::Purpose;

use crate::{
    CreateAccountError, Db, ImportedDevice, ImportedToken, ImportedUser, NewAccount, NewLogin,
    NewMessage, NewValidation, Queued, Refreshed, SendLimits, WrongToken,
};

/// Runs `check` on a fresh SQLite database and, when `VOUCH_TEST_POSTGRES_URL` is set, on a
/// fresh PostgreSQL one (`VOUCH_TEST_REQUIRE_ALL=1` makes its absence a failure).
async fn on_both<F, Fut>(check: F)
where
    F: Fn(Db) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = Db::connect(
        &format!("sqlite://{}", dir.path().join("t.db").display()),
        4,
    )
    .await
    .expect("sqlite");
    check(sqlite).await;
    let Some(admin) = std::env::var("VOUCH_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        assert!(
            std::env::var("VOUCH_TEST_REQUIRE_ALL").ok().as_deref() != Some("1"),
            "VOUCH_TEST_REQUIRE_ALL=1 but VOUCH_TEST_POSTGRES_URL is not set"
        );
        return;
    };
    sqlx::any::install_default_drivers();
    let name = format!(
        "vouch_test_storage_{}",
        vouch_core::secrets::random_string(
            &vouch_core::OsSecretSource,
            b"abcdefghijklmnopqrstuvwxyz0123456789",
            12
        )
    );
    let mut conn = sqlx::AnyConnection::connect(&admin)
        .await
        .expect("postgres");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut conn)
        .await
        .expect("create database");
    let mut url = url::Url::parse(&admin).expect("a URL");
    url.set_path(&name);
    let pg = Db::connect(url.as_str(), 4).await.expect("postgres db");
    check(pg.clone()).await;
    pg.close().await;
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await;
}

fn login(device: &str, token: &str, refresh: Option<&str>) -> NewLogin {
    NewLogin {
        device_id: device.into(),
        display_name: None,
        access_token_hash: token_hash(token),
        access_expires_at: None,
        refresh_token_hash: refresh.map(token_hash),
        ip: None,
        oauth_client_id: None,
        oauth_scope: None,
    }
}

fn account(localpart: &str, threepids: Vec<(String, String, i64)>) -> NewAccount {
    NewAccount {
        user_id: format!("@{localpart}:t.test"),
        localpart: localpart.into(),
        password_hash: Some("hash".into()),
        is_guest: false,
        is_admin: false,
        displayname: None,
        login: Some(login(
            &format!("D{localpart}"),
            &format!("tok-{localpart}"),
            Some(&format!("ref-{localpart}")),
        )),
        threepids,
        registration_token: None,
        uia_session: None,
        validations: Vec::new(),
        language: None,
    }
}

#[tokio::test]
async fn create_account_is_all_or_nothing_and_one_name_wins() {
    on_both(|db| async move {
        let email = || vec![("email".to_owned(), "a@t.test".to_owned(), 1)];
        db.create_account(&account("ann", email()), 1)
            .await
            .unwrap();
        assert!(matches!(
            db.create_account(&account("ann", Vec::new()), 2).await,
            Err(CreateAccountError::UserInUse)
        ));
        // The address is held: the second account is not written at all.
        assert!(matches!(
            db.create_account(&account("bea", email()), 3).await,
            Err(CreateAccountError::ThreepidInUse)
        ));
        assert!(db.user("@bea:t.test").await.unwrap().is_none());
        assert!(
            db.access_token(&token_hash("tok-bea"))
                .await
                .unwrap()
                .is_none()
        );
        let info = db
            .access_token(&token_hash("tok-ann"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (info.user_id.as_str(), info.device_id.as_str()),
            ("@ann:t.test", "Dann")
        );
    })
    .await;
}

#[tokio::test]
async fn a_refresh_token_works_once_and_its_reuse_ends_the_device() {
    on_both(|db| async move {
        db.create_account(&account("cid", Vec::new()), 1)
            .await
            .unwrap();
        let first = db
            .refresh(
                &token_hash("ref-cid"),
                &login("ignored", "tok2", Some("ref2")),
                2,
                None,
                false,
            )
            .await
            .unwrap();
        assert!(matches!(first, Refreshed::Done(ref s) if s.device_id == "Dcid"));
        assert!(
            db.access_token(&token_hash("tok-cid"))
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            db.access_token(&token_hash("tok2"))
                .await
                .unwrap()
                .is_some()
        );
        let again = db
            .refresh(
                &token_hash("ref-cid"),
                &login("ignored", "tok3", None),
                3,
                None,
                false,
            )
            .await
            .unwrap();
        assert!(matches!(again, Refreshed::Reused(ref s) if s.device_id == "Dcid"));
        assert!(
            db.access_token(&token_hash("tok2"))
                .await
                .unwrap()
                .is_none()
        );
        assert!(db.devices("@cid:t.test").await.unwrap().is_empty());
        let unknown = db
            .refresh(
                &token_hash("nope"),
                &login("x", "tok4", None),
                4,
                None,
                false,
            )
            .await
            .unwrap();
        assert!(matches!(unknown, Refreshed::Unknown));
    })
    .await;
}

/// With `retry` (the OAuth 2.0 grant), a spent refresh token may be presented again, within
/// a minute, while the pair it bought is unused (the answer was lost); the pair it replaces
/// counts as spent, so whichever side presents it next ends the session.
#[tokio::test]
async fn refresh_with_retry_replaces_an_unused_successor_once() {
    on_both(|db| async move {
        for name in ["rty", "rtz", "rtw"] {
            db.create_account(&account(name, Vec::new()), 1)
                .await
                .unwrap();
        }
        let r = |old: String, tok: &'static str, next: &'static str, at: i64| {
            let db = db.clone();
            async move {
                db.refresh(
                    &token_hash(&old),
                    &login("x", tok, Some(next)),
                    at,
                    None,
                    true,
                )
                .await
                .unwrap()
            }
        };
        let first = |name: &str| format!("ref-{name}");
        assert!(matches!(
            r(first("rty"), "t2", "r2", 2).await,
            Refreshed::Done(_)
        ));
        // The answer with r2 was lost: the first token again gets a fresh pair, and r2's
        // access token is gone.
        assert!(matches!(
            r(first("rty"), "t3", "r3", 3).await,
            Refreshed::Done(_)
        ));
        assert!(db.access_token(&token_hash("t2")).await.unwrap().is_none());
        assert!(db.access_token(&token_hash("t3")).await.unwrap().is_some());
        // r3 is used; the first token once more was copied: the device ends.
        assert!(matches!(
            r("r3".into(), "t4", "r4", 5).await,
            Refreshed::Done(_)
        ));
        assert!(matches!(
            r(first("rty"), "t5", "r5", 6).await,
            Refreshed::Reused(_)
        ));
        assert!(db.devices("@rty:t.test").await.unwrap().is_empty());
        assert!(db.access_token(&token_hash("t4")).await.unwrap().is_none());

        // A thief retried with the first token: the owner's pair it replaced, presented
        // next, ends the session.
        assert!(matches!(
            r(first("rtz"), "z2", "zr2", 2).await,
            Refreshed::Done(_)
        ));
        assert!(matches!(
            r(first("rtz"), "z3", "zr3", 3).await,
            Refreshed::Done(_)
        ));
        assert!(matches!(
            r("zr2".into(), "z4", "zr4", 4).await,
            Refreshed::Reused(_)
        ));
        assert!(db.access_token(&token_hash("z3")).await.unwrap().is_none());

        // After a minute, a spent token is never a retry.
        assert!(matches!(
            r(first("rtw"), "w2", "wr2", 2).await,
            Refreshed::Done(_)
        ));
        assert!(matches!(
            r(
                first("rtw"),
                "w3",
                "wr3",
                2 + crate::devices::REFRESH_RETRY_MS
            )
            .await,
            Refreshed::Reused(_)
        ));
    })
    .await;
}

#[tokio::test]
async fn a_validation_token_validates_once_and_wrong_guesses_are_capped() {
    on_both(|db| async move {
        let new = |sid: &str| NewValidation {
            sid: sid.into(),
            medium: "email".into(),
            address: format!("{sid}@t.test"),
            client_secret: "cs".into(),
            purpose: Purpose::Register,
            token_hash: Some(token_hash("right")),
            token_expires_at: 1_000_000,
            send_attempt: 1,
            next_link: None,
        };
        let message = |sid: &str| NewMessage {
            id: format!("m-{sid}"),
            channel: "email",
            country: None,
            recipient: format!("{sid}@t.test"),
            sid: Some(sid.into()),
            envelope_from: String::new(),
            message: "body".into(),
            held: false,
            stand_in: false,
        };
        for sid in ["s1", "s2"] {
            let queued = db
                .create_validation(&new(sid), &message(sid), &SendLimits::default(), 1)
                .await
                .unwrap();
            assert!(matches!(queued, Queued::Done));
        }
        assert!(
            db.mark_validated("s1", &token_hash("right"), 3, 2)
                .await
                .unwrap()
        );
        assert!(
            !db.mark_validated("s1", &token_hash("right"), 3, 3)
                .await
                .unwrap()
        );
        assert!(
            !db.mark_validated("s2", &token_hash("wrong"), 3, 2)
                .await
                .unwrap()
        );
        let mut outcomes = Vec::new();
        for now in 3..7 {
            outcomes.push(db.spend_wrong_attempt("s2", 3, now).await.unwrap());
        }
        assert!(matches!(outcomes[0], WrongToken::Counted { burned: false }));
        assert!(matches!(outcomes[2], WrongToken::Counted { burned: true }));
        assert!(matches!(outcomes[3], WrongToken::Refused));
        // Burned: the right token no longer validates.
        assert!(
            !db.mark_validated("s2", &token_hash("right"), 3, 8)
                .await
                .unwrap()
        );
    })
    .await;
}

#[tokio::test]
async fn waiting_messages_for_one_recipient_are_claimed_oldest_first_and_once() {
    on_both(|db| async move {
        for (i, id) in ["c", "a", "b"].iter().enumerate() {
            let message = NewMessage {
                id: (*id).into(),
                channel: "homeserver",
                country: None,
                recipient: "dan".into(),
                sid: None,
                envelope_from: String::new(),
                message: format!("{{\"n\":{i}}}"),
                held: false,
                stand_in: false,
            };
            db.enqueue_message(&message, 10 + i64::try_from(i).unwrap())
                .await
                .unwrap();
        }
        // The worker takes one call per user at a time, the oldest.
        let lease = crate::DELIVERY_LEASE_MS;
        let due = db.claim_due_messages(100, lease, 10).await.unwrap();
        let ids: Vec<&str> = due.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["c"]);
        // While it is in flight, nobody claims the user's calls ahead of it…
        let waiting = db
            .claim_waiting_for("homeserver", "dan", 150, 1_000, 15_000)
            .await;
        assert!(waiting.unwrap().is_none());
        // …but a claim older than a call can take is a worker that died with it.
        let claimed = db
            .claim_waiting_for("homeserver", "dan", 100 + 15_001, 1_000, 15_000)
            .await
            .unwrap()
            .unwrap();
        let ids: Vec<&str> = claimed.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["c", "a", "b"]);
        let other = db
            .claim_waiting_for("homeserver", "eve", 300, 1_000, 15_000)
            .await;
        assert!(other.unwrap().unwrap().is_empty());
        // Delivered in order, the worker moves on to the next one only.
        db.mark_message_sent("c", 400).await.unwrap();
        db.release_messages(&["a".to_owned(), "b".to_owned()])
            .await
            .unwrap();
        let due = db.claim_due_messages(20_000, lease, 10).await.unwrap();
        let ids: Vec<&str> = due.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["a"]);
    })
    .await;
}

#[tokio::test]
async fn ended_devices_are_remembered_for_a_window() {
    on_both(|db| async move {
        db.note_ended_devices("@fay:t.test", &["D1".into()], 1_000)
            .await
            .unwrap();
        assert!(
            db.device_ended_after("@fay:t.test", "D1", 999)
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            db.device_ended_after("@fay:t.test", "D1", 1_000)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            db.device_ended_after("@fay:t.test", "D2", 0)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            db.device_ended_after("@gus:t.test", "D1", 0)
                .await
                .unwrap()
                .is_none()
        );
        // Ending it again moves the window.
        db.note_ended_devices("@fay:t.test", &["D1".into()], 5_000)
            .await
            .unwrap();
        assert!(
            db.device_ended_after("@fay:t.test", "D1", 4_999)
                .await
                .unwrap()
                .is_some()
        );
    })
    .await;
}

#[tokio::test]
async fn an_import_brings_devices_and_sessions_and_never_touches_an_existing_account() {
    on_both(|db| async move {
        let imported = |token: &str| ImportedUser {
            user_id: "@hal:t.test".into(),
            localpart: "hal".into(),
            password_hash: None,
            created_at: 1,
            is_admin: false,
            is_guest: false,
            deactivated_at: None,
            displayname: None,
            avatar_url: None,
            threepids: Vec::new(),
            devices: vec![ImportedDevice {
                device_id: "HALDEV".into(),
                tokens: vec![ImportedToken {
                    access_token_hash: token_hash(token),
                    expires_at: None,
                    refresh_token_hash: Some(token_hash("hal-refresh")),
                }],
                ..ImportedDevice::default()
            }],
        };
        let outcome = db.import_user(&imported("syt_hal")).await.unwrap();
        assert!(outcome.created);
        assert_eq!(outcome.devices_added, 1);
        let info = db
            .access_token(&token_hash("syt_hal"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(info.device_id, "HALDEV");
        let again = db.import_user(&imported("syt_other")).await.unwrap();
        assert!(!again.created);
        assert_eq!(again.devices_added, 0);
        assert!(
            db.access_token(&token_hash("syt_other"))
                .await
                .unwrap()
                .is_none()
        );
        // The imported refresh token works like Vouch's own.
        let next = db
            .refresh(
                &token_hash("hal-refresh"),
                &login("x", "hal-next", None),
                5,
                None,
                false,
            )
            .await
            .unwrap();
        assert!(matches!(next, Refreshed::Done(ref s) if s.device_id == "HALDEV"));
    })
    .await;
}

#[tokio::test]
async fn rows_reference_what_they_belong_to() {
    on_both(|db| async move {
        let orphan = sqlx::query(
            "INSERT INTO devices (user_id, device_id, created_at) VALUES ('@nobody:t.test', 'D', 1)",
        )
        .execute(&db.pool)
        .await;
        assert!(orphan.is_err(), "a device needs its user");
        db.create_account(&account("ida", Vec::new()), 1).await.unwrap();
        let stray = sqlx::query(
            "INSERT INTO access_tokens (token_hash, user_id, device_id, created_at) VALUES ('h', '@ida:t.test', 'NOPE', 1)",
        )
        .execute(&db.pool)
        .await;
        assert!(stray.is_err(), "a token needs its device");
        // A device takes its tokens with it.
        sqlx::query("DELETE FROM devices WHERE user_id = '@ida:t.test'")
            .execute(&db.pool)
            .await
            .unwrap();
        assert!(db.access_token(&token_hash("tok-ida")).await.unwrap().is_none());
    })
    .await;
}

#[tokio::test]
async fn a_homeserver_claim_goes_to_one_registration_at_a_time() {
    use crate::HomeserverClaim::{Fresh, TakenOver, UnderWay};
    on_both(|db| async move {
        assert_eq!(
            db.claim_homeserver_user("jo", 1_000, 60_000).await.unwrap(),
            Fresh
        );
        // A second registration while the first is under way.
        assert_eq!(
            db.claim_homeserver_user("jo", 2_000, 60_000).await.unwrap(),
            UnderWay
        );
        // The first ended without an account: the next takes it over, once.
        db.settle_homeserver_user("jo").await.unwrap();
        assert_eq!(
            db.claim_homeserver_user("jo", 3_000, 60_000).await.unwrap(),
            TakenOver
        );
        assert_eq!(
            db.claim_homeserver_user("jo", 3_001, 60_000).await.unwrap(),
            UnderWay
        );
        // One whose client hung up holds the name for the window only.
        assert_eq!(
            db.claim_homeserver_user("jo", 63_001, 60_000)
                .await
                .unwrap(),
            TakenOver
        );
        assert!(db.is_homeserver_user("jo").await.unwrap());
        db.forget_homeserver_user("jo").await.unwrap();
        assert!(!db.is_homeserver_user("jo").await.unwrap());
    })
    .await;
}

/// SQLite's group commit: writes queued together are answered each with its own result,
/// and one that fails is rolled back alone (the batch is run again job by job), never
/// taking the others' writes with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_answers_each_write_and_isolates_a_failing_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::connect(
        &format!("sqlite://{}", dir.path().join("g.db").display()),
        4,
    )
    .await
    .expect("sqlite");
    let group = db.group.clone().expect("SQLite has a group writer");
    let mut writes = tokio::task::JoinSet::new();
    for i in 0..40_i64 {
        let group = group.clone();
        writes.spawn(async move {
            let result = group
                .write(move |conn| {
                    Box::pin(async move {
                        let sql = if i == 17 {
                            "INSERT INTO no_such_table (x) VALUES ($1)"
                        } else {
                            "INSERT INTO oidc_keys (kid, private_key, created_at) VALUES ('k' || $1, 'x', $1)"
                        };
                        sqlx::query(sql).bind(i).execute(&mut *conn).await?;
                        Ok(i)
                    })
                })
                .await;
            (i, result)
        });
    }
    let mut ok = 0;
    while let Some(done) = writes.join_next().await {
        let (i, result) = done.expect("a write task");
        match result {
            Ok(n) => {
                assert_eq!(n, i, "each write gets its own answer");
                ok += 1;
            }
            Err(_) => assert_eq!(i, 17, "only the bad write fails"),
        }
    }
    assert_eq!(ok, 39);
    assert_eq!(
        db.oidc_keys(0).await.unwrap().len(),
        39,
        "every good write is kept"
    );
}

/// The group writer's direct jobs (on its own connection) and sqlx jobs, queued together:
/// each answered with its own result, a failing direct job rolled back alone, and every
/// other write of both kinds kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_and_sqlx_group_jobs_share_batches_and_isolate_failures() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::connect(
        &format!("sqlite://{}", dir.path().join("d.db").display()),
        4,
    )
    .await
    .expect("sqlite");
    let group = db.group.clone().expect("SQLite has a group writer");
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(60));
    let mut writes = tokio::task::JoinSet::new();
    for i in 0..60_i64 {
        let (group, start) = (group.clone(), start.clone());
        writes.spawn(async move {
            start.wait().await;
            let result = if i % 3 == 0 {
                group
                    .write(move |conn| {
                        Box::pin(async move {
                            sqlx::query(
                                "INSERT INTO oidc_keys (kid, private_key, created_at) VALUES ('s' || $1, 'x', $1)",
                            )
                            .bind(i)
                            .execute(&mut *conn)
                            .await?;
                            Ok(i)
                        })
                    })
                    .await
            } else {
                group
                    .write_direct(move |conn| {
                        let sql = if i == 20 {
                            "INSERT INTO no_such_table (x) VALUES ($1)"
                        } else {
                            "INSERT INTO oidc_keys (kid, private_key, created_at) VALUES ('d' || $1, 'x', $1)"
                        };
                        crate::lite::execute(conn, sql, &[crate::lite::Param::int(i)])?;
                        Ok(i)
                    })
                    .await
            };
            (i, result)
        });
    }
    let mut ok = 0;
    while let Some(done) = writes.join_next().await {
        let (i, result) = done.expect("a write task");
        match result {
            Ok(n) => {
                assert_eq!(n, i, "each write gets its own answer");
                ok += 1;
            }
            Err(e) => assert_eq!(i, 20, "only the bad write fails: {e}"),
        }
    }
    assert_eq!(ok, 59);
    assert_eq!(
        db.oidc_keys(0).await.unwrap().len(),
        59,
        "every good write of both kinds is kept"
    );
}

/// A registration refused inside a group-commit batch (here: its UIA session was already
/// spent, found after its user row was written) leaves nothing behind, and the
/// registrations batched with it are all kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_registration_in_a_batch_undoes_only_itself() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::connect(
        &format!("sqlite://{}", dir.path().join("r.db").display()),
        4,
    )
    .await
    .expect("sqlite");
    let mut registrations = tokio::task::JoinSet::new();
    for i in 0..30 {
        let db = db.clone();
        registrations.spawn(async move {
            let mut new = account(&format!("user{i}"), Vec::new());
            if i % 3 == 0 {
                new.uia_session = Some(format!("no-such-session-{i}"));
            }
            (i, db.create_account(&new, 1).await)
        });
    }
    while let Some(done) = registrations.join_next().await {
        let (i, result) = done.expect("a registration task");
        let user = db.user(&format!("@user{i}:t.test")).await.unwrap();
        if i % 3 == 0 {
            assert!(
                matches!(result, Err(CreateAccountError::SessionSpent)),
                "{i}: {result:?}"
            );
            assert!(user.is_none(), "refused registration {i} left its user");
        } else {
            result.expect("a registration");
            assert!(user.is_some(), "registration {i} was lost");
        }
    }
}

/// A requestToken's session and mail, 60 at once for one recipient allowed 5 mails: 5 are
/// queued, the rest refused with the limit and its oldest mail, and none of the refused
/// leaves a session behind; a twin of a made session is told it raced. Then every mail,
/// marked sent at once (PostgreSQL writes those marks in batches), is recorded sent with
/// its body gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sessions_hold_the_limit_and_concurrent_marks_all_land() {
    on_both(|db| async move {
        let limits = SendLimits {
            per_recipient: Some(crate::SendWindow { max: 5, since: 0 }),
            ..SendLimits::default()
        };
        let new = |sid: &str| NewValidation {
            sid: sid.into(),
            medium: "email".into(),
            address: "eve@t.test".into(),
            client_secret: sid.into(),
            purpose: Purpose::Register,
            token_hash: Some(token_hash("t")),
            token_expires_at: 1_000_000,
            send_attempt: 1,
            next_link: None,
        };
        let message = |sid: &str| NewMessage {
            id: format!("m-{sid}"),
            channel: "email",
            country: None,
            recipient: "eve@t.test".into(),
            sid: Some(sid.into()),
            envelope_from: String::new(),
            message: "body".into(),
            held: false,
            stand_in: false,
        };
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(60));
        let mut requests = tokio::task::JoinSet::new();
        for i in 0..60_i64 {
            let (db, barrier) = (db.clone(), barrier.clone());
            let (new, message) = (new(&format!("s{i}")), message(&format!("s{i}")));
            requests.spawn(async move {
                barrier.wait().await;
                db.create_validation(&new, &message, &limits, 10 + i).await
            });
        }
        let (mut done, mut limited) = (0, 0);
        while let Some(answer) = requests.join_next().await {
            match answer.expect("a request task").expect("no storage error") {
                Queued::Done => done += 1,
                Queued::Limited(l) => {
                    assert_eq!(l.hit, crate::LimitHit::Recipient);
                    assert!(l.oldest.is_some_and(|t| (10..70).contains(&t)));
                    limited += 1;
                }
                Queued::Raced => panic!("no twins were sent"),
            }
        }
        assert_eq!((done, limited), (5, 55));
        let sessions: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM validation_sessions")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(sessions, 5, "a refused request leaves no session");
        let made: String = sqlx::query_scalar("SELECT sid FROM validation_sessions LIMIT 1")
            .fetch_one(db.pool())
            .await
            .unwrap();
        let twin = db
            .create_validation(&new(&made), &message("twin"), &SendLimits::default(), 99)
            .await
            .unwrap();
        assert!(matches!(twin, Queued::Raced));

        let mails = db
            .claim_due_messages(100, crate::DELIVERY_LEASE_MS, 50)
            .await
            .unwrap();
        assert_eq!(mails.len(), 5, "the twin queued nothing");
        let mut marks = tokio::task::JoinSet::new();
        for mail in mails {
            let db = db.clone();
            marks.spawn(async move {
                match &db.marks {
                    // PostgreSQL: the batch itself, not the one-by-one fallback.
                    Some(batches) => assert!(batches.record(&mail.id, 200).await),
                    None => db.mark_message_sent(&mail.id, 200).await.expect("recorded"),
                }
            });
        }
        while let Some(marked) = marks.join_next().await {
            marked.expect("a mark task");
        }
        let sent: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM outbox WHERE sent_at = 200 AND attempts = 1 AND message = ''
               AND locked_until IS NULL",
        )
        .fetch_one(db.pool())
        .await
        .unwrap();
        assert_eq!(sent, 5);
        assert_eq!(db.pending_message_count().await.unwrap(), 0);
    })
    .await;
}
