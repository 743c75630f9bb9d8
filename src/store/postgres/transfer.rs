//! Export and import in PostgreSQL.
//!
//! An import batch is one transaction; each record runs in a nested
//! transaction (a savepoint), rolled back alone when the database refuses
//! it. Accounts keep their ids, so after a batch that inserted any the
//! `accounts.id` identity is moved past the largest id, and a later
//! `sesame user add` does not collide with an imported account.

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::{Connection, Row};

use super::{PostgresStore, corrupt, db_error};
use crate::clock::UnixTime;
use crate::store::transfer::{
    AccessHandle, AccountRecord, ImportRecord, MAX_ACCESS_TOKENS, RecordError, RecordResults,
    RefreshLink, SessionRecord, TransferStore, UpdateEffects,
};
use crate::store::{
    Account, AccountId, AccountStore, OAuthClient, OAuthSession, SessionId, StoreResult, TokenStyle,
};

fn session_from_row(row: &PgRow) -> StoreResult<SessionRecord> {
    let style: String = row.try_get("token_style").map_err(db_error)?;
    let client_id: Option<String> = row.try_get("client_id").map_err(db_error)?;
    let client = client_id
        .map(|client_id| {
            StoreResult::Ok(OAuthSession {
                session_id: row.try_get("id").map_err(db_error)?,
                client_id,
                scope: row.try_get("client_scope").map_err(db_error)?,
                browser_session: row.try_get("browser_session").map_err(db_error)?,
                auth_time: row.try_get("auth_time").map_err(db_error)?,
                nonce: row.try_get("nonce").map_err(db_error)?,
            })
        })
        .transpose()?;
    Ok(SessionRecord {
        id: row.try_get("id").map_err(db_error)?,
        account_id: row.try_get("account_id").map_err(db_error)?,
        username: row.try_get("username").map_err(db_error)?,
        platform: row.try_get("platform").map_err(db_error)?,
        user_agent: row.try_get("user_agent").map_err(db_error)?,
        ip: row.try_get("ip").map_err(db_error)?,
        token_style: TokenStyle::parse(&style).ok_or_else(|| corrupt("session token style"))?,
        created_at: row.try_get("created_at").map_err(db_error)?,
        expires_at: row.try_get("expires_at").map_err(db_error)?,
        refresh_tokens: Vec::new(),
        access_tokens: Vec::new(),
        client,
    })
}

fn link_from_row(row: &PgRow) -> StoreResult<(String, RefreshLink)> {
    let hash: Vec<u8> = row.try_get("token_hash").map_err(db_error)?;
    let link = RefreshLink {
        hash: hash
            .try_into()
            .map_err(|_| corrupt("refresh token hash length"))?,
        issued_at: row.try_get("issued_at").map_err(db_error)?,
        rotated_at: row.try_get("rotated_at").map_err(db_error)?,
        successor_salt: row.try_get("successor_salt").map_err(db_error)?,
    };
    Ok((row.try_get("session_id").map_err(db_error)?, link))
}

/// Maps an error of one imported record: taken primary keys name their
/// field too (`db_error` knows only the accounts' unique columns).
fn record_error(error: sqlx::Error) -> RecordError {
    if let sqlx::Error::Database(database) = &error {
        if database.is_unique_violation() {
            match database.constraint() {
                Some("accounts_pkey") => return RecordError::Taken("id"),
                Some("sessions_pkey") => return RecordError::Taken("session id"),
                Some("refresh_tokens_pkey") => return RecordError::Taken("refresh token hash"),
                Some("access_tokens_pkey") => return RecordError::Taken("access token hash"),
                _ => {}
            }
        }
        if database.is_foreign_key_violation()
            && database
                .constraint()
                .is_some_and(|c| c.starts_with("sessions_"))
        {
            return RecordError::NoAccount;
        }
    }
    db_error(error).into()
}

