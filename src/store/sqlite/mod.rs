//! The embedded default: SQLite in WAL mode, driven from Sesame's own threads.
//!
//! SQLite is a library, not a server: a point read costs a few microseconds
//! of CPU, far less than handing it to another thread and back. So reads run
//! right where they are asked for, on a read-only connection taken from a
//! small pool (WAL readers never wait for the writer). A short write, too,
//! is committed where it is asked for when it comes alone (no other write
//! under way or just committed); writes that come close together go to one
//! writer thread, which drains whatever has queued up and commits it as one
//! transaction, each write inside its own savepoint so that one failing
//! write never undoes its neighbours (group commit). A third thread copies
//! the WAL back into the database file in the background.
//!
//! (An async driver would run every connection on its own thread and send
//! each statement across a channel; at refresh rates that hand-off cost a
//! third of the server's CPU in context switches.)
//!
//! Everything specific to SQLite (pragmas, error codes, SQL dialect) stays
//! in this module.

mod accounts;
mod audit;
mod connection;
mod keys;
mod migrate;
mod oauth;
mod roles;
mod sessions;
mod transfer;
mod writer;

use std::path::Path;
use std::sync::Arc;

use rusqlite::Connection;

use super::{StoreError, StoreResult};
use connection::{Checkpointer, Database, Readers};
use writer::Writer;

/// The SQLite store: pooled readers used in place, one writer thread.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    readers: Readers,
    writer: Writer,
    /// The core's clock, once given: see [`SqliteStore::set_clock`].
    clock: std::sync::OnceLock<Arc<dyn crate::clock::Clock>>,
    /// Stops the checkpoint thread when the store is dropped.
    _checkpointer: Checkpointer,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://path` or
    /// `sqlite:path`) and runs the embedded migrations.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        Self::open(url, crate::store::Migrate::Apply).await
    }

    /// Whether the database file of `url` exists (`false` for a URL that
    /// is not one).
    pub fn exists(url: &str) -> bool {
        Database::from_url(url).is_ok_and(|database| database.path().exists())
    }

    /// Checks a URL as [`SqliteStore::open`] reads it, opening nothing.
    pub fn check_url(url: &str) -> StoreResult<()> {
        Database::from_url(url).map(drop)
    }

    /// Opens the database at `url`, doing as `migrate` says about its
    /// schema.
    pub async fn open(url: &str, migrate: crate::store::Migrate) -> StoreResult<Self> {
        let database = Database::from_url(url)?;
        if migrate == crate::store::Migrate::Inspect && !database.path().exists() {
            // Opening it would create it.
            return Err(StoreError::NoSchema);
        }
        let mut writer = database.open_writer()?;
        migrate::migrate(&mut writer, migrate)?;
        let readers = Readers::new(database.clone());
        // Fail now, not at the first request, if the file cannot be read.
        readers.read(|_| Ok(()))?;
        let checkpointer = Checkpointer::spawn(&database)?;
        Ok(Self {
            inner: Arc::new(Inner {
                readers,
                writer: Writer::spawn(writer)?,
                clock: std::sync::OnceLock::new(),
                _checkpointer: checkpointer,
            }),
        })
    }

    /// The URL of the default database file inside a data directory.
    pub fn url_for_data_dir(dir: &Path) -> String {
        format!("sqlite://{}", dir.join("sesame.db").display())
    }

    /// Runs a read that may take long (a listing) on a blocking thread, so
    /// that it never holds up the async workers serving logins.
    async fn read_off_workers<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.read(read))
            .await
            .map_err(|e| StoreError::Database(format!("listing thread failed: {e}")))?
    }

    /// Runs a read on a pooled read-only connection, on the calling thread.
    fn read<T>(&self, read: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        self.inner.readers.read(read)
    }

    /// Runs a short read that follows writes closely (a login's account) on
    /// the writer's connection when it is idle, whose page cache is current;
    /// otherwise like [`Self::read`].
    fn read_current<T>(&self, read: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        match self.inner.writer.try_read(read) {
            Ok(result) => result,
            Err(read) => self.read(read),
        }
    }

    /// Commits a short write: in place when it comes alone, otherwise with
    /// the writer thread's next batch (see `writer.rs`).
    async fn write<T: Send + 'static>(
        &self,
        write: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.inner.writer.write(write).await
    }

    /// Commits a write done only for its caller: see
    /// [`Writer::write_for_caller`].
    async fn write_for_caller<T: Send + 'static>(
        &self,
        write: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.inner.writer.write_for_caller(write).await
    }

    /// Gives the store the core's clock, by which a refresh-token rotation
    /// is dated when it is written rather than when it was asked for: one
    /// queued behind a stall (another process holding the database) would
    /// otherwise be dated seconds before it happened, and a client's retry
    /// meanwhile judged outside the reuse grace window.
    pub fn set_clock(&self, clock: Arc<dyn crate::clock::Clock>) {
        let _ = self.inner.clock.set(clock);
    }

    /// Commits a write that may take long (a batch of imports, purges or
    /// audit events) on the writer thread, so that it never holds up the
    /// async workers serving logins.
    async fn write_off_workers<T: Send + 'static>(
        &self,
        write: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.inner.writer.queue_write(write).await
    }
}

