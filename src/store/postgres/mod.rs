//! PostgreSQL, for several Sesame nodes on one database.
//!
//! Through sqlx (its `postgres` feature only): a pool of connections per
//! node, statements prepared once per connection, TLS through rustls when the
//! URL asks for it (`sslmode=require`, `verify-ca`, `verify-full`). Every
//! connection runs with the configured `statement_timeout`, so a stuck query
//! fails instead of holding a request.
//!
//! Concurrency between nodes is settled by PostgreSQL's row locks under its
//! default READ COMMITTED isolation: every operation that must be atomic
//! (login bookkeeping with a single-platform replacement, refresh rotation)
//! first locks the one row it hinges on, and READ COMMITTED re-reads the
//! rows of each later statement after the lock is granted. So no
//! transaction ever has to be retried, which SERIALIZABLE would demand of
//! the loser of every race. Each place says how.
//!
//! Everything specific to PostgreSQL (SQL dialect, error codes) stays here.

mod accounts;
mod audit;
mod keys;
mod migrate;
pub mod notify;
mod oauth;
mod roles;
mod rotations;
mod sessions;
#[doc(hidden)]
pub mod testing;
mod transfer;

use std::str::FromStr;
use std::sync::Arc;

use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};

use super::{DatabaseSettings, StoreError, StoreResult};

/// The PostgreSQL store: a connection pool.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    rotations: rotations::Rotations,
    /// `connect_timeout` + `statement_timeout`: past it, a connection that
    /// has not answered is silent (see [`PostgresStore::within`]).
    patience: std::time::Duration,
}

impl PostgresStore {
    /// Connects to the server named by `settings.url`, and runs pending
    /// migrations (under an advisory lock, so nodes starting together are
    /// safe) or refuses a schema that is behind, as `migrate` says.
    pub async fn open(
        settings: &DatabaseSettings,
        migrate: crate::store::Migrate,
    ) -> StoreResult<Self> {
        let options = connect_options(settings)?;
        // A live server ends any statement within statement_timeout and
        // answers a ping after it: a connection still silent past both is
        // given up.
        let patience = settings.connect_timeout + settings.statement_timeout;
        let pool = PgPoolOptions::new()
            .max_connections(settings.pool_size)
            .min_connections(0)
            .acquire_timeout(settings.connect_timeout)
            .idle_timeout(Some(std::time::Duration::from_secs(300)))
            // No ping before every use (a round trip each): a broken
            // connection fails its statement and is replaced.
            .test_before_acquire(false)
            // A released connection is pinged before it goes back to the
            // pool (sqlx's own check, which waits as long as the kernel
            // does). A server gone silent (a host powered off, a network
            // cut, a failed-over primary whose address moved) answers
            // nothing and closes nothing: the operating system gives up on
            // such a connection only after some 15 minutes of
            // retransmissions, and until then each one would hold its slot
            // of the pool, which fills up after a few requests. So a
            // connection that does not answer a ping within
            // `statement_timeout` + `connect_timeout` (a statement whose
            // request gave up on it finishes first) is dropped and its
            // slot freed: requests reach the new server as soon as it
            // answers. The cost is one more round trip per release, after
            // the answer has gone out. sqlx's own ping still follows this
            // hook, unbounded (sqlx-core 0.8.6, Floating::return_to_pool;
            // upstream transact-rs/sqlx#4349): a server going silent in
            // the moment between the two pings holds that one slot until
            // the kernel gives up. Nothing here can bound it; the README
            // tells operators to size the pool with a slot to spare.
            .after_release(move |connection, _| {
                Box::pin(async move {
                    match tokio::time::timeout(patience, sqlx::Connection::ping(connection)).await {
                        Ok(answered) => answered.map(|()| true),
                        Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "no answer to a ping within statement_timeout + connect_timeout",
                        ))),
                    }
                })
            })
            .connect_with(options)
            .await
            .map_err(db_error)?;
        migrate::run(&pool, migrate).await?;
        Ok(Self {
            rotations: rotations::Rotations::start(pool.clone(), patience),
            pool,
            patience,
        })
    }

    /// Runs a statement that may have no request around it, giving up
    /// after twice the patience: the audit and API-call flushers' writes,
    /// purges, the key reloader's read and the key rotation's writes, the
    /// failure counts and lockouts written after a login's answer. A
    /// request's statements end with the request (`http.request_timeout`);
    /// a background task has none, and one statement on a connection to a
    /// server gone silent would otherwise wait as long as the kernel does
    /// (some 15 minutes), holding its slot of the pool and, for a flusher,
    /// every later flush. Given up, the connection is pinged on its release
    /// and dropped, and a flusher keeps its batch for the next flush.
    async fn within<T>(
        &self,
        write: impl std::future::Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        bounded(self.patience, write)
            .await
            .unwrap_or_else(|| Err(StoreError::Unavailable(GAVE_UP.into())))
    }

    /// Checks the URL and settings as [`PostgresStore::open`] reads them,
    /// connecting to nothing.
    pub fn check_url(settings: &DatabaseSettings) -> StoreResult<()> {
        connect_options(settings).map(drop)
    }

    /// The pool, for the notice listener.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Gives the store the core's clock, by which group-committed refresh
    /// rotations are dated when their batch is sent (once; later calls are
    /// ignored).
    pub fn set_clock(&self, clock: Arc<dyn crate::clock::Clock>) {
        self.rotations.set_clock(clock);
    }
}

