//! What every answer gets: CORS as the spec recommends (`OPTIONS` is answered here without
//! running any endpoint), `Cache-Control: no-store` unless the handler said otherwise, and
//! the request counted with its latency by route pattern (not by concrete path, so user IDs
//! and tokens never become label values).
//!
//! A tower layer of its own rather than axum's `from_fn`: it runs on every request, and
//! `from_fn` costs each one a clone of the services below it, a boxed service and a boxed
//! future. This one calls the service below (made ready by the router) and finishes its
//! answer in a future of its own.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode, header};

/// Wraps each route in [`EveryAnswer`].
#[derive(Debug, Clone, Copy, Default)]
pub struct EveryAnswerLayer;

impl<S> tower::Layer<S> for EveryAnswerLayer {
    type Service = EveryAnswer<S>;

    fn layer(&self, inner: S) -> EveryAnswer<S> {
        EveryAnswer { inner }
    }
}

/// A route whose answers get the CORS and cache headers and are counted.
#[derive(Debug, Clone)]
pub struct EveryAnswer<S> {
    inner: S,
}

impl<S> tower::Service<Request> for EveryAnswer<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Answer<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // A matched path is shared (cloning it copies no text).
        let endpoint = req.extensions().get::<MatchedPath>().cloned();
        let method = method_label(req.method());
        let started = Instant::now();
        let inner = (req.method() != Method::OPTIONS).then(|| self.inner.call(req));
        Answer {
            inner,
            endpoint,
            method,
            started,
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer of an [`EveryAnswer`] route: the route's own (none for `OPTIONS`), then
    /// the headers and the metrics.
    pub struct Answer<F> {
        #[pin]
        inner: Option<F>,
        endpoint: Option<MatchedPath>,
        method: &'static str,
        started: Instant,
    }
}

impl<F> Future for Answer<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = match this.inner.as_pin_mut() {
            Some(inner) => match inner.poll(cx) {
                Poll::Ready(Ok(res)) => res,
                Poll::Ready(Err(never)) => match never {},
                Poll::Pending => return Poll::Pending,
            },
            None => StatusCode::NO_CONTENT.into_response(),
        };
        cors(&mut res);
        // Answers may carry tokens (`/login`, `/register`, `/refresh`) or account data: no
        // cache keeps them, unless a handler said otherwise.
        res.headers_mut()
            .entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-store"));
        let endpoint = this.endpoint.as_ref().map_or("unmatched", |p| p.as_str());
        vouch_metrics::HTTP_DURATION
            .with_label_values(&[endpoint, this.method])
            .observe(this.started.elapsed().as_secs_f64());
        vouch_metrics::HTTP_REQUESTS
            .with_label_values(&[endpoint, this.method, res.status().as_str()])
            .inc();
        Poll::Ready(Ok(res))
    }
}

/// The method as a metric label: the standard ones by name, anything a client made up as
/// `other`, so no request can add a time series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// The CORS headers the spec recommends, on every answer.
fn cors(res: &mut Response) {
    let h = res.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("X-Requested-With, Content-Type, Authorization"),
    );
}
