//! Vouch in front of a real, stock Synapse (1.163.2 from PyPI, its
//! `matrix_authentication_service` mode, SQLite), started here on a free port: clients talk
//! to Vouch's port only, Synapse asks Vouch about every token, and Vouch tells Synapse of
//! every account change. `.ci/run` installs Synapse into a virtual environment outside the
//! clone; a missing Synapse fails CI (`VOUCH_TEST_REQUIRE_ALL=1`) and is said loudly
//! otherwise.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::email::register_with_email;
use crate::helpers::{Backend, Reply, TestApp, mail_to, skipped, spawn_with};
use crate::sms::{NUMBER, code_in, form, received, request_phone_token, submit};
use crate::smtp::SmtpSink;

/// The secret Vouch and Synapse share in these tests.
const SECRET: &str = "test-secret-0123456789abcdef0123456789abcdef";
/// The application service Synapse knows.
const AS_TOKEN: &str = "as_token_testbridge";

/// The virtual environment Synapse is installed in.
fn synapse_venv() -> Option<PathBuf> {
    let venv = std::env::var("VOUCH_TEST_SYNAPSE_VENV")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "/var/tmp/synapse-venv".into());
    let venv = PathBuf::from(venv);
    venv.join("bin/python").exists().then_some(venv)
}

/// A port nobody listens on (yet).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A running Synapse, stopped when dropped.
pub struct Synapse {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    child: Child,
    dir: tempfile::TempDir,
    python: PathBuf,
}

impl Drop for Synapse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Synapse {
    /// The end of Synapse's log, for failure messages.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("synapse.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Starts Synapse on `port` with `vouch` as its account service.
    fn start(venv: &std::path::Path, port: u16, vouch: &str) -> Synapse {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path().display().to_string();
        std::fs::write(
            dir.path().join("appservice.yaml"),
            format!(
                "id: testbridge\nurl: null\nas_token: {AS_TOKEN}\nhs_token: hs_token_testbridge\n\
                 sender_localpart: testbridge\nnamespaces:\n  users:\n    - exclusive: true\n      \
                 regex: \"@bridge_.*:vouch.test\"\n  aliases: []\n  rooms: []\n"
            ),
        )
        .expect("appservice file");
        std::fs::write(
            dir.path().join("homeserver.yaml"),
            format!(
                "server_name: \"vouch.test\"\npublic_baseurl: \"{vouch}/\"\npid_file: \"{d}/hs.pid\"\n\
                 report_stats: false\nlisteners:\n  - port: {port}\n    bind_addresses: [\"127.0.0.1\"]\n    \
                 type: http\n    tls: false\n    x_forwarded: true\n    resources:\n      - names: [client]\n        \
                 compress: false\ndatabase:\n  name: sqlite3\n  args:\n    database: \"{d}/homeserver.db\"\n\
                 media_store_path: \"{d}/media\"\nsigning_key_path: \"{d}/signing.key\"\n\
                 trusted_key_servers: []\nsuppress_key_server_warning: true\nenable_metrics: false\n\
                 app_service_config_files: [\"{d}/appservice.yaml\"]\n\
                 rc_message:\n  per_second: 1000\n  burst_count: 1000\n\
                 rc_joins:\n  local:\n    per_second: 1000\n    burst_count: 1000\n\
                 matrix_authentication_service:\n  enabled: true\n  endpoint: \"{vouch}/\"\n  secret: \"{SECRET}\"\n"
            ),
        )
        .expect("homeserver.yaml");
        let python = venv.join("bin/python");
        let config = dir.path().join("homeserver.yaml");
        let keys = Command::new(&python)
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(&config)
            .arg("--generate-keys")
            .output()
            .expect("run synapse --generate-keys");
        assert!(
            keys.status.success(),
            "synapse --generate-keys: {}",
            String::from_utf8_lossy(&keys.stderr)
        );
        let child = Self::spawn(&python, dir.path());
        Synapse {
            base: format!("http://127.0.0.1:{port}"),
            child,
            dir,
            python,
        }
    }

