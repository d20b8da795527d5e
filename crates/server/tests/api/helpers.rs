//! The test rig: a real Vouch server on an ephemeral port with a fresh database (a temp
//! SQLite file, or a new PostgreSQL database when `VOUCH_TEST_POSTGRES_URL` is set), a mock
//! clock, and an HTTP client.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::Connection as _;
use tokio::sync::OnceCell;
use vouch_config::Config;
use vouch_core::{MockClock, OsSecretSource};
use vouch_server::Server;

use crate::smtp::SmtpSink;

/// Which engine a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs a test body on SQLite, and again on PostgreSQL when `VOUCH_TEST_POSTGRES_URL` is set.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::helpers::Backend::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if $crate::helpers::postgres_url().is_none() {
                        $crate::helpers::skipped(
                            "PostgreSQL",
                            "set VOUCH_TEST_POSTGRES_URL (see README.md); .ci/run does",
                        );
                        return;
                    }
                    super::$name($crate::helpers::Backend::Postgres).await;
                }
            }
        )*
    };
}

/// Says, once per run and past libtest's output capture, that tests needing `component`
/// returned without running: such a test counts as passed, so the run must say it. With
/// `VOUCH_TEST_REQUIRE_ALL=1` (set by `.ci/run`) a missing component fails the test instead.
pub fn skipped(component: &'static str, how: &str) {
    static SAID: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    assert!(
        std::env::var("VOUCH_TEST_REQUIRE_ALL").ok().as_deref() != Some("1"),
        "VOUCH_TEST_REQUIRE_ALL=1 but {component} is missing: {how}"
    );
    let mut said = SAID
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !said.contains(&component) {
        said.push(component);
        use std::io::Write as _;
        // Written to the file descriptor itself: `eprintln!` is captured for passing tests.
        let _ = writeln!(
            std::io::stderr(),
            "\nNOTE: tests that need {component} were SKIPPED (they show as passed): {how}"
        );
    }
}

/// The PostgreSQL server to make test databases on.
pub fn postgres_url() -> Option<String> {
    std::env::var("VOUCH_TEST_POSTGRES_URL")
        .ok()
        .filter(|s| !s.is_empty())
}

static PG_CLEANED: OnceCell<()> = OnceCell::const_new();

/// Makes a fresh PostgreSQL database and returns its URL. Databases left by earlier runs are
/// dropped the first time.
async fn fresh_postgres_db() -> String {
    sqlx::any::install_default_drivers();
    let admin_url = postgres_url().expect("VOUCH_TEST_POSTGRES_URL");
    let mut conn = sqlx::AnyConnection::connect(&admin_url)
        .await
        .expect("connect to PostgreSQL");
    PG_CLEANED
        .get_or_init(|| async {
            let mut c = sqlx::AnyConnection::connect(&admin_url)
                .await
                .expect("connect to PostgreSQL");
            let rows: Vec<(String,)> = sqlx::query_as(
                "SELECT datname::text FROM pg_database WHERE datname LIKE 'vouch_test_%'",
            )
            .fetch_all(&mut c)
            .await
            .expect("list databases");
            for (name,) in rows {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&mut c)
                .await;
            }
        })
        .await;
    let name = format!(
        "vouch_test_{}",
        vouch_core::secrets::random_string(
            &OsSecretSource,
            b"abcdefghijklmnopqrstuvwxyz0123456789",
            16
        )
    );
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let mut url = url::Url::parse(&admin_url).expect("VOUCH_TEST_POSTGRES_URL is a URL");
    url.set_path(&name);
    url.to_string()
}

/// A running server.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The server's clock.
    pub clock: Arc<MockClock>,
    /// The configuration it runs with.
    pub config: Config,
    /// HTTP client.
    pub http: reqwest::Client,
    /// `http://<addr>/metrics`, when `[metrics] listen` was set.
    pub metrics_url: Option<String>,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// A response: status, JSON body (Null when not JSON) and headers.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    /// The errcode, if any.
    pub fn errcode(&self) -> &str {
        self.body["errcode"].as_str().unwrap_or("")
    }

    /// Asserts a status and errcode.
    #[track_caller]
    pub fn assert_error(&self, status: u16, errcode: &str) {
        assert_eq!(
            (self.status.as_u16(), self.errcode()),
            (status, errcode),
            "unexpected answer: {:?}",
            self.body
        );
        assert!(
            self.body["error"].is_string(),
            "errors carry a human-readable `error`: {:?}",
            self.body
        );
    }

    /// Asserts 200 and returns the body.
    #[track_caller]
    pub fn ok(&self) -> &Value {
        assert_eq!(
            self.status,
            StatusCode::OK,
            "expected 200, got {:?}",
            self.body
        );
        &self.body
    }
}

