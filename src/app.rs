//! Building the application: one way, for the server, the CLI and the tests.
//!
//! [`Application::build`] opens the store, starts the core and binds the
//! listener (port 0 in tests) and reports the bound address; `run_until`
//! serves until the shutdown future completes, letting in-flight requests finish.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use std::time::Duration;

use anyhow::Context;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::config::Config;
use crate::connection::{self, Activity};
use crate::core::clock::Clock;
use crate::core::{Core, Purpose};
use crate::http::{self, AppState};
use crate::limits::FailureLimiter;
use crate::limits::memory::MemoryLimiter;
use crate::limits::redis::{RedisLimiter, RedisNotices};
use crate::notices::{LocalOnly, Notices};
use crate::store::metered::MeteredStore;
use crate::store::postgres::PostgresStore;
use crate::store::postgres::notify::PgNotices;
use crate::store::sqlite::SqliteStore;
use crate::store::{Migrate, Store};
use crate::tls::Tls;

/// Opens the configured store, doing as `migrate` says about its schema.
pub async fn open_store(config: &Config, migrate: Migrate) -> anyhow::Result<Arc<dyn Store>> {
    let url = &config.database.url;
    let opened: Result<Arc<dyn Store>, _> = if config.database.is_postgres() {
        PostgresStore::open(&config.database, migrate)
            .await
            .map(|store| Arc::new(store) as Arc<dyn Store>)
    } else {
        if config.uses_data_dir() && migrate != Migrate::Inspect {
            create_private_dir(&config.data_dir).with_context(|| {
                format!("cannot create data directory {}", config.data_dir.display())
            })?;
        }
        SqliteStore::open(url, migrate)
            .await
            .map(|store| Arc::new(store) as Arc<dyn Store>)
    };
    opened.with_context(|| format!("cannot open the database {}", displayable_url(url)))
}

/// Connections the metrics listener serves at once (a scraper needs one).
const METRICS_CONNECTIONS: usize = 16;

/// Serves `metrics.listen`: HTTP/1 (what scrapers speak) with the API's
/// header and write timeouts and a cap of its own on connections, so that
/// connections to an internal address can neither stay open for ever nor
/// take the process's file descriptors from the API.
async fn serve_metrics(
    listener: TcpListener,
    router: axum::Router,
    http1: hyper::server::conn::http1::Builder,
    write_timeout: Duration,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(METRICS_CONNECTIONS));
    let (mut failed_accepts, mut last_accept_warning) = (0u64, None);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Once a minute, as on the API's listener.
                failed_accepts += 1;
                if last_accept_warning
                    .is_none_or(|at: std::time::Instant| at.elapsed() >= Duration::from_secs(60))
                {
                    tracing::warn!(
                        %error,
                        failed = failed_accepts,
                        "accept failed on the metrics listener"
                    );
                    last_accept_warning = Some(std::time::Instant::now());
                    failed_accepts = 0;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Beyond the cap a connection is closed at once.
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            continue;
        };
        let router = router.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            router.clone().oneshot(request)
        });
        let socket = connection::socket(stream, write_timeout);
        let connection = http1.serve_connection(TokioIo::new(socket), service);
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(error) = connection.await {
                tracing::debug!(%error, "metrics connection ended with an error");
            }
        });
    }
}

