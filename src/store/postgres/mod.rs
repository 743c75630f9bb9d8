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
mod sessions;
#[doc(hidden)]
pub mod testing;

use std::str::FromStr;

use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::{DatabaseSettings, StoreError, StoreResult};

/// The PostgreSQL store: a connection pool.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to the server named by `settings.url`, and runs pending
    /// migrations (under an advisory lock, so nodes starting together are
    /// safe) or, with `migrate` false, refuses a schema that is behind.
    pub async fn open(settings: &DatabaseSettings, migrate: bool) -> StoreResult<Self> {
        let options = connect_options(settings)?;
        let pool = PgPoolOptions::new()
            .max_connections(settings.pool_size)
            .min_connections(0)
            .acquire_timeout(settings.connect_timeout)
            .idle_timeout(Some(std::time::Duration::from_secs(300)))
            .connect_with(options)
            .await
            .map_err(db_error)?;
        migrate::run(&pool, migrate).await?;
        Ok(Self { pool })
    }

    /// The pool, for the notice listener.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Connection options from the URL, with Sesame's session settings.
fn connect_options(settings: &DatabaseSettings) -> StoreResult<PgConnectOptions> {
    let options = PgConnectOptions::from_str(&settings.url)
        // The parse error may quote the URL, which may carry a password.
        .map_err(|_| StoreError::Database("database_url is not a valid PostgreSQL URL".into()))?;
    let timeout_ms = settings.statement_timeout.as_millis().to_string();
    Ok(options
        .application_name("sesame")
        .options([("statement_timeout", timeout_ms.as_str())])
        // Statement texts carry no secrets, but at debug level they would
        // drown everything else; store latency belongs in metrics.
        .disable_statement_logging())
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
        sqlx::Error::PoolTimedOut => StoreError::Database(
            "no database connection free within database.connect_timeout".into(),
        ),
        _ => StoreError::Database(error.to_string()),
    }
}

/// A stored value that Sesame never writes.
fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}
