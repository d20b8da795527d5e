//! Several instances on one database: two real `vouch` processes share a database (a
//! PostgreSQL database, or one SQLite file); state started on one is finished on the other,
//! one is killed with mail queued and the other delivers it, send limits hold across both.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::helpers::{Backend, Reply, spawn_with};
use crate::on_both_databases;
use crate::smtp::SmtpSink;

on_both_databases!(
    two_processes_share_one_database,
    outbox_leases_hand_work_over
);

/// A `vouch serve` child process.
struct Instance {
    child: Child,
    base: String,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Instance {
    /// Starts `vouch serve` with `config` and waits for its listen address in the log.
    fn start(config: &std::path::Path) -> Instance {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vouch"))
            .args(["serve", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .env("VOUCH_LOGGING__FORMAT", "json")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("vouch starts");
        let stdout = child.stdout.take().unwrap();
        // Owned by the Instance from here on, so it is killed and reaped whatever happens.
        let mut instance = Instance {
            child,
            base: String::new(),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("the instance logs its address");
            if let Some(at) = line.find("listening on http://") {
                let addr: String = line[at + 20..]
                    .chars()
                    .take_while(|c| !c.is_whitespace() && *c != '"')
                    .collect();
                instance.base = format!("http://{addr}");
                return instance;
            }
        }
    }

    async fn post(&self, http: &reqwest::Client, path: &str, body: serde_json::Value) -> Reply {
        let res = http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.json().await.unwrap_or(serde_json::Value::Null);
        Reply {
            status,
            body,
            headers,
        }
    }
}

/// A configuration file for the instances: the same database and SMTP sink.
fn config_file(dir: &std::path::Path, database_url: &str, sink: &SmtpSink) -> std::path::PathBuf {
    let path = dir.join("vouch.toml");
    std::fs::write(
        &path,
        format!(
            r#"server_name = "vouch.test"
[http]
listen = "127.0.0.1:0"
[database]
url = "{database_url}"
[password]
argon2_m_cost_kib = 1024
argon2_t_cost = 1
[sms]
enabled = false
[email]
transport = "smtp"
from = "Vouch <noreply@vouch.test>"
[email.smtp]
host = "127.0.0.1"
port = {port}
tls = "none"
timeout = "5s"
[rate_limits]
enabled = true
login_per_ip = {{ per_second = 100.0, burst = 100 }}
registration_per_ip = {{ per_second = 100.0, burst = 100 }}
email_per_ip = {{ per_second = 100.0, burst = 100 }}
email_per_address = {{ max = 2, window = "1h" }}
"#,
            port = sink.port
        ),
    )
    .unwrap();
    path
}

async fn two_processes_share_one_database(db: Backend) {
    // The test rig makes the database (and migrates it); the instances share it.
    let rig = spawn_with(db, |_| {}).await;
    let url = rig.config.database.url.clone();
    let sink = SmtpSink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), &url, &sink);
    let a = Instance::start(&config);
    let b = Instance::start(&config);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // requestToken on A, the link confirmed through B, registration finished on A.
    let start = a
        .post(
            &http,
            "/_matrix/client/v3/register",
            json!({ "username": "multi", "password": "correct horse battery" }),
        )
        .await;
    let session = start.body["session"].clone();
    let r = a
        .post(
            &http,
            "/_matrix/client/v3/register/email/requestToken",
            json!({ "email": "multi@example.org", "client_secret": "m", "send_attempt": 1 }),
        )
        .await;
    let sid = r.ok()["sid"].clone();
    let link = sink.wait_for(1).await[0].link().replace(&a.base, &b.base);
    assert!(link.starts_with(&b.base));
    let page = http.get(&link).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("multi@example.org"));
    let token = link.split("token=").nth(1).unwrap().to_owned();
    let done = http
        .post(format!("{}/_vouch/email/validate", b.base))
        .form(&[
            ("sid", sid.as_str().unwrap()),
            ("client_secret", "m"),
            ("token", token.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    let r = a
        .post(
            &http,
            "/_matrix/client/v3/register",
            json!({ "username": "multi", "password": "correct horse battery",
                    "auth": { "type": "m.login.email.identity", "session": session, "threepid_creds": { "sid": sid, "client_secret": "m" } } }),
        )
        .await;
    r.ok();
    // A UIA session started on one instance continues on the other.
    let s = b
        .post(
            &http,
            "/_matrix/client/v3/register",
            json!({ "username": "other", "password": "correct horse battery" }),
        )
        .await;
    let r = a
        .post(&http, "/_matrix/client/v3/register", json!({ "username": "other", "password": "correct horse battery", "auth": { "type": "m.login.dummy", "session": s.body["session"] } }))
        .await;
    r.ok();

    // Send limits hold across both: two mails per address per hour, whichever instance.
    a.post(
        &http,
        "/_matrix/client/v3/register/email/requestToken",
        json!({ "email": "lim@example.org", "client_secret": "1", "send_attempt": 1 }),
    )
    .await
    .ok();
    b.post(
        &http,
        "/_matrix/client/v3/register/email/requestToken",
        json!({ "email": "lim@example.org", "client_secret": "2", "send_attempt": 1 }),
    )
    .await
    .ok();
    a.post(
        &http,
        "/_matrix/client/v3/register/email/requestToken",
        json!({ "email": "lim@example.org", "client_secret": "3", "send_attempt": 1 }),
    )
    .await
    .assert_error(429, "M_LIMIT_EXCEEDED");
    b.post(
        &http,
        "/_matrix/client/v3/register/email/requestToken",
        json!({ "email": "lim@example.org", "client_secret": "4", "send_attempt": 1 }),
    )
    .await
    .assert_error(429, "M_LIMIT_EXCEEDED");
    sink.wait_for(3).await;

    // A is killed with mail queued (SMTP down); B delivers it once SMTP is back.
    sink.set_up(false);
    a.post(
        &http,
        "/_matrix/client/v3/register/email/requestToken",
        json!({ "email": "queued@example.org", "client_secret": "q", "send_attempt": 1 }),
    )
    .await
    .ok();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(a); // SIGKILL
    sink.set_up(true);
    let got = sink.wait_for(4).await;
    assert_eq!(
        got.iter()
            .filter(|m| m.to == vec!["queued@example.org"])
            .count(),
        1
    );
    sink.assert_total(4).await;
    drop(b);
}

async fn outbox_leases_hand_work_over(db: Backend) {
    let rig = spawn_with(db, |c| {
        c.email.transport = vouch_config::EmailTransport::Log
    })
    .await;
    let store = vouch_storage::Db::connect(&rig.config.database.url, 4)
        .await
        .unwrap();
    // Far ahead of the rig's own (mock) clock, so its worker never finds these due.
    let now = 4_000_000_000_000_i64;
    let mail = vouch_storage::NewMessage {
        id: "lease-test".into(),
        channel: "email",
        country: None,
        recipient: "lease@example.org".into(),
        sid: None,
        envelope_from: "noreply@vouch.test".into(),
        message: "Subject: x\r\n\r\nhi\r\n".into(),
        held: false,
        stand_in: false,
    };
    store.enqueue_message(&mail, now).await.unwrap();
    // One worker claims it; nobody else can while the lease holds.
    let first = store.claim_due_messages(now, 120_000, 10).await.unwrap();
    assert_eq!(first.iter().filter(|m| m.id == "lease-test").count(), 1);
    assert!(
        store
            .claim_due_messages(now + 1_000, 120_000, 10)
            .await
            .unwrap()
            .iter()
            .all(|m| m.id != "lease-test")
    );
    // The claimer died: after the lease another worker gets it.
    let second = store
        .claim_due_messages(now + 120_000, 120_000, 10)
        .await
        .unwrap();
    assert_eq!(second.iter().filter(|m| m.id == "lease-test").count(), 1);
    store
        .mark_message_sent("lease-test", now + 120_001)
        .await
        .unwrap();
    assert!(
        store
            .claim_due_messages(now + 999_999, 120_000, 10)
            .await
            .unwrap()
            .iter()
            .all(|m| m.id != "lease-test")
    );
    // Concurrent claimers never get the same message.
    for i in 0..20 {
        let m = vouch_storage::NewMessage {
            id: format!("c{i}"),
            ..mail.clone()
        };
        store.enqueue_message(&m, now).await.unwrap();
    }
    let claims = futures::future::join_all(
        (0..4).map(|_| store.claim_due_messages(now + 500_000, 120_000, 8)),
    )
    .await;
    let mut ids: Vec<String> = claims
        .into_iter()
        .flat_map(|c| c.unwrap())
        .map(|m| m.id)
        .filter(|id| id.starts_with('c'))
        .collect();
    let total = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), total, "no message claimed twice");
    assert_eq!(total, 20);
    store.close().await;
}
