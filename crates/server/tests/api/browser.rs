//! Vouch's pages in a real browser: headless Chromium driven over WebDriver (chromedriver).
//! The email link page, from a mail captured over SMTP to the registration it unlocks; the
//! OAuth 2.0 sign-up, sign-in and consent pages, from the app's authorization URL to its
//! loopback redirect, each page checked by axe-core and (on request) photographed.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them). Without them
//! the test says so and passes, unless `VOUCH_TEST_BROWSER=1` demands it (CI sets that).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{ClientBuilder, Locator};
use serde_json::json;

use crate::helpers::{Backend, spawn_with_mail};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

pub(crate) struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) async fn browser() -> Option<(fantoccini::Client, Driver, tempfile::TempDir)> {
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

/// A native app's loopback redirect: the first request that reaches it, as the app would
/// read it (path and query).
pub(crate) async fn loopback_app() -> (u16, tokio::sync::oneshot::Receiver<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut tx = Some(tx);
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = vec![0u8; 8192];
            let n = conn.read(&mut buf).await.unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            let target = head.split(' ').nth(1).unwrap_or_default().to_owned();
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\nConnection: close\r\n\r\nBack in app.")
                .await;
            if target.starts_with("/callback")
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(target);
            }
        }
    });
    (port, rx)
}

/// axe-core's findings of impact "serious" or "critical" on the current page, if axe-core
/// is installed (`tests/js/package.json`); WebDriver's script runs outside the page's CSP.
async fn accessibility_violations(client: &fantoccini::Client) -> Option<Vec<String>> {
    let dir = std::env::var("VOUCH_TEST_JS_SDK")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "/var/tmp/vouch-js-sdk/node_modules".into());
    let Ok(axe) = std::fs::read_to_string(std::path::Path::new(&dir).join("axe-core/axe.min.js"))
    else {
        assert!(
            std::env::var("VOUCH_TEST_REQUIRE_ALL").ok().as_deref() != Some("1"),
            "axe-core is missing from {dir}: npm install crates/server/tests/js/package.json there"
        );
        crate::helpers::skipped(
            "axe-core",
            "npm install crates/server/tests/js/package.json into /var/tmp/vouch-js-sdk; .ci/run does",
        );
        return None;
    };
    client.execute(&axe, vec![]).await.expect("axe-core loads");
    let found = client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, { resultTypes: ['violations'] })
                .then(r => done(r.violations
                    .filter(v => v.impact === 'serious' || v.impact === 'critical')
                    .map(v => v.id + ': ' + v.help)))
                .catch(e => done(['axe failed: ' + e]));",
            vec![],
        )
        .await
        .expect("axe-core runs");
    Some(
        found
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect(),
    )
}

/// Saves the current page at a phone's and a desktop's size into
/// `$VOUCH_TEST_SCREENSHOTS/<name>-{phone,desktop}.png` when that is set
/// (`docs/screenshots/refresh.sh`).
async fn screenshots(client: &fantoccini::Client, name: &str) {
    let Ok(dir) = std::env::var("VOUCH_TEST_SCREENSHOTS") else {
        return;
    };
    for (size, w, h) in [("phone", 390, 844), ("desktop", 1280, 800)] {
        client.set_window_size(w, h).await.unwrap();
        let png = client.screenshot().await.unwrap();
        std::fs::write(
            std::path::Path::new(&dir).join(format!("{name}-{size}.png")),
            png,
        )
        .unwrap();
    }
    client.set_window_size(1280, 800).await.unwrap();
}

/// Checks the page's accessibility and takes its screenshots.
pub(crate) async fn look_at(client: &fantoccini::Client, name: &str) {
    if let Some(found) = accessibility_violations(client).await {
        assert!(
            found.is_empty(),
            "the {name} page has accessibility faults: {found:?}"
        );
    }
    screenshots(client, name).await;
}

pub(crate) async fn fill(client: &fantoccini::Client, id: &str, text: &str) {
    client
        .find(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("#{id}: {e}"))
        .send_keys(text)
        .await
        .unwrap();
}

