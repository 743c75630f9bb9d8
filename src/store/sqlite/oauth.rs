//! OAuth 2.0 clients, authorization codes and client sessions, in SQLite.
//! A code is spent and its session opened by one write on the writer
//! thread, so two exchanges of one code can never both open a session.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{SqliteStore, corrupt, db_error};
use crate::clock::UnixTime;
use crate::store::{
    AuthorizationCode, NewRefreshToken, NewSession, OAuthClient, OAuthSession, OAuthStore,
    Redemption, SessionId, StoreError, StoreResult, TokenHash,
};

const CLIENT_COLUMNS: &str = "id, name, secret_hash, redirect_uris, post_logout_redirect_uris, \
     grants, scopes, created_at";

fn list(row: &Row<'_>, index: usize) -> rusqlite::Result<Vec<String>> {
    let text: String = row.get(index)?;
    serde_json::from_str(&text).map_err(|_| corrupt("client list"))
}

fn hash(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<TokenHash>> {
    let bytes: Option<Vec<u8>> = row.get(index)?;
    bytes
        .map(|b| TokenHash::try_from(b.as_slice()).map_err(|_| corrupt("hash")))
        .transpose()
}

fn client_from_row(row: &Row<'_>) -> rusqlite::Result<OAuthClient> {
    Ok(OAuthClient {
        id: row.get(0)?,
        name: row.get(1)?,
        secret_hash: hash(row, 2)?,
        redirect_uris: list(row, 3)?,
        post_logout_redirect_uris: list(row, 4)?,
        grants: list(row, 5)?,
        scopes: list(row, 6)?,
        created_at: row.get(7)?,
    })
}

fn json(list: &[String]) -> String {
    serde_json::Value::from(list).to_string()
}

const CODE_COLUMNS: &str = "code_hash, client_id, redirect_uri, code_challenge, account_id, \
     browser_session, scope, nonce, auth_time, expires_at";

fn code_from_row(row: &Row<'_>) -> rusqlite::Result<AuthorizationCode> {
    Ok(AuthorizationCode {
        hash: hash(row, 0)?.ok_or_else(|| corrupt("code hash"))?,
        client_id: row.get(1)?,
        redirect_uri: row.get(2)?,
        code_challenge: row.get(3)?,
        account_id: row.get(4)?,
        browser_session: row.get(5)?,
        scope: row.get(6)?,
        nonce: row.get(7)?,
        auth_time: row.get(8)?,
        expires_at: row.get(9)?,
    })
}

/// Inserts a client; `false` when its id is taken.
pub(super) fn insert_client(conn: &Connection, client: &OAuthClient) -> StoreResult<bool> {
    conn.prepare_cached(
        "INSERT INTO oauth_clients (id, name, secret_hash, redirect_uris, \
         post_logout_redirect_uris, grants, scopes, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
    )
    .and_then(|mut insert| {
        insert.execute(params![
            client.id,
            client.name,
            client.secret_hash.as_ref().map(|h| &h[..]),
            json(&client.redirect_uris),
            json(&client.post_logout_redirect_uris),
            json(&client.grants),
            json(&client.scopes),
            client.created_at,
        ])
    })
    .map(|inserted| inserted == 1)
    .map_err(db_error)
}

/// Whether a client has this id.
pub(super) fn client_exists(conn: &Connection, id: &str) -> StoreResult<bool> {
    conn.prepare_cached("SELECT 1 FROM oauth_clients WHERE id = ?")
        .and_then(|mut select| select.exists([id]))
        .map_err(db_error)
}

pub(super) fn insert_grant(conn: &Connection, grant: &OAuthSession) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO oauth_sessions (session_id, client_id, scope, browser_session, auth_time, \
         nonce) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .and_then(|mut insert| {
        insert.execute(params![
            grant.session_id,
            grant.client_id,
            grant.scope,
            grant.browser_session,
            grant.auth_time,
            grant.nonce
        ])
    })
    .map(drop)
    .map_err(db_error)
}

/// Live sessions opened for clients, matching `condition` on `oauth_sessions o`.
fn live_sessions_where(
    conn: &Connection,
    condition: &str,
    value: &str,
) -> StoreResult<Vec<SessionId>> {
    let mut select = conn
        .prepare_cached(&format!(
            "SELECT o.session_id FROM oauth_sessions o JOIN sessions s ON s.id = o.session_id \
             WHERE {condition} AND s.revoked_at IS NULL"
        ))
        .map_err(db_error)?;
    let rows = select
        .query_map([value], |row| row.get(0))
        .map_err(db_error)?;
    rows.map(|row| row.map_err(db_error)).collect()
}

