//! The bridge between axum and ruma: [`Ruma<T>`] turns an HTTP request into ruma's request
//! type with Matrix errors for every bad input, [`RumaResponse`] turns ruma's response into
//! HTTP, and [`route`] mounts a handler on every path (r0, v3, unstable) of an endpoint.

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::handler::Handler;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, on};
use http::Method;
use ruma::api::error::{DeserializationError, FromHttpRequestError};
use ruma::api::path_builder::PathBuilder as _;
use ruma::api::{
    IncomingRequest, IncomingRequestExt, Metadata, OutgoingResponse, OutgoingResponseExt,
};
use serde_json::Value;

use crate::error::ApiError;
use crate::state::AppState;

/// A parsed ruma request, plus the raw UIA `auth` dict taken out of the body.
///
/// `auth` is removed before ruma sees the body, so a malformed `auth` never turns the whole
/// request into `M_BAD_JSON`: the UIA engine answers it with a 401 and an errcode instead.
pub struct Ruma<T> {
    /// The request.
    pub body: T,
    /// The `auth` dict, if the body had one.
    pub auth: Option<Value>,
    /// The body as JSON, for fields ruma does not model.
    pub json: Option<serde_json::Map<String, Value>>,
}

impl<T> std::ops::Deref for Ruma<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.body
    }
}

/// Maps ruma's parse failure to the Matrix error a client should see.
fn deserialization_error(
    e: FromHttpRequestError,
    json: Option<&serde_json::Map<String, Value>>,
) -> ApiError {
    match e {
        FromHttpRequestError::Deserialization(DeserializationError::Json(e)) => {
            let text = e.to_string();
            // Some of ruma's deserializers say "missing" for a field that is present with
            // the wrong type; only a field that is really absent is M_MISSING_PARAM.
            let field = text.split('`').nth(1).unwrap_or_default();
            let present = json.is_some_and(|m| m.contains_key(field));
            // A field of the right JSON type whose value breaks an identifier grammar
            // (ruma's ID types, e.g. a `client_secret` with a space) is a bad value.
            const BAD_IDENTIFIER: &[&str] = &[
                "identifier or required part of it is empty",
                "identifier contains invalid characters",
                "ID exceeds 255 bytes",
            ];
            if BAD_IDENTIFIER.iter().any(|m| text.starts_with(m)) {
                ApiError::invalid_param(text)
            } else if text.starts_with("missing field") && !present {
                ApiError::missing_param(text)
            } else {
                ApiError::bad_json(text)
            }
        }
        FromHttpRequestError::Deserialization(DeserializationError::Query(e)) => {
            let text = e.to_string();
            if text.starts_with("missing field") {
                ApiError::missing_param(text)
            } else {
                ApiError::invalid_param(text)
            }
        }
        FromHttpRequestError::Deserialization(DeserializationError::Ident(e)) => {
            ApiError::invalid_param(e.to_string())
        }
        FromHttpRequestError::MethodMismatch { .. } => ApiError::method_not_allowed(),
        other => ApiError::bad_json(other.to_string()),
    }
}

impl<T> FromRequest<AppState> for Ruma<T>
where
    T: IncomingRequest + Send,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = state.config.http.max_request_bytes;
        let (mut parts, body) = req.into_parts();
        let path_args: Vec<String> = RawPathParams::from_request_parts(&mut parts, state)
            .await
            .map_err(|e| ApiError::invalid_param(e.body_text()))?
            .iter()
            .map(|(_, v)| v.to_owned())
            .collect();
        let (body_bytes, auth, json) = read_body(&parts, body, limit).await?;

        into_ruma(&parts, &body_bytes, auth, json, &path_args)
    }
}

/// Turns a prepared body into ruma's request type, with the Matrix error a client should
/// see for anything ruma refuses (or panics on).
pub fn into_ruma<T: IncomingRequest>(
    parts: &http::request::Parts,
    body_bytes: &[u8],
    auth: Option<Value>,
    json: Option<serde_json::Map<String, Value>>,
    path_args: &[String],
) -> Result<Ruma<T>, ApiError> {
    let mut builder = http::Request::builder()
        .method(parts.method.clone())
        .uri(parts.uri.clone());
    for (name, value) in &parts.headers {
        builder = builder.header(name, value);
    }
    let request = builder
        .body(body_bytes)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let args: Vec<&str> = path_args.iter().map(String::as_str).collect();
    // ruma's login deserializer indexes `type` and panics when it is missing: refuse such a
    // body here, so no request can make a panic (and a panic line in the log) at will.
    if parts.method == http::Method::POST && parts.uri.path().ends_with("/login") {
        match json.as_ref().and_then(|m| m.get("type")) {
            Some(Value::String(_)) => {}
            Some(_) => return Err(ApiError::bad_json("type must be a string")),
            None => return Err(ApiError::missing_param("type is required")),
        }
    }
    // Should another of ruma's hand-written deserializers panic on a malformed body, it is
    // still bad input, never a dropped connection.
    let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        T::try_from_http_request(request, &args)
    }));
    let body = match parsed {
        Ok(result) => result.map_err(|e| deserialization_error(e, json.as_ref()))?,
        Err(_) => {
            let has_type = json
                .as_ref()
                .is_some_and(|m| m.get("type").is_some_and(Value::is_string));
            return Err(if has_type {
                ApiError::bad_json("The body does not have the expected shape")
            } else {
                ApiError::missing_param("type is required and must be a string")
            });
        }
    };
    Ok(Ruma { body, auth, json })
}

