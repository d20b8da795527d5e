//! The OAuth 2.0 API (`[oauth] enabled`): discovery, client registration, the sign-in and
//! consent pages driven as a browser drives them (cookies, CSRF fields, redirects), the
//! code and refresh grants, revocation, and the OAuth 2.0 Security BCP's rules (PKCE,
//! single-use codes, exact redirect URIs, replay detection, framing, CSRF).

use reqwest::StatusCode;
use ruma::api::client::discovery::get_authorization_server_metadata::v1::AuthorizationServerMetadata;
use serde_json::{Value, json};

use crate::helpers::{Backend, Page, TestApp, spawn_with};
use crate::on_both_databases;
use crate::race::{Held, count, release_together};

on_both_databases!(
    a_client_registers_signs_a_user_in_and_refreshes,
    a_code_is_spent_once_and_a_replay_ends_its_session,
    a_replayed_refresh_token_ends_the_session_but_a_lost_answer_may_be_retried,
    registration_holds_the_redirect_uri_rules,
);

/// The RFC 7636 appendix B pair (a verifier and its S256 challenge).
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
/// A native client's loopback redirect URI, registered without a port.
const REDIRECT: &str = "http://127.0.0.1/callback";
/// The same, as the client uses it (any port is accepted).
const REDIRECT_USED: &str = "http://127.0.0.1:43210/callback";

async fn oauth_app(backend: Backend) -> TestApp {
    spawn_with(backend, |c| c.oauth.enabled = true).await
}

/// A browser: a cookie jar over the test client, which follows no redirects itself.
pub(crate) struct Browser<'a> {
    app: &'a TestApp,
    pub(crate) cookies: Vec<(String, String)>,
}

impl<'a> Browser<'a> {
    pub(crate) fn new(app: &'a TestApp) -> Self {
        Self {
            app,
            cookies: Vec::new(),
        }
    }