async fn insert_account(
    conn: &mut PgConnection,
    account: &AccountRecord,
) -> Result<(), RecordError> {
    // Checked first, so that the field named is the one a dry run names.
    if let Some(field) = account_taken(conn, account).await? {
        return Err(RecordError::Taken(field));
    }
    let (names, values): (Vec<&str>, Vec<&str>) = account
        .profile
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .unzip();
    // One statement (and one round trip) for the account, its roles and profile.
    let query = sqlx::query(
        "WITH a AS (INSERT INTO accounts (id, username, username_key, email, email_key, \
         email_verified, mobile, mobile_verified, display_name, avatar_url, status, password_hash, \
         md5_verifier, password_changed_at, created_at, updated_at, last_login_at, last_login_ip, \
         login_count, failed_login_count, api_calls_count, max_api_calls, quota_period, \
         api_calls_period) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
         $19, $20, $21, $22, $26, $27) RETURNING id), \
         r AS (INSERT INTO account_roles (account_id, role) SELECT a.id, UNNEST($23::text[]) FROM a) \
         INSERT INTO profile_attributes (account_id, name, value) \
         SELECT a.id, p.n, p.v FROM a, UNNEST($24::text[], $25::text[]) AS p(n, v)",
    );
    bind_account(query, account)
        .bind(&account.roles)
        .bind(&names)
        .bind(&values)
        .bind(account.quota_period.map(|p| p.as_str()))
        .bind(account.api_calls_period)
        .execute(&mut *conn)
        .await
        .map_err(record_error)?;
    Ok(())
}

async fn insert_session(
    conn: &mut PgConnection,
    session: &SessionRecord,
) -> Result<(), RecordError> {
    check_session(conn, session).await?;
    let links = &session.refresh_tokens;
    let hashes: Vec<&[u8]> = links.iter().map(|l| &l.hash[..]).collect();
    let issued: Vec<i64> = links.iter().map(|l| l.issued_at).collect();
    let rotated: Vec<Option<i64>> = links.iter().map(|l| l.rotated_at).collect();
    let salts: Vec<Option<&[u8]>> = links.iter().map(|l| l.successor_salt.as_deref()).collect();
    // One statement for the session and its chain.
    sqlx::query(
        "WITH s AS (INSERT INTO sessions (id, account_id, platform, user_agent, ip, token_style, \
         created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id) \
         INSERT INTO refresh_tokens (token_hash, session_id, issued_at, rotated_at, successor_salt) \
         SELECT t.h, s.id, t.i, t.r, t.salt FROM s, \
         UNNEST($9::bytea[], $10::bigint[], $11::bigint[], $12::bytea[]) AS t(h, i, r, salt)",
    )
    .bind(&session.id)
    .bind(session.account_id)
    .bind(&session.platform)
    .bind(&session.user_agent)
    .bind(&session.ip)
    .bind(session.token_style.as_str())
    .bind(session.created_at)
    .bind(session.expires_at)
    .bind(&hashes)
    .bind(&issued)
    .bind(&rotated)
    .bind(&salts)
    .execute(&mut *conn)
    .await
    .map_err(record_error)?;
    if !session.access_tokens.is_empty() {
        let hashes: Vec<&[u8]> = session.access_tokens.iter().map(|a| &a.hash[..]).collect();
        let expiries: Vec<i64> = session.access_tokens.iter().map(|a| a.expires_at).collect();
        sqlx::query(
            "INSERT INTO access_tokens (token_hash, session_id, expires_at) \
             SELECT t.h, $1, t.e FROM UNNEST($2::bytea[], $3::bigint[]) AS t(h, e)",
        )
        .bind(&session.id)
        .bind(&hashes)
        .bind(&expiries)
        .execute(&mut *conn)
        .await
        .map_err(record_error)?;
    }
    if let Some(grant) = &session.client {
        // The browser session it came from, only if it is one of the same
        // account's (imported before it, or there already): anything else
        // would let another user's logout end it.
        let mut grant = grant.clone();
        if let Some(browser) = &grant.browser_session {
            let ours: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM sessions WHERE id = $1 AND account_id = $2)",
            )
            .bind(browser)
            .bind(session.account_id)
            .fetch_one(&mut *conn)
            .await
            .map_err(db_error)?;
            if !ours {
                grant.browser_session = None;
            }
        }
        super::oauth::insert_grant(conn, &grant).await?;
    }
    Ok(())
}

