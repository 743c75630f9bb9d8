//! OAuth 2.0 clients, authorization codes and client sessions, in PostgreSQL.
//!
//! A code is spent in a transaction that first locks its row (`FOR UPDATE`):
//! of two nodes exchanging one code at once, the second waits, then sees it
//! spent and is told which session the first opened. A row lock rather than
//! SERIALIZABLE: only that one row is contended, and nothing needs a retry.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::{PgConnection, PgRow};

use super::{PostgresStore, db_error};
use crate::clock::UnixTime;
use crate::store::{
    AuthorizationCode, NewRefreshToken, NewSession, OAuthClient, OAuthSession, OAuthStore,
    Redemption, SessionId, StoreError, StoreResult, TokenHash,
};

const CLIENT_COLUMNS: &str = "id, name, secret_hash, redirect_uris, post_logout_redirect_uris, \
     grants, scopes, created_at";

fn list(row: &PgRow, column: &str) -> StoreResult<Vec<String>> {
    let text: String = row.try_get(column).map_err(db_error)?;
    serde_json::from_str(&text).map_err(|_| StoreError::Corrupt(format!("client {column}")))
}

fn hash(bytes: Option<Vec<u8>>) -> StoreResult<Option<TokenHash>> {
    bytes
        .map(|b| TokenHash::try_from(b.as_slice()).map_err(|_| StoreError::Corrupt("hash".into())))
        .transpose()
}

fn client_from_row(row: &PgRow) -> StoreResult<OAuthClient> {
    Ok(OAuthClient {
        id: row.try_get("id").map_err(db_error)?,
        name: row.try_get("name").map_err(db_error)?,
        secret_hash: hash(row.try_get("secret_hash").map_err(db_error)?)?,
        redirect_uris: list(row, "redirect_uris")?,
        post_logout_redirect_uris: list(row, "post_logout_redirect_uris")?,
        grants: list(row, "grants")?,
        scopes: list(row, "scopes")?,
        created_at: row.try_get("created_at").map_err(db_error)?,
    })
}

fn json(list: &[String]) -> String {
    serde_json::Value::from(list).to_string()
}

const CODE_COLUMNS: &str = "code_hash, client_id, redirect_uri, code_challenge, account_id, \
     browser_session, scope, nonce, auth_time, expires_at";

fn code_from_row(row: &PgRow) -> StoreResult<AuthorizationCode> {
    Ok(AuthorizationCode {
        hash: hash(row.try_get("code_hash").map_err(db_error)?)?
            .ok_or_else(|| StoreError::Corrupt("code hash".into()))?,
        client_id: row.try_get("client_id").map_err(db_error)?,
        redirect_uri: row.try_get("redirect_uri").map_err(db_error)?,
        code_challenge: row.try_get("code_challenge").map_err(db_error)?,
        account_id: row.try_get("account_id").map_err(db_error)?,
        browser_session: row.try_get("browser_session").map_err(db_error)?,
        scope: row.try_get("scope").map_err(db_error)?,
        nonce: row.try_get("nonce").map_err(db_error)?,
        auth_time: row.try_get("auth_time").map_err(db_error)?,
        expires_at: row.try_get("expires_at").map_err(db_error)?,
    })
}

/// Inserts a client; `false` when its id is taken.
pub(super) async fn insert_client(
    conn: &mut PgConnection,
    client: &OAuthClient,
) -> StoreResult<bool> {
    let inserted = sqlx::query(
        "INSERT INTO oauth_clients (id, name, secret_hash, redirect_uris, \
         post_logout_redirect_uris, grants, scopes, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&client.id)
    .bind(&client.name)
    .bind(client.secret_hash.as_ref().map(|h| &h[..]))
    .bind(json(&client.redirect_uris))
    .bind(json(&client.post_logout_redirect_uris))
    .bind(json(&client.grants))
    .bind(json(&client.scopes))
    .bind(client.created_at)
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    Ok(inserted.rows_affected() == 1)
}

/// Whether a client has this id.
pub(super) async fn client_exists(conn: &mut PgConnection, id: &str) -> StoreResult<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM oauth_clients WHERE id = $1)")
        .bind(id)
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error)
}

