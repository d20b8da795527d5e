//! The database going away and coming back: requests are answered at once with 503 and
//! `Retry-After` (not after a 30-second hang with a 500), `/_vouch/health` says what is
//! down, and service resumes when the database is back. PostgreSQL is reached through a
//! TCP relay the test can cut, as a network outage would.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::helpers::{Backend, postgres_url, spawn_with};

/// Relays 127.0.0.1:`port` to PostgreSQL until stopped; stopping drops every connection.
struct Relay {
    port: u16,
    task: JoinHandle<()>,
}

impl Relay {
    async fn start(port: u16, to: String) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind relay");
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                let to = to.clone();
                conns.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&to).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Self { port, task }
    }

    /// Cuts the relay and every connection through it (the JoinSet aborts them).
    fn stop(self) -> u16 {
        self.task.abort();
        self.port
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_answered_fast_and_survived() {
    let Some(admin_url) = postgres_url() else {
        crate::helpers::skipped(
            "PostgreSQL",
            "set VOUCH_TEST_POSTGRES_URL (see README.md); .ci/run does",
        );
        return;
    };
    let target = url::Url::parse(&admin_url).unwrap();
    let to = format!(
        "{}:{}",
        target.host_str().unwrap(),
        target.port().unwrap_or(5432)
    );
    let relay = Relay::start(0, to.clone()).await;
    let port = relay.port;
    let app = spawn_with(Backend::Postgres, |c| {
        let mut url = url::Url::parse(&c.database.url).unwrap();
        url.set_port(Some(port)).unwrap();
        c.database.url = url.to_string();
        c.database.acquire_timeout = Duration::from_secs(1);
    })
    .await;
    let health = app.get("/_vouch/health", None).await;
    assert_eq!(
        health.ok(),
        &json!({ "status": "ok", "database": "ok", "outbox_worker": "ok", "housekeeping": "ok" })
    );
    app.register("before", "correct horse battery").await;

    let port = relay.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..2 {
        let started = Instant::now();
        let r = app
            .request_email_token("register", "outage@example.org", "o1", 1)
            .await;
        r.assert_error(503, "M_UNKNOWN");
        assert!(r.headers.contains_key("retry-after"));
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "answered after {:?}",
            started.elapsed()
        );
    }
    let health = app.get("/_vouch/health", None).await;
    assert_eq!(health.status.as_u16(), 503);
    assert_eq!(health.body["database"], "down");

    // Back: served again without a restart.
    let _relay = Relay::start(port, to).await;
    let mut back = false;
    for _ in 0..50 {
        if app.get("/_vouch/health", None).await.status.as_u16() == 200 {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(back, "health did not recover");
    app.login_ok("before", "correct horse battery").await;
}