    fn keep(&mut self, headers: &reqwest::header::HeaderMap) {
        for v in headers.get_all("set-cookie") {
            let v = v.to_str().unwrap();
            let pair = v.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != name);
            self.cookies.push((name.to_owned(), value.to_owned()));
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub(crate) async fn get(&mut self, url: &str) -> Page {
        let res = self
            .app
            .http
            .get(url)
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep(res.headers());
        Page {
            status: res.status(),
            headers: res.headers().clone(),
            html: res.text().await.unwrap(),
        }
    }

    pub(crate) async fn post(&mut self, url: &str, fields: &[(&str, &str)]) -> Page {
        let res = self
            .app
            .http
            .post(url)
            .header("cookie", self.cookie_header())
            .form(fields)
            .send()
            .await
            .unwrap();
        self.keep(res.headers());
        Page {
            status: res.status(),
            headers: res.headers().clone(),
            html: res.text().await.unwrap(),
        }
    }
}

/// A form's action and hidden CSRF field in a page.
pub(crate) fn form(page: &Page) -> (String, String) {
    let attr = |name: &str| {
        page.html
            .split(&format!("{name}=\""))
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_else(|| panic!("no {name} in {}", page.html))
            .replace("&#x2f;", "/")
            .replace("&amp;", "&")
    };
    let csrf = page
        .html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a CSRF field")
        .to_owned();
    (attr("action"), csrf)
}

pub(crate) fn location(page: &Page) -> String {
    page.headers
        .get("location")
        .unwrap_or_else(|| panic!("a redirect, got {} {}", page.status, page.html))
        .to_str()
        .unwrap()
        .to_owned()
}

/// Query parameters of a URL.
fn params(url: &str) -> std::collections::HashMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

/// Registers a native client with a loopback redirect URI.
pub(crate) async fn register_client(app: &TestApp) -> String {
    let r = app
        .post(
            "/oauth2/registration",
            json!({
                "client_name": "Test Client",
                "client_uri": "https://client.example.org/",
                "redirect_uris": [REDIRECT],
                "application_type": "native",
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
            }),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    r.body["client_id"].as_str().unwrap().to_owned()
}

/// The authorization URL for `client_id` and `device`.
fn authorize_url(app: &TestApp, client_id: &str, device: &str, extra: &str) -> String {
    let scope = format!(
        "urn:matrix:org.matrix.msc2967.client:api:* urn:matrix:org.matrix.msc2967.client:device:{device}"
    );
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", REDIRECT_USED)
        .append_pair("scope", &scope)
        .append_pair("state", "st4te")
        .append_pair("code_challenge", CHALLENGE)
        .append_pair("code_challenge_method", "S256")
        .finish();
    format!("{}/oauth2/authorize?{q}{extra}", app.base)
}

/// Signs `user` in through the pages and approves; returns the code.
pub(crate) async fn code_for(
    app: &TestApp,
    client_id: &str,
    device: &str,
    user: &str,
    password: &str,
) -> String {
    code_with(app, client_id, device, "", user, password)
        .await
        .0
}

/// Signs `user` in for a request whose scope adds `more_scope` and approves; returns the
/// code and the consent page.
pub(crate) async fn code_with(
    app: &TestApp,
    client_id: &str,
    device: &str,
    more_scope: &str,
    user: &str,
    password: &str,
) -> (String, Page) {
    let mut browser = Browser::new(app);
    let url = authorize_url(app, client_id, device, "");
    let url = if more_scope.is_empty() {
        url
    } else {
        let added = url::form_urlencoded::byte_serialize(format!(" {more_scope}").as_bytes())
            .collect::<String>();
        url.replacen(
            &format!("device%3A{device}"),
            &format!("device%3A{device}{added}"),
            1,
        )
    };
    let start = browser.get(&url).await;
    assert_eq!(start.status, StatusCode::SEE_OTHER, "{}", start.html);
    let page = browser.get(&location(&start)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    assert!(page.html.contains("Test Client"), "{}", page.html);
    let (action, csrf) = form(&page);
    let consent = browser
        .post(
            &action,
            &[("csrf", &csrf), ("username", user), ("password", password)],
        )
        .await;
    assert_eq!(consent.status, StatusCode::OK, "{}", consent.html);
    assert!(
        consent.html.contains(device),
        "the consent page names the device: {}",
        consent.html
    );
    let (action, csrf) = form(&consent);
    let back = browser
        .post(&action, &[("csrf", &csrf), ("decision", "allow")])
        .await;
    let to = location(&back);
    assert!(to.starts_with(REDIRECT_USED), "{to}");
    let p = params(&to);
    assert_eq!(p["state"], "st4te");
    (p["code"].clone(), consent)
}

pub(crate) async fn exchange(app: &TestApp, client_id: &str, code: &str) -> crate::helpers::Reply {
    app.send(app.http.post(format!("{}/oauth2/token", app.base)).form(&[
        ("grant_type", "authorization_code"),
        ("client_id", client_id),
        ("code", code),
        ("redirect_uri", REDIRECT_USED),
        ("code_verifier", VERIFIER),
    ]))
    .await
}

pub(crate) async fn refresh(app: &TestApp, client_id: &str, token: &str) -> crate::helpers::Reply {
    app.send(app.http.post(format!("{}/oauth2/token", app.base)).form(&[
        ("grant_type", "refresh_token"),
        ("client_id", client_id),
        ("refresh_token", token),
    ]))
    .await
}

fn s(v: &Value, k: &str) -> String {
    v[k].as_str()
        .unwrap_or_else(|| panic!("{k} in {v}"))
        .to_owned()
}

#[tokio::test]
async fn discovery_offers_a_complete_document_only_when_enabled() {
    let app = oauth_app(Backend::Sqlite).await;
    let r = app.get("/_matrix/client/v1/auth_metadata", None).await;
    let doc: AuthorizationServerMetadata = serde_json::from_value(r.ok().clone())
        .unwrap_or_else(|e| panic!("ruma reads the document: {e}: {:?}", r.body));
    doc.insecure_validate_urls().unwrap();
    let base = format!("{}/", app.base);
    assert_eq!(doc.token_endpoint.as_str(), format!("{base}oauth2/token"));
    assert_eq!(
        doc.registration_endpoint.unwrap().as_str(),
        format!("{base}oauth2/registration")
    );
    assert_eq!(r.body["prompt_values_supported"], json!(["create"]));
    assert_eq!(r.body["code_challenge_methods_supported"], json!(["S256"]));
    let unstable = app
        .get(
            "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata",
            None,
        )
        .await;
    assert_eq!(unstable.ok(), &r.body);
    let oidc = app.get("/.well-known/openid-configuration", None).await;
    assert_eq!(oidc.ok()["issuer"], r.body["issuer"]);
    assert_eq!(
        oidc.body["token_endpoint_auth_methods_supported"],
        json!(["none"])
    );

    let legacy = spawn_with(Backend::Sqlite, |_| {}).await;
    legacy
        .get("/_matrix/client/v1/auth_metadata", None)
        .await
        .assert_error(404, "M_UNRECOGNIZED");
    let r = legacy
        .post(
            "/oauth2/registration",
            json!({"client_uri": "https://a.example/"}),
            None,
        )
        .await;
    assert_eq!(
        r.status, 404,
        "no OAuth 2.0 endpoint without [oauth] enabled"
    );
}

async fn a_client_registers_signs_a_user_in_and_refreshes(backend: Backend) {
    let app = oauth_app(backend).await;
    app.register("alice", "correct horse battery").await;
    let client_id = register_client(&app).await;
    let code = code_for(
        &app,
        &client_id,
        "OAUTHDEV01",
        "alice",
        "correct horse battery",
    )
    .await;
    let r = exchange(&app, &client_id, &code).await;
    let t = r.ok().clone();
    assert_eq!(t["token_type"], "Bearer");
    assert!(t["expires_in"].as_u64().unwrap() > 0);
    assert!(t["scope"].as_str().unwrap().contains("device:OAUTHDEV01"));
    let access = s(&t, "access_token");
    // The session is a device like any other.
    let me = app
        .get("/_matrix/client/v3/account/whoami", Some(&access))
        .await;
    assert_eq!(me.ok()["user_id"], "@alice:vouch.test");
    assert_eq!(me.body["device_id"], "OAUTHDEV01");
    let devices = app.get("/_matrix/client/v3/devices", Some(&access)).await;
    let named = devices.ok()["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device_id"] == "OAUTHDEV01")
        .cloned()
        .expect("the OAuth device is listed");
    assert_eq!(named["display_name"], "Test Client");

    // Refresh rotates both tokens.
    let r2 = refresh(&app, &client_id, &s(&t, "refresh_token")).await;
    let t2 = r2.ok().clone();
    let access2 = s(&t2, "access_token");
    app.get("/_matrix/client/v3/account/whoami", Some(&access))
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");
    app.get("/_matrix/client/v3/account/whoami", Some(&access2))
        .await
        .ok();
    // Another client cannot use this client's refresh token.
    let other = register_other_client(&app).await;
    let r = refresh(&app, &other, &s(&t2, "refresh_token")).await;
    assert_eq!(
        (r.status.as_u16(), s(&r.body, "error")),
        (400, "invalid_grant".into())
    );
    app.get("/_matrix/client/v3/account/whoami", Some(&access2))
        .await
        .ok();

    // Revoking the refresh token ends the whole session.
    let r = app
        .send(app.http.post(format!("{}/oauth2/revoke", app.base)).form(&[
            ("token", s(&t2, "refresh_token").as_str()),
            ("token_type_hint", "refresh_token"),
            ("client_id", client_id.as_str()),
        ]))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    app.get("/_matrix/client/v3/account/whoami", Some(&access2))
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");
    // Revoking again, or revoking nonsense, is no error.
    let r = app
        .send(
            app.http
                .post(format!("{}/oauth2/revoke", app.base))
                .form(&[("token", "nonsense")]),
        )
        .await;
    assert_eq!(r.status, 200);
    let (token, _) = app.login_ok("alice", "correct horse battery").await;
    let devices = app.get("/_matrix/client/v3/devices", Some(&token)).await;
    assert!(
        !devices.ok()["devices"].to_string().contains("OAUTHDEV01"),
        "the revoked session's device is gone"
    );
}

async fn register_other_client(app: &TestApp) -> String {
    let r = app
        .post(
            "/oauth2/registration",
            json!({
                "client_uri": "https://other.example.org/",
                "redirect_uris": ["https://other.example.org/cb"],
                "grant_types": ["authorization_code", "refresh_token"],
            }),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    s(&r.body, "client_id")
}

async fn a_code_is_spent_once_and_a_replay_ends_its_session(backend: Backend) {
    let app = oauth_app(backend).await;
    let (_, bob, _) = app.register("bob", "correct horse battery").await;
    let client_id = register_client(&app).await;
    let code = code_for(
        &app,
        &client_id,
        "RACEDEVICE",
        "bob",
        "correct horse battery",
    )
    .await;
    // A wrong verifier or redirect URI is refused and spends nothing.
    let wrong = app
        .send(app.http.post(format!("{}/oauth2/token", app.base)).form(&[
            ("grant_type", "authorization_code"),
            ("client_id", client_id.as_str()),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT_USED),
            ("code_verifier", "A".repeat(43).as_str()),
        ]))
        .await;
    assert_eq!(s(&wrong.body, "error"), "invalid_grant");
    // Twenty exchanges of one code at the same moment: one gets tokens.
    let fields = [
        ("grant_type", "authorization_code"),
        ("client_id", client_id.as_str()),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT_USED),
        ("code_verifier", VERIFIER),
    ];
    let replies = release_together(
        &app.base,
        (0..20)
            .map(|_| Held::post_form("/oauth2/token", &fields))
            .collect(),
    )
    .await;
    let winners: Vec<&crate::helpers::Reply> = replies.iter().filter(|r| r.status == 200).collect();
    // At most one gets tokens; it gets none when a replay came before its session was
    // written (that exchange then ends the session itself).
    assert!(
        winners.len() <= 1,
        "{:?}",
        replies.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    assert_eq!(count(&replies, 400, "") + winners.len(), 20);
    // The losers were replays: whatever the code bought has ended.
    if let Some(winner) = winners.first() {
        let access = s(&winner.body, "access_token");
        app.get("/_matrix/client/v3/account/whoami", Some(&access))
            .await
            .assert_error(401, "M_UNKNOWN_TOKEN");
    }
    let devices = app.get("/_matrix/client/v3/devices", Some(&bob)).await;
    assert!(
        !devices.ok().to_string().contains("RACEDEVICE"),
        "{:?}",
        devices.body
    );
}

async fn a_replayed_refresh_token_ends_the_session_but_a_lost_answer_may_be_retried(
    backend: Backend,
) {
    let app = oauth_app(backend).await;
    app.register("carol", "correct horse battery").await;
    let client_id = register_client(&app).await;
    let code = code_for(
        &app,
        &client_id,
        "REFRESHDEV",
        "carol",
        "correct horse battery",
    )
    .await;
    let t = exchange(&app, &client_id, &code).await.ok().clone();
    let first = s(&t, "refresh_token");
    // The answer to this refresh is "lost": the client tries again with the same token.
    let lost = refresh(&app, &client_id, &first).await.ok().clone();
    let retried = refresh(&app, &client_id, &first).await.ok().clone();
    app.get(
        "/_matrix/client/v3/account/whoami",
        Some(&s(&lost, "access_token")),
    )
    .await
    .assert_error(401, "M_UNKNOWN_TOKEN");
    let live = s(&retried, "access_token");
    app.get("/_matrix/client/v3/account/whoami", Some(&live))
        .await
        .ok();
    // The client goes on with its new token; the first one shows up again: stolen.
    let next = refresh(&app, &client_id, &s(&retried, "refresh_token"))
        .await
        .ok()
        .clone();
    let replay = refresh(&app, &client_id, &first).await;
    assert_eq!(s(&replay.body, "error"), "invalid_grant");
    app.get(
        "/_matrix/client/v3/account/whoami",
        Some(&s(&next, "access_token")),
    )
    .await
    .assert_error(401, "M_UNKNOWN_TOKEN");
}

async fn registration_holds_the_redirect_uri_rules(backend: Backend) {
    let app = oauth_app(backend).await;
    for (body, error) in [
        (
            json!({"redirect_uris": ["https://a.example/cb"]}),
            "invalid_client_metadata",
        ),
        (
            json!({"client_uri": "https://a.example/", "redirect_uris": ["https://evil.example/cb"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"client_uri": "https://a.example/", "application_type": "native", "redirect_uris": ["http://localhost:1234/cb"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"client_uri": "https://a.example/", "redirect_uris": ["https://a.example/cb#frag"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"client_uri": "https://a.example/", "redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": "client_secret_basic"}),
            "invalid_client_metadata",
        ),
        (json!([1, 2]), "invalid_client_metadata"),
    ] {
        let r = app.post("/oauth2/registration", body.clone(), None).await;
        assert_eq!(
            (r.status.as_u16(), s(&r.body, "error")),
            (400, error.to_owned()),
            "{body}"
        );
    }
    // The same app registering again gets the same client ID (no row per attempt).
    assert_eq!(register_client(&app).await, register_client(&app).await);
}

#[tokio::test]
async fn the_authorization_endpoint_never_redirects_to_a_stranger() {
    let app = oauth_app(Backend::Sqlite).await;
    let client_id = register_client(&app).await;
    // An unregistered redirect URI or an unknown client: a page, no Location.
    for url in [
        authorize_url(&app, &client_id, "DEV", "").replace("127.0.0.1%3A43210", "evil.example"),
        authorize_url(&app, "no-such-client", "DEV", ""),
    ] {
        let page = app.open(&url).await;
        assert_eq!(page.status, 400, "{}", page.html);
        assert!(page.headers.get("location").is_none());
        assert_eq!(page.headers["x-frame-options"], "DENY");
    }
    // Other faults go back to the client with the state.
    for (extra, error) in [
        ("&code_challenge_method=plain", "invalid_request"),
        ("&prompt=none", "interaction_required"),
    ] {
        let url = authorize_url(&app, &client_id, "DEV", "")
            .replace("&code_challenge_method=S256", "")
            + extra;
        let url = if extra.contains("plain") {
            url
        } else {
            url + "&code_challenge_method=S256"
        };
        let page = app.open(&url).await;
        let to = location(&page);
        assert!(to.starts_with(REDIRECT_USED), "{to}");
        assert_eq!(params(&to)["error"], error, "{to}");
        assert_eq!(params(&to)["state"], "st4te");
    }
    let no_device = authorize_url(&app, &client_id, "DEV", "").replace(
        "+urn%3Amatrix%3Aorg.matrix.msc2967.client%3Adevice%3ADEV",
        "",
    );
    let to = location(&app.open(&no_device).await);
    assert_eq!(params(&to)["error"], "invalid_scope", "{to}");
}

#[tokio::test]
async fn the_pages_hold_csrf_framing_and_enumeration_rules() {
    let app = oauth_app(Backend::Sqlite).await;
    app.register("dave", "correct horse battery").await;
    let client_id = register_client(&app).await;
    let mut browser = Browser::new(&app);
    let start = browser
        .get(&authorize_url(&app, &client_id, "PAGEDEV", ""))
        .await;
    let page = browser.get(&location(&start)).await;
    assert_eq!(page.headers["x-frame-options"], "DENY");
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("frame-ancestors 'none'") && !csp.contains("script-src"),
        "{csp}"
    );
    assert!(
        page.html.contains("<label for=\"username\">")
            && page.html.contains("<label for=\"password\">")
    );
    let (action, csrf) = form(&page);
    // Without the CSRF field (a cross-site form), nothing happens.
    let forged = browser
        .post(
            &action,
            &[("username", "dave"), ("password", "correct horse battery")],
        )
        .await;
    assert_eq!(forged.status, 403);
    assert!(!browser.cookies.iter().any(|(n, _)| n == "vouch_session"));
    // A wrong password and an unknown user read alike.
    let wrong = browser
        .post(
            &action,
            &[
                ("csrf", &csrf),
                ("username", "dave"),
                ("password", "nope nope nope"),
            ],
        )
        .await;
    let unknown = browser
        .post(
            &action,
            &[
                ("csrf", &csrf),
                ("username", "nobody"),
                ("password", "nope nope nope"),
            ],
        )
        .await;
    assert_eq!(wrong.status, unknown.status);
    let said = |p: &Page| {
        p.html
            .split("role=\"alert\">")
            .nth(1)
            .unwrap()
            .split('<')
            .next()
            .unwrap()
            .to_owned()
    };
    assert_eq!(said(&wrong), said(&unknown));
    // Signed in, then cancelled: the client hears access_denied.
    let consent = browser
        .post(
            &action,
            &[
                ("csrf", &csrf),
                ("username", "dave"),
                ("password", "correct horse battery"),
            ],
        )
        .await;
    let consent_csp = consent.headers["content-security-policy"].to_str().unwrap();
    assert!(
        consent_csp.contains("form-action 'self' http://127.0.0.1:*"),
        "{consent_csp}"
    );
    let (action, csrf) = form(&consent);
    let back = browser
        .post(&action, &[("csrf", &csrf), ("decision", "deny")])
        .await;
    let to = location(&back);
    assert_eq!(params(&to)["error"], "access_denied");
    // Answered: the request's page is gone, and the same browser is still signed in for
    // the next request (consent straight away).
    let again = browser
        .get(&format!("{}/{}", app.base, "_vouch/oauth/grant/unknown"))
        .await;
    assert_eq!(again.status, 404);
    let start = browser
        .get(&authorize_url(&app, &client_id, "PAGEDEV2", ""))
        .await;
    let page = browser.get(&location(&start)).await;
    assert!(
        page.html.contains("decision"),
        "signed in already: {}",
        page.html
    );
}

on_both_databases!(
    a_user_signs_up_with_email_and_phone_codes,
    a_user_signs_up_by_the_mail_link_alone,
);

/// Starts an authorization request with `prompt=create` and returns the sign-up page.
async fn sign_up_form<'a>(app: &'a TestApp, client_id: &str, device: &str) -> (Browser<'a>, Page) {
    let mut browser = Browser::new(app);
    let start = browser
        .get(&authorize_url(app, client_id, device, "&prompt=create"))
        .await;
    let page = browser.get(&location(&start)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    assert!(
        page.html.contains("Create an account"),
        "prompt=create leads to sign-up: {}",
        page.html
    );
    (browser, page)
}

/// The code a sign-up mail carries.
pub(crate) fn mail_code(text: &str) -> String {
    text.split("sign-up page: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no code in {text}"))
        .to_owned()
}

/// Allows the consent page and exchanges the code; returns the access token.
async fn consent_and_exchange(
    app: &TestApp,
    browser: &mut Browser<'_>,
    consent: &Page,
    client_id: &str,
) -> String {
    assert!(consent.html.contains("decision"), "{}", consent.html);
    let (action, csrf) = form(consent);
    let back = browser
        .post(&action, &[("csrf", &csrf), ("decision", "allow")])
        .await;
    let code = params(&location(&back))["code"].clone();
    s(exchange(app, client_id, &code).await.ok(), "access_token")
}

async fn a_user_signs_up_with_email_and_phone_codes(backend: Backend) {
    let sink = crate::smtp::SmtpSink::start().await;
    let (app, twilio) = crate::sms::with_twilio(backend, |c| {
        crate::helpers::mail_to(c, &sink);
        c.oauth.enabled = true;
        c.registration.require_3pid = vec!["email".into(), "msisdn".into()];
        c.registration.reserved_localparts = vec!["taken".into()];
    })
    .await;
    let client_id = register_client(&app).await;
    let (mut browser, page) = sign_up_form(&app, &client_id, "SIGNUPDEV1").await;
    assert!(page.html.contains("id=\"email\"") && page.html.contains("id=\"phone\""));
    let (action, csrf) = form(&page);
    // Refusals come back on the form, with what was typed kept.
    for (fields, says) in [
        (
            vec![
                ("username", "taken"),
                ("password", "correct horse battery"),
                ("email", "e@example.org"),
            ],
            "reserved",
        ),
        (
            vec![("username", "erin"), ("password", "correct horse battery")],
            "needs an address",
        ),
        (
            vec![
                ("username", "erin"),
                ("password", "correct horse battery"),
                ("email", "not an address"),
            ],
            "role=\"alert\"",
        ),
    ] {
        let mut all = fields.clone();
        all.push(("csrf", &csrf));
        let refused = browser.post(&action, &all).await;
        assert!(refused.status.is_client_error(), "{}", refused.html);
        assert!(refused.html.contains(says), "{says}: {}", refused.html);
    }
    assert_eq!(
        sink.received().len(),
        0,
        "nothing is sent for a refused form"
    );
    let verify = browser
        .post(
            &action,
            &[
                ("csrf", &csrf),
                ("username", "erin"),
                ("password", "correct horse battery"),
                ("email", "Erin@Example.org"),
                ("phone", "+44 7400 123456"),
            ],
        )
        .await;
    assert_eq!(verify.status, StatusCode::OK, "{}", verify.html);
    assert!(
        verify.html.contains("erin@example.org") && verify.html.contains("447400123456"),
        "{}",
        verify.html
    );
    let mail = &sink.wait_for(1).await[0];
    let email_code = mail_code(&mail.text());
    let sms = crate::sms::received(&twilio, 1).await;
    let phone_code = crate::sms::code_in(&crate::sms::form(&sms[0])["Body"]);
    let (action, csrf) = form(&verify);
    let wrong = if email_code == "000000" {
        "111111"
    } else {
        "000000"
    };
    let refused = browser
        .post(
            &action,
            &[
                ("csrf", &csrf),
                ("email_code", wrong),
                ("phone_code", &phone_code),
            ],
        )
        .await;
    assert!(
        refused.html.contains("email code is wrong"),
        "{}",
        refused.html
    );
    // Reloaded, the request's page still asks for the codes.
    let reloaded = browser.get(action.trim_end_matches("/verify")).await;
    assert!(reloaded.html.contains("phone_code"), "{}", reloaded.html);
    let consent = browser
        .post(
            &action,
            &[
                ("csrf", &csrf),
                ("email_code", &email_code),
                ("phone_code", &phone_code),
            ],
        )
        .await;
    assert_eq!(consent.status, StatusCode::OK, "{}", consent.html);
    let access = consent_and_exchange(&app, &mut browser, &consent, &client_id).await;
    let me = app
        .get("/_matrix/client/v3/account/whoami", Some(&access))
        .await;
    assert_eq!(me.ok()["user_id"], "@erin:vouch.test");
    assert_eq!(me.body["device_id"], "SIGNUPDEV1");
    let threepids = app
        .get("/_matrix/client/v3/account/3pid", Some(&access))
        .await;
    let listed = threepids.ok()["threepids"].to_string();
    assert!(
        listed.contains("erin@example.org") && listed.contains("447400123456"),
        "{listed}"
    );
    // The password typed at sign-up works at /login too: one account store.
    app.login_ok("erin", "correct horse battery").await;
}

async fn a_user_signs_up_by_the_mail_link_alone(backend: Backend) {
    let (app, sink) = crate::helpers::spawn_with_mail(backend, |c| {
        c.oauth.enabled = true;
        c.registration.require_3pid = vec!["email".into()];
    })
    .await;
    let client_id = register_client(&app).await;
    let (mut browser, page) = sign_up_form(&app, &client_id, "LINKDEV001").await;
    let (action, csrf) = form(&page);
    let verify = browser
        .post(
            &action,
            &[
                ("csrf", &csrf),
                ("username", "fay"),
                ("password", "correct horse battery"),
                ("email", "fay@example.org"),
            ],
        )
        .await;
    let (action, csrf) = form(&verify);
    // Continue before the link is opened: the page asks again.
    let early = browser.post(&action, &[("csrf", &csrf)]).await;
    assert!(early.html.contains("open the link"), "{}", early.html);
    let mail = &sink.wait_for(1).await[0];
    let opened = app.confirm(&mail.link()).await;
    assert!(
        opened.status.is_success() || opened.status.is_redirection(),
        "{}",
        opened.html
    );
    let consent = browser.post(&action, &[("csrf", &csrf)]).await;
    let access = consent_and_exchange(&app, &mut browser, &consent, &client_id).await;
    let me = app
        .get("/_matrix/client/v3/account/whoami", Some(&access))
        .await;
    assert_eq!(me.ok()["user_id"], "@fay:vouch.test");
}

on_both_databases!(the_device_grant_signs_in_an_app_without_a_browser,);

async fn device_client(app: &TestApp) -> String {
    let r = app
        .post(
            "/oauth2/registration",
            json!({
                "client_name": "Living-room TV",
                "client_uri": "https://tv.example.org/",
                "grant_types": ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token"],
                "token_endpoint_auth_method": "none",
            }),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    s(&r.body, "client_id")
}

async fn start_device(app: &TestApp, client_id: &str, device: &str) -> Value {
    let r = app
        .send(app.http.post(format!("{}/oauth2/device", app.base)).form(&[
            ("client_id", client_id),
            (
                "scope",
                &format!("urn:matrix:client:api:* urn:matrix:client:device:{device}"),
            ),
        ]))
        .await;
    r.ok().clone()
}

async fn poll(app: &TestApp, client_id: &str, device_code: &str) -> crate::helpers::Reply {
    app.send(app.http.post(format!("{}/oauth2/token", app.base)).form(&[
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("client_id", client_id),
        ("device_code", device_code),
    ]))
    .await
}

/// The user opens the verification URI with the code in it, signs in and answers.
async fn answer_device(app: &TestApp, started: &Value, user: &str, decision: &str) -> Page {
    let mut browser = Browser::new(app);
    let page = browser.get(&s(started, "verification_uri_complete")).await;
    assert!(
        page.html.contains(&s(started, "user_code")),
        "{}",
        page.html
    );
    let (action, csrf) = form(&page);
    let code = s(started, "user_code").to_lowercase().replace('-', " ");
    let found = browser
        .post(&action, &[("csrf", &csrf), ("user_code", &code)])
        .await;
    let sign_in = browser.get(&location(&found)).await;
    let (action, csrf) = form(&sign_in);
    let consent = browser
        .post(
            &action,
            &[
                ("csrf", &csrf),
                ("username", user),
                ("password", "correct horse battery"),
            ],
        )
        .await;
    assert!(
        consent.html.contains(&s(started, "user_code")),
        "the consent page shows the code to compare: {}",
        consent.html
    );
    let (action, csrf) = form(&consent);
    browser
        .post(&action, &[("csrf", &csrf), ("decision", decision)])
        .await
}

async fn the_device_grant_signs_in_an_app_without_a_browser(backend: Backend) {
    let app = oauth_app(backend).await;
    app.register("hal", "correct horse battery").await;
    let meta = app.get("/_matrix/client/v1/auth_metadata", None).await;
    assert!(
        meta.ok()["grant_types_supported"]
            .to_string()
            .contains("device_code")
    );
    let client_id = device_client(&app).await;
    let started = start_device(&app, &client_id, "TVDEVICE01").await;
    assert_eq!(started["interval"], 5);
    assert!(s(&started, "verification_uri").ends_with("/_vouch/oauth/device"));
    let device_code = s(&started, "device_code");
    // Before the user answers: pending, and slow down when polled too often.
    assert_eq!(
        s(&poll(&app, &client_id, &device_code).await.body, "error"),
        "authorization_pending"
    );
    assert_eq!(
        s(&poll(&app, &client_id, &device_code).await.body, "error"),
        "slow_down"
    );
    // A wrong code on the page is refused, and another client cannot poll this code.
    let mut browser = Browser::new(&app);
    let page = browser.get(&s(&started, "verification_uri")).await;
    let (action, csrf) = form(&page);
    let wrong = browser
        .post(&action, &[("csrf", &csrf), ("user_code", "BBBB-BBBB")])
        .await;
    assert_eq!(wrong.status, 400);
    let other = device_client_named(&app, "Other TV").await;
    assert_eq!(
        s(&poll(&app, &other, &device_code).await.body, "error"),
        "invalid_grant"
    );

    let done = answer_device(&app, &started, "hal", "allow").await;
    assert!(done.html.contains("Signed in"), "{}", done.html);
    app.clock.advance(std::time::Duration::from_secs(6));
    // Twenty polls at once after the answer: one session.
    let fields = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("client_id", client_id.as_str()),
        ("device_code", device_code.as_str()),
    ];
    let replies = release_together(
        &app.base,
        (0..20)
            .map(|_| Held::post_form("/oauth2/token", &fields))
            .collect(),
    )
    .await;
    let won: Vec<_> = replies.iter().filter(|r| r.status == 200).collect();
    assert_eq!(
        won.len(),
        1,
        "{:?}",
        replies.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    let access = s(&won[0].body, "access_token");
    assert!(won[0].body["refresh_token"].is_string());
    let me = app
        .get("/_matrix/client/v3/account/whoami", Some(&access))
        .await;
    assert_eq!(me.ok()["device_id"], "TVDEVICE01");
    assert_eq!(
        s(&poll(&app, &client_id, &device_code).await.body, "error"),
        "invalid_grant"
    );

    // Declined, and expired.
    let declined = start_device(&app, &client_id, "TVDEVICE02").await;
    let done = answer_device(&app, &declined, "hal", "deny").await;
    assert!(done.html.contains("Cancelled"), "{}", done.html);
    assert_eq!(
        s(
            &poll(&app, &client_id, &s(&declined, "device_code"))
                .await
                .body,
            "error"
        ),
        "access_denied"
    );
    let late = start_device(&app, &client_id, "TVDEVICE03").await;
    app.clock.advance(std::time::Duration::from_secs(601));
    assert_eq!(
        s(
            &poll(&app, &client_id, &s(&late, "device_code")).await.body,
            "error"
        ),
        "expired_token"
    );
    let mut browser = Browser::new(&app);
    let page = browser.get(&s(&late, "verification_uri_complete")).await;
    let (action, csrf) = form(&page);
    let gone = browser
        .post(
            &action,
            &[("csrf", &csrf), ("user_code", &s(&late, "user_code"))],
        )
        .await;
    assert_eq!(
        gone.status, 400,
        "an expired code is not found: {}",
        gone.html
    );
}

async fn device_client_named(app: &TestApp, name: &str) -> String {
    let r = app
        .post(
            "/oauth2/registration",
            json!({
                "client_name": name,
                "client_uri": "https://tv.example.org/",
                "grant_types": ["urn:ietf:params:oauth:grant-type:device_code"],
            }),
            None,
        )
        .await;
    s(&r.body, "client_id")
}

on_both_databases!(refresh_races_never_fork_a_session,);

/// A spent refresh token and its successor presented at the same moment, many times over
/// (the second review forked sessions so on PostgreSQL): at most one chain lives on, and
/// nothing answers 500.
async fn refresh_races_never_fork_a_session(backend: Backend) {
    let app = oauth_app(backend).await;
    app.register("kim", "correct horse battery").await;
    let client_id = register_client(&app).await;
    for round in 0..3 {
        let device = format!("FORKDEV{round}");
        let code = code_for(&app, &client_id, &device, "kim", "correct horse battery").await;
        let t = exchange(&app, &client_id, &code).await.ok().clone();
        let r0 = s(&t, "refresh_token");
        let r1 = s(refresh(&app, &client_id, &r0).await.ok(), "refresh_token");
        let mut held = Vec::new();
        for i in 0..20 {
            let token = if i % 2 == 0 { &r0 } else { &r1 };
            held.push(Held::post_form(
                "/oauth2/token",
                &[
                    ("grant_type", "refresh_token"),
                    ("client_id", client_id.as_str()),
                    ("refresh_token", token.as_str()),
                ],
            ));
        }
        let replies = release_together(&app.base, held).await;
        assert!(
            replies
                .iter()
                .all(|r| r.status.as_u16() < 500 || r.status == 503),
            "{:?}",
            replies
                .iter()
                .map(|r| (r.status, &r.body))
                .collect::<Vec<_>>()
        );
        let mut live = 0;
        for r in replies.iter().filter(|r| r.status == 200) {
            let access = s(&r.body, "access_token");
            if app
                .get("/_matrix/client/v3/account/whoami", Some(&access))
                .await
                .status
                == 200
            {
                live += 1;
            }
        }
        assert!(live <= 1, "round {round}: {live} chains live on one device");
    }
}

#[tokio::test]
async fn scopes_are_what_was_granted_and_takeovers_are_told() {
    let app = oauth_app(Backend::Sqlite).await;
    let (admin_id, _, _) = app.register("root", "correct horse battery").await;
    app.register("lee", "correct horse battery").await;
    let store = vouch_storage::Db::connect(&app.config.database.url, 2)
        .await
        .unwrap();
    store.set_admin(&admin_id, true).await.unwrap();
    let client_id = register_client(&app).await;
    let users = "/_synapse/admin/v2/users";
    // An admin's session that did not ask for the admin API has none.
    let code = code_for(
        &app,
        &client_id,
        "ADMINLESS",
        "root",
        "correct horse battery",
    )
    .await;
    let plain = exchange(&app, &client_id, &code).await.ok().clone();
    assert!(!s(&plain, "scope").contains("admin"));
    app.get(users, Some(&s(&plain, "access_token")))
        .await
        .assert_error(403, "M_FORBIDDEN");
    // Asked for, it is said on the consent page and granted.
    let (code, consent) = code_with(
        &app,
        &client_id,
        "ADMINFUL",
        "urn:synapse:admin:*",
        "root",
        "correct horse battery",
    )
    .await;
    assert!(
        consent.html.contains("administer this server"),
        "{}",
        consent.html
    );
    let full = exchange(&app, &client_id, &code).await.ok().clone();
    assert!(s(&full, "scope").contains("urn:synapse:admin:*"));
    app.get(users, Some(&s(&full, "access_token"))).await.ok();
    // A user who is no admin asking for it gets a session without it.
    let (code, consent) = code_with(
        &app,
        &client_id,
        "LEEDEVICE",
        "urn:synapse:admin:*",
        "lee",
        "correct horse battery",
    )
    .await;
    assert!(!consent.html.contains("administer"));
    let lee = exchange(&app, &client_id, &code).await.ok().clone();
    assert!(!s(&lee, "scope").contains("admin"), "{lee}");

    // Naming a device the user is signed in with replaces it, and the consent page says so.
    let phone = app
        .post(
            "/_matrix/client/v3/login",
            json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "lee" }, "password": "correct horse battery", "device_id": "LEEPHONE", "initial_device_display_name": "Lee's phone" }),
            None,
        )
        .await
        .ok()
        .clone();
    let (code, consent) = code_with(
        &app,
        &client_id,
        "LEEPHONE",
        "",
        "lee",
        "correct horse battery",
    )
    .await;
    assert!(
        consent.html.contains("replace your signed-in session"),
        "{}",
        consent.html
    );
    assert!(
        consent.html.contains("Lee&#x27;s phone") || consent.html.contains("Lee's phone"),
        "{}",
        consent.html
    );
    let taken = exchange(&app, &client_id, &code).await.ok().clone();
    app.get(
        "/_matrix/client/v3/account/whoami",
        Some(&s(&phone, "access_token")),
    )
    .await
    .assert_error(401, "M_UNKNOWN_TOKEN");
    let device = app
        .get(
            "/_matrix/client/v3/devices/LEEPHONE",
            Some(&s(&taken, "access_token")),
        )
        .await;
    assert_eq!(
        device.ok()["display_name"],
        "Test Client",
        "the device takes the app's name"
    );
}

#[tokio::test]
async fn the_sign_up_page_asks_what_registration_asks() {
    let (app, sink) = crate::helpers::spawn_with_mail(Backend::Sqlite, |c| {
        c.oauth.enabled = true;
        c.uia.flows.insert(
            "register".into(),
            vec![vec![
                "m.login.registration_token".into(),
                "m.login.email.identity".into(),
            ]],
        );
    })
    .await;
    let client_id = register_client(&app).await;
    let (mut browser, page) = sign_up_form(&app, &client_id, "FLOWDEV").await;
    assert!(
        page.html.contains("id=\"registration_token\""),
        "{}",
        page.html
    );
    assert!(
        !page.html.contains("id=\"phone\""),
        "no flow takes a phone number"
    );
    let (action, csrf) = form(&page);
    let refused = browser
        .post(
            &action,
            &[
                ("csrf", &csrf),
                ("username", "mo"),
                ("password", "correct horse battery"),
                ("email", "mo@example.org"),
            ],
        )
        .await;
    assert_eq!(refused.status, 400);
    assert!(
        refused.html.contains("registration token"),
        "{}",
        refused.html
    );
    let wrong = browser
        .post(
            &action,
            &[
                ("csrf", &csrf),
                ("username", "mo"),
                ("password", "correct horse battery"),
                ("email", "mo@example.org"),
                ("registration_token", "nope"),
            ],
        )
        .await;
    assert_eq!(wrong.status, 403);
    assert_eq!(sink.received().len(), 0);
}

#[tokio::test]
async fn sessions_prompts_and_sizes_hold() {
    let app = oauth_app(Backend::Sqlite).await;
    let (_, legacy, _) = app.register("nia", "correct horse battery").await;
    let client_id = register_client(&app).await;
    // A legacy /refresh does not take an OAuth session's refresh token.
    let code = code_for(&app, &client_id, "NIADEV", "nia", "correct horse battery").await;
    let t = exchange(&app, &client_id, &code).await.ok().clone();
    app.post(
        "/_matrix/client/v3/refresh",
        json!({ "refresh_token": s(&t, "refresh_token") }),
        None,
    )
    .await
    .assert_error(401, "M_UNKNOWN_TOKEN");
    let t2 = refresh(&app, &client_id, &s(&t, "refresh_token"))
        .await
        .ok()
        .clone();
    // An OAuth session never meets UIA: it is sent to the account page.
    let oauth_token = s(&t2, "access_token");
    for (method, path, body) in [
        (
            reqwest::Method::POST,
            "/_matrix/client/v3/account/password",
            json!({ "new_password": "another horse battery" }),
        ),
        (
            reqwest::Method::POST,
            "/_matrix/client/v3/account/deactivate",
            json!({}),
        ),
        (
            reqwest::Method::POST,
            "/_matrix/client/v3/delete_devices",
            json!({ "devices": ["NIADEV"] }),
        ),
        (
            reqwest::Method::DELETE,
            "/_matrix/client/v3/devices/NIADEV",
            json!({}),
        ),
    ] {
        let r = app.call(method, path, Some(body), Some(&oauth_token)).await;
        r.assert_error(403, "M_FORBIDDEN");
        assert!(
            r.body["error"]
                .as_str()
                .unwrap()
                .contains("/_vouch/account"),
            "{path}: {:?}",
            r.body
        );
    }
    app.get("/_matrix/client/v3/account/whoami", Some(&oauth_token))
        .await
        .ok();

    // prompt=login: a browser signed in before the request must sign in again, even when
    // it posts the consent form straight away.
    let mut browser = Browser::new(&app);
    let start = browser
        .get(&authorize_url(&app, &client_id, "NIA2", ""))
        .await;
    let page = browser.get(&location(&start)).await;
    let (action, csrf) = form(&page);
    browser
        .post(
            &action,
            &[
                ("csrf", &csrf),
                ("username", "nia"),
                ("password", "correct horse battery"),
            ],
        )
        .await;
    app.clock.advance(std::time::Duration::from_secs(1));
    let start = browser
        .get(&authorize_url(&app, &client_id, "NIA3", "&prompt=login"))
        .await;
    let consent_url = format!("{}/consent", location(&start));
    let skipped = browser
        .post(&consent_url, &[("csrf", &csrf), ("decision", "allow")])
        .await;
    assert_eq!(skipped.status, 403, "{}", skipped.html);
    assert!(skipped.html.contains("id=\"password\""));

    // Logging out everywhere ends the browser's session too.
    app.post("/_matrix/client/v3/logout/all", json!({}), Some(&legacy))
        .await
        .ok();
    let start = browser
        .get(&authorize_url(&app, &client_id, "NIA4", ""))
        .await;
    let page = browser.get(&location(&start)).await;
    assert!(
        page.html.contains("id=\"password\""),
        "signed out: {}",
        page.html
    );

    // Oversized metadata is refused.
    let big = app
        .post(
            "/oauth2/registration",
            json!({ "client_uri": "https://a.example/", "redirect_uris": ["https://a.example/cb"], "client_name": "x".repeat(200), "padding": "y".repeat(20_000) }),
            None,
        )
        .await;
    assert_eq!(
        (big.status.as_u16(), s(&big.body, "error")),
        (400, "invalid_client_metadata".into())
    );
}

on_both_databases!(the_account_page_lists_signs_out_and_deactivates,);

/// The page behind `account_management_uri`, deep-linked as an app does: sign in, the
/// session to sign out shown first, signed out (here for good), deactivation after the
/// password again.
async fn the_account_page_lists_signs_out_and_deactivates(backend: Backend) {
    let app = oauth_app(backend).await;
    app.register("pat", "correct horse battery").await;
    let phone = app
        .post(
            "/_matrix/client/v3/login",
            json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "pat" }, "password": "correct horse battery", "device_id": "PATPHONE", "initial_device_display_name": "Pat's phone" }),
            None,
        )
        .await
        .ok()
        .clone();
    let meta = app.get("/_matrix/client/v1/auth_metadata", None).await;
    let page_url = s(meta.ok(), "account_management_uri");
    assert!(
        meta.body["account_management_actions_supported"]
            .to_string()
            .contains("org.matrix.device_delete")
    );
    let mut browser = Browser::new(&app);
    let deep = format!("{page_url}?action=org.matrix.device_delete&device_id=PATPHONE");
    let sign_in = browser.get(&deep).await;
    assert!(
        sign_in.html.contains("Sign in to manage your account"),
        "{}",
        sign_in.html
    );
    let (action, csrf) = form(&sign_in);
    let back = browser
        .post(
            &action,
            &[
                ("csrf", &csrf),
                ("username", "pat"),
                ("password", "correct horse battery"),
            ],
        )
        .await;
    assert_eq!(
        location(&back),
        deep,
        "back to the deep link after signing in"
    );
    let page = browser.get(&deep).await;
    assert!(
        page.html.contains("To sign out the session PATPHONE"),
        "{}",
        page.html
    );
    let first = page
        .html
        .find("id=\"device-")
        .map(|at| &page.html[at..at + 20])
        .unwrap_or("");
    assert!(
        first.contains("PATPHONE"),
        "the deep-linked session comes first: {first}"
    );
    let csrf = page
        .html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_owned();
    let sign_out = format!("{page_url}/sign_out");
    // Without the CSRF field, nothing happens.
    let forged = browser.post(&sign_out, &[("device_id", "PATPHONE")]).await;
    assert_eq!(forged.status, 403);
    app.get(
        "/_matrix/client/v3/account/whoami",
        Some(&s(&phone, "access_token")),
    )
    .await
    .ok();
    let done = browser
        .post(&sign_out, &[("csrf", &csrf), ("device_id", "PATPHONE")])
        .await;
    assert!(done.html.contains("Signed out PATPHONE"), "{}", done.html);
    app.get(
        "/_matrix/client/v3/account/whoami",
        Some(&s(&phone, "access_token")),
    )
    .await
    .assert_error(401, "M_UNKNOWN_TOKEN");
    // Deactivation asks for the password again.
    let deactivate = format!("{page_url}/deactivate");
    let wrong = browser
        .post(
            &deactivate,
            &[("csrf", &csrf), ("password", "nope nope nope")],
        )
        .await;
    assert!(wrong.html.contains("Not deactivated"), "{}", wrong.html);
    let gone = browser
        .post(
            &deactivate,
            &[("csrf", &csrf), ("password", "correct horse battery")],
        )
        .await;
    assert!(gone.html.contains("Account deactivated"), "{}", gone.html);
    app.login("pat", "correct horse battery")
        .await
        .assert_error(403, "M_USER_DEACTIVATED");
}

