use axum::extract::State;
use ruma::api::client::account::request_registration_token_via_msisdn;
use vouch_core::validation::Purpose;

use crate::client_ip::ClientIp;
use crate::error::ApiResult;
use crate::language::AcceptLanguage;
use crate::ruma_axum::{Ruma, RumaResponse};
use crate::state::AppState;
use crate::threepid::{TokenBody, request_token};

/// # `POST /_matrix/client/v3/register/msisdn/requestToken`
///
/// Vouch sends the code by SMS itself and answers a `submit_url` of its own where the client
/// posts the code the user types; `id_server` is optional (MSC2263).
pub async fn request_registration_token_via_msisdn_route(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    AcceptLanguage(lang): AcceptLanguage,
    body: Ruma<request_registration_token_via_msisdn::v3::Request>,
) -> ApiResult<RumaResponse<request_registration_token_via_msisdn::v3::Response>> {
    let request = body
        .body
        .token_request(Purpose::Register, body.json.as_ref(), ip, lang);
    let issued = request_token(&state, request).await?;
    let mut response = request_registration_token_via_msisdn::v3::Response::new(issued.sid);
    response.submit_url = issued.submit_url;
    Ok(RumaResponse(response))
}
