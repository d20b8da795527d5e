//! Signing up through an authorization request (`prompt=create`, or the sign-in page's
//! link): a user name, a password, an email address and/or a phone number as
//! `[registration]` requires, the registration token and terms when configured. The form is
//! checked whole before anything is sent; then each address gets a code (and the mail a
//! link too) through the same validation sessions `requestToken` makes, with a client
//! secret that never leaves the server. The account is made by the accounts service once
//! every address is verified, and the browser goes on to consent.

use axum::Form;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use vouch_core::secrets::{constant_time_eq, new_opaque_id, new_token, token_hash};
use vouch_core::validation::Purpose;
use vouch_mail::TermsLink;
use vouch_storage::BrowserSession;

use super::authorize::error_page;
use super::browser::{self, render, said};
use super::grant_page::{GONE, Open, base_context, consent_page, open_or_answer};
use super::paths;
use crate::accounts::NewUser;
use crate::client::register::{check_available, parse_localpart};
use crate::client_ip::ClientIp;
use crate::error::ApiError;
use crate::state::AppState;
use crate::threepid::{Raw, Submitted, TokenRequest, own_session, request_token, submit_secret};
use vouch_core::uia::{self, Flow, Operation};

/// The sign-up form.
#[derive(Debug, Default, Deserialize)]
pub struct SignUpForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    phone: String,
    #[serde(default)]
    registration_token: String,
    #[serde(default)]
    accept_terms: String,
}

/// An address waiting for its code.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    sid: String,
    address: String,
}

/// An account waiting for its addresses, kept on the request.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PendingSignUp {
    localpart: String,
    password_hash: String,
    client_secret: String,
    email: Option<Pending>,
    phone: Option<Pending>,
    registration_token: Option<String>,
    /// The hash of the `vouch_signup` cookie of the browser that began it: only that browser
    /// sees or finishes it.
    browser: String,
}

/// The sign-up page.
pub(super) fn sign_up_page(
    state: &AppState,
    open: &Open,
    csrf: &str,
    status: StatusCode,
    error: &str,
    form: &SignUpForm,
    cookies: &[HeaderValue],
) -> Response {
    let base = state.config.public_baseurl();
    let r = &state.config.registration;
    let mut ctx = base_context(state, open, "title.sign_up", csrf);
    ctx.action = format!("{base}{}/{}/sign_up", paths::GRANT, open.grant.grant_id);
    ctx.error = error.into();
    ctx.username = form.username.clone();
    ctx.email = form.email.clone();
    ctx.phone = form.phone.clone();
    ctx.registration_token = form.registration_token.clone();
    ctx.email_enabled = state.config.email.enabled;
    ctx.phone_enabled = state.config.sms.enabled;
    // The page asks for what the registration flows ask for (`[uia.flows] register`, or
    // the flows `[registration]` makes), so no door is easier than `/register`.
    let flows = register_flows(state);
    let anywhere = |stage: &str| flows.iter().any(|f| f.iter().any(|s| s == stage));
    let everywhere = |stage: &str| flows.iter().all(|f| f.iter().any(|s| s == stage));
    ctx.email_enabled = ctx.email_enabled && anywhere(uia::EMAIL_IDENTITY);
    ctx.phone_enabled = ctx.phone_enabled && anywhere(uia::MSISDN);
    ctx.email_required = everywhere(uia::EMAIL_IDENTITY);
    ctx.phone_required = everywhere(uia::MSISDN);
    let one_of = |stage: &str| {
        !everywhere(stage)
            && flows.iter().all(|f| {
                f.iter()
                    .any(|s| s == uia::EMAIL_IDENTITY || s == uia::MSISDN)
            })
            && anywhere(stage)
    };
    if one_of(uia::EMAIL_IDENTITY) && one_of(uia::MSISDN) {
        ctx.required_3pid = "sign_up.one_of".into();
    }
    ctx.token_required = anywhere(uia::REGISTRATION_TOKEN);
    let terms: &[vouch_config::TermsPolicy] = if anywhere(uia::TERMS) { &r.terms } else { &[] };
    ctx.terms = terms
        .iter()
        .map(|t| TermsLink {
            name: t.name.clone(),
            url: t.url.clone(),
        })
        .collect();
    ctx.switch_url = format!(
        "{base}{}/{}?view=sign_in",
        paths::GRANT,
        open.grant.grant_id
    );
    render(state, status, "sign_up", &ctx, None, cookies)
}

