//! The PostgreSQL schema, as numbered migrations compiled into the binary.
//!
//! Applied versions are recorded in `sesame_migrations`. Nodes starting at
//! once all try to migrate: a session-level advisory lock lets one at a
//! time in, and each finds the work done by those before it. Every
//! migration runs in one transaction with its record, so a crash never
//! leaves half of one applied (PostgreSQL's DDL is transactional); except
//! one whose first line is [`OUTSIDE_A_TRANSACTION`] (`CREATE INDEX
//! CONCURRENTLY`, so as not to block the nodes still serving): its
//! statements run one by one, each safe to run again after a crash, and
//! its record after them.

use sqlx::postgres::PgPool;
use sqlx::{Connection, Row};

use super::db_error;
use crate::store::{StoreError, StoreResult};

/// Every migration, in order. Never edit one that has shipped; add the next.
const MIGRATIONS: [(&str, &str); 12] = [
    (
        "init",
        include_str!("../../../migrations/postgres/0001_init.sql"),
    ),
    (
        "record_login",
        include_str!("../../../migrations/postgres/0002_record_login.sql"),
    ),
    (
        "known_clients_on_account",
        include_str!("../../../migrations/postgres/0003_known_clients_on_account.sql"),
    ),
    (
        "quota_period",
        include_str!("../../../migrations/postgres/0004_quota_period.sql"),
    ),
    (
        "oauth",
        include_str!("../../../migrations/postgres/0005_oauth.sql"),
    ),
    (
        "login_refuses_disabled",
        include_str!("../../../migrations/postgres/0006_login_refuses_disabled.sql"),
    ),
    (
        "login_checks_the_password_it_verified",
        include_str!("../../../migrations/postgres/0007_login_checks_the_password_it_verified.sql"),
    ),
    (
        "session_pages",
        include_str!("../../../migrations/postgres/0008_session_pages.sql"),
    ),
    (
        "audit_target",
        include_str!("../../../migrations/postgres/0009_audit_target.sql"),
    ),
    (
        "login_keeps_client_sessions",
        include_str!("../../../migrations/postgres/0010_login_keeps_client_sessions.sql"),
    ),
    (
        "keys_published_ahead",
        include_str!("../../../migrations/postgres/0011_keys_published_ahead.sql"),
    ),
    (
        "deployment_secrets",
        include_str!("../../../migrations/postgres/0012_deployment_secrets.sql"),
    ),
];

/// The first line of a migration whose statements run one by one, outside
/// a transaction (each must be safe to run again).
const OUTSIDE_A_TRANSACTION: &str = "-- sesame: outside a transaction";

/// How many migrations this build knows.
#[cfg(test)]
pub(super) const LATEST: usize = MIGRATIONS.len();

/// The advisory-lock key of migrations ("SESAME" in ASCII).
pub(super) const MIGRATION_LOCK: i64 = 0x5345_5341_4d45;

