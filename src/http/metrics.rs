//! `GET /metrics` and the layer that times every request by route template.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, State};
use axum::http::{HeaderMap, HeaderValue, Method, Request, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use crate::metrics::Metrics;

/// Where and whether metrics are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Count and serve at all.
    pub enabled: bool,
    /// A listener of their own; `None`: `GET /metrics` on the API's.
    pub listen: Option<SocketAddr>,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: None,
        }
    }
}

/// The one route, for whichever listener serves it.
pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPEN_METRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The Prometheus text format, or OpenMetrics for a scraper that asks for it
/// (Prometheus itself does, first).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format (0.0.4); OpenMetrics when `Accept` asks for it",
        content((String = "text/plain; version=0.0.4; charset=utf-8"), (String = "application/openmetrics-text; version=1.0.0; charset=utf-8")))))]
pub(super) async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let open_metrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|accept| accept.contains("application/openmetrics-text"));
    let body = state.core.render_metrics(open_metrics).await;
    let content_type = if open_metrics {
        OPEN_METRICS
    } else {
        PROMETHEUS_TEXT
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

/// Records each request's route template, method, status and latency.
#[derive(Clone)]
pub struct RecordLayer {
    metrics: Arc<Metrics>,
}

impl RecordLayer {
    /// Records into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for RecordLayer {
    type Service = Record<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Record {
            inner,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

/// The service [`RecordLayer`] makes.
#[derive(Clone)]
pub struct Record<S> {
    inner: S,
    metrics: Arc<Metrics>,
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

impl<S, B> tower::Service<Request<B>> for Record<S>
where
    S: tower::Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Recorded<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let started = Instant::now();
        // The template the router matched, never the path: a path may
        // carry a token, and each distinct path would be a new series.
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map(|path| crate::metrics::route_label(path.as_str()));
        let method = method_label(request.method());
        Recorded {
            answer: self.inner.call(request),
            record: Some((Arc::clone(&self.metrics), route, method, started)),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's answer, recorded when it is ready (no allocation per request).
    pub struct Recorded<F> {
        #[pin]
        answer: F,
        record: Option<(Arc<Metrics>, Option<Arc<str>>, &'static str, Instant)>,
    }
}

impl<F, E> Future for Recorded<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let answer = std::task::ready!(this.answer.poll(cx));
        if let (Ok(response), Some((metrics, route, method, started))) =
            (&answer, this.record.take())
        {
            let route = route.as_deref().unwrap_or("unmatched");
            metrics.http_request(route, method, response.status().as_u16(), started.elapsed());
        }
        Poll::Ready(answer)
    }
}
