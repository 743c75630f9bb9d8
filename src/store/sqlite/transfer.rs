//! Export and import in SQLite.
//!
//! Export reads in place on a pooled reader like every other read. An import
//! batch is one job of the writer thread: the writer already runs it inside
//! a savepoint of its group-committed transaction, and each record gets a
//! nested savepoint of its own here, so a refused record is rolled back
//! alone while the rest of the batch commits with the writer's next commit.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{SqliteStore, corrupt, db_error};
use crate::clock::UnixTime;
use crate::store::OAuthClient;
use crate::store::transfer::{
    AccessHandle, AccountRecord, ImportRecord, MAX_ACCESS_TOKENS, RecordError, RecordResults,
    RefreshLink, SessionRecord, TransferStore, UpdateEffects,
};
use crate::store::{
    Account, AccountId, AccountStore, OAuthSession, SessionId, StoreResult, TokenStyle,
};

fn session_from_row(row: &Row) -> rusqlite::Result<SessionRecord> {
    let style: String = row.get("token_style")?;
    let client_id: Option<String> = row.get("client_id")?;
    let client = client_id
        .map(|client_id| {
            rusqlite::Result::<OAuthSession>::Ok(OAuthSession {
                session_id: row.get("id")?,
                client_id,
                scope: row.get("client_scope")?,
                browser_session: row.get("browser_session")?,
                auth_time: row.get("auth_time")?,
                nonce: row.get("nonce")?,
            })
        })
        .transpose()?;
    Ok(SessionRecord {
        id: row.get("id")?,
        account_id: row.get("account_id")?,
        username: row.get("username")?,
        platform: row.get("platform")?,
        user_agent: row.get("user_agent")?,
        ip: row.get("ip")?,
        token_style: TokenStyle::parse(&style).ok_or_else(|| corrupt("session token style"))?,
        created_at: row.get("created_at")?,
        expires_at: row.get("expires_at")?,
        refresh_tokens: Vec::new(),
        access_tokens: Vec::new(),
        client,
    })
}

fn link_from_row(row: &Row) -> rusqlite::Result<RefreshLink> {
    let hash: Vec<u8> = row.get("token_hash")?;
    Ok(RefreshLink {
        hash: hash
            .try_into()
            .map_err(|_| corrupt("refresh token hash length"))?,
        issued_at: row.get("issued_at")?,
        rotated_at: row.get("rotated_at")?,
        successor_salt: row.get("successor_salt")?,
    })
}

/// Maps an error of one imported record: taken primary keys name their
/// field too (`db_error` knows only the accounts' unique columns).
fn record_error(error: rusqlite::Error) -> RecordError {
    if let rusqlite::Error::SqliteFailure(failure, Some(message)) = &error {
        let unique = matches!(
            failure.extended_code,
            rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY | rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
        );
        if unique {
            for (column, field) in [
                ("accounts.id", "id"),
                ("sessions.id", "session id"),
                ("refresh_tokens.token_hash", "refresh token hash"),
                ("access_tokens.token_hash", "access token hash"),
            ] {
                if message.ends_with(column) {
                    return RecordError::Taken(field);
                }
            }
        }
    }
    db_error(error).into()
}