#[async_trait]
impl OAuthStore for SqliteStore {
    async fn list_clients(&self) -> StoreResult<Vec<OAuthClient>> {
        self.read(|conn| {
            let mut select = conn
                .prepare_cached(&format!(
                    "SELECT {CLIENT_COLUMNS} FROM oauth_clients ORDER BY id"
                ))
                .map_err(db_error)?;
            let rows = select.query_map([], client_from_row).map_err(db_error)?;
            rows.map(|row| row.map_err(db_error)).collect()
        })
    }

    async fn get_client(&self, id: &str) -> StoreResult<Option<OAuthClient>> {
        self.read(|conn| {
            conn.prepare_cached(&format!(
                "SELECT {CLIENT_COLUMNS} FROM oauth_clients WHERE id = ?"
            ))
            .and_then(|mut select| select.query_row([id], client_from_row).optional())
            .map_err(db_error)
        })
    }

    async fn create_client(&self, client: &OAuthClient) -> StoreResult<()> {
        let client = client.clone();
        self.write(move |conn| {
            if !insert_client(conn, &client)? {
                return Err(StoreError::Conflict("client_id"));
            }
            Ok(())
        })
        .await
    }

    async fn delete_client(&self, id: &str) -> StoreResult<bool> {
        let id = id.to_owned();
        self.write(move |conn| {
            // Its codes too: none is redeemed after the client is gone (nor
            // by a client registered again under the same id).
            conn.prepare_cached("DELETE FROM oauth_codes WHERE client_id = ?")
                .and_then(|mut delete| delete.execute([&id]))
                .map_err(db_error)?;
            conn.prepare_cached("DELETE FROM oauth_clients WHERE id = ?")
                .and_then(|mut delete| delete.execute([&id]))
                .map(|deleted| deleted > 0)
                .map_err(db_error)
        })
        .await
    }

    async fn set_client_secret(
        &self,
        id: &str,
        secret_hash: Option<&TokenHash>,
    ) -> StoreResult<bool> {
        let (id, secret) = (id.to_owned(), secret_hash.map(|h| h.to_vec()));
        self.write(move |conn| {
            conn.prepare_cached("UPDATE oauth_clients SET secret_hash = ? WHERE id = ?")
                .and_then(|mut update| update.execute(params![secret, id]))
                .map(|updated| updated > 0)
                .map_err(db_error)
        })
        .await
    }