/// The page that asks for the codes.
fn verify_page(
    state: &AppState,
    open: &Open,
    pending: &PendingSignUp,
    csrf: &str,
    status: StatusCode,
    error: &str,
    cookies: &[HeaderValue],
) -> Response {
    let base = state.config.public_baseurl();
    let mut ctx = base_context(state, open, "title.verify", csrf);
    ctx.action = format!("{base}{}/{}/verify", paths::GRANT, open.grant.grant_id);
    ctx.error = error.into();
    ctx.email = pending
        .email
        .as_ref()
        .map(|p| p.address.clone())
        .unwrap_or_default();
    ctx.phone = pending
        .phone
        .as_ref()
        .map(|p| p.address.clone())
        .unwrap_or_default();
    ctx.switch_url = format!(
        "{base}{}/{}?view=sign_up",
        paths::GRANT,
        open.grant.grant_id
    );
    render(state, status, "verify", &ctx, None, cookies)
}

/// What a browser that did not begin a waiting sign-up is told (nothing of it).
const ELSEWHERE: &str = "msg.elsewhere";

/// The sign-up waiting on this request, if this browser began it.
fn pending_for(state: &AppState, open: &Open, headers: &HeaderMap) -> Option<PendingSignUp> {
    let pending: PendingSignUp = open
        .grant
        .signup
        .as_deref()
        .and_then(|json| serde_json::from_str(json).ok())?;
    let cookie = browser::cookie(state, headers, browser::SIGNUP_COOKIE)?;
    constant_time_eq(&token_hash(cookie), &pending.browser).then_some(pending)
}

/// The request's page while a sign-up waits for its codes: the codes form for the browser
/// that began it, a page that says nothing of it for any other.
pub(super) fn continue_page(
    state: &AppState,
    open: &Open,
    headers: &HeaderMap,
    csrf: &str,
    cookies: &[HeaderValue],
) -> Response {
    match pending_for(state, open, headers) {
        Some(pending) => verify_page(state, open, &pending, csrf, StatusCode::OK, "", cookies),
        None => error_page(state, StatusCode::FORBIDDEN, ELSEWHERE),
    }
}

/// A registration token as the form sends it, if it can be spent now.
async fn token_ok(state: &AppState, token: &str) -> Result<bool, ApiError> {
    if token.is_empty()
        || token.len() > 64
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
    {
        return Ok(false);
    }
    Ok(state
        .db
        .registration_token(token)
        .await?
        .is_some_and(|t| t.is_valid(state.now())))
}

