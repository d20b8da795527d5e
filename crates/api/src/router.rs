//! The route table: every endpoint Vouch serves, the 404/405 answers for everything else,
//! CORS on every response, and request logging without secrets.

use std::convert::Infallible;

use axum::Router;
use axum::extract::Request;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::future::BoxFuture;
use http::{Method, StatusCode, header};
use ruma::api::client::{account, device, discovery, profile, session, uiaa};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::client::*;
use crate::error::ApiError;
use crate::ruma_axum::Routes;
use crate::state::AppState;

/// Every route Vouch serves: (method, path), with the OAuth 2.0 API on. The conformance
/// test checks each against the Matrix spec's definitions.
pub fn route_table() -> Vec<(Method, String)> {
    routes(false, true).table
}

/// The OAuth 2.0 API's routes: discovery, registration, the grants, revocation and the
/// sign-in pages.
fn oauth_routes(routes: Routes) -> Routes {
    use crate::oauth::{
        account, account_address, account_profile, authorize, device, grant_page, metadata, oidc,
        paths, registration, reset, revoke, sign_up, sso, token,
    };
    routes
        .add(
            "/_matrix/client/v1/auth_metadata",
            &[Method::GET],
            get(metadata::auth_metadata_route),
        )
        .add(
            "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata",
            &[Method::GET],
            get(metadata::auth_metadata_route),
        )
        .add(
            "/.well-known/openid-configuration",
            &[Method::GET],
            get(metadata::openid_configuration_route),
        )
        .add(
            &format!("/{}", paths::JWKS),
            &[Method::GET],
            get(oidc::jwks_route),
        )
        .add(
            &format!("/{}", paths::USERINFO),
            &[Method::GET, Method::POST],
            get(oidc::userinfo_route).post(oidc::userinfo_route),
        )
        .add(
            &format!("/{}", paths::REGISTRATION),
            &[Method::POST],
            post(registration::register_client_route),
        )
        .add(
            &format!("/{}", paths::AUTHORIZE),
            &[Method::GET],
            get(authorize::authorize_route),
        )
        .add(
            &format!("/{}", paths::TOKEN),
            &[Method::POST],
            post(token::token_route),
        )
        .add(
            &format!("/{}", paths::REVOKE),
            &[Method::POST],
            post(revoke::revoke_route),
        )
        .add(
            &format!("/{}/{{grant_id}}", paths::GRANT),
            &[Method::GET],
            get(grant_page::grant_page_route),
        )
        .add(
            &format!("/{}/{{grant_id}}/sign_in", paths::GRANT),
            &[Method::POST],
            post(grant_page::sign_in_route),
        )
        .add(
            &format!("/{}/{{grant_id}}/consent", paths::GRANT),
            &[Method::POST],
            post(grant_page::consent_route),
        )
        .add(
            &format!("/{}/{{grant_id}}/sign_up", paths::GRANT),
            &[Method::POST],
            post(sign_up::sign_up_route),
        )
        .add(
            &format!("/{}/{{grant_id}}/verify", paths::GRANT),
            &[Method::POST],
            post(sign_up::verify_route),
        )
        .add(
            &format!("/{}", account::PATH),
            &[Method::GET],
            get(account::account_route),
        )
        .add(
            &format!("/{}/sign_in", account::PATH),
            &[Method::POST],
            post(account::sign_in_route),
        )
        .add(
            &format!("/{}/sign_out", account::PATH),
            &[Method::POST],
            post(account::sign_out_route),
        )
        .add(
            &format!("/{}/deactivate", account::PATH),
            &[Method::POST],
            post(account::deactivate_route),
        )
        .add(
            &format!("/{}/sign_out_browser", account::PATH),
            &[Method::POST],
            post(account::sign_out_browser_route),
        )
        .add(
            &format!("/{}/profile", account::PATH),
            &[Method::POST],
            post(account_profile::profile_route),
        )
        .add(
            &format!("/{}/language", account::PATH),
            &[Method::POST],
            post(account_profile::language_route),
        )
        .add(
            &format!("/{}/password", account::PATH),
            &[Method::POST],
            post(account_profile::password_route),
        )
        .add(
            &format!("/{}/address", account::PATH),
            &[Method::POST],
            post(account_address::add_route),
        )
        .add(
            &format!("/{}/address/verify", account::PATH),
            &[Method::POST],
            post(account_address::verify_route),
        )
        .add(
            &format!("/{}/address/remove", account::PATH),
            &[Method::POST],
            post(account_address::remove_route),
        )
        .add(
            "/_matrix/client/v3/login/sso/redirect",
            &[Method::GET],
            get(sso::sso_redirect_route),
        )
        .add(
            "/_matrix/client/r0/login/sso/redirect",
            &[Method::GET],
            get(sso::sso_redirect_route),
        )
        .add(
            &format!("/{}", sso::PATH),
            &[Method::GET],
            get(sso::sso_page_route),
        )
        .add(
            &format!("/{}", reset::PATH),
            &[Method::GET, Method::POST],
            get(reset::reset_page_route).post(reset::reset_route),
        )
        .add(
            &format!("/{}/verify", reset::PATH),
            &[Method::POST],
            post(reset::reset_verify_route),
        )
        .add(
            &format!("/{}/sign_in", sso::PATH),
            &[Method::POST],
            post(sso::sso_sign_in_route),
        )
        .add(
            &format!("/{}/continue", sso::PATH),
            &[Method::POST],
            post(sso::sso_continue_route),
        )
        .add(
            &format!("/{}", paths::DEVICE),
            &[Method::POST],
            post(device::device_authorization_route),
        )
        .add(
            &format!("/{}", paths::DEVICE_PAGE),
            &[Method::GET, Method::POST],
            get(device::device_page_route).post(device::device_code_route),
        )
}