async fn insert_client(conn: &mut PgConnection, client: &OAuthClient) -> Result<(), RecordError> {
    if !super::oauth::insert_client(conn, client).await? {
        return Err(RecordError::Taken("client_id"));
    }
    Ok(())
}

/// A unique field of `account` held by another account, or `id` when no
/// account has its id.
async fn taken_by_another(
    conn: &mut PgConnection,
    account: &AccountRecord,
) -> StoreResult<Option<&'static str>> {
    let taken: Option<i32> = sqlx::query(
        "SELECT CASE \
         WHEN NOT EXISTS (SELECT 1 FROM accounts WHERE id = $1) THEN 1 \
         WHEN EXISTS (SELECT 1 FROM accounts WHERE username_key = $2 AND id <> $1) THEN 2 \
         WHEN $3::text IS NOT NULL AND EXISTS (SELECT 1 FROM accounts WHERE email_key = $3 AND id <> $1) THEN 3 \
         WHEN $4::text IS NOT NULL AND EXISTS (SELECT 1 FROM accounts WHERE mobile = $4 AND id <> $1) THEN 4 END",
    )
    .bind(account.id)
    .bind(&account.username_key)
    .bind(&account.email_key)
    .bind(&account.mobile)
    .fetch_one(&mut *conn)
    .await
    .and_then(|row| row.try_get(0))
    .map_err(db_error)?;
    Ok(match taken {
        Some(1) => Some("id"),
        Some(2) => Some("username"),
        Some(3) => Some("email"),
        Some(4) => Some("mobile"),
        _ => None,
    })
}

/// Overwrites the account of `account.id` with the record; the
/// administrators' lock is held so that no administrator can go missing.
/// Answers the sessions it ended and whether the account's failure budgets
/// are to be cleared.
async fn update_account(
    conn: &mut PgConnection,
    account: &AccountRecord,
    now: UnixTime,
) -> Result<(Vec<SessionId>, bool), RecordError> {
    match taken_by_another(conn, account).await? {
        Some("id") => return Err(RecordError::NotThere),
        Some(field) => return Err(RecordError::Taken(field)),
        None => {}
    }
    // The row is locked first, as a login locks it before it opens a
    // session: one that commits before is ended below, one after sees the
    // new owner's password hash.
    let (username, password_hash, password_changed_at, status): (String, String, UnixTime, String) =
        sqlx::query(
            "SELECT username, password_hash, password_changed_at, status FROM accounts \
             WHERE id = $1 FOR NO KEY UPDATE",
        )
        .bind(account.id)
        .fetch_one(&mut *conn)
        .await
        .and_then(|row| {
            Ok((
                row.try_get(0)?,
                row.try_get(1)?,
                row.try_get(2)?,
                row.try_get(3)?,
            ))
        })
        .map_err(record_error)?;
    let admins = super::roles::admins_before(conn).await?;
    let (names, values): (Vec<&str>, Vec<&str>) = account
        .profile
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .unzip();
    let query = sqlx::query(
        "UPDATE accounts SET username = $2, username_key = $3, email = $4, email_key = $5, \
         email_verified = $6, mobile = $7, mobile_verified = $8, display_name = $9, \
         avatar_url = $10, status = $11, password_hash = $12, md5_verifier = $13, \
         password_changed_at = $14, created_at = $15, updated_at = $16, last_login_at = $17, \
         last_login_ip = $18, login_count = $19, failed_login_count = $20, api_calls_count = $21, \
         max_api_calls = $22, quota_period = $23, api_calls_period = $24, \
         known_devices = CASE WHEN password_hash = $12 AND username_key = $3 \
           AND $11 <> 'disabled' THEN known_devices ELSE '{}' END, \
         known_addresses = CASE WHEN password_hash = $12 AND username_key = $3 \
           AND $11 <> 'disabled' THEN known_addresses ELSE '{}' END \
         WHERE id = $1",
    );
    bind_account(query, account)
        .bind(account.quota_period.map(|p| p.as_str()))
        .bind(account.api_calls_period)
        .execute(&mut *conn)
        .await
        .map_err(record_error)?;
    // Two statements each: a DELETE and an INSERT in one WITH run in no
    // defined order.
    for table in ["account_roles", "profile_attributes"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE account_id = $1"))
            .bind(account.id)
            .execute(&mut *conn)
            .await
            .map_err(record_error)?;
    }
    sqlx::query("INSERT INTO account_roles (account_id, role) SELECT $1, UNNEST($2::text[])")
        .bind(account.id)
        .bind(&account.roles)
        .execute(&mut *conn)
        .await
        .map_err(record_error)?;
    sqlx::query(
        "INSERT INTO profile_attributes (account_id, name, value) \
         SELECT $1, p.n, p.v FROM UNNEST($2::text[], $3::text[]) AS p(n, v)",
    )
    .bind(account.id)
    .bind(&names)
    .bind(&values)
    .execute(&mut *conn)
    .await
    .map_err(record_error)?;
    super::roles::admins_after(conn, admins).await?;
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
    sqlx::query(
        "UPDATE sessions SET revoked_at = $1, revoked_reason = 'replaced by an import' \
         WHERE account_id = $2 AND revoked_at IS NULL RETURNING id",
    )
    .bind(now)
    .bind(account.id)
    .fetch_all(&mut *conn)
    .await
    .map_err(record_error)
    .and_then(|rows| super::sessions::ids(rows).map_err(RecordError::from))
    .map(|ended| (ended, clears))
}

