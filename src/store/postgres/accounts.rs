//! Accounts, roles and profile attributes in PostgreSQL.

use std::collections::BTreeMap;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::{PgExecutor, PgRow};
use sqlx::{Connection, PgConnection};

use super::{PostgresStore, corrupt, db_error};
use crate::clock::UnixTime;
use crate::store::{
    Account, AccountChange, AccountId, AccountQuery, AccountStatus, AccountStore, ApiUsage,
    ClientKind, Kept, LoginCandidate, NewAccount, PasswordVerifiers, QuotaPeriod, SessionId,
    StoreError, StoreResult,
};

/// `SELECT` of account rows matching a condition, each with its roles,
/// permissions and profile as arrays, so that reading an account is one
/// query. A macro so that the text is put together at compile time.
macro_rules! select_accounts {
    ($condition:literal) => {
        concat!(
            "SELECT a.id, a.username, a.email, a.email_verified, a.mobile, a.mobile_verified, \
             a.display_name, a.avatar_url, a.status, a.password_hash, a.md5_verifier, \
             a.password_changed_at, a.created_at, a.updated_at, a.last_login_at, a.last_login_ip, \
             a.login_count, a.failed_login_count, a.consecutive_failures, a.api_calls_count, \
             a.max_api_calls, a.quota_period, a.api_calls_period, \
             ARRAY(SELECT role FROM account_roles WHERE account_id = a.id ORDER BY role COLLATE \"C\") AS roles, \
             ARRAY(SELECT DISTINCT rp.permission COLLATE \"C\" FROM account_roles ar \
                   JOIN role_permissions rp ON rp.role = ar.role \
                   WHERE ar.account_id = a.id ORDER BY 1) AS permissions, \
             ARRAY(SELECT name FROM profile_attributes WHERE account_id = a.id ORDER BY name COLLATE \"C\") AS profile_names, \
             ARRAY(SELECT value FROM profile_attributes WHERE account_id = a.id ORDER BY name COLLATE \"C\") AS profile_values \
             FROM accounts a WHERE ",
            $condition
        )
    };
}

fn period_column(row: &PgRow) -> StoreResult<Option<QuotaPeriod>> {
    row.try_get::<Option<String>, _>("quota_period")
        .map_err(db_error)?
        .map(|p| QuotaPeriod::parse(&p).ok_or_else(|| corrupt("quota period")))
        .transpose()
}

fn usage_from_row(row: &PgRow) -> StoreResult<ApiUsage> {
    Ok(ApiUsage {
        count: row.try_get("api_calls_count").map_err(db_error)?,
        max: row.try_get("max_api_calls").map_err(db_error)?,
        period: period_column(row)?,
        period_start: row.try_get("api_calls_period").map_err(db_error)?,
    })
}

pub(super) fn account_from_row(row: &PgRow) -> StoreResult<Account> {
    let get = |e| db_error(e);
    let status: String = row.try_get("status").map_err(get)?;
    let names: Vec<String> = row.try_get("profile_names").map_err(get)?;
    let values: Vec<String> = row.try_get("profile_values").map_err(get)?;
    if names.len() != values.len() {
        return Err(corrupt("profile attributes"));
    }
    Ok(Account {
        id: row.try_get("id").map_err(get)?,
        username: row.try_get("username").map_err(get)?,
        email: row.try_get("email").map_err(get)?,
        email_verified: row.try_get("email_verified").map_err(get)?,
        mobile: row.try_get("mobile").map_err(get)?,
        mobile_verified: row.try_get("mobile_verified").map_err(get)?,
        display_name: row.try_get("display_name").map_err(get)?,
        avatar_url: row.try_get("avatar_url").map_err(get)?,
        status: AccountStatus::parse(&status).ok_or_else(|| corrupt("account status"))?,
        verifiers: PasswordVerifiers {
            password_hash: row.try_get("password_hash").map_err(get)?,
            md5_verifier: row.try_get("md5_verifier").map_err(get)?,
        },
        password_changed_at: row.try_get("password_changed_at").map_err(get)?,
        created_at: row.try_get("created_at").map_err(get)?,
        updated_at: row.try_get("updated_at").map_err(get)?,
        last_login_at: row.try_get("last_login_at").map_err(get)?,
        last_login_ip: row.try_get("last_login_ip").map_err(get)?,
        login_count: row.try_get("login_count").map_err(get)?,
        failed_login_count: row.try_get("failed_login_count").map_err(get)?,
        consecutive_failures: row.try_get("consecutive_failures").map_err(get)?,
        api_calls_count: row.try_get("api_calls_count").map_err(get)?,
        max_api_calls: row.try_get("max_api_calls").map_err(get)?,
        quota_period: period_column(row)?,
        api_calls_period: row.try_get("api_calls_period").map_err(get)?,
        roles: row.try_get("roles").map_err(get)?,
        permissions: row.try_get("permissions").map_err(get)?,
        profile: names.into_iter().zip(values).collect::<BTreeMap<_, _>>(),
    })
}

