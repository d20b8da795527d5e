//! OpenID Connect (`[oauth] openid_connect`), as a standard relying party sees it: the
//! `openidconnect` crate discovers Vouch, sends a user through the pages, exchanges the
//! code with PKCE, verifies the EdDSA ID token against the published keys and asks
//! userinfo; the same for a Matrix session that asked for `openid`; keys rotate.

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreIdToken, CoreIdTokenVerifier, CoreJwsSigningAlgorithm,
    CoreProviderMetadata, CoreUserInfoClaims,
};
use openidconnect::{
    AuthorizationCode, ClientId, CsrfToken, HttpRequest, HttpResponse, IssuerUrl, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, spawn_with};
use crate::oauth::{Browser, form, location, register_client};
use crate::on_both_databases;

/// Where the test client's browser lands (its loopback redirect URI, any port).
const REDIRECT_USED: &str = "http://127.0.0.1:43210/callback";

on_both_databases!(a_standard_client_signs_a_user_in_with_openid_connect,);

async fn oidc_app(backend: Backend) -> TestApp {
    spawn_with(backend, |c| {
        c.oauth.enabled = true;
        c.oauth.openid_connect = true;
    })
    .await
}

/// A client's ID token verifier, reading the server's (injected) clock for expiry.
fn on_clock<'a>(app: &TestApp, verifier: CoreIdTokenVerifier<'a>) -> CoreIdTokenVerifier<'a> {
    use vouch_core::clock::Clock as _;
    let clock = app.clock.clone();
    verifier.set_time_fn(move || {
        chrono::DateTime::from_timestamp_millis(clock.now_ms()).expect("a time")
    })
}

/// The relying party's HTTP client: the test's own reqwest, as `openidconnect` asks.
fn http(
    app: &TestApp,
) -> impl Fn(HttpRequest) -> std::pin::Pin<Box<dyn Future<Output = Result<HttpResponse, reqwest::Error>>>>
{
    let client = app.http.clone();
    move |req: HttpRequest| {
        let client = client.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let res = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await?;
            let mut out = http::Response::builder().status(res.status());
            for (k, v) in res.headers() {
                out = out.header(k, v);
            }
            let bytes = res.bytes().await?.to_vec();
            Ok(out.body(bytes).expect("a response"))
        })
    }
}

/// Signs `user` in through the pages for the authorization URL `url` and approves: the
/// URL the browser is sent back to, and the consent page.
async fn approve(app: &TestApp, url: &str, user: &str, password: &str) -> (String, String) {
    let mut browser = Browser::new(app);
    let start = browser.get(url).await;
    assert_eq!(start.status, StatusCode::SEE_OTHER, "{}", start.html);
    let page = browser.get(&location(&start)).await;
    let (action, csrf) = form(&page);
    let consent = browser
        .post(
            &action,
            &[("csrf", &csrf), ("username", user), ("password", password)],
        )
        .await;
    assert_eq!(consent.status, StatusCode::OK, "{}", consent.html);
    let (action, csrf) = form(&consent);
    let back = browser
        .post(&action, &[("csrf", &csrf), ("decision", "allow")])
        .await;
    (location(&back), consent.html)
}

fn query(url: &str, name: &str) -> String {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no {name} in {url}"))
}

/// A user with a display name, an email address and a phone number.
async fn oli(app: &TestApp) -> (String, String) {
    let (user_id, token, _) = app.register("oli", "correct horse battery").await;
    app.put(
        &format!("/_matrix/client/v3/profile/{user_id}/displayname"),
        json!({ "displayname": "Oli the Owl" }),
        Some(&token),
    )
    .await
    .ok();
    let store = vouch_storage::Db::connect(&app.config.database.url, 2)
        .await
        .unwrap();
    store
        .replace_threepids(
            &user_id,
            &[
                ("email".into(), "oli@example.org".into()),
                ("msisdn".into(), "447700900123".into()),
            ],
            1,
        )
        .await
        .unwrap();
    (user_id, token)
}

