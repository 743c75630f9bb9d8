//! The schema, as numbered migrations compiled into the binary.
//!
//! The database's `user_version` is the number of migrations applied; each
//! missing one runs in its own transaction together with the bump of that
//! number, so a crash never leaves a half-applied step.

use rusqlite::{Connection, TransactionBehavior};

use super::db_error;
use crate::store::{StoreError, StoreResult};

/// Every migration, in order. Never edit one that has shipped; add the next.
const MIGRATIONS: [&str; 12] = [
    include_str!("../../../migrations/sqlite/0001_init.sql"),
    include_str!("../../../migrations/sqlite/0002_opaque_tokens.sql"),
    include_str!("../../../migrations/sqlite/0003_abuse_and_audit.sql"),
    include_str!("../../../migrations/sqlite/0004_one_statement_rotation.sql"),
    include_str!("../../../migrations/sqlite/0005_housekeeping.sql"),
    include_str!("../../../migrations/sqlite/0006_quota_period.sql"),
    include_str!("../../../migrations/sqlite/0007_oauth.sql"),
    include_str!("../../../migrations/sqlite/0008_known_clients_on_account.sql"),
    include_str!("../../../migrations/sqlite/0009_session_pages.sql"),
    include_str!("../../../migrations/sqlite/0010_audit_target.sql"),
    include_str!("../../../migrations/sqlite/0011_keys_published_ahead.sql"),
    include_str!("../../../migrations/sqlite/0012_deployment_secrets.sql"),
];

/// Brings the schema up to date.
#[cfg(test)]
pub(super) fn run(conn: &mut Connection) -> StoreResult<()> {
    migrate(conn, crate::store::Migrate::Apply)
}

/// Brings the schema up to date, or checks that it is, as `mode` says;
/// a refusal names the command that would.
pub(super) fn migrate(conn: &mut Connection, mode: crate::store::Migrate) -> StoreResult<()> {
    let at = applied(conn)?;
    if at > MIGRATIONS.len() {
        return Err(StoreError::Database(format!(
            "the database has schema version {at}, newer than this Sesame ({}); \
             use a newer release",
            MIGRATIONS.len()
        )));
    }
    if at < MIGRATIONS.len() && !mode.applies(at) {
        return Err(mode.behind(at, MIGRATIONS.len()));
    }
    // The version as this process last saw it.
    let mut seen = at;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(at) {
        let version = index + 1;
        let failed = |e: rusqlite::Error| {
            StoreError::Database(format!("migration {version} failed: {}", db_error(e)))
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(failed)?;
        // Another process (the server and a CLI command started together
        // after an upgrade) may have applied it while this one waited for
        // the lock; and a command setting up a new database refuses one
        // that a server of an earlier version set up meanwhile.
        let now_at = applied(&tx)?;
        if now_at != seen && now_at < MIGRATIONS.len() && !mode.applies(now_at) {
            return Err(mode.behind(now_at, MIGRATIONS.len()));
        }
        seen = now_at;
        if now_at >= version {
            continue;
        }
        tx.execute_batch(sql).map_err(failed)?;
        tx.pragma_update(None, "user_version", version as i64)
            .map_err(failed)?;
        tx.commit().map_err(failed)?;
        seen = version;
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

    /// Two processes opening one database at once (the server and a CLI
    /// command after an upgrade) both end up with it migrated, each step
    /// applied once.
    #[test]
    fn two_processes_migrating_at_once_both_succeed() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..5 {
            let path = dir.path().join(format!("race-{round}.db"));
            let start = std::sync::Arc::new(std::sync::Barrier::new(2));
            let migrating: Vec<_> = (0..2)
                .map(|_| {
                    let (path, start) = (path.clone(), std::sync::Arc::clone(&start));
                    std::thread::spawn(move || {
                        let mut conn = Connection::open(path).unwrap();
                        conn.busy_timeout(std::time::Duration::from_secs(10))
                            .unwrap();
                        start.wait();
                        run(&mut conn)
                    })
                })
                .collect();
            for migrated in migrating {
                migrated.join().unwrap().unwrap();
            }
            let conn = Connection::open(path).unwrap();
            assert_eq!(user_version(&conn), MIGRATIONS.len() as i64);
        }
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
    fn known_clients_move_onto_their_account_in_order() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..7] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 7).unwrap();
        conn.execute_batch(
            "INSERT INTO accounts (id, username, username_key, password_hash, password_changed_at, \
                 created_at, updated_at) VALUES \
                 (1, 'ann', 'ann', 'x', 0, 0, 0), (2, 'bob', 'bob', 'x', 0, 0, 0), \
                 (3, 'cy', 'cy', 'x', 0, 0, 0);
             INSERT INTO known_clients (account_id, kind, value, first_seen, last_seen) VALUES \
                 (1, 'device', 'd-old', 1, 10), (1, 'device', 'd-new', 2, 30), \
                 (1, 'device', 'd-tie-first', 3, 20), (1, 'device', 'd-tie-second', 4, 20), \
                 (1, 'ip', '192.0.2.1', 1, 5), (1, 'ip', '2001:db8::1', 1, 7), \
                 (2, 'ip', '198.51.100.7', 1, 1);",
        )
        .unwrap();
        run(&mut conn).unwrap();
        assert_eq!(user_version(&conn), MIGRATIONS.len() as i64);
        let lists: Vec<(i64, String, String)> = conn
            .prepare("SELECT id, known_devices, known_addresses FROM accounts ORDER BY id")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            lists,
            [
                (
                    1,
                    r#"["d-new","d-tie-second","d-tie-first","d-old"]"#.to_owned(),
                    r#"["2001:db8::1","192.0.2.1"]"#.to_owned()
                ),
                (2, "[]".to_owned(), r#"["198.51.100.7"]"#.to_owned()),
                (3, "[]".to_owned(), "[]".to_owned()),
            ]
        );
        let table: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_schema WHERE name = 'known_clients'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(table, 0);
    }

    #[test]
    fn a_database_from_a_newer_release_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        let error = run(&mut conn).unwrap_err().to_string();
        assert!(error.contains("schema version 99"), "{error}");
    }
}
