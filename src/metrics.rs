//! What a node counts, for `GET /metrics`: one registry per application
//! (tests run several in one process), every handle made once here and
//! shared by the parts that record into it.
//!
//! Recording is an atomic add, or a short lock for a histogram; label sets
//! are looked up under a read lock and are made of `&'static str`s and a
//! route template, never of anything a client chose (a raw path, a login).
//! The names follow Prometheus' conventions: `sesame_` prefix, `_total` on
//! counters (added by the encoder), `_seconds` on durations.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// A label value chosen by Sesame (a face, an outcome, an operation).
type Name = &'static str;

/// A route template (`/v1/me/sessions/{id}`) as a label value.
///
/// It holds the template the router matched, shared, not copied: building
/// a label set per request allocates nothing.
#[derive(Debug, Clone)]
pub struct Route(RouteText);

#[derive(Debug, Clone)]
enum RouteText {
    Static(&'static str),
    Matched(axum::extract::MatchedPath),
}

impl Route {
    /// A route the router matched.
    pub fn matched(path: axum::extract::MatchedPath) -> Self {
        Self(RouteText::Matched(path))
    }

    /// A fixed name, such as `unmatched` for a path no route has.
    pub const fn fixed(name: &'static str) -> Self {
        Self(RouteText::Static(name))
    }

    fn as_str(&self) -> &str {
        match &self.0 {
            RouteText::Static(name) => name,
            RouteText::Matched(path) => path.as_str(),
        }
    }
}

impl PartialEq for Route {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Route {}

impl std::hash::Hash for Route {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl EncodeLabelValue for Route {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LoginLabels {
    face: Name,
    outcome: Name,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: Name,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: Route,
    method: Name,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route: Route,
    method: Name,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OperationLabels {
    operation: Name,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabels {
    state: Name,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Seconds, from 100 µs to ~26 s by factors of 2 (an authenticated call
/// takes tens of microseconds; a login one hash, milliseconds; a slow
/// database seconds).
fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 19))
}

/// Seconds, from 1 ms to ~4 s: one Argon2 (or imported bcrypt) computation.
fn hashing_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 13))
}

/// This node's metrics. Cheap to share (`Arc`); handles are clones of the
/// registered ones.
pub struct Metrics {
    registry: Registry,
    logins: Family<LoginLabels, Counter>,
    refreshes: Family<OutcomeLabels, Counter>,
    reuse_detections: Counter,
    hashing_queue: Gauge,
    hashing_rejections: Counter,
    hashing_duration: Histogram,
    live_sessions: Gauge,
    api_calls: Counter,
    http_requests: Family<RequestLabels, Counter>,
    http_duration: HistogramFamily<RouteLabels>,
    pool_connections: Family<StateLabels, Gauge>,
    store_duration: HistogramFamily<OperationLabels>,
    store_errors: Family<OperationLabels, Counter>,
    redis_errors: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric, at zero.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let metrics = Self {
            logins: Family::default(),
            refreshes: Family::default(),
            reuse_detections: Counter::default(),
            hashing_queue: Gauge::default(),
            hashing_rejections: Counter::default(),
            hashing_duration: hashing_buckets(),
            live_sessions: Gauge::default(),
            api_calls: Counter::default(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency_buckets),
            pool_connections: Family::default(),
            store_duration: Family::new_with_constructor(latency_buckets),
            store_errors: Family::default(),
            redis_errors: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "sesame_build",
            "The running Sesame's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register(
            "sesame_logins",
            "Logins by face and outcome (success, invalid_credentials, throttled, locked, \
             disabled, busy, error)",
            metrics.logins.clone(),
        );
        registry.register(
            "sesame_refreshes",
            "Refresh-token exchanges by outcome (success, invalid_token, reuse_detected, error)",
            metrics.refreshes.clone(),
        );
        registry.register(
            "sesame_refresh_reuse_detections",
            "Rotated refresh tokens presented again; each ended its session",
            metrics.reuse_detections.clone(),
        );
        registry.register(
            "sesame_hashing_queue_depth",
            "Password hashing jobs waiting for a hashing thread",
            metrics.hashing_queue.clone(),
        );
        registry.register(
            "sesame_hashing_rejections",
            "Password hashing jobs refused because the queue was full (answered busy)",
            metrics.hashing_rejections.clone(),
        );
        registry.register(
            "sesame_hashing_duration_seconds",
            "Time of one password hash or verification on a hashing thread",
            metrics.hashing_duration.clone(),
        );
        registry.register(
            "sesame_live_sessions",
            "Sessions neither ended nor expired, in the database (read at most every 10 s)",
            metrics.live_sessions.clone(),
        );
        registry.register(
            "sesame_api_calls",
            "Authenticated API calls counted against quotas by this node",
            metrics.api_calls.clone(),
        );
        registry.register(
            "sesame_http_requests",
            "HTTP requests by route template, method and status",
            metrics.http_requests.clone(),
        );
        registry.register(
            "sesame_http_request_duration_seconds",
            "HTTP request latency by route template and method, until the response head",
            metrics.http_duration.clone(),
        );
        registry.register(
            "sesame_db_pool_connections",
            "Database connections of this node's pool, in_use or idle",
            metrics.pool_connections.clone(),
        );
        registry.register(
            "sesame_store_operation_duration_seconds",
            "Latency of each storage operation",
            metrics.store_duration.clone(),
        );
        registry.register(
            "sesame_store_errors",
            "Storage operations that failed, by operation",
            metrics.store_errors.clone(),
        );
        registry.register(
            "sesame_redis_errors",
            "Redis commands that failed or timed out (throttling fell back to this node)",
            metrics.redis_errors.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// A login's end, by face and outcome.
    pub fn login(&self, face: &'static str, outcome: &'static str) {
        self.logins
            .get_or_create(&LoginLabels { face, outcome })
            .inc();
    }

    /// A refresh's end.
    pub fn refresh(&self, outcome: &'static str) {
        self.refreshes
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        if outcome == "reuse_detected" {
            self.reuse_detections.inc();
        }
    }

    /// The hashing pool's queue gauge and timings, for its threads.
    pub fn hashing(&self) -> HashingMetrics {
        HashingMetrics {
            queue: self.hashing_queue.clone(),
            rejections: self.hashing_rejections.clone(),
            duration: self.hashing_duration.clone(),
        }
    }

    /// `n` authenticated calls counted.
    pub fn api_calls(&self, n: u64) {
        self.api_calls.inc_by(n);
    }

    /// The live-session count just read.
    pub fn set_live_sessions(&self, count: i64) {
        self.live_sessions.set(count);
    }

    /// One HTTP request's end.
    pub fn http_request(&self, route: Route, method: &'static str, status: u16, took: Duration) {
        self.http_duration
            .get_or_create(&RouteLabels {
                route: route.clone(),
                method,
            })
            .observe(took.as_secs_f64());
        self.http_requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status,
            })
            .inc();
    }

