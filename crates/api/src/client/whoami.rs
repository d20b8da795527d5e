use ruma::OwnedDeviceId;
use ruma::api::client::account::whoami;

use crate::auth::AuthedUser;
use crate::client::own_user_id;
use crate::error::ApiResult;
use crate::ruma_axum::RumaResponse;

/// # `GET /_matrix/client/v3/account/whoami`
pub async fn whoami_route(user: AuthedUser) -> ApiResult<RumaResponse<whoami::v3::Response>> {
    let mut response = whoami::v3::Response::new(own_user_id(&user.user_id)?, user.is_guest);
    response.device_id = Some(OwnedDeviceId::from(user.device_id.as_str()));
    Ok(RumaResponse(response))
}