async fn one_account<'e>(
    executor: impl PgExecutor<'e>,
    query: sqlx::query::Query<'e, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> StoreResult<Option<Account>> {
    query
        .fetch_optional(executor)
        .await
        .map_err(db_error)?
        .as_ref()
        .map(account_from_row)
        .transpose()
}

/// [`AccountStore::change_account`] inside a transaction; the caller
/// commits it only on `Ok(Some(_))`.
pub(super) async fn change_account(
    tx: &mut PgConnection,
    id: AccountId,
    change: &AccountChange,
    now: UnixTime,
) -> StoreResult<Option<Vec<SessionId>>> {
    // The administrators' lock first, as every change to who is one takes
    // it, then the account's row.
    let admins_before = if change.status.is_some() || change.roles.is_some() {
        Some(super::roles::admins_before(tx).await?)
    } else {
        None
    };
    // Read under the administrators' lock, which every writer of an
    // account's roles holds: they cannot change before this change commits.
    if let Some(were) = &change.roles_were {
        let held: Vec<String> =
            sqlx::query_scalar("SELECT role FROM account_roles WHERE account_id = $1")
                .bind(id)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
        if !crate::store::same_roles(&held, were) {
            return Err(StoreError::Conflict("roles_were"));
        }
    }
    let roles = match &change.roles {
        Some(roles) => {
            let mut wanted = roles.clone();
            wanted.sort();
            wanted.dedup();
            let known: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM roles WHERE name = ANY($1)")
                .bind(&wanted)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_error)?;
            if usize::try_from(known).ok() != Some(wanted.len()) {
                return Err(StoreError::Conflict("roles"));
            }
            Some(wanted)
        }
        None => None,
    };
    let (email_set, email, email_key) = match &change.contact.email {
        Some(Some((email, key))) => (true, Some(email.as_str()), Some(key.as_str())),
        Some(None) => (true, None, None),
        None => (false, None, None),
    };
    let (mobile_set, mobile) = match &change.contact.mobile {
        Some(mobile) => (true, mobile.as_deref()),
        None => (false, None),
    };
    let profile = change.profile.as_ref();
    // Every column in one statement: one row lock, one row version.
    let found = sqlx::query(
        "UPDATE accounts SET updated_at = $2, \
           status = COALESCE($3, status), \
           consecutive_failures = CASE WHEN $3 = 'active' THEN 0 ELSE consecutive_failures END, \
           known_devices = CASE WHEN $3 = 'disabled' THEN '{}' ELSE known_devices END, \
           known_addresses = CASE WHEN $3 = 'disabled' THEN '{}' ELSE known_addresses END, \
           max_api_calls = COALESCE($4, max_api_calls), \
           quota_period = CASE WHEN $5 THEN $6 ELSE quota_period END, \
           email = CASE WHEN $7 THEN $8 ELSE email END, \
           email_key = CASE WHEN $7 THEN $9 ELSE email_key END, \
           email_verified = CASE WHEN $7 THEN FALSE ELSE email_verified END, \
           mobile = CASE WHEN $10 THEN $11 ELSE mobile END, \
           mobile_verified = CASE WHEN $10 THEN FALSE ELSE mobile_verified END, \
           display_name = COALESCE($12, display_name), \
           avatar_url = COALESCE($13, avatar_url) \
         WHERE id = $1",
    )
    .bind(id)
    .bind(now)
    .bind(change.status.map(AccountStatus::as_str))
    .bind(change.max_api_calls)
    .bind(change.quota_period.is_some())
    .bind(change.quota_period.flatten().map(QuotaPeriod::as_str))
    .bind(email_set)
    .bind(email)
    .bind(email_key)
    .bind(mobile_set)
    .bind(mobile)
    .bind(profile.and_then(|p| p.display_name.as_deref()))
    .bind(profile.and_then(|p| p.avatar_url.as_deref()))
    .execute(&mut *tx)
    .await
    .map_err(db_error)?
    .rows_affected();
    if found == 0 {
        return Ok(None);
    }
    if let Some(roles) = &roles {
        sqlx::query("DELETE FROM account_roles WHERE account_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        sqlx::query(
            "INSERT INTO account_roles (account_id, role) SELECT $1, r FROM UNNEST($2::text[]) AS r",
        )
        .bind(id)
        .bind(roles)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    }
    if let Some(profile) = profile {
        for (name, value) in &profile.attributes {
            set_attribute(&mut *tx, id, name, value.as_deref()).await?;
        }
    }
    if let Some(before) = admins_before {
        super::roles::admins_after(tx, before).await?;
    }
    if change.status != Some(AccountStatus::Disabled) {
        return Ok(Some(Vec::new()));
    }
    // The account's row is locked (the update above): a login that
    // committed first is in this snapshot, a later one waits and then
    // sees the account disabled.
    super::sessions::revoke_live_sessions(tx, id, None, "disabled", now)
        .await
        .map(Some)
}

