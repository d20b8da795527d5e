use ruma::api::client::session::get_login_types::{self, v3::LoginType, v3::PasswordLoginType};

use crate::ruma_axum::RumaResponse;

/// # `GET /_matrix/client/v3/login`
pub async fn get_login_types_route() -> RumaResponse<get_login_types::v3::Response> {
    RumaResponse(get_login_types::v3::Response::new(vec![
        LoginType::Password(PasswordLoginType::new()),
    ]))
}
