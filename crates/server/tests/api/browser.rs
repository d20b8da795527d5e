//! The link page in a real browser: headless Chromium driven over WebDriver (chromedriver),
//! from a mail captured over SMTP to the registration it unlocks.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them). Without them
//! the test says so and passes, unless `VOUCH_TEST_BROWSER=1` demands it (CI sets that).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{ClientBuilder, Locator};
use serde_json::json;

use crate::helpers::{Backend, spawn_with_mail};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn browser() -> Option<(fantoccini::Client, Driver, tempfile::TempDir)> {
    if !std::path::Path::new(CHROMEDRIVER).exists() {
        assert!(
            std::env::var("VOUCH_TEST_BROWSER").ok().as_deref() != Some("1"),
            "VOUCH_TEST_BROWSER=1 but {CHROMEDRIVER} is missing: apt-get install chromium chromium-driver"
        );
        crate::helpers::skipped(
            "Chromium",
            "apt-get install chromium chromium-driver; .ci/run does",
        );
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let driver = Driver(
        Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts"),
    );
    let profile = tempfile::tempdir().unwrap();
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                format!("--user-data-dir={}", profile.path().display()),
            ]
        }
    });
    let caps = caps.as_object().unwrap().clone();
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        if let Ok(client) = ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            return Some((client, driver, profile));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not start a session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_link_in_headless_chromium() {
    let Some((client, _driver, _profile)) = browser().await else {
        return;
    };
    let (app, sink) = spawn_with_mail(Backend::Sqlite, |_| {}).await;
    let next = format!("{}/_matrix/client/versions", app.base);

    let body = json!({ "username": "browser", "password": "correct horse battery" });
    let start = app
        .post("/_matrix/client/v3/register", body.clone(), None)
        .await;
    let session = start.body["session"].clone();
    let r = app
        .post("/_matrix/client/v3/register/email/requestToken", json!({ "email": "web@example.org", "client_secret": "web", "send_attempt": 1, "next_link": next }), None)
        .await;
    let sid = r.ok()["sid"].as_str().unwrap().to_owned();
    let link = sink.wait_for(1).await[0].link();

    // The user opens the link: a confirmation page, nothing validated yet.
    client.goto(&link).await.unwrap();
    let text = client
        .find(Locator::Css("main"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("web@example.org") && text.contains("Confirm"),
        "{text}"
    );
    let mut b = body.clone();
    b["auth"] = json!({ "type": "m.login.email.identity", "session": session, "threepid_creds": { "sid": sid, "client_secret": "web" } });
    assert_eq!(
        app.post("/_matrix/client/v3/register", b.clone(), None)
            .await
            .errcode(),
        "M_UNAUTHORIZED"
    );
    if let Ok(png) = client.screenshot().await {
        let _ = std::fs::write(std::env::temp_dir().join("vouch-confirm-page.png"), png);
    }

    // Clicks the button and lands on next_link, with the sid appended.
    client
        .find(Locator::Id("confirm"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let mut landed = String::new();
    for _ in 0..50 {
        landed = client.current_url().await.unwrap().to_string();
        if landed.starts_with(&next) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(landed, format!("{next}?sid={sid}"));

    // The registration the client was polling for goes through.
    let done = app.post("/_matrix/client/v3/register", b, None).await;
    assert_eq!(done.ok()["user_id"], "@browser:vouch.test");

    // Without next_link, the click lands on the success page.
    app.request_email_token("account/password", "web@example.org", "web2", 1)
        .await
        .ok();
    let link = sink.wait_for(2).await[1].link();
    client.goto(&link).await.unwrap();
    client
        .find(Locator::Id("confirm"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let result = client
        .wait()
        .for_element(Locator::Id("result"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(result.contains("has been confirmed"), "{result}");
    client.close().await.unwrap();
}