/// Reads a request body: at most `limit` bytes (else 413 `M_TOO_LARGE`). For methods with a
/// body it must be a JSON object (an empty body counts as `{}`); its `auth` dict is taken
/// out. Returns the bytes to hand on, the `auth` dict and the object.
async fn read_body(
    parts: &http::request::Parts,
    body: Body,
    limit: usize,
) -> Result<
    (
        Vec<u8>,
        Option<Value>,
        Option<serde_json::Map<String, Value>>,
    ),
    ApiError,
> {
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        let over = e
            .into_inner()
            .downcast_ref::<http_body_util::LengthLimitError>()
            .is_some();
        if over {
            too_large(limit)
        } else {
            // `[http] body_read_timeout` ran out, or the client broke off.
            ApiError::Custom {
                status: http::StatusCode::REQUEST_TIMEOUT,
                errcode: "M_UNKNOWN",
                message: "The request body did not arrive in time".into(),
            }
        }
    })?;
    prepare_body(&parts.method, &bytes)
}

/// The body as handed on: for methods with a body it must be a JSON object (an empty body
/// counts as `{}`, as Synapse does, so UIA can start with no body), and its `auth` dict is
/// taken out. Returns the bytes to hand on, the `auth` dict and the object.
#[expect(
    clippy::type_complexity,
    reason = "three outputs, named in the doc comment"
)]
pub fn prepare_body(
    method: &Method,
    bytes: &[u8],
) -> Result<
    (
        Vec<u8>,
        Option<Value>,
        Option<serde_json::Map<String, Value>>,
    ),
    ApiError,
> {
    if !matches!(*method, Method::POST | Method::PUT | Method::DELETE) {
        return Ok((bytes.to_vec(), None, None));
    }
    let value: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
        Value::Object(serde_json::Map::new())
    } else {
        serde_json::from_slice(bytes)
            .map_err(|e| ApiError::not_json(format!("The body is not valid JSON: {e}")))?
    };
    let Value::Object(mut map) = value else {
        return Err(ApiError::bad_json("The body must be a JSON object"));
    };
    let auth = map.remove("auth").filter(|a| !a.is_null());
    let rewritten = serde_json::to_vec(&map).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok((rewritten, auth, Some(map)))
}

/// A JSON object body for endpoints ruma has no type for, read like [`Ruma`] reads one.
pub struct JsonBody {
    /// The object, without `auth`.
    pub body: serde_json::Map<String, Value>,
    /// The UIA `auth` dict, if any.
    pub auth: Option<Value>,
}

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let (_, auth, json) = read_body(&parts, body, state.config.http.max_request_bytes).await?;
        Ok(JsonBody {
            body: json.unwrap_or_default(),
            auth,
        })
    }
}

pub(crate) fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        ruma::api::error::ErrorKind::TooLarge,
        format!("The request body is larger than {limit} bytes"),
    )
}

/// A ruma response as an axum response.
pub struct RumaResponse<T>(pub T);

impl<T: OutgoingResponse> IntoResponse for RumaResponse<T> {
    fn into_response(self) -> Response {
        match self.0.try_into_http_response::<Vec<u8>>() {
            Ok(res) => res.map(Body::from),
            Err(e) => {
                ApiError::internal(format!("cannot serialise a response: {e}")).into_response()
            }
        }
    }
}

/// Leaves out object fields that are `null`, at every depth.
fn strip_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}

/// A ruma response as JSON with its `null` fields left out, for responses whose ruma type
/// writes `null` where the spec says "absent" (register with `inhibit_login`, devices
/// without a display name).
pub fn without_nulls<T: OutgoingResponse>(response: T) -> Response {
    let res = match response.try_into_http_response::<Vec<u8>>() {
        Ok(res) => res,
        Err(e) => {
            return ApiError::internal(format!("cannot serialise a response: {e}")).into_response();
        }
    };
    let (parts, body) = res.into_parts();
    let body = match serde_json::from_slice::<Value>(&body) {
        Ok(value) => serde_json::to_vec(&strip_nulls(value)).unwrap_or(body),
        Err(_) => body,
    };
    Response::from_parts(parts, Body::from(body))
}

/// The route table being built: the axum router and a record of every (method, path).
pub struct Routes {
    /// The router.
    pub router: Router<AppState>,
    /// Every (method, path) mounted.
    pub table: Vec<(Method, String)>,
}

impl Routes {
    /// An empty table.
    pub fn new() -> Self {
        Self {
            router: Router::new(),
            table: Vec::new(),
        }
    }

    /// Mounts `handler` on every path (r0, v3, unstable) of the ruma endpoint `T`.
    pub fn ruma<T, H, M>(mut self, handler: H) -> Self
    where
        T: Metadata,
        H: Handler<M, AppState>,
        M: 'static,
    {
        let filter = MethodFilter::try_from(T::METHOD).unwrap_or(MethodFilter::GET);
        for path in T::PATH_BUILDER.all_paths() {
            self.router = self.router.route(path, on(filter, handler.clone()));
            self.table.push((T::METHOD, path.to_owned()));
        }
        self
    }

    /// [`Routes::add`] when `when` holds.
    pub fn add_if(
        self,
        when: bool,
        path: &str,
        methods: &[Method],
        route: axum::routing::MethodRouter<AppState>,
    ) -> Self {
        if when {
            self.add(path, methods, route)
        } else {
            self
        }
    }

    /// Mounts a route that has no ruma type, recording `methods`.
    pub fn add(
        mut self,
        path: &str,
        methods: &[Method],
        route: axum::routing::MethodRouter<AppState>,
    ) -> Self {
        self.router = self.router.route(path, route);
        self.table
            .extend(methods.iter().map(|m| (m.clone(), path.to_owned())));
        self
    }
}

impl Default for Routes {
    fn default() -> Self {
        Self::new()
    }
}
