//! The schema, as numbered migrations compiled into the binary.
//!
//! The database's `user_version` is the number of migrations applied; each
//! missing one runs in its own transaction together with the bump of that
//! number, so a crash never leaves a half-applied step.

use rusqlite::{Connection, TransactionBehavior};

use super::db_error;
use crate::store::{StoreError, StoreResult};

/// Every migration, in order. Never edit one that has shipped; add the next.
const MIGRATIONS: [&str; 7] = [
    include_str!("../../../migrations/sqlite/0001_init.sql"),
    include_str!("../../../migrations/sqlite/0002_opaque_tokens.sql"),
    include_str!("../../../migrations/sqlite/0003_abuse_and_audit.sql"),
    include_str!("../../../migrations/sqlite/0004_one_statement_rotation.sql"),
    include_str!("../../../migrations/sqlite/0005_housekeeping.sql"),
    include_str!("../../../migrations/sqlite/0006_quota_period.sql"),
    include_str!("../../../migrations/sqlite/0007_oauth.sql"),
];

/// Brings the schema up to date.
#[cfg(test)]
pub(super) fn run(conn: &mut Connection) -> StoreResult<()> {
    migrate(conn, true)
}

/// Brings the schema up to date when `apply`; otherwise only checks that it
/// is, and names the command that would.
pub(super) fn migrate(conn: &mut Connection, apply: bool) -> StoreResult<()> {
    let applied = applied(conn)?;
    if applied > MIGRATIONS.len() {
        return Err(StoreError::Database(format!(
            "the database has schema version {applied}, newer than this Sesame ({}); \
             use a newer release",
            MIGRATIONS.len()
        )));
    }
    if !apply && applied < MIGRATIONS.len() {
        return Err(super::super::behind(applied, MIGRATIONS.len()));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let version = index + 1;
        let failed = |e: rusqlite::Error| {
            StoreError::Database(format!("migration {version} failed: {}", db_error(e)))
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(failed)?;
        tx.execute_batch(sql).map_err(failed)?;
        tx.pragma_update(None, "user_version", version as i64)
            .map_err(failed)?;
        tx.commit().map_err(failed)?;
    }
    Ok(())
}

/// How many migrations the database has. Databases created by earlier
/// builds recorded them in `_sqlx_migrations` instead of `user_version`.
fn applied(conn: &Connection) -> StoreResult<usize> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(db_error)?;
    if version > 0 {
        return usize::try_from(version)
            .map_err(|_| StoreError::Corrupt("negative schema version".into()));
    }
    let legacy: Option<i64> = conn
        .query_row(
            "SELECT MAX(version) FROM _sqlx_migrations WHERE success",
            [],
            |row| row.get(0),
        )
        .or_else(|error| match &error {
            rusqlite::Error::SqliteFailure(_, Some(message))
                if message.contains("no such table") =>
            {
                Ok(None)
            }
            _ => Err(error),
        })
        .map_err(db_error)?;
    Ok(legacy.and_then(|v| usize::try_from(v).ok()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::{MIGRATIONS, run};

    fn user_version(conn: &Connection) -> i64 {
        conn.pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap()
    }

    #[test]
    fn a_fresh_database_gets_every_migration_once() {
        let mut conn = Connection::open_in_memory().unwrap();
        run(&mut conn).unwrap();
        assert_eq!(user_version(&conn), MIGRATIONS.len() as i64);
        run(&mut conn).unwrap();
        assert_eq!(user_version(&conn), MIGRATIONS.len() as i64);
    }

    #[test]
    fn a_database_migrated_by_the_earlier_driver_is_not_migrated_again() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..3] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch(
            "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, success BOOLEAN NOT NULL);
             INSERT INTO _sqlx_migrations VALUES (1, TRUE), (2, TRUE), (3, TRUE);",
        )
        .unwrap();
        // Re-running 0001–0003 would fail ("table already exists"); only 0004 may run.
        run(&mut conn).unwrap();
        assert_eq!(user_version(&conn), MIGRATIONS.len() as i64);
        let trigger: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_schema WHERE name = 'refresh_tokens_rotate'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(trigger, 1);
    }

    #[test]
    fn a_database_from_a_newer_release_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        let error = run(&mut conn).unwrap_err().to_string();
        assert!(error.contains("schema version 99"), "{error}");
    }
}