/// The second review: a sign-up waiting for its codes belongs to the browser that began
/// it; a device request's pages open only after its code was typed; approvals not yet
/// exchanged end with `/logout/all`.
#[tokio::test]
async fn pending_sign_ups_and_device_pages_stay_with_their_browser() {
    let (app, sink) = crate::helpers::spawn_with_mail(Backend::Sqlite, |c| {
        c.oauth.enabled = true;
        c.registration.require_3pid = vec!["email".into()];
    })
    .await;
    let client_id = register_client(&app).await;
    // The attacker starts the request and sends the victim its page.
    let mut attacker = Browser::new(&app);
    let start = attacker
        .get(&authorize_url(&app, &client_id, "HIJACK", "&prompt=create"))
        .await;
    let page_url = location(&start);
    let bait = attacker.get(&page_url).await;
    let (_, attacker_csrf) = form(&bait);
    let mut victim = Browser::new(&app);
    let page = victim.get(&page_url).await;
    let (action, csrf) = form(&page);
    let verify = victim
        .post(
            &action,
            &[
                ("csrf", &csrf),
                ("username", "quinn"),
                ("password", "correct horse battery"),
                ("email", "quinn@example.org"),
            ],
        )
        .await;
    assert!(verify.html.contains("quinn@example.org"));
    let link = sink.wait_for(1).await[0].link();
    app.confirm(&link).await;
    // The attacker can neither see, finish nor replace it.
    let seen = attacker.get(&page_url).await;
    assert_eq!(seen.status, 403);
    assert!(!seen.html.contains("quinn"), "{}", seen.html);
    let stolen = attacker
        .post(&format!("{page_url}/verify"), &[("csrf", &attacker_csrf)])
        .await;
    assert_eq!(stolen.status, 403, "{}", stolen.html);
    assert!(!attacker.cookies.iter().any(|(n, _)| n == "vouch_session"));
    let replaced = attacker
        .post(
            &format!("{page_url}/sign_up"),
            &[
                ("csrf", &attacker_csrf),
                ("username", "mallory"),
                ("password", "correct horse battery"),
                ("email", "m@example.org"),
            ],
        )
        .await;
    assert_eq!(replaced.status, 403);
    // The victim finishes.
    let (action, csrf) = form(&verify);
    let consent = victim.post(&action, &[("csrf", &csrf)]).await;
    assert!(
        consent.html.contains("@quinn:vouch.test"),
        "{}",
        consent.html
    );

    // A device request's page, sent as a link, leads to the code page.
    let tv = device_client(&app).await;
    let started = start_device(&app, &tv, "PHISHTV").await;
    let mut someone = Browser::new(&app);
    let typed = someone.get(&s(&started, "verification_uri_complete")).await;
    let (action, csrf) = form(&typed);
    let found = someone
        .post(
            &action,
            &[("csrf", &csrf), ("user_code", &s(&started, "user_code"))],
        )
        .await;
    let grant_page = location(&found);
    let phished = victim.get(&grant_page).await;
    assert!(
        location(&phished).ends_with("/_vouch/oauth/device"),
        "back to the code page"
    );
    // The device's app is not taken at its word, and gets no admin API.
    let sign_in = someone.get(&grant_page).await;
    let (action, csrf) = form(&sign_in);
    let consent = someone
        .post(
            &action,
            &[
                ("csrf", &csrf),
                ("username", "quinn"),
                ("password", "correct horse battery"),
            ],
        )
        .await;
    assert!(consent.html.contains("not verified"), "{}", consent.html);
    let admin = app
        .send(app.http.post(format!("{}/oauth2/device", app.base)).form(&[
            ("client_id", tv.as_str()),
            (
                "scope",
                "urn:matrix:client:api:* urn:matrix:client:device:X urn:synapse:admin:*",
            ),
        ]))
        .await;
    assert_eq!(s(&admin.body, "error"), "invalid_scope");

    // Approved and waiting, then the user logs out everywhere: nothing opens after.
    let (action, csrf) = form(&consent);
    someone
        .post(&action, &[("csrf", &csrf), ("decision", "allow")])
        .await;
    let (token, _) = app.login_ok("quinn", "correct horse battery").await;
    app.post("/_matrix/client/v3/logout/all", json!({}), Some(&token))
        .await
        .ok();
    app.clock.advance(std::time::Duration::from_secs(6));
    assert_eq!(
        s(
            &poll(&app, &tv, &s(&started, "device_code")).await.body,
            "error"
        ),
        "access_denied"
    );
}