    async fn insert_code(&self, code: &AuthorizationCode, now: UnixTime) -> StoreResult<()> {
        let code = code.clone();
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM oauth_codes WHERE expires_at < ?")
                .and_then(|mut delete| delete.execute([now - 86_400]))
                .map_err(db_error)?;
            conn.prepare_cached(
                "INSERT INTO oauth_codes (code_hash, client_id, redirect_uri, code_challenge, \
                 account_id, browser_session, scope, nonce, auth_time, expires_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .and_then(|mut insert| {
                insert.execute(params![
                    &code.hash[..],
                    code.client_id,
                    code.redirect_uri,
                    code.code_challenge,
                    code.account_id,
                    code.browser_session,
                    code.scope,
                    code.nonce,
                    code.auth_time,
                    code.expires_at,
                ])
            })
            .map(drop)
            .map_err(db_error)
        })
        .await
    }

    async fn find_code(
        &self,
        hash: &TokenHash,
        now: UnixTime,
    ) -> StoreResult<Option<AuthorizationCode>> {
        self.read(|conn| {
            conn.prepare_cached(&format!(
                "SELECT {CODE_COLUMNS} FROM oauth_codes \
                 WHERE code_hash = ? AND used_at IS NULL AND expires_at > ?"
            ))
            .and_then(|mut select| {
                select
                    .query_row(params![&hash[..], now], code_from_row)
                    .optional()
            })
            .map_err(db_error)
        })
    }

    async fn redeem_code(
        &self,
        hash: &TokenHash,
        session: &NewSession,
        refresh: &NewRefreshToken,
        now: UnixTime,
    ) -> StoreResult<Redemption> {
        let (hash, session, refresh) = (*hash, session.clone(), refresh.clone());
        self.write(move |conn| {
            let found = conn
                .prepare_cached(&format!(
                    "SELECT {CODE_COLUMNS}, used_at, session_id FROM oauth_codes \
                     WHERE code_hash = ?"
                ))
                .and_then(|mut select| {
                    select
                        .query_row([&hash[..]], |row| {
                            Ok((
                                code_from_row(row)?,
                                row.get::<_, Option<i64>>(10)?,
                                row.get::<_, Option<String>>(11)?,
                            ))
                        })
                        .optional()
                })
                .map_err(db_error)?;
            let code = match found {
                None => return Ok(Redemption::Invalid),
                Some((code, Some(_), opened)) => {
                    return Ok(Redemption::Replayed {
                        opened,
                        code: Box::new(code),
                    });
                }
                Some((code, None, _)) if code.expires_at <= now => {
                    return Ok(Redemption::Invalid);
                }
                Some((code, None, _)) => code,
            };
            // The browser session the code came from must still be live:
            // a logout (or a disabling) that committed first ends the code.
            // Writes are serialised, so one that commits later finds the
            // session this opens among the browser session's own.
            if !browser_session_live(conn, &code.browser_session, now)? {
                return Ok(Redemption::Invalid);
            }
            conn.prepare_cached(
                "UPDATE oauth_codes SET used_at = ?, session_id = ? WHERE code_hash = ?",
            )
            .and_then(|mut update| update.execute(params![now, session.id, &hash[..]]))
            .map_err(db_error)?;
            super::sessions::open_session(conn, &session, code.account_id, &refresh)?;
            insert_grant(
                conn,
                &OAuthSession {
                    session_id: session.id.clone(),
                    client_id: code.client_id,
                    scope: code.scope,
                    browser_session: Some(code.browser_session),
                    auth_time: code.auth_time,
                    nonce: code.nonce,
                },
            )?;
            Ok(Redemption::Redeemed)
        })
        .await
    }

    async fn insert_oauth_session(&self, grant: &OAuthSession) -> StoreResult<()> {
        let grant = grant.clone();
        self.write(move |conn| insert_grant(conn, &grant)).await
    }

    async fn get_oauth_session(&self, session_id: &SessionId) -> StoreResult<Option<OAuthSession>> {
        self.read(|conn| {
            conn.prepare_cached(
                "SELECT session_id, client_id, scope, browser_session, auth_time, nonce \
                 FROM oauth_sessions WHERE session_id = ?",
            )
            .and_then(|mut select| {
                select
                    .query_row([session_id], |row| {
                        Ok(OAuthSession {
                            session_id: row.get(0)?,
                            client_id: row.get(1)?,
                            scope: row.get(2)?,
                            browser_session: row.get(3)?,
                            auth_time: row.get(4)?,
                            nonce: row.get(5)?,
                        })
                    })
                    .optional()
            })
            .map_err(db_error)
        })
    }

    async fn sessions_from_browser(
        &self,
        browser_session: &SessionId,
    ) -> StoreResult<Vec<SessionId>> {
        self.read(|conn| live_sessions_where(conn, "o.browser_session = ?", browser_session))
    }

    async fn sessions_of_client(&self, client_id: &str) -> StoreResult<Vec<SessionId>> {
        self.read(|conn| live_sessions_where(conn, "o.client_id = ?", client_id))
    }

    async fn move_browser_children(&self, from: &SessionId, to: &SessionId) -> StoreResult<()> {
        let (from, to) = (from.clone(), to.clone());
        self.write(move |conn| {
            conn.prepare_cached(
                "UPDATE oauth_sessions SET browser_session = ? WHERE browser_session = ?",
            )
            .and_then(|mut update| update.execute(params![to, from]))
            .map(|_| ())
            .map_err(db_error)
        })
        .await
    }
}
/// Whether a browser session is live and its account not disabled.
fn browser_session_live(conn: &Connection, id: &str, now: UnixTime) -> StoreResult<bool> {
    conn.prepare_cached(
        "SELECT 1 FROM sessions s JOIN accounts a ON a.id = s.account_id \
         WHERE s.id = ? AND s.revoked_at IS NULL AND s.expires_at > ? AND a.status <> 'disabled'",
    )
    .and_then(|mut select| select.query_row(params![id, now], |_| Ok(())).optional())
    .map(|found| found.is_some())
    .map_err(db_error)
}