pub(super) async fn insert_grant(conn: &mut PgConnection, grant: &OAuthSession) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO oauth_sessions (session_id, client_id, scope, browser_session, auth_time, \
         nonce) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&grant.session_id)
    .bind(&grant.client_id)
    .bind(&grant.scope)
    .bind(&grant.browser_session)
    .bind(grant.auth_time)
    .bind(&grant.nonce)
    .execute(&mut *conn)
    .await
    .map(drop)
    .map_err(db_error)
}

#[async_trait]
impl OAuthStore for PostgresStore {
    async fn list_clients(&self) -> StoreResult<Vec<OAuthClient>> {
        sqlx::query(&format!(
            "SELECT {CLIENT_COLUMNS} FROM oauth_clients ORDER BY id COLLATE \"C\""
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?
        .iter()
        .map(client_from_row)
        .collect()
    }

    async fn get_client(&self, id: &str) -> StoreResult<Option<OAuthClient>> {
        sqlx::query(&format!(
            "SELECT {CLIENT_COLUMNS} FROM oauth_clients WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?
        .as_ref()
        .map(client_from_row)
        .transpose()
    }

    async fn create_client(&self, client: &OAuthClient) -> StoreResult<()> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        if !insert_client(&mut conn, client).await? {
            return Err(StoreError::Conflict("client_id"));
        }
        Ok(())
    }

    async fn delete_client(&self, id: &str) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        // Its codes too, first: none is redeemed after the client is gone
        // (nor by a client registered again under the same id). A
        // redemption holding a code's row finishes first, and the session
        // it opens is among those the caller ends after this.
        sqlx::query("DELETE FROM oauth_codes WHERE client_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let deleted = sqlx::query("DELETE FROM oauth_clients WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?
            .rows_affected()
            > 0;
        tx.commit().await.map_err(db_error)?;
        Ok(deleted)
    }

    async fn set_client_secret(
        &self,
        id: &str,
        secret_hash: Option<&TokenHash>,
    ) -> StoreResult<bool> {
        sqlx::query("UPDATE oauth_clients SET secret_hash = $1 WHERE id = $2")
            .bind(secret_hash.map(|h| &h[..]))
            .bind(id)
            .execute(&self.pool)
            .await
            .map(|done| done.rows_affected() > 0)
            .map_err(db_error)
    }

    async fn insert_code(&self, code: &AuthorizationCode, now: UnixTime) -> StoreResult<()> {
        sqlx::query(
            "WITH old AS (DELETE FROM oauth_codes WHERE expires_at < $11) \
             INSERT INTO oauth_codes (code_hash, client_id, redirect_uri, code_challenge, \
             account_id, browser_session, scope, nonce, auth_time, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&code.hash[..])
        .bind(&code.client_id)
        .bind(&code.redirect_uri)
        .bind(&code.code_challenge)
        .bind(code.account_id)
        .bind(&code.browser_session)
        .bind(&code.scope)
        .bind(&code.nonce)
        .bind(code.auth_time)
        .bind(code.expires_at)
        .bind(now - 86_400)
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(db_error)
    }

    async fn find_code(
        &self,
        hash: &TokenHash,
        now: UnixTime,
    ) -> StoreResult<Option<AuthorizationCode>> {
        sqlx::query(&format!(
            "SELECT {CODE_COLUMNS} FROM oauth_codes \
             WHERE code_hash = $1 AND used_at IS NULL AND expires_at > $2"
        ))
        .bind(&hash[..])
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?
        .as_ref()
        .map(code_from_row)
        .transpose()
    }

    async fn redeem_code(
        &self,
        hash: &TokenHash,
        session: &NewSession,
        refresh: &NewRefreshToken,
        now: UnixTime,
    ) -> StoreResult<Redemption> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let row = sqlx::query(&format!(
            "SELECT {CODE_COLUMNS}, used_at, session_id FROM oauth_codes \
             WHERE code_hash = $1 FOR UPDATE"
        ))
        .bind(&hash[..])
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let Some(row) = row else {
            return Ok(Redemption::Invalid);
        };
        let used_at: Option<i64> = row.try_get("used_at").map_err(db_error)?;
        let code = code_from_row(&row)?;
        if used_at.is_some() {
            return Ok(Redemption::Replayed {
                opened: row.try_get("session_id").map_err(db_error)?,
                code: Box::new(code),
            });
        }
        if code.expires_at <= now {
            return Ok(Redemption::Invalid);
        }
        // The account must still sign in and the browser session the code
        // came from must still be live. Both rows are share-locked until
        // commit, the account's first (the order every writer of both
        // follows): a disabling, a logout or an end of all the account's
        // sessions that commits first is seen here (READ COMMITTED re-reads
        // a row after the wait), and one that comes after waits for this
        // commit and then finds the session it opens (`revoke_account_sessions`
        // locks the account before it reads the sessions;
        // `end_session_and_its_clients` looks for the browser session's own).
        let live =
            sqlx::query("SELECT 1 FROM accounts WHERE id = $1 AND status <> 'disabled' FOR SHARE")
                .bind(code.account_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?
                .is_some()
                && sqlx::query(
                    "SELECT 1 FROM sessions WHERE id = $1 AND revoked_at IS NULL \
                 AND expires_at > $2 FOR SHARE",
                )
                .bind(&code.browser_session)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?
                .is_some();
        if !live {
            return Ok(Redemption::Invalid);
        }
        sqlx::query("UPDATE oauth_codes SET used_at = $1, session_id = $2 WHERE code_hash = $3")
            .bind(now)
            .bind(&session.id)
            .bind(&hash[..])
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        sqlx::query(
            "INSERT INTO sessions (id, account_id, platform, user_agent, ip, token_style, \
             created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&session.id)
        .bind(code.account_id)
        .bind(&session.platform)
        .bind(&session.user_agent)
        .bind(&session.ip)
        .bind(session.token_style.as_str())
        .bind(session.created_at)
        .bind(session.expires_at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, session_id, issued_at) VALUES ($1, $2, $3)",
        )
        .bind(&refresh.hash[..])
        .bind(&session.id)
        .bind(refresh.issued_at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        insert_grant(
            &mut tx,
            &OAuthSession {
                session_id: session.id.clone(),
                client_id: code.client_id,
                scope: code.scope,
                browser_session: Some(code.browser_session),
                auth_time: code.auth_time,
                nonce: code.nonce,
            },
        )
        .await?;
        tx.commit().await.map_err(db_error)?;
        Ok(Redemption::Redeemed)
    }

    async fn insert_oauth_session(&self, grant: &OAuthSession) -> StoreResult<()> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        insert_grant(&mut conn, grant).await
    }

    async fn get_oauth_session(&self, session_id: &SessionId) -> StoreResult<Option<OAuthSession>> {
        let row = sqlx::query(
            "SELECT session_id, client_id, scope, browser_session, auth_time, nonce \
             FROM oauth_sessions WHERE session_id = $1",
        )
        .bind(session_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(OAuthSession {
            session_id: row.try_get("session_id").map_err(db_error)?,
            client_id: row.try_get("client_id").map_err(db_error)?,
            scope: row.try_get("scope").map_err(db_error)?,
            browser_session: row.try_get("browser_session").map_err(db_error)?,
            auth_time: row.try_get("auth_time").map_err(db_error)?,
            nonce: row.try_get("nonce").map_err(db_error)?,
        }))
    }

    async fn sessions_from_browser(
        &self,
        browser_session: &SessionId,
    ) -> StoreResult<Vec<SessionId>> {
        sqlx::query_scalar(
            "SELECT o.session_id FROM oauth_sessions o JOIN sessions s ON s.id = o.session_id \
             WHERE o.browser_session = $1 AND s.revoked_at IS NULL",
        )
        .bind(browser_session)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)
    }

    async fn move_browser_children(&self, from: &SessionId, to: &SessionId) -> StoreResult<()> {
        sqlx::query("UPDATE oauth_sessions SET browser_session = $1 WHERE browser_session = $2")
            .bind(to)
            .bind(from)
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(db_error)
    }

    async fn sessions_of_client(&self, client_id: &str) -> StoreResult<Vec<SessionId>> {
        sqlx::query_scalar(
            "SELECT o.session_id FROM oauth_sessions o JOIN sessions s ON s.id = o.session_id \
             WHERE o.client_id = $1 AND s.revoked_at IS NULL",
        )
        .bind(client_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)
    }
}
