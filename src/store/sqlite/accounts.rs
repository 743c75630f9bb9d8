//! Accounts, roles and profile attributes in SQLite.

use std::collections::BTreeMap;

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

use super::{SqliteStore, corrupt, db_error};
use crate::core::clock::UnixTime;
use crate::store::{
    Account, AccountId, AccountStatus, AccountStore, ApiUsage, ClientKind, NewAccount,
    PasswordVerifiers, ProfilePatch, StoreResult,
};

/// An account row with its roles, permissions and profile aggregated as
/// JSON, so that reading an account is one query.
const ACCOUNT_COLUMNS: &str = "id, username, email, email_verified, mobile, mobile_verified, display_name, \
     avatar_url, status, password_hash, md5_verifier, password_changed_at, created_at, updated_at, \
     last_login_at, last_login_ip, login_count, failed_login_count, consecutive_failures, api_calls_count, \
     max_api_calls, \
     (SELECT json_group_array(role) FROM \
        (SELECT role FROM account_roles WHERE account_id = accounts.id ORDER BY role)) AS roles_json, \
     (SELECT json_group_array(permission) FROM \
        (SELECT DISTINCT rp.permission FROM account_roles ar JOIN role_permissions rp ON rp.role = ar.role \
         WHERE ar.account_id = accounts.id ORDER BY rp.permission)) AS permissions_json, \
     (SELECT json_group_object(name, value) FROM profile_attributes \
        WHERE account_id = accounts.id) AS profile_json";

fn json_column<T: serde::de::DeserializeOwned>(row: &SqliteRow, column: &str) -> StoreResult<T> {
    let text: String = row.try_get(column).map_err(db_error)?;
    serde_json::from_str(&text).map_err(|_| corrupt(column))
}

fn account_from_row(row: &SqliteRow) -> StoreResult<Account> {
    let status: String = row.try_get("status").map_err(db_error)?;
    Ok(Account {
        id: row.try_get("id").map_err(db_error)?,
        username: row.try_get("username").map_err(db_error)?,
        email: row.try_get("email").map_err(db_error)?,
        email_verified: row.try_get("email_verified").map_err(db_error)?,
        mobile: row.try_get("mobile").map_err(db_error)?,
        mobile_verified: row.try_get("mobile_verified").map_err(db_error)?,
        display_name: row.try_get("display_name").map_err(db_error)?,
        avatar_url: row.try_get("avatar_url").map_err(db_error)?,
        status: AccountStatus::parse(&status).ok_or_else(|| corrupt("account status"))?,
        verifiers: PasswordVerifiers {
            password_hash: row.try_get("password_hash").map_err(db_error)?,
            md5_verifier: row.try_get("md5_verifier").map_err(db_error)?,
        },
        password_changed_at: row.try_get("password_changed_at").map_err(db_error)?,
        created_at: row.try_get("created_at").map_err(db_error)?,
        updated_at: row.try_get("updated_at").map_err(db_error)?,
        last_login_at: row.try_get("last_login_at").map_err(db_error)?,
        last_login_ip: row.try_get("last_login_ip").map_err(db_error)?,
        login_count: row.try_get("login_count").map_err(db_error)?,
        failed_login_count: row.try_get("failed_login_count").map_err(db_error)?,
        consecutive_failures: row.try_get("consecutive_failures").map_err(db_error)?,
        api_calls_count: row.try_get("api_calls_count").map_err(db_error)?,
        max_api_calls: row.try_get("max_api_calls").map_err(db_error)?,
        roles: json_column(row, "roles_json")?,
        permissions: json_column(row, "permissions_json")?,
        profile: json_column::<BTreeMap<String, String>>(row, "profile_json")?,
    })
}

impl SqliteStore {
    async fn fetch_one_account(&self, sql: &str, binds: &[&str]) -> StoreResult<Option<Account>> {
        let mut query = sqlx::query(sql);
        for bind in binds {
            query = query.bind(*bind);
        }
        let row = query.fetch_optional(&self.reader).await.map_err(db_error)?;
        row.as_ref().map(account_from_row).transpose()
    }

    async fn fetch_account_by_id(
        &self,
        conn: &mut SqliteConnection,
        id: AccountId,
    ) -> StoreResult<Option<Account>> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error)?;
        row.as_ref().map(account_from_row).transpose()
    }
}