/// The routes; `homeserver`: in front of a homeserver, which then keeps what is not about
/// accounts (profiles, device details) and is asked everything Vouch does not answer;
/// `oauth`: with the OAuth 2.0 API (`[oauth] enabled`).
fn routes(homeserver: bool, oauth: bool) -> Routes {
    let routes = shared_routes();
    let routes = if oauth {
        oauth_routes(routes)
    } else if homeserver {
        routes
            .add(
                "/.well-known/openid-configuration",
                &[Method::GET],
                get(crate::homeserver::discovery::openid_configuration_route),
            )
            .add(
                "/_matrix/client/v1/auth_metadata",
                &[Method::GET],
                get(crate::homeserver::discovery::auth_metadata_route),
            )
            .add(
                "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata",
                &[Method::GET],
                get(crate::homeserver::discovery::auth_metadata_route),
            )
    } else {
        routes
    };
    if homeserver {
        return routes
            .add(
                "/oauth2/introspect",
                &[Method::POST],
                post(crate::homeserver::introspect::introspect_route),
            )
            .add_if(
                !oauth,
                &format!("/{}", crate::homeserver::discovery::ACCOUNT_PATH),
                &[Method::GET],
                get(crate::homeserver::account_page::account_page_route),
            )
            .add(
                crate::homeserver::account_page::CROSS_SIGNING_RESET_PATH,
                &[Method::POST],
                post(crate::homeserver::account_page::cross_signing_reset_route),
            )
            .ruma::<device::delete_device::v3::Request, _, _>(delete_device::delete_device_route);
    }
    routes
        // In front of a homeserver the server's keys are the homeserver's.
        .add(
            "/_matrix/key/v2/server",
            &[Method::GET],
            get(crate::get_server_keys::get_server_keys_route),
        )
        .ruma::<discovery::get_supported_versions::Request, _, _>(
            get_supported_versions::get_supported_versions_route,
        )
        .ruma::<account::whoami::v3::Request, _, _>(whoami::whoami_route)
        .ruma::<device::get_devices::v3::Request, _, _>(get_devices::get_devices_route)
        .ruma::<device::get_device::v3::Request, _, _>(get_device::get_device_route)
        .ruma::<device::update_device::v3::Request, _, _>(update_device::update_device_route)
        .ruma::<device::delete_device::v3::Request, _, _>(delete_device::delete_device_route)
        .ruma::<profile::get_profile::v3::Request, _, _>(get_profile::get_profile_route)
        .ruma::<profile::get_display_name::v3::Request, _, _>(
            get_display_name::get_display_name_route,
        )
        .ruma::<profile::set_display_name::v3::Request, _, _>(
            set_display_name::set_display_name_route,
        )
        .ruma::<profile::get_avatar_url::v3::Request, _, _>(get_avatar_url::get_avatar_url_route)
        .ruma::<profile::set_avatar_url::v3::Request, _, _>(set_avatar_url::set_avatar_url_route)
}