/// Creates the data directory, if it is not there, for its owner alone (it
/// holds the database, and may hold TLS keys).
fn create_private_dir(path: &std::path::Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

/// A database or Redis URL fit for a message: a SQLite path as is; a
/// server URL without its password and query string.
pub use crate::redact::url as displayable_url;

/// The state shared with other nodes: failure budgets and notices.
struct Shared {
    limiter: Arc<dyn FailureLimiter>,
    notices: Arc<dyn Notices>,
}

/// Redis when configured; otherwise budgets per process, and notices through
/// PostgreSQL (`LISTEN/NOTIFY`) or not at all (SQLite: one process).
///
/// A server refuses to start without the Redis it was given (a wrong URL
/// must not go unnoticed). An operator's command carries on without it,
/// with a warning: an outage is when an operator may most need to disable
/// an account, and its notices then travel through PostgreSQL.
async fn open_shared(
    config: &Config,
    store: &Arc<dyn Store>,
    redis_required: bool,
    metrics: &crate::metrics::Metrics,
) -> anyhow::Result<Shared> {
    let fallback_notices = || -> Arc<dyn Notices> {
        match store.postgres() {
            Some(postgres) => Arc::new(PgNotices::new(postgres)),
            None => Arc::new(LocalOnly),
        }
    };
    if let Some(redis) = &config.redis {
        let connected = async {
            let limiter = RedisLimiter::connect(redis)
                .await?
                .counting_errors_in(metrics.redis_errors());
            let notices = RedisNotices::connect(redis)
                .await
                .map_err(|e| crate::limits::LimitsError(e.to_string()))?;
            Ok::<_, crate::limits::LimitsError>((limiter, notices))
        }
        .await;
        return match connected {
            Ok((limiter, notices)) => Ok(Shared {
                limiter: Arc::new(limiter),
                notices: Arc::new(notices),
            }),
            Err(error) if redis_required => {
                Err(anyhow::Error::new(error).context("cannot reach Redis (redis_url)"))
            }
            Err(error) => {
                tracing::warn!(
                    %error,
                    "Redis is unreachable: the servers hear notices through Redis, so they \
                     see this command's changes only as their caches expire (within \
                     sessions.cache_ttl), and failure budgets kept in Redis are left as they are"
                );
                Ok(Shared {
                    limiter: Arc::new(MemoryLimiter::new()),
                    notices: fallback_notices(),
                })
            }
        };
    }
    Ok(Shared {
        limiter: Arc::new(MemoryLimiter::new()),
        notices: fallback_notices(),
    })
}

/// Opens the store and the shared state and starts the core, without HTTP
/// (for the operator's commands).
pub async fn open_core(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<Core>> {
    start_core(config, clock, Purpose::Command, None).await
}

/// Opens the store as it is, changing nothing in it (not even a new
/// database's schema), and starts the core for an operator's command that
/// only reads: a dry run. A database never set up is
/// [`StoreError::NoSchema`](crate::store::StoreError::NoSchema) inside the
/// error; one whose schema is behind is refused.
pub async fn open_core_unchanged(
    config: &Config,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Arc<Core>> {
    // It announces nothing and charges no budget: no need of Redis, nor of
    // a warning when it is away.
    let mut config = config.clone();
    config.redis = None;
    start_core_with(&config, clock, Purpose::Command, Migrate::Inspect, None).await
}

/// Starts the core of an operator's command on a new, empty SQLite
/// database in `dir` (which the caller made and removes), with `config`'s
/// other settings and without Redis: what a dry run checks against when the
/// configured database was never set up.
pub async fn open_scratch_core(
    config: &Config,
    dir: &std::path::Path,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Arc<Core>> {
    let mut empty = config.clone();
    empty.data_dir = dir.to_path_buf();
    empty.database = crate::store::DatabaseSettings::for_url(SqliteStore::url_for_data_dir(dir));
    // Nothing is announced or counted: no server need hear of it.
    empty.redis = None;
    start_core_with(&empty, clock, Purpose::Command, Migrate::Apply, None).await
}

/// Starts the core as a server does (it signs tokens, so it makes the
/// signing key it lacks), without HTTP or background tasks: for harnesses
/// that drive the router in process (the fuzz targets, `fuzz/`).
#[doc(hidden)]
pub async fn open_serving_core(
    config: &Config,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Arc<Core>> {
    start_core(config, clock, Purpose::Serve, None).await
}

/// `tls`: the server's HTTPS, whose certificate's expiry is a metric.
async fn start_core(
    config: &Config,
    clock: Arc<dyn Clock>,
    purpose: Purpose,
    tls: Option<&Tls>,
) -> anyhow::Result<Arc<Core>> {
    let migrate = match (config.database.auto_migrate, purpose) {
        (false, _) => Migrate::Check,
        (true, Purpose::Serve) => Migrate::Apply,
        (true, Purpose::Command) => Migrate::Setup,
    };
    start_core_with(config, clock, purpose, migrate, tls).await
}

async fn start_core_with(
    config: &Config,
    clock: Arc<dyn Clock>,
    purpose: Purpose,
    migrate: Migrate,
    tls: Option<&Tls>,
) -> anyhow::Result<Arc<Core>> {
    // A server needs Redis when configured; an operator's command works
    // without it (see `open_shared`).
    let redis_required = purpose == Purpose::Serve;
    // An operator's command run from another directory, or without the
    // server's --config, would otherwise work on a new empty database of
    // its own and say nothing (`keys rotate` "succeeding" in it while the
    // server signs on with the old key).
    let new_database = migrate == Migrate::Setup
        && !config.database.is_postgres()
        && !SqliteStore::exists(&config.database.url);
    let store = open_store(config, migrate).await?;
    if new_database {
        tracing::warn!(
            database = %displayable_url(&config.database.url),
            "no database was there: this command made a new one; if the server's is \
             elsewhere, give this command its --config, SESAME_DATA_DIR or SESAME_DATABASE_URL"
        );
    }
    store.set_clock(Arc::clone(&clock));
    let mut metrics = crate::metrics::Metrics::new();
    if let Some(tls) = tls {
        metrics.register_tls(tls.expiry_gauge(), tls.refused_reloads());
    }
    let metrics = Arc::new(metrics);
    let shared = open_shared(config, &store, redis_required, &metrics).await?;
    let store: Arc<dyn Store> = Arc::new(MeteredStore::new(store, Arc::clone(&metrics)));
    let core = Core::start(
        store,
        shared.limiter,
        shared.notices,
        clock,
        config.core.clone(),
        metrics,
        purpose,
    )
    .await
    .context("cannot start the core")?;
    Ok(Arc::new(core))
}

/// `http://` (or `https://` when `secure`) and the address a server
/// listening on `address` is reached at on this host (loopback for an
/// unspecified address): the issuer when `public_url` is not set.
pub fn reachable_url(address: SocketAddr, secure: bool) -> String {
    let mut reachable = address;
    if reachable.ip().is_unspecified() {
        reachable.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let scheme = if secure { "https" } else { "http" };
    format!("{scheme}://{reachable}")
}

/// A built, bound, not yet serving application.
pub struct Application {
    /// `metrics.listen`'s listener and router, when configured.
    metrics: Option<(TcpListener, axum::Router)>,
    listener: TcpListener,
    address: SocketAddr,
    router: axum::Router,
    core: Arc<Core>,
    /// HTTPS, when configured.
    tls: Option<Arc<Tls>>,
    header_timeout: Duration,
    request_timeout: Duration,
    max_connections: usize,
    drain: Duration,
}

impl Application {
    /// Opens the store, starts the core and binds the listener.
    pub async fn build(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let tls = match &config.tls {
            Some(settings) => Some(
                Tls::new(settings.clone(), Arc::clone(&clock))
                    .context("cannot load the TLS certificate and key (tls_cert, tls_key)")?,
            ),
            None => None,
        };
        let core = start_core(config, clock, Purpose::Serve, tls.as_deref()).await?;
        core.spawn_housekeeping();
        let listener = TcpListener::bind(config.listen).await.with_context(|| {
            format!(
                "cannot listen on {} (is another server using it?)",
                config.listen
            )
        })?;
        let address = listener.local_addr()?;
        core.set_issuer(
            config
                .public_url
                .clone()
                .unwrap_or_else(|| reachable_url(address, tls.is_some())),
        );
        core.spawn_key_reloader();
        let state = AppState {
            core: Arc::clone(&core),
            contracts: Arc::new(config.contracts.clone()),
            http: Arc::new(config.http.clone()),
            metrics: Arc::new(config.metrics.clone()),
            openapi: Arc::default(),
        };
        let router = http::router(state.clone(), &config.http, &config.metrics);
        if config.metrics.enabled
            && config.metrics.listen.is_none()
            && config.metrics.token.is_none()
        {
            tracing::warn!(
                "GET /metrics is not served: give it an internal address of its own \
                 (metrics.listen) or a bearer token for the scraper (metrics.token)"
            );
        }
        let metrics = match config.metrics.listen.filter(|_| config.metrics.enabled) {
            Some(address) => {
                let listener = TcpListener::bind(address).await.with_context(|| {
                    format!("cannot listen on {address} for metrics (metrics.listen)")
                })?;
                Some((listener, http::metrics_router(state)))
            }
            None => None,
        };
        Ok(Self {
            metrics,
            listener,
            address,
            router,
            core,
            tls,
            header_timeout: config.http.header_timeout,
            request_timeout: config.http.request_timeout,
            max_connections: config.http.max_connections,
            drain: config.http.drain,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// The address `GET /metrics` is served at on a listener of its own.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
            .as_ref()
            .and_then(|(listener, _)| listener.local_addr().ok())
    }

    /// HTTPS, when configured (for `sesame serve`'s SIGHUP).
    pub fn tls(&self) -> Option<Arc<Tls>> {
        self.tls.clone()
    }

    /// The core behind the server.
    pub fn core(&self) -> Arc<Core> {
        Arc::clone(&self.core)
    }

    /// Serves until `shutdown` completes, then lets in-flight requests
    /// finish (idle keep-alive connections are closed at once).
    ///
    /// Connections are served by hyper directly rather than `axum::serve`,
    /// for the header-read timeout: a client that trickles its request head
    /// (slowloris) is dropped after `http.header_timeout`.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_timeout);
        let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(128)
            .max_header_list_size(64 * 1024)
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20));
        // Every connection's task holds a receiver: the stop below turns it
        // true and waits for them all to be dropped.
        let (stop, stopping) = tokio::sync::watch::channel(false);
        if let Some(tls) = &self.tls {
            tls.spawn_watch();
        }
        // Every connection holds one permit, TLS handshakes included; beyond
        // `http.max_connections` a new one is closed at once (and the
        // operator told, at most once a minute).
        let connections = Arc::new(tokio::sync::Semaphore::new(self.max_connections));
        let mut refused = 0_u64;
        let mut last_warning: Option<std::time::Instant> = None;
        // Metrics on their own listener (an internal address, for the
        // scraper only), served until the API stops.
        let metrics = self.metrics.map(|(listener, router)| {
            tokio::spawn(serve_metrics(
                listener,
                router,
                http1.clone(),
                self.request_timeout,
            ))
        });
        tokio::pin!(shutdown);
        // After the stop signal: `drain` more of accepting, with /readyz
        // saying 503, so that load balancers take the node out first.
        let drain_end = tokio::time::sleep(Duration::from_secs(86_400 * 365));
        tokio::pin!(drain_end);
        let mut draining = false;
        let (mut failed_accepts, mut last_accept_warning) = (0u64, None);
        loop {
            let (stream, peer) = tokio::select! {
                () = &mut drain_end, if draining => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: back off,
                        // keep serving, and say so once a minute, not 20
                        // times a second.
                        failed_accepts += 1;
                        if last_accept_warning.is_none_or(|at: std::time::Instant| {
                            at.elapsed() >= Duration::from_secs(60)
                        }) {
                            tracing::warn!(%error, failed = failed_accepts, "accept failed");
                            last_accept_warning = Some(std::time::Instant::now());
                            failed_accepts = 0;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown, if !draining => {
                    self.core.start_draining();
                    if self.drain.is_zero() {
                        break;
                    }
                    tracing::info!(
                        seconds = self.drain.as_secs(),
                        "stopping: /readyz answers 503 while load balancers drain this node"
                    );
                    draining = true;
                    drain_end.as_mut().reset(tokio::time::Instant::now() + self.drain);
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
                refused += 1;
                if last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                    tracing::warn!(
                        refused,
                        limit = self.max_connections,
                        "connections refused: http.max_connections are open"
                    );
                    last_warning = Some(std::time::Instant::now());
                    refused = 0;
                }
                continue;
            };
            let _ = stream.set_nodelay(true);
            let router = self.router.clone();
            let Some(tls) = &self.tls else {
                let service =
                    hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                        request.extensions_mut().insert(ConnectInfo(peer));
                        router.clone().oneshot(request)
                    });
                let socket = connection::socket(stream, self.request_timeout);
                let connection = http1.serve_connection(TokioIo::new(socket), service);
                let stopping = stopping.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    if let Err(error) = connection::serve(connection, stopping, None).await {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                });
                continue;
            };
            let tls = Arc::clone(tls);
            let hsts = tls.hsts().cloned();
            // Its requests, open and past: hyper closes an idle HTTP/1
            // connection itself, not an HTTP/2 one (src/connection.rs).
            let activity = Activity::new();
            let seen = Arc::clone(&activity);
            let service =
                hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    let open = seen.request();
                    request.extensions_mut().insert(ConnectInfo(peer));
                    let response = router.clone().oneshot(request);
                    let hsts = hsts.clone();
                    async move {
                        let mut response = response.await?;
                        drop(open);
                        if let Some(hsts) = hsts {
                            response
                                .headers_mut()
                                .insert(axum::http::header::STRICT_TRANSPORT_SECURITY, hsts);
                        }
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
            let stopping = stopping.clone();
            let mut http1 = http1.clone();
            // One buffer per write: rustls makes a record of each slice of
            // a vectored write (hyper's head and body would be two).
            http1.writev(false);
            let http2 = http2.clone();
            let header_timeout = self.header_timeout;
            let write_timeout = self.request_timeout;
            tokio::spawn(async move {
                let _permit = permit;
                let Some(accepted) = tls.accept(stream, write_timeout).await else {
                    return;
                };
                let io = TokioIo::new(accepted.stream);
                let served = if accepted.http2 {
                    // A client that never sends its preface (or any request),
                    // or none for `http.header_timeout` after its last, is
                    // closed then, as hyper closes an idle HTTP/1 connection.
                    let connection = http2.serve_connection(io, service);
                    connection::serve(connection, stopping, Some((activity, header_timeout))).await
                } else {
                    connection::serve(http1.serve_connection(io, service), stopping, None).await
                };
                if let Err(error) = served {
                    tracing::debug!(%error, "connection ended with an error");
                }
            });
        }
        drop(self.listener);
        if let Some(metrics) = metrics {
            metrics.abort();
        }
        // Requests in flight end within `http.request_timeout` (their
        // deadline answers); a connection that does not close by then is
        // left behind, so that the counts and the audit below are written.
        let grace = self.request_timeout + Duration::from_secs(5);
        drop(stopping);
        stop.send_replace(true);
        if tokio::time::timeout(grace, stop.closed()).await.is_err() {
            tracing::warn!(
                seconds = grace.as_secs(),
                "connections still open after the stop; closing without them"
            );
        }
        // Failed logins still being counted against their accounts (a
        // lockout among them, with its audit event).
        if tokio::time::timeout(Duration::from_secs(5), self.core.failures_counted())
            .await
            .is_err()
        {
            tracing::warn!("failed logins still being counted after 5 s; stopping without them");
        }
        if let Err(error) = self.core.flush_api_calls().await {
            tracing::error!(%error, "could not persist the last API-call counts");
        }
        if let Err(error) = self.core.flush_audit().await {
            tracing::error!(%error, "could not write the last audit events");
        }
        Ok(())
    }
}