async fn discover(app: &TestApp) -> CoreProviderMetadata {
    // The issuer the server names (its public URL); discovery checks it is the one asked.
    let named = app.get("/.well-known/openid-configuration", None).await;
    let issuer = IssuerUrl::new(named.ok()["issuer"].as_str().unwrap().to_owned()).unwrap();
    CoreProviderMetadata::discover_async(issuer, &http(app))
        .await
        .expect("discovery")
}

/// Sign-in alone (`openid profile email phone`, no Matrix scope): the ID token and
/// userinfo say who the user is; no Matrix session or device is made; revocation ends it.
/// Then a Matrix session that asked for `openid` gets an ID token too.
async fn a_standard_client_signs_a_user_in_with_openid_connect(backend: Backend) {
    let app = oidc_app(backend).await;
    let (user_id, matrix_token) = oli(&app).await;
    let client_id = register_client(&app).await;
    let meta = discover(&app).await;
    assert!(
        meta.id_token_signing_alg_values_supported()
            .contains(&CoreJwsSigningAlgorithm::EdDsa),
        "{:?}",
        meta.id_token_signing_alg_values_supported()
    );
    let client = CoreClient::from_provider_metadata(meta, ClientId::new(client_id.clone()), None)
        .set_redirect_uri(RedirectUrl::new(REDIRECT_USED.into()).unwrap());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, csrf, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("profile".into()))
        .add_scope(Scope::new("email".into()))
        .add_scope(Scope::new("phone".into()))
        .set_pkce_challenge(challenge)
        .url();
    let (back, consent) = approve(&app, url.as_str(), "oli", "correct horse battery").await;
    assert!(
        consent.contains("know that you are") && consent.contains("see your email address"),
        "{consent}"
    );
    assert!(
        !consent.contains("read and send your messages"),
        "no Matrix session is offered: {consent}"
    );
    assert!(back.starts_with(REDIRECT_USED), "{back}");
    assert_eq!(&query(&back, "state"), csrf.secret());
    let tokens = client
        .exchange_code(AuthorizationCode::new(query(&back, "code")))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&http(&app))
        .await
        .expect("the code exchange");
    assert!(tokens.refresh_token().is_none(), "a sign-in has no refresh");
    let id_token = tokens.id_token().expect("an ID token");
    let claims = id_token
        .claims(&on_clock(&app, client.id_token_verifier()), &nonce)
        .expect("a valid ID token, signed with a published key, for this nonce");
    assert_eq!(claims.subject().as_str(), user_id);
    assert_eq!(claims.email().map(|e| e.as_str()), Some("oli@example.org"));
    assert_eq!(claims.email_verified(), Some(true));
    assert_eq!(
        claims.phone_number().map(|p| p.as_str()),
        Some("+447700900123")
    );
    assert_eq!(claims.preferred_username().map(|u| u.as_str()), Some("oli"));
    assert_eq!(
        claims.name().and_then(|n| n.get(None)).map(|n| n.as_str()),
        Some("Oli the Owl")
    );
    // A token with another nonce is refused by the client.
    assert!(
        id_token
            .claims(
                &on_clock(&app, client.id_token_verifier()),
                &Nonce::new("other".into())
            )
            .is_err()
    );
    let info: CoreUserInfoClaims = client
        .user_info(
            tokens.access_token().clone(),
            Some(claims.subject().clone()),
        )
        .unwrap()
        .request_async(&http(&app))
        .await
        .expect("userinfo");
    assert_eq!(info.email().map(|e| e.as_str()), Some("oli@example.org"));
    // No Matrix session: the token is not one, and no device was made.
    let access = tokens.access_token().secret().clone();
    app.get("/_matrix/client/v3/account/whoami", Some(&access))
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");
    let devices = app
        .get("/_matrix/client/v3/devices", Some(&matrix_token))
        .await;
    assert_eq!(
        devices.ok()["devices"].as_array().map(Vec::len),
        Some(1),
        "{:?}",
        devices.body
    );
    // Revoked, userinfo no longer answers.
    let revoked = app
        .http
        .post(format!("{}/oauth2/revoke", app.base))
        .form(&[
            ("token", access.as_str()),
            ("client_id", client_id.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let after = app
        .http
        .get(format!("{}/oauth2/userinfo", app.base))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);
    assert!(
        after.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    // A /login token was not granted openid: 403, insufficient scope.
    let login_token = app.get("/oauth2/userinfo", Some(&matrix_token)).await;
    assert_eq!(login_token.status, 403, "{:?}", login_token.body);

    // A Matrix session that asked for openid: its tokens come with an ID token, and its
    // access token works at userinfo.
    let (code, _) = crate::oauth::code_with(
        &app,
        &client_id,
        "OIDCDEV",
        "openid email",
        "oli",
        "correct horse battery",
    )
    .await;
    let session = crate::oauth::exchange(&app, &client_id, &code).await;
    let body = session.ok().clone();
    let raw: CoreIdToken =
        serde_json::from_value(body["id_token"].clone()).expect("an ID token with the session");
    let session_claims = raw
        .claims(
            &on_clock(&app, client.id_token_verifier()),
            |_: Option<&Nonce>| Ok(()),
        )
        .expect("signed with a published key");
    assert_eq!(session_claims.subject().as_str(), user_id);
    assert!(
        session_claims.phone_number().is_none(),
        "phone was not asked"
    );
    let info = app
        .get(
            "/oauth2/userinfo",
            Some(body["access_token"].as_str().unwrap()),
        )
        .await;
    assert_eq!(info.ok()["email"], "oli@example.org");
    assert_eq!(info.ok()["sub"], Value::from(user_id.as_str()));
}

on_both_databases!(signing_keys_are_made_once_rotate_and_stay_published,);

/// Keys: forty first requests at once make one key (the review found one per request on
/// PostgreSQL); after `signing_key_rotation` a new key signs, both are published, and a
/// relying party that discovers again verifies tokens of the new one.
async fn signing_keys_are_made_once_rotate_and_stay_published(backend: Backend) {
    let app = oidc_app(backend).await;
    oli(&app).await;
    let held = (0..40)
        .map(|_| crate::race::Held {
            method: "GET",
            path: "/oauth2/keys.json".into(),
            body: None,
            headers: Vec::new(),
        })
        .collect();
    let replies = crate::race::release_together(&app.base, held).await;
    let mut kids: Vec<String> = replies
        .iter()
        .flat_map(|r| {
            assert_eq!(r.status, 200, "{:?}", r.body);
            r.body["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["kid"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    kids.sort();
    kids.dedup();
    assert_eq!(kids.len(), 1, "one key for all: {kids:?}");
    let client_id = register_client(&app).await;
    let keys = || {
        let app = &app;
        async move {
            let r = app.get("/oauth2/keys.json", None).await;
            r.ok()["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| {
                    assert_eq!(k["kty"], "OKP");
                    assert_eq!(k["crv"], "Ed25519");
                    assert!(k.get("d").is_none(), "no private part: {k}");
                    k["kid"].as_str().unwrap().to_owned()
                })
                .collect::<Vec<_>>()
        }
    };
    let first = keys().await;
    assert_eq!(first.len(), 1);
    app.clock
        .advance(std::time::Duration::from_secs(30 * 24 * 3600 + 1));
    let sign_in = || {
        let app = &app;
        let client_id = client_id.clone();
        async move {
            let client = CoreClient::from_provider_metadata(
                discover(app).await,
                ClientId::new(client_id),
                None,
            )
            .set_redirect_uri(RedirectUrl::new(REDIRECT_USED.into()).unwrap());
            let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
            let (url, _, nonce) = client
                .authorize_url(
                    CoreAuthenticationFlow::AuthorizationCode,
                    CsrfToken::new_random,
                    Nonce::new_random,
                )
                .set_pkce_challenge(challenge)
                .url();
            let (back, _) = approve(app, url.as_str(), "oli", "correct horse battery").await;
            let tokens = client
                .exchange_code(AuthorizationCode::new(query(&back, "code")))
                .unwrap()
                .set_pkce_verifier(verifier)
                .request_async(&http(app))
                .await
                .unwrap();
            let id_token = tokens.id_token().unwrap();
            id_token
                .claims(&on_clock(app, client.id_token_verifier()), &nonce)
                .expect("verified against the keys discovered");
            let header: Value = serde_json::from_slice(&base64_url(
                id_token.to_string().split('.').next().unwrap(),
            ))
            .unwrap();
            header["kid"].as_str().unwrap().to_owned()
        }
    };
    let kid = sign_in().await;
    let second = keys().await;
    assert_eq!(second.len(), 2, "the old key stays published: {second:?}");
    assert!(!first.contains(&kid), "a new key signs: {kid} {first:?}");
    assert!(second.contains(&kid) && second.contains(&first[0]));
}

fn base64_url(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

/// With OpenID Connect off, a sign-in alone is refused at the authorization endpoint
/// (redirected `invalid_scope`), and the keys and userinfo are not served.
#[tokio::test]
async fn without_openid_connect_a_sign_in_alone_is_refused() {
    let app = spawn_with(Backend::Sqlite, |c| c.oauth.enabled = true).await;
    let client_id = register_client(&app).await;
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", &client_id)
        .append_pair("redirect_uri", REDIRECT_USED)
        .append_pair("scope", "openid email")
        .append_pair("state", "s1")
        .append_pair(
            "code_challenge",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        )
        .append_pair("code_challenge_method", "S256")
        .finish();
    let res = app
        .http
        .get(format!("{}/oauth2/authorize?{q}", app.base))
        .send()
        .await
        .unwrap();
    let to = res.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(query(&to, "error"), "invalid_scope");
    assert_eq!(query(&to, "state"), "s1");
    app.get("/oauth2/keys.json", None)
        .await
        .assert_error(404, "M_UNRECOGNIZED");
    let meta = app.get("/.well-known/openid-configuration", None).await;
    assert!(meta.ok().get("jwks_uri").is_none(), "{:?}", meta.body);
}

on_both_databases!(a_password_change_ends_openid_sign_ins_and_their_approvals,);

/// The review's findings: a code approved before the password changed (or the account was
/// deactivated) buys nothing, and a password change that signs everyone out ends the
/// sign-ins too.
async fn a_password_change_ends_openid_sign_ins_and_their_approvals(backend: Backend) {
    let app = oidc_app(backend).await;
    let (_, matrix_token) = oli(&app).await;
    let client_id = register_client(&app).await;
    let client = CoreClient::from_provider_metadata(
        discover(&app).await,
        ClientId::new(client_id.clone()),
        None,
    )
    .set_redirect_uri(RedirectUrl::new(REDIRECT_USED.into()).unwrap());
    let approved = || {
        let (app, client) = (&app, &client);
        async move {
            let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
            let (url, _, _) = client
                .authorize_url(
                    CoreAuthenticationFlow::AuthorizationCode,
                    CsrfToken::new_random,
                    Nonce::new_random,
                )
                .set_pkce_challenge(challenge)
                .url();
            let (back, _) = approve(app, url.as_str(), "oli", "correct horse battery").await;
            (query(&back, "code"), verifier)
        }
    };
    let (first, first_verifier) = approved().await;
    let tokens = client
        .exchange_code(AuthorizationCode::new(first))
        .unwrap()
        .set_pkce_verifier(first_verifier)
        .request_async(&http(&app))
        .await
        .unwrap();
    let access = tokens.access_token().secret().clone();
    let (pending, pending_verifier) = approved().await;
    // The password changes, every session signed out (the spec's default).
    app.post(
        "/_matrix/client/v3/account/password",
        json!({
            "new_password": "another horse battery",
            "auth": { "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "oli" }, "password": "correct horse battery" },
        }),
        Some(&matrix_token),
    )
    .await
    .ok();
    let info = app
        .http
        .get(format!("{}/oauth2/userinfo", app.base))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(info.status(), 401, "the sign-in ended with the password");
    let stale = client
        .exchange_code(AuthorizationCode::new(pending))
        .unwrap()
        .set_pkce_verifier(pending_verifier)
        .request_async(&http(&app))
        .await;
    assert!(
        format!("{stale:?}").contains("invalid_grant"),
        "an approval made with the old password buys nothing: {stale:?}"
    );
}