#[tokio::test]
async fn pages_speak_the_users_language() {
    let app = oauth_app(Backend::Sqlite).await;
    let r = app
        .post(
            "/oauth2/registration",
            json!({
                "client_name": "<b>Evil</b> & Co",
                "client_name#fr": "Appli <i>française</i>",
                "client_uri": "https://client.example.org/",
                "redirect_uris": [REDIRECT],
                "application_type": "native",
            }),
            None,
        )
        .await;
    let client_id = s(&r.body, "client_id");
    let page_of = |extra: &'static str, accept: Option<&'static str>| {
        let app = &app;
        let client_id = client_id.clone();
        async move {
            let mut req = app
                .http
                .get(authorize_url(app, &client_id, "LANGDEV", extra));
            if let Some(a) = accept {
                req = req.header("accept-language", a);
            }
            let start = req.send().await.unwrap();
            let to = start.headers()["location"].to_str().unwrap().to_owned();
            let mut req = app.http.get(to);
            if let Some(a) = accept {
                req = req.header("accept-language", a);
            }
            req.send().await.unwrap().text().await.unwrap()
        }
    };
    // The app's ui_locales first, then the browser's languages by weight, else English.
    let fr = page_of("&ui_locales=fr", None).await;
    assert!(
        fr.contains("<html lang=\"fr\">")
            && fr.contains("Connexion")
            && fr.contains("Mot de passe"),
        "{fr}"
    );
    assert!(
        fr.contains("Appli &lt;i&gt;française&lt;/i&gt;"),
        "the localised name, escaped: {fr}"
    );
    let browser_fr = page_of("", Some("de-DE, fr-CA;q=0.8, en;q=0.5")).await;
    assert!(browser_fr.contains("Connexion"), "{browser_fr}");
    let english = page_of("", Some("de, ja;q=0.9")).await;
    assert!(
        english.contains("<html lang=\"en\">") && english.contains("Sign in"),
        "{english}"
    );
    assert!(
        english.contains("&lt;b&gt;Evil&lt;/b&gt; &amp; Co"),
        "values are escaped: {english}"
    );
    assert!(!english.contains("<b>Evil"));
}