/// Binds an account's columns to `$1` … `$22` (id, names, contacts,
/// status, verifiers, times and counters), as the insert and the update
/// below number them.
fn bind_account<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    account: &'q AccountRecord,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(account.id)
        .bind(&account.username)
        .bind(&account.username_key)
        .bind(&account.email)
        .bind(&account.email_key)
        .bind(account.email_verified)
        .bind(&account.mobile)
        .bind(account.mobile_verified)
        .bind(&account.display_name)
        .bind(&account.avatar_url)
        .bind(account.status.as_str())
        .bind(&account.verifiers.password_hash)
        .bind(&account.verifiers.md5_verifier)
        .bind(account.password_changed_at)
        .bind(account.created_at)
        .bind(account.updated_at)
        .bind(account.last_login_at)
        .bind(&account.last_login_ip)
        .bind(account.login_count)
        .bind(account.failed_login_count)
        .bind(account.api_calls_count)
        .bind(account.max_api_calls)
}

/// The field an account would collide on, checked in the order the
/// constraints fire on insert.
async fn account_taken(
    conn: &mut PgConnection,
    account: &AccountRecord,
) -> StoreResult<Option<&'static str>> {
    let taken: Option<i32> = sqlx::query(
        "SELECT CASE \
         WHEN EXISTS (SELECT 1 FROM accounts WHERE id = $1) THEN 1 \
         WHEN EXISTS (SELECT 1 FROM accounts WHERE username_key = $2) THEN 2 \
         WHEN $3::text IS NOT NULL AND EXISTS (SELECT 1 FROM accounts WHERE email_key = $3) THEN 3 \
         WHEN $4::text IS NOT NULL AND EXISTS (SELECT 1 FROM accounts WHERE mobile = $4) THEN 4 END",
    )
    .bind(account.id)
    .bind(&account.username_key)
    .bind(&account.email_key)
    .bind(&account.mobile)
    .fetch_one(&mut *conn)
    .await
    .and_then(|row| row.try_get(0))
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
async fn check_session(
    conn: &mut PgConnection,
    session: &SessionRecord,
) -> Result<(), RecordError> {
    let hashes: Vec<&[u8]> = session.refresh_tokens.iter().map(|l| &l.hash[..]).collect();
    let access: Vec<&[u8]> = session.access_tokens.iter().map(|a| &a.hash[..]).collect();
    let taken: Option<i32> = sqlx::query(
        "SELECT CASE \
         WHEN EXISTS (SELECT 1 FROM sessions WHERE id = $1) THEN 1 \
         WHEN EXISTS (SELECT 1 FROM refresh_tokens WHERE token_hash = ANY($2::bytea[])) THEN 2 \
         WHEN EXISTS (SELECT 1 FROM access_tokens WHERE token_hash = ANY($5::bytea[])) THEN 5 \
         WHEN NOT EXISTS (SELECT 1 FROM accounts WHERE id = $3) THEN 3 \
         WHEN NOT EXISTS (SELECT 1 FROM accounts WHERE id = $3 AND username = $4) THEN 4 END",
    )
    .bind(&session.id)
    .bind(&hashes)
    .bind(session.account_id)
    .bind(&session.username)
    .bind(&access)
    .fetch_one(&mut *conn)
    .await
    .and_then(|row| row.try_get(0))
    .map_err(db_error)?;
    match taken {
        Some(1) => Err(RecordError::Taken("session id")),
        Some(2) => Err(RecordError::Taken("refresh token hash")),
        Some(5) => Err(RecordError::Taken("access token hash")),
        Some(3) => Err(RecordError::NoAccount),
        Some(4) => Err(RecordError::NotTheAccount),
        _ => Ok(()),
    }
}

