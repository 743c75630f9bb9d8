//! Sessions and refresh-token chains in SQLite.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::accounts::record_success;
use super::{SqliteStore, corrupt, db_error};
use crate::clock::UnixTime;
use crate::store::{
    AccountId, LoginRecord, NewRefreshToken, NewSession, OpaqueAccessToken, PurgeCutoffs, Purged,
    RefreshToken, Session, SessionCursor, SessionId, SessionStore, StoreResult, TokenHash,
    TokenStyle,
};

/// The columns of a session with its derived last use and its account's
/// status; a macro so that statements are put together at compile time.
macro_rules! session_columns {
    () => {
        "s.id, s.account_id, s.platform, s.user_agent, s.ip, s.token_style, s.created_at, \
     COALESCE((SELECT MAX(r.issued_at) FROM refresh_tokens r WHERE r.session_id = s.id), s.created_at) AS last_used_at, \
     s.expires_at, s.revoked_at, a.status <> 'disabled' AS account_active"
    };
}

/// `SELECT` of sessions (with their accounts) matching a condition.
macro_rules! select_sessions {
    ($condition:literal) => {
        concat!(
            "SELECT ",
            session_columns!(),
            " FROM sessions s JOIN accounts a ON a.id = s.account_id WHERE ",
            $condition
        )
    };
}

/// A page of an account's live sessions after a cursor, in the order of
/// the `sessions_account_live` index (migration 0009).
const PAGE_OF_LIVE_SESSIONS: &str = select_sessions!(
    "s.account_id = ? AND s.revoked_at IS NULL AND s.expires_at > ? \
     AND (s.created_at, s.id) > (?, ?) \
     ORDER BY s.created_at, s.id LIMIT ?"
);

fn session_from_row(row: &Row) -> rusqlite::Result<Session> {
    let style: String = row.get("token_style")?;
    Ok(Session {
        id: row.get("id")?,
        account_id: row.get("account_id")?,
        platform: row.get("platform")?,
        user_agent: row.get("user_agent")?,
        ip: row.get("ip")?,
        token_style: TokenStyle::parse(&style).ok_or_else(|| corrupt("session token style"))?,
        created_at: row.get("created_at")?,
        last_used_at: row.get("last_used_at")?,
        expires_at: row.get("expires_at")?,
        revoked_at: row.get("revoked_at")?,
        account_active: row.get("account_active")?,
    })
}

fn refresh_from_row(row: &Row, session_id: SessionId) -> rusqlite::Result<RefreshToken> {
    let hash: Vec<u8> = row.get("token_hash")?;
    Ok(RefreshToken {
        hash: hash
            .try_into()
            .map_err(|_| corrupt("refresh token hash length"))?,
        session_id,
        issued_at: row.get("issued_at")?,
        rotated_at: row.get("rotated_at")?,
        successor_salt: row.get("successor_salt")?,
    })
}

fn sessions_where(
    conn: &Connection,
    select: &str,
    params: impl rusqlite::Params,
) -> StoreResult<Vec<Session>> {
    conn.prepare_cached(select)
        .and_then(|mut select| select.query_map(params, session_from_row)?.collect())
        .map_err(db_error)
}

/// Runs an `UPDATE … RETURNING id` and collects the ids.
/// Ends every live session of an account but `keep`, inside a write;
/// their ids.
pub(super) fn revoke_live_sessions(
    conn: &Connection,
    account_id: AccountId,
    keep: Option<&SessionId>,
    reason: &str,
    now: UnixTime,
) -> StoreResult<Vec<SessionId>> {
    returning_ids(
        conn,
        "UPDATE sessions SET revoked_at = ?, revoked_reason = ? \
         WHERE account_id = ? AND revoked_at IS NULL AND id <> ? RETURNING id",
        params![now, reason, account_id, keep.map_or("", String::as_str)],
    )
}