#[async_trait]
impl AccountStore for SqliteStore {
    async fn create_account(&self, new: NewAccount) -> StoreResult<Account> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_error)?;
        let id: AccountId = sqlx::query_scalar(
            "INSERT INTO accounts (username, username_key, email, email_key, mobile, display_name, \
             password_hash, md5_verifier, password_changed_at, created_at, updated_at, max_api_calls) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
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
        .bind(new.created_at)
        .bind(new.created_at)
        .bind(new.max_api_calls)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
        for role in &new.roles {
            sqlx::query("INSERT INTO account_roles (account_id, role) VALUES (?, ?)")
                .bind(id)
                .bind(role)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        }
        let account = self
            .fetch_account_by_id(&mut tx, id)
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
        let sql = format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE username_key = ?1 OR email_key = ?1 OR mobile = ?2 \
             ORDER BY CASE WHEN username_key = ?1 THEN 0 WHEN email_key = ?1 THEN 1 ELSE 2 END LIMIT 1"
        );
        self.fetch_one_account(&sql, &[key, mobile.unwrap_or("")])
            .await
    }

    async fn find_account_by_username(&self, username_key: &str) -> StoreResult<Option<Account>> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE username_key = ?");
        self.fetch_one_account(&sql, &[username_key]).await
    }

    async fn get_account(&self, id: AccountId) -> StoreResult<Option<Account>> {
        let mut conn = self.reader.acquire().await.map_err(db_error)?;
        self.fetch_account_by_id(&mut conn, id).await
    }

    async fn list_accounts(&self, after_id: AccountId, limit: u32) -> StoreResult<Vec<Account>> {
        let sql =
            format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id > ? ORDER BY id LIMIT ?");
        let rows = sqlx::query(&sql)
            .bind(after_id)
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await
            .map_err(db_error)?;
        rows.iter().map(account_from_row).collect()
    }

    async fn count_accounts_with_role(&self, role: &str) -> StoreResult<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM account_roles WHERE role = ?")
            .bind(role)
            .fetch_one(&self.reader)
            .await
            .map_err(db_error)
    }

    async fn role_names(&self) -> StoreResult<Vec<String>> {
        sqlx::query_scalar("SELECT name FROM roles ORDER BY name")
            .fetch_all(&self.reader)
            .await
            .map_err(db_error)
    }

    async fn update_profile(
        &self,
        id: AccountId,
        patch: &ProfilePatch,
        now: UnixTime,
    ) -> StoreResult<()> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_error)?;
        sqlx::query(
            "UPDATE accounts SET display_name = COALESCE(?, display_name), \
             avatar_url = COALESCE(?, avatar_url), updated_at = ? WHERE id = ?",
        )
        .bind(&patch.display_name)
        .bind(&patch.avatar_url)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        for (name, value) in &patch.attributes {
            let query = match value {
                Some(value) => sqlx::query(
                    "INSERT INTO profile_attributes (account_id, name, value) VALUES (?, ?, ?) \
                     ON CONFLICT (account_id, name) DO UPDATE SET value = excluded.value",
                )
                .bind(id)
                .bind(name)
                .bind(value),
                None => {
                    sqlx::query("DELETE FROM profile_attributes WHERE account_id = ? AND name = ?")
                        .bind(id)
                        .bind(name)
                }
            };
            query.execute(&mut *tx).await.map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)
    }

    async fn set_password(
        &self,
        id: AccountId,
        verifiers: &PasswordVerifiers,
        changed: bool,
        now: UnixTime,
    ) -> StoreResult<()> {
        let query = if changed {
            sqlx::query(
                "UPDATE accounts SET password_hash = ?, md5_verifier = ?, password_changed_at = ?, \
                 updated_at = ? WHERE id = ?",
            )
            .bind(&verifiers.password_hash)
            .bind(&verifiers.md5_verifier)
            .bind(now)
            .bind(now)
            .bind(id)
        } else {
            // Same password, new verifiers (a parameter upgrade): no change of record times.
            sqlx::query("UPDATE accounts SET password_hash = ?, md5_verifier = ? WHERE id = ?")
                .bind(&verifiers.password_hash)
                .bind(&verifiers.md5_verifier)
                .bind(id)
        };
        query.execute(&self.writer).await.map_err(db_error)?;
        Ok(())
    }

    async fn set_status(
        &self,
        id: AccountId,
        status: AccountStatus,
        now: UnixTime,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE accounts SET status = ?1, updated_at = ?2, \
             consecutive_failures = CASE WHEN ?1 = 'active' THEN 0 ELSE consecutive_failures END WHERE id = ?3",
        )
            .bind(status.as_str())
            .bind(now)
            .bind(id)
            .execute(&self.writer)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn delete_account(&self, id: AccountId) -> StoreResult<bool> {
        let result = sqlx::query("DELETE FROM accounts WHERE id = ?")
            .bind(id)
            .execute(&self.writer)
            .await
            .map_err(db_error)?;
        Ok(result.rows_affected() > 0)
    }

    async fn api_usage(&self, id: AccountId) -> StoreResult<Option<ApiUsage>> {
        let row = sqlx::query("SELECT api_calls_count, max_api_calls FROM accounts WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.reader)
            .await
            .map_err(db_error)?;
        row.map(|row| {
            Ok(ApiUsage {
                count: row.try_get("api_calls_count").map_err(db_error)?,
                max: row.try_get("max_api_calls").map_err(db_error)?,
            })
        })
        .transpose()
    }

    async fn add_api_calls(&self, counts: &[(AccountId, i64)]) -> StoreResult<()> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_error)?;
        for (id, count) in counts {
            sqlx::query("UPDATE accounts SET api_calls_count = api_calls_count + ? WHERE id = ?")
                .bind(count)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)
    }

    async fn set_max_api_calls(&self, id: AccountId, max: i64, now: UnixTime) -> StoreResult<()> {
        sqlx::query("UPDATE accounts SET max_api_calls = ?, updated_at = ? WHERE id = ?")
            .bind(max)
            .bind(now)
            .bind(id)
            .execute(&self.writer)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn record_login_failure(
        &self,
        id: AccountId,
        from_unknown_client: bool,
    ) -> StoreResult<i64> {
        let consecutive: Option<i64> = sqlx::query_scalar(
            "UPDATE accounts SET failed_login_count = failed_login_count + 1, \
             consecutive_failures = consecutive_failures + ? WHERE id = ? RETURNING consecutive_failures",
        )
        .bind(i64::from(from_unknown_client))
        .bind(id)
        .fetch_optional(&self.writer)
        .await
        .map_err(db_error)?;
        Ok(consecutive.unwrap_or(0))
    }

    async fn is_known_client(
        &self,
        id: AccountId,
        kind: ClientKind,
        value: &str,
    ) -> StoreResult<bool> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM known_clients WHERE account_id = ? AND kind = ? AND value = ?",
        )
        .bind(id)
        .bind(kind.as_str())
        .bind(value)
        .fetch_optional(&self.reader)
        .await
        .map_err(db_error)?;
        Ok(found.is_some())
    }
}