/// MSC3824 (spec v1.18): with OAuth 2.0 on, `GET /login` offers `m.login.sso` marked
/// `oauth_aware_preferred`; its redirect signs the browser in on the same pages, asks the
/// user to confirm where the login goes, and hands the client a single-use login token.
#[tokio::test]
async fn legacy_sso_hands_a_login_token_to_the_client() {
    let app = oauth_app(Backend::Sqlite).await;
    app.register("rae", "correct horse battery").await;
    let flows = app.get("/_matrix/client/v3/login", None).await;
    let flows = flows.ok()["flows"].as_array().unwrap().clone();
    let sso = flows
        .iter()
        .find(|f| f["type"] == "m.login.sso")
        .expect("m.login.sso offered");
    assert_eq!(sso["oauth_aware_preferred"], true);
    assert!(flows.iter().any(|f| f["type"] == "m.login.token"));
    let bad = app
        .get(
            "/_matrix/client/v3/login/sso/redirect?redirectUrl=javascript:alert(1)",
            None,
        )
        .await;
    assert_eq!(bad.status, 400);

    let mut browser = Browser::new(&app);
    let start = browser
        .get(&format!(
            "{}/_matrix/client/v3/login/sso/redirect?redirectUrl=https%3A%2F%2Fapp.example.org%2Fafter%3Fx%3D1",
            app.base
        ))
        .await;
    assert_eq!(start.status, 302, "{}", start.html);
    let page = browser.get(&location(&start)).await;
    let (action, csrf) = form(&page);
    let confirm = browser
        .post(
            &action,
            &[
                ("csrf", &csrf),
                ("username", "rae"),
                ("password", "correct horse battery"),
            ],
        )
        .await;
    assert!(
        confirm.html.contains("app.example.org") && confirm.html.contains("@rae:vouch.test"),
        "{}",
        confirm.html
    );
    let csp = confirm.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("https://app.example.org"), "{csp}");
    let (action, csrf) = form(&confirm);
    let back = browser
        .post(&action, &[("csrf", &csrf), ("decision", "allow")])
        .await;
    let to = location(&back);
    assert!(
        to.starts_with("https://app.example.org/after?x=1&loginToken="),
        "{to}"
    );
    let token = params(&to)["loginToken"].clone();
    // Ten logins with the token at once: one session.
    let body = json!({ "type": "m.login.token", "token": token });
    let replies = release_together(
        &app.base,
        (0..10)
            .map(|_| Held::post_json("/_matrix/client/v3/login", &body))
            .collect(),
    )
    .await;
    let won: Vec<_> = replies.iter().filter(|r| r.status == 200).collect();
    assert_eq!(
        won.len(),
        1,
        "{:?}",
        replies.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    assert_eq!(count(&replies, 403, "M_FORBIDDEN"), 9);
    let access = s(&won[0].body, "access_token");
    let me = app
        .get("/_matrix/client/v3/account/whoami", Some(&access))
        .await;
    assert_eq!(me.ok()["user_id"], "@rae:vouch.test");

    // Without OAuth 2.0, neither is offered.
    let legacy = spawn_with(Backend::Sqlite, |_| {}).await;
    let flows = legacy.get("/_matrix/client/v3/login", None).await;
    assert_eq!(flows.ok()["flows"], json!([{ "type": "m.login.password" }]));
    let r = legacy
        .post(
            "/_matrix/client/v3/login",
            json!({ "type": "m.login.token", "token": "x" }),
            None,
        )
        .await;
    assert_eq!(r.status, 400);
}

