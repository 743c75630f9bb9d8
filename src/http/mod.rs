//! The HTTP faces and what they share: state, router, middleware.
//!
//! Each face module exports a `router()`; [`router`] merges them and adds the
//! layers every request goes through (body limit, timeout, panic guard,
//! tracing without query strings).

pub mod admin;
pub mod authz;
pub mod contracts;
pub mod error;
pub mod extract;
pub mod native;
pub mod oidc;
pub mod page;
pub mod views;
pub mod wellknown;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::core::Core;
use contracts::ContractSettings;
use error::Problem;

/// HTTP limits and proxies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// Largest request body, bytes.
    pub body_limit: usize,
    /// Longest a request may take, body included.
    pub request_timeout: Duration,
    /// Longest a client may take to send the request head; a slower
    /// (slowloris) connection is dropped.
    pub header_timeout: Duration,
    /// Proxies whose `Forwarded` / `X-Forwarded-For` are believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// After a stop signal, how long connections are still accepted while
    /// `/readyz` says 503 (load balancers take the node out meanwhile).
    pub drain: Duration,
    /// Forward auth (`/v1/authz`).
    pub forward_auth: authz::ForwardAuthSettings,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            body_limit: 64 * 1024,
            request_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            trusted_proxies: Vec::new(),
            drain: Duration::from_secs(5),
            forward_auth: authz::ForwardAuthSettings::default(),
        }
    }
}

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The core service.
    pub core: Arc<Core>,
    /// The contract faces' configuration.
    pub contracts: Arc<ContractSettings>,
    /// HTTP settings (trusted proxies).
    pub http: Arc<HttpSettings>,
}

/// The whole HTTP application.
pub fn router(state: AppState, settings: &HttpSettings) -> Router {
    Router::new()
        .merge(native::router())
        .merge(authz::router())
        .merge(admin::router())
        .merge(oidc::router())
                .merge(wellknown::router())
        .merge(contracts::router(&state.contracts))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(settings.body_limit))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, settings.request_timeout))
        .layer(CatchPanicLayer::custom(panicked))
        // The span names method and path only: query strings may carry credentials.
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<Body>| {
            tracing::info_span!("request", method = %request.method(), path = %request.uri().path())
        }))
        .with_state(state)
}

async fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not accept that method",
    )
}

fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error; see the server log",
    )
    .into_response()
}