    fn spawn(python: &std::path::Path, dir: &std::path::Path) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("synapse.log"))
            .expect("log file");
        Command::new(python)
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(dir.join("homeserver.yaml"))
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start synapse")
    }

    /// Freezes Synapse (it takes connections and answers nothing) or thaws it.
    fn freeze(&self, frozen: bool) {
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let done = Command::new("kill")
            .arg(signal)
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(done.success());
    }

    /// Kills Synapse (as a crash would).
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts Synapse again on its data and waits until it answers.
    async fn restart(&mut self) {
        self.kill();
        self.child = Self::spawn(&self.python, self.dir.path());
        self.ready().await;
    }

    /// Waits until Synapse answers `/versions` (at most 90 s).
    async fn ready(&mut self) {
        let http = reqwest::Client::new();
        for _ in 0..900 {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("Synapse exited ({status}):\n{}", self.log_tail());
            }
            let up = http
                .get(format!("{}/_matrix/client/versions", self.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if up {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("Synapse did not start:\n{}", self.log_tail());
    }
}

/// Vouch (mail to a sink, SMS to a fake Twilio) in front of a fresh Synapse; `None` (and a
/// loud note) when Synapse is not installed.
async fn vouch_and_synapse() -> Option<(TestApp, Synapse, SmtpSink, wiremock::MockServer)> {
    vouch_and_synapse_with(|_| {}).await
}

/// [`vouch_and_synapse`] with Vouch's configuration changed by `adjust`.
async fn vouch_and_synapse_with(
    adjust: impl FnOnce(&mut vouch_config::Config),
) -> Option<(TestApp, Synapse, SmtpSink, wiremock::MockServer)> {
    let Some(venv) = synapse_venv() else {
        skipped(
            "Synapse",
            "install matrix-synapse==1.163.2 into /var/tmp/synapse-venv or set VOUCH_TEST_SYNAPSE_VENV; .ci/run does",
        );
        return None;
    };
    let port = free_port();
    let sink = SmtpSink::start().await;
    let twilio = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(
            wiremock::ResponseTemplate::new(201)
                .set_body_json(json!({ "sid": "SM1", "status": "queued" })),
        )
        .mount(&twilio)
        .await;
    let twilio_uri = twilio.uri();
    let app = spawn_with(Backend::Sqlite, |c| {
        mail_to(c, &sink);
        c.sms.enabled = true;
        c.sms.transport = vouch_config::SmsTransport::Twilio;
        c.sms.twilio.base_url = twilio_uri;
        c.sms.twilio.account_sid = "AC123".into();
        c.sms.twilio.auth_token = "tok".into();
        c.sms.twilio.from = "+447400000001".into();
        c.homeserver.url = format!("http://127.0.0.1:{port}");
        c.homeserver.secret = SECRET.into();
        adjust(c);
    })
    .await;
    let mut synapse = Synapse::start(&venv, port, &app.base);
    synapse.ready().await;
    Some((app, synapse, sink, twilio))
}

/// Registers through the phone stage with the code the fake gateway received.
async fn register_with_phone(app: &TestApp, twilio: &wiremock::MockServer, name: &str) -> Value {
    let body = json!({ "username": name, "password": "correct horse battery" });
    let start = app
        .post("/_matrix/client/v3/register", body.clone(), None)
        .await;
    let session = start.body["session"].clone();
    let before = twilio.received_requests().await.unwrap_or_default().len();
    let r = request_phone_token(app, "register", "GB", NUMBER, "phone-secret", 1).await;
    let sid = r.ok()["sid"].clone();
    let submit_url = r.body["submit_url"].as_str().unwrap().to_owned();
    let sent = received(twilio, before + 1).await;
    let code = code_in(&form(sent.last().unwrap())["Body"]);
    submit(app, &submit_url, &sid, "phone-secret", &code)
        .await
        .ok();
    let mut b = body;
    b["auth"] = json!({ "type": "m.login.msisdn", "session": session, "threepid_creds": { "sid": sid, "client_secret": "phone-secret" } });
    app.post("/_matrix/client/v3/register", b, None)
        .await
        .ok()
        .clone()
}

/// A client call to `base` (Vouch's port, or Synapse's to check what it knows).
async fn call(
    app: &TestApp,
    base: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> Reply {
    let mut req = app.http.request(method, format!("{base}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    app.send(req).await
}

/// Polls until `check` holds (at most 15 s): Synapse learns of some changes through the
/// outbox, a few milliseconds after the answer.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..150 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within 15 s");
}

/// What Synapse says of a user, asked with the shared secret.
async fn query_user(app: &TestApp, synapse: &Synapse, localpart: &str) -> Reply {
    call(
        app,
        &synapse.base,
        Method::GET,
        &format!("/_synapse/mas/query_user?localpart={localpart}"),
        None,
        Some(SECRET),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_chat_on_synapse_through_vouch() {
    let Some((app, synapse, sink, twilio)) = vouch_and_synapse().await else {
        return;
    };
    let vouch = app.base.clone();

    // Alice signs up with an email link, Bob with an SMS code, both through Vouch's port.
    let alice = register_with_email(&app, &sink, "alice", "alice@example.org").await;
    let alice_token = alice["access_token"].as_str().unwrap().to_owned();
    let bob = register_with_phone(&app, &twilio, "bob").await;
    let bob_token = bob["access_token"].as_str().unwrap().to_owned();

    // Synapse knows them, with the verified address.
    let q = query_user(&app, &synapse, "alice").await;
    assert_eq!(q.ok()["user_id"], "@alice:vouch.test");
    assert_eq!(q.body["is_deactivated"], false);

    // Rooms and sync are Synapse's, reached through Vouch.
    let sync = call(
        &app,
        &vouch,
        Method::GET,
        "/_matrix/client/v3/sync?timeout=0",
        None,
        Some(&alice_token),
    )
    .await;
    assert!(sync.ok()["next_batch"].is_string(), "{:?}", sync.body);
    let room = call(
        &app,
        &vouch,
        Method::POST,
        "/_matrix/client/v3/createRoom",
        Some(json!({ "preset": "public_chat", "name": "Vouched" })),
        Some(&alice_token),
    )
    .await;
    let room_id = room.ok()["room_id"].as_str().unwrap().to_owned();
    let sent = call(
        &app,
        &vouch,
        Method::PUT,
        &format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t1"),
        Some(json!({ "msgtype": "m.text", "body": "hello from alice" })),
        Some(&alice_token),
    )
    .await;
    assert!(sent.ok()["event_id"].is_string());
    call(
        &app,
        &vouch,
        Method::POST,
        &format!("/_matrix/client/v3/join/{room_id}"),
        Some(json!({})),
        Some(&bob_token),
    )
    .await
    .ok();
    let messages = call(
        &app,
        &vouch,
        Method::GET,
        &format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=20"),
        None,
        Some(&bob_token),
    )
    .await;
    let bodies: Vec<&str> = messages.ok()["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert!(bodies.contains(&"hello from alice"), "{bodies:?}");

    // Capabilities: Synapse's room versions, Vouch's account rules (Synapse alone would
    // say passwords cannot change).
    let caps = call(
        &app,
        &vouch,
        Method::GET,
        "/_matrix/client/v3/capabilities",
        None,
        Some(&alice_token),
    )
    .await;
    assert!(
        caps.ok()["capabilities"]["m.room_versions"]["default"].is_string(),
        "{:?}",
        caps.body
    );
    assert_eq!(
        caps.body["capabilities"]["m.change_password"]["enabled"],
        true
    );
    assert_eq!(caps.body["capabilities"]["m.3pid_changes"]["enabled"], true);

    // The same token works on Synapse's own port: Synapse asked Vouch who it is.
    let whoami = call(
        &app,
        &synapse.base,
        Method::GET,
        "/_matrix/client/v3/account/whoami",
        None,
        Some(&bob_token),
    )
    .await;
    assert_eq!(whoami.ok()["user_id"], "@bob:vouch.test");

    // A second device of Alice's ends at Synapse when she changes her password with
    // logout_devices; the device she asked from stays.
    let (second, _) = app.login_ok("alice", "correct horse battery").await;
    call(
        &app,
        &synapse.base,
        Method::GET,
        "/_matrix/client/v3/account/whoami",
        None,
        Some(&second),
    )
    .await
    .ok();
    let changed = app
        .with_password_uia(
            Method::POST,
            "/_matrix/client/v3/account/password",
            json!({ "new_password": "another horse battery", "logout_devices": true }),
            &alice_token,
            "@alice:vouch.test",
            "correct horse battery",
        )
        .await;
    changed.ok();
    eventually("the second device ends at Synapse", async || {
        call(
            &app,
            &synapse.base,
            Method::GET,
            "/_matrix/client/v3/account/whoami",
            None,
            Some(&second),
        )
        .await
        .status
            == 401
    })
    .await;
    call(
        &app,
        &vouch,
        Method::GET,
        "/_matrix/client/v3/account/whoami",
        None,
        Some(&alice_token),
    )
    .await
    .ok();

    // A refresh token presented twice was copied: its device ends, at Synapse too.
    let refreshable = app
        .post("/_matrix/client/v3/login", json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" }, "password": "another horse battery", "refresh_token": true }), None)
        .await;
    let old_refresh = refreshable.ok()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let next = app
        .post(
            "/_matrix/client/v3/refresh",
            json!({ "refresh_token": old_refresh }),
            None,
        )
        .await;
    let next_access = next.ok()["access_token"].as_str().unwrap().to_owned();
    call(
        &app,
        &synapse.base,
        Method::GET,
        "/_matrix/client/v3/account/whoami",
        None,
        Some(&next_access),
    )
    .await
    .ok();
    app.post(
        "/_matrix/client/v3/refresh",
        json!({ "refresh_token": old_refresh }),
        None,
    )
    .await
    .assert_error(401, "M_UNKNOWN_TOKEN");
    eventually("the copied session's device ends at Synapse", async || {
        call(
            &app,
            &synapse.base,
            Method::GET,
            "/_matrix/client/v3/account/whoami",
            None,
            Some(&next_access),
        )
        .await
        .status
            == 401
    })
    .await;

    // Logging out ends the token at Synapse too.
    call(
        &app,
        &vouch,
        Method::POST,
        "/_matrix/client/v3/logout",
        Some(json!({})),
        Some(&bob_token),
    )
    .await
    .ok();
    eventually("Bob's token ends at Synapse", async || {
        call(
            &app,
            &synapse.base,
            Method::GET,
            "/_matrix/client/v3/sync?timeout=0",
            None,
            Some(&bob_token),
        )
        .await
        .status
            == 401
    })
    .await;

    // Deactivation reaches Synapse.
    let (carol, _, _) = app.register("carol", "correct horse battery").await;
    let carol_token = app.login_ok("carol", "correct horse battery").await.0;
    app.with_password_uia(
        Method::POST,
        "/_matrix/client/v3/account/deactivate",
        json!({}),
        &carol_token,
        &carol,
        "correct horse battery",
    )
    .await
    .ok();
    eventually("Carol is deactivated at Synapse", async || {
        query_user(&app, &synapse, "carol").await.body["is_deactivated"] == true
    })
    .await;

    // A Vouch admin is a Synapse admin: Synapse's own admin API answers the Vouch token.
    let store = vouch_storage::Db::connect(&app.config.database.url, 2)
        .await
        .unwrap();
    store.set_admin("@alice:vouch.test", true).await.unwrap();
    let admin_token = app.login_ok("alice", "another horse battery").await.0;
    let rooms = call(
        &app,
        &vouch,
        Method::GET,
        "/_synapse/admin/v1/rooms",
        None,
        Some(&admin_token),
    )
    .await;
    assert!(
        rooms.ok()["rooms"]
            .as_array()
            .is_some_and(|r| !r.is_empty()),
        "{:?}",
        rooms.body
    );
    call(
        &app,
        &vouch,
        Method::GET,
        "/_synapse/admin/v1/rooms",
        None,
        Some(&alice_token),
    )
    .await
    .assert_error(403, "M_FORBIDDEN");

    // An application service still registers its users at Synapse, through Vouch.
    let r = call(&app, &vouch, Method::POST, "/_matrix/client/v3/register", Some(json!({ "type": "m.login.application_service", "username": "bridge_bob", "inhibit_login": true })), Some(AS_TOKEN)).await;
    assert_eq!(r.ok()["user_id"], "@bridge_bob:vouch.test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_synapse_may_introspect_and_its_private_api_stays_private() {
    let Some((app, synapse, _sink, _twilio)) = vouch_and_synapse().await else {
        return;
    };
    let (_, token, device) = app.register("dave", "correct horse battery").await;
    let introspect = |secret: Option<&'static str>, token: String| {
        let mut req = app
            .http
            .post(format!("{}/oauth2/introspect", app.base))
            .form(&[("token", token)]);
        if let Some(s) = secret {
            req = req.bearer_auth(s);
        }
        app.send(req)
    };
    introspect(None, token.clone())
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");
    introspect(
        Some("test-secret-0123456789abcdef0123456789abcdeX"),
        token.clone(),
    )
    .await
    .assert_error(401, "M_UNKNOWN_TOKEN");
    let r = introspect(Some(SECRET), token.clone()).await;
    assert_eq!(
        r.ok(),
        &json!({
            "active": true,
            "scope": format!("urn:matrix:client:api:* urn:matrix:client:device:{device}"),
            "username": "dave",
            "sub": "@dave:vouch.test",
            "device_id": device,
            "token_type": "access_token",
        })
    );
    for forged in [
        format!("{token}x"),
        "vat_forged".into(),
        String::new(),
        "x".repeat(5000),
    ] {
        assert_eq!(
            introspect(Some(SECRET), forged).await.ok(),
            &json!({ "active": false })
        );
    }

    // Synapse's account API is never reachable through Vouch, however it is spelled.
    for path in [
        "/_synapse/mas/query_user?localpart=dave",
        "/%5Fsynapse/mas/query_user?localpart=dave",
        "/_synapse/%6Das/query_user?localpart=dave",
        "//_synapse/mas/query_user?localpart=dave",
        "/_matrix/client/../../_synapse/mas/query_user?localpart=dave",
    ] {
        let r = call(&app, &app.base, Method::GET, path, None, Some(SECRET)).await;
        assert_eq!(r.status, 404, "{path}: {:?}", r.body);
    }
    // Clients are not sent to OAuth: the discovery document is Vouch's, and says no.
    call(
        &app,
        &app.base,
        Method::GET,
        "/_matrix/client/v1/auth_metadata",
        None,
        None,
    )
    .await
    .assert_error(404, "M_UNRECOGNIZED");
    let login = call(
        &app,
        &app.base,
        Method::GET,
        "/_matrix/client/v3/login",
        None,
        None,
    )
    .await;
    assert_eq!(login.ok()["flows"][0]["type"], "m.login.password");
    let oidc = call(
        &app,
        &app.base,
        Method::GET,
        "/.well-known/openid-configuration",
        None,
        None,
    )
    .await;
    assert_eq!(oidc.ok()["issuer"], format!("{}/", app.base));
    drop(synapse);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_homeserver_outage_leaves_nothing_half_made() {
    let Some((app, synapse, _sink, _twilio)) = vouch_and_synapse().await else {
        return;
    };
    let (erin, token, _) = app.register("erin", "correct horse battery").await;
    drop(synapse);
    // Registration needs the homeserver: refused with 503, and the name stays free.
    let body = json!({ "username": "frank", "password": "correct horse battery" });
    let first = app
        .post("/_matrix/client/v3/register", body.clone(), None)
        .await;
    let mut b = body;
    b["auth"] = json!({ "type": "m.login.dummy", "session": first.body["session"] });
    let r = app.post("/_matrix/client/v3/register", b, None).await;
    r.assert_error(503, "M_UNKNOWN");
    assert!(r.headers.contains_key("retry-after"));
    let available = app
        .get("/_matrix/client/v3/register/available?username=frank", None)
        .await;
    assert_eq!(available.ok()["available"], true);
    // Forwarded requests say the homeserver is unavailable.
    app.get("/_matrix/client/v3/sync?timeout=0", Some(&token))
        .await
        .assert_error(503, "M_UNKNOWN");
    // A logout is taken at once and queued for the homeserver.
    let r = app
        .post("/_matrix/client/v3/logout", json!({}), Some(&token))
        .await;
    r.ok();
    let store = vouch_storage::Db::connect(&app.config.database.url, 2)
        .await
        .unwrap();
    let pending = store.pending_by_channel().await.unwrap();
    assert!(
        pending
            .iter()
            .any(|p| p.channel == "homeserver" && p.count >= 1),
        "{pending:?} for {erin}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_signing_reset_needs_the_account_pages_confirmation() {
    let Some((app, _synapse, _sink, _twilio)) = vouch_and_synapse().await else {
        return;
    };
    let (_, token, _) = app.register("gina", "correct horse battery").await;
    let keys = |key: &str| json!({ "master_key": { "user_id": "@gina:vouch.test", "usage": ["master"], "keys": { format!("ed25519:{key}"): key } } });
    let upload = "/_matrix/client/v3/keys/device_signing/upload";
    // The first keys need no confirmation.
    call(
        &app,
        &app.base,
        Method::POST,
        upload,
        Some(keys(&"A".repeat(43))),
        Some(&token),
    )
    .await
    .ok();
    // Replacing them does: Synapse points at Vouch's account page.
    let asked = call(
        &app,
        &app.base,
        Method::POST,
        upload,
        Some(keys(&format!("{}A", "B".repeat(42)))),
        Some(&token),
    )
    .await;
    assert_eq!(asked.status, 401, "{:?}", asked.body);
    let url = asked.body["params"]["m.oauth"]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        url,
        format!(
            "{}/_vouch/account?action=org.matrix.cross_signing_reset",
            app.base
        )
    );
    // Clients that open the stage's fallback page land there too.
    let fallback = app
        .get(
            "/_matrix/client/v3/auth/m.oauth/fallback/web?session=dummy",
            None,
        )
        .await;
    assert_eq!(fallback.status, 303);
    assert_eq!(fallback.headers["location"], url.as_str());
    let page = app.open(&url).await;
    assert_eq!(page.status, 200);
    assert!(page.html.contains("Allow the reset"), "{}", page.html);
    // A wrong password allows nothing.
    let wrong = app
        .http
        .post(format!("{}/_vouch/account/cross_signing_reset", app.base))
        .form(&[("user", "gina"), ("password", "wrong horse battery")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 403);
    let still = call(
        &app,
        &app.base,
        Method::POST,
        upload,
        Some(keys(&format!("{}A", "B".repeat(42)))),
        Some(&token),
    )
    .await;
    assert_eq!(still.status, 401, "{:?}", still.body);
    let right = app
        .http
        .post(format!("{}/_vouch/account/cross_signing_reset", app.base))
        .form(&[("user", "gina"), ("password", "correct horse battery")])
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    call(
        &app,
        &app.base,
        Method::POST,
        upload,
        Some(keys(&format!("{}A", "B".repeat(42)))),
        Some(&token),
    )
    .await
    .ok();
}

/// The `node_modules` directory holding matrix-js-sdk (`tests/js/package.json`).
fn js_sdk() -> Option<PathBuf> {
    let dir = std::env::var("VOUCH_TEST_JS_SDK")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "/var/tmp/vouch-js-sdk/node_modules".into());
    let dir = PathBuf::from(dir);
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    (node && dir.join("matrix-js-sdk/package.json").exists()).then_some(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_js_sdk_chats_through_vouch() {
    let Some(modules) = js_sdk() else {
        skipped(
            "matrix-js-sdk",
            "install Node.js and `npm install` crates/server/tests/js/package.json into /var/tmp/vouch-js-sdk (or set VOUCH_TEST_JS_SDK to its node_modules); .ci/run does",
        );
        return;
    };
    let Some((app, _synapse, _sink, _twilio)) = vouch_and_synapse().await else {
        return;
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/js/chat.mjs");
    let base = app.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .arg(&modules)
            .arg(&base)
            .arg("jsuser")
            .output()
            .expect("run node")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the js-sdk client failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(seen["oauth"], false, "the SDK must not find OAuth: {seen}");
    assert!(
        seen["loginFlows"]
            .as_array()
            .unwrap()
            .contains(&json!("m.login.password")),
        "{seen}"
    );
    assert_eq!(seen["registered"], "@jsuser:vouch.test");
    assert_eq!(seen["sync"], "PREPARED");
    assert_eq!(seen["echo"], "hello from matrix-js-sdk");
    assert_eq!(seen["whoami"], "@jsuser:vouch.test");
}

/// What an attack review found, each closed: a device ID cannot smuggle a scope in, a
/// homeserver's user (an application service's) cannot be taken over by registering its
/// name, a signed-out device ID is not handed out again while Synapse may still trust its
/// old token, and application services keep working on the paths Vouch answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_on_the_homeserver_mode_fail() {
    let Some((app, synapse, _sink, _twilio)) = vouch_and_synapse().await else {
        return;
    };
    let (user, _, _) = app.register("mallory", "correct horse battery").await;
    for device_id in [
        "X urn:synapse:admin:*",
        "X\turn:synapse:admin:*",
        "a\"b",
        "a\\b",
        "Ünïcödé",
    ] {
        let r = app
            .post("/_matrix/client/v3/login", json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "mallory" }, "password": "correct horse battery", "device_id": device_id }), None)
            .await;
        r.assert_error(400, "M_INVALID_PARAM");
    }

    // An application service's user is not Vouch's to hand out, nor is its namespace.
    let r = call(&app, &app.base, Method::POST, "/_matrix/client/v3/register", Some(json!({ "type": "m.login.application_service", "username": "bridge_q", "inhibit_login": true })), Some(AS_TOKEN)).await;
    assert_eq!(r.ok()["user_id"], "@bridge_q:vouch.test");
    // (Synapse names the namespace first, even for a user that exists.)
    let taken = register_dummy(&app, "bridge_q").await;
    taken.assert_error(400, "M_EXCLUSIVE");
    app.get(
        "/_matrix/client/v3/register/available?username=bridge_q",
        None,
    )
    .await
    .assert_error(400, "M_EXCLUSIVE");
    app.get(
        "/_matrix/client/v3/register/available?username=bridge_other",
        None,
    )
    .await
    .assert_error(400, "M_EXCLUSIVE");
    let exclusive = register_dummy(&app, "bridge_new").await;
    exclusive.assert_error(400, "M_EXCLUSIVE");
    // The application service still acts for its users on paths Vouch answers for others.
    let me = call(
        &app,
        &app.base,
        Method::GET,
        "/_matrix/client/v3/account/whoami?user_id=@bridge_q:vouch.test",
        None,
        Some(AS_TOKEN),
    )
    .await;
    assert_eq!(me.ok()["user_id"], "@bridge_q:vouch.test");
    let caps = call(
        &app,
        &app.base,
        Method::GET,
        "/_matrix/client/v3/capabilities",
        None,
        Some(AS_TOKEN),
    )
    .await;
    assert!(caps.ok()["capabilities"]["m.room_versions"].is_object());

    // A signed-out device ID waits before it is handed out again.
    let login = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "mallory" }, "password": "correct horse battery", "device_id": "SAMEDEV" });
    let first = app
        .post("/_matrix/client/v3/login", login.clone(), None)
        .await;
    let old = first.ok()["access_token"].as_str().unwrap().to_owned();
    call(
        &app,
        &synapse.base,
        Method::GET,
        "/_matrix/client/v3/account/whoami",
        None,
        Some(&old),
    )
    .await
    .ok();
    app.post("/_matrix/client/v3/logout", json!({}), Some(&old))
        .await
        .ok();
    let again = app.post("/_matrix/client/v3/login", login, None).await;
    again.assert_error(429, "M_LIMIT_EXCEEDED");
    eventually("the old token ends at Synapse", async || {
        call(
            &app,
            &synapse.base,
            Method::GET,
            "/_matrix/client/v3/account/whoami",
            None,
            Some(&old),
        )
        .await
        .status
            == 401
    })
    .await;
    let _ = user;
}

/// Device deletions queued while Synapse was down reach it before a newer login's device,
/// and never delete that newer device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_deletions_keep_their_order_after_an_outage() {
    let Some((app, mut synapse, _sink, _twilio)) = vouch_and_synapse().await else {
        return;
    };
    app.register("nora", "correct horse battery").await;
    let (a, _) = app.login_ok("nora", "correct horse battery").await;
    let (b, _) = app.login_ok("nora", "correct horse battery").await;
    synapse.kill();
    app.post("/_matrix/client/v3/logout", json!({}), Some(&a))
        .await
        .ok();
    app.post("/_matrix/client/v3/logout/all", json!({}), Some(&b))
        .await
        .ok();
    synapse.restart().await;
    let (fresh, _) = app.login_ok("nora", "correct horse battery").await;
    for old in [&a, &b] {
        eventually("an old device ends at Synapse", async || {
            call(
                &app,
                &synapse.base,
                Method::GET,
                "/_matrix/client/v3/account/whoami",
                None,
                Some(old),
            )
            .await
            .status
                == 401
        })
        .await;
    }
    // Give the outbox every chance to deliver what it still holds, then check the fresh
    // device is still there.
    tokio::time::sleep(Duration::from_secs(3)).await;
    call(
        &app,
        &synapse.base,
        Method::GET,
        "/_matrix/client/v3/account/whoami",
        None,
        Some(&fresh),
    )
    .await
    .ok();
    let store = vouch_storage::Db::connect(&app.config.database.url, 2)
        .await
        .unwrap();
    let pending = store.pending_by_channel().await.unwrap();
    assert!(
        !pending
            .iter()
            .any(|p| p.channel == "homeserver" && p.count > 0),
        "{pending:?}"
    );
}

/// A forwarded upload whose client stops sending is cut off; a garbled body is the
/// client's fault, not the homeserver's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forwarder_holds_clients_to_the_body_deadline() {
    let Some((app, _synapse, _sink, _twilio)) =
        vouch_and_synapse_with(|c| c.http.body_read_timeout = Duration::from_secs(1)).await
    else {
        return;
    };
    let (_, token, _) = app.register("olga", "correct horse battery").await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let raw = |request: String| {
        let addr = addr.clone();
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
            s.write_all(request.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer)).await;
            String::from_utf8_lossy(&answer).into_owned()
        }
    };
    let stalled = raw(format!(
        "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: text/plain\r\nContent-Length: 100\r\nConnection: close\r\n\r\nonly part"
    ))
    .await;
    assert!(stalled.starts_with("HTTP/1.1 408"), "{stalled}");
    let garbled = raw(format!(
        "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n-2\r\n\r\n"
    ))
    .await;
    assert!(garbled.starts_with("HTTP/1.1 400"), "{garbled}");
}

/// The dummy-flow registration of `name`, whatever its answer.
async fn register_dummy(app: &TestApp, name: &str) -> Reply {
    let body = json!({ "username": name, "password": "correct horse battery" });
    let first = app
        .post("/_matrix/client/v3/register", body.clone(), None)
        .await;
    if first.status != 401 {
        return first;
    }
    let mut b = body;
    b["auth"] = json!({ "type": "m.login.dummy", "session": first.body["session"] });
    app.post("/_matrix/client/v3/register", b, None).await
}

/// A registration that fails here after Synapse made the user (its UIA session spent by a
/// concurrent request, say) does not burn the name: the next registration takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_registration_does_not_burn_its_name() {
    let Some((app, _synapse, _sink, _twilio)) = vouch_and_synapse().await else {
        return;
    };
    let body = json!({ "username": "first", "password": "correct horse battery" });
    let start = app.post("/_matrix/client/v3/register", body, None).await;
    let session = start.body["session"].clone();
    let auth = json!({ "type": "m.login.dummy", "session": session });
    let attempts = ["first", "second", "third", "fourth"].map(|name| {
        app.post(
            "/_matrix/client/v3/register",
            json!({ "username": name, "password": "correct horse battery", "auth": auth }),
            None,
        )
    });
    let answers = futures::future::join_all(attempts).await;
    let won: Vec<usize> = (0..4).filter(|i| answers[*i].status == 200).collect();
    assert_eq!(
        won.len(),
        1,
        "{:?}",
        answers.iter().map(|a| &a.body).collect::<Vec<_>>()
    );
    for (i, name) in ["first", "second", "third", "fourth"].iter().enumerate() {
        if won.contains(&i) {
            continue;
        }
        app.get(
            &format!("/_matrix/client/v3/register/available?username={name}"),
            None,
        )
        .await
        .ok();
        let again = register_dummy(&app, name).await;
        assert_eq!(again.ok()["user_id"], format!("@{name}:vouch.test"));
    }
}