on_both_databases!(a_forgotten_password_is_reset_on_the_pages,);

/// The sign-in page's "Forgot your password?": a code to the account's address (the same
/// page whether or not an account has it), then the code and a new password; every session
/// of the account ends, and the new password signs in.
async fn a_forgotten_password_is_reset_on_the_pages(backend: Backend) {
    let (app, sink) = crate::helpers::spawn_with_mail(backend, |c| c.oauth.enabled = true).await;
    let (user_id, old_token, _) = app.register("sam", "correct horse battery").await;
    let store = vouch_storage::Db::connect(&app.config.database.url, 2)
        .await
        .unwrap();
    store
        .replace_threepids(&user_id, &[("email".into(), "sam@example.org".into())], 1)
        .await
        .unwrap();
    let client_id = register_client(&app).await;
    let mut browser = Browser::new(&app);
    let start = browser
        .get(&authorize_url(&app, &client_id, "RESETDEV", ""))
        .await;
    let grant_page = location(&start);
    let sign_in = browser.get(&grant_page).await;
    let reset_url = sign_in
        .html
        .replace("&#x2f;", "/")
        .split("href=\"")
        .find(|h| h.contains("/_vouch/reset"))
        .and_then(|h| h.split('"').next())
        .map(|h| h.replace("&amp;", "&"))
        .expect("a reset link on the sign-in page");
    let page = browser.get(&reset_url).await;
    let (action, csrf) = form(&page);
    // No account has this address: the page reads alike and nothing is sent.
    let mut stranger = Browser::new(&app);
    let other = stranger.get(&reset_url).await;
    let (other_action, other_csrf) = form(&other);
    let unknown = stranger
        .post(
            &other_action,
            &[("csrf", &other_csrf), ("address", "nobody@example.org")],
        )
        .await;
    let known = browser
        .post(&action, &[("csrf", &csrf), ("address", "sam@example.org")])
        .await;
    assert_eq!(unknown.status, known.status);
    assert!(
        unknown
            .html
            .contains("If an account has nobody@example.org"),
        "{}",
        unknown.html
    );
    assert!(
        known.html.contains("If an account has sam@example.org"),
        "{}",
        known.html
    );
    let code = mail_code_reset(&sink.wait_for(1).await[0].text());
    sink.assert_total(1).await;
    let (action, csrf) = form(&known);
    // The stranger's code, or a wrong one, sets nothing; a weak password is refused before
    // the code is spent.
    let (sa, sc) = form(&unknown);
    let none = stranger
        .post(
            &sa,
            &[
                ("csrf", &sc),
                ("code", &code),
                ("password", "another horse battery"),
            ],
        )
        .await;
    assert!(none.html.contains("The code is wrong"), "{}", none.html);
    let weak = browser
        .post(
            &action,
            &[("csrf", &csrf), ("code", &code), ("password", "x")],
        )
        .await;
    assert_eq!(weak.status, 400, "{}", weak.html);
    let done = browser
        .post(
            &action,
            &[
                ("csrf", &csrf),
                ("code", &code),
                ("password", "another horse battery"),
            ],
        )
        .await;
    assert!(
        done.html.contains("Your password has been changed"),
        "{}",
        done.html
    );
    app.get("/_matrix/client/v3/account/whoami", Some(&old_token))
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");
    app.login("sam", "correct horse battery")
        .await
        .assert_error(403, "M_FORBIDDEN");
    app.login_ok("sam", "another horse battery").await;
    // The code is spent.
    let again = browser
        .post(
            &action,
            &[
                ("csrf", &csrf),
                ("code", &code),
                ("password", "third horse battery"),
            ],
        )
        .await;
    assert!(again.html.contains("Start again"), "{}", again.html);
}