/// Brings the schema up to date, or checks that it is, as `mode` says.
pub(super) async fn run(pool: &PgPool, mode: crate::store::Migrate) -> StoreResult<()> {
    let mut conn = pool.acquire().await.map_err(db_error)?;
    if mode != crate::store::Migrate::Apply {
        let applied = applied(&mut conn).await?;
        check_not_newer(applied)?;
        if applied == MIGRATIONS.len() {
            return Ok(());
        }
        if !mode.applies(applied) {
            return Err(mode.behind(applied, MIGRATIONS.len()));
        }
        // A new database: set up under the lock, as a server would (others
        // may be starting on it at once).
    }
    // Neither the wait for the lock (another node migrating) nor a
    // migration rewriting a large table is a stuck statement: no
    // `statement_timeout` here. The connection is closed afterwards, never
    // returned to the pool without its timeout.
    conn.close_on_drop();
    sqlx::query("SET statement_timeout = 0")
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    // Tried again once the lock has been let go: a concurrent index build
    // that PostgreSQL ends as a deadlock (a node of an earlier version
    // blocked in `pg_advisory_lock`, see below; that node then finds its
    // own migrations done and goes on), and a migration that gave up
    // waiting for a table's lock (see `LOCK_TIMEOUT`).
    let mut attempt = 1;
    loop {
        lock(&mut conn).await?;
        // Judged again under the lock: a server of an earlier version may
        // have set the database up while this command waited for it.
        let result = match mode {
            crate::store::Migrate::Setup => match applied(&mut conn).await {
                Ok(at) if at > 0 && at < MIGRATIONS.len() => {
                    Err(Pending::Failed(mode.behind(at, MIGRATIONS.len())))
                }
                Ok(_) => apply_pending(&mut conn, MIGRATIONS.len()).await,
                Err(error) => Err(Pending::Failed(error)),
            },
            _ => apply_pending(&mut conn, MIGRATIONS.len()).await,
        };
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *conn)
            .await
            .map_err(db_error);
        match result {
            Err(Pending::Again(message)) if attempt < ATTEMPTS => {
                tracing::warn!(attempt, "{message}; trying again");
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
            Err(Pending::Again(message)) => {
                return Err(StoreError::Database(format!(
                    "{message}, {ATTEMPTS} times; if another transaction holds the table \
                     (pg_stat_activity names it), end it and start again"
                )));
            }
            Err(Pending::Failed(error)) => return Err(error),
            Ok(()) => return unlocked.map(|_| ()),
        }
    }
}

/// How many times a migration ended by a deadlock or its lock timeout is
/// tried (about a minute and a half in all).
const ATTEMPTS: u32 = 20;

/// How long a migration's statement waits for a table's lock (a schema
/// change needs the table to itself) before it gives up and is tried
/// again. Every query of the nodes still serving that touches the table
/// queues behind a waiting schema change: without a bound, one long
/// transaction (a report, an export, a forgotten `psql`) would stop them
/// all for as long as it lasts. A concurrent index build waits without
/// blocking anyone and has no bound.
const LOCK_TIMEOUT: &str = "2s";