/// Logins racing `/logout/all`: afterwards Synapse has exactly the devices Vouch has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_agree_after_logins_race_a_logout_everywhere() {
    let Some((app, _synapse, _sink, _twilio)) = vouch_and_synapse().await else {
        return;
    };
    let (user_id, _, _) = app.register("rita", "correct horse battery").await;
    let store = vouch_storage::Db::connect(&app.config.database.url, 2)
        .await
        .unwrap();
    store.set_admin(&user_id, true).await.unwrap();
    let (keeper, _) = app.login_ok("rita", "correct horse battery").await;
    for _ in 0..3 {
        let logins = (0..6).map(|_| app.login("rita", "correct horse battery"));
        let (_, _) = tokio::join!(
            futures::future::join_all(logins),
            app.post("/_matrix/client/v3/logout/all", json!({}), Some(&keeper))
        );
    }
    let (admin, _) = app.login_ok("rita", "correct horse battery").await;
    let ours: std::collections::BTreeSet<String> = store
        .devices(&user_id)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.device_id)
        .collect();
    eventually("Synapse's devices match Vouch's", async || {
        let theirs = call(
            &app,
            &app.base,
            Method::GET,
            &format!("/_synapse/admin/v2/users/{user_id}/devices"),
            None,
            Some(&admin),
        )
        .await;
        let theirs: std::collections::BTreeSet<String> = theirs.body["devices"]
            .as_array()
            .map(|d| {
                d.iter()
                    .filter_map(|d| d["device_id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        theirs == ours
    })
    .await;
}

/// Synapse stalls past Vouch's timeout while making a user, then makes it anyway: the
/// registration was answered 503, and the name is not lost — the next registration of it
/// takes the user Vouch had asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_lost_to_a_stalled_synapse_does_not_burn_its_name() {
    let Some((app, synapse, _sink, _twilio)) = vouch_and_synapse().await else {
        return;
    };
    let body = json!({ "username": "stally", "password": "correct horse battery" });
    let first = app
        .post("/_matrix/client/v3/register", body.clone(), None)
        .await;
    let mut b = body;
    b["auth"] = json!({ "type": "m.login.dummy", "session": first.body["session"] });
    synapse.freeze(true);
    let lost = app.post("/_matrix/client/v3/register", b, None).await;
    synapse.freeze(false);
    lost.assert_error(503, "M_UNKNOWN");
    eventually("Synapse makes the user after all", async || {
        query_user(&app, &synapse, "stally").await.status == 200
    })
    .await;
    let again = register_dummy(&app, "stally").await;
    assert_eq!(again.ok()["user_id"], "@stally:vouch.test");
    let token = again.body["access_token"].as_str().unwrap().to_owned();
    call(
        &app,
        &synapse.base,
        Method::GET,
        "/_matrix/client/v3/account/whoami",
        None,
        Some(&token),
    )
    .await
    .ok();
}

/// Element X's way in, in front of Synapse: a session opened through OAuth 2.0 (a user
/// signing in on Vouch's pages, the code exchanged) is a device Synapse knows, whose token
/// syncs and sends there; refreshed, the new token works at Synapse; revoked, the device
/// is gone at Synapse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oauth_session_chats_on_synapse() {
    let Some((app, synapse, sink, _twilio)) =
        vouch_and_synapse_with(|c| c.oauth.enabled = true).await
    else {
        return;
    };
    let vouch = app.base.clone();
    register_with_email(&app, &sink, "olive", "olive@example.org").await;
    let meta = app.get("/_matrix/client/v1/auth_metadata", None).await;
    let actions = meta.ok()["account_management_actions_supported"].to_string();
    assert!(
        actions.contains("org.matrix.cross_signing_reset")
            && actions.contains("org.matrix.device_delete"),
        "{actions}"
    );
    let client_id = crate::oauth::register_client(&app).await;
    let code = crate::oauth::code_for(
        &app,
        &client_id,
        "OAUTHSYNAPSE",
        "olive",
        "correct horse battery",
    )
    .await;
    let tokens = crate::oauth::exchange(&app, &client_id, &code)
        .await
        .ok()
        .clone();
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let sync = call(
        &app,
        &vouch,
        Method::GET,
        "/_matrix/client/v3/sync?timeout=0",
        None,
        Some(&access),
    )
    .await;
    assert!(sync.ok()["next_batch"].is_string(), "{:?}", sync.body);
    let room = call(
        &app,
        &vouch,
        Method::POST,
        "/_matrix/client/v3/createRoom",
        Some(json!({ "name": "Made through OAuth" })),
        Some(&access),
    )
    .await;
    assert!(room.ok()["room_id"].is_string());
    // Synapse's own view of the device.
    let devices = call(
        &app,
        &synapse.base,
        Method::GET,
        "/_matrix/client/v3/devices",
        None,
        Some(&access),
    )
    .await;
    assert!(
        devices.ok()["devices"].to_string().contains("OAUTHSYNAPSE"),
        "{:?}",
        devices.body
    );
    let refreshed =
        crate::oauth::refresh(&app, &client_id, tokens["refresh_token"].as_str().unwrap()).await;
    let access2 = refreshed.ok()["access_token"].as_str().unwrap().to_owned();
    let whoami = call(
        &app,
        &synapse.base,
        Method::GET,
        "/_matrix/client/v3/account/whoami",
        None,
        Some(&access2),
    )
    .await;
    assert_eq!(whoami.ok()["device_id"], "OAUTHSYNAPSE");
    let revoked = app
        .send(
            app.http
                .post(format!("{vouch}/oauth2/revoke"))
                .form(&[("token", access2.as_str())]),
        )
        .await;
    assert_eq!(revoked.status, 200);
    // The deletion reaches Synapse through the outbox: the user's other sessions see the
    // device gone.
    let (other, _) = app.login_ok("olive", "correct horse battery").await;
    let mut gone = false;
    for _ in 0..100 {
        let list = call(
            &app,
            &synapse.base,
            Method::GET,
            "/_matrix/client/v3/devices",
            None,
            Some(&other),
        )
        .await;
        if !list.ok()["devices"].to_string().contains("OAUTHSYNAPSE") {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(gone, "the revoked session's device is deleted at Synapse");
}

/// A matrix-rust-sdk client as Element X builds one: refresh tokens handled, few retries.
async fn sdk_client(base: &str) -> matrix_sdk::Client {
    matrix_sdk::Client::builder()
        .homeserver_url(base)
        .handle_refresh_tokens()
        .request_config(
            matrix_sdk::config::RequestConfig::new()
                .retry_limit(2)
                .timeout(Duration::from_secs(30)),
        )
        .build()
        .await
        .expect("the SDK's client builds")
}

/// The client metadata Element X registers (a native app with a loopback redirect).
fn sdk_registration() -> matrix_sdk::authentication::oauth::ClientRegistrationData {
    use matrix_sdk::authentication::oauth::registration::{
        ApplicationType, ClientMetadata, Localized, OAuthGrantType,
    };
    let metadata = ClientMetadata {
        client_name: Some(Localized::new("Element X (rust-sdk test)".to_owned(), [])),
        ..ClientMetadata::new(
            ApplicationType::Native,
            vec![OAuthGrantType::AuthorizationCode {
                redirect_uris: vec![url::Url::parse("http://127.0.0.1/callback").unwrap()],
            }],
            Localized::new(url::Url::parse("https://element.example.org/").unwrap(), []),
        )
    };
    matrix_sdk::ruma::serde::Raw::new(&metadata).unwrap().into()
}

/// The SDK's authorization URL for `device`, with `prompt` (none: sign in).
async fn sdk_authorization_url(
    client: &matrix_sdk::Client,
    port: u16,
    device: &str,
    create: bool,
) -> url::Url {
    use matrix_sdk::ruma::api::client::discovery::get_authorization_server_metadata::v1::Prompt;
    let redirect = url::Url::parse(&format!("http://127.0.0.1:{port}/callback")).unwrap();
    let mut builder = client.oauth().login(
        redirect,
        Some(matrix_sdk::ruma::OwnedDeviceId::from(device)),
        Some(sdk_registration()),
        None,
    );
    if create {
        builder = builder.prompt(vec![Prompt::Create]);
    }
    builder
        .build()
        .await
        .expect("the SDK discovers, registers and builds the URL")
        .url
}

/// Element X's own path, in front of a real Synapse: matrix-rust-sdk's OAuth 2.0 client
/// discovers Vouch, registers, and opens the authorization URL with `prompt=create`;
/// headless Chromium signs up with the mail's code, consents and lands on the app's
/// loopback redirect; the SDK finishes the login, syncs on Synapse, refreshes its token,
/// syncs again and is revoked. A second user signs up the same way with an SMS
/// code, and the first signs in again without `prompt`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_rust_sdk_signs_up_through_oauth_and_syncs_on_synapse() {
    use matrix_sdk::config::SyncSettings;
    use matrix_sdk::utils::UrlOrQuery;
    let Some((chrome, _driver, _profile)) = crate::browser::browser().await else {
        return;
    };
    let Some((app, _synapse, sink, twilio)) = vouch_and_synapse_with(|c| {
        c.oauth.enabled = true;
        c.registration.require_3pid = vec!["email".into(), "msisdn".into()];
    })
    .await
    else {
        return;
    };
    let finish = |port: u16, target: &str| {
        UrlOrQuery::from(url::Url::parse(&format!("http://127.0.0.1:{port}{target}")).unwrap())
    };

    // Sign up in the browser, by email.
    let sdk = sdk_client(&app.base).await;
    let (port, landed) = crate::browser::loopback_app().await;
    let url = sdk_authorization_url(&sdk, port, "RUSTSDKDEV", true).await;
    chrome.goto(url.as_str()).await.unwrap();
    chrome
        .wait()
        .for_element(fantoccini::Locator::Id("username"))
        .await
        .unwrap();
    crate::browser::fill(&chrome, "username", "ivy").await;
    crate::browser::fill(&chrome, "password", "correct horse battery").await;
    crate::browser::fill(&chrome, "email", "ivy@example.org").await;
    crate::browser::press(&chrome, "button[type=submit]").await;
    chrome
        .wait()
        .for_element(fantoccini::Locator::Id("email_code"))
        .await
        .unwrap();
    let code = crate::oauth::mail_code(&sink.wait_for(1).await[0].text());
    crate::browser::fill(&chrome, "email_code", &code).await;
    crate::browser::press(&chrome, "button[type=submit]").await;
    chrome
        .wait()
        .for_element(fantoccini::Locator::Css("button[value=allow]"))
        .await
        .unwrap();
    crate::browser::press(&chrome, "button[value=allow]").await;
    let target = tokio::time::timeout(Duration::from_secs(10), landed)
        .await
        .expect("the browser reaches the app")
        .unwrap();
    sdk.oauth()
        .finish_login(finish(port, &target))
        .await
        .expect("the SDK finishes the login");
    assert_eq!(sdk.user_id().unwrap().as_str(), "@ivy:vouch.test");
    assert_eq!(sdk.device_id().unwrap().as_str(), "RUSTSDKDEV");
    sdk.sync_once(SyncSettings::default())
        .await
        .expect("the SDK syncs on Synapse through Vouch");
    let before = sdk.session_tokens().unwrap().access_token;
    sdk.oauth()
        .refresh_access_token()
        .await
        .expect("the SDK refreshes its token");
    let after = sdk.session_tokens().unwrap().access_token;
    assert_ne!(before, after);
    sdk.sync_once(SyncSettings::default())
        .await
        .expect("the refreshed token syncs");
    // The SDK's logout is a revocation of its access token; its revocation client refuses
    // an http:// endpoint (`InsecureUrl`) where its other calls accept one, so the request
    // it would send is sent here.
    let client_id = sdk.oauth().client_id().unwrap().as_str().to_owned();
    let revoked = app
        .send(app.http.post(format!("{}/oauth2/revoke", app.base)).form(&[
            ("token", after.as_str()),
            ("token_type_hint", "access_token"),
            ("client_id", client_id.as_str()),
        ]))
        .await;
    assert_eq!(revoked.status, 200);
    // Synapse forgets the device (its own two-minute cache of introspection answers may
    // still hold the token itself, as after /logout; docs/SYNAPSE.md).
    let (other, _) = app.login_ok("ivy", "correct horse battery").await;
    eventually("the revoked SDK device is gone at Synapse", async || {
        let list = app.get("/_matrix/client/v3/devices", Some(&other)).await;
        !list.ok()["devices"].to_string().contains("RUSTSDKDEV")
    })
    .await;
    chrome.close().await.unwrap();

    // Sign up by SMS (the pages driven over HTTP this time).
    let sdk = sdk_client(&app.base).await;
    let url = sdk_authorization_url(&sdk, 40001, "RUSTSDKSMS", true).await;
    let mut browser = crate::oauth::Browser::new(&app);
    let start = browser.get(url.as_str()).await;
    let page = browser.get(&crate::oauth::location(&start)).await;
    let (action, csrf) = crate::oauth::form(&page);
    let verify = browser
        .post(
            &action,
            &[
                ("csrf", &csrf),
                ("username", "jay"),
                ("password", "correct horse battery"),
                ("phone", "+44 7400 123457"),
            ],
        )
        .await;
    let sms = eventually_sms(&twilio).await;
    let (action, csrf) = crate::oauth::form(&verify);
    let consent = browser
        .post(&action, &[("csrf", &csrf), ("phone_code", &sms)])
        .await;
    let (action, csrf) = crate::oauth::form(&consent);
    let back = browser
        .post(&action, &[("csrf", &csrf), ("decision", "allow")])
        .await;
    let to = url::Url::parse(&crate::oauth::location(&back)).unwrap();
    sdk.oauth()
        .finish_login(UrlOrQuery::from(to))
        .await
        .unwrap();
    assert_eq!(sdk.user_id().unwrap().as_str(), "@jay:vouch.test");
    sdk.sync_once(SyncSettings::default()).await.unwrap();

    // Ivy signs in again, without prompt.
    let sdk = sdk_client(&app.base).await;
    let url = sdk_authorization_url(&sdk, 40002, "RUSTSDKAGN", false).await;
    let mut browser = crate::oauth::Browser::new(&app);
    let start = browser.get(url.as_str()).await;
    let page = browser.get(&crate::oauth::location(&start)).await;
    let (action, csrf) = crate::oauth::form(&page);
    let consent = browser
        .post(
            &action,
            &[
                ("csrf", &csrf),
                ("username", "ivy"),
                ("password", "correct horse battery"),
            ],
        )
        .await;
    let (action, csrf) = crate::oauth::form(&consent);
    let back = browser
        .post(&action, &[("csrf", &csrf), ("decision", "allow")])
        .await;
    let to = url::Url::parse(&crate::oauth::location(&back)).unwrap();
    sdk.oauth()
        .finish_login(UrlOrQuery::from(to))
        .await
        .unwrap();
    assert_eq!(sdk.device_id().unwrap().as_str(), "RUSTSDKAGN");
    sdk.sync_once(SyncSettings::default()).await.unwrap();
}

/// The code of the latest SMS the fake gateway received.
async fn eventually_sms(twilio: &wiremock::MockServer) -> String {
    for _ in 0..100 {
        let got = twilio.received_requests().await.unwrap_or_default();
        if let Some(last) = got.last() {
            let body: std::collections::HashMap<String, String> =
                url::form_urlencoded::parse(&last.body)
                    .into_owned()
                    .collect();
            if let Some(text) = body.get("Body") {
                return crate::sms::code_in(text);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no SMS reached the gateway");
}