/// # `POST /_vouch/oauth/grant/{grant_id}/sign_up`
///
/// Everything is checked before a message is sent (the name, its availability here and at
/// the homeserver, the password policy, the token, the terms, the addresses and the
/// `[registration] require_3pid` rule), with registration's per-address limit.
pub async fn sign_up_route(
    State(state): State<AppState>,
    Path(grant_id): Path<String>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<SignUpForm>,
) -> Response {
    let open = match open_or_answer(&state, &grant_id, &headers).await {
        Ok(open) => open,
        Err(answer) => return answer,
    };
    let (csrf, cookies) = browser::csrf_cookies(&state, &headers);
    let again = |status: StatusCode, error: &str| {
        sign_up_page(&state, &open, &csrf, status, error, &form, &cookies)
    };
    if !browser::csrf_ok(&state, &headers, &form.csrf) {
        return again(StatusCode::FORBIDDEN, "msg.form_expired");
    }
    // A sign-up another browser began on this request is not this one's to replace.
    if open.grant.signup.is_some() && pending_for(&state, &open, &headers).is_none() {
        return error_page(&state, StatusCode::FORBIDDEN, ELSEWHERE);
    }
    if !state.config.registration.enabled {
        return error_page(
            &state,
            StatusCode::FORBIDDEN,
            "This server does not take new accounts.",
        );
    }
    if state.limits.registration_per_ip.check_ip(ip).is_err() {
        return again(StatusCode::TOO_MANY_REQUESTS, "msg.too_many");
    }
    let checked = async {
        let localpart = parse_localpart(&state, form.username.trim())?;
        check_available(&state, &localpart).await?;
        state.policy.check(&form.password).map_err(|weak| {
            ApiError::new(ruma::api::error::ErrorKind::WeakPassword, weak.to_string())
        })?;
        Ok::<_, ApiError>(localpart)
    }
    .await;
    let localpart = match checked {
        Ok(l) => l,
        Err(e) => {
            let (status, why) = said(e);
            return again(status, &why);
        }
    };
    // Which registration flow the form completes: each stage it can stand for is checked
    // here as UIA would check it.
    let token = form.registration_token.trim();
    let email = form.email.trim();
    let phone = form.phone.trim();
    let mut done: Vec<String> = vec![uia::DUMMY.to_owned()];
    if !token.is_empty() {
        match token_ok(&state, token).await {
            Ok(true) => done.push(uia::REGISTRATION_TOKEN.to_owned()),
            Ok(false) => {
                return again(
                    StatusCode::FORBIDDEN,
                    "That registration token is not valid.",
                );
            }
            Err(e) => return e.into_response(),
        }
    }
    if form.accept_terms == "yes" {
        done.push(uia::TERMS.to_owned());
    }
    if !email.is_empty() {
        done.push(uia::EMAIL_IDENTITY.to_owned());
    }
    if !phone.is_empty() {
        done.push(uia::MSISDN.to_owned());
    }
    let flows = register_flows(&state);
    let Some(flow) = vouch_core::uia::completed_flow(&flows, &done) else {
        return again(StatusCode::BAD_REQUEST, &missing(&flows, &done));
    };
    let uses_token = flow.iter().any(|s| s == uia::REGISTRATION_TOKEN);
    let password_hash = match state.hash_password(form.password.clone()).await {
        Ok(hash) => hash,
        Err(e) => {
            let (status, why) = said(e);
            return again(status, &why);
        }
    };
    let client_secret = new_opaque_id(state.secrets.as_ref());
    let browser_token = new_token(state.secrets.as_ref(), "vsu");
    let mut pending = PendingSignUp {
        localpart: localpart.as_str().to_owned(),
        password_hash,
        client_secret,
        email: None,
        phone: None,
        registration_token: uses_token.then(|| token.to_owned()),
        browser: token_hash(&browser_token),
    };
    for (raw, is_email) in [(email, true), (phone, false)] {
        if raw.is_empty() {
            continue;
        }
        let address = if is_email {
            Raw::Email(raw)
        } else {
            Raw::Phone {
                country: "",
                number: raw,
            }
        };
        let issued = request_token(
            &state,
            TokenRequest {
                purpose: Purpose::Register,
                client_secret: &pending.client_secret,
                address,
                send_attempt: 1,
                next_link: None,
                json: None,
                ip,
                from_pages: true,
                lang: open.lang.clone(),
            },
        )
        .await;
        let sid = match issued {
            Ok(issued) => issued.sid.to_string(),
            Err(e) => {
                let (status, why) = said(e);
                return again(status, &why);
            }
        };
        let session = match own_session(&state, &sid, &pending.client_secret).await {
            Ok(Some(s)) => s,
            Ok(None) => return ApiError::internal("a validation session vanished").into_response(),
            Err(e) => return e.into_response(),
        };
        let p = Some(Pending {
            sid,
            address: session.session.address.clone(),
        });
        if is_email {
            pending.email = p;
        } else {
            pending.phone = p;
        }
    }
    if pending.email.is_none() && pending.phone.is_none() {
        return create(&state, &open, &csrf, pending, &cookies).await;
    }
    let json = match serde_json::to_string(&pending) {
        Ok(json) => json,
        Err(e) => return ApiError::internal(e.to_string()).into_response(),
    };
    match state
        .db
        .set_signup(
            &grant_id,
            Some(&json),
            open.grant.signup.as_deref(),
            state.now(),
        )
        .await
    {
        Ok(true) => {}
        Ok(false) => return error_page(&state, StatusCode::FORBIDDEN, ELSEWHERE),
        Err(e) => return ApiError::from(e).into_response(),
    }
    let open = Open {
        grant: vouch_storage::Grant {
            signup: Some(json),
            ..open.grant.clone()
        },
        request: open.request.clone(),
        client: open.client.clone(),
        lang: open.lang.clone(),
    };
    let mut cookies = cookies.clone();
    cookies.push(browser::page_cookie(
        &state,
        browser::SIGNUP_COOKIE,
        &browser_token,
        state.config.oauth.authorization_request_lifetime,
    ));
    verify_page(&state, &open, &pending, &csrf, StatusCode::OK, "", &cookies)
}