/// The routes Vouch answers whether or not a homeserver stands behind it.
fn shared_routes() -> Routes {
    Routes::new()
        .ruma::<discovery::get_capabilities::v3::Request, _, _>(get_capabilities::get_capabilities_route)
        .ruma::<session::get_login_types::v3::Request, _, _>(get_login_types::get_login_types_route)
        .ruma::<session::login::v3::Request, _, _>(login::login_route)
        .ruma::<session::refresh_token::v3::Request, _, _>(refresh_token::refresh_token_route)
        .ruma::<session::logout::v3::Request, _, _>(logout::logout_route)
        .ruma::<session::logout_all::v3::Request, _, _>(logout_all::logout_all_route)
        .ruma::<account::register::v3::Request, _, _>(register::register_route)
        .ruma::<account::get_username_availability::v3::Request, _, _>(get_username_availability::get_username_availability_route)
        .ruma::<account::check_registration_token_validity::v1::Request, _, _>(check_registration_token_validity::check_registration_token_validity_route)
        .ruma::<account::change_password::v3::Request, _, _>(change_password::change_password_route)
        .ruma::<account::deactivate::v3::Request, _, _>(deactivate::deactivate_route)
        .ruma::<account::get_3pids::v3::Request, _, _>(get_3pids::get_3pids_route)
        .ruma::<account::add_3pid::v3::Request, _, _>(add_3pid::add_3pid_route)
        .ruma::<account::delete_3pid::v3::Request, _, _>(delete_3pid::delete_3pid_route)
        .ruma::<account::bind_3pid::v3::Request, _, _>(bind_3pid::bind_3pid_route)
        .ruma::<account::unbind_3pid::v3::Request, _, _>(unbind_3pid::unbind_3pid_route)
        .ruma::<account::request_registration_token_via_email::v3::Request, _, _>(request_registration_token_via_email::request_registration_token_via_email_route)
        .ruma::<account::request_password_change_token_via_email::v3::Request, _, _>(request_password_change_token_via_email::request_password_change_token_via_email_route)
        .ruma::<account::request_3pid_management_token_via_email::v3::Request, _, _>(request_3pid_management_token_via_email::request_3pid_management_token_via_email_route)
        .ruma::<account::request_registration_token_via_msisdn::v3::Request, _, _>(request_registration_token_via_msisdn::request_registration_token_via_msisdn_route)
        .ruma::<account::request_password_change_token_via_msisdn::v3::Request, _, _>(request_password_change_token_via_msisdn::request_password_change_token_via_msisdn_route)
        .ruma::<account::request_3pid_management_token_via_msisdn::v3::Request, _, _>(request_3pid_management_token_via_msisdn::request_3pid_management_token_via_msisdn_route)
        .ruma::<device::delete_devices::v3::Request, _, _>(delete_devices::delete_devices_route)
        .ruma::<uiaa::get_uiaa_fallback_page::v3::Request, _, _>(get_uiaa_fallback_page::get_uiaa_fallback_page_route)
        .add("/.well-known/matrix/client", &[Method::GET], get(discover_homeserver::discover_homeserver_route))
        .add("/_matrix/client/r0/account/3pid", &[Method::POST], post(add_3pid_deprecated::add_3pid_deprecated_route))
        .add("/_matrix/client/v3/account/3pid", &[Method::POST], post(add_3pid_deprecated::add_3pid_deprecated_route))
        .add(&format!("/{}", crate::threepid::SUBMIT_PATH), &[Method::POST], post(submit_token::submit_token_route))
        .add(crate::health::HEALTH_PATH, &[Method::GET], get(crate::health::health_route))
        .add(
            &format!("/{}", crate::threepid::EMAIL_LINK_PATH),
            &[Method::GET, Method::POST],
            get(crate::email_validate::get_email_validate_route).post(crate::email_validate::post_email_validate_route),
        )
        .add(
            "/_matrix/client/r0/auth/{auth_type}/fallback/web",
            &[Method::POST],
            post(get_uiaa_fallback_page::post_uiaa_fallback_page_route),
        )
        .add(
            "/_matrix/client/v3/auth/{auth_type}/fallback/web",
            &[Method::POST],
            post(get_uiaa_fallback_page::post_uiaa_fallback_page_route),
        )
        .add("/_synapse/admin/v2/users", &[Method::GET], get(crate::admin::users::list_users_route))
        .add(
            "/_synapse/admin/v2/users/{user_id}",
            &[Method::GET, Method::PUT],
            get(crate::admin::users::get_user_route).put(crate::admin::users::put_user_route),
        )
        .add(
            "/_synapse/admin/v1/threepid/{medium}/users/{address}",
            &[Method::GET],
            get(crate::admin::threepid_lookup::threepid_lookup_route),
        )
        .add(
            "/_synapse/admin/v1/reset_password/{user_id}",
            &[Method::POST],
            post(crate::admin::reset_password::reset_password_route),
        )
        .add("/_synapse/admin/v1/deactivate/{user_id}", &[Method::POST], post(crate::admin::deactivate::deactivate_route))
        .add("/_synapse/admin/v1/registration_tokens", &[Method::GET], get(crate::admin::registration_tokens::list_route))
        .add("/_synapse/admin/v1/registration_tokens/new", &[Method::POST], post(crate::admin::registration_tokens::new_route))
        .add(
            "/_synapse/admin/v1/registration_tokens/{token}",
            &[Method::GET, Method::PUT, Method::DELETE],
            get(crate::admin::registration_tokens::get_route)
                .put(crate::admin::registration_tokens::put_route)
                .delete(crate::admin::registration_tokens::delete_route),
        )
}