    /// The database pool's connections now.
    pub fn set_pool(&self, in_use: u32, idle: u32) {
        for (state, value) in [("in_use", in_use), ("idle", idle)] {
            self.pool_connections
                .get_or_create(&StateLabels { state })
                .set(i64::from(value));
        }
    }

    /// One storage operation's end.
    pub fn store_operation(&self, operation: &'static str, took: Duration, failed: bool) {
        self.store_duration
            .get_or_create(&OperationLabels { operation })
            .observe(took.as_secs_f64());
        if failed {
            self.store_errors
                .get_or_create(&OperationLabels { operation })
                .inc();
        }
    }

    /// The counter a Redis client adds its failures to.
    pub fn redis_errors(&self) -> Counter {
        self.redis_errors.clone()
    }

    /// Everything, in the Prometheus text format (0.0.4), or in OpenMetrics
    /// when `open_metrics`.
    pub fn render(&self, open_metrics: bool) -> String {
        let mut text = String::with_capacity(16 * 1024);
        let encoded = if open_metrics {
            prometheus_client::encoding::text::encode(&mut text, &self.registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
        };
        if let Err(error) = encoded {
            tracing::error!(%error, "cannot encode the metrics");
        }
        text
    }
}

/// The hashing pool's share of the metrics.
#[derive(Debug, Clone)]
pub struct HashingMetrics {
    /// Jobs waiting.
    pub queue: Gauge,
    /// Jobs refused on a full queue.
    pub rejections: Counter,
    /// Time of each job.
    pub duration: Histogram,
}

/// A shared handle.
pub type SharedMetrics = Arc<Metrics>;