fn execute(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> StoreResult<usize> {
    conn.prepare_cached(sql)
        .and_then(|mut statement| statement.execute(params))
        .map_err(db_error)
}

/// An account's columns in the order of `INSERT INTO accounts` below (and
/// of the update's placeholders): id first.
fn account_values(a: &AccountRecord) -> Vec<rusqlite::types::Value> {
    use rusqlite::types::Value;
    let text = |s: &Option<String>| s.clone().map_or(Value::Null, Value::Text);
    let int = |n: Option<i64>| n.map_or(Value::Null, Value::Integer);
    vec![
        Value::Integer(a.id),
        Value::Text(a.username.clone()),
        Value::Text(a.username_key.clone()),
        text(&a.email),
        text(&a.email_key),
        Value::Integer(a.email_verified.into()),
        text(&a.mobile),
        Value::Integer(a.mobile_verified.into()),
        Value::Text(a.display_name.clone()),
        Value::Text(a.avatar_url.clone()),
        Value::Text(a.status.as_str().to_owned()),
        Value::Text(a.verifiers.password_hash.clone()),
        text(&a.verifiers.md5_verifier),
        Value::Integer(a.password_changed_at),
        Value::Integer(a.created_at),
        Value::Integer(a.updated_at),
        int(a.last_login_at),
        text(&a.last_login_ip),
        Value::Integer(a.login_count),
        Value::Integer(a.failed_login_count),
        Value::Integer(a.api_calls_count),
        Value::Integer(a.max_api_calls),
        a.quota_period
            .map_or(Value::Null, |p| Value::Text(p.as_str().to_owned())),
        Value::Integer(a.api_calls_period),
    ]
}

fn insert_account(conn: &Connection, account: &AccountRecord) -> Result<(), RecordError> {
    // Checked first, so that the field named is the one a dry run names.
    if let Some(field) = account_taken(conn, account)? {
        return Err(RecordError::Taken(field));
    }
    conn.prepare_cached(
        "INSERT INTO accounts (id, username, username_key, email, email_key, email_verified, mobile, \
         mobile_verified, display_name, avatar_url, status, password_hash, md5_verifier, \
         password_changed_at, created_at, updated_at, last_login_at, last_login_ip, login_count, \
         failed_login_count, api_calls_count, max_api_calls, quota_period, api_calls_period) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, \
         ?19, ?20, ?21, ?22, ?23, ?24)",
    )
    .and_then(|mut insert| insert.execute(rusqlite::params_from_iter(account_values(account))))
    .map_err(record_error)?;
    for role in &account.roles {
        conn.prepare_cached("INSERT INTO account_roles (account_id, role) VALUES (?, ?)")
            .and_then(|mut insert| insert.execute(params![account.id, role]))
            .map_err(record_error)?;
    }
    for (name, value) in &account.profile {
        conn.prepare_cached(
            "INSERT INTO profile_attributes (account_id, name, value) VALUES (?, ?, ?)",
        )
        .and_then(|mut insert| insert.execute(params![account.id, name, value]))
        .map_err(record_error)?;
    }
    Ok(())
}

/// A unique field of `account` held by another account, or `id` when no
/// account has its id.
fn taken_by_another(
    conn: &Connection,
    account: &AccountRecord,
) -> StoreResult<Option<&'static str>> {
    let taken: Option<i64> = conn
        .prepare_cached(
            "SELECT CASE \
             WHEN NOT EXISTS (SELECT 1 FROM accounts WHERE id = ?1) THEN 1 \
             WHEN EXISTS (SELECT 1 FROM accounts WHERE username_key = ?2 AND id <> ?1) THEN 2 \
             WHEN ?3 IS NOT NULL AND EXISTS (SELECT 1 FROM accounts WHERE email_key = ?3 AND id <> ?1) THEN 3 \
             WHEN ?4 IS NOT NULL AND EXISTS (SELECT 1 FROM accounts WHERE mobile = ?4 AND id <> ?1) THEN 4 END",
        )
        .and_then(|mut select| {
            select.query_row(
                params![account.id, account.username_key, account.email_key, account.mobile],
                |row| row.get(0),
            )
        })
        .map_err(db_error)?;
    Ok(match taken {
        Some(1) => Some("id"),
        Some(2) => Some("username"),
        Some(3) => Some("email"),
        Some(4) => Some("mobile"),
        _ => None,
    })
}

