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

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// A label value chosen by Sesame (a face, an outcome, an operation).
type Name = &'static str;

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
    Histogram::new(exponential_buckets(0.000_1, 2.0, LATENCY_BUCKETS))
}

/// How many finite latency buckets.
const LATENCY_BUCKETS: u16 = 19;

/// The upper bound of latency bucket `i`.
fn latency_bound(i: usize) -> f64 {
    0.000_1 * f64::from(1u32 << i)
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
    hashing_threads_with_memory: Gauge,
    hashing_rejections: Counter,
    hashing_duration: Histogram,
    live_sessions: Gauge,
    api_calls: Counter,
    http: Arc<http::Requests>,
    pool_connections: Family<StateLabels, Gauge>,
    store_duration: HistogramFamily<OperationLabels>,
    store_errors: Family<OperationLabels, Counter>,
    redis_errors: Counter,
    notices_unsent: Counter,
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
            hashing_threads_with_memory: Gauge::default(),
            hashing_rejections: Counter::default(),
            hashing_duration: hashing_buckets(),
            live_sessions: Gauge::default(),
            api_calls: Counter::default(),
            http: http::Requests::new(),
            pool_connections: Family::default(),
            store_duration: Family::new_with_constructor(latency_buckets),
            store_errors: Family::default(),
            redis_errors: Counter::default(),
            notices_unsent: Counter::default(),
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
            "sesame_hashing_threads_with_memory",
            "Hashing threads holding Argon2 memory (each about passwords.memory_kib), given back \
             wiped after 30 s idle",
            metrics.hashing_threads_with_memory.clone(),
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
        registry.register_collector(Box::new(Arc::clone(&metrics.http)));
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
        registry.register(
            "sesame_notices_unsent",
            "Notices (a session ended, an account changed) this node could not send to the \
             others, which then catch up within sessions.cache_ttl",
            metrics.notices_unsent.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// Serves the TLS certificate's expiry (HTTPS only: without it, no
    /// series that an alert on "expires soon" would read as expired).
    pub fn register_tls(&mut self, expiry: Gauge, refused_reloads: Counter) {
        self.registry.register(
            "sesame_tls_certificate_expiry_timestamp_seconds",
            "When the TLS certificate in service expires (its notAfter), in seconds since the \
             Unix epoch; 0 when it could not be read",
            expiry,
        );
        self.registry.register(
            "sesame_tls_reload_failures",
            "TLS certificate reloads refused (files unreadable, a key not the certificate's, a \
             certificate expired); the one in service stayed",
            refused_reloads,
        );
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
            threads_with_memory: self.hashing_threads_with_memory.clone(),
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

    /// One HTTP request's end: `route` is the template the router matched
    /// (or a fixed name), never the path.
    pub fn http_request(&self, route: &str, method: &'static str, status: u16, took: Duration) {
        self.http.record(route, method, status, took.as_secs_f64());
    }

    /// A handle for timing requests that is copied, not shared: see
    /// [`RequestTimer`].
    pub fn request_timer(&self) -> RequestTimer {
        RequestTimer { id: self.http.id() }
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

    /// Counts a notice that could not be sent to the other nodes.
    pub fn notice_unsent(&self) {
        self.notices_unsent.inc();
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
    /// Threads holding Argon2 memory.
    pub threads_with_memory: Gauge,
    /// Jobs refused on a full queue.
    pub rejections: Counter,
    /// Time of each job.
    pub duration: Histogram,
}

/// A shared handle.
pub type SharedMetrics = Arc<Metrics>;

/// Times HTTP requests into one [`Metrics`] without touching anything that
/// other threads touch: it is an id (copied into each request's service,
/// where an `Arc` would be a shared reference count), and each request
/// records into its thread's shard.
#[derive(Debug, Clone, Copy)]
pub struct RequestTimer {
    id: usize,
}

impl RequestTimer {
    /// A request begins; `route` is the template the router matched.
    pub fn start(self, route: Option<&str>, method: &'static str) -> Option<RequestTiming> {
        Some(RequestTiming {
            shard: http::shard_of(self.id)?,
            route: route.map(route_label),
            method,
            started: std::time::Instant::now(),
        })
    }
}

/// A request being timed.
#[derive(Debug)]
pub struct RequestTiming {
    shard: Arc<std::sync::Mutex<http::Shard>>,
    route: Option<Arc<str>>,
    method: &'static str,
    started: std::time::Instant,
}

impl RequestTiming {
    /// The request ends with `status`.
    pub fn finish(self, status: u16) {
        http::record_into(
            &self.shard,
            self.route.as_deref().unwrap_or("unmatched"),
            self.method,
            status,
            self.started.elapsed().as_secs_f64(),
        );
    }
}

/// HTTP requests, recorded per thread and summed at each scrape.
///
/// Every request is counted, so this is the hottest metric: with one shared
/// counter and histogram per series, two cores serving tens of thousands
/// of requests a second spend their time passing the same cache lines back
/// and forth (measured: 5–8 % of `GET /v1/me`). Here each thread adds to a
/// shard of its own (an uncontended lock, a map keyed by the route template
/// without copying it), and a scrape adds the shards up.
mod http {
    use std::cell::RefCell;
    use std::collections::{BTreeMap, HashMap};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex, PoisonError, Weak};

    use prometheus_client::collector::Collector;
    use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
    use prometheus_client::metrics::MetricType;

    use super::{LATENCY_BUCKETS, latency_bound};

    const BUCKETS: usize = LATENCY_BUCKETS as usize + 1;

    /// One series' numbers: requests of one route, method and status.
    #[derive(Debug, Clone, Copy)]
    pub(super) struct Series {
        method: &'static str,
        status: u16,
        count: u64,
        sum: f64,
        /// Per bucket, not cumulative; the last is +Inf.
        buckets: [u64; BUCKETS],
    }

    impl Series {
        fn add(&mut self, other: &Series) {
            self.count += other.count;
            self.sum += other.sum;
            for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
                *mine += theirs;
            }
        }
    }

    pub(super) type Shard = HashMap<Arc<str>, Vec<Series>>;

    /// Every live registry, by id, for a thread's first request.
    static REGISTRIES: Mutex<Vec<(usize, Weak<Requests>)>> = Mutex::new(Vec::new());

    /// This thread's shard of registry `id`, if it is alive.
    pub(super) fn shard_of(id: usize) -> Option<Arc<Mutex<Shard>>> {
        SHARDS.with_borrow_mut(|shards| {
            if let Some(shard) = shards
                .iter()
                .find(|(of, _)| *of == id)
                .and_then(|(_, shard)| shard.upgrade())
            {
                return Some(shard);
            }
            let requests = REGISTRIES
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .find(|(of, _)| *of == id)
                .and_then(|(_, requests)| requests.upgrade())?;
            shards.retain(|(_, shard)| shard.strong_count() > 0);
            let shard = Arc::new(Mutex::new(Shard::new()));
            requests
                .shards
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Arc::clone(&shard));
            shards.push((id, Arc::downgrade(&shard)));
            Some(shard)
        })
    }

    /// Every thread's shard of one [`super::Metrics`].
    #[derive(Debug)]
    pub(super) struct Requests {
        id: usize,
        shards: Mutex<Vec<Arc<Mutex<Shard>>>>,
    }

    impl Requests {
        /// A registry, findable by its id.
        pub(super) fn new() -> Arc<Self> {
            static IDS: AtomicUsize = AtomicUsize::new(0);
            let requests = Arc::new(Self {
                id: IDS.fetch_add(1, Ordering::Relaxed),
                shards: Mutex::new(Vec::new()),
            });
            let mut registries = REGISTRIES.lock().unwrap_or_else(PoisonError::into_inner);
            registries.retain(|(_, live)| live.strong_count() > 0);
            registries.push((requests.id, Arc::downgrade(&requests)));
            requests
        }

        pub(super) fn id(&self) -> usize {
            self.id
        }
    }

    thread_local! {
        /// This thread's shard of each live registry (one in a server;
        /// several in a test process).
        static SHARDS: RefCell<Vec<(usize, Weak<Mutex<Shard>>)>> = const { RefCell::new(Vec::new()) };
    }

    impl Requests {
        pub(super) fn record(&self, route: &str, method: &'static str, status: u16, seconds: f64) {
            if let Some(shard) = shard_of(self.id) {
                record_into(&shard, route, method, status, seconds);
            }
        }
    }

    /// Adds one request to a shard.
    pub(super) fn record_into(
        shard: &Mutex<Shard>,
        route: &str,
        method: &'static str,
        status: u16,
        seconds: f64,
    ) {
        let bucket = (0..LATENCY_BUCKETS as usize)
            .find(|&i| seconds <= latency_bound(i))
            .unwrap_or(BUCKETS - 1);
        let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        {
            if !shard.contains_key(route) {
                shard.insert(Arc::from(route), Vec::new());
            }
            let Some(series) = shard.get_mut(route) else {
                return;
            };
            let at = match series
                .iter()
                .position(|s| s.method == method && s.status == status)
            {
                Some(at) => at,
                None => {
                    series.push(Series {
                        method,
                        status,
                        count: 0,
                        sum: 0.0,
                        buckets: [0; BUCKETS],
                    });
                    series.len() - 1
                }
            };
            let entry = &mut series[at];
            entry.count += 1;
            entry.sum += seconds;
            entry.buckets[bucket] += 1;
        }
    }

    impl Requests {
        /// Every shard added up, by route, method and status.
        fn totals(&self) -> BTreeMap<(String, &'static str, u16), Series> {
            let shards = self
                .shards
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            let mut totals: BTreeMap<(String, &'static str, u16), Series> = BTreeMap::new();
            for shard in shards {
                let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
                for (route, series) in shard.iter() {
                    for s in series {
                        totals
                            .entry((route.to_string(), s.method, s.status))
                            .and_modify(|total| total.add(s))
                            .or_insert(*s);
                    }
                }
            }
            totals
        }
    }

    #[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
    struct RequestLabels {
        route: String,
        method: &'static str,
        status: u16,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
    struct RouteLabels {
        route: String,
        method: &'static str,
    }

    impl Collector for Requests {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            let totals = self.totals();
            let mut requests = encoder.encode_descriptor(
                "sesame_http_requests",
                "HTTP requests by route template, method and status",
                None,
                MetricType::Counter,
            )?;
            for ((route, method, status), series) in &totals {
                let labels = RequestLabels {
                    route: route.clone(),
                    method,
                    status: *status,
                };
                requests
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&series.count, None)?;
            }
            let mut by_route: BTreeMap<(&str, &'static str), Series> = BTreeMap::new();
            for ((route, method, _), series) in &totals {
                by_route
                    .entry((route.as_str(), method))
                    .and_modify(|total| total.add(series))
                    .or_insert(*series);
            }
            let mut durations = encoder.encode_descriptor(
                "sesame_http_request_duration_seconds",
                "HTTP request latency by route template and method, until the response head",
                None,
                MetricType::Histogram,
            )?;
            for ((route, method), series) in by_route {
                let buckets: Vec<(f64, u64)> = series
                    .buckets
                    .iter()
                    .enumerate()
                    .map(|(i, &n)| {
                        let bound = if i + 1 == BUCKETS {
                            f64::INFINITY
                        } else {
                            latency_bound(i)
                        };
                        (bound, n)
                    })
                    .collect();
                durations
                    .encode_family(&RouteLabels {
                        route: route.to_owned(),
                        method,
                    })?
                    .encode_histogram::<NoLabelSet>(series.sum, series.count, &buckets, None)?;
            }
            Ok(())
        }
    }
}

/// This thread's copy of a route template, by the address of the router's
/// own: a label to carry to the end of a request without touching a
/// reference count that every thread shares.
pub fn route_label(route: &str) -> Arc<str> {
    thread_local! {
        static ROUTES: std::cell::RefCell<std::collections::HashMap<usize, Arc<str>>> =
            std::cell::RefCell::new(std::collections::HashMap::new());
    }
    ROUTES.with_borrow_mut(|routes| {
        let key = route.as_ptr() as usize;
        match routes.get(&key) {
            // The same text at the same address (a router dropped and another
            // built in its place is caught by the comparison).
            Some(label) if **label == *route => Arc::clone(label),
            _ => {
                if routes.len() >= 4096 {
                    routes.clear();
                }
                let label: Arc<str> = Arc::from(route);
                routes.insert(key, Arc::clone(&label));
                label
            }
        }
    })
}