/// A stored value that does not decode (a bug or a hand-edited row).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Corrupt(&'static str);

/// Reports a column that holds a value Sesame never writes.
fn corrupt(what: &'static str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Null,
        Box::new(Corrupt(what)),
    )
}

/// Maps a SQLite error: unique violations on the account's identifying
/// columns become [`StoreError::Conflict`], undecodable values
/// [`StoreError::Corrupt`], the rest [`StoreError::Database`].
fn db_error(error: rusqlite::Error) -> StoreError {
    match &error {
        rusqlite::Error::SqliteFailure(failure, Some(message))
            if failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
        {
            for field in ["username", "email", "mobile"] {
                if message.contains(&format!("accounts.{field}")) {
                    return StoreError::Conflict(field);
                }
            }
            StoreError::Database(error.to_string())
        }
        // A row referring to one deleted meanwhile (a role, a session):
        // a race with another request, which a retry answers cleanly.
        rusqlite::Error::SqliteFailure(failure, _)
            if failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY =>
        {
            StoreError::Unavailable(error.to_string())
        }
        // Another process held the database's lock past the busy timeout
        // (the CLI migrating, an operator's shell in a transaction): worth
        // a retry, as a PostgreSQL lock wait that timed out is.
        rusqlite::Error::SqliteFailure(failure, _)
            if matches!(
                failure.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            StoreError::Unavailable(error.to_string())
        }
        rusqlite::Error::FromSqlConversionFailure(_, _, cause) => match cause.downcast_ref() {
            Some(Corrupt(what)) => StoreError::Corrupt((*what).to_owned()),
            None => StoreError::Corrupt(cause.to_string()),
        },
        rusqlite::Error::InvalidColumnType(_, name, _) => StoreError::Corrupt(name.clone()),
        _ => StoreError::Database(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    /// Another process holding the lock past the busy timeout is a
    /// condition worth a retry (503), not a failure of the server (500).
    #[test]
    fn a_lock_held_elsewhere_is_unavailable_not_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locked.db");
        let holder = rusqlite::Connection::open(&path).unwrap();
        holder
            .execute_batch("CREATE TABLE t (x INTEGER); BEGIN IMMEDIATE; INSERT INTO t VALUES (1);")
            .unwrap();
        let other = rusqlite::Connection::open(&path).unwrap();
        other.busy_timeout(std::time::Duration::ZERO).unwrap();
        let error = other.execute("INSERT INTO t VALUES (2)", []).unwrap_err();
        assert!(
            matches!(
                super::db_error(error),
                crate::store::StoreError::Unavailable(_)
            ),
            "busy is worth a retry"
        );
    }
}