/// Overwrites the account of `account.id` with the record; answers the
/// sessions it ended and whether the account's failure budgets are to be
/// cleared.
fn update_account(
    conn: &Connection,
    account: &AccountRecord,
    now: UnixTime,
) -> Result<(Vec<SessionId>, bool), RecordError> {
    match taken_by_another(conn, account)? {
        Some("id") => return Err(RecordError::NotThere),
        Some(field) => return Err(RecordError::Taken(field)),
        None => {}
    }
    let (username, password_hash, password_changed_at, status): (String, String, UnixTime, String) =
        conn.prepare_cached(
            "SELECT username, password_hash, password_changed_at, status FROM accounts \
             WHERE id = ?",
        )
        .and_then(|mut select| {
            select.query_row([account.id], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })
        })
        .map_err(db_error)?;
    super::roles::keeping_an_admin(conn, |conn| {
        conn.prepare_cached(
            "UPDATE accounts SET username = ?2, username_key = ?3, email = ?4, email_key = ?5, \
             email_verified = ?6, mobile = ?7, mobile_verified = ?8, display_name = ?9, \
             avatar_url = ?10, status = ?11, password_hash = ?12, md5_verifier = ?13, \
             password_changed_at = ?14, created_at = ?15, updated_at = ?16, last_login_at = ?17, \
             last_login_ip = ?18, login_count = ?19, failed_login_count = ?20, \
             api_calls_count = ?21, max_api_calls = ?22, quota_period = ?23, \
             api_calls_period = ?24, \
             known_devices = CASE WHEN password_hash = ?12 AND username_key = ?3 \
               AND ?11 <> 'disabled' THEN known_devices ELSE '[]' END, \
             known_addresses = CASE WHEN password_hash = ?12 AND username_key = ?3 \
               AND ?11 <> 'disabled' THEN known_addresses ELSE '[]' END \
             WHERE id = ?1",
        )
        .and_then(|mut update| update.execute(rusqlite::params_from_iter(account_values(account))))
        .map_err(db_error)?;
        for table in ["account_roles", "profile_attributes"] {
            conn.prepare_cached(&format!("DELETE FROM {table} WHERE account_id = ?"))
                .and_then(|mut delete| delete.execute([account.id]))
                .map_err(db_error)?;
        }
        for role in &account.roles {
            conn.prepare_cached("INSERT INTO account_roles (account_id, role) VALUES (?, ?)")
                .and_then(|mut insert| insert.execute(params![account.id, role]))
                .map_err(db_error)?;
        }
        for (name, value) in &account.profile {
            conn.prepare_cached(
                "INSERT INTO profile_attributes (account_id, name, value) VALUES (?, ?, ?)",
            )
            .and_then(|mut insert| insert.execute(params![account.id, name, value]))
            .map_err(db_error)?;
        }
        Ok(())
    })
    .map_err(RecordError::from)?;
    let ends = crate::store::transfer::ends_sessions(
        account,
        &username,
        &password_hash,
        password_changed_at,
    );
    let clears = crate::store::transfer::clears_budgets(account, ends, &status);
    if !ends {
        return Ok((Vec::new(), clears));
    }
    super::sessions::returning_ids(
        conn,
        "UPDATE sessions SET revoked_at = ?, revoked_reason = 'replaced by an import' \
         WHERE account_id = ? AND revoked_at IS NULL RETURNING id",
        params![now, account.id],
    )
    .map(|ended| (ended, clears))
    .map_err(RecordError::from)
}

fn insert_session(conn: &Connection, session: &SessionRecord) -> Result<(), RecordError> {
    check_session(conn, session)?;
    conn.prepare_cached(
        "INSERT INTO sessions (id, account_id, platform, user_agent, ip, token_style, created_at, \
         expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .and_then(|mut insert| {
        insert.execute(params![
            session.id,
            session.account_id,
            session.platform,
            session.user_agent,
            session.ip,
            session.token_style.as_str(),
            session.created_at,
            session.expires_at,
        ])
    })
    .map_err(record_error)?;
    // No parent_hash: the rotation trigger stays quiet, the chain is copied as it is.
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO refresh_tokens (token_hash, session_id, issued_at, rotated_at, successor_salt) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .map_err(record_error)?;
    for link in &session.refresh_tokens {
        insert
            .execute(params![
                &link.hash[..],
                session.id,
                link.issued_at,
                link.rotated_at,
                link.successor_salt,
            ])
            .map_err(record_error)?;
    }
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO access_tokens (token_hash, session_id, expires_at) VALUES (?, ?, ?)",
        )
        .map_err(record_error)?;
    for handle in &session.access_tokens {
        insert
            .execute(params![&handle.hash[..], session.id, handle.expires_at])
            .map_err(record_error)?;
    }
    if let Some(grant) = &session.client {
        // The browser session it came from, only if it is one of the same
        // account's (imported before it, or there already): anything else
        // would let another user's logout end it.
        let mut grant = grant.clone();
        if let Some(browser) = &grant.browser_session {
            let ours = conn
                .prepare_cached("SELECT 1 FROM sessions WHERE id = ? AND account_id = ?")
                .and_then(|mut select| select.exists(params![browser, session.account_id]))
                .map_err(db_error)?;
            if !ours {
                grant.browser_session = None;
            }
        }
        super::oauth::insert_grant(conn, &grant)?;
    }
    Ok(())
}