/// Configuration every test starts from: fast hashing, no rate limits.
pub fn test_config() -> Config {
    let mut config = Config {
        server_name: "vouch.test".into(),
        ..Config::default()
    };
    config.http.listen =
        vouch_config::OneOrMany::One(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    config.rate_limits.enabled = false;
    // Phone verification is on by default (codes go to the log); the SMS tests switch it on
    // with a fake gateway, the others test an email-only server.
    config.sms.enabled = false;
    config.password.argon2_m_cost_kib = 1024;
    config.password.argon2_t_cost = 1;
    config.password.bcrypt_cost = 4;
    config
}

/// Starts a server with the test configuration changed by `adjust`.
pub async fn spawn_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = test_config();
    config.database.url = match backend {
        Backend::Sqlite => format!("sqlite://{}", dir.path().join("vouch.db").display()),
        Backend::Postgres => fresh_postgres_db().await,
    };
    adjust(&mut config);
    config.validate().expect("test configuration is valid");
    let clock = Arc::new(MockClock::default());
    let server = Server::build(config.clone(), clock.clone(), Arc::new(OsSecretSource))
        .await
        .expect("server starts");
    let base = format!("http://{}", server.local_addrs()[0]);
    let metrics_url = server.metrics_addr().map(|a| format!("http://{a}/metrics"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run_until(async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        // Redirects are asserted, not followed (next_link points outside the test).
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    TestApp {
        metrics_url,
        base,
        clock,
        config,
        http,
        _dir: dir,
        _stop: stop,
    }
}

/// Starts a server with the test configuration.
pub async fn spawn(backend: Backend) -> TestApp {
    spawn_with(backend, |_| {}).await
}

/// Points a configuration's mail at an SMTP sink (plain SMTP on 127.0.0.1).
pub fn mail_to(config: &mut Config, sink: &SmtpSink) {
    config.email.transport = vouch_config::EmailTransport::Smtp;
    config.email.smtp.host = "127.0.0.1".into();
    config.email.smtp.port = sink.port;
    config.email.smtp.tls = vouch_config::SmtpTls::None;
    config.email.smtp.timeout = Duration::from_secs(5);
    config.email.from = "Vouch Test <noreply@vouch.test>".into();
    config.email.app_name = "Vouch Test".into();
}

/// Starts a server whose mail goes over SMTP to a fresh sink.
pub async fn spawn_with_mail(
    backend: Backend,
    adjust: impl FnOnce(&mut Config),
) -> (TestApp, SmtpSink) {
    let sink = SmtpSink::start().await;
    let app = spawn_with(backend, |c| {
        mail_to(c, &sink);
        adjust(c);
    })
    .await;
    (app, sink)
}

/// A page as a browser would see it.
#[derive(Debug)]
pub struct Page {
    pub status: StatusCode,
    pub html: String,
    pub headers: reqwest::header::HeaderMap,
}

/// The value of `<input name="{name}" value="...">` in a page.
fn input_value(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\""))?;
    let rest = &html[at..];
    let start = rest.find("value=\"")? + 7;
    let end = rest[start..].find('"')?;
    Some(unescape(&rest[start..start + end]))
}

/// Decodes the HTML entities minijinja writes, as a browser does.
fn unescape(text: &str) -> String {
    text.replace("&#x2f;", "/")
        .replace("&#x27;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

impl TestApp {
    /// Sends a request with an optional JSON body and access token.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> Reply {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        self.send(req).await
    }

    /// Sends a raw body.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: &'static str,
        token: Option<&str>,
    ) -> Reply {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        self.send(req).await
    }

    /// Sends a prepared request.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let res = req.send().await.expect("request reaches the server");
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            body,
            headers,
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.call(Method::GET, path, None, token).await
    }

    pub async fn post(&self, path: &str, body: Value, token: Option<&str>) -> Reply {
        self.call(Method::POST, path, Some(body), token).await
    }

    pub async fn put(&self, path: &str, body: Value, token: Option<&str>) -> Reply {
        self.call(Method::PUT, path, Some(body), token).await
    }

    /// Opens a page (GET), as a browser or a mail scanner would.
    pub async fn open(&self, url: &str) -> Page {
        let res = self.http.get(url).send().await.expect("page loads");
        Page {
            status: res.status(),
            headers: res.headers().clone(),
            html: res.text().await.unwrap(),
        }
    }

    /// Opens a mail's link and presses the confirmation page's button, as a user does.
    /// Returns the page (or redirect) the button leads to.
    pub async fn confirm(&self, link: &str) -> Page {
        let page = self.open(link).await;
        assert_eq!(
            page.status,
            StatusCode::OK,
            "confirmation page: {}",
            page.html
        );
        let action = unescape(
            page.html
                .split("action=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .expect("a form"),
        );
        let fields: Vec<(String, String)> = ["sid", "client_secret", "token"]
            .iter()
            .map(|n| {
                (
                    (*n).to_owned(),
                    input_value(&page.html, n)
                        .unwrap_or_else(|| panic!("field {n} in {}", page.html)),
                )
            })
            .collect();
        let res = self
            .http
            .post(format!("{}{action}", self.base))
            .form(&fields)
            .send()
            .await
            .unwrap_or_else(|e| panic!("form posts to {action:?}: {e}"));
        Page {
            status: res.status(),
            headers: res.headers().clone(),
            html: res.text().await.unwrap(),
        }
    }

    /// `POST /{kind}/email/requestToken` (`kind`: `register`, `account/password`, `account/3pid`).
    pub async fn request_email_token(
        &self,
        kind: &str,
        email: &str,
        client_secret: &str,
        send_attempt: u64,
    ) -> Reply {
        self.post(
            &format!("/_matrix/client/v3/{kind}/email/requestToken"),
            json!({ "email": email, "client_secret": client_secret, "send_attempt": send_attempt }),
            None,
        )
        .await
    }

    /// Registers `username` through the dummy flow and returns (user_id, access_token, device_id).
    pub async fn register(&self, username: &str, password: &str) -> (String, String, String) {
        let body = json!({ "username": username, "password": password });
        let first = self
            .post("/_matrix/client/v3/register", body.clone(), None)
            .await;
        assert_eq!(first.status, 401, "{:?}", first.body);
        let session = first.body["session"].as_str().expect("session").to_owned();
        let mut body = body;
        body["auth"] = json!({ "type": "m.login.dummy", "session": session });
        let done = self.post("/_matrix/client/v3/register", body, None).await;
        let b = done.ok();
        (
            b["user_id"].as_str().unwrap().to_owned(),
            b["access_token"].as_str().unwrap().to_owned(),
            b["device_id"].as_str().unwrap().to_owned(),
        )
    }

    /// Logs in by password; returns the whole reply.
    pub async fn login(&self, user: &str, password: &str) -> Reply {
        self.post(
            "/_matrix/client/v3/login",
            json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": user }, "password": password }),
            None,
        )
        .await
    }

    /// Logs in and returns (access_token, device_id).
    pub async fn login_ok(&self, user: &str, password: &str) -> (String, String) {
        let r = self.login(user, password).await;
        let b = r.ok();
        (
            b["access_token"].as_str().unwrap().to_owned(),
            b["device_id"].as_str().unwrap().to_owned(),
        )
    }

    /// Runs a UIA-protected call: first without auth (expects 401 + session), then with the
    /// password stage. Returns the final reply.
    pub async fn with_password_uia(
        &self,
        method: Method,
        path: &str,
        mut body: Value,
        token: &str,
        user_id: &str,
        password: &str,
    ) -> Reply {
        let first = self
            .call(method.clone(), path, Some(body.clone()), Some(token))
            .await;
        assert_eq!(first.status, 401, "UIA first answers 401: {:?}", first.body);
        assert_eq!(
            first.body["flows"],
            json!([{ "stages": ["m.login.password"] }])
        );
        let session = first.body["session"].as_str().expect("session").to_owned();
        body["auth"] = json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": user_id },
            "password": password,
            "session": session,
        });
        self.call(method, path, Some(body), Some(token)).await
    }
}