/// Why a bounded statement ended ([`PostgresStore::within`]).
const GAVE_UP: &str = "no answer within twice statement_timeout + connect_timeout";

/// `work`, or `None` once twice `patience` has passed without its end.
async fn bounded<T>(
    patience: std::time::Duration,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::time::timeout(2 * patience, work).await.ok()
}

/// Connection options from the URL, with Sesame's session settings.
fn connect_options(settings: &DatabaseSettings) -> StoreResult<PgConnectOptions> {
    let mut options = PgConnectOptions::from_str(&settings.url)
        // The parse error may quote the URL, which may carry a password.
        .map_err(|_| StoreError::Database("database_url is not a valid PostgreSQL URL".into()))?;
    // Without an `sslmode`, sqlx (like libpq) prefers TLS whenever the
    // server offers it. Over loopback or a Unix socket that encrypts what
    // never leaves the machine, at a price: a fifth of the database's CPU
    // per login on this project's benchmark machine (bench/README.md). So
    // there the default is plain text; `sslmode` in the URL or `PGSSLMODE`
    // still decides when given.
    if !names_ssl_mode(&settings.url)
        && std::env::var_os("PGSSLMODE").is_none()
        && is_local(&options)
    {
        options = options.ssl_mode(PgSslMode::Disable);
    }
    let timeout_ms = settings.statement_timeout.as_millis().to_string();
    // A node that vanishes between two statements of a transaction (power
    // lost, cut off) would leave its locks (an account's row, the
    // administrators' lock) held until the server's TCP keepalive gives up,
    // hours later: the server ends such a transaction itself. Between two
    // statements of Sesame's there is only the node's own work.
    let idle_ms = settings
        .statement_timeout
        .max(std::time::Duration::from_secs(30))
        .as_millis()
        .to_string();
    Ok(options
        .application_name("sesame")
        // Every statement of Sesame's is an index lookup or an index range.
        // Statistics of a young or fast-growing table (refresh_tokens grows
        // by every refresh) make PostgreSQL's cached generic plans scan
        // tables that have long outgrown them: refresh throughput fell from
        // 5.8k/s to 1.4k/s within a 20-second benchmark. So scans are only
        // the last resort on Sesame's connections, whatever the statistics.
        .options([
            ("statement_timeout", timeout_ms.as_str()),
            ("idle_in_transaction_session_timeout", idle_ms.as_str()),
            ("enable_seqscan", "off"),
        ])
        // Statement texts carry no secrets, but at debug level they would
        // drown everything else; store latency belongs in metrics.
        .disable_statement_logging())
}

/// Whether the URL's query sets `sslmode` (sqlx also reads `ssl-mode`).
fn names_ssl_mode(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|url| {
        url.query_pairs()
            .any(|(key, _)| key == "sslmode" || key == "ssl-mode")
    })
}

/// Whether the server is on this machine: a Unix socket, `localhost` or a
/// loopback address.
fn is_local(options: &PgConnectOptions) -> bool {
    let host = options.get_host();
    options.get_socket().is_some()
        || host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Maps a database error: unique violations on the account's identifying
/// columns become [`StoreError::Conflict`], undecodable values
/// [`StoreError::Corrupt`], the rest [`StoreError::Database`].
fn db_error(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Database(database) if database.is_unique_violation() => {
            match database.constraint() {
                Some("accounts_username_key") => StoreError::Conflict("username"),
                Some("accounts_email_key") => StoreError::Conflict("email"),
                Some("accounts_mobile") => StoreError::Conflict("mobile"),
                _ => StoreError::Database(error.to_string()),
            }
        }
        sqlx::Error::ColumnDecode { index, .. } => StoreError::Corrupt(index.clone()),
        sqlx::Error::Decode(cause) => StoreError::Corrupt(cause.to_string()),
        sqlx::Error::PoolTimedOut => StoreError::Unavailable(
            "no database connection free within database.connect_timeout".into(),
        ),
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolClosed => {
            StoreError::Unavailable(error.to_string())
        }
        // Class 08: connection exceptions; 53300: too many connections;
        // 57014: statement timeout; 57P01-03: server shutting down or
        // starting; 40001, 40P01: a serialization failure or deadlock, worth
        // a retry; 25006: a read-only server (a standby after a failover);
        // 25P03: a transaction ended by the server after the node left it
        // idle past idle_in_transaction_session_timeout (a frozen node);
        // 23503: a row referring to one deleted meanwhile (a role, a
        // session), a race with another request that a retry answers
        // cleanly.
        sqlx::Error::Database(database)
            if database.code().is_some_and(|code| {
                code.starts_with("08")
                    || matches!(
                        &*code,
                        "53300"
                            | "57014"
                            | "57P01"
                            | "57P02"
                            | "57P03"
                            | "40001"
                            | "40P01"
                            | "25006"
                            | "25P03"
                            | "23503"
                    )
            }) =>
        {
            StoreError::Unavailable(error.to_string())
        }

        _ => StoreError::Database(error.to_string()),
    }
}