/// Upserts the known clients in one statement, then keeps only the newest
/// `keep` of each kind in another.
pub(super) async fn remember_clients(
    conn: &mut SqliteConnection,
    id: AccountId,
    clients: &[(ClientKind, String)],
    now: UnixTime,
    keep: u32,
) -> StoreResult<()> {
    if clients.is_empty() {
        return Ok(());
    }
    let rows = vec!["(?, ?, ?, ?, ?)"; clients.len()].join(", ");
    let sql = format!(
        "INSERT INTO known_clients (account_id, kind, value, first_seen, last_seen) VALUES {rows} \
         ON CONFLICT (account_id, kind, value) DO UPDATE SET last_seen = excluded.last_seen"
    );
    let mut upsert = sqlx::query(&sql);
    for (kind, value) in clients {
        upsert = upsert
            .bind(id)
            .bind(kind.as_str())
            .bind(value)
            .bind(now)
            .bind(now);
    }
    upsert.execute(&mut *conn).await.map_err(db_error)?;
    sqlx::query(
        "DELETE FROM known_clients WHERE rowid IN (SELECT rowid FROM \
         (SELECT rowid, ROW_NUMBER() OVER (PARTITION BY kind ORDER BY last_seen DESC, rowid DESC) AS newest \
          FROM known_clients WHERE account_id = ?) WHERE newest > ?)",
    )
    .bind(id)
    .bind(i64::from(keep))
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    Ok(())
}
