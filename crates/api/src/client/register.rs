use axum::extract::State;
use axum::response::Response;
use ruma::OwnedDeviceId;
use ruma::api::client::account::register::{self, LoginType, RegistrationKind};
use ruma::api::error::ErrorKind;
use vouch_core::localpart::{Localpart, LocalpartError};
use vouch_core::secrets::new_localpart;
use vouch_core::uia::Operation;

use crate::accounts::NewUser;
use crate::client::own_user_id;
use crate::client_ip::ClientIp;
use crate::error::{ApiError, ApiResult};
use crate::ruma_axum::{Ruma, without_nulls};
use crate::state::{AppState, Services};
use crate::uia::authenticate;

/// # `POST /_matrix/client/v3/register`
///
/// Checks the username and password before UIA (the spec requires the username checks
/// first), runs UIA, then writes the account, its device, tokens and the spent registration
/// token and UIA session in one transaction.
pub async fn register_route(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    body: Ruma<register::v3::Request>,
) -> ApiResult<Response> {
    if !state.config.registration.enabled {
        return Err(ApiError::forbidden(
            "Registration has been disabled on this server",
        ));
    }
    state.limits.registration_per_ip.check_ip(ip)?;
    let request = &body.body;
    crate::accounts::check_new_device(
        request.device_id.as_ref().map(|d| d.as_str()),
        request.initial_device_display_name.as_deref(),
    )?;
    match request.kind {
        RegistrationKind::User => {}
        RegistrationKind::Guest => return register_guest(&state, request, ip.to_string()).await,
        _ => return Err(ApiError::invalid_param("kind must be user or guest")),
    }
    if request.login_type == Some(LoginType::ApplicationService) {
        return Err(ApiError::new(
            ErrorKind::MissingToken,
            "No application services are registered here",
        ));
    }

    let localpart = match &request.username {
        Some(name) => {
            let localpart = parse_localpart(&state, name)?;
            check_available(&state, &localpart).await?;
            Some(localpart)
        }
        None => None,
    };
    let Some(password) = request.password.clone() else {
        return Err(ApiError::missing_param("password is required"));
    };
    state
        .policy
        .check(&password)
        .map_err(|weak| ApiError::new(ErrorKind::WeakPassword, weak.to_string()))?;

    // Not bound: registration rounds may differ (clients add the username after a
    // stage); the account made is the one the completing round names, and every check
    // above runs on that round.
    let passed = authenticate(
        &state,
        Operation::Register,
        None,
        body.auth.as_ref(),
        ip,
        None,
    )
    .await?;

    let issued = (!request.inhibit_login).then(|| {
        state.accounts().issue_tokens(
            request.device_id.as_ref().map(ToString::to_string),
            request.initial_device_display_name.clone(),
            request.refresh_token,
            Some(ip.to_string()),
        )
    });
    let registration_token = passed.registration_token().map(str::to_owned);
    let proven = passed.threepids();
    let user_id = state
        .accounts()
        .create_user(NewUser {
            localpart,
            password: Some(password),
            login: issued.as_ref().map(|i| i.login.clone()),
            threepids: proven
                .iter()
                .map(|p| {
                    (
                        p.medium.as_str().to_owned(),
                        p.address.clone(),
                        p.validated_at,
                    )
                })
                .collect(),
            registration_token,
            uia_session: Some(passed.session_id.clone()),
            validations: proven.into_iter().map(|p| p.sid).collect(),
            ..NewUser::default()
        })
        .await?;
    tracing::info!(user_id, "registered");

    let mut response = register::v3::Response::new(own_user_id(&user_id)?);
    if let Some(issued) = issued {
        response.access_token = Some(issued.access_token);
        response.device_id = Some(OwnedDeviceId::from(issued.login.device_id.as_str()));
        response.refresh_token = issued.refresh_token;
        response.expires_in = issued.expires_in;
    }
    Ok(without_nulls(response))
}

/// Guests get no UIA and pick nothing but their device's display name (spec).
async fn register_guest(
    state: &AppState,
    request: &register::v3::Request,
    ip: String,
) -> ApiResult<Response> {
    if !state.config.registration.allow_guests || state.homeserver.is_some() {
        return Err(ApiError::new(
            ErrorKind::GuestAccessForbidden,
            "Guest access is disabled on this server",
        ));
    }
    let issued = state.accounts().issue_tokens(
        None,
        request.initial_device_display_name.clone(),
        false,
        Some(ip),
    );
    let user_id = state
        .accounts()
        .create_user(NewUser {
            guest: true,
            login: Some(issued.login.clone()),
            ..NewUser::default()
        })
        .await?;
    let mut response = register::v3::Response::new(own_user_id(&user_id)?);
    response.access_token = Some(issued.access_token);
    response.device_id = Some(OwnedDeviceId::from(issued.login.device_id.as_str()));
    Ok(without_nulls(response))
}

/// Parses a requested username, refusing reserved ones.
pub(crate) fn parse_localpart(state: &Services, name: &str) -> ApiResult<Localpart> {
    let localpart = Localpart::parse(name, state.server_name()).map_err(|e| {
        let kind = match e {
            LocalpartError::Empty
            | LocalpartError::BadCharacter
            | LocalpartError::Underscore
            | LocalpartError::TooLong => ErrorKind::InvalidUsername,
        };
        ApiError::new(kind, e.to_string())
    })?;
    if state
        .config
        .registration
        .reserved_localparts
        .iter()
        .any(|r| r.eq_ignore_ascii_case(localpart.as_str()))
    {
        return Err(ApiError::new(
            ErrorKind::UserInUse,
            "That username is reserved",
        ));
    }
    Ok(localpart)
}

/// Refuses a localpart that an account (even a deactivated one) holds.
pub(crate) async fn check_available(state: &Services, localpart: &Localpart) -> ApiResult<()> {
    if state.db.localpart_taken(localpart.as_str()).await? {
        return Err(ApiError::new(
            ErrorKind::UserInUse,
            "That user ID is already taken",
        ));
    }
    // In front of a homeserver, its users (an application service's) and namespaces count
    // too, except a user Vouch itself made there for a registration that then failed. A
    // homeserver that does not answer is asked again when the account is made.
    if let Some(hs) = &state.homeserver {
        match hs.localpart_available(localpart.as_str()).await {
            Err(vouch_homeserver::CallError::Refused {
                status,
                errcode,
                message,
            }) if !(errcode == "M_USER_IN_USE"
                && state.db.is_homeserver_user(localpart.as_str()).await?) =>
            {
                // A name taken is said in Vouch's words, wherever it is taken.
                let message = if errcode == "M_USER_IN_USE" {
                    "That user ID is already taken".to_owned()
                } else {
                    message
                };
                return Err(ApiError::Passthrough {
                    status: http::StatusCode::from_u16(status)
                        .unwrap_or(http::StatusCode::BAD_REQUEST),
                    body: serde_json::json!({ "errcode": errcode, "error": message }),
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// A free random localpart for registrations without a username.
pub(crate) async fn generated_localpart(state: &Services) -> ApiResult<Localpart> {
    for _ in 0..10 {
        let candidate = new_localpart(state.secrets.as_ref());
        let localpart = Localpart::parse(&candidate, state.server_name())
            .map_err(|e| ApiError::internal(format!("generated localpart invalid: {e}")))?;
        if !state.db.localpart_taken(localpart.as_str()).await? {
            return Ok(localpart);
        }
    }
    Err(ApiError::internal("could not generate a free localpart"))
}