pub(crate) async fn press(client: &fantoccini::Client, css: &str) {
    client
        .find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Element X's path in a real browser: the app registers and opens the authorization URL
/// with `prompt=create`; the user signs up in Chromium with the code from the mail, consents,
/// and the browser lands on the app's loopback redirect with the code, which the app
/// exchanges. Then the same user signs in again through the pages for a second session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_sign_up_and_sign_in_in_headless_chromium() {
    let Some((client, _driver, _profile)) = browser().await else {
        return;
    };
    let (app, sink) = spawn_with_mail(Backend::Sqlite, |c| {
        c.oauth.enabled = true;
        c.registration.require_3pid = vec!["email".into()];
        c.registration.terms = vec![vouch_config::TermsPolicy {
            id: "privacy_policy".into(),
            version: "1".into(),
            lang: "en".into(),
            name: "the privacy policy".into(),
            url: "https://example.org/privacy".into(),
        }];
    })
    .await;
    let registered = app
        .post(
            "/oauth2/registration",
            json!({
                "client_name": "Element X (test)",
                "client_uri": "https://element.example.org/",
                "redirect_uris": ["http://127.0.0.1/callback"],
                "application_type": "native",
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
            }),
            None,
        )
        .await;
    let client_id = registered.body["client_id"].as_str().unwrap().to_owned();
    // RFC 7636 appendix B.
    let (verifier, challenge) = (
        "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
    );
    let authorize = |port: u16, device: &str, prompt: &str| {
        let q = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", &client_id)
            .append_pair("redirect_uri", &format!("http://127.0.0.1:{port}/callback"))
            .append_pair(
                "scope",
                &format!("urn:matrix:client:api:* urn:matrix:client:device:{device}"),
            )
            .append_pair("state", "xyz")
            .append_pair("code_challenge", challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("prompt", prompt)
            .finish();
        format!("{}/oauth2/authorize?{q}", app.base)
    };
    let exchange = |port: u16, target: String| {
        let app = &app;
        let client_id = client_id.clone();
        async move {
            let callback = url::Url::parse(&format!("http://127.0.0.1:{port}{target}")).unwrap();
            let params: std::collections::HashMap<String, String> =
                callback.query_pairs().into_owned().collect();
            assert_eq!(params["state"], "xyz");
            let tokens = app
                .send(app.http.post(format!("{}/oauth2/token", app.base)).form(&[
                    ("grant_type", "authorization_code"),
                    ("client_id", client_id.as_str()),
                    ("code", params["code"].as_str()),
                    ("redirect_uri", &format!("http://127.0.0.1:{port}/callback")),
                    ("code_verifier", verifier),
                ]))
                .await;
            tokens.ok()["access_token"].as_str().unwrap().to_owned()
        }
    };

    // Sign up.
    let (port, landed) = loopback_app().await;
    client.set_window_size(1280, 800).await.unwrap();
    client
        .goto(&authorize(port, "BROWSERDEV", "create"))
        .await
        .unwrap();
    client
        .wait()
        .for_element(Locator::Id("username"))
        .await
        .unwrap();
    look_at(&client, "sign-up").await;
    fill(&client, "username", "gwen").await;
    fill(&client, "password", "correct horse battery").await;
    fill(&client, "email", "gwen@example.org").await;
    press(&client, "#accept_terms").await;
    press(&client, "button[type=submit]").await;
    client
        .wait()
        .for_element(Locator::Id("email_code"))
        .await
        .unwrap();
    look_at(&client, "verify").await;
    let text = sink.wait_for(1).await[0].text();
    let code = text
        .split("sign-up page: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_owned();
    fill(&client, "email_code", &code).await;
    press(&client, "button[type=submit]").await;
    client
        .wait()
        .for_element(Locator::Css("button[value=allow]"))
        .await
        .unwrap();
    look_at(&client, "consent").await;
    press(&client, "button[value=allow]").await;
    let target = tokio::time::timeout(Duration::from_secs(10), landed)
        .await
        .expect("the browser reaches the app's redirect URI (the consent form's CSP lets it)")
        .unwrap();
    let access = exchange(port, target).await;
    let me = app
        .get("/_matrix/client/v3/account/whoami", Some(&access))
        .await;
    assert_eq!(me.ok()["user_id"], "@gwen:vouch.test");
    assert_eq!(me.body["device_id"], "BROWSERDEV");

    // The account page the app deep-links to, with the browser still signed in.
    client
        .goto(&format!(
            "{}/_vouch/account?action=org.matrix.devices_list",
            app.base
        ))
        .await
        .unwrap();
    client
        .wait()
        .for_element(Locator::Id("sessions"))
        .await
        .unwrap();
    look_at(&client, "account").await;

    // Sign in again, from a browser that forgot the session.
    client.delete_all_cookies().await.unwrap();
    let (port, landed) = loopback_app().await;
    client
        .goto(&authorize(port, "BROWSERDEV2", "login"))
        .await
        .unwrap();
    client
        .wait()
        .for_element(Locator::Id("password"))
        .await
        .unwrap();
    look_at(&client, "sign-in").await;
    fill(&client, "username", "gwen@example.org").await;
    fill(&client, "password", "correct horse battery").await;
    press(&client, "button[type=submit]").await;
    client
        .wait()
        .for_element(Locator::Css("button[value=allow]"))
        .await
        .unwrap();
    press(&client, "button[value=allow]").await;
    let target = tokio::time::timeout(Duration::from_secs(10), landed)
        .await
        .expect("the second sign-in reaches the app")
        .unwrap();
    let access = exchange(port, target).await;
    let me = app
        .get("/_matrix/client/v3/account/whoami", Some(&access))
        .await;
    assert_eq!(me.ok()["device_id"], "BROWSERDEV2");
    client.close().await.unwrap();
}
