//! The core: accounts, passwords, sessions and tokens, with no HTTP and no SQL.
//!
//! Every face (the native API, the contract faces, the CLI) calls the same
//! operations on [`Core`]; policy lives here and nowhere else.

pub mod accounts;
pub mod admin;
/// Time types live below the core (the store and limits use them too).
pub use crate::clock;
pub mod audit;
pub mod authz;
pub mod cache;
pub mod clients;
pub mod domain;
pub mod error;
pub mod foreign;
pub mod guard;
pub mod housekeeping;
pub mod key_rotation;
pub mod keys;
pub mod login;
pub mod oidc;
pub mod passwords;
pub mod policy;
pub mod quota;
pub mod roles;
pub mod sessions;
pub mod tokens;
pub mod transfer;

use std::net::IpAddr;
use std::sync::Arc;

use audit::AuditLog;
use clock::Clock;
pub use error::{Error, Result};
use guard::AbuseSettings;
use passwords::{HashingSettings, PasswordHasher};
use quota::ApiCalls;
use sessions::SessionSettings;
use tokens::{AccessTokens, TokenSettings};

use crate::limits::FailureLimiter;
use crate::notices::{NoticeSink, Notices};
use crate::store::Store;

/// `check`'s answer, or a failure if it takes longer than `timeout`.
async fn within(
    timeout: std::time::Duration,
    check: impl std::future::Future<Output = std::result::Result<(), String>>,
) -> std::result::Result<(), String> {
    match tokio::time::timeout(timeout, check).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

/// Everything the core can be configured with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoreSettings {
    /// Token lifetimes, claims and algorithm.
    pub tokens: TokenSettings,
    /// Password hashing parameters and pool size.
    pub hashing: HashingSettings,
    /// Session policies.
    pub sessions: SessionSettings,
    /// Brute-force protection, password policy and audit retention.
    pub abuse: AbuseSettings,
    /// Background purges of ended sessions and spent refresh tokens.
    pub housekeeping: housekeeping::HousekeepingSettings,
    /// The API-call quota period of accounts without their own.
    pub quota_period: crate::store::QuotaPeriod,
    /// Profile attributes users may not set on themselves (sorted).
    pub protected_profile: Vec<String>,
    /// Seals private signing keys at rest, when configured.
    pub key_encryption: Option<keys::KeyEncryptionKey>,
}

/// Who is calling, as far as the transport can tell.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    /// Client address.
    pub ip: Option<IpAddr>,
    /// Whether `ip` is what a trusted proxy forwarded (the client's), not
    /// the connection's own peer.
    pub forwarded: bool,
    /// `User-Agent`, truncated.
    pub user_agent: Option<String>,
    /// A device token Sesame issued this client at an earlier login.
    pub device_token: Option<String>,
}

