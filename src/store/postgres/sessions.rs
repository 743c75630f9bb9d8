//! Sessions and refresh-token chains in PostgreSQL.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::{DEADLOCK_RETRIES, PostgresStore, corrupt, db_error, is_deadlock};
use crate::clock::UnixTime;
use crate::store::{
    AccountId, ClientKind, LoginRecord, NewRefreshToken, NewSession, OpaqueAccessToken,
    PurgeCutoffs, Purged, RefreshToken, Session, SessionCursor, SessionId, SessionStore,
    StoreResult, SuccessorHashes, TokenHash, TokenStyle,
};

/// The columns of a session with its derived last use and its account's status.
macro_rules! session_columns {
    () => {
        "s.id, s.account_id, s.platform, s.user_agent, s.ip, s.token_style, s.created_at, \
         COALESCE((SELECT MAX(r.issued_at) FROM refresh_tokens r WHERE r.session_id = s.id), s.created_at) AS last_used_at, \
         s.expires_at, s.revoked_at, a.status <> 'disabled' AS account_active"
    };
}

pub(super) use session_columns;

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
/// the `sessions_account_live` index (migration 0008). The row comparison
/// and the order use the same (deterministic) collation, so a page starts
/// right after the cursor.
pub(super) const PAGE_OF_LIVE_SESSIONS: &str = select_sessions!(
    "s.account_id = $1 AND s.revoked_at IS NULL AND s.expires_at > $2 \
     AND (s.created_at, s.id) > ($3, $4) \
     ORDER BY s.created_at, s.id LIMIT $5"
);

pub(super) fn session_from_row(row: &PgRow) -> StoreResult<Session> {
    let style: String = row.try_get("token_style").map_err(db_error)?;
    Ok(Session {
        id: row.try_get("id").map_err(db_error)?,
        account_id: row.try_get("account_id").map_err(db_error)?,
        platform: row.try_get("platform").map_err(db_error)?,
        user_agent: row.try_get("user_agent").map_err(db_error)?,
        ip: row.try_get("ip").map_err(db_error)?,
        token_style: TokenStyle::parse(&style).ok_or_else(|| corrupt("session token style"))?,
        created_at: row.try_get("created_at").map_err(db_error)?,
        last_used_at: row.try_get("last_used_at").map_err(db_error)?,
        expires_at: row.try_get("expires_at").map_err(db_error)?,
        revoked_at: row.try_get("revoked_at").map_err(db_error)?,
        account_active: row.try_get("account_active").map_err(db_error)?,
    })
}

pub(super) fn refresh_from_row(row: &PgRow, session_id: SessionId) -> StoreResult<RefreshToken> {
    let hash: Vec<u8> = row.try_get("token_hash").map_err(db_error)?;
    Ok(RefreshToken {
        hash: hash
            .try_into()
            .map_err(|_| corrupt("refresh token hash length"))?,
        session_id,
        issued_at: row.try_get("issued_at").map_err(db_error)?,
        rotated_at: row.try_get("rotated_at").map_err(db_error)?,
        successor_salt: row.try_get("successor_salt").map_err(db_error)?,
    })
}

/// Ends every live session of an account but `keep`, in the caller's
/// transaction (which should hold the account's row, as logins lock it
/// before they open a session); their ids.
pub(super) async fn revoke_live_sessions(
    tx: &mut sqlx::PgConnection,
    account_id: AccountId,
    keep: Option<&SessionId>,
    reason: &str,
    now: UnixTime,
) -> StoreResult<Vec<SessionId>> {
    ids(sqlx::query(
        "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 \
         WHERE account_id = $3 AND revoked_at IS NULL AND id <> $4 RETURNING id",
    )
    .bind(now)
    .bind(reason)
    .bind(account_id)
    .bind(keep.map_or("", String::as_str))
    .fetch_all(&mut *tx)
    .await
    .map_err(db_error)?)
}

pub(super) fn ids(rows: Vec<PgRow>) -> StoreResult<Vec<SessionId>> {
    rows.iter()
        .map(|row| row.try_get(0).map_err(db_error))
        .collect()
}