#[async_trait]
impl TransferStore for PostgresStore {
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
        let mut sessions = sqlx::query(
            "SELECT s.id, s.account_id, a.username, s.platform, s.user_agent, s.ip, \
             s.token_style, s.created_at, s.expires_at, o.client_id, o.scope AS client_scope, \
             o.browser_session, o.auth_time, o.nonce \
             FROM sessions s JOIN accounts a ON a.id = s.account_id \
             LEFT JOIN oauth_sessions o ON o.session_id = s.id \
             WHERE s.id > $1 AND s.revoked_at IS NULL AND s.expires_at > $2 \
             AND (o.session_id IS NOT NULL) = $4 \
             ORDER BY s.id LIMIT $3",
        )
        .bind(after_id)
        .bind(now)
        .bind(i64::from(limit))
        .bind(of_clients)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?
        .iter()
        .map(session_from_row)
        .collect::<StoreResult<Vec<_>>>()?;
        if sessions.is_empty() {
            return Ok(sessions);
        }
        let ids: Vec<&str> = sessions.iter().map(|s| s.id.as_str()).collect();
        // Per session: the live token, then the newest rotated ones, at most
        // `max_chain`; returned oldest first.
        let rows = sqlx::query(
            "SELECT session_id, token_hash, issued_at, rotated_at, successor_salt FROM ( \
               SELECT t.*, ROW_NUMBER() OVER (PARTITION BY session_id \
                 ORDER BY rotated_at IS NULL DESC, issued_at DESC, token_hash) AS newest \
               FROM refresh_tokens t WHERE session_id = ANY($1::text[])) c \
             WHERE newest <= $2 ORDER BY session_id, newest DESC",
        )
        .bind(&ids)
        .bind(i64::from(max_chain))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let mut chains: HashMap<String, Vec<RefreshLink>> = HashMap::new();
        for row in &rows {
            let (session_id, link) = link_from_row(row)?;
            chains.entry(session_id).or_default().push(link);
        }
        // The newest live opaque access tokens of each.
        let rows = sqlx::query(
            "SELECT session_id, token_hash, expires_at FROM ( \
               SELECT a.*, ROW_NUMBER() OVER (PARTITION BY session_id \
                 ORDER BY expires_at DESC, token_hash) AS newest \
               FROM access_tokens a WHERE session_id = ANY($1::text[]) AND expires_at > $2) c \
             WHERE newest <= $3",
        )
        .bind(&ids)
        .bind(now)
        .bind(i64::from(MAX_ACCESS_TOKENS))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let mut handles: HashMap<String, Vec<AccessHandle>> = HashMap::new();
        for row in &rows {
            let hash: Vec<u8> = row.try_get("token_hash").map_err(db_error)?;
            let session_id: String = row.try_get("session_id").map_err(db_error)?;
            handles.entry(session_id).or_default().push(AccessHandle {
                hash: hash
                    .try_into()
                    .map_err(|_| corrupt("access token hash length"))?,
                expires_at: row.try_get("expires_at").map_err(db_error)?,
            });
        }
        for session in &mut sessions {
            session.refresh_tokens = chains.remove(&session.id).unwrap_or_default();
            session.access_tokens = handles.remove(&session.id).unwrap_or_default();
        }
        Ok(sessions)
    }

    async fn import_batch(&self, records: Vec<ImportRecord>) -> StoreResult<RecordResults> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let mut results = Vec::with_capacity(records.len());
        let mut inserted_accounts = false;
        for record in &records {
            let mut savepoint = tx.begin().await.map_err(db_error)?;
            let result = match record {
                ImportRecord::Account(account) => insert_account(&mut savepoint, account).await,
                ImportRecord::Session(session) => insert_session(&mut savepoint, session).await,
                ImportRecord::Client(client) => insert_client(&mut savepoint, client).await,
            };
            if result.is_ok() {
                savepoint.commit().await.map_err(db_error)?;
                inserted_accounts |= matches!(record, ImportRecord::Account(_));
            } else {
                savepoint.rollback().await.map_err(db_error)?;
            }
            results.push(result);
        }
        if inserted_accounts {
            sqlx::query(
                // Never backwards: ids handed out meanwhile to accounts
                // created on other nodes stay behind the sequence.
                "SELECT setval(pg_get_serial_sequence('accounts', 'id'), \
                 GREATEST((SELECT MAX(id) FROM accounts), \
                   COALESCE(pg_sequence_last_value(pg_get_serial_sequence('accounts', 'id')::regclass), 1), \
                   1))",
            )
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(results)
    }

    async fn update_accounts(
        &self,
        records: &[AccountRecord],
        now: UnixTime,
    ) -> StoreResult<(RecordResults, UpdateEffects)> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        // The administrators' lock before any account's row, as every
        // change to who is one takes them: taken by the first update after
        // an earlier one locked its row, it could deadlock with a change
        // holding it and waiting for that row.
        if !records.is_empty() {
            super::roles::admins_before(&mut tx).await?;
        }
        // Rows in id order, as a quota flush locks them: in file order, two
        // such transactions could each hold a row the other waits for.
        let mut order: Vec<usize> = (0..records.len()).collect();
        order.sort_by_key(|&i| records[i].id);
        let mut results: Vec<Option<Result<(), RecordError>>> =
            (0..records.len()).map(|_| None).collect();
        let mut effects = UpdateEffects::default();
        for i in order {
            let mut savepoint = tx.begin().await.map_err(db_error)?;
            let result = match update_account(&mut savepoint, &records[i], now).await {
                Ok((sessions, clears)) => {
                    savepoint.commit().await.map_err(db_error)?;
                    effects.ended.extend(sessions);
                    if clears {
                        effects.fresh_budgets.push(records[i].id);
                    }
                    Ok(())
                }
                Err(error) => {
                    savepoint.rollback().await.map_err(db_error)?;
                    Err(error)
                }
            };
            results[i] = Some(result);
        }
        tx.commit().await.map_err(db_error)?;
        Ok((results.into_iter().flatten().collect(), effects))
    }

    async fn check_updates(&self, records: &[AccountRecord]) -> StoreResult<RecordResults> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        let mut results = Vec::with_capacity(records.len());
        for record in records {
            results.push(match taken_by_another(&mut conn, record).await? {
                Some("id") => Err(RecordError::NotThere),
                Some(field) => Err(RecordError::Taken(field)),
                None => Ok(()),
            });
        }
        Ok(results)
    }

    async fn check_batch(&self, records: &[ImportRecord]) -> StoreResult<RecordResults> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        let mut results = Vec::with_capacity(records.len());
        for record in records {
            results.push(match record {
                ImportRecord::Account(account) => match account_taken(&mut conn, account).await? {
                    Some(field) => Err(RecordError::Taken(field)),
                    None => Ok(()),
                },
                ImportRecord::Session(session) => match check_session(&mut conn, session).await {
                    Err(RecordError::Store(error)) => return Err(error),
                    other => other,
                },
                ImportRecord::Client(client) => {
                    if super::oauth::client_exists(&mut conn, &client.id).await? {
                        Err(RecordError::Taken("client_id"))
                    } else {
                        Ok(())
                    }
                }
            });
        }
        Ok(results)
    }
}