fn insert_client(conn: &Connection, client: &OAuthClient) -> Result<(), RecordError> {
    if !super::oauth::insert_client(conn, client)? {
        return Err(RecordError::Taken("client_id"));
    }
    Ok(())
}

/// The field an account would collide on, checked in the order the
/// constraints fire on insert.
fn account_taken(conn: &Connection, account: &AccountRecord) -> StoreResult<Option<&'static str>> {
    let taken: Option<i64> = conn
        .prepare_cached(
            "SELECT CASE \
             WHEN EXISTS (SELECT 1 FROM accounts WHERE id = ?1) THEN 1 \
             WHEN EXISTS (SELECT 1 FROM accounts WHERE username_key = ?2) THEN 2 \
             WHEN ?3 IS NOT NULL AND EXISTS (SELECT 1 FROM accounts WHERE email_key = ?3) THEN 3 \
             WHEN ?4 IS NOT NULL AND EXISTS (SELECT 1 FROM accounts WHERE mobile = ?4) THEN 4 END",
        )
        .and_then(|mut select| {
            select.query_row(
                params![
                    account.id,
                    account.username_key,
                    account.email_key,
                    account.mobile
                ],
                |row| row.get(0),
            )
        })
        .map_err(db_error)?;
    Ok(match taken {
        Some(1) => Some("id"),
        Some(2) => Some("username"),
        Some(3) => Some("email"),
        Some(4) => Some("mobile"),
        _ => None,
    })
}

/// Whether a session can be inserted, checked in a fixed order: its id
/// taken, one of its refresh token hashes taken, its account missing or
/// someone else (another username at that id).
fn check_session(conn: &Connection, session: &SessionRecord) -> Result<(), RecordError> {
    let session_taken = conn
        .prepare_cached("SELECT 1 FROM sessions WHERE id = ?")
        .and_then(|mut select| select.exists([&session.id]))
        .map_err(db_error)?;
    if session_taken {
        return Err(RecordError::Taken("session id"));
    }
    let mut token = conn
        .prepare_cached("SELECT 1 FROM refresh_tokens WHERE token_hash = ?")
        .map_err(db_error)?;
    for link in &session.refresh_tokens {
        if token.exists([&link.hash[..]]).map_err(db_error)? {
            return Err(RecordError::Taken("refresh token hash"));
        }
    }
    let mut access = conn
        .prepare_cached("SELECT 1 FROM access_tokens WHERE token_hash = ?")
        .map_err(db_error)?;
    for handle in &session.access_tokens {
        if access.exists([&handle.hash[..]]).map_err(db_error)? {
            return Err(RecordError::Taken("access token hash"));
        }
    }
    let owner: Option<String> = conn
        .prepare_cached("SELECT username FROM accounts WHERE id = ?")
        .and_then(|mut select| {
            select
                .query_row([session.account_id], |row| row.get(0))
                .optional()
        })
        .map_err(db_error)?;
    match owner {
        None => Err(RecordError::NoAccount),
        Some(username) if username != session.username => Err(RecordError::NotTheAccount),
        Some(_) => Ok(()),
    }
}

#[async_trait]
impl TransferStore for SqliteStore {
    async fn export_accounts(&self, after_id: AccountId, limit: u32) -> StoreResult<Vec<Account>> {
        self.list_accounts(after_id, limit).await
    }

