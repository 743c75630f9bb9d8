//! The one layer every request passes through on its way out: its trace
//! span (method and route template, never the path nor the query), its
//! metrics (route template, method, status, latency) and the headers every
//! answer carries ([`super::headers::harden`]).
//!
//! One layer rather than three: axum clones and boxes each layer's service
//! per route and per request, and on two cores each extra layer showed in
//! `GET /v1/me`'s throughput (`bench/ --only metrics`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::MatchedPath;
use axum::http::{Method, Request};
use axum::response::Response;
use tracing::Instrument;
use tracing::instrument::Instrumented;

use crate::metrics::{RequestTimer, RequestTiming};

/// Traces, counts (when `metrics` is given) and hardens every response.
#[derive(Debug, Clone, Copy)]
pub struct ObserveLayer {
    timer: Option<RequestTimer>,
}

impl ObserveLayer {
    /// Records into the metrics of `timer` when given.
    pub fn new(timer: Option<RequestTimer>) -> Self {
        Self { timer }
    }
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            timer: self.timer,
        }
    }
}

/// The service [`ObserveLayer`] makes.
/// Copied per request by axum: it holds no reference count that every
/// thread would share.
#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    timer: Option<RequestTimer>,
}

/// A method as a label: the standard ones by name, anything else `other`
/// (a client must not be able to mint label values).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

impl<S, B> tower::Service<Request<B>> for Observe<S>
where
    S: tower::Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Observed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let method = method_label(request.method());
        // The template the router matched, never the path: a path may carry
        // a token, and each distinct path would be a new series.
        let route = request.extensions().get::<MatchedPath>();
        let span = tracing::info_span!(
            "request",
            method = method,
            route = route.map_or("-", MatchedPath::as_str)
        );
        let timing = self
            .timer
            .and_then(|timer| timer.start(route.map(MatchedPath::as_str), method));
        Observed {
            answer: self.inner.call(request).instrument(span),
            timing,
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's answer, recorded and hardened when it is ready (no
    /// allocation per request).
    pub struct Observed<F> {
        #[pin]
        answer: Instrumented<F>,
        timing: Option<RequestTiming>,
    }
}

impl<F, E> Future for Observed<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut answer = std::task::ready!(this.answer.poll(cx));
        if let Ok(response) = &mut answer {
            super::headers::harden(response.headers_mut());
            let status = response.status();
            if status.is_server_error() && status != axum::http::StatusCode::SERVICE_UNAVAILABLE {
                tracing::error!(status = status.as_u16(), "response failed");
            }
            if let Some(timing) = this.timing.take() {
                timing.finish(status.as_u16());
            }
        }
        Poll::Ready(answer)
    }
}