/// Sets (`Some`) or removes (`None`) one profile attribute.
async fn set_attribute(
    tx: &mut PgConnection,
    id: AccountId,
    name: &str,
    value: Option<&str>,
) -> StoreResult<()> {
    match value {
        Some(value) => sqlx::query(
            "INSERT INTO profile_attributes (account_id, name, value) VALUES ($1, $2, $3) \
             ON CONFLICT (account_id, name) DO UPDATE SET value = excluded.value",
        )
        .bind(id)
        .bind(name)
        .bind(value),
        None => sqlx::query("DELETE FROM profile_attributes WHERE account_id = $1 AND name = $2")
            .bind(id)
            .bind(name),
    }
    .execute(&mut *tx)
    .await
    .map(|_| ())
    .map_err(db_error)
}

#[async_trait]
impl AccountStore for PostgresStore {
    async fn create_account(&self, new: NewAccount) -> StoreResult<Account> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        // The id comes from the sequence; an import writing accounts with
        // their own ids meanwhile may already hold the one it hands out
        // (the import moves the sequence past its ids after each batch):
        // then the next one is taken. The id is the server's choice, never
        // the caller's fault.
        let mut attempts = 0;
        let id: AccountId = loop {
            let mut savepoint = tx.begin().await.map_err(db_error)?;
            let inserted = sqlx::query(
                "INSERT INTO accounts (username, username_key, email, email_key, mobile, \
                 display_name, password_hash, md5_verifier, password_changed_at, created_at, \
                 updated_at, max_api_calls, quota_period) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $9, $10, $11) RETURNING id",
            )
            .bind(&new.username)
            .bind(&new.username_key)
            .bind(&new.email)
            .bind(&new.email_key)
            .bind(&new.mobile)
            .bind(&new.display_name)
            .bind(&new.verifiers.password_hash)
            .bind(&new.verifiers.md5_verifier)
            .bind(new.created_at)
            .bind(new.max_api_calls)
            .bind(new.quota_period.map(QuotaPeriod::as_str))
            .fetch_one(&mut *savepoint)
            .await
            .and_then(|row| row.try_get(0));
            match inserted {
                Err(sqlx::Error::Database(error))
                    if error.constraint() == Some("accounts_pkey") && attempts < 16 =>
                {
                    attempts += 1;
                    savepoint.rollback().await.map_err(db_error)?;
                }
                other => {
                    let id = other.map_err(db_error)?;
                    savepoint.commit().await.map_err(db_error)?;
                    break id;
                }
            }
        };
        sqlx::query("INSERT INTO account_roles (account_id, role) SELECT $1, UNNEST($2::text[])")
            .bind(id)
            .bind(&new.roles)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        for (name, value) in &new.profile {
            set_attribute(&mut tx, id, name, Some(value)).await?;
        }
        let account = one_account(
            &mut *tx,
            sqlx::query(select_accounts!("a.id = $1")).bind(id),
        )
        .await?
        .ok_or_else(|| corrupt("account vanished after insert"))?;
        tx.commit().await.map_err(db_error)?;
        Ok(account)
    }

    async fn find_account_by_login(
        &self,
        key: &str,
        mobile: Option<&str>,
    ) -> StoreResult<Option<Account>> {
        one_account(
            &self.pool,
            sqlx::query(select_accounts!(
                "a.username_key = $1 OR a.email_key = $1 OR a.mobile = $2 \
                 ORDER BY CASE WHEN a.username_key = $1 THEN 0 WHEN a.email_key = $1 THEN 1 ELSE 2 END \
                 LIMIT 1"
            ))
            .bind(key)
            .bind(mobile.unwrap_or("")),
        )
        .await
    }

    /// One query: the account, and whether the client is among its known ones.
    async fn find_account_for_login(
        &self,
        key: &str,
        mobile: Option<&str>,
        device: Option<&str>,
        address: Option<&str>,
    ) -> StoreResult<Option<LoginCandidate>> {
        let row = sqlx::query(concat!(
            "SELECT * FROM (",
            select_accounts!(
                "a.username_key = $1 OR a.email_key = $1 OR a.mobile = $2 \
                 ORDER BY CASE WHEN a.username_key = $1 THEN 0 WHEN a.email_key = $1 THEN 1 ELSE 2 END \
                 LIMIT 1"
            ),
            ") found, LATERAL (SELECT \
               COALESCE($3 = ANY(k.known_devices), false) AS known_device, \
               COALESCE($4 = ANY(k.known_addresses), false) AS known_address \
               FROM accounts k WHERE k.id = found.id) known"
        ))
        .bind(key)
        .bind(mobile.unwrap_or(""))
        .bind(device)
        .bind(address)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(LoginCandidate {
            account: account_from_row(&row)?,
            known_device: row.try_get("known_device").map_err(db_error)?,
            known_address: row.try_get("known_address").map_err(db_error)?,
        }))
    }

    async fn find_account_by_username(&self, username_key: &str) -> StoreResult<Option<Account>> {
        one_account(
            &self.pool,
            sqlx::query(select_accounts!("a.username_key = $1")).bind(username_key),
        )
        .await
    }

    async fn get_account(&self, id: AccountId) -> StoreResult<Option<Account>> {
        one_account(
            &self.pool,
            sqlx::query(select_accounts!("a.id = $1")).bind(id),
        )
        .await
    }

    async fn search_accounts(&self, query: &AccountQuery) -> StoreResult<Vec<Account>> {
        sqlx::query(select_accounts!(
            "a.id > $1 \
             AND ($2::text IS NULL OR starts_with(a.username_key, $2) \
                  OR starts_with(a.email_key, $2) OR starts_with(a.mobile, $2)) \
             AND ($3::text IS NULL OR a.status = $3) \
             AND ($4::text IS NULL OR EXISTS (SELECT 1 FROM account_roles \
                  WHERE account_id = a.id AND role = $4)) \
             ORDER BY a.id LIMIT $5"
        ))
        .bind(query.after_id)
        .bind(&query.prefix)
        .bind(query.status.map(|s| s.as_str()))
        .bind(&query.role)
        .bind(i64::from(query.limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?
        .iter()
        .map(account_from_row)
        .collect()
    }

    async fn change_account(
        &self,
        id: AccountId,
        change: &AccountChange,
        now: UnixTime,
    ) -> StoreResult<Option<Vec<SessionId>>> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let Some(ended) = change_account(&mut tx, id, change, now).await? else {
            return Ok(None);
        };
        tx.commit().await.map_err(db_error)?;
        Ok(Some(ended))
    }

    async fn reset_api_calls(&self, id: AccountId, now: UnixTime) -> StoreResult<bool> {
        sqlx::query(
            "UPDATE accounts SET api_calls_count = 0, api_calls_period = $2, updated_at = $2 \
             WHERE id = $1",
        )
        .bind(id)
        .bind(now)
        .execute(&self.pool)
        .await
        .map(|done| done.rows_affected() > 0)
        .map_err(db_error)
    }

    async fn count_accounts_with_role(&self, role: &str) -> StoreResult<i64> {
        sqlx::query("SELECT COUNT(*) FROM account_roles WHERE role = $1")
            .bind(role)
            .fetch_one(&self.pool)
            .await
            .and_then(|row| row.try_get(0))
            .map_err(db_error)
    }

    async fn role_names(&self) -> StoreResult<Vec<String>> {
        sqlx::query("SELECT name FROM roles ORDER BY name COLLATE \"C\"")
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?
            .iter()
            .map(|row| row.try_get(0).map_err(db_error))
            .collect()
    }

    async fn foreign_hashes(
        &self,
        after_id: AccountId,
        limit: u32,
    ) -> StoreResult<Vec<(AccountId, String, UnixTime)>> {
        sqlx::query_as(
            "SELECT id, password_hash, password_changed_at FROM accounts \
             WHERE id > $1 AND password_hash NOT LIKE '$argon2%' ORDER BY id LIMIT $2",
        )
        .bind(after_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)
    }

    async fn set_password(
        &self,
        id: AccountId,
        verifiers: &PasswordVerifiers,
        changed: bool,
        replacing: Option<&str>,
        now: UnixTime,
    ) -> StoreResult<bool> {
        // The condition is re-checked on the locked row (READ COMMITTED): a
        // concurrent password change that commits first wins.
        let done = sqlx::query(
            "UPDATE accounts SET password_hash = $1, md5_verifier = $2, \
             password_changed_at = CASE WHEN $3 THEN $4 ELSE password_changed_at END, \
             updated_at = CASE WHEN $3 THEN $4 ELSE updated_at END \
             WHERE id = $5 AND ($6::text IS NULL OR password_hash = $6)",
        )
        .bind(&verifiers.password_hash)
        .bind(&verifiers.md5_verifier)
        .bind(changed)
        .bind(now)
        .bind(id)
        .bind(replacing)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_password_ending_sessions(
        &self,
        id: AccountId,
        verifiers: &PasswordVerifiers,
        replacing: Option<&str>,
        keep: &Kept,
        reason: &str,
        now: UnixTime,
    ) -> StoreResult<Option<Vec<SessionId>>> {
        // The account's row is locked by the first update, as
        // `revoke_account_sessions` locks it: a login that commits
        // meanwhile is in the second update's snapshot, a later one waits.
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let written = sqlx::query(
            "UPDATE accounts SET password_hash = $1, md5_verifier = $2, \
             password_changed_at = $3, updated_at = $3, \
             known_devices = $6, known_addresses = $7, consecutive_failures = 0, \
             status = CASE WHEN status = 'locked' THEN 'active' ELSE status END \
             WHERE id = $4 AND ($5::text IS NULL OR password_hash = $5)",
        )
        .bind(&verifiers.password_hash)
        .bind(&verifiers.md5_verifier)
        .bind(now)
        .bind(id)
        .bind(replacing)
        .bind(keep.device.iter().map(String::as_str).collect::<Vec<_>>())
        .bind(keep.address.iter().map(String::as_str).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await
        .map_err(db_error)?
        .rows_affected();
        if written == 0 {
            return Ok(None);
        }
        let ended =
            super::sessions::revoke_live_sessions(&mut tx, id, keep.session.as_ref(), reason, now)
                .await?;
        tx.commit().await.map_err(db_error)?;
        Ok(Some(ended))
    }

    /// Also written after a login's answer (a lockout): bounded (see
    /// [`PostgresStore::within`]).
    async fn set_locked(&self, id: AccountId, locked: bool, now: UnixTime) -> StoreResult<bool> {
        self.within(async {
            // One statement: the row lock makes the condition and the change
            // atomic across nodes. Never refused by the last-administrator
            // rule (a lockout may not fail a login; an unlock only raises the
            // standing), but under the administrators' lock, taken first as by
            // every change to who administers: a lockout committing between
            // such a change's two counts would have it refused for nothing.
            let mut tx = self.pool.begin().await.map_err(db_error)?;
            super::roles::lock_administrators(&mut tx).await?;
            let sql = if locked {
                "UPDATE accounts SET status = 'locked', updated_at = $1 \
                 WHERE id = $2 AND status = 'active'"
            } else {
                "UPDATE accounts SET status = 'active', updated_at = $1, consecutive_failures = 0 \
                 WHERE id = $2 AND status <> 'disabled'"
            };
            let changed = sqlx::query(sql)
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?
                .rows_affected()
                == 1;
            tx.commit().await.map_err(db_error)?;
            Ok(changed)
        })
        .await
    }

    /// The account's sessions and their tokens go with it (`ON DELETE
    /// CASCADE`), each session's row before its tokens' rows; a refresh
    /// rotation locks a token's row and then its session's (the
    /// successor's foreign key), the other way round. The two can deadlock:
    /// PostgreSQL then ends one, and when it is the deletion, it runs again
    /// (as a rotation batch does), instead of failing an operator's request.
    async fn delete_account(&self, id: AccountId) -> StoreResult<bool> {
        let mut attempt = 0;
        loop {
            let mut tx = self.pool.begin().await.map_err(db_error)?;
            let before = super::roles::admins_before(&mut tx).await?;
            let deleted = match sqlx::query("DELETE FROM accounts WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await
            {
                Ok(done) => done.rows_affected(),
                Err(error) if super::is_deadlock(&error) && attempt < super::DEADLOCK_RETRIES => {
                    attempt += 1;
                    let _ = tx.rollback().await;
                    continue;
                }
                Err(error) => return Err(db_error(error)),
            };
            super::roles::admins_after(&mut tx, before).await?;
            tx.commit().await.map_err(db_error)?;
            return Ok(deleted > 0);
        }
    }

    async fn api_usage(&self, id: AccountId) -> StoreResult<Option<ApiUsage>> {
        sqlx::query(
            "SELECT api_calls_count, max_api_calls, quota_period, api_calls_period \
             FROM accounts WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?
        .as_ref()
        .map(usage_from_row)
        .transpose()
    }

    /// The API-call flusher's write, with no request: bounded (see
    /// [`PostgresStore::within`]). Given up after the server committed
    /// (its answer lost), the batch is added again by the next flush: the
    /// count errs toward refusing early, never toward letting calls through.
    async fn add_api_calls(
        &self,
        counts: &[(AccountId, i64, UnixTime)],
    ) -> StoreResult<Vec<(AccountId, ApiUsage)>> {
        self.within(async {
            let mut sorted = counts.to_vec();
            // One order for every node's batch: no deadlock between two flushes.
            sorted.sort_unstable();
            let ids: Vec<i64> = sorted.iter().map(|c| c.0).collect();
            let adds: Vec<i64> = sorted.iter().map(|c| c.1).collect();
            let starts: Vec<i64> = sorted.iter().map(|c| c.2).collect();
            // A stored count of an earlier period starts over; calls of an
            // earlier period than the stored one (a flush that arrives after a
            // reset or a rollover) no longer count.
            sqlx::query(
                "UPDATE accounts a SET \
                   api_calls_count = CASE WHEN a.api_calls_period < c.start THEN c.n \
                     WHEN a.api_calls_period > c.start THEN a.api_calls_count \
                     ELSE a.api_calls_count + c.n END, \
                   api_calls_period = GREATEST(a.api_calls_period, c.start) \
                 FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[]) AS c(id, n, start) \
                 WHERE a.id = c.id \
                 RETURNING a.id, a.api_calls_count, a.max_api_calls, a.quota_period, a.api_calls_period",
            )
            .bind(&ids)
            .bind(&adds)
            .bind(&starts)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?
            .iter()
            .map(|row| Ok((row.try_get("id").map_err(db_error)?, usage_from_row(row)?)))
            .collect()
        })
        .await
    }

    /// Written after a login's answer, with no request: bounded (see
    /// [`PostgresStore::within`]).
    async fn record_login_failure(
        &self,
        id: AccountId,
        from_unknown_client: bool,
    ) -> StoreResult<i64> {
        self.within(async {
            // One statement: the row lock makes concurrent failures from many
            // nodes add up exactly.
            sqlx::query(
                "UPDATE accounts SET failed_login_count = failed_login_count + 1, \
                 consecutive_failures = consecutive_failures + $1 WHERE id = $2 \
                 RETURNING consecutive_failures",
            )
            .bind(i64::from(from_unknown_client))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?
            .map(|row| row.try_get(0).map_err(db_error))
            .transpose()
            .map(Option::unwrap_or_default)
        })
        .await
    }

    async fn is_known_client(
        &self,
        id: AccountId,
        kind: ClientKind,
        value: &str,
    ) -> StoreResult<bool> {
        let known = match kind {
            ClientKind::Device => "SELECT $2 = ANY(known_devices) FROM accounts WHERE id = $1",
            ClientKind::Address => "SELECT $2 = ANY(known_addresses) FROM accounts WHERE id = $1",
        };
        sqlx::query(known)
            .bind(id)
            .bind(value)
            .fetch_optional(&self.pool)
            .await
            .and_then(|row| row.map(|row| row.try_get::<bool, _>(0)).transpose())
            .map(|known| known.unwrap_or(false))
            .map_err(db_error)
    }
}
