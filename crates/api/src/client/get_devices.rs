use axum::extract::State;
use ruma::api::client::device::{self, get_devices};
use ruma::{MilliSecondsSinceUnixEpoch, OwnedDeviceId, UInt};

use crate::auth::AuthedUser;
use crate::error::ApiResult;
use crate::ruma_axum::without_nulls;
use crate::state::AppState;

/// Storage's device as ruma's.
pub(crate) fn to_ruma(d: vouch_storage::Device) -> device::Device {
    let mut out = device::Device::new(OwnedDeviceId::from(d.device_id.as_str()));
    out.display_name = d.display_name;
    out.last_seen_ip = d.last_seen_ip;
    out.last_seen_ts = d
        .last_seen_ts
        .and_then(|ts| UInt::try_from(ts).ok())
        .map(MilliSecondsSinceUnixEpoch);
    out
}

/// # `GET /_matrix/client/v3/devices`
pub async fn get_devices_route(
    State(state): State<AppState>,
    user: AuthedUser,
) -> ApiResult<axum::response::Response> {
    let devices = state.db.devices(&user.user_id).await?;
    Ok(without_nulls(get_devices::v3::Response::new(
        devices.into_iter().map(to_ruma).collect(),
    )))
}