/// The parts of readiness, each `Err(why)` when it fails.
pub type Checks = Vec<(&'static str, std::result::Result<(), String>)>;

/// One readiness check of the database and (when shared) Redis, each
/// within `timeout`.
async fn check_readiness(
    store: &dyn Store,
    limiter: &dyn FailureLimiter,
    timeout: std::time::Duration,
) -> Checks {
    // Readiness is public: the reason (a host name, a database user) goes
    // to the log, the answer says only that it failed.
    let database = within(timeout, async {
        store.role_names().await.map(drop).map_err(|error| {
            tracing::debug!(%error, "readiness: the database failed");
            "the database failed".to_owned()
        })
    });
    let redis = within(timeout, async {
        limiter.ping().await.map_err(|error| {
            tracing::debug!(%error, "readiness: Redis failed");
            "Redis failed".to_owned()
        })
    });
    let (database, redis) = tokio::join!(database, redis);
    let mut checks = vec![("database", database)];
    if limiter.is_shared() {
        checks.push(("redis", redis));
    }
    checks
}

/// The core service; one per process, shared by all faces.
pub struct Core {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    hasher: PasswordHasher,
    tokens: AccessTokens,
    caches: Arc<cache::Caches>,
    api_calls: Arc<ApiCalls>,
    limiter: Arc<dyn FailureLimiter>,
    /// How the limiter names login names that match no account.
    limiter_names: guard::LimiterNames,
    /// Each session's budgets on this node: its refreshes
    /// (`spend_refresh`), a browser session's codes given by single sign-on
    /// (`oidc::CODES_BY_SINGLE_SIGN_ON`).
    session_budgets: crate::limits::memory::MemoryLimiter,
    /// Refresh tokens this node issued as their session's refresh budget
    /// ran out, with the session: the next rotation of one is refused
    /// before it is written while the budget lasts (`login::rotate_in`).
    spent_chains: std::sync::Mutex<
        std::collections::HashMap<crate::store::TokenHash, crate::store::SessionId>,
    >,
    notices: Arc<dyn Notices>,
    /// When a notice that could not be sent was last logged, and how many
    /// have failed since (`sessions::Core::publish`).
    unsent_notices: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
    audit: Arc<AuditLog>,
    settings: CoreSettings,
    /// A server's core, or an operator's command's.
    purpose: Purpose,
    /// When the key ring was last read from the store.
    keys_loaded_at: std::sync::atomic::AtomicI64,
    /// Set when the server is stopping: readiness says no.
    draining: std::sync::atomic::AtomicBool,
    metrics: Arc<crate::metrics::Metrics>,
    /// When `sesame_live_sessions` was last read from the store.
    live_sessions_read_at: tokio::sync::Mutex<Option<std::time::Instant>>,
    /// The readiness check of the database and Redis in flight, or the
    /// last one (answered): one check at a time, shared by the probes
    /// that come while it runs.
    readiness_check: std::sync::Mutex<Option<tokio::sync::watch::Receiver<Option<Checks>>>>,
    /// Permits for failed logins counted after their answer
    /// (`login::FAILURE_WRITES_DETACHED`).
    failure_writes: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// What a core is started for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A server: it signs tokens, so it makes the signing key it lacks.
    Serve,
    /// An operator's command: it signs no token and makes no key (one of
    /// another `tokens.algorithm` than the servers' would be published by
    /// them); only `keys rotate` adds one, on purpose.
    Command,
}

impl Core {
    /// Starts the core on a store and the shared state: loads (or, for a
    /// server, creates) the signing key, starts the hashing pool and subscribes the caches
    /// to other nodes' notices.
    pub async fn start(
        store: Arc<dyn Store>,
        limiter: Arc<dyn FailureLimiter>,
        notices: Arc<dyn Notices>,
        clock: Arc<dyn Clock>,
        settings: CoreSettings,
        metrics: Arc<crate::metrics::Metrics>,
        purpose: Purpose,
    ) -> Result<Self> {
        let ring = match purpose {
            Purpose::Serve => key_rotation::start_key_ring(&*store, &settings, clock.now()).await?,
            Purpose::Command => {
                key_rotation::command_key_ring(&*store, &settings, clock.now()).await?
            }
        };
        // Only logins name a login name in the limiter, and an operator's
        // command signs nobody in: it neither needs the deployment's secret
        // nor makes it (a dry run writes nothing).
        let limiter_names = match purpose {
            Purpose::Serve => {
                let kek = settings.key_encryption.as_ref();
                guard::LimiterNames::of_deployment(&*store, kek, clock.now()).await?
            }
            Purpose::Command => guard::LimiterNames::of_process()?,
        };
        let api_calls = Arc::new(ApiCalls::new(
            Arc::clone(&store),
            settings.sessions.cache_ttl,
            settings.quota_period,
            Arc::clone(&metrics),
        ));
        api_calls.spawn_flusher();
        let audit = Arc::new(AuditLog::new(
            Arc::clone(&store),
            Arc::clone(&clock),
            settings.abuse.audit_retention_days,
        ));
        // Only servers purge: a command run without the servers'
        // configuration would delete by a retention of its own.
        audit.spawn_flusher(purpose == Purpose::Serve);
        let caches = Arc::new(cache::Caches::new(
            settings.sessions.cache_ttl,
            Arc::clone(&api_calls),
            Arc::clone(&limiter),
        ));
        let sink: Arc<dyn NoticeSink> = caches.clone();
        notices.subscribe(Arc::downgrade(&sink));
        Ok(Self {
            limiter,
            limiter_names,
            session_budgets: crate::limits::memory::MemoryLimiter::new(),
            spent_chains: std::sync::Mutex::new(std::collections::HashMap::new()),
            audit,
            hasher: PasswordHasher::start(&settings.hashing, metrics.hashing())?,
            api_calls,
            tokens: AccessTokens::new(ring, settings.tokens.clone()),
            caches,
            notices,
            unsent_notices: std::sync::Mutex::new((None, 0)),
            keys_loaded_at: std::sync::atomic::AtomicI64::new(clock.now()),
            purpose,
            draining: std::sync::atomic::AtomicBool::new(false),
            metrics,
            live_sessions_read_at: tokio::sync::Mutex::new(None),
            readiness_check: std::sync::Mutex::new(None),
            failure_writes: Arc::new(tokio::sync::Semaphore::new(login::FAILURE_WRITES_DETACHED)),
            store,
            clock,
            settings,
        })
    }

    /// The settings the core runs with.
    pub fn settings(&self) -> &CoreSettings {
        &self.settings
    }

    /// The JWKS document.
    pub fn jwks(&self) -> std::sync::Arc<serde_json::Value> {
        self.tokens.jwks()
    }

    /// Writes pending API-call counts to the store now (they are otherwise
    /// written every second); call before shutting down.
    pub async fn flush_api_calls(&self) -> Result<()> {
        self.api_calls.flush().await
    }

    /// Writes buffered audit events now (they are otherwise written every
    /// 250 ms); call before shutting down.
    pub async fn flush_audit(&self) -> Result<()> {
        self.audit.flush().await
    }

    /// Deletes audit events older than the retention now (otherwise hourly).
    pub async fn purge_audit(&self) -> Result<u64> {
        self.audit.purge().await
    }

    /// Audit events matching `query`, newest first (this node's buffered
    /// ones written first, so that they are included).
    pub async fn audit_events(
        &self,
        query: &crate::store::AuditQuery,
    ) -> Result<Vec<crate::store::AuditEvent>> {
        self.audit.flush().await?;
        Ok(self.store.list_audit_events(query).await?)
    }

    /// Whether this node uses its caches (it hears every other node's
    /// notices); false while a notice subscription is lost.
    pub fn caches_trusted(&self) -> bool {
        self.caches.trusted()
    }

    /// Marks the node as stopping: readiness says no from now on.
    pub fn start_draining(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether the node can serve: each part (`database`, `redis` when
    /// configured, `shutdown`) with `Err(why)` when it cannot, each checked
    /// within `timeout`.
    ///
    /// Readiness is public and may be asked for by anyone, as often as
    /// they like: one check runs at a time, and the probes that arrive
    /// while it runs take its answer, so that a flood of probes holds at
    /// most one of the pool's connections. No answer is older than the
    /// probe that gets it, but for the duration of the check it shares.
    ///
    /// The check runs in a task of its own: a probe that goes away (a
    /// closed connection, a reset HTTP/2 stream) leaves it running for the
    /// others, instead of letting the next probe start another.
    pub async fn readiness(&self, timeout: std::time::Duration) -> Checks {
        let mut answer = {
            let mut running = self
                .readiness_check
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match &*running {
                // Not yet answered: it is this probe's too.
                Some(check) if check.borrow().is_none() => check.clone(),
                _ => {
                    let (answer, check) = tokio::sync::watch::channel(None);
                    let (store, limiter) = (Arc::clone(&self.store), Arc::clone(&self.limiter));
                    tokio::spawn(async move {
                        answer
                            .send_replace(Some(check_readiness(&*store, &*limiter, timeout).await));
                    });
                    *running = Some(check.clone());
                    check
                }
            }
        };
        let mut checks = match answer.wait_for(Option::is_some).await {
            Ok(checks) => checks.clone().unwrap_or_default(),
            // The task ended without an answer (it panicked): the checks
            // could not run.
            Err(_) => vec![("database", Err("the check failed".to_owned()))],
        };
        if self.draining.load(std::sync::atomic::Ordering::Acquire) {
            checks.push(("shutdown", Err("the server is stopping".into())));
        }
        checks
    }

    /// This node's metrics.
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    /// The metrics in the Prometheus text format (OpenMetrics when
    /// `open_metrics`), with the gauges that are read rather than counted
    /// brought up to date: the database pool now, the live sessions at
    /// most every 10 s (a count over the sessions table; a scraper, or
    /// anyone who can reach `/metrics`, must not make it run per request).
    pub async fn render_metrics(&self, open_metrics: bool) -> String {
        const LIVE_SESSIONS_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
        if let Some(postgres) = self.store.postgres() {
            let pool = postgres.pool();
            let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX);
            self.metrics
                .set_pool(pool.size().saturating_sub(idle), idle);
        }
        {
            let mut read_at = self.live_sessions_read_at.lock().await;
            if read_at.is_none_or(|at| at.elapsed() >= LIVE_SESSIONS_EVERY) {
                // Once per period whatever comes of it: a count that fails
                // or outlasts its second (a large table, a slow database,
                // where the abandoned statement still holds a connection
                // until the statement timeout) is not started again by
                // every scrape.
                *read_at = Some(std::time::Instant::now());
                let count = tokio::time::timeout(
                    std::time::Duration::from_secs(1),
                    self.store.count_live_sessions(self.now()),
                )
                .await;
                match count {
                    Ok(Ok(count)) => self.metrics.set_live_sessions(count),
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "cannot count the live sessions for /metrics");
                    }
                    Err(_) => tracing::warn!("counting the live sessions for /metrics timed out"),
                }
            }
        }
        self.metrics.render(open_metrics)
    }

    /// The current time from the injected clock.
    pub fn now(&self) -> clock::UnixTime {
        self.clock.now()
    }
}