/// The code a password reset mail carries.
fn mail_code_reset(text: &str) -> String {
    text.split("reset page: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no code in {text}"))
        .to_owned()
}

/// A browser signed in to the account page at `page_url` as `who` (password "correct
/// horse battery"), and the page's CSRF token.
async fn account_page_for<'a>(
    app: &'a TestApp,
    page_url: &str,
    who: &str,
) -> (Browser<'a>, String) {
    let mut browser = Browser::new(app);
    let sign_in = browser.get(page_url).await;
    let (action, csrf) = form(&sign_in);
    browser
        .post(
            &action,
            &[
                ("csrf", &csrf),
                ("username", who),
                ("password", "correct horse battery"),
            ],
        )
        .await;
    let page = browser.get(page_url).await;
    assert!(page.html.contains(who), "{}", page.html);
    let (_, csrf) = form(&page);
    (browser, csrf)
}

on_both_databases!(the_account_page_changes_the_name_the_password_and_the_addresses,);

/// The account page's own changes, each as the client API makes it: the display name; an
/// email address added after the password and a typed code (the code only for the
/// account and browser that asked); a phone number removed; the password changed after the
/// current one, ending every session but opening the page's again.
async fn the_account_page_changes_the_name_the_password_and_the_addresses(backend: Backend) {
    let (app, sink) = crate::helpers::spawn_with_mail(backend, |c| c.oauth.enabled = true).await;
    let (user_id, token, _) = app.register("kim", "correct horse battery").await;
    app.register("lee", "correct horse battery").await;
    let store = vouch_storage::Db::connect(&app.config.database.url, 2)
        .await
        .unwrap();
    store
        .replace_threepids(&user_id, &[("msisdn".into(), "447700900123".into())], 1)
        .await
        .unwrap();
    let page_url = s(
        app.get("/_matrix/client/v1/auth_metadata", None).await.ok(),
        "account_management_uri",
    );
    let (mut browser, csrf) = account_page_for(&app, &page_url, "kim").await;
    assert!(browser.get(&page_url).await.html.contains("+447700900123"));

    // The display name, as `/profile` then shows it.
    let named = browser
        .post(
            &format!("{page_url}/profile"),
            &[("csrf", &csrf), ("displayname", "Kim of the Hills")],
        )
        .await;
    assert!(
        named.html.contains("Your display name has been saved"),
        "{}",
        named.html
    );
    let profile = app
        .get(
            &format!("/_matrix/client/v3/profile/{user_id}"),
            Some(&token),
        )
        .await;
    assert_eq!(profile.ok()["displayname"], "Kim of the Hills");
    let long = "x".repeat(300);
    let too_long = browser
        .post(
            &format!("{page_url}/profile"),
            &[("csrf", &csrf), ("displayname", &long)],
        )
        .await;
    assert!(
        too_long.html.contains("at most 256 characters"),
        "{}",
        too_long.html
    );
    // A NUL character is refused alike on both databases (PostgreSQL cannot hold it; the
    // review saw 500s), here and at the client API and login.
    let nul = browser
        .post(
            &format!("{page_url}/profile"),
            &[("csrf", &csrf), ("displayname", "a\0b")],
        )
        .await;
    assert!(
        nul.html.contains("must not contain NUL characters"),
        "{}",
        nul.html
    );
    app.put(
        &format!("/_matrix/client/v3/profile/{user_id}/displayname"),
        json!({ "displayname": "a\u{0}b" }),
        Some(&token),
    )
    .await
    .assert_error(400, "M_INVALID_PARAM");
    let login = app.login("k\u{0}im", "correct horse battery").await;
    assert!(
        login.status == 400 || login.status == 403,
        "{} {:?}",
        login.status,
        login.body
    );

    // An address: the password first (nothing is sent without it), then the mail's code.
    let add = format!("{page_url}/address");
    let wrong = browser
        .post(
            &add,
            &[
                ("csrf", &csrf),
                ("address", "kim@example.org"),
                ("password", "not my password"),
            ],
        )
        .await;
    assert!(
        wrong.html.contains("Invalid username or password"),
        "{}",
        wrong.html
    );
    let sent = browser
        .post(
            &add,
            &[
                ("csrf", &csrf),
                ("address", "kim@example.org"),
                ("password", "correct horse battery"),
            ],
        )
        .await;
    assert!(
        sent.html
            .contains("A code is on its way to kim@example.org"),
        "{}",
        sent.html
    );
    let mail = sink.wait_for(1).await[0].text();
    sink.assert_total(1).await;
    let code = mail
        .split("account page: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no code in {mail}"))
        .to_owned();
    let (verify, _) = form(&sent);
    // Another account, even with this browser's cookie, cannot finish it.
    let (mut other, other_csrf) = account_page_for(&app, &page_url, "lee").await;
    let add_cookie = browser
        .cookies
        .iter()
        .find(|(n, _)| n == "vouch_add")
        .cloned()
        .expect("the add cookie");
    other.cookies.push(add_cookie);
    let stolen = other
        .post(&verify, &[("csrf", &other_csrf), ("code", &code)])
        .await;
    assert!(stolen.html.contains("Start again"), "{}", stolen.html);
    let mistyped = browser
        .post(&verify, &[("csrf", &csrf), ("code", "000000x")])
        .await;
    assert_eq!(mistyped.status, 400);
    assert!(
        mistyped.html.contains("The code is wrong"),
        "{}",
        mistyped.html
    );
    let added = browser
        .post(&verify, &[("csrf", &csrf), ("code", &code)])
        .await;
    assert!(
        added.html.contains("The address has been added"),
        "{}",
        added.html
    );
    let listed = app
        .get("/_matrix/client/v3/account/3pid", Some(&token))
        .await;
    assert!(
        listed.ok().to_string().contains("kim@example.org"),
        "{:?}",
        listed.body
    );
    // Spent: the same code adds nothing twice.
    let again = browser
        .post(&verify, &[("csrf", &csrf), ("code", &code)])
        .await;
    assert!(again.html.contains("Start again"), "{}", again.html);

    // The phone number, removed.
    let removed = browser
        .post(
            &format!("{page_url}/address/remove"),
            &[
                ("csrf", &csrf),
                ("medium", "msisdn"),
                ("address", "447700900123"),
            ],
        )
        .await;
    assert!(
        removed.html.contains("The address has been removed"),
        "{}",
        removed.html
    );
    let not_mine = browser
        .post(
            &format!("{page_url}/address/remove"),
            &[
                ("csrf", &csrf),
                ("medium", "email"),
                ("address", "someone@example.org"),
            ],
        )
        .await;
    assert!(
        not_mine.html.contains("not on your account"),
        "{}",
        not_mine.html
    );
    let listed = app
        .get("/_matrix/client/v3/account/3pid", Some(&token))
        .await;
    assert!(!listed.ok().to_string().contains("447700900123"));
    assert!(listed.ok().to_string().contains("kim@example.org"));

    // The password: the policy, then the current one, then every session ends but this
    // page's, which is opened again with the new password.
    let password = format!("{page_url}/password");
    let weak = browser
        .post(
            &password,
            &[
                ("csrf", &csrf),
                ("password", "correct horse battery"),
                ("new_password", "x"),
                ("sign_out_all", "1"),
            ],
        )
        .await;
    assert!(!weak.html.contains("has been changed"), "{}", weak.html);
    let not_current = browser
        .post(
            &password,
            &[
                ("csrf", &csrf),
                ("password", "wrong horse battery"),
                ("new_password", "another horse battery"),
                ("sign_out_all", "1"),
            ],
        )
        .await;
    assert!(
        not_current.html.contains("Invalid username or password"),
        "{}",
        not_current.html
    );
    app.get("/_matrix/client/v3/account/whoami", Some(&token))
        .await
        .ok();
    let changed = browser
        .post(
            &password,
            &[
                ("csrf", &csrf),
                ("password", "correct horse battery"),
                ("new_password", "another horse battery"),
                ("sign_out_all", "1"),
            ],
        )
        .await;
    assert!(
        changed
            .html
            .contains("Your password has been changed and every session signed out"),
        "{}",
        changed.html
    );
    app.get("/_matrix/client/v3/account/whoami", Some(&token))
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");
    app.login("kim", "correct horse battery")
        .await
        .assert_error(403, "M_FORBIDDEN");
    app.login_ok("kim", "another horse battery").await;
    let still = browser.get(&page_url).await;
    assert!(
        still.html.contains("Kim of the Hills"),
        "the page stays signed in: {}",
        still.html
    );
}

