//! Sessions and refresh-token chains in SQLite.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::accounts::remember_clients;
use super::{SqliteStore, corrupt, db_error};
use crate::core::clock::UnixTime;
use crate::store::{
    AccountId, LoginRecord, NewRefreshToken, NewSession, OpaqueAccessToken, RefreshToken, Session,
    SessionId, SessionStore, StoreResult, TokenHash, TokenStyle,
};

const SESSION_COLUMNS: &str = "s.id, s.account_id, s.platform, s.user_agent, s.ip, s.token_style, s.created_at, \
     COALESCE((SELECT MAX(r.issued_at) FROM refresh_tokens r WHERE r.session_id = s.id), s.created_at) AS last_used_at, \
     s.expires_at, s.revoked_at, a.status = 'active' AS account_active";

fn session_from_row(row: &SqliteRow) -> StoreResult<Session> {
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

fn hash_from_blob(blob: Vec<u8>) -> StoreResult<TokenHash> {
    blob.try_into()
        .map_err(|_| corrupt("refresh token hash length"))
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn record_login(
        &self,
        login: &LoginRecord,
        session: &NewSession,
        refresh: &NewRefreshToken,
        replace_platform: bool,
    ) -> StoreResult<Vec<SessionId>> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_error)?;
        sqlx::query(
            "UPDATE accounts SET login_count = login_count + 1, last_login_at = ?, last_login_ip = ?, \
             consecutive_failures = 0 WHERE id = ?",
        )
        .bind(login.at)
        .bind(&login.ip)
        .bind(login.account_id)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        remember_clients(
            &mut tx,
            login.account_id,
            &login.clients,
            login.at,
            login.keep,
        )
        .await?;
        let replaced: Vec<SessionId> = if replace_platform {
            sqlx::query_scalar(
                "UPDATE sessions SET revoked_at = ?, revoked_reason = 'replaced' \
                 WHERE account_id = ? AND platform = ? AND revoked_at IS NULL RETURNING id",
            )
            .bind(session.created_at)
            .bind(session.account_id)
            .bind(&session.platform)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?
        } else {
            Vec::new()
        };
        sqlx::query(
            "INSERT INTO sessions (id, account_id, platform, user_agent, ip, token_style, created_at, \
             expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&session.id)
        .bind(session.account_id)
        .bind(&session.platform)
        .bind(&session.user_agent)
        .bind(&session.ip)
        .bind(session.token_style.as_str())
        .bind(session.created_at)
        .bind(session.expires_at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        insert_refresh(&mut tx, refresh).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(replaced)
    }

    async fn get_session(&self, id: &SessionId) -> StoreResult<Option<Session>> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions s JOIN accounts a ON a.id = s.account_id WHERE s.id = ?"
        );
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.reader)
            .await
            .map_err(db_error)?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn list_live_sessions(
        &self,
        account_id: AccountId,
        now: UnixTime,
    ) -> StoreResult<Vec<Session>> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions s JOIN accounts a ON a.id = s.account_id \
             WHERE s.account_id = ? AND s.revoked_at IS NULL AND s.expires_at > ? ORDER BY s.created_at, s.id"
        );
        let rows = sqlx::query(&sql)
            .bind(account_id)
            .bind(now)
            .fetch_all(&self.reader)
            .await
            .map_err(db_error)?;
        rows.iter().map(session_from_row).collect()
    }

    async fn revoke_session(
        &self,
        id: &SessionId,
        now: UnixTime,
        reason: &str,
    ) -> StoreResult<bool> {
        let result =
            sqlx::query("UPDATE sessions SET revoked_at = ?, revoked_reason = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(now)
                .bind(reason)
                .bind(id)
                .execute(&self.writer)
                .await
                .map_err(db_error)?;
        Ok(result.rows_affected() > 0)
    }

    async fn revoke_account_sessions(
        &self,
        account_id: AccountId,
        keep: Option<&SessionId>,
        now: UnixTime,
        reason: &str,
    ) -> StoreResult<Vec<SessionId>> {
        sqlx::query_scalar(
            "UPDATE sessions SET revoked_at = ?, revoked_reason = ? \
             WHERE account_id = ? AND revoked_at IS NULL AND id <> ? RETURNING id",
        )
        .bind(now)
        .bind(reason)
        .bind(account_id)
        .bind(keep.map(String::as_str).unwrap_or(""))
        .fetch_all(&self.writer)
        .await
        .map_err(db_error)
    }

    async fn find_refresh_token_with_session(
        &self,
        hash: &TokenHash,
    ) -> StoreResult<Option<(RefreshToken, Session)>> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS}, t.token_hash, t.issued_at, t.rotated_at, t.successor_salt \
             FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id JOIN accounts a ON a.id = s.account_id \
             WHERE t.token_hash = ?"
        );
        let row = sqlx::query(&sql)
            .bind(&hash[..])
            .fetch_optional(&self.reader)
            .await
            .map_err(db_error)?;
        let Some(row) = row else { return Ok(None) };
        let session = session_from_row(&row)?;
        let token = RefreshToken {
            hash: hash_from_blob(row.try_get("token_hash").map_err(db_error)?)?,
            session_id: session.id.clone(),
            issued_at: row.try_get("issued_at").map_err(db_error)?,
            rotated_at: row.try_get("rotated_at").map_err(db_error)?,
            successor_salt: row.try_get("successor_salt").map_err(db_error)?,
        };
        Ok(Some((token, session)))
    }

    async fn find_refresh_token(&self, hash: &TokenHash) -> StoreResult<Option<RefreshToken>> {
        let row = sqlx::query(
            "SELECT token_hash, session_id, issued_at, rotated_at, successor_salt FROM refresh_tokens \
             WHERE token_hash = ?",
        )
        .bind(&hash[..])
        .fetch_optional(&self.reader)
        .await
        .map_err(db_error)?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(RefreshToken {
            hash: hash_from_blob(row.try_get("token_hash").map_err(db_error)?)?,
            session_id: row.try_get("session_id").map_err(db_error)?,
            issued_at: row.try_get("issued_at").map_err(db_error)?,
            rotated_at: row.try_get("rotated_at").map_err(db_error)?,
            successor_salt: row.try_get("successor_salt").map_err(db_error)?,
        }))
    }

    async fn replace_access_token(
        &self,
        session_id: &SessionId,
        hash: &TokenHash,
        expires_at: UnixTime,
    ) -> StoreResult<()> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_error)?;
        sqlx::query("DELETE FROM access_tokens WHERE session_id = ?")
            .bind(session_id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        sqlx::query(
            "INSERT INTO access_tokens (token_hash, session_id, expires_at) VALUES (?, ?, ?)",
        )
        .bind(&hash[..])
        .bind(session_id)
        .bind(expires_at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    async fn find_access_token(&self, hash: &TokenHash) -> StoreResult<Option<OpaqueAccessToken>> {
        let row = sqlx::query(
            "SELECT t.session_id, s.account_id, t.expires_at FROM access_tokens t \
             JOIN sessions s ON s.id = t.session_id WHERE t.token_hash = ?",
        )
        .bind(&hash[..])
        .fetch_optional(&self.reader)
        .await
        .map_err(db_error)?;
        row.map(|row| {
            Ok(OpaqueAccessToken {
                session_id: row.try_get("session_id").map_err(db_error)?,
                account_id: row.try_get("account_id").map_err(db_error)?,
                expires_at: row.try_get("expires_at").map_err(db_error)?,
            })
        })
        .transpose()
    }

    /// Batched with concurrent rotations into one statement (see `rotation`).
    async fn rotate_refresh_token(
        &self,
        old: &TokenHash,
        successor_salt: &[u8],
        successor: &NewRefreshToken,
        now: UnixTime,
    ) -> StoreResult<bool> {
        self.rotations
            .rotate(old, successor_salt, successor, now)
            .await
    }
}

async fn insert_refresh(
    conn: &mut sqlx::SqliteConnection,
    refresh: &NewRefreshToken,
) -> StoreResult<()> {
    sqlx::query("INSERT INTO refresh_tokens (token_hash, session_id, issued_at) VALUES (?, ?, ?)")
        .bind(&refresh.hash[..])
        .bind(&refresh.session_id)
        .bind(refresh.issued_at)
        .execute(conn)
        .await
        .map_err(db_error)?;
    Ok(())
}