/// Takes the migration lock, held by this connection until unlocked (or
/// until it drops): nodes starting together pass one at a time, even to
/// create the table. Waited for by asking again, not in
/// `pg_advisory_lock`: a session blocked in a statement holds a snapshot,
/// which a `CREATE INDEX CONCURRENTLY` run by the node holding the lock
/// would wait for while that session waits for the lock (a deadlock). The
/// wait is said in the log once it has lasted a while.
async fn lock(conn: &mut sqlx::PgConnection) -> StoreResult<()> {
    let started = std::time::Instant::now();
    let mut said = false;
    loop {
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(MIGRATION_LOCK)
            .fetch_one(&mut *conn)
            .await
            .map_err(db_error)?;
        if locked {
            return Ok(());
        }
        if !said && started.elapsed() >= std::time::Duration::from_secs(10) {
            tracing::info!("waiting for another node's database migration to finish");
            said = true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Why pending migrations were not all applied.
#[derive(Debug)]
enum Pending {
    /// PostgreSQL ended a concurrent index build as a deadlock, or a
    /// statement gave up waiting for its lock: worth trying again.
    Again(String),
    /// Anything else.
    Failed(StoreError),
}

impl From<StoreError> for Pending {
    fn from(error: StoreError) -> Self {
        Self::Failed(error)
    }
}

/// The newest applied migration; 0 for a database Sesame never touched.
async fn applied(conn: &mut sqlx::PgConnection) -> StoreResult<usize> {
    let exists: bool = sqlx::query("SELECT to_regclass('sesame_migrations') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await
        .and_then(|row| row.try_get(0))
        .map_err(db_error)?;
    if !exists {
        return Ok(0);
    }
    let version: Option<i64> = sqlx::query("SELECT MAX(version) FROM sesame_migrations")
        .fetch_one(&mut *conn)
        .await
        .and_then(|row| row.try_get(0))
        .map_err(db_error)?;
    usize::try_from(version.unwrap_or(0))
        .map_err(|_| StoreError::Corrupt("negative schema version".into()))
}

fn check_not_newer(applied: usize) -> StoreResult<()> {
    if applied > MIGRATIONS.len() {
        return Err(StoreError::Database(format!(
            "the database has schema version {applied}, newer than this Sesame ({}); \
             use a newer release",
            MIGRATIONS.len()
        )));
    }
    Ok(())
}

/// Applies the migrations after the newest applied one, up to `target`.
async fn apply_pending(conn: &mut sqlx::PgConnection, target: usize) -> Result<(), Pending> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS sesame_migrations (\
         version BIGINT PRIMARY KEY, description TEXT NOT NULL, \
         applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    let applied = applied(conn).await?;
    check_not_newer(applied)?;
    for (index, (description, sql)) in MIGRATIONS.iter().enumerate().take(target).skip(applied) {
        let version = index + 1;
        let failed = |e: sqlx::Error| {
            // Deadlock; lock not available (`lock_timeout`).
            let again = e
                .as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|code| code == "40P01" || code == "55P03");
            let message = format!("migration {version} failed: {}", db_error(e));
            if again {
                Pending::Again(message)
            } else {
                Pending::Failed(StoreError::Database(message))
            }
        };
        let record =
            sqlx::query("INSERT INTO sesame_migrations (version, description) VALUES ($1, $2)")
                .bind(version as i64)
                .bind(*description);
        if sql.starts_with(OUTSIDE_A_TRANSACTION) {
            // One statement per query: several in one simple-protocol
            // query would make one implicit transaction.
            for statement in statements(sql) {
                let timeout = if statement.contains(" CONCURRENTLY ") {
                    "0"
                } else {
                    LOCK_TIMEOUT
                };
                sqlx::raw_sql(&format!("SET lock_timeout = '{timeout}'"))
                    .execute(&mut *conn)
                    .await
                    .map_err(failed)?;
                if let Some(index) = concurrently_built_index(&statement) {
                    drop_if_invalid(conn, index).await.map_err(failed)?;
                }
                sqlx::raw_sql(&statement)
                    .execute(&mut *conn)
                    .await
                    .map_err(failed)?;
            }
            record.execute(&mut *conn).await.map_err(failed)?;
        } else {
            let mut tx = conn.begin().await.map_err(failed)?;
            sqlx::raw_sql(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
            // Several statements in one simple-protocol query.
            sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(failed)?;
            record.execute(&mut *tx).await.map_err(failed)?;
            tx.commit().await.map_err(failed)?;
        }
        tracing::info!(version, description, "applied database migration");
    }
    Ok(())
}

/// The index a `CREATE INDEX CONCURRENTLY IF NOT EXISTS name …` builds.
fn concurrently_built_index(statement: &str) -> Option<&str> {
    let rest = statement.strip_prefix("CREATE INDEX CONCURRENTLY IF NOT EXISTS ")?;
    rest.split_whitespace().next()
}

/// Drops `index` if a concurrent build that was cut short left it invalid
/// (`IF NOT EXISTS` would keep it so); a valid one, built to the end by a
/// server whose client had gone, is kept.
async fn drop_if_invalid(conn: &mut sqlx::PgConnection, index: &str) -> Result<(), sqlx::Error> {
    let invalid: Option<bool> = sqlx::query_scalar(
        "SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)",
    )
    .bind(index)
    .fetch_optional(&mut *conn)
    .await?;
    if invalid == Some(true) {
        tracing::warn!(index, "dropping an index an interrupted build left invalid");
        sqlx::raw_sql(&format!("DROP INDEX CONCURRENTLY IF EXISTS {index}"))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The statements of a migration run outside a transaction: split at a
/// `;` that ends a line, comment lines left out (such migrations hold no
/// function bodies, nor strings with `;` in them).
fn statements(sql: &str) -> Vec<String> {
    sql.split(";\n")
        .map(|chunk| {
            chunk
                .lines()
                .filter(|line| !line.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .map(|statement| statement.trim().trim_end_matches(';').trim().to_owned())
        .filter(|statement| !statement.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use sqlx::postgres::PgPoolOptions;

    use super::*;
    use crate::store::postgres::testing::TempDatabase;

    #[test]
    fn a_migration_outside_a_transaction_is_split_into_its_statements() {
        let (_, sql) = MIGRATIONS[7];
        assert!(sql.starts_with(OUTSIDE_A_TRANSACTION));
        let statements = statements(sql);
        assert_eq!(statements.len(), 1, "{statements:?}");
        assert_eq!(
            concurrently_built_index(&statements[0]),
            Some("sessions_account_live")
        );
        assert!(
            statements
                .iter()
                .all(|s| !s.contains("--") && !s.ends_with(';'))
        );
        assert_eq!(
            super::statements("SELECT 1;\n-- a comment;\nSELECT 2;"),
            ["SELECT 1", "SELECT 2"]
        );
    }

    /// An index a cut-short concurrent build left invalid is dropped and
    /// built again; a valid one (a build the server finished after its
    /// client had gone) is kept as it is.
    #[tokio::test]
    async fn a_concurrent_index_build_run_again_mends_an_invalid_index_and_keeps_a_valid_one() {
        let Some(database) = TempDatabase::create_or_skip().await else {
            return;
        };
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&database.url)
            .await
            .unwrap();
        let mut conn = pool.acquire().await.unwrap();
        apply_pending(&mut conn, 7).await.unwrap();
        // A unique build over duplicates fails, leaving its index invalid.
        sqlx::raw_sql(
            "INSERT INTO accounts (id, username, username_key, password_hash, \
               password_changed_at, created_at, updated_at) VALUES (1, 'ann', 'ann', 'x', 0, 0, 0); \
             INSERT INTO sessions (id, account_id, platform, token_style, created_at, expires_at) \
               VALUES ('a', 1, 'web', 'jwt', 1, 99), ('b', 1, 'web', 'jwt', 2, 99)",
        )
        .execute(&mut *conn)
        .await
        .unwrap();
        let failed = sqlx::raw_sql(
            "CREATE UNIQUE INDEX CONCURRENTLY sessions_account_live ON sessions (account_id)",
        )
        .execute(&mut *conn)
        .await;
        assert!(failed.is_err());
        assert!(!index_state(&mut conn).await.1, "left invalid");
        apply_pending(&mut conn, 8).await.unwrap();
        let (built, valid, definition) = index_state(&mut conn).await;
        assert!(valid && definition.contains("created_at"), "{definition}");

        // Valid, and the migration not recorded (its client went before
        // the record): run again, the index stays the same one.
        sqlx::query("DELETE FROM sesame_migrations WHERE version = 8")
            .execute(&mut *conn)
            .await
            .unwrap();
        apply_pending(&mut conn, 8).await.unwrap();
        assert_eq!(index_state(&mut conn).await.0, built);
    }

    /// What the retry in `run` is for: a session blocked in
    /// `pg_advisory_lock` (a node of an earlier version starting) holds a
    /// snapshot the concurrent build waits for, while it waits for the
    /// lock the build's node holds. PostgreSQL ends the build as a
    /// deadlock, which is told apart from other failures.
    #[tokio::test]
    async fn a_session_blocked_on_the_lock_ends_the_concurrent_build_as_a_deadlock() {
        let Some(database) = TempDatabase::create_or_skip().await else {
            return;
        };
        let mut building = <sqlx::PgConnection as sqlx::Connection>::connect(&database.url)
            .await
            .unwrap();
        let mut blocked = <sqlx::PgConnection as sqlx::Connection>::connect(&database.url)
            .await
            .unwrap();
        apply_pending(&mut building, 7).await.unwrap();
        lock(&mut building).await.unwrap();
        // The blocked session's own deadlock check (after deadlock_timeout,
        // 1 s) comes before the build waits, and finds no cycle yet.
        let (waited, built) = tokio::join!(
            sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut blocked),
            async {
                tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
                let built = apply_pending(&mut building, 8).await;
                sqlx::query("SELECT pg_advisory_unlock($1)")
                    .bind(MIGRATION_LOCK)
                    .execute(&mut building)
                    .await
                    .unwrap();
                built
            }
        );
        waited.unwrap();
        assert!(matches!(built, Err(Pending::Again(_))), "{built:?}");
    }

    /// A schema change waiting for a table that a long transaction holds
    /// gives up after `LOCK_TIMEOUT`, so the queries that queued behind it
    /// (a serving node's) go on; it is tried again, and applied once the
    /// transaction has ended.
    #[tokio::test]
    async fn a_migration_waiting_for_a_table_lets_the_queries_behind_it_go_on() {
        let Some(database) = TempDatabase::create_or_skip().await else {
            return;
        };
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&database.url)
            .await
            .unwrap();
        apply_pending(&mut pool.acquire().await.unwrap(), 8)
            .await
            .unwrap();
        let connect = || <sqlx::PgConnection as sqlx::Connection>::connect(&database.url);
        let (mut holder, mut reader) = (connect().await.unwrap(), connect().await.unwrap());
        sqlx::raw_sql("BEGIN; LOCK TABLE audit_events IN ACCESS SHARE MODE")
            .execute(&mut holder)
            .await
            .unwrap();
        let migrating = run(&pool, crate::store::Migrate::Apply);
        tokio::pin!(migrating);
        // Migration 9 alters audit_events: it queues for the table.
        let read = async {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            tokio::time::timeout(
                std::time::Duration::from_secs(10),
                sqlx::query("SELECT count(*) FROM audit_events").execute(&mut reader),
            )
            .await
        };
        let read = tokio::select! {
            migrated = &mut migrating => panic!("migrated under the lock: {migrated:?}"),
            read = read => read,
        };
        assert!(read.is_ok(), "the read waited as long as the transaction");
        read.unwrap().unwrap();
        sqlx::raw_sql("COMMIT").execute(&mut holder).await.unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(30), migrating)
            .await
            .expect("applied once the transaction ended")
            .unwrap();
        let applied = applied(&mut pool.acquire().await.unwrap()).await.unwrap();
        assert_eq!(applied, LATEST);
    }

    /// The index's id, whether it is valid, and its definition.
    async fn index_state(conn: &mut sqlx::PgConnection) -> (i64, bool, String) {
        sqlx::query_as(
            "SELECT i.indexrelid::bigint, i.indisvalid, pg_get_indexdef(i.indexrelid) \
             FROM pg_index i WHERE i.indexrelid = to_regclass('sessions_account_live')",
        )
        .fetch_one(conn)
        .await
        .unwrap()
    }

    /// A database whose known clients were rows (schema 2) keeps them, in
    /// the same order, on the account's row (schema 3).
    #[tokio::test]
    async fn known_clients_move_onto_their_account_in_order() {
        let Some(database) = TempDatabase::create_or_skip().await else {
            return;
        };
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&database.url)
            .await
            .unwrap();
        let mut conn = pool.acquire().await.unwrap();
        apply_pending(&mut conn, 2).await.unwrap();
        sqlx::raw_sql(
            "INSERT INTO accounts (id, username, username_key, password_hash, \
               password_changed_at, created_at, updated_at) \
             VALUES (1, 'ann', 'ann', 'x', 0, 0, 0), (2, 'bob', 'bob', 'x', 0, 0, 0); \
             INSERT INTO known_clients (account_id, kind, value, first_seen, last_seen) VALUES \
               (1, 'device', 'old', 1, 10), (1, 'device', 'new', 2, 30), \
               (1, 'device', 'tie-first', 3, 20), (1, 'device', 'tie-second', 4, 20), \
               (1, 'ip', '192.0.2.1', 1, 5)",
        )
        .execute(&mut *conn)
        .await
        .unwrap();
        apply_pending(&mut conn, MIGRATIONS.len()).await.unwrap();
        let rows: Vec<(i64, Vec<String>, Vec<String>)> =
            sqlx::query_as("SELECT id, known_devices, known_addresses FROM accounts ORDER BY id")
                .fetch_all(&mut *conn)
                .await
                .unwrap();
        let strings = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            rows,
            vec![
                (
                    1,
                    strings(&["new", "tie-second", "tie-first", "old"]),
                    strings(&["192.0.2.1"])
                ),
                (2, vec![], vec![]),
            ]
        );
        let gone: bool = sqlx::query_scalar("SELECT to_regclass('known_clients') IS NULL")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert!(gone, "the old table is dropped");
    }
}
