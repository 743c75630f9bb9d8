//! The embedded default: SQLite in WAL mode.
//!
//! Writes that must be atomic run in `BEGIN IMMEDIATE` transactions so two
//! writers never deadlock on a lock upgrade; readers never block writers.
//! Everything specific to SQLite (pragmas, error codes, `GROUP BY` quirks)
//! stays in this module.

mod accounts;
mod audit;
mod keys;
mod rotation;
mod sessions;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::{StoreError, StoreResult};

/// The SQLite store: a pool of readers and one writer.
///
/// SQLite allows one writer at a time. With several pooled connections
/// writing, the losers wait in SQLite's busy handler, which sleeps in
/// growing steps and wrecks tail latency; with one writer connection they
/// wait in the async pool's queue instead and are served in order.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    reader: SqlitePool,
    writer: SqlitePool,
    rotations: rotation::Rotations,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://path` or
    /// `sqlite:path`) and runs the embedded migrations.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Database(format!("invalid SQLite URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        // The writer never checkpoints: a checkpoint copies pages back into
        // the database file and syncs it, and doing that inside a commit
        // stalls every writer queued behind it. A background connection
        // checkpoints instead (see `spawn_checkpointer`).
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone().pragma("wal_autocheckpoint", "0"))
            .await
            .map_err(db_error)?;
        sqlx::migrate!("migrations/sqlite")
            .run(&writer)
            .await
            .map_err(|e| StoreError::Database(format!("migration failed: {e}")))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .connect_with(options.clone().read_only(true))
            .await
            .map_err(db_error)?;
        let checkpointer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.pragma("journal_size_limit", "67108864"))
            .await
            .map_err(db_error)?;
        spawn_checkpointer(checkpointer);
        let rotations = rotation::Rotations::spawn(writer.clone());
        Ok(Self {
            reader,
            writer,
            rotations,
        })
    }

    /// The URL of the default database file inside a data directory.
    pub fn url_for_data_dir(dir: &Path) -> String {
        format!("sqlite://{}", dir.join("sesame.db").display())
    }
}

/// How often the background checkpoint runs.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);

/// Checkpoints the WAL from its own connection, in PASSIVE mode: it never
/// waits for (or blocks) readers and the writer. Stops when the runtime does.
fn spawn_checkpointer(pool: SqlitePool) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECKPOINT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&pool)
                .await
            {
                tracing::warn!(%error, "WAL checkpoint failed; will retry");
            }
        }
    });
}

/// Maps a database error, turning unique-constraint violations on the
/// account's identifying columns into [`StoreError::Conflict`].
fn db_error(error: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &error
        && db.is_unique_violation()
    {
        let message = db.message();
        for field in ["username", "email", "mobile"] {
            if message.contains(&format!("accounts.{field}")) {
                return StoreError::Conflict(field);
            }
        }
    }
    StoreError::Database(error.to_string())
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}