pub(super) fn returning_ids(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> StoreResult<Vec<SessionId>> {
    conn.prepare_cached(sql)
        .and_then(|mut update| update.query_map(params, |row| row.get(0))?.collect())
        .map_err(db_error)
}

/// Inserts a new session of `account_id` with its first refresh token.
pub(super) fn open_session(
    conn: &Connection,
    session: &NewSession,
    account_id: AccountId,
    refresh: &NewRefreshToken,
) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO sessions (id, account_id, platform, user_agent, ip, token_style, created_at, \
         expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .and_then(|mut insert| {
        insert.execute(params![
            session.id,
            account_id,
            session.platform,
            session.user_agent,
            session.ip,
            session.token_style.as_str(),
            session.created_at,
            session.expires_at,
        ])
    })
    .map_err(db_error)?;
    conn.prepare_cached(
        "INSERT INTO refresh_tokens (token_hash, session_id, issued_at) VALUES (?, ?, ?)",
    )
    .and_then(|mut insert| {
        insert.execute(params![&refresh.hash[..], session.id, refresh.issued_at])
    })
    .map(drop)
    .map_err(db_error)
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn record_login(
        &self,
        login: &LoginRecord,
        session: &NewSession,
        refresh: &NewRefreshToken,
        replace_platform: bool,
    ) -> StoreResult<Option<Vec<SessionId>>> {
        let (login, session, refresh) = (login.clone(), session.clone(), refresh.clone());
        self.write(move |conn| {
            // Writes are serialised: a disabling committed before this
            // write is seen here, one after it revokes the session.
            if !record_success(conn, &login)? {
                return Ok(None);
            }
            let replaced = if replace_platform {
                returning_ids(
                    conn,
                    "UPDATE sessions SET revoked_at = ?, revoked_reason = 'replaced' \
                     WHERE account_id = ? AND platform = ? AND revoked_at IS NULL \
                     AND NOT EXISTS (SELECT 1 FROM oauth_sessions o WHERE o.session_id = sessions.id) \
                     RETURNING id",
                    params![session.created_at, session.account_id, session.platform],
                )?
            } else {
                Vec::new()
            };
            open_session(conn, &session, session.account_id, &refresh)?;
            Ok(Some(replaced))
        })
        .await
    }

    async fn get_session(&self, id: &SessionId) -> StoreResult<Option<Session>> {
        self.read(|conn| Ok(sessions_where(conn, select_sessions!("s.id = ?"), [id])?.pop()))
    }

    /// A scan of every live session: off the async workers.
    async fn count_live_sessions(&self, now: UnixTime) -> StoreResult<i64> {
        self.read_off_workers(move |conn| {
            conn.prepare_cached(
                "SELECT count(*) FROM sessions WHERE revoked_at IS NULL AND expires_at > ?",
            )
            .and_then(|mut statement| statement.query_row([now], |row| row.get(0)))
            .map_err(db_error)
        })
        .await
    }

    async fn list_live_sessions(
        &self,
        account_id: AccountId,
        now: UnixTime,
    ) -> StoreResult<Vec<Session>> {
        self.read(|conn| {
            sessions_where(
                conn,
                select_sessions!(
                    "s.account_id = ? AND s.revoked_at IS NULL AND s.expires_at > ? \
                     ORDER BY s.created_at, s.id"
                ),
                params![account_id, now],
            )
        })
    }

    async fn page_live_sessions(
        &self,
        account_id: AccountId,
        now: UnixTime,
        after: Option<&SessionCursor>,
        limit: u32,
    ) -> StoreResult<Vec<Session>> {
        let (after_created, after_id) = match after {
            Some(cursor) => (cursor.created_at, cursor.id.clone()),
            None => (UnixTime::MIN, String::new()),
        };
        self.read(move |conn| {
            sessions_where(
                conn,
                PAGE_OF_LIVE_SESSIONS,
                params![account_id, now, after_created, after_id, limit],
            )
        })
    }

    async fn revoke_session(
        &self,
        id: &SessionId,
        now: UnixTime,
        reason: &str,
    ) -> StoreResult<bool> {
        let (id, reason) = (id.clone(), reason.to_owned());
        self.write(move |conn| {
            conn.prepare_cached(
                "UPDATE sessions SET revoked_at = ?, revoked_reason = ? WHERE id = ? AND revoked_at IS NULL",
            )
            .and_then(|mut update| update.execute(params![now, reason, id]))
            .map(|revoked| revoked > 0)
            .map_err(db_error)
        })
        .await
    }

    async fn revoke_account_sessions(
        &self,
        account_id: AccountId,
        keep: Option<&SessionId>,
        now: UnixTime,
        reason: &str,
    ) -> StoreResult<Vec<SessionId>> {
        let (keep, reason) = (keep.cloned().unwrap_or_default(), reason.to_owned());
        // As many rows as the account has sessions: off the async workers.
        self.write_off_workers(move |conn| {
            revoke_live_sessions(conn, account_id, Some(&keep), &reason, now)
        })
        .await
    }

    async fn find_refresh_token_with_session(
        &self,
        hash: &TokenHash,
    ) -> StoreResult<Option<(RefreshToken, Session)>> {
        self.read(|conn| {
            conn.prepare_cached(concat!(
                "SELECT ",
                session_columns!(),
                ", t.token_hash, t.issued_at, t.rotated_at, t.successor_salt \
                 FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id \
                 JOIN accounts a ON a.id = s.account_id WHERE t.token_hash = ?"
            ))
            .and_then(|mut select| {
                select
                    .query_row([&hash[..]], |row| {
                        let session = session_from_row(row)?;
                        Ok((refresh_from_row(row, session.id.clone())?, session))
                    })
                    .optional()
            })
            .map_err(db_error)
        })
    }

    async fn find_refresh_token(&self, hash: &TokenHash) -> StoreResult<Option<RefreshToken>> {
        self.read(|conn| {
            conn.prepare_cached(
                "SELECT token_hash, session_id, issued_at, rotated_at, successor_salt FROM refresh_tokens \
                 WHERE token_hash = ?",
            )
            .and_then(|mut select| {
                select
                    .query_row([&hash[..]], |row| refresh_from_row(row, row.get("session_id")?))
                    .optional()
            })
            .map_err(db_error)
        })
    }

    async fn replace_access_token(
        &self,
        session_id: &SessionId,
        hash: &TokenHash,
        expires_at: UnixTime,
    ) -> StoreResult<Option<bool>> {
        let (session_id, hash) = (session_id.clone(), *hash);
        self.write(move |conn| {
            let replaced = conn
                .prepare_cached(
                    "DELETE FROM access_tokens WHERE session_id = ? AND token_hash <> ?",
                )
                .and_then(|mut delete| delete.execute(params![&session_id, &hash[..]]))
                .map_err(db_error)?;
            // None for a session gone meanwhile (its account deleted).
            conn.prepare_cached(
                "INSERT INTO access_tokens (token_hash, session_id, expires_at) \
                 SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM sessions WHERE id = ?2) \
                 ON CONFLICT (token_hash) DO UPDATE SET expires_at = excluded.expires_at \
                 WHERE access_tokens.session_id = excluded.session_id",
            )
            .and_then(|mut insert| insert.execute(params![&hash[..], session_id, expires_at]))
            .map(|inserted| (inserted > 0).then_some(replaced > 0))
            .map_err(db_error)
        })
        .await
    }

    async fn find_access_token(&self, hash: &TokenHash) -> StoreResult<Option<OpaqueAccessToken>> {
        self.read(|conn| {
            conn.prepare_cached(
                "SELECT t.session_id, s.account_id, t.expires_at FROM access_tokens t \
                 JOIN sessions s ON s.id = t.session_id WHERE t.token_hash = ?",
            )
            .and_then(|mut select| {
                select
                    .query_row([&hash[..]], |row| {
                        Ok(OpaqueAccessToken {
                            session_id: row.get(0)?,
                            account_id: row.get(1)?,
                            expires_at: row.get(2)?,
                        })
                    })
                    .optional()
            })
            .map_err(db_error)
        })
    }

    /// One statement: inserting the successor marks its parent rotated (the
    /// `refresh_tokens_rotate` trigger), but only if the parent belongs to
    /// the session and is not rotated yet. Concurrent rotations of one token
    /// land in the writer one after the other; the second finds it rotated.
    /// Dated when written, by the core's clock (see
    /// [`SqliteStore::set_clock`]); left out if queued behind a stall
    /// that its caller did not wait for (nobody could receive the
    /// successor, and the client's retry would find its token spent).
    async fn rotate_refresh_token(
        &self,
        old: &TokenHash,
        successor_salt: &[u8],
        successor: &NewRefreshToken,
        now: UnixTime,
    ) -> StoreResult<bool> {
        let (old, salt, successor) = (*old, successor_salt.to_vec(), successor.clone());
        let clock = self.inner.clock.get().cloned();
        self.write_for_caller(move |conn| {
            let now = clock.map_or(now, |clock| clock.now().max(now));
            conn.prepare_cached(
                "INSERT INTO refresh_tokens (token_hash, session_id, issued_at, parent_hash, parent_salt) \
                 SELECT ?1, session_id, ?2, token_hash, ?3 FROM refresh_tokens \
                 WHERE token_hash = ?4 AND session_id = ?5 AND rotated_at IS NULL",
            )
            .and_then(|mut insert| {
                insert.execute(params![
                    &successor.hash[..],
                    now,
                    salt,
                    &old[..],
                    successor.session_id
                ])
            })
            .map(|inserted| inserted == 1)
            .map_err(db_error)
        })
        .await
    }

    async fn purge(&self, cutoffs: &PurgeCutoffs, batch: u32) -> StoreResult<Purged> {
        let cutoffs = *cutoffs;
        self.write_off_workers(move |conn| {
            let delete = |sql: &str, before: UnixTime| {
                conn.prepare_cached(sql)
                    .and_then(|mut delete| delete.execute(params![before, batch]))
                    .map(|deleted| deleted as u64)
                    .map_err(db_error)
            };
            Ok(Purged {
                sessions: delete(
                    "DELETE FROM sessions WHERE rowid IN (SELECT rowid FROM sessions \
                     WHERE revoked_at < ?1 UNION SELECT rowid FROM sessions WHERE expires_at < ?1 \
                     LIMIT ?2)",
                    cutoffs.ended_before,
                )?,
                refresh_tokens: delete(
                    "DELETE FROM refresh_tokens WHERE rowid IN (SELECT rowid FROM refresh_tokens \
                     WHERE rotated_at < ? LIMIT ?)",
                    cutoffs.spent_before,
                )?,
                access_tokens: delete(
                    "DELETE FROM access_tokens WHERE rowid IN (SELECT rowid FROM access_tokens \
                     WHERE expires_at < ? LIMIT ?)",
                    cutoffs.expired_before,
                )?,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::store::conformance;
    use crate::store::sqlite::SqliteStore;

    async fn store() -> (tempfile::TempDir, Arc<SqliteStore>) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::connect(&SqliteStore::url_for_data_dir(dir.path()))
            .await
            .unwrap();
        (dir, Arc::new(store))
    }

    /// Another process holds the database (the CLI, say): rotations queue
    /// behind it. One is dated when it is written, not when it was asked
    /// for (a retry meanwhile is judged from then), and one whose caller
    /// gave up is left out (nobody could receive its successor, and the
    /// client's retry would find its token spent).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rotations_behind_a_stall_are_dated_when_written_and_left_out_when_abandoned() {
        use crate::store::{SessionStore, Store, SuccessorHashes};
        let (dir, store) = store().await;
        conformance::sessions_for_tests(&*store, 3).await;
        let clock = Arc::new(crate::clock::ManualClock::new(10));
        Store::set_clock(&*store, clock.clone());
        let successors = |b: u8| SuccessorHashes {
            jwt: [b; 32],
            opaque: [b + 1; 32],
        };
        let other = rusqlite::Connection::open(dir.path().join("sesame.db")).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let stalled = tokio::spawn({
            let store = Arc::clone(&store);
            async move {
                store
                    .find_and_rotate_refresh_token(&[0; 32], &[9], &successors(50), 10)
                    .await
            }
        });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!stalled.is_finished(), "waits for the other process");
        let gave_up = tokio::time::timeout(
            std::time::Duration::from_millis(300),
            store.find_and_rotate_refresh_token(&[1; 32], &[8], &successors(60), 10),
        )
        .await;
        assert!(gave_up.is_err(), "queued behind the stall");
        clock.advance(10);
        other.execute_batch("COMMIT").unwrap();
        assert!(stalled.await.unwrap().unwrap().unwrap().2, "rotated");
        let parent = store.find_refresh_token(&[0; 32]).await.unwrap().unwrap();
        assert_eq!(parent.rotated_at, Some(20), "dated when written");
        let later = store
            .find_and_rotate_refresh_token(&[2; 32], &[7], &successors(70), 20)
            .await
            .unwrap()
            .unwrap();
        assert!(later.2);
        // Everything queued before this has run (the queue is in order).
        store.write_off_workers(|_| Ok(())).await.unwrap();
        let abandoned = store.find_refresh_token(&[1; 32]).await.unwrap().unwrap();
        assert_eq!(abandoned.rotated_at, None, "not rotated for nobody");
        assert!(store.find_refresh_token(&[60; 32]).await.unwrap().is_none());
    }

    /// A page reads the account's live sessions in index order: no scan
    /// of all its sessions, no sort.
    #[tokio::test]
    async fn a_page_of_sessions_is_read_in_index_order() {
        let (_dir, store) = store().await;
        let plan = store
            .read(|conn| {
                let explain = |conn: &rusqlite::Connection| -> rusqlite::Result<String> {
                    let mut statement = conn.prepare(&format!(
                        "EXPLAIN QUERY PLAN {}",
                        super::PAGE_OF_LIVE_SESSIONS
                    ))?;
                    let details = statement
                        .query_map(rusqlite::params![1, 0, 0, "", 50], |row| {
                            row.get::<_, String>(3)
                        })?
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok(details.join("\n"))
                };
                Ok(explain(conn).unwrap())
            })
            .unwrap();
        assert!(plan.contains("INDEX sessions_account_live"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "sorted: {plan}");
    }

    #[tokio::test]
    async fn verifier_upgrades_never_overwrite_a_new_password() {
        let (_dir, store) = store().await;
        conformance::verifier_upgrades_never_overwrite_a_new_password(store).await;
    }

    #[tokio::test]
    async fn logins_and_lockouts_never_undo_a_disabling() {
        let (_dir, store) = store().await;
        conformance::logins_and_lockouts_never_undo_a_disabling(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_rotations_of_one_token_have_exactly_one_winner() {
        let (_dir, store) = store().await;
        conformance::concurrent_rotations_have_one_winner(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_read_and_rotate_in_one_step_has_one_winner() {
        let (_dir, store) = store().await;
        conformance::concurrent_find_and_rotate_has_one_winner(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn independent_rotations_in_one_batch_all_win() {
        let (_dir, store) = store().await;
        conformance::independent_rotations_all_win(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_single_platform_logins_leave_one_live_session() {
        let (_dir, store) = store().await;
        conformance::concurrent_single_platform_logins(store).await;
    }

    #[tokio::test]
    async fn live_sessions_come_in_pages() {
        let (_dir, store) = store().await;
        conformance::live_sessions_in_pages(store).await;
    }

    #[tokio::test]
    async fn known_clients_are_remembered_newest_first() {
        let (_dir, store) = store().await;
        conformance::known_clients_newest_first(store).await;
    }

    #[tokio::test]
    async fn purge_removes_only_what_ended_long_enough_ago() {
        let (_dir, store) = store().await;
        conformance::purge_removes_only_what_ended(store).await;
    }

    #[tokio::test]
    async fn api_calls_are_counted_per_period() {
        let (_dir, store) = store().await;
        conformance::api_calls_count_per_period(store).await;
    }

    #[tokio::test]
    async fn roles_never_leave_the_deployment_without_an_administrator() {
        let (_dir, store) = store().await;
        conformance::roles_and_the_last_administrator(store).await;
    }

    #[tokio::test]
    async fn a_new_password_ends_sessions_with_it() {
        let (_dir, store) = store().await;
        conformance::a_new_password_ends_sessions_with_it(store).await;
    }

    #[tokio::test]
    async fn account_changes_are_all_or_nothing() {
        let (_dir, store) = store().await;
        conformance::account_changes_are_all_or_nothing(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn administrators_disabling_each_other_at_once_leave_one() {
        let (_dir, store) = store().await;
        conformance::concurrent_demotions_leave_an_administrator(store).await;
    }

    #[tokio::test]
    async fn oauth_clients_are_stored_as_written() {
        let (_dir, store) = store().await;
        conformance::oauth_clients(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_code_exchanged_at_once_eight_times_opens_one_session() {
        let (_dir, store) = store().await;
        conformance::codes_are_redeemed_once(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ending_all_sessions_while_a_code_is_exchanged_leaves_none_live() {
        let (_dir, store) = store().await;
        conformance::ending_all_sessions_races_a_code_exchange(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_opaque_token_replacements_leave_one() {
        let (_dir, store) = store().await;
        conformance::one_opaque_token_per_session(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deployment_secret_is_made_once() {
        let (_dir, store) = store().await;
        conformance::deployment_secrets_are_made_once(store).await;
    }
}