/// Times a transaction that PostgreSQL ended as a deadlock is run again.
const DEADLOCK_RETRIES: u32 = 3;

/// Whether PostgreSQL ended the statement's transaction as a deadlock.
fn is_deadlock(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.code().as_deref() == Some("40P01"))
}

/// A stored value that Sesame never writes.
fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::PostgresStore;
    use super::testing::TempDatabase;
    use crate::store::{DatabaseSettings, conformance};

    /// A fresh, empty database, or `None` (printing why) when no server is
    /// reachable and this is not CI; on CI that is a failure.
    async fn database() -> Option<TempDatabase> {
        TempDatabase::create_or_skip().await
    }

    /// A store on a fresh database (see [`database`]).
    async fn store() -> Option<(TempDatabase, Arc<PostgresStore>)> {
        let database = database().await?;
        let store = PostgresStore::open(
            &DatabaseSettings::for_url(&database.url),
            crate::store::Migrate::Apply,
        )
        .await
        .unwrap();
        Some((database, Arc::new(store)))
    }

    /// A page reads the account's live sessions in the order of an index
    /// built for it (migration 0008, built concurrently and valid), not by
    /// sorting all of them. (Sequential scans and sorts are priced out, as
    /// on a large table; on an empty one either would do.)
    #[tokio::test]
    async fn a_page_of_sessions_is_read_in_index_order() {
        let Some((_db, store)) = store().await else {
            return;
        };
        let mut conn = store.pool().acquire().await.unwrap();
        let valid: bool = sqlx::query_scalar(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'sessions_account_live'::regclass",
        )
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        assert!(valid);
        sqlx::raw_sql("SET enable_seqscan = off; SET enable_sort = off")
            .execute(&mut *conn)
            .await
            .unwrap();
        let plan: Vec<String> = sqlx::query_scalar(&format!(
            "EXPLAIN {}",
            super::sessions::PAGE_OF_LIVE_SESSIONS
        ))
        .bind(1_i64)
        .bind(0_i64)
        .bind(0_i64)
        .bind("")
        .bind(50_i64)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        let plan = plan.join("\n");
        assert!(plan.contains("sessions_account_live"), "{plan}");
        assert!(!plan.contains("Sort"), "{plan}");
        conn.close_on_drop();
    }

    #[tokio::test]
    async fn verifier_upgrades_never_overwrite_a_new_password() {
        let Some((_db, store)) = store().await else {
            return;
        };
        conformance::verifier_upgrades_never_overwrite_a_new_password(store).await;
    }

    #[tokio::test]
    async fn logins_and_lockouts_never_undo_a_disabling() {
        let Some((_db, store)) = store().await else {
            return;
        };
        conformance::logins_and_lockouts_never_undo_a_disabling(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_rotations_of_one_token_have_exactly_one_winner() {
        let Some((_db, store)) = store().await else {
            return;
        };
        conformance::concurrent_rotations_have_one_winner(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_read_and_rotate_in_one_step_has_one_winner() {
        let Some((_db, store)) = store().await else {
            return;
        };
        conformance::concurrent_find_and_rotate_has_one_winner(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn independent_rotations_in_one_batch_all_win() {
        let Some((_db, store)) = store().await else {
            return;
        };
        conformance::independent_rotations_all_win(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_single_platform_logins_leave_one_live_session() {
        let Some((_db, store)) = store().await else {
            return;
        };
        conformance::concurrent_single_platform_logins(store).await;
    }

    #[tokio::test]
    async fn live_sessions_come_in_pages() {
        let Some((_db, store)) = store().await else {
            return;
        };
        conformance::live_sessions_in_pages(store).await;
    }

    #[tokio::test]
    async fn known_clients_are_remembered_newest_first() {
        let Some((_db, store)) = store().await else {
            return;
        };
        conformance::known_clients_newest_first(store).await;
    }

    #[tokio::test]
    async fn purge_removes_only_what_ended_long_enough_ago() {
        let Some((_db, store)) = store().await else {
            return;
        };
        conformance::purge_removes_only_what_ended(store).await;
    }

    #[tokio::test]
    async fn api_calls_are_counted_per_period() {
        let Some((_db, store)) = store().await else {
            return;
        };
        conformance::api_calls_count_per_period(store).await;
    }

    #[tokio::test]
    async fn roles_never_leave_the_deployment_without_an_administrator() {
        let Some((_db, store)) = store().await else {
            return;
        };
        conformance::roles_and_the_last_administrator(store).await;
    }

    #[tokio::test]
    async fn a_new_password_ends_sessions_with_it() {
        let Some((_db, store)) = store().await else {
            return;
        };
        conformance::a_new_password_ends_sessions_with_it(store).await;
    }

    /// A node's calls whose flush is still writing (its update waiting on
    /// the account's row, which another node's flush holds) are not lost
    /// to a read of the count meanwhile: the quota holds on one node.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_count_read_during_a_flush_keeps_the_calls_being_written() {
        use crate::core::quota::ApiCalls;
        use crate::store::{AccountChange, AccountStore, QuotaPeriod};
        let Some((_db, store)) = store().await else {
            return;
        };
        // Without periods, and on a day's first flush (the store still
        // holds an earlier day's count): the same.
        for (name, period, day) in [
            ("lifetime", QuotaPeriod::None, 0),
            ("daily", QuotaPeriod::Day, 86_400 * 10),
        ] {
            let id = conformance::account_for_tests(&*store, name).await;
            let change = AccountChange {
                max_api_calls: Some(10),
                ..AccountChange::default()
            };
            store.change_account(id, &change, 0).await.unwrap();
            let calls = Arc::new(ApiCalls::new(
                store.clone(),
                60,
                period,
                Arc::new(crate::metrics::Metrics::new()),
            ));
            for _ in 0..9 {
                calls.admit(id, day).await.unwrap();
            }
            // Another node's flush holds the row: this one's waits behind it.
            let mut other = store.pool().begin().await.unwrap();
            sqlx::query("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE")
                .bind(id)
                .execute(&mut *other)
                .await
                .unwrap();
            let flush = tokio::spawn({
                let calls = Arc::clone(&calls);
                async move { calls.flush().await }
            });
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            assert!(!flush.is_finished(), "the flush waits on the row");
            // A second later the count is read again (it is older than a
            // flush interval), without the 9 being written.
            let mut admitted = 0;
            for _ in 0..5 {
                if calls.admit(id, day + 1).await.is_ok() {
                    admitted += 1;
                }
            }
            assert_eq!(admitted, 1, "{name}: 9 + 1 calls for a quota of 10");
            other.commit().await.unwrap();
            flush.await.unwrap().unwrap();
            calls.flush().await.unwrap();
            let usage = store.api_usage(id).await.unwrap().unwrap();
            assert_eq!(usage.count, 10, "{name}");
        }
    }

    /// A node whose flushes fail (its update times out on a row another
    /// node holds) still reads the count the other nodes wrote, once a
    /// flush interval, instead of admitting against its own alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_whose_flushes_fail_still_learns_the_others_counts() {
        use crate::core::quota::ApiCalls;
        use crate::store::{AccountChange, AccountStore, QuotaPeriod};
        let Some(database) = database().await else {
            return;
        };
        let mut settings = DatabaseSettings::for_url(&database.url);
        settings.statement_timeout = std::time::Duration::from_millis(300);
        let store = Arc::new(
            PostgresStore::open(&settings, crate::store::Migrate::Apply)
                .await
                .unwrap(),
        );
        let id = conformance::account_for_tests(&*store, "counted").await;
        let change = AccountChange {
            max_api_calls: Some(10),
            ..AccountChange::default()
        };
        store.change_account(id, &change, 0).await.unwrap();
        let node = || {
            ApiCalls::new(
                store.clone(),
                60,
                QuotaPeriod::None,
                Arc::new(crate::metrics::Metrics::new()),
            )
        };
        let (this, other) = (node(), node());
        for _ in 0..2 {
            this.admit(id, 0).await.unwrap();
        }
        for _ in 0..7 {
            other.admit(id, 0).await.unwrap();
        }
        other.flush().await.unwrap();
        // This node's flush times out on the row someone holds.
        let mut holder = store.pool().begin().await.unwrap();
        sqlx::query("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE")
            .bind(id)
            .execute(&mut *holder)
            .await
            .unwrap();
        assert!(this.flush().await.is_err());
        holder.rollback().await.unwrap();
        let mut admitted = 0;
        for _ in 0..5 {
            if this.admit(id, 1).await.is_ok() {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 1, "7 + 2 + 1 calls for a quota of 10");
        this.flush().await.unwrap();
        assert_eq!(store.api_usage(id).await.unwrap().unwrap().count, 10);
    }

    /// An id the sequence hands out that an import already wrote (with the
    /// account's own id, before it moved the sequence on) is skipped: the
    /// new account gets the next one, never a 500.
    #[tokio::test]
    async fn a_new_account_skips_ids_an_import_wrote() {
        let Some((_db, store)) = store().await else {
            return;
        };
        let first = conformance::account_for_tests(&*store, "imported").await;
        sqlx::query("SELECT setval(pg_get_serial_sequence('accounts', 'id'), $1, false)")
            .bind(first)
            .execute(store.pool())
            .await
            .unwrap();
        let second = conformance::account_for_tests(&*store, "created").await;
        assert_eq!(second, first + 1);
    }

    /// With the core's clock, a rotation is dated when its batch is sent
    /// (a retry after a stall is judged from then, not from the request);
    /// its session's expiry is judged by the caller's time, as the caller
    /// judged it.
    #[tokio::test]
    async fn a_rotation_is_dated_when_its_batch_is_sent() {
        use crate::store::{SessionStore, SuccessorHashes};
        let Some((_db, store)) = store().await else {
            return;
        };
        conformance::sessions_for_tests(&*store, 1).await;
        // The session (made at 0) expires at 1000; the batch is sent at 1500.
        store.set_clock(Arc::new(crate::clock::ManualClock::new(1500)));
        let successors = SuccessorHashes {
            jwt: [50; 32],
            opaque: [51; 32],
        };
        let (_, _, rotated) = store
            .find_and_rotate_refresh_token(&[0; 32], &[9], &successors, 900)
            .await
            .unwrap()
            .unwrap();
        assert!(rotated, "live at the caller's time");
        let parent = store.find_refresh_token(&[0; 32]).await.unwrap().unwrap();
        assert_eq!(parent.rotated_at, Some(1500));
        let successor = store.find_refresh_token(&[50; 32]).await.unwrap().unwrap();
        assert_eq!(successor.issued_at, 1500);
    }

    /// Every statement that may run with no request around it (flushers,
    /// purges, key rotation, what a login writes after its answer, notices)
    /// gives up on a server gone silent after twice statement_timeout +
    /// connect_timeout, and its connection is dropped: once the server
    /// answers again the pool serves through new connections, without
    /// waiting for the kernel to give up on the silent ones.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn statements_without_a_request_give_up_on_a_silent_server() {
        use std::str::FromStr;
        use std::time::Duration;

        use crate::notices::{Notice, Notices};
        use crate::store::{
            AccountStore, AuditEvent, AuditStore, KeyStore, PurgeCutoffs, SessionStore, SigningKey,
        };
        use crate::testing::{Proxy, via};

        const SLOTS: u32 = 10;
        let Some(database) = database().await else {
            return;
        };
        let server = sqlx::postgres::PgConnectOptions::from_str(&database.url).unwrap();
        let proxy = Proxy::start(
            "127.0.0.1:0",
            &format!("{}:{}", server.get_host(), server.get_port()),
        )
        .await;
        let mut settings = DatabaseSettings::for_url(via(&database.url, proxy.port));
        settings.pool_size = SLOTS;
        settings.connect_timeout = Duration::from_millis(300);
        settings.statement_timeout = Duration::from_millis(300);
        let store = PostgresStore::open(&settings, crate::store::Migrate::Apply)
            .await
            .unwrap();
        let notices = super::notify::PgNotices::new(&store);
        // Every slot holds an open connection, idle, when the server goes
        // silent (between exchanges: see tests/api/outage.rs on sqlx's
        // release ping).
        let busy: Vec<_> = (0..SLOTS)
            .map(|_| sqlx::query("SELECT pg_sleep(0.2)").execute(store.pool()))
            .collect();
        for done in futures_util::future::join_all(busy).await {
            done.unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while store.pool().num_idle() < SLOTS as usize {
            assert!(Instant::now() < deadline, "the connections never came back");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Their release pings are answered too: nothing in flight.
        tokio::time::sleep(Duration::from_millis(200)).await;
        proxy.freeze();

        let key = SigningKey {
            kid: "k".into(),
            algorithm: "EdDSA".into(),
            private_der: vec![1],
            public_jwk: "{}".into(),
            created_at: 0,
            signs_from: 0,
        };
        let event = AuditEvent {
            id: 0,
            at: 0,
            event: "login".into(),
            outcome: "ok".into(),
            face: "native".into(),
            account_id: None,
            username: None,
            target_id: None,
            ip: None,
            user_agent: None,
            detail: None,
        };
        let cutoffs = PurgeCutoffs {
            ended_before: 0,
            spent_before: 0,
            expired_before: 0,
        };
        // Each: whether it failed, and when.
        async fn timed<T, E>(work: impl Future<Output = Result<T, E>>) -> (bool, Duration) {
            let started = Instant::now();
            let failed = work.await.is_err();
            (failed, started.elapsed())
        }
        let all = async {
            tokio::join!(
                timed(store.purge(&cutoffs, 10)),
                timed(store.add_api_calls(&[(1, 1, 0)])),
                timed(store.record_login_failure(1, true)),
                timed(store.set_locked(1, true, 0)),
                timed(store.insert_signing_key(&key)),
                timed(store.delete_signing_key("k")),
                timed(store.signing_keys()),
                timed(store.insert_audit_events(std::slice::from_ref(&event))),
                timed(store.purge_audit_events(0, 10)),
                timed(notices.publish(&Notice::AccountChanged(1))),
            )
        };
        let given_up = tokio::time::timeout(Duration::from_secs(20), all)
            .await
            .expect("every statement gave up");
        let given_up = [
            given_up.0, given_up.1, given_up.2, given_up.3, given_up.4, given_up.5, given_up.6,
            given_up.7, given_up.8, given_up.9,
        ];
        for (i, (failed, after)) in given_up.into_iter().enumerate() {
            assert!(failed, "statement {i} answered by a silent server?");
            // Ended by the bound (twice 0.6 s), not by waiting for a new
            // connection (0.3 s): it ran on a silent one.
            assert!(
                (Duration::from_millis(1100)..Duration::from_secs(5)).contains(&after),
                "statement {i} gave up after {after:?}"
            );
        }

        // The silent connections were dropped: once the server answers,
        // a full pool's worth of work gets through.
        proxy.thaw();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let again: Vec<_> = (0..SLOTS)
                .map(|_| sqlx::query("SELECT pg_sleep(0.05)").execute(store.pool()))
                .collect();
            let answered = futures_util::future::join_all(again).await;
            if answered.iter().all(Result::is_ok) {
                break;
            }
            assert!(Instant::now() < deadline, "the pool never recovered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The server ends a transaction its node left idle (a node that
    /// vanished mid-transaction), so its locks are not held for hours.
    #[tokio::test]
    async fn a_transaction_left_idle_is_ended_by_the_server() {
        let Some((_db, store)) = store().await else {
            return;
        };
        let (value,): (String,) = sqlx::query_as("SHOW idle_in_transaction_session_timeout")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(value, "30s");
    }

    /// A rotation queued behind a batch that stalls (here on a row another
    /// transaction holds), whose caller gives up meanwhile, is not run
    /// once the queue moves: nobody could receive its successor, and the
    /// client's retry, later than the reuse grace window, would end its
    /// session as if the token were stolen.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rotation_whose_caller_left_is_not_run() {
        use crate::store::{SessionStore, SuccessorHashes};
        let Some((_db, store)) = store().await else {
            return;
        };
        conformance::sessions_for_tests(&*store, 3).await;
        let successors = |b: u8| SuccessorHashes {
            jwt: [b; 32],
            opaque: [b + 1; 32],
        };
        let mut holder = store.pool().begin().await.unwrap();
        sqlx::query("SELECT 1 FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE")
            .bind(&[0u8; 32][..])
            .execute(&mut *holder)
            .await
            .unwrap();
        let stalled = tokio::spawn({
            let store = Arc::clone(&store);
            async move {
                store
                    .find_and_rotate_refresh_token(&[0; 32], &[9], &successors(50), 10)
                    .await
            }
        });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!stalled.is_finished(), "the batch waits on the row");
        let gave_up = tokio::time::timeout(
            std::time::Duration::from_millis(300),
            store.find_and_rotate_refresh_token(&[1; 32], &[8], &successors(60), 10),
        )
        .await;
        assert!(gave_up.is_err(), "queued behind the stalled batch");
        holder.rollback().await.unwrap();
        assert!(stalled.await.unwrap().unwrap().unwrap().2, "rotated");
        // The queue has moved past the abandoned rotation once a later one
        // is answered.
        let later = store
            .find_and_rotate_refresh_token(&[2; 32], &[7], &successors(70), 10)
            .await
            .unwrap()
            .unwrap();
        assert!(later.2);
        let abandoned = store.find_refresh_token(&[1; 32]).await.unwrap().unwrap();
        assert_eq!(abandoned.rotated_at, None, "not rotated for nobody");
        assert!(store.find_refresh_token(&[60; 32]).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn account_changes_are_all_or_nothing() {
        let Some((_db, store)) = store().await else {
            return;
        };
        conformance::account_changes_are_all_or_nothing(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn administrators_disabling_each_other_at_once_leave_one() {
        let Some((_db, store)) = store().await else {
            return;
        };
        conformance::concurrent_demotions_leave_an_administrator(store).await;
    }

    #[tokio::test]
    async fn oauth_clients_are_stored_as_written() {
        let Some((_db, store)) = store().await else {
            return;
        };
        conformance::oauth_clients(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_code_exchanged_at_once_eight_times_opens_one_session() {
        let Some((_db, store)) = store().await else {
            return;
        };
        conformance::codes_are_redeemed_once(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ending_all_sessions_while_a_code_is_exchanged_leaves_none_live() {
        let Some((_db, store)) = store().await else {
            return;
        };
        conformance::ending_all_sessions_races_a_code_exchange(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_opaque_token_replacements_leave_one() {
        let Some((_db, store)) = store().await else {
            return;
        };
        conformance::one_opaque_token_per_session(store).await;
    }

    /// Crosses `start`'s work with a refresh rotation of the session `s0`
    /// of [`conformance::sessions_for_tests`], by hand: the rotation takes
    /// its token's row, `start` runs until it waits on a lock (holding the
    /// session's row), then the rotation's successor waits for the
    /// session's row: a deadlock. The rotation waits longer before it
    /// checks, so PostgreSQL ends `start`'s statement. Returns what `start`
    /// came to.
    async fn crossed_with_a_rotation<T: Send + 'static>(
        db: &TempDatabase,
        store: &PostgresStore,
        start: impl FnOnce() -> tokio::task::JoinHandle<T>,
    ) -> T {
        use sqlx::Connection;
        let mut rotation = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::query("SET deadlock_timeout = '20s'")
            .execute(&mut rotation)
            .await
            .unwrap();
        sqlx::query("BEGIN").execute(&mut rotation).await.unwrap();
        sqlx::query("UPDATE refresh_tokens SET rotated_at = 5 WHERE token_hash = $1")
            .bind(&[0u8; 32][..])
            .execute(&mut rotation)
            .await
            .unwrap();
        let started = start();
        let waiting = async {
            loop {
                let waits: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                     AND datname = current_database()",
                )
                .fetch_one(store.pool())
                .await
                .unwrap();
                if waits > 0 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .unwrap();
        // The successor's foreign key now waits for the session's row: a
        // deadlock, which `start`'s side finds (after its 1 s).
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, session_id, issued_at) VALUES ($1, 's0', 5)",
        )
        .bind(&[1u8; 32][..])
        .execute(&mut rotation)
        .await
        .unwrap();
        sqlx::query("COMMIT").execute(&mut rotation).await.unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(15), started)
            .await
            .unwrap()
            .unwrap()
    }

    /// A refresh rotation locks its token's row and then its session's;
    /// deleting the account locks the session's and then the token's. When
    /// the two meet in the middle PostgreSQL ends one as a deadlock: here
    /// the deletion, which runs again and succeeds once the rotation has
    /// committed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deleting_an_account_that_deadlocks_with_a_rotation_runs_again() {
        let Some((db, store)) = store().await else {
            return;
        };
        let account = conformance::sessions_for_tests(&*store, 1).await;
        let deleted = crossed_with_a_rotation(&db, &store, || {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                crate::store::AccountStore::delete_account(&*store, account).await
            })
        })
        .await;
        assert!(matches!(deleted, Ok(true)), "{deleted:?}");
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM refresh_tokens")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(left, 0);
    }

    /// The same crossing with the purge in the deletion's place: the
    /// session has ended, the purge picks it and waits for the token a late
    /// rotation holds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_purge_that_deadlocks_with_a_rotation_runs_again() {
        let Some((db, store)) = store().await else {
            return;
        };
        // One session, expiring at 1000, with one refresh token.
        conformance::sessions_for_tests(&*store, 1).await;
        let cutoffs = crate::store::PurgeCutoffs {
            ended_before: 2000,
            spent_before: 0,
            expired_before: 0,
        };
        let purged = crossed_with_a_rotation(&db, &store, || {
            let store = Arc::clone(&store);
            tokio::spawn(
                async move { crate::store::SessionStore::purge(&*store, &cutoffs, 10).await },
            )
        })
        .await
        .expect("the purge runs again instead of failing");
        // Run again at once, it may find the session still locked by the
        // rotation's commit and skip it: the next round takes it.
        let next = crate::store::SessionStore::purge(&*store, &cutoffs, 10)
            .await
            .unwrap();
        assert_eq!(purged.sessions + next.sessions, 1);
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM refresh_tokens")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(
            left, 0,
            "the session's tokens, the successor too, went with it"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deployment_secret_is_made_once() {
        let Some((_db, store)) = store().await else {
            return;
        };
        conformance::deployment_secrets_are_made_once(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nodes_starting_together_migrate_once() {
        let Some((db, _store)) = store().await else {
            return;
        };
        // Four "nodes" start at once, on a migrated and on a fresh database.
        // (Polled together on this task: sqlx's futures are not `Send` for
        // every lifetime the spawner demands.)
        let fresh = TempDatabase::create().await.unwrap();
        for url in [&db.url, &fresh.url] {
            let settings = DatabaseSettings::for_url(url);
            let (a, b, c, d) = tokio::join!(
                PostgresStore::open(&settings, crate::store::Migrate::Apply),
                PostgresStore::open(&settings, crate::store::Migrate::Apply),
                PostgresStore::open(&settings, crate::store::Migrate::Apply),
                PostgresStore::open(&settings, crate::store::Migrate::Apply),
            );
            for opened in [a, b, c, d] {
                opened.unwrap();
            }
        }
        let store = PostgresStore::open(
            &DatabaseSettings::for_url(&fresh.url),
            crate::store::Migrate::Check,
        )
        .await
        .unwrap();
        let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sesame_migrations")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(applied, super::migrate::LATEST as i64);
    }

    #[test]
    fn loopback_and_sockets_are_local() {
        use super::{is_local, names_ssl_mode};
        let local = |url: &str| is_local(&url.parse().unwrap());
        assert!(local("postgres://postgres@127.0.0.1:5432/test"));
        assert!(local("postgres://postgres@127.8.0.1/test"));
        assert!(local("postgres://postgres@[::1]:5432/test"));
        assert!(local("postgres://postgres@localhost/test"));
        assert!(local("postgres://postgres@LocalHost/test"));
        assert!(local("postgres:///test?host=/var/run/postgresql"));
        assert!(!local("postgres://postgres@db.internal/test"));
        assert!(!local("postgres://postgres@10.0.0.5/test"));
        assert!(!local("postgres://postgres@localhost.example.com/test"));
        assert!(names_ssl_mode("postgres://h/db?sslmode=require"));
        assert!(names_ssl_mode(
            "postgres://h/db?application_name=x&ssl-mode=disable"
        ));
        assert!(!names_ssl_mode("postgres://h/db"));
        assert!(!names_ssl_mode("postgres://h/sslmode?options=sslmode"));
    }

    /// A node that starts while another migrates waits for it, however
    /// long past `statement_timeout` (a migration may rewrite a large table).
    #[tokio::test]
    async fn starting_waits_for_a_migration_longer_than_the_statement_timeout() {
        let Some(fresh) = database().await else {
            return;
        };
        let mut other = <sqlx::PgConnection as sqlx::Connection>::connect(&fresh.url)
            .await
            .unwrap();
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(super::migrate::MIGRATION_LOCK)
            .execute(&mut other)
            .await
            .unwrap();
        let mut settings = DatabaseSettings::for_url(&fresh.url);
        settings.statement_timeout = std::time::Duration::from_millis(200);
        // (Polled together on this task, as above.)
        let ((opened, opened_at), unlocked_at) = tokio::join!(
            async {
                (
                    PostgresStore::open(&settings, crate::store::Migrate::Apply).await,
                    Instant::now(),
                )
            },
            async {
                tokio::time::sleep(std::time::Duration::from_millis(800)).await;
                sqlx::query("SELECT pg_advisory_unlock($1)")
                    .bind(super::migrate::MIGRATION_LOCK)
                    .execute(&mut other)
                    .await
                    .unwrap();
                Instant::now()
            }
        );
        let store = opened.unwrap();
        assert!(opened_at >= unlocked_at, "waited for the other node");
        // The pool's connections keep their timeout.
        let timeout: String = sqlx::query_scalar("SHOW statement_timeout")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(timeout, "200ms");
    }

    #[tokio::test]
    async fn a_schema_behind_is_refused_without_auto_migrate() {
        let Some(fresh) = database().await else {
            return;
        };
        let error = PostgresStore::open(
            &DatabaseSettings::for_url(&fresh.url),
            crate::store::Migrate::Check,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(error.contains("sesame migrate"), "{error}");
    }

    /// Whether the store's connections to `url` are encrypted.
    async fn encrypted(url: String) -> bool {
        let store = PostgresStore::open(
            &DatabaseSettings::for_url(url),
            crate::store::Migrate::Apply,
        )
        .await
        .unwrap();
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(store.pool())
            .await
            .unwrap()
    }

    /// The test server (Debian's default) offers TLS with a self-signed
    /// certificate: `require` and `prefer` encrypt without checking it,
    /// `verify-full` checks it and so refuses, never falling back to plain
    /// text. Without an `sslmode`, a server on this machine is reached in
    /// plain text.
    #[tokio::test]
    async fn the_url_decides_tls() {
        let Some(fresh) = database().await else {
            return;
        };
        let (_, query) = fresh.url.split_once('?').unwrap_or((&fresh.url, ""));
        let separator = if query.is_empty() { '?' } else { '&' };
        for (mode, expected) in [("require", true), ("prefer", true), ("disable", false)] {
            let url = format!("{}{separator}sslmode={mode}", fresh.url);
            assert_eq!(encrypted(url).await, expected, "sslmode={mode}");
        }
        if !query.contains("sslmode") && std::env::var_os("PGSSLMODE").is_none() {
            let options: sqlx::postgres::PgConnectOptions = fresh.url.parse().unwrap();
            assert_eq!(
                super::is_local(&options),
                !encrypted(fresh.url.clone()).await,
                "no sslmode: plain text exactly when the server is local"
            );
        }
        let url = format!("{}{separator}sslmode=verify-full", fresh.url);
        let error = PostgresStore::open(
            &DatabaseSettings::for_url(url),
            crate::store::Migrate::Apply,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(!error.contains("password"), "{error}");
    }
}