/// The codes form.
#[derive(Debug, Deserialize)]
pub struct VerifyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email_code: String,
    #[serde(default)]
    phone_code: String,
}

/// # `POST /_vouch/oauth/grant/{grant_id}/verify`
///
/// Each code is presented to its validation session (the attempt cap, expiry and single
/// use of `submit_token` apply); an email session may have been validated by its link
/// instead. When every address is verified the account is made.
pub async fn verify_route(
    State(state): State<AppState>,
    Path(grant_id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<VerifyForm>,
) -> Response {
    let open = match open_or_answer(&state, &grant_id, &headers).await {
        Ok(open) => open,
        Err(answer) => return answer,
    };
    let (csrf, cookies) = browser::csrf_cookies(&state, &headers);
    let Some(pending) = pending_for(&state, &open, &headers) else {
        return error_page(&state, StatusCode::FORBIDDEN, ELSEWHERE);
    };
    let again = |status: StatusCode, error: &str| {
        verify_page(&state, &open, &pending, &csrf, status, error, &cookies)
    };
    if !browser::csrf_ok(&state, &headers, &form.csrf) {
        return again(StatusCode::FORBIDDEN, "msg.form_expired");
    }
    for (p, code, what) in [
        (&pending.email, form.email_code.trim(), "email"),
        (&pending.phone, form.phone_code.trim(), "phone"),
    ] {
        let Some(p) = p else { continue };
        if !code.is_empty() {
            match submit_secret(&state, &p.sid, &pending.client_secret, code).await {
                Ok(Submitted::Validated { .. } | Submitted::AlreadyValidated) => {}
                Ok(Submitted::Wrong) => {
                    return again(
                        StatusCode::BAD_REQUEST,
                        &format!("The {what} code is wrong."),
                    );
                }
                Ok(Submitted::Expired | Submitted::Unknown) => {
                    return again(
                        StatusCode::BAD_REQUEST,
                        &format!(
                            "The {what} code has expired or was tried too often; start again."
                        ),
                    );
                }
                Err(e) => return ApiError::from(e).into_response(),
            }
        }
        let validated = match own_session(&state, &p.sid, &pending.client_secret).await {
            Ok(s) => s.is_some_and(|s| s.session.validated_at.is_some()),
            Err(e) => return e.into_response(),
        };
        if !validated {
            return again(
                StatusCode::BAD_REQUEST,
                &format!("Enter the {what} code (or open the link in the mail first)."),
            );
        }
    }
    create(&state, &open, &csrf, pending, &cookies).await
}

/// Makes the account (its verified addresses, the spent token and sessions, in one
/// transaction through the accounts service), signs the browser in and asks for consent.
async fn create(
    state: &AppState,
    open: &Open,
    csrf: &str,
    pending: PendingSignUp,
    cookies: &[HeaderValue],
) -> Response {
    let mut threepids = Vec::new();
    let mut validations = Vec::new();
    for p in [&pending.email, &pending.phone].into_iter().flatten() {
        match own_session(state, &p.sid, &pending.client_secret).await {
            Ok(Some(s)) => match s.session.validated_at {
                Some(at) if s.session.purpose == Purpose::Register => {
                    threepids.push((s.session.medium.clone(), s.session.address.clone(), at));
                    validations.push(p.sid.clone());
                }
                _ => return error_page(state, StatusCode::BAD_REQUEST, GONE),
            },
            Ok(None) => return error_page(state, StatusCode::NOT_FOUND, GONE),
            Err(e) => return e.into_response(),
        }
    }
    let localpart = match crate::client::register::parse_localpart(state, &pending.localpart) {
        Ok(l) => l,
        Err(e) => return e.into_response(),
    };
    let created = state
        .accounts()
        .create_user(NewUser {
            localpart: Some(localpart),
            password_hash: Some(pending.password_hash.clone()),
            threepids,
            validations,
            registration_token: pending.registration_token.clone(),
            language: Some(open.lang.clone()),
            ..NewUser::default()
        })
        .await;
    let user_id = match created {
        Ok(user_id) => user_id,
        Err(e) => {
            let (status, why) = said(e.into());
            return sign_up_page(
                state,
                open,
                csrf,
                status,
                &why,
                &SignUpForm {
                    username: pending.localpart,
                    ..SignUpForm::default()
                },
                cookies,
            );
        }
    };
    tracing::info!(
        user_id,
        client_id = open.grant.client_id,
        "signed up through an authorization request"
    );
    let session = BrowserSession {
        user_id,
        password_hash: pending.password_hash,
        created_at: state.now(),
    };
    let cookie = match browser::open_session(state, &session).await {
        Ok(cookie) => cookie,
        Err(e) => return e.into_response(),
    };
    // Done with: the request no longer holds it (a browser racing this one finds the
    // account made and its own attempt refused).
    if let Err(e) = state
        .db
        .set_signup(
            &open.grant.grant_id,
            None,
            open.grant.signup.as_deref(),
            state.now(),
        )
        .await
    {
        return ApiError::from(e).into_response();
    }
    let mut all: Vec<HeaderValue> = cookies.to_vec();
    all.push(cookie);
    consent_page(state, open, csrf, &session, &all).await
}

/// The registration flows (`[uia.flows] register`, or those `[registration]` makes).
fn register_flows(state: &AppState) -> Vec<Flow> {
    crate::uia::flows_for(state, Operation::Register)
}

/// What the form still lacks, in words, for the flow nearest to completion.
fn missing(flows: &[Flow], done: &[String]) -> String {
    let nearest = flows
        .iter()
        .min_by_key(|f| f.iter().filter(|s| !done.contains(s)).count());
    let lacking: Vec<&str> = nearest
        .map(|f| {
            f.iter()
                .filter(|s| !done.contains(s))
                .map(|s| match s.as_str() {
                    uia::REGISTRATION_TOKEN => "a registration token",
                    uia::TERMS => "accepting the terms",
                    uia::EMAIL_IDENTITY => "an email address",
                    uia::MSISDN => "a phone number",
                    _ => "a step this page cannot take",
                })
                .collect()
        })
        .unwrap_or_default();
    if lacking.is_empty() {
        return "This server does not take new accounts here.".into();
    }
    let one_of_addresses = flows.len() > 1
        && lacking
            .iter()
            .all(|l| *l == "an email address" || *l == "a phone number");
    if one_of_addresses {
        return "This server needs an address to verify: fill in one of the fields above.".into();
    }
    format!(
        "This server needs {} to create an account.",
        lacking.join(" and ")
    )
}
