//! Opening SQLite connections, the pool of readers and the checkpoint thread.

use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::db_error;
use crate::store::{StoreError, StoreResult};

/// How long a connection waits for another process's lock (the CLI writing
/// while the server runs) before giving up.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the background checkpoint runs.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);

/// Idle readers kept open; more are opened when more threads read at once.
const MAX_IDLE_READERS: usize = 8;

/// Where the database lives.
#[derive(Debug, Clone)]
pub(super) struct Database {
    path: PathBuf,
}

impl Database {
    /// Parses `sqlite://path` or `sqlite:path`. Query parameters and
    /// in-memory databases are refused: every connection must see the same file.
    pub(super) fn from_url(url: &str) -> StoreResult<Self> {
        let invalid = |why: &str| StoreError::Database(format!("invalid SQLite URL: {why}"));
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| invalid("it must start with sqlite:"))?;
        if path.is_empty() {
            return Err(invalid("no file path"));
        }
        if path.contains('?') {
            return Err(invalid("query parameters are not supported"));
        }
        if path == ":memory:" {
            return Err(invalid(
                "an in-memory database cannot be shared; give a file path",
            ));
        }
        Ok(Self { path: path.into() })
    }

    /// The database file.
    pub(super) fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The writer: creates the file if needed and switches it to WAL. It
    /// never checkpoints itself: copying pages back into the database file
    /// inside a commit would stall every write queued behind it.
    /// `synchronous = NORMAL` in WAL mode: a commit survives a crash of the
    /// process; a power cut may lose the last commits, never the file.
    pub(super) fn open_writer(&self) -> StoreResult<Connection> {
        self.create_private_or_warn()?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = self.open(flags)?;
        // SQLite keeps the old journal mode, without an error, where it
        // cannot switch (a file system without shared memory, say). Without
        // WAL a commit waits for every reader: refused rather than stalled.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(db_error)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Database(format!(
                "the database file cannot use write-ahead logging (journal mode stays {mode})"
            )));
        }
        // The WAL file is cut back to 64 MiB by the writer, when it starts
        // the log again after a checkpoint reached its end.
        conn.execute_batch(
            "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = 0; \
             PRAGMA journal_size_limit = 67108864;",
        )
        .map_err(db_error)?;
        Ok(conn)
    }

    /// The database holds password verifiers, session ids and (without a
    /// key-encryption key) the private signing keys: a new file is made
    /// readable by its owner alone (SQLite gives its `-wal` and `-shm`
    /// files the database file's mode); an existing one that others may
    /// read is reported.
    #[cfg(unix)]
    fn create_private_or_warn(&self) -> StoreResult<()> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&self.path)
        {
            Ok(_) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                if let Ok(metadata) = std::fs::metadata(&self.path)
                    && metadata.permissions().mode() & 0o077 != 0
                {
                    tracing::warn!(
                        path = %self.path.display(),
                        mode = format!("{:o}", metadata.permissions().mode() & 0o777),
                        "the database file can be read by others than its owner; it holds \
                         password verifiers and sessions: chmod 600 it (and its -wal and -shm files)"
                    );
                }
                Ok(())
            }
            Err(error) => Err(StoreError::Database(format!(
                "cannot create the database file: {error}"
            ))),
        }
    }

    #[cfg(not(unix))]
    fn create_private_or_warn(&self) -> StoreResult<()> {
        Ok(())
    }

    fn open_reader(&self) -> StoreResult<Connection> {
        self.open(OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
    }

    fn open_checkpointer(&self) -> StoreResult<Connection> {
        self.open(OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
    }

    fn open(&self, flags: OpenFlags) -> StoreResult<Connection> {
        let conn = Connection::open_with_flags(&self.path, flags).map_err(db_error)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(db_error)?;
        // Statements are prepared once per connection and reused. Without the
        // planner stability guarantee, SQLite (built with STAT4, as the
        // bundled one is) marks some statements to be prepared again
        // whenever a parameter is bound: every refresh lookup was parsed and
        // planned anew. One plan per statement is what an auth server wants.
        conn.set_prepared_statement_cache_capacity(64);
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )
        .map_err(db_error)?;
        Ok(conn)
    }
}

/// Read-only connections, used on the thread that asks.
///
/// A reader is taken out of the pool for the length of one read, so no two
/// threads ever share one; the lock is held only to take and return it.
#[derive(Debug)]
pub(super) struct Readers {
    database: Database,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    pub(super) fn new(database: Database) -> Self {
        Self {
            database,
            idle: Mutex::new(Vec::new()),
        }
    }

    pub(super) fn read<T>(
        &self,
        read: impl FnOnce(&Connection) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.database.open_reader()?,
        };
        let result = read(&conn);
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        result
    }
}

/// The thread that checkpoints the WAL every [`CHECKPOINT_INTERVAL`], in
/// PASSIVE mode: it never waits for (or blocks) readers and the writer.
/// Dropping this stops it.
#[derive(Debug)]
pub(super) struct Checkpointer {
    _stop: mpsc::Sender<()>,
}

impl Checkpointer {
    pub(super) fn spawn(database: &Database) -> StoreResult<Self> {
        let conn = database.open_checkpointer()?;
        let (stop, stopped) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("sesame-checkpoint".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_INTERVAL)
                {
                    if let Err(error) = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE);") {
                        tracing::warn!(%error, "WAL checkpoint failed; will retry");
                    }
                }
            })
            .map_err(|e| {
                StoreError::Database(format!("cannot start the checkpoint thread: {e}"))
            })?;
        Ok(Self { _stop: stop })
    }
}

#[cfg(test)]
mod tests {
    use super::Database;

    #[test]
    fn sqlite_urls_name_a_file() {
        for (url, path) in [
            (
                "sqlite:///var/lib/sesame/sesame.db",
                "/var/lib/sesame/sesame.db",
            ),
            ("sqlite://data/sesame.db", "data/sesame.db"),
            ("sqlite:sesame.db", "sesame.db"),
        ] {
            let database = Database::from_url(url).unwrap();
            assert_eq!(database.path.to_str(), Some(path), "{url}");
        }
    }

    #[test]
    fn urls_sqlite_cannot_share_are_refused_with_the_reason() {
        for (url, why) in [
            ("postgres://u:p@host/db", "must start with sqlite:"),
            ("sqlite://", "no file path"),
            ("sqlite://a.db?mode=ro", "query parameters"),
            ("sqlite::memory:", "in-memory"),
        ] {
            let error = Database::from_url(url).unwrap_err().to_string();
            assert!(error.contains(why), "{url}: {error}");
            assert!(!error.contains("u:p"), "never echoes credentials");
        }
    }

    /// What the database holds is for its owner alone: the file, and the
    /// write-ahead log SQLite makes beside it.
    #[cfg(unix)]
    #[tokio::test]
    async fn a_new_database_is_readable_by_its_owner_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sesame.db");
        let store = crate::store::sqlite::SqliteStore::open(
            &format!("sqlite://{}", path.display()),
            crate::store::Migrate::Apply,
        )
        .await
        .unwrap();
        crate::store::conformance::account_for_tests(&store, "alice").await;
        for file in ["sesame.db", "sesame.db-wal", "sesame.db-shm"] {
            let mode = std::fs::metadata(dir.path().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}: {mode:o}");
        }
    }
}
