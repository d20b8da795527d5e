//! `vouch-bench`: starts the release `vouch` binary (SQLite, or PostgreSQL with
//! `--postgres`) with an SMTP sink, drives it over HTTP with a fixed concurrency for a fixed
//! time, and prints requests/s, p50, p99 and the server's peak RSS per scenario. A bare hyper
//! server answering a fixed JSON body is measured in the same run: the machine's limit, and
//! the proof that the load generator is not the bottleneck.
//!
//! ```sh
//! cargo build --release -p vouch -p vouch-bench
//! target/release/vouch-bench --duration 10 --sweep 1,4,16,64 --out bench.json
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(about = "Benchmarks a release vouch binary over HTTP")]
struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Concurrency of the main table.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Concurrencies for the chart (comma-separated); empty: none.
    #[arg(long, default_value = "")]
    sweep: String,
    /// PostgreSQL URL of a database to use (emptied first); default: SQLite in a temp dir.
    #[arg(long)]
    postgres: Option<String>,
    /// The vouch binary.
    #[arg(long, default_value = "target/release/vouch")]
    vouch: PathBuf,
    /// Write the results as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Before measuring, load this many accounts, as many expired validation sessions and a
    /// tenth as many live ones (the "large tables" figure).
    #[arg(long, default_value_t = 0)]
    preload: u64,
    /// Run Vouch in front of a Synapse from this virtual environment (its
    /// `matrix_authentication_service` mode): `versions` is then forwarded, and the
    /// `introspect` and `synapse_versions` (Synapse asked directly) scenarios make sense.
    #[arg(long)]
    synapse_venv: Option<PathBuf>,
    /// Table mode: measure the server at this base URL (Vouch or another, e.g. Synapse)
    /// instead of starting one, with the same generator: `GET /versions`, an email
    /// `requestToken` (`/account/3pid/email/requestToken`, fresh addresses) and
    /// `POST /login` as `--user`, printed as one Markdown table. The server must send mail
    /// somewhere and have the user; rate limits should be off.
    #[arg(long)]
    target: Option<String>,
    /// Table mode: run the benchmark's SMTP sink on this port for the target server's mail
    /// (it accepts every mail and reads none), so both servers of a comparison send to the
    /// same sink.
    #[arg(long)]
    smtp_port: Option<u16>,
    /// Table mode: the target server's process ID, for its peak RSS (`/proc/PID/status`).
    #[arg(long)]
    target_pid: Option<u32>,
    /// Table mode: the user `POST /login` signs in as.
    #[arg(long, default_value = "bench")]
    user: String,
    /// Table mode: that user's password.
    #[arg(long, default_value = "bench battery staple")]
    password: String,
    /// Only serve the bare hyper server (the ceiling) and print its address, until killed:
    /// for another load generator (e.g. `wrk -t1 -c16`) to measure it beside a server.
    #[arg(long)]
    serve_bare: bool,
    /// Scenarios to run (comma-separated); default: all.
    #[arg(
        long,
        default_value = "bare,versions,login,register,request_token,request_token_again,email_registration,oauth_refresh,oauth_page"
    )]
    scenarios: String,
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// One measurement.
#[derive(Debug, Clone, Serialize)]
struct Measurement {
    scenario: String,
    concurrency: usize,
    requests: u64,
    errors: u64,
    seconds: f64,
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Who the `login` scenario signs in as (table mode's `--user`, `--password`).
static LOGIN_AS: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();

/// Table mode: the same three figures for the server at `target`, and the bare hyper
/// server beside them as the generator's ceiling, as one Markdown table.
async fn table(args: &Args, target: &str) -> anyhow::Result<()> {
    let _ = LOGIN_AS.set((args.user.clone(), args.password.clone()));
    let target = target.trim_end_matches('/').to_owned();
    let links = Arc::new(Mutex::new(HashMap::new()));
    if let Some(port) = args.smtp_port {
        smtp_sink(links.clone(), port).await?;
    }
    let bare = bare_server().await?;
    let duration = Duration::from_secs(args.duration);
    let c = args.concurrency;
    let mut rows = Vec::new();
    let ceiling = measure(
        "bare",
        &format!("http://{bare}"),
        c,
        duration,
        links.clone(),
    )
    .await;
    let mut drained = None;
    for scenario in ["versions", "request_token", "login"] {
        let (sent_from, started) = (DELIVERED.load(Ordering::Relaxed), Instant::now());
        let m = measure(scenario, &target, c, duration, links.clone()).await;
        if scenario == "request_token" && args.smtp_port.is_some() {
            // Each accepted request owes one mail to the sink: the rate from the first
            // request until the last of them arrived.
            drained = drain(sent_from + m.requests, sent_from, started).await;
        }
        rows.push(m);
    }
    println!(
        "| figure ({target}, c={c}, {} s) | req/s | p50 ms | p99 ms | errors |",
        args.duration
    );
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| bare hyper, same body (the generator's ceiling) | {:.0} | {:.2} | {:.2} | {} |",
        ceiling.requests_per_second, ceiling.p50_ms, ceiling.p99_ms, ceiling.errors
    );
    let names = [
        "`GET /_matrix/client/versions`",
        "email `requestToken`",
        "`POST /login`",
    ];
    for (name, m) in names.iter().zip(&rows) {
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {} |",
            m.requests_per_second, m.p50_ms, m.p99_ms, m.errors
        );
    }
    if args.smtp_port.is_some() {
        match drained {
            Some(rate) => {
                println!("| its mails reaching the SMTP sink | {rate:.0} mails/s | | | |")
            }
            None => println!("| its mails reaching the SMTP sink | not all within 2 min | | | |"),
        }
    }
    if let Some(pid) = args.target_pid {
        println!(
            "| peak RSS | {:.1} MiB | | | |",
            peak_rss_kib(pid) as f64 / 1024.0
        );
    }
    if let Some(out) = &args.out {
        rows.insert(0, ceiling);
        std::fs::write(
            out,
            serde_json::to_string_pretty(&json!({
                "target": target,
                "measurements": rows,
                "peak_rss_mib": args.target_pid.map(|p| peak_rss_kib(p) as f64 / 1024.0),
                "mails_per_second": drained,
            }))?,
        )?;
    }
    Ok(())
}

/// A bare hyper server answering a fixed JSON body.
async fn bare_server() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(|_req: Request<hyper::body::Incoming>| async {
                        Ok::<_, Infallible>(
                            Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from_static(
                                    br#"{"versions":["v1.1","v1.19"]}"#,
                                )))
                                .expect("response"),
                        )
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// The secret Vouch and the benchmark's Synapse share.
const HS_SECRET: &str = "bench-secret-0123456789abcdef0123456789abcdef";

/// An access token of the bench user, for `introspect`.
static BENCH_TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Synapse's base URL, for `synapse_versions`.
static SYNAPSE_BASE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// A Synapse child process in `matrix_authentication_service` mode.
struct Synapse {
    child: std::process::Child,
}

impl Drop for Synapse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Synapse {
    /// Starts Synapse from `venv` on `port` (SQLite in `dir`), with Vouch at `vouch_port`
    /// as its account service, and waits until it answers.
    async fn start(
        venv: &std::path::Path,
        dir: &std::path::Path,
        port: u16,
        vouch_port: u16,
        http: &HttpClient,
    ) -> anyhow::Result<Synapse> {
        let d = dir.display();
        let config = dir.join("homeserver.yaml");
        std::fs::write(
            &config,
            format!(
                "server_name: \"bench.example\"\npublic_baseurl: \"http://127.0.0.1:{vouch_port}/\"\n\
                 pid_file: \"{d}/hs.pid\"\nreport_stats: false\nlisteners:\n  - port: {port}\n    \
                 bind_addresses: [\"127.0.0.1\"]\n    type: http\n    tls: false\n    x_forwarded: true\n    \
                 resources:\n      - names: [client]\n        compress: false\ndatabase:\n  name: sqlite3\n  \
                 args:\n    database: \"{d}/homeserver.db\"\nmedia_store_path: \"{d}/media\"\n\
                 signing_key_path: \"{d}/signing.key\"\ntrusted_key_servers: []\n\
                 suppress_key_server_warning: true\nenable_metrics: false\nlog_config: \"{d}/log.yaml\"\n\
                 matrix_authentication_service:\n  enabled: true\n  endpoint: \"http://127.0.0.1:{vouch_port}/\"\n  \
                 secret: \"{HS_SECRET}\"\n"
            ),
        )?;
        std::fs::write(
            dir.join("log.yaml"),
            "version: 1\nroot:\n  level: WARNING\n  handlers: []\ndisable_existing_loggers: false\n",
        )?;
        let python = venv.join("bin/python");
        let keys = std::process::Command::new(&python)
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(&config)
            .arg("--generate-keys")
            .output()?;
        anyhow::ensure!(keys.status.success(), "synapse --generate-keys failed");
        let child = std::process::Command::new(&python)
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("cannot start Synapse")?;
        let synapse = Synapse { child };
        let base = format!("http://127.0.0.1:{port}");
        for _ in 0..600 {
            if let Ok((200, _)) = call(
                http,
                "GET",
                &format!("{base}/_matrix/client/versions"),
                None,
            )
            .await
            {
                return Ok(synapse);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("Synapse did not start")
    }

    /// Peak resident memory (VmHWM) in KiB.
    fn peak_rss_kib(&self) -> u64 {
        peak_rss_kib(self.child.id())
    }
}

/// A process's peak resident memory (VmHWM) in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_owned)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// The next unused range of request numbers.
static RANGES: AtomicU64 = AtomicU64::new(0);

/// Mails the SMTP sink has accepted.
static DELIVERED: AtomicU64 = AtomicU64::new(0);

/// Waits until the sink has accepted `target` mails in all (at most two minutes) and
/// returns the delivery rate since `since`, when `sent_from` mails had been accepted.
async fn drain(target: u64, sent_from: u64, since: Instant) -> Option<f64> {
    let limit = Instant::now() + Duration::from_secs(120);
    while DELIVERED.load(Ordering::Relaxed) < target {
        if Instant::now() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Some((target - sent_from) as f64 / since.elapsed().as_secs_f64())
}

/// An SMTP sink that keeps the confirmation link of each mail, by recipient.
/// Listens on `port` (0: any free one) and returns the port.
async fn smtp_sink(links: Arc<Mutex<HashMap<String, String>>>, port: u16) -> anyhow::Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let links = links.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read);
                let _ = write.write_all(b"220 bench ESMTP\r\n").await;
                let mut line = String::new();
                let mut to = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let upper = line.to_ascii_uppercase();
                    let reply: &[u8] = if upper.starts_with("EHLO") {
                        b"250-bench\r\n250 8BITMIME\r\n"
                    } else if upper.starts_with("RCPT TO") {
                        to = line[8..].trim().trim_matches(['<', '>']).to_owned();
                        b"250 OK\r\n"
                    } else if upper.starts_with("DATA") {
                        let _ = write.write_all(b"354 go\r\n").await;
                        // Only the sign-up scenario's mails (`er…`) are read for their
                        // link; the rest are accepted as a mail server would, unparsed.
                        let wanted = to.starts_with("er");
                        let mut raw = String::new();
                        loop {
                            line.clear();
                            if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            if line == ".\r\n" {
                                break;
                            }
                            if wanted {
                                raw.push_str(line.strip_prefix('.').unwrap_or(&line));
                            }
                        }
                        DELIVERED.fetch_add(1, Ordering::Relaxed);
                        if wanted && let Some(link) = link_in(&raw) {
                            links.lock().expect("links").insert(to.clone(), link);
                        }
                        b"250 OK\r\n"
                    } else if upper.starts_with("QUIT") {
                        let _ = write.write_all(b"221 bye\r\n").await;
                        return;
                    } else {
                        b"250 OK\r\n"
                    };
                    if write.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(port)
}

fn link_in(raw: &str) -> Option<String> {
    let mail = mailparse::parse_mail(raw.as_bytes()).ok()?;
    let text = mail.subparts.first()?.get_body().ok()?;
    text.split_whitespace()
        .find(|w| w.contains("/_vouch/email/validate?"))
        .map(str::to_owned)
}

/// The vouch child process.
struct Vouch {
    child: std::process::Child,
    base: String,
}

impl Drop for Vouch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Vouch {
    /// Starts it and waits until it answers; returns it and the time that took.
    async fn start(
        bin: &PathBuf,
        config: &PathBuf,
        port: u16,
        http: &HttpClient,
    ) -> anyhow::Result<(Vouch, Duration)> {
        let started = Instant::now();
        let child = std::process::Command::new(bin)
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let vouch = Vouch {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..2000 {
            if let Ok((200, _)) = call(
                http,
                "GET",
                &format!("{}/_matrix/client/versions", vouch.base),
                None,
            )
            .await
            {
                return Ok((vouch, started.elapsed()));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        anyhow::bail!("vouch did not start")
    }

    /// Peak resident memory (VmHWM) in KiB.
    fn peak_rss_kib(&self) -> u64 {
        peak_rss_kib(self.child.id())
    }
}

async fn call(
    http: &HttpClient,
    method: &str,
    url: &str,
    body: Option<&Value>,
) -> anyhow::Result<(u16, Value)> {
    let mut req = Request::builder().method(method).uri(url);
    let bytes = match body {
        Some(b) => {
            req = req.header("content-type", "application/json");
            Bytes::from(serde_json::to_vec(b)?)
        }
        None => Bytes::new(),
    };
    let res = http.request(req.body(Full::new(bytes))?).await?;
    let status = res.status().as_u16();
    let body = res.into_body().collect().await?.to_bytes();
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// Refresh tokens of OAuth 2.0 sessions (with their client), for `oauth_refresh`.
static OAUTH_REFRESH: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
/// An open authorization request's sign-in page, for `oauth_page`.
static OAUTH_PAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Posts a form (with a cookie header, if given); the status, the `Set-Cookie` and
/// `Location` values, and the body.
async fn form_raw(
    http: &HttpClient,
    url: &str,
    fields: &[(&str, &str)],
    cookie: Option<&str>,
) -> anyhow::Result<(u16, Vec<String>, Option<String>, Bytes)> {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    let mut req = Request::builder()
        .method("POST")
        .uri(url)
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let res = http
        .request(req.body(Full::new(Bytes::from(body)))?)
        .await?;
    let status = res.status().as_u16();
    let cookies = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .map(str::to_owned)
        .collect();
    let location = res
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = res.into_body().collect().await?.to_bytes();
    Ok((status, cookies, location, body))
}

/// Posts a form and reads a JSON answer.
async fn form_json(
    http: &HttpClient,
    url: &str,
    fields: &[(&str, &str)],
    cookie: Option<&str>,
) -> anyhow::Result<(u16, Value)> {
    let (status, _, _, body) = form_raw(http, url, fields, cookie).await?;
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// GETs `url` with a cookie; the status, `Set-Cookie` values, `Location` and body.
async fn get_raw(
    http: &HttpClient,
    url: &str,
    cookie: &str,
) -> anyhow::Result<(u16, Vec<String>, Option<String>, String)> {
    let req = Request::builder()
        .method("GET")
        .uri(url)
        .header("cookie", cookie)
        .body(Full::new(Bytes::new()))?;
    let res = http.request(req).await?;
    let status = res.status().as_u16();
    let cookies = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .map(str::to_owned)
        .collect();
    let location = res
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = String::from_utf8_lossy(&res.into_body().collect().await?.to_bytes()).into_owned();
    Ok((status, cookies, location, body))
}

/// The value of attribute `name` after `after` in a page.
fn attr(html: &str, after: &str, name: &str) -> Option<String> {
    let at = html.find(after)?;
    let rest = &html[at..];
    let start = rest.find(&format!("{name}=\""))? + name.len() + 2;
    let end = rest[start..].find('"')?;
    Some(
        rest[start..start + end]
            .replace("&#x2f;", "/")
            .replace("&amp;", "&"),
    )
}

/// Opens `sessions` OAuth 2.0 sessions for the bench user the way an app does (one sign-in
/// in the browser, then one consent per session), and one open request for the page figure.
async fn oauth_setup(http: &HttpClient, base: &str, sessions: usize) -> anyhow::Result<()> {
    let (status, client) = call(
        http,
        "POST",
        &format!("{base}/oauth2/registration"),
        Some(&json!({
            "client_name": "bench",
            "client_uri": "https://bench.example/",
            "redirect_uris": ["http://127.0.0.1/cb"],
            "application_type": "native",
            "grant_types": ["authorization_code", "refresh_token"],
        })),
    )
    .await?;
    anyhow::ensure!(status == 201, "client registration: {client}");
    let client_id = client["client_id"].as_str().unwrap_or_default().to_owned();
    let (verifier, challenge) = (
        "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
    );
    let mut jar: Vec<String> = Vec::new();
    for i in 0..=sessions {
        let q = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", &client_id)
            .append_pair("redirect_uri", "http://127.0.0.1:9/cb")
            .append_pair(
                "scope",
                &format!("urn:matrix:client:api:* urn:matrix:client:device:BENCH{i}"),
            )
            .append_pair("code_challenge", challenge)
            .append_pair("code_challenge_method", "S256")
            .finish();
        let (_, _, page, _) = get_raw(http, &format!("{base}/oauth2/authorize?{q}"), "").await?;
        let page = page.context("the authorization endpoint redirects to its page")?;
        if i == sessions {
            // Left open: its sign-in page is what `oauth_page` renders.
            let _ = OAUTH_PAGE.set(page);
            break;
        }
        let (_, cookies, _, mut html) = get_raw(http, &page, &jar.join("; ")).await?;
        jar.extend(cookies);
        if html.contains("name=\"password\"") {
            let action = attr(&html, "<form", "action").context("sign-in form")?;
            let csrf = attr(&html, "name=\"csrf\"", "value").context("csrf")?;
            let (status, cookies, _, body) = form_raw(
                http,
                &action,
                &[
                    ("csrf", &csrf),
                    ("username", "bench"),
                    ("password", "bench battery staple"),
                ],
                Some(&jar.join("; ")),
            )
            .await?;
            anyhow::ensure!(status == 200, "sign-in: {status}");
            jar.extend(cookies);
            html = String::from_utf8_lossy(&body).into_owned();
        }
        let action = attr(&html, "<form", "action").context("consent form")?;
        let csrf = attr(&html, "name=\"csrf\"", "value").context("csrf")?;
        let (_, _, to, _) = form_raw(
            http,
            &action,
            &[("csrf", &csrf), ("decision", "allow")],
            Some(&jar.join("; ")),
        )
        .await?;
        let to = url::Url::parse(&to.context("consent redirects")?)?;
        let code = to
            .query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .context("a code")?;
        let (status, tokens) = form_json(
            http,
            &format!("{base}/oauth2/token"),
            &[
                ("grant_type", "authorization_code"),
                ("client_id", &client_id),
                ("code", &code),
                ("redirect_uri", "http://127.0.0.1:9/cb"),
                ("code_verifier", verifier),
            ],
            None,
        )
        .await?;
        anyhow::ensure!(status == 200, "token exchange: {tokens}");
        OAUTH_REFRESH.lock().expect("pool").push((
            client_id.clone(),
            tokens["refresh_token"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        ));
    }
    Ok(())
}

async fn form(http: &HttpClient, url: &str, fields: &[(&str, &str)]) -> anyhow::Result<u16> {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    let req = Request::builder()
        .method("POST")
        .uri(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(body)))?;
    let res = http.request(req).await?;
    let status = res.status().as_u16();
    let _ = res.into_body().collect().await?;
    Ok(status)
}

/// The numbers the `request_token` scenario gave its requests, from the first to one past
/// the last (`request_token_again` repeats them). Each measurement numbers from a range of
/// its own (`RANGES`), so the range does not start at zero.
static REQUEST_TOKENS_FROM: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(u64::MAX);
static REQUEST_TOKENS_MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// One unit of work of a scenario: `Ok(true)` counts, `Ok(false)` is an error answer.
async fn run_once(
    scenario: &str,
    http: &HttpClient,
    base: &str,
    n: u64,
    links: &Mutex<HashMap<String, String>>,
) -> anyhow::Result<bool> {
    match scenario {
        "introspect" => {
            let token = BENCH_TOKEN.get().map_or("", String::as_str);
            let body = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("token", token)
                .finish();
            let req = Request::builder()
                .method("POST")
                .uri(format!("{base}/oauth2/introspect"))
                .header("content-type", "application/x-www-form-urlencoded")
                .header("authorization", format!("Bearer {HS_SECRET}"))
                .body(Full::new(Bytes::from(body)))?;
            let res = http.request(req).await?;
            let ok = res.status() == 200;
            let body = res.into_body().collect().await?.to_bytes();
            Ok(ok && body.starts_with(br#"{"active":true"#))
        }
        "synapse_versions" => {
            let base = SYNAPSE_BASE.get().map_or(base, String::as_str);
            Ok(call(
                http,
                "GET",
                &format!("{base}/_matrix/client/versions"),
                None,
            )
            .await?
            .0 == 200)
        }
        "bare" | "versions" => Ok(call(
            http,
            "GET",
            &format!("{base}/_matrix/client/versions"),
            None,
        )
        .await?
        .0 == 200),
        "login" => {
            let (user, password) = LOGIN_AS
                .get()
                .map_or(("bench", "bench battery staple"), |(u, p)| {
                    (u.as_str(), p.as_str())
                });
            let body = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": user }, "password": password });
            Ok(call(
                http,
                "POST",
                &format!("{base}/_matrix/client/v3/login"),
                Some(&body),
            )
            .await?
            .0 == 200)
        }
        "register" => {
            let name = format!("r{n}x{}", std::process::id());
            let body = json!({ "username": name, "password": "bench battery staple", "inhibit_login": true });
            let url = format!("{base}/_matrix/client/v3/register");
            let (_, first) = call(http, "POST", &url, Some(&body)).await?;
            let mut b = body;
            b["auth"] = json!({ "type": "m.login.dummy", "session": first["session"] });
            Ok(call(http, "POST", &url, Some(&b)).await?.0 == 200)
        }
        "request_token" => {
            // Fresh in every run, also against a server an earlier run used (table mode):
            // a repeated address and secret would only get the existing session back.
            let id = std::process::id();
            let body = json!({ "email": format!("rt{n}x{id}@bench.example"), "client_secret": format!("cs{n}x{id}"), "send_attempt": 1 });
            let ok = call(
                http,
                "POST",
                &format!("{base}/_matrix/client/v3/account/3pid/email/requestToken"),
                Some(&body),
            )
            .await?
            .0 == 200;
            // `request_token_again` asks for the first ones again.
            if ok {
                REQUEST_TOKENS_FROM.fetch_min(n, std::sync::atomic::Ordering::Relaxed);
                REQUEST_TOKENS_MADE.fetch_max(n + 1, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(ok)
        }
        "request_token_again" => {
            // Read-heavy: the addresses and secrets the `request_token` scenario used, asked
            // for again, so each request only reads its existing session (no mail); without
            // that scenario before it, 10,000 addresses are made first.
            let from = REQUEST_TOKENS_FROM.load(std::sync::atomic::Ordering::Relaxed);
            let made = REQUEST_TOKENS_MADE.load(std::sync::atomic::Ordering::Relaxed);
            let k = if made > from {
                from + n % (made - from)
            } else {
                n % 10_000
            };
            let id = std::process::id();
            let body = json!({ "email": format!("rt{k}x{id}@bench.example"), "client_secret": format!("cs{k}x{id}"), "send_attempt": 1 });
            Ok(call(
                http,
                "POST",
                &format!("{base}/_matrix/client/v3/account/3pid/email/requestToken"),
                Some(&body),
            )
            .await?
            .0 == 200)
        }
        "email_registration" => {
            let email = format!("er{n}@bench.example");
            let secret = format!("ecs{n}");
            let reg = format!("{base}/_matrix/client/v3/register");
            let body = json!({ "username": format!("e{n}x{}", std::process::id()), "password": "bench battery staple", "inhibit_login": true });
            let (_, first) = call(http, "POST", &reg, Some(&body)).await?;
            let (status, token) = call(
                http,
                "POST",
                &format!("{base}/_matrix/client/v3/register/email/requestToken"),
                Some(&json!({ "email": email, "client_secret": secret, "send_attempt": 1 })),
            )
            .await?;
            if status != 200 {
                return Ok(false);
            }
            let mut link = None;
            for _ in 0..10_000 {
                link = links.lock().expect("links").remove(&email);
                if link.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let Some(link) = link else { return Ok(false) };
            let parsed = url::Url::parse(&link)?;
            let q: HashMap<String, String> = parsed.query_pairs().into_owned().collect();
            let (page, _) = call(http, "GET", &link, None).await?;
            if page != 200 {
                return Ok(false);
            }
            let confirm = form(
                http,
                &format!("{base}/_vouch/email/validate"),
                &[
                    ("sid", &q["sid"]),
                    ("client_secret", &q["client_secret"]),
                    ("token", &q["token"]),
                ],
            )
            .await?;
            if confirm != 200 {
                return Ok(false);
            }
            let mut b = body;
            b["auth"] = json!({ "type": "m.login.email.identity", "session": first["session"], "threepid_creds": { "sid": token["sid"], "client_secret": secret } });
            Ok(call(http, "POST", &reg, Some(&b)).await?.0 == 200)
        }
        "oauth_refresh" => {
            // Each session's chain of refresh tokens is one worker's at a time.
            let Some((client_id, token)) = OAUTH_REFRESH.lock().expect("pool").pop() else {
                return Ok(false);
            };
            let (status, answer) = form_json(
                http,
                &format!("{base}/oauth2/token"),
                &[
                    ("grant_type", "refresh_token"),
                    ("client_id", &client_id),
                    ("refresh_token", &token),
                ],
                None,
            )
            .await?;
            let next = answer["refresh_token"].as_str().map(str::to_owned);
            OAUTH_REFRESH
                .lock()
                .expect("pool")
                .push((client_id, next.clone().unwrap_or(token)));
            Ok(status == 200 && next.is_some())
        }
        "oauth_page" => {
            let page = OAUTH_PAGE.get().map_or("", String::as_str);
            let req = Request::builder()
                .method("GET")
                .uri(page)
                .body(Full::new(Bytes::new()))?;
            let res = http.request(req).await?;
            let ok = res.status() == 200;
            let body = res.into_body().collect().await?.to_bytes();
            Ok(ok && body.windows(8).any(|w| w == b"password"))
        }
        other => anyhow::bail!("unknown scenario {other}"),
    }
}

/// Whether any OAuth 2.0 scenario is asked for.
fn scenarios_arg_has_oauth(scenarios: &str) -> bool {
    scenarios.split(',').any(|s| s.trim().starts_with("oauth_"))
}

/// The largest concurrency of the sweep (0: none).
fn sweep_max(sweep: &str) -> usize {
    sweep
        .split(',')
        .filter_map(|c| c.trim().parse::<usize>().ok())
        .max()
        .unwrap_or(0)
}

/// Drives `scenario` with `concurrency` workers for `duration`.
async fn measure(
    scenario: &str,
    base: &str,
    concurrency: usize,
    duration: Duration,
    links: Arc<Mutex<HashMap<String, String>>>,
) -> Measurement {
    let http: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency)
        .build_http();
    // Each measurement numbers its requests from a fresh range, so no address, client
    // secret or username repeats across measurements (a repeated requestToken is an
    // idempotent no-op and would flatter the figures).
    let counter = Arc::new(AtomicU64::new(
        RANGES.fetch_add(1_000_000_000, Ordering::Relaxed),
    ));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (http, base, scenario, counter, errors, links) = (
            http.clone(),
            base.to_owned(),
            scenario.to_owned(),
            counter.clone(),
            errors.clone(),
            links.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                match run_once(&scenario, &http, &base, n, &links).await {
                    Ok(true) => latencies.push(t.elapsed()),
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap_or_default());
    }
    let seconds = started.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Measurement {
        scenario: scenario.to_owned(),
        concurrency,
        requests: all.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        seconds,
        requests_per_second: all.len() as f64 / seconds,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    }
}

/// Fills the tables the way a large, long-running server's look: `n` accounts, `n` expired
/// validation sessions and `n / 10` live ones, in multi-row inserts.
async fn preload(database: &str, n: u64) -> anyhow::Result<()> {
    let db = vouch_storage::Db::connect(database, 4).await?;
    let now = 1_790_000_000_000_i64;
    let batch = 500_u64;
    let mut i = 0;
    while i < n {
        let end = (i + batch).min(n);
        let mut users = String::from(
            "INSERT INTO users (user_id, localpart, password_hash, created_at) VALUES ",
        );
        let mut sessions = String::from(
            "INSERT INTO validation_sessions (sid, medium, address, client_secret, purpose, token_hash, token_expires_at, send_attempt, created_at, updated_at) VALUES ",
        );
        for k in i..end {
            let sep = if k == i { "" } else { "," };
            users.push_str(&format!(
                "{sep}('@pre{k}:bench.example', 'pre{k}', 'x', {now})"
            ));
            // One expired long ago for each account, and a live one for every tenth.
            let expired = now - 86_400_000;
            sessions.push_str(&format!(
                "{sep}('presid{k}', 'email', 'pre{k}@bench.example', 'cs', 'register', 'h', {expired}, 1, {expired}, {expired})"
            ));
            if k % 10 == 0 {
                let live = i64::MAX / 2;
                sessions.push_str(&format!(
                    ",('prelive{k}', 'email', 'live{k}@bench.example', 'cs', 'add_threepid', 'h', {live}, 1, {now}, {now})"
                ));
            }
        }
        let mut tx = db.pool().begin().await?;
        sqlx::query(sqlx::AssertSqlSafe(users))
            .execute(&mut *tx)
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(sessions))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        i = end;
    }
    db.close().await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.serve_bare {
        println!("http://{}", bare_server().await?);
        return std::future::pending().await;
    }
    if let Some(target) = &args.target {
        return table(&args, target).await;
    }
    let dir = tempfile::tempdir()?;
    let links = Arc::new(Mutex::new(HashMap::new()));
    let smtp_port = smtp_sink(links.clone(), 0).await?;
    let bare = bare_server().await?;
    let port = TcpListener::bind("127.0.0.1:0").await?.local_addr()?.port();
    let database = args
        .postgres
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("bench.db").display()));
    let config = dir.path().join("vouch.toml");
    std::fs::write(
        &config,
        format!(
            r#"server_name = "bench.example"
public_baseurl = "http://127.0.0.1:{port}/"
[http]
listen = "127.0.0.1:{port}"
[database]
url = "{database}"
[rate_limits]
enabled = false
[password]
scheme = "bcrypt"
bcrypt_cost = 12
[sms]
enabled = false
[email]
transport = "smtp"
from = "Bench <noreply@bench.example>"
[email.smtp]
host = "127.0.0.1"
port = {smtp_port}
tls = "none"
[oauth]
enabled = true
[logging]
level = "warn"
"#
        ),
    )?;
    let http: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let synapse = match &args.synapse_venv {
        Some(venv) => {
            let synapse_port = TcpListener::bind("127.0.0.1:0").await?.local_addr()?.port();
            let hs_dir = dir.path().join("synapse");
            std::fs::create_dir_all(&hs_dir)?;
            let synapse = Synapse::start(venv, &hs_dir, synapse_port, port, &http).await?;
            let base = format!("http://127.0.0.1:{synapse_port}");
            let _ = SYNAPSE_BASE.set(base.clone());
            let mut text = std::fs::read_to_string(&config)?;
            text.push_str(&format!(
                "[homeserver]\nurl = \"{base}\"\nsecret = \"{HS_SECRET}\"\n"
            ));
            std::fs::write(&config, text)?;
            Some(synapse)
        }
        None => None,
    };
    let (first, cold_start) = Vouch::start(&args.vouch, &config, port, &http).await?;
    drop(first);
    if args.preload > 0 {
        let t = Instant::now();
        preload(&database, args.preload).await?;
        eprintln!(
            "preloaded {} accounts, {} expired and {} live validation sessions in {:.1} s",
            args.preload,
            args.preload,
            args.preload / 10,
            t.elapsed().as_secs_f64()
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (vouch, warm_start) = Vouch::start(&args.vouch, &config, port, &http).await?;
    let user =
        json!({ "username": "bench", "password": "bench battery staple", "inhibit_login": true });
    let (_, first) = call(
        &http,
        "POST",
        &format!("{}/_matrix/client/v3/register", vouch.base),
        Some(&user),
    )
    .await?;
    let mut u = user;
    u["auth"] = json!({ "type": "m.login.dummy", "session": first["session"] });
    call(
        &http,
        "POST",
        &format!("{}/_matrix/client/v3/register", vouch.base),
        Some(&u),
    )
    .await?;

    if synapse.is_some() {
        let login = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "bench" }, "password": "bench battery staple" });
        let (status, answer) = call(
            &http,
            "POST",
            &format!("{}/_matrix/client/v3/login", vouch.base),
            Some(&login),
        )
        .await?;
        anyhow::ensure!(status == 200, "the bench user cannot log in: {answer}");
        let _ = BENCH_TOKEN.set(
            answer["access_token"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }

    if scenarios_arg_has_oauth(&args.scenarios) {
        let sessions = args.concurrency.max(sweep_max(&args.sweep));
        oauth_setup(&http, &vouch.base, sessions).await?;
    }

    // One bcrypt hash at cost 12, timed on this machine: the ceiling for /login.
    let hasher = vouch_core::password::PasswordHasher {
        scheme: vouch_core::password::Scheme::Bcrypt,
        bcrypt_cost: 12,
        argon2_m_cost_kib: 19_456,
        argon2_t_cost: 2,
        argon2_p_cost: 1,
        pepper: String::new(),
        ceilings: vouch_core::password::HashCeilings::default(),
    };
    let hash = hasher
        .hash("bench", &vouch_core::OsSecretSource)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let t = Instant::now();
    for _ in 0..5 {
        let _ = hasher.verify("bench", &hash);
    }
    let hash_ms = t.elapsed().as_secs_f64() * 1000.0 / 5.0;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let login_ceiling = cores as f64 * 1000.0 / hash_ms;

    let duration = Duration::from_secs(args.duration);
    let scenarios: Vec<&str> = args
        .scenarios
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let mut results = Vec::new();
    let mut mail_rate = None;
    let bare_base = format!("http://{bare}");
    for scenario in &scenarios {
        let base = if *scenario == "bare" {
            bare_base.as_str()
        } else {
            vouch.base.as_str()
        };
        let (sent_from, started) = (DELIVERED.load(Ordering::Relaxed), Instant::now());
        let m = measure(scenario, base, args.concurrency, duration, links.clone()).await;
        eprintln!(
            "{:<20} c={:<3} {:>9.1} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  errors {}",
            m.scenario, m.concurrency, m.requests_per_second, m.p50_ms, m.p99_ms, m.errors
        );
        if *scenario == "request_token" {
            // Every accepted request queued one mail; the outbox delivers them after.
            let rate = drain(sent_from + m.requests, sent_from, started).await;
            eprintln!(
                "outbox delivered the {} mails at {rate:?} mails/s",
                m.requests
            );
            mail_rate = rate;
        }
        results.push(m);
    }
    let mut sweep = Vec::new();
    for c in args
        .sweep
        .split(',')
        .filter_map(|c| c.trim().parse::<usize>().ok())
    {
        for scenario in &scenarios {
            let base = if *scenario == "bare" {
                bare_base.as_str()
            } else {
                vouch.base.as_str()
            };
            let sent_from = DELIVERED.load(Ordering::Relaxed);
            let m = measure(scenario, base, c, duration, links.clone()).await;
            if *scenario == "request_token" {
                let _ = drain(sent_from + m.requests, sent_from, Instant::now()).await;
            }
            eprintln!(
                "sweep {:<14} c={:<3} {:>9.1} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms",
                m.scenario, c, m.requests_per_second, m.p50_ms, m.p99_ms
            );
            sweep.push(m);
        }
    }
    let peak_rss_mib = vouch.peak_rss_kib() as f64 / 1024.0;
    let synapse_peak_rss_mib = synapse.as_ref().map(|s| s.peak_rss_kib() as f64 / 1024.0);
    let report = json!({
        "database": if args.postgres.is_some() { "postgres" } else { "sqlite" },
        "cores": cores,
        "duration_seconds": args.duration,
        "cold_start_ms": cold_start.as_secs_f64() * 1000.0,
        "start_on_existing_db_ms": warm_start.as_secs_f64() * 1000.0,
        "bcrypt_cost12_hash_ms": hash_ms,
        "login_ceiling_per_second": login_ceiling,
        "peak_rss_mib": peak_rss_mib,
        "synapse_peak_rss_mib": synapse_peak_rss_mib,
        "in_front_of_synapse": synapse.is_some(),
        "outbox_mails_per_second": mail_rate,
        "preloaded_accounts": args.preload,
        "results": results,
        "sweep": sweep,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Some(out) = &args.out {
        std::fs::write(out, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}
