use axum::extract::State;
use ruma::api::client::account::get_3pids;
use ruma::thirdparty::{Medium, ThirdPartyIdentifierInit};
use ruma::{MilliSecondsSinceUnixEpoch, UInt};

use crate::auth::AuthedUser;
use crate::error::ApiResult;
use crate::ruma_axum::RumaResponse;
use crate::state::AppState;

fn ms(ts: i64) -> MilliSecondsSinceUnixEpoch {
    MilliSecondsSinceUnixEpoch(UInt::try_from(ts).unwrap_or_default())
}

/// # `GET /_matrix/client/v3/account/3pid`
///
/// The addresses the homeserver holds for the account (not identity-server bindings).
pub async fn get_3pids_route(
    State(state): State<AppState>,
    user: AuthedUser,
) -> ApiResult<RumaResponse<get_3pids::v3::Response>> {
    let threepids = state
        .db
        .threepids(&user.user_id)
        .await?
        .into_iter()
        .map(|t| {
            ThirdPartyIdentifierInit {
                address: t.address,
                medium: Medium::from(t.medium.as_str()),
                validated_at: ms(t.validated_at),
                added_at: ms(t.added_at),
            }
            .into()
        })
        .collect();
    Ok(RumaResponse(get_3pids::v3::Response::new(threepids)))
}