/// Builds the router over `state`.
pub fn router(state: AppState) -> Router {
    let body_limits = BodyLimits {
        max_bytes: state.config.http.max_request_bytes,
        deadline: state.config.http.body_read_timeout,
        budget: std::sync::Arc::new(tokio::sync::Semaphore::new(
            state.config.http.max_buffered_bytes.div_ceil(1024),
        )),
    };
    let homeserver = state.homeserver.is_some();
    let r = routes(homeserver, state.config.oauth.enabled)
        .router
        // Bodies of Vouch's own routes are read whole; forwarded ones stream.
        .route_layer(WholeBodyLayer {
            limits: body_limits,
        });
    let r = if homeserver {
        r.fallback(crate::homeserver::proxy::forward)
            .method_not_allowed_fallback(crate::homeserver::proxy::forward)
            .layer(middleware::from_fn_with_state(
                state.clone(),
                crate::homeserver::proxy::homeserver_first,
            ))
    } else {
        r.fallback(|| async { ApiError::unrecognized() })
            .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
    };
    r.with_state(state)
        // A panic is a bug; the client still gets Matrix JSON, never a dropped connection.
        .layer(CatchPanicLayer::custom(|_panic: Box<dyn std::any::Any + Send>| {
            ApiError::internal("a request handler panicked").into_response()
        }))
        // One layer for what every answer gets (CORS, `no-store`, the metrics): each
        // layer of its own costs every request a boxed future and a service clone.
        .layer(crate::every_answer::EveryAnswerLayer)
        .layer(
            TraceLayer::new_for_http()
                // The path only: the query may hold an access token.
                .make_span_with(|req: &Request| {
                    tracing::info_span!("request", method = %req.method(), path = %loggable_path(req.uri().path()))
                }),
        )
}

/// Reads the whole request body before the route runs, within `[http] body_read_timeout`
/// in all (a client that trickles a byte now and then is cut off like one that stops) and
/// `max_request_bytes`. Handlers then parse from memory. A request without a body (most
/// GETs) goes straight to the route, with no timer set and nothing boxed.
#[derive(Clone)]
struct WholeBodyLayer {
    limits: BodyLimits,
}

impl<S> tower::Layer<S> for WholeBodyLayer {
    type Service = WholeBody<S>;

    fn layer(&self, inner: S) -> WholeBody<S> {
        WholeBody {
            inner,
            limits: self.limits.clone(),
        }
    }
}

/// A route behind [`WholeBodyLayer`].
#[derive(Clone)]
struct WholeBody<S> {
    inner: S,
    limits: BodyLimits,
}

