//! `GET /metrics` (requests are timed by [`super::observe`]).

use std::net::SocketAddr;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use sha2::{Digest, Sha256};

use super::AppState;
use super::error::Problem;

/// Where and whether metrics are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Count and serve at all.
    pub enabled: bool,
    /// A listener of their own; `None`: `GET /metrics` on the API's, if
    /// there is a token.
    pub listen: Option<SocketAddr>,
    /// The bearer token a scraper must send.
    pub token: Option<MetricsToken>,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: None,
            token: None,
        }
    }
}

impl MetricsSettings {
    /// Whether `GET /metrics` is served with the API: only to a scraper
    /// with the token, since what a node counts tells who has an account
    /// and which guesses were right (a locked account's right password).
    pub fn on_the_api_listener(&self) -> bool {
        self.enabled && self.listen.is_none() && self.token.is_some()
    }
}

/// The metrics bearer token, kept as its SHA-256 (compared in constant
/// time; never shown).
#[derive(Clone, PartialEq, Eq)]
pub struct MetricsToken([u8; 32]);

impl MetricsToken {
    /// Keeps the digest of `token`.
    pub fn new(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// Whether a request's `Authorization` header carries the token.
    fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(sent) = super::extract::bearer_token(headers) else {
            return false;
        };
        let sent: [u8; 32] = Sha256::digest(sent.as_bytes()).into();
        verify_slices_are_equal(&self.0, &sent).is_ok()
    }
}

impl std::fmt::Debug for MetricsToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsToken(redacted)")
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
        content((String = "text/plain; version=0.0.4; charset=utf-8"), (String = "application/openmetrics-text; version=1.0.0; charset=utf-8"))),
        (status = 401, description = "No or another bearer token than `metrics.token`", content_type = "application/problem+json")))]
pub(super) async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(token) = &state.metrics.token
        && !token.admits(&headers)
    {
        let mut refused = Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "GET /metrics needs the metrics bearer token (metrics.token)",
        )
        .into_response();
        refused.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"sesame-metrics\""),
        );
        return refused;
    }
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