/// Mails speak the user's language: the client's `Accept-Language` at requestToken, and
/// for an address an account holds, the language the account chose on its page (which
/// then speaks it too), whatever the client asks.
#[tokio::test]
async fn mails_speak_the_users_language() {
    let (app, sink) =
        crate::helpers::spawn_with_mail(Backend::Sqlite, |c| c.oauth.enabled = true).await;
    let ask = |kind: &'static str, email: &'static str, accept: &'static str| {
        let app = &app;
        async move {
            let res = app
                .http
                .post(format!(
                    "{}/_matrix/client/v3/{kind}/email/requestToken",
                    app.base
                ))
                .header("accept-language", accept)
                .json(&json!({ "email": email, "client_secret": "langsecret", "send_attempt": 1 }))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
        }
    };
    ask("register", "nouveau@example.org", "fr-FR, en;q=0.5").await;
    let mail = &sink.wait_for(1).await[0];
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some("Confirmez votre adresse e-mail pour Vouch Test"),
        "{}",
        mail.text()
    );
    assert!(mail.text().contains("Bonjour"), "{}", mail.text());
    ask("register", "new@example.org", "de, en;q=0.5").await;
    let mail = &sink.wait_for(2).await[1];
    assert!(mail.text().starts_with("Hello"), "{}", mail.text());

    // The account's choice, made on its page, wins over the client's header.
    let (user_id, _, _) = app.register("zoe", "correct horse battery").await;
    let store = vouch_storage::Db::connect(&app.config.database.url, 2)
        .await
        .unwrap();
    store
        .replace_threepids(&user_id, &[("email".into(), "zoe@example.org".into())], 1)
        .await
        .unwrap();
    let page_url = s(
        app.get("/_matrix/client/v1/auth_metadata", None).await.ok(),
        "account_management_uri",
    );
    let (mut browser, csrf) = account_page_for(&app, &page_url, "zoe").await;
    let page = browser.get(&page_url).await;
    assert!(page.html.contains("<option value=\"fr\""), "{}", page.html);
    let unknown = browser
        .post(
            &format!("{page_url}/language"),
            &[("csrf", &csrf), ("language", "xx")],
        )
        .await;
    assert!(
        unknown.html.contains("No pages or mails are written in xx"),
        "{}",
        unknown.html
    );
    let chosen = browser
        .post(
            &format!("{page_url}/language"),
            &[("csrf", &csrf), ("language", "fr")],
        )
        .await;
    assert!(
        chosen.html.contains("Votre langue a été enregistrée"),
        "{}",
        chosen.html
    );
    let again = browser.get(&page_url).await;
    assert!(
        again.html.contains("<html lang=\"fr\">"),
        "the page speaks the chosen language: {}",
        again.html
    );
    ask("account/password", "zoe@example.org", "en").await;
    let mail = &sink.wait_for(3).await[2];
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some("Réinitialisez votre mot de passe Vouch Test"),
        "{}",
        mail.text()
    );
    assert!(
        mail.text().contains("réinitialiser le mot de passe"),
        "{}",
        mail.text()
    );
}

/// Behind https the pages' cookies are `__Host-` cookies, which no other host of the site
/// can set: a CSRF cookie tossed in by a sibling or parent domain (without the prefix) is
/// not read, so a forged form fails.
#[tokio::test]
async fn cookies_behind_https_cannot_be_tossed_by_another_host() {
    let app = spawn_with(Backend::Sqlite, |c| {
        c.oauth.enabled = true;
        c.public_baseurl = "https://vouch.example.org/".into();
    })
    .await;
    let page = app
        .http
        .get(format!("{}/_vouch/reset", app.base))
        .send()
        .await
        .unwrap();
    let set = page.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        set.starts_with("__Host-vouch_csrf=") && set.contains("; Secure") && set.contains("Path=/"),
        "{set}"
    );
    assert!(!set.contains("Domain="), "{set}");
    let token = set
        .split(';')
        .next()
        .and_then(|p| p.split_once('='))
        .map(|(_, v)| v.to_owned())
        .unwrap();
    let post = |cookie: String| {
        let app = &app;
        let token = token.clone();
        async move {
            app.http
                .post(format!("{}/_vouch/reset", app.base))
                .header("cookie", cookie)
                .form(&[("csrf", token.as_str()), ("address", "nobody@example.org")])
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(
        post(format!("vouch_csrf={token}")).await,
        StatusCode::FORBIDDEN,
        "a cookie without the prefix is not this host's"
    );
    assert_ne!(
        post(format!("__Host-vouch_csrf={token}")).await,
        StatusCode::FORBIDDEN,
        "the host's own cookie is"
    );
}

/// A web app on one of `[oauth] first_party_client_hosts` is the operator's own: a signed-in
/// user goes straight back to it, with no consent page; the page is shown anyway for
/// `prompt=consent`, a session being replaced, and any native app whatever it says.
#[tokio::test]
async fn first_party_web_apps_skip_the_consent_page() {
    let app = spawn_with(Backend::Sqlite, |c| {
        c.oauth.enabled = true;
        c.oauth.first_party_client_hosts = vec!["app.example.org".into()];
    })
    .await;
    app.register("fay", "correct horse battery").await;
    let web = app
        .post(
            "/oauth2/registration",
            json!({
                "client_name": "Our Web App",
                "client_uri": "https://app.example.org/",
                "redirect_uris": ["https://app.example.org/callback"],
                "application_type": "web",
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
            }),
            None,
        )
        .await;
    assert_eq!(web.status, StatusCode::CREATED, "{:?}", web.body);
    let web_id = s(&web.body, "client_id");
    let native = app
        .post(
            "/oauth2/registration",
            json!({
                "client_name": "Says it is ours",
                "client_uri": "https://app.example.org/",
                "redirect_uris": [REDIRECT],
                "application_type": "native",
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
            }),
            None,
        )
        .await;
    let native_id = s(&native.body, "client_id");
    let url = |client_id: &str, redirect: &str, device: &str, extra: &str| {
        let q = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", redirect)
            .append_pair(
                "scope",
                &format!("urn:matrix:client:api:* urn:matrix:client:device:{device}"),
            )
            .append_pair("state", "fp")
            .append_pair("code_challenge", CHALLENGE)
            .append_pair("code_challenge_method", "S256")
            .finish();
        format!("{}/oauth2/authorize?{q}{extra}", app.base)
    };
    let mut browser = Browser::new(&app);
    let start = browser
        .get(&url(
            &web_id,
            "https://app.example.org/callback",
            "WEB1",
            "",
        ))
        .await;
    let page = browser.get(&location(&start)).await;
    let (action, csrf) = form(&page);
    let back = browser
        .post(
            &action,
            &[
                ("csrf", &csrf),
                ("username", "fay"),
                ("password", "correct horse battery"),
            ],
        )
        .await;
    let to = location(&back);
    assert!(
        to.starts_with("https://app.example.org/callback?code="),
        "straight back after signing in: {to}"
    );
    let tokens = app
        .send(app.http.post(format!("{}/oauth2/token", app.base)).form(&[
            ("grant_type", "authorization_code"),
            ("client_id", web_id.as_str()),
            ("code", params(&to)["code"].as_str()),
            ("redirect_uri", "https://app.example.org/callback"),
            ("code_verifier", VERIFIER),
        ]))
        .await;
    assert!(tokens.ok()["access_token"].is_string());
    // Signed in already: a new device goes straight back too.
    let again = browser
        .get(&url(
            &web_id,
            "https://app.example.org/callback",
            "WEB2",
            "",
        ))
        .await;
    let straight = browser.get(&location(&again)).await;
    assert!(
        location(&straight).starts_with("https://app.example.org/callback?code="),
        "{}",
        straight.html
    );
    // Asked for, or replacing a session, or a native app: the consent page.
    for (client, redirect, device, extra) in [
        (
            &web_id,
            "https://app.example.org/callback",
            "WEB3",
            "&prompt=consent",
        ),
        (&web_id, "https://app.example.org/callback", "WEB1", ""),
        (&native_id, REDIRECT_USED, "NAT1", ""),
    ] {
        let start = browser.get(&url(client, redirect, device, extra)).await;
        let page = browser.get(&location(&start)).await;
        assert_eq!(
            page.status,
            StatusCode::OK,
            "{device}{extra}: {}",
            page.html
        );
        assert!(
            page.html.contains("name=\"decision\""),
            "{device}{extra}: the consent page: {}",
            page.html
        );
    }
}