#[async_trait]
impl SessionStore for PostgresStore {
    /// One call of `sesame_record_login` (migrations/postgres/0007), one
    /// transaction. Its first statement updates the account's row and so
    /// holds that row's lock until commit: concurrent logins of one account,
    /// from any node, pass there one at a time. Under READ COMMITTED each
    /// later statement takes a fresh snapshot and sees every session
    /// committed before the lock was granted, so the single-platform
    /// replacement revokes the session a concurrent login just opened, and
    /// exactly one stays live.
    async fn record_login(
        &self,
        login: &LoginRecord,
        session: &NewSession,
        refresh: &NewRefreshToken,
        replace_platform: bool,
    ) -> StoreResult<Option<Vec<SessionId>>> {
        let rows = sqlx::query(
            "SELECT * FROM sesame_record_login($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
             $12, $13, $14, $15, $16, $17)",
        )
        .bind(login.account_id)
        .bind(login.at)
        .bind(&login.ip)
        .bind(login.client(ClientKind::Device))
        .bind(login.client(ClientKind::Address))
        .bind(i64::from(login.keep))
        .bind(replace_platform)
        .bind(&session.id)
        .bind(&session.platform)
        .bind(&session.user_agent)
        .bind(&session.ip)
        .bind(session.token_style.as_str())
        .bind(session.created_at)
        .bind(session.expires_at)
        .bind(&refresh.hash[..])
        .bind(refresh.issued_at)
        .bind(&login.password_hash)
        .fetch_all(&self.pool)
        .await;
        match rows {
            Ok(rows) => ids(rows).map(Some),
            // Raised by the function: the account is gone or disabled, or
            // its password changed (migrations/postgres/0006, 0007).
            Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("P0002") => {
                Ok(None)
            }
            Err(error) => Err(db_error(error)),
        }
    }

    async fn get_session(&self, id: &SessionId) -> StoreResult<Option<Session>> {
        sqlx::query(select_sessions!("s.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?
            .as_ref()
            .map(session_from_row)
            .transpose()
    }

    async fn count_live_sessions(&self, now: UnixTime) -> StoreResult<i64> {
        sqlx::query_scalar(
            "SELECT count(*) FROM sessions WHERE revoked_at IS NULL AND expires_at > $1",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(db_error)
    }

    async fn list_live_sessions(
        &self,
        account_id: AccountId,
        now: UnixTime,
    ) -> StoreResult<Vec<Session>> {
        sqlx::query(select_sessions!(
            "s.account_id = $1 AND s.revoked_at IS NULL AND s.expires_at > $2 \
             ORDER BY s.created_at, s.id"
        ))
        .bind(account_id)
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?
        .iter()
        .map(session_from_row)
        .collect()
    }

    async fn page_live_sessions(
        &self,
        account_id: AccountId,
        now: UnixTime,
        after: Option<&SessionCursor>,
        limit: u32,
    ) -> StoreResult<Vec<Session>> {
        let (after_created, after_id) = match after {
            Some(cursor) => (cursor.created_at, cursor.id.as_str()),
            None => (UnixTime::MIN, ""),
        };
        sqlx::query(PAGE_OF_LIVE_SESSIONS)
            .bind(account_id)
            .bind(now)
            .bind(after_created)
            .bind(after_id)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?
            .iter()
            .map(session_from_row)
            .collect()
    }

    async fn revoke_session(
        &self,
        id: &SessionId,
        now: UnixTime,
        reason: &str,
    ) -> StoreResult<bool> {
        sqlx::query(
            "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 \
             WHERE id = $3 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(reason)
        .bind(id)
        .execute(&self.pool)
        .await
        .map(|done| done.rows_affected() > 0)
        .map_err(db_error)
    }

    async fn revoke_account_sessions(
        &self,
        account_id: AccountId,
        keep: Option<&SessionId>,
        now: UnixTime,
        reason: &str,
    ) -> StoreResult<Vec<SessionId>> {
        // The account's row is locked first, as a login and a code
        // redemption lock it before they open a session: one of those that
        // commits while this waits is then in the snapshot of the update
        // (under READ COMMITTED, taken when the update starts), and one that
        // comes later waits for this commit. Without the lock, a session
        // opened while the update waited on another row would outlive
        // "sign out everywhere" or a password reset.
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        sqlx::query("SELECT 1 FROM accounts WHERE id = $1 FOR NO KEY UPDATE")
            .bind(account_id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let ended = revoke_live_sessions(&mut tx, account_id, keep, reason, now).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(ended)
    }

    async fn find_refresh_token_with_session(
        &self,
        hash: &TokenHash,
    ) -> StoreResult<Option<(RefreshToken, Session)>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            session_columns!(),
            ", t.token_hash, t.issued_at, t.rotated_at, t.successor_salt \
             FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id \
             JOIN accounts a ON a.id = s.account_id WHERE t.token_hash = $1"
        ))
        .bind(&hash[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        let Some(row) = row else { return Ok(None) };
        let session = session_from_row(&row)?;
        Ok(Some((refresh_from_row(&row, session.id.clone())?, session)))
    }

    async fn find_refresh_token(&self, hash: &TokenHash) -> StoreResult<Option<RefreshToken>> {
        let row = sqlx::query(
            "SELECT token_hash, session_id, issued_at, rotated_at, successor_salt \
             FROM refresh_tokens WHERE token_hash = $1",
        )
        .bind(&hash[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        let Some(row) = row else { return Ok(None) };
        let session_id = row.try_get("session_id").map_err(db_error)?;
        refresh_from_row(&row, session_id).map(Some)
    }

    async fn replace_access_token(
        &self,
        session_id: &SessionId,
        hash: &TokenHash,
        expires_at: UnixTime,
    ) -> StoreResult<Option<bool>> {
        // The session's row is locked first, so that two replacements for
        // one session (a refresh retried on two nodes) take turns: the
        // second one's delete, whose snapshot is taken after the lock, then
        // finds the first one's token. Without it, each would delete only
        // the token before both and insert its own: two live tokens. A
        // session gone meanwhile (its account deleted) gets none.
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let session = sqlx::query("SELECT 1 FROM sessions WHERE id = $1 FOR NO KEY UPDATE")
            .bind(session_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
        if session.is_none() {
            return Ok(None);
        }
        let replaced = sqlx::query_scalar(
            "WITH gone AS (DELETE FROM access_tokens WHERE session_id = $2 AND token_hash <> $1 \
               RETURNING 1), \
             made AS (INSERT INTO access_tokens (token_hash, session_id, expires_at) \
               VALUES ($1, $2, $3) ON CONFLICT (token_hash) DO UPDATE SET \
               expires_at = excluded.expires_at WHERE access_tokens.session_id = excluded.session_id \
               RETURNING 1) \
             SELECT EXISTS (SELECT 1 FROM gone) FROM made",
        )
        .bind(&hash[..])
        .bind(session_id)
        .bind(expires_at)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(Some(replaced))
    }

    async fn find_access_token(&self, hash: &TokenHash) -> StoreResult<Option<OpaqueAccessToken>> {
        sqlx::query(
            "SELECT t.session_id, s.account_id, t.expires_at FROM access_tokens t \
             JOIN sessions s ON s.id = t.session_id WHERE t.token_hash = $1",
        )
        .bind(&hash[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?
        .map(|row| {
            Ok(OpaqueAccessToken {
                session_id: row.try_get(0).map_err(db_error)?,
                account_id: row.try_get(1).map_err(db_error)?,
                expires_at: row.try_get(2).map_err(db_error)?,
            })
        })
        .transpose()
    }

    /// One statement: the parent is marked rotated only if it belongs to the
    /// session and is not rotated yet, and the successor is inserted only if
    /// it was. Two nodes rotating one token at once: the second `UPDATE`
    /// waits for the first's row lock, then (READ COMMITTED) re-checks
    /// `rotated_at IS NULL` against the committed row, finds it rotated,
    /// updates nothing and so inserts nothing. Exactly one successor; the
    /// loser reads the winner's salt and hands out the same successor.
    async fn rotate_refresh_token(
        &self,
        old: &TokenHash,
        successor_salt: &[u8],
        successor: &NewRefreshToken,
        now: UnixTime,
    ) -> StoreResult<bool> {
        sqlx::query(
            "WITH parent AS (UPDATE refresh_tokens SET rotated_at = $2, successor_salt = $3 \
             WHERE token_hash = $4 AND session_id = $5 AND rotated_at IS NULL RETURNING session_id) \
             INSERT INTO refresh_tokens (token_hash, session_id, issued_at) \
             SELECT $1, session_id, $2 FROM parent",
        )
        .bind(&successor.hash[..])
        .bind(now)
        .bind(successor_salt)
        .bind(&old[..])
        .bind(&successor.session_id)
        .execute(&self.pool)
        .await
        .map(|done| done.rows_affected() == 1)
        .map_err(db_error)
    }

    /// Group-committed with concurrent rotations (see `rotations.rs`): one
    /// statement reads the token with its session, marks it rotated if it
    /// is not and the session is live, and inserts the successor of the
    /// session's style. Its snapshot is taken before the update; the update
    /// waits for a concurrent rotation's row lock and then re-checks
    /// `rotated_at IS NULL` against the committed row, exactly as
    /// [`SessionStore::rotate_refresh_token`] does, so one rotation wins.
    async fn find_and_rotate_refresh_token(
        &self,
        hash: &TokenHash,
        successor_salt: &[u8],
        successors: &SuccessorHashes,
        now: UnixTime,
    ) -> StoreResult<Option<(RefreshToken, Session, bool)>> {
        self.rotations
            .rotate(hash, successor_salt, successors, now)
            .await
    }

    /// Each delete picks its rows with `SKIP LOCKED`, so nodes purging at
    /// the same time share the work instead of waiting on each other.
    ///
    /// Deleting a session locks its row, then (`ON DELETE CASCADE`) its
    /// tokens' rows; a refresh rotation of one of its tokens locks them the
    /// other way round (the token's row, then the session's for the
    /// successor's foreign key). `SKIP LOCKED` passes over sessions locked
    /// when the delete picks them, not over their tokens, so the two can
    /// deadlock; PostgreSQL then ends one, and when it is the purge's
    /// statement (one statement, its own transaction), it runs again.
    async fn purge(&self, cutoffs: &PurgeCutoffs, batch: u32) -> StoreResult<Purged> {
        // One batch of one table: `sql` deletes at most $2 rows ended before $1.
        let delete = |sql: &'static str, cutoff: UnixTime| async move {
            let mut attempt = 0;
            loop {
                match sqlx::query(sql)
                    .bind(cutoff)
                    .bind(i64::from(batch))
                    .execute(&self.pool)
                    .await
                {
                    Ok(done) => return Ok(done.rows_affected()),
                    Err(error) if is_deadlock(&error) && attempt < DEADLOCK_RETRIES => {
                        attempt += 1;
                    }
                    Err(error) => return Err(db_error(error)),
                }
            }
        };
        self.within(async {
            let sessions = delete(
                "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions \
                 WHERE revoked_at < $1 OR expires_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
                cutoffs.ended_before,
            )
            .await?;
            let refresh_tokens = delete(
                "DELETE FROM refresh_tokens WHERE token_hash IN (SELECT token_hash FROM refresh_tokens \
                 WHERE rotated_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
                cutoffs.spent_before,
            )
            .await?;
            let access_tokens = delete(
                "DELETE FROM access_tokens WHERE token_hash IN (SELECT token_hash FROM access_tokens \
                 WHERE expires_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
                cutoffs.expired_before,
            )
            .await?;
            Ok(Purged {
                sessions,
                refresh_tokens,
                access_tokens,
            })
        })
        .await
    }
}
