//! Request bodies: arbitrary bytes through Vouch's body handling and ruma's parsing, for
//! requestToken, register (with a UIA `auth` dict) and login. Every input becomes a request
//! or a Matrix error, never a panic; the UIA stage logic accepts any stage name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ruma::api::client::{account, session};
use vouch_api::ruma_axum::{into_ruma, prepare_body};

fn parts(uri: &str) -> http::request::Parts {
    let (parts, ()) = http::Request::builder()
        .method("POST")
        .uri(uri)
        .body(())
        .expect("request")
        .into_parts();
    parts
}

fn run<T: ruma::api::IncomingRequest>(uri: &str, data: &[u8]) {
    let parts = parts(uri);
    if let Ok((bytes, auth, json)) = prepare_body(&parts.method, data) {
        let parsed = into_ruma::<T>(&parts, &bytes, auth, json, &[]);
        if let Err(e) = parsed {
            assert!(e.errcode().starts_with("M_"), "{}", e.errcode());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    run::<account::request_registration_token_via_email::v3::Request>(
        "/_matrix/client/v3/register/email/requestToken",
        data,
    );
    run::<account::request_3pid_management_token_via_msisdn::v3::Request>(
        "/_matrix/client/v3/account/3pid/msisdn/requestToken",
        data,
    );
    run::<account::register::v3::Request>("/_matrix/client/v3/register?kind=user", data);
    run::<account::add_3pid::v3::Request>("/_matrix/client/v3/account/3pid/add", data);
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Some(stage) = v
            .get("auth")
            .and_then(|a| a.get("type"))
            .and_then(|t| t.as_str())
        {
            let flows = vec![vec![
                "m.login.registration_token".to_owned(),
                "m.login.email.identity".to_owned(),
            ]];
            let _ = vouch_core::uia::check_stage(&flows, &[], stage);
        }
    }
    // login's deserializer is known to panic on a missing `type` (caught in production by
    // the extractor's catch_unwind, which libFuzzer's panic hook bypasses): only well-typed
    // bodies go there.
    let typed = serde_json::from_slice::<serde_json::Value>(data)
        .ok()
        .is_some_and(|v| v.get("type").is_some_and(|t| t.is_string()));
    if typed {
        run::<session::login::v3::Request>("/_matrix/client/v3/login", data);
    }
});
