//! Throwaway databases for tests (Sesame's own suites and the benchmark).
//!
//! Each [`TempDatabase`] is a new database on the server named by
//! `SESAME_TEST_POSTGRES_URL` (default: the local server, user `postgres`),
//! dropped again when the value is dropped.

use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// The server tests use unless `SESAME_TEST_POSTGRES_URL` names another.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The URL of the test server.
pub fn server_url() -> String {
    std::env::var("SESAME_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A database created for one test; dropped with this value.
#[derive(Debug)]
pub struct TempDatabase {
    /// The URL of the new database.
    pub url: String,
    name: String,
    server: String,
}

impl TempDatabase {
    /// Creates a fresh, empty database on the test server.
    pub async fn create() -> Result<Self, String> {
        let server = server_url();
        let mut admin = PgConnection::connect(&server).await.map_err(|e| {
            format!(
                "no PostgreSQL at {} ({e})",
                crate::app::displayable_url(&server)
            )
        })?;
        let name = format!("sesame_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .map_err(|e| format!("cannot create a test database: {e}"))?;
        let _ = admin.close().await;
        Ok(Self {
            url: with_database(&server, &name),
            name,
            server,
        })
    }
}

#[cfg(test)]
impl TempDatabase {
    /// A fresh database for a unit test, or `None` (printing why) when no
    /// server is reachable and this is not CI; on CI that is a failure.
    pub(crate) async fn create_or_skip() -> Option<Self> {
        match Self::create().await {
            Ok(database) => Some(database),
            Err(reason) if std::env::var_os("CI").is_none() => {
                eprintln!("skipped: {reason}");
                None
            }
            Err(reason) => panic!("{reason}"),
        }
    }
}

/// The server URL with its database replaced by `name` (query kept).
fn with_database(server: &str, name: &str) -> String {
    let (base, query) = match server.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (server, String::new()),
    };
    let (scheme, rest) = base.split_once("://").unwrap_or(("postgres", base));
    let authority = rest.split('/').next().unwrap_or_default();
    format!("{scheme}://{authority}/{name}{query}")
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // Drop may run inside a runtime that is shutting down: use a thread
        // with its own small runtime, and wait for it.
        let dropped = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(mut admin) = PgConnection::connect(&server).await {
                    let _ = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await;
                    let _ = admin.close().await;
                }
            });
        });
        let _ = dropped.join();
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_is_replaced_and_the_query_kept() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=require", "x"),
            "postgres://u:p@h/x?sslmode=require"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
    }
}