impl<S> tower::Service<Request> for WholeBody<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future =
        futures::future::Either<S::Future, BoxFuture<'static, Result<Response, Infallible>>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let headers = req.headers();
        if !headers.contains_key(header::CONTENT_LENGTH)
            && !headers.contains_key(header::TRANSFER_ENCODING)
        {
            // No Content-Length and no Transfer-Encoding: an HTTP/1.1 request without a
            // body; nothing to wait for.
            return futures::future::Either::Left(
                self.inner.call(req.map(|_| axum::body::Body::empty())),
            );
        }
        // The service made ready goes with the request; a clone stays for the next one.
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        let limits = self.limits.clone();
        futures::future::Either::Right(Box::pin(async move {
            Ok(read_whole_body(limits, req, ready).await)
        }))
    }
}

/// [`WholeBody`] for a request that has a body: reads it under the limits, then runs
/// `route` (already made ready) on it, or answers the refusal.
async fn read_whole_body<S>(limits: BodyLimits, req: Request, mut route: S) -> Response
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    let (limit, deadline) = (limits.max_bytes, limits.deadline);
    let (parts, body) = req.into_parts();
    // Room for the body in the shared budget (KiB), held until the answer is made: requests
    // queued behind password hashing cannot pile up memory without bound.
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        // Announced too large: refused now, not after waiting for a body it would refuse.
        return crate::ruma_axum::too_large(limit).into_response();
    }
    let expected = match (
        declared,
        parts.headers.contains_key(header::TRANSFER_ENCODING),
    ) {
        (_, true) => limit,
        (Some(n), false) => n.min(limit),
        (None, false) => 0,
    };
    let _room = if expected == 0 {
        None
    } else {
        let kib = u32::try_from(expected.div_ceil(1024)).unwrap_or(u32::MAX);
        let wait = deadline.min(ROOM_WAIT);
        match tokio::time::timeout(wait, limits.budget.clone().acquire_many_owned(kib)).await {
            Ok(Ok(permit)) => Some(permit),
            _ => {
                vouch_metrics::RATE_LIMITED
                    .with_label_values(&["max_buffered_bytes"])
                    .inc();
                return ApiError::limit_exceeded(std::time::Duration::from_secs(1)).into_response();
            }
        }
    };
    let bytes = match read_body_within(body, limit, deadline).await {
        Ok(bytes) => bytes,
        Err(refused) => return refused,
    };
    match route
        .call(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
    {
        Ok(res) => res,
        Err(never) => match never {},
    }
}

/// Reads a whole body of at most `limit` bytes within `deadline`; the answer for a body
/// that is too large (413), broken (400) or late (408) otherwise.
pub(crate) async fn read_body_within(
    body: axum::body::Body,
    limit: usize,
    deadline: std::time::Duration,
) -> Result<bytes::Bytes, Response> {
    match tokio::time::timeout(deadline, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            let over = e
                .into_inner()
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            Err(if over {
                crate::ruma_axum::too_large(limit).into_response()
            } else {
                body_unreadable()
            })
        }
        Err(_) => Err(body_late()),
    }
}

/// The answer for a request body that could not be read.
pub(crate) fn body_unreadable() -> Response {
    ApiError::Custom {
        status: StatusCode::BAD_REQUEST,
        errcode: "M_BAD_JSON",
        message: "The request body could not be read".into(),
    }
    .into_response()
}

/// The answer for a request body that did not arrive in time.
pub(crate) fn body_late() -> Response {
    ApiError::Custom {
        status: StatusCode::REQUEST_TIMEOUT,
        errcode: "M_UNKNOWN",
        message: "The request body did not arrive in time".into(),
    }
    .into_response()
}

/// How long a request waits for room in the body budget before it is answered 429.
const ROOM_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// What [`read_whole_body`] holds requests to.
#[derive(Clone)]
struct BodyLimits {
    /// `[http] max_request_bytes`.
    max_bytes: usize,
    /// `[http] body_read_timeout`, for the whole body.
    deadline: std::time::Duration,
    /// `[http] max_buffered_bytes`, in KiB permits.
    budget: std::sync::Arc<tokio::sync::Semaphore>,
}

/// A path as the log may show it: a registration token in an admin path is a secret.
fn loggable_path(path: &str) -> std::borrow::Cow<'_, str> {
    match path.find("/registration_tokens/") {
        Some(at) => format!("{}/registration_tokens/…", &path[..at]).into(),
        None => path.into(),
    }
}
