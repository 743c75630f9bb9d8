//! The HTTP faces and what they share: state, router, middleware.
//!
//! Each face module exports a `router()`; [`router`] merges them and adds the
//! layers every request goes through (body limit, timeout, panic guard,
//! tracing without query strings).

pub mod admin;
pub mod authz;
pub mod contracts;
pub mod cors;
pub mod deadline;
pub mod error;
pub mod extract;
pub mod headers;
pub mod metrics;
pub mod native;
pub mod observe;
pub mod oidc;
pub mod openapi;
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
    /// Proxies whose forwarding header is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Which forwarding header they set (the other one is never read: a
    /// proxy passes on whatever a client wrote in a header it does not set).
    pub forwarded_header: extract::ForwardedHeader,
    /// After a stop signal, how long connections are still accepted while
    /// `/readyz` says 503 (load balancers take the node out meanwhile).
    pub drain: Duration,
    /// Forward auth (`/v1/authz`).
    pub forward_auth: authz::ForwardAuthSettings,
    /// Connections open at once (TLS handshakes included); beyond, a new
    /// one is closed at once.
    pub max_connections: usize,
    /// Which web pages may call each face from a browser.
    pub cors: cors::CorsSettings,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            body_limit: 64 * 1024,
            request_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            trusted_proxies: Vec::new(),
            forwarded_header: extract::ForwardedHeader::XForwardedFor,
            drain: Duration::from_secs(5),
            forward_auth: authz::ForwardAuthSettings::default(),
            max_connections: 10_000,
            cors: cors::CorsSettings::default(),
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
    /// Where `GET /metrics` is served (for the description).
    pub metrics: Arc<metrics::MetricsSettings>,
    /// `GET /openapi.json`'s body, made at its first request (the issuer
    /// is known by then) and served as is afterwards.
    pub openapi: Arc<std::sync::OnceLock<axum::body::Bytes>>,
}

/// The header carrying a request's id, both ways.
const REQUEST_ID: &str = "x-request-id";

/// A client's request id, if it is a sane token (1 to 128 of `A-Z a-z 0-9
/// . _ -`, nothing a log could be tricked with); otherwise a fresh one.
fn request_id(headers: &axum::http::HeaderMap) -> axum::http::HeaderValue {
    headers
        .get(REQUEST_ID)
        .filter(|id| {
            (1..=128).contains(&id.len())
                && id
                    .as_bytes()
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
        .cloned()
        .unwrap_or_else(|| {
            axum::http::HeaderValue::try_from(new_request_id())
                .unwrap_or_else(|_| axum::http::HeaderValue::from_static("-"))
        })
}

/// A fresh request id: this process's random prefix and a counter (no
/// system call per request, unique across nodes and restarts).
fn new_request_id() -> String {
    static PREFIX: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| crate::core::tokens::random_urlsafe(9));
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{n:x}", &*PREFIX)
}

/// One log line per request (target `sesame::request`, level debug):
/// method, route template (never the path, which may carry a token, nor the
/// query, which may carry a password), status, latency, client address and
/// request id, which the response carries back in `X-Request-Id`. Installed
/// only when `log` enables it (`info,sesame::request=debug`): on two cores
/// the layer and its line cost a fifth to a quarter of the hot path's
/// throughput (`bench/`, `GET /v1/me`).
async fn request_log(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: Request<Body>,
    next: axum::middleware::Next,
) -> Response {
    let started = std::time::Instant::now();
    let id = request_id(request.headers());
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let client = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|axum::extract::ConnectInfo(peer)| {
            extract::client_address(
                peer.ip().to_canonical(),
                request.headers(),
                &state.http.trusted_proxies,
                state.http.forwarded_header,
            )
        });
    let mut response = next.run(request).await;
    response.headers_mut().insert(REQUEST_ID, id.clone());
    tracing::debug!(
        target: "sesame::request",
        method = %method,
        route = route.as_deref().unwrap_or("-"),
        status = response.status().as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        client = %client.map_or_else(|| "-".to_owned(), |ip| ip.to_string()),
        request_id = id.to_str().unwrap_or("-"),
        "request"
    );
    response
}

/// The whole HTTP application (with `GET /metrics` unless it has a
/// listener of its own: see [`metrics_router`]).
pub fn router(
    state: AppState,
    settings: &HttpSettings,
    metrics_settings: &metrics::MetricsSettings,
) -> Router {
    let router = routes(state.clone(), settings, metrics_settings);
    if tracing::enabled!(target: "sesame::request", tracing::Level::DEBUG) {
        router.layer(axum::middleware::from_fn_with_state(state, request_log))
    } else {
        router
    }
}

/// `GET /metrics` alone, for `metrics.listen`.
pub fn metrics_router(state: AppState) -> Router {
    metrics::router()
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

fn routes(
    state: AppState,
    settings: &HttpSettings,
    metrics_settings: &metrics::MetricsSettings,
) -> Router {
    let timeout = settings.request_timeout;
    // The faces that answer with problem documents; each other face has a
    // deadline that answers in its own shape (`deadline`).
    let mut native_faces = Router::new();
    if metrics_settings.on_the_api_listener() {
        native_faces = native_faces.merge(metrics::router());
    }
    let native_faces = native_faces
        .route("/openapi.json", axum::routing::get(openapi::openapi_json))
        .merge(native::router())
        .merge(admin::router())
        .merge(wellknown::router())
        .layer(deadline::Deadline::new(timeout, overrun));
    let router = Router::new()
        .merge(native_faces)
        .merge(oidc::router().layer(oidc::deadline(timeout)))
        .merge(contracts::router(&state.contracts, timeout))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(settings.body_limit))
        .layer(CatchPanicLayer::custom(panicked));
    // Only where some page may call some face: none by default.
    let router = if settings.cors.is_on() {
        settings.cors.clone().apply(router)
    } else {
        router
    };
    // Forward auth answers proxies, never a page's cross-origin call, and
    // takes every method: outside CORS, which would answer any OPTIONS
    // request itself (an empty 200, no token asked) as a preflight.
    let forward_auth = authz::router()
        .layer(deadline::Deadline::new(timeout, overrun))
        .layer(DefaultBodyLimit::max(settings.body_limit))
        .layer(CatchPanicLayer::custom(panicked));
    let router = router
        .merge(forward_auth)
        // Outside the panic guard, the timeout and CORS, so that their
        // answers are counted and hardened too.
        .layer(observe::ObserveLayer::new(
            metrics_settings
                .enabled
                .then(|| state.core.metrics().request_timer()),
        ));
    router.with_state(state)
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

/// `http.request_timeout` run out on a face that answers with problems.
fn overrun((): (), overrun: deadline::Overrun) -> Response {
    match overrun {
        deadline::Overrun::Body => Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request's body did not arrive in time",
        ),
        deadline::Overrun::Answer => Problem::from(deadline::Overrun::busy()),
    }
    .into_response()
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