    async fn export_sessions(
        &self,
        after_id: &str,
        limit: u32,
        now: UnixTime,
        max_chain: u32,
        of_clients: bool,
    ) -> StoreResult<Vec<SessionRecord>> {
        self.read(|conn| {
            let mut sessions = conn
                .prepare_cached(
                    "SELECT s.id, s.account_id, a.username, s.platform, s.user_agent, s.ip, \
                     s.token_style, s.created_at, s.expires_at, o.client_id, \
                     o.scope AS client_scope, o.browser_session, o.auth_time, o.nonce \
                     FROM sessions s JOIN accounts a ON a.id = s.account_id \
                     LEFT JOIN oauth_sessions o ON o.session_id = s.id \
                     WHERE s.id > ? AND s.revoked_at IS NULL AND s.expires_at > ? \
                     AND (o.session_id IS NOT NULL) = ? \
                     ORDER BY s.id LIMIT ?",
                )
                .and_then(|mut select| {
                    select
                        .query_map(params![after_id, now, of_clients, limit], session_from_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db_error)?;
            // The live token first, then the newest rotated ones; reversed to oldest first.
            let mut chain = conn
                .prepare_cached(
                    "SELECT token_hash, issued_at, rotated_at, successor_salt FROM refresh_tokens \
                     WHERE session_id = ? ORDER BY rotated_at IS NULL DESC, issued_at DESC, token_hash \
                     LIMIT ?",
                )
                .map_err(db_error)?;
            for session in &mut sessions {
                let mut links = chain
                    .query_map(params![session.id, max_chain], link_from_row)
                    .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                    .map_err(db_error)?;
                links.reverse();
                session.refresh_tokens = links;
            }
            let mut access = conn
                .prepare_cached(
                    "SELECT token_hash, expires_at FROM access_tokens \
                     WHERE session_id = ? AND expires_at > ? ORDER BY expires_at DESC, token_hash \
                     LIMIT ?",
                )
                .map_err(db_error)?;
            for session in &mut sessions {
                session.access_tokens = access
                    .query_map(
                        params![session.id, now, MAX_ACCESS_TOKENS],
                        |row| {
                            let hash: Vec<u8> = row.get(0)?;
                            Ok(AccessHandle {
                                hash: hash
                                    .try_into()
                                    .map_err(|_| corrupt("access token hash length"))?,
                                expires_at: row.get(1)?,
                            })
                        },
                    )
                    .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                    .map_err(db_error)?;
            }
            Ok(sessions)
        })
    }

    async fn import_batch(&self, records: Vec<ImportRecord>) -> StoreResult<RecordResults> {
        self.write_off_workers(move |conn| {
            let mut results = Vec::with_capacity(records.len());
            for record in &records {
                execute(conn, "SAVEPOINT import_record", [])?;
                let result = match record {
                    ImportRecord::Account(account) => insert_account(conn, account),
                    ImportRecord::Session(session) => insert_session(conn, session),
                    ImportRecord::Client(client) => insert_client(conn, client),
                };
                if result.is_err() {
                    execute(conn, "ROLLBACK TO import_record", [])?;
                }
                execute(conn, "RELEASE import_record", [])?;
                results.push(result);
            }
            Ok(results)
        })
        .await
    }

    async fn update_accounts(
        &self,
        records: &[AccountRecord],
        now: UnixTime,
    ) -> StoreResult<(RecordResults, UpdateEffects)> {
        let records = records.to_vec();
        self.write_off_workers(move |conn| {
            let mut results = Vec::with_capacity(records.len());
            let mut effects = UpdateEffects::default();
            for record in &records {
                execute(conn, "SAVEPOINT import_record", [])?;
                let result = match update_account(conn, record, now) {
                    Ok((sessions, clears)) => {
                        effects.ended.extend(sessions);
                        if clears {
                            effects.fresh_budgets.push(record.id);
                        }
                        Ok(())
                    }
                    Err(error) => {
                        execute(conn, "ROLLBACK TO import_record", [])?;
                        Err(error)
                    }
                };
                execute(conn, "RELEASE import_record", [])?;
                results.push(result);
            }
            Ok((results, effects))
        })
        .await
    }

    async fn check_updates(&self, records: &[AccountRecord]) -> StoreResult<RecordResults> {
        self.read(|conn| {
            records
                .iter()
                .map(|record| {
                    Ok(match taken_by_another(conn, record)? {
                        Some("id") => Err(RecordError::NotThere),
                        Some(field) => Err(RecordError::Taken(field)),
                        None => Ok(()),
                    })
                })
                .collect()
        })
    }

    async fn check_batch(&self, records: &[ImportRecord]) -> StoreResult<RecordResults> {
        self.read(|conn| {
            let mut results = Vec::with_capacity(records.len());
            for record in records {
                results.push(match record {
                    ImportRecord::Account(account) => match account_taken(conn, account)? {
                        Some(field) => Err(RecordError::Taken(field)),
                        None => Ok(()),
                    },
                    ImportRecord::Session(session) => match check_session(conn, session) {
                        Err(RecordError::Store(error)) => return Err(error),
                        other => other,
                    },
                    ImportRecord::Client(client) => {
                        if super::oauth::client_exists(conn, &client.id)? {
                            Err(RecordError::Taken("client_id"))
                        } else {
                            Ok(())
                        }
                    }
                });
            }
            Ok(results)
        })
    }
}
