//! Accounts, roles and profile attributes in SQLite.

use std::collections::BTreeMap;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{SqliteStore, corrupt, db_error};
use crate::clock::UnixTime;
use crate::store::{
    Account, AccountChange, AccountId, AccountQuery, AccountStatus, AccountStore, ApiUsage,
    ClientKind, Kept, LoginCandidate, LoginRecord, NewAccount, PasswordVerifiers, QuotaPeriod,
    SessionId, StoreError, StoreResult,
};

/// `SELECT` of account rows matching a condition, each with its roles,
/// permissions and profile aggregated as JSON, so that reading an account
/// is one query. A macro so that the text is put together at compile time,
/// not on every login.
macro_rules! select_accounts {
    ($condition:literal) => {
        concat!("SELECT id, username, email, email_verified, mobile, mobile_verified, display_name, \
     avatar_url, status, password_hash, md5_verifier, password_changed_at, created_at, updated_at, \
     last_login_at, last_login_ip, login_count, failed_login_count, consecutive_failures, api_calls_count, \
     max_api_calls, quota_period, api_calls_period, \
     (SELECT json_group_array(role) FROM \
        (SELECT role FROM account_roles WHERE account_id = accounts.id ORDER BY role)) AS roles_json, \
     (SELECT json_group_array(permission) FROM \
        (SELECT DISTINCT rp.permission FROM account_roles ar JOIN role_permissions rp ON rp.role = ar.role \
         WHERE ar.account_id = accounts.id ORDER BY rp.permission)) AS permissions_json, \
     (SELECT json_group_object(name, value) FROM profile_attributes \
        WHERE account_id = accounts.id) AS profile_json \
     FROM accounts WHERE ", $condition)
    };
}

fn json_column<T: serde::de::DeserializeOwned>(
    row: &Row,
    column: &'static str,
) -> rusqlite::Result<T> {
    let text: String = row.get(column)?;
    serde_json::from_str(&text).map_err(|_| corrupt(column))
}

fn period_column(row: &Row) -> rusqlite::Result<Option<QuotaPeriod>> {
    row.get::<_, Option<String>>("quota_period")?
        .map(|p| QuotaPeriod::parse(&p).ok_or_else(|| corrupt("quota period")))
        .transpose()
}

fn account_from_row(row: &Row) -> rusqlite::Result<Account> {
    let status: String = row.get("status")?;
    Ok(Account {
        id: row.get("id")?,
        username: row.get("username")?,
        email: row.get("email")?,
        email_verified: row.get("email_verified")?,
        mobile: row.get("mobile")?,
        mobile_verified: row.get("mobile_verified")?,
        display_name: row.get("display_name")?,
        avatar_url: row.get("avatar_url")?,
        status: AccountStatus::parse(&status).ok_or_else(|| corrupt("account status"))?,
        verifiers: PasswordVerifiers {
            password_hash: row.get("password_hash")?,
            md5_verifier: row.get("md5_verifier")?,
        },
        password_changed_at: row.get("password_changed_at")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
        last_login_at: row.get("last_login_at")?,
        last_login_ip: row.get("last_login_ip")?,
        login_count: row.get("login_count")?,
        failed_login_count: row.get("failed_login_count")?,
        consecutive_failures: row.get("consecutive_failures")?,
        api_calls_count: row.get("api_calls_count")?,
        max_api_calls: row.get("max_api_calls")?,
        quota_period: period_column(row)?,
        api_calls_period: row.get("api_calls_period")?,
        roles: json_column(row, "roles_json")?,
        permissions: json_column(row, "permissions_json")?,
        profile: json_column::<BTreeMap<String, String>>(row, "profile_json")?,
    })
}

fn account_where(
    conn: &Connection,
    select: &str,
    params: impl rusqlite::Params,
) -> StoreResult<Option<Account>> {
    conn.prepare_cached(select)
        .and_then(|mut statement| statement.query_row(params, account_from_row).optional())
        .map_err(db_error)
}

/// [`AccountStore::change_account`] inside a write: an error rolls back
/// every part written before it.
pub(super) fn change_account(
    conn: &Connection,
    id: AccountId,
    change: &AccountChange,
    now: UnixTime,
) -> StoreResult<Option<Vec<SessionId>>> {
    if let Some(roles) = &change.roles {
        for role in roles {
            if !super::roles::role_exists(conn, role)? {
                return Err(StoreError::Conflict("roles"));
            }
        }
    }
    // One writer: nothing changes them between this read and the write.
    if let Some(were) = &change.roles_were {
        let held: Vec<String> = conn
            .prepare_cached("SELECT role FROM account_roles WHERE account_id = ?")
            .and_then(|mut select| {
                select
                    .query_map([id], |row| row.get(0))?
                    .collect::<Result<_, _>>()
            })
            .map_err(db_error)?;
        if !crate::store::same_roles(&held, were) {
            return Err(StoreError::Conflict("roles_were"));
        }
    }
    let apply = |conn: &Connection| {
        let found = conn
            .prepare_cached("UPDATE accounts SET updated_at = ? WHERE id = ?")
            .and_then(|mut update| update.execute(params![now, id]))
            .map_err(db_error)?;
        if found == 0 {
            return Ok(None);
        }
        // One column (or two set together) from one value.
        let set = |sql: &str, value: &dyn rusqlite::ToSql| {
            conn.prepare_cached(sql)
                .and_then(|mut update| update.execute(params![value, id]))
                .map_err(db_error)
        };
        if let Some(status) = change.status {
            set(
                "UPDATE accounts SET status = ?1, \
                 consecutive_failures = CASE WHEN ?1 = 'active' THEN 0 ELSE consecutive_failures END, \
                 known_devices = CASE WHEN ?1 = 'disabled' THEN '[]' ELSE known_devices END, \
                 known_addresses = CASE WHEN ?1 = 'disabled' THEN '[]' ELSE known_addresses END \
                 WHERE id = ?2",
                &status.as_str(),
            )?;
        }
        if let Some(max) = change.max_api_calls {
            set("UPDATE accounts SET max_api_calls = ? WHERE id = ?", &max)?;
        }
        if let Some(period) = change.quota_period {
            set(
                "UPDATE accounts SET quota_period = ? WHERE id = ?",
                &period.map(QuotaPeriod::as_str),
            )?;
        }
        if let Some(mobile) = &change.contact.mobile {
            set(
                "UPDATE accounts SET mobile = ?, mobile_verified = 0 WHERE id = ?",
                mobile,
            )?;
        }
        if let Some(email) = &change.contact.email {
            let (email, key) = email.clone().unzip();
            conn.prepare_cached(
                "UPDATE accounts SET email = ?, email_key = ?, email_verified = 0 WHERE id = ?",
            )
            .and_then(|mut update| update.execute(params![email, key, id]))
            .map_err(db_error)?;
        }
        if let Some(roles) = &change.roles {
            conn.prepare_cached("DELETE FROM account_roles WHERE account_id = ?")
                .and_then(|mut delete| delete.execute([id]))
                .map_err(db_error)?;
            for role in roles {
                conn.prepare_cached(
                    "INSERT OR IGNORE INTO account_roles (account_id, role) VALUES (?, ?)",
                )
                .and_then(|mut insert| insert.execute(params![id, role]))
                .map_err(db_error)?;
            }
        }
        if let Some(profile) = &change.profile {
            conn.prepare_cached(
                "UPDATE accounts SET display_name = COALESCE(?, display_name), \
                 avatar_url = COALESCE(?, avatar_url) WHERE id = ?",
            )
            .and_then(|mut update| {
                update.execute(params![profile.display_name, profile.avatar_url, id])
            })
            .map_err(db_error)?;
            for (name, value) in &profile.attributes {
                set_attribute(conn, id, name, value.as_deref())?;
            }
        }
        if change.status != Some(AccountStatus::Disabled) {
            return Ok(Some(Vec::new()));
        }
        super::sessions::revoke_live_sessions(conn, id, None, "disabled", now).map(Some)
    };
    if change.status.is_some() || change.roles.is_some() {
        super::roles::keeping_an_admin(conn, apply)
    } else {
        apply(conn)
    }
}

/// Sets (`Some`) or removes (`None`) one profile attribute.
fn set_attribute(
    conn: &Connection,
    id: AccountId,
    name: &str,
    value: Option<&str>,
) -> StoreResult<()> {
    match value {
        Some(value) => conn
            .prepare_cached(
                "INSERT INTO profile_attributes (account_id, name, value) VALUES (?, ?, ?) \
                 ON CONFLICT (account_id, name) DO UPDATE SET value = excluded.value",
            )
            .and_then(|mut upsert| upsert.execute(params![id, name, value])),
        None => conn
            .prepare_cached("DELETE FROM profile_attributes WHERE account_id = ? AND name = ?")
            .and_then(|mut delete| delete.execute(params![id, name])),
    }
    .map(|_| ())
    .map_err(db_error)
}

#[async_trait]
impl AccountStore for SqliteStore {
    async fn create_account(&self, new: NewAccount) -> StoreResult<Account> {
        self.write(move |conn| {
            let id: AccountId = conn
                .prepare_cached(
                    "INSERT INTO accounts (username, username_key, email, email_key, mobile, display_name, \
                     password_hash, md5_verifier, password_changed_at, created_at, updated_at, max_api_calls, \
                     quota_period) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?9, ?10, ?11) RETURNING id",
                )
                .and_then(|mut insert| {
                    insert.query_row(
                        params![
                            new.username,
                            new.username_key,
                            new.email,
                            new.email_key,
                            new.mobile,
                            new.display_name,
                            new.verifiers.password_hash,
                            new.verifiers.md5_verifier,
                            new.created_at,
                            new.max_api_calls,
                            new.quota_period.map(QuotaPeriod::as_str),
                        ],
                        |row| row.get(0),
                    )
                })
                .map_err(db_error)?;
            for role in &new.roles {
                conn.prepare_cached("INSERT INTO account_roles (account_id, role) VALUES (?, ?)")
                    .and_then(|mut insert| insert.execute(params![id, role]))
                    .map_err(db_error)?;
            }
            for (name, value) in &new.profile {
                set_attribute(conn, id, name, Some(value))?;
            }
            account_where(conn, select_accounts!("id = ?"), [id])?
                .ok_or_else(|| db_error(corrupt("account vanished after insert")))
        })
        .await
    }

    async fn find_account_by_login(
        &self,
        key: &str,
        mobile: Option<&str>,
    ) -> StoreResult<Option<Account>> {
        self.read(|conn| {
            account_where(
                conn,
                select_accounts!(
                    "username_key = ?1 OR email_key = ?1 OR mobile = ?2 \
                     ORDER BY CASE WHEN username_key = ?1 THEN 0 WHEN email_key = ?1 THEN 1 ELSE 2 END \
                     LIMIT 1"
                ),
                params![key, mobile.unwrap_or("")],
            )
        })
    }

    /// One read: the account, and whether the client is among its known ones.
    async fn find_account_for_login(
        &self,
        key: &str,
        mobile: Option<&str>,
        device: Option<&str>,
        address: Option<&str>,
    ) -> StoreResult<Option<LoginCandidate>> {
        self.read_current(|conn| {
            conn.prepare_cached(concat!(
                "SELECT found.*, \
                   EXISTS (SELECT 1 FROM accounts k, json_each(k.known_devices) d \
                     WHERE k.id = found.id AND d.value = ?3) AS known_device, \
                   EXISTS (SELECT 1 FROM accounts k, json_each(k.known_addresses) a \
                     WHERE k.id = found.id AND a.value = ?4) AS known_address \
                 FROM (",
                select_accounts!(
                    "username_key = ?1 OR email_key = ?1 OR mobile = ?2 \
                     ORDER BY CASE WHEN username_key = ?1 THEN 0 WHEN email_key = ?1 THEN 1 ELSE 2 END \
                     LIMIT 1"
                ),
                ") found"
            ))
            .and_then(|mut select| {
                select
                    .query_row(
                        params![key, mobile.unwrap_or(""), device, address],
                        |row| {
                            Ok(LoginCandidate {
                                account: account_from_row(row)?,
                                known_device: row.get("known_device")?,
                                known_address: row.get("known_address")?,
                            })
                        },
                    )
                    .optional()
            })
            .map_err(db_error)
        })
    }

    async fn find_account_by_username(&self, username_key: &str) -> StoreResult<Option<Account>> {
        self.read(|conn| account_where(conn, select_accounts!("username_key = ?"), [username_key]))
    }

    async fn get_account(&self, id: AccountId) -> StoreResult<Option<Account>> {
        self.read(|conn| account_where(conn, select_accounts!("id = ?"), [id]))
    }

    async fn search_accounts(&self, query: &AccountQuery) -> StoreResult<Vec<Account>> {
        let q = query.clone();
        self.read_off_workers(move |conn| {
            conn.prepare_cached(select_accounts!(
                "id > ?1 \
                 AND (?2 IS NULL OR substr(username_key, 1, length(?2)) = ?2 \
                      OR substr(email_key, 1, length(?2)) = ?2 OR substr(mobile, 1, length(?2)) = ?2) \
                 AND (?3 IS NULL OR status = ?3) \
                 AND (?4 IS NULL OR EXISTS (SELECT 1 FROM account_roles \
                      WHERE account_id = accounts.id AND role = ?4)) \
                 ORDER BY id LIMIT ?5"
            ))
            .and_then(|mut select| {
                select
                    .query_map(
                        params![
                            q.after_id,
                            q.prefix,
                            q.status.map(|s| s.as_str()),
                            q.role,
                            q.limit
                        ],
                        account_from_row,
                    )?
                    .collect()
            })
            .map_err(db_error)
        })
        .await
    }

    async fn change_account(
        &self,
        id: AccountId,
        change: &AccountChange,
        now: UnixTime,
    ) -> StoreResult<Option<Vec<SessionId>>> {
        let change = change.clone();
        // A disabling ends as many sessions as the account has: off the
        // async workers then.
        if change.status == Some(AccountStatus::Disabled) {
            self.write_off_workers(move |conn| change_account(conn, id, &change, now))
                .await
        } else {
            self.write(move |conn| change_account(conn, id, &change, now))
                .await
        }
    }

    async fn reset_api_calls(&self, id: AccountId, now: UnixTime) -> StoreResult<bool> {
        self.write(move |conn| {
            conn.prepare_cached(
                "UPDATE accounts SET api_calls_count = 0, api_calls_period = ?1, updated_at = ?1 \
                 WHERE id = ?2",
            )
            .and_then(|mut update| update.execute(params![now, id]))
            .map(|updated| updated > 0)
            .map_err(db_error)
        })
        .await
    }

    async fn count_accounts_with_role(&self, role: &str) -> StoreResult<i64> {
        self.read(|conn| {
            conn.prepare_cached("SELECT COUNT(*) FROM account_roles WHERE role = ?")
                .and_then(|mut select| select.query_row([role], |row| row.get(0)))
                .map_err(db_error)
        })
    }

    async fn role_names(&self) -> StoreResult<Vec<String>> {
        self.read(|conn| {
            conn.prepare_cached("SELECT name FROM roles ORDER BY name")
                .and_then(|mut select| select.query_map([], |row| row.get(0))?.collect())
                .map_err(db_error)
        })
    }

    async fn foreign_hashes(
        &self,
        after_id: AccountId,
        limit: u32,
    ) -> StoreResult<Vec<(AccountId, String, UnixTime)>> {
        self.read(|conn| {
            let mut select = conn
                .prepare_cached(
                    "SELECT id, password_hash, password_changed_at FROM accounts \
                     WHERE id > ? AND password_hash NOT LIKE '$argon2%' ORDER BY id LIMIT ?",
                )
                .map_err(db_error)?;
            let rows = select
                .query_map(params![after_id, limit], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })
                .map_err(db_error)?;
            rows.map(|row| row.map_err(db_error)).collect()
        })
    }

    async fn set_password(
        &self,
        id: AccountId,
        verifiers: &PasswordVerifiers,
        changed: bool,
        replacing: Option<&str>,
        now: UnixTime,
    ) -> StoreResult<bool> {
        let verifiers = verifiers.clone();
        let replacing = replacing.map(str::to_owned);
        self.write(move |conn| {
            conn.prepare_cached(
                "UPDATE accounts SET password_hash = ?1, md5_verifier = ?2, \
                 password_changed_at = CASE WHEN ?3 THEN ?4 ELSE password_changed_at END, \
                 updated_at = CASE WHEN ?3 THEN ?4 ELSE updated_at END \
                 WHERE id = ?5 AND (?6 IS NULL OR password_hash = ?6)",
            )
            .and_then(|mut update| {
                update.execute(params![
                    verifiers.password_hash,
                    verifiers.md5_verifier,
                    changed,
                    now,
                    id,
                    replacing
                ])
            })
            .map(|written| written == 1)
            .map_err(db_error)
        })
        .await
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
        let verifiers = verifiers.clone();
        let replacing = replacing.map(str::to_owned);
        let list = |kept: &Option<String>| {
            serde_json::to_string(&kept.iter().collect::<Vec<_>>())
                .map_err(|e| StoreError::Database(e.to_string()))
        };
        let (devices, addresses) = (list(&keep.device)?, list(&keep.address)?);
        let (keep, reason) = (keep.session.clone().unwrap_or_default(), reason.to_owned());
        // As many rows as the account has sessions: off the async workers.
        self.write_off_workers(move |conn| {
            let written = conn
                .prepare_cached(
                    "UPDATE accounts SET password_hash = ?1, md5_verifier = ?2, \
                     password_changed_at = ?3, updated_at = ?3, \
                     known_devices = ?6, known_addresses = ?7, consecutive_failures = 0, \
                     status = CASE WHEN status = 'locked' THEN 'active' ELSE status END \
                     WHERE id = ?4 AND (?5 IS NULL OR password_hash = ?5)",
                )
                .and_then(|mut update| {
                    update.execute(params![
                        verifiers.password_hash,
                        verifiers.md5_verifier,
                        now,
                        id,
                        replacing,
                        devices,
                        addresses
                    ])
                })
                .map_err(db_error)?;
            if written == 0 {
                return Ok(None);
            }
            super::sessions::revoke_live_sessions(conn, id, Some(&keep), &reason, now).map(Some)
        })
        .await
    }

    async fn set_locked(&self, id: AccountId, locked: bool, now: UnixTime) -> StoreResult<bool> {
        // Never refused by the last-administrator rule: a lockout may not
        // fail a login, and an unlock only raises the standing. (Writes
        // are serialised: no change of who administers runs meanwhile.)
        self.write(move |conn| {
            let sql = if locked {
                "UPDATE accounts SET status = 'locked', updated_at = ? \
                 WHERE id = ? AND status = 'active'"
            } else {
                "UPDATE accounts SET status = 'active', updated_at = ?, consecutive_failures = 0 \
                 WHERE id = ? AND status <> 'disabled'"
            };
            conn.prepare_cached(sql)
                .and_then(|mut update| update.execute(params![now, id]))
                .map(|changed| changed == 1)
                .map_err(db_error)
        })
        .await
    }

    async fn delete_account(&self, id: AccountId) -> StoreResult<bool> {
        // Cascades to every session and token of the account: off the
        // async workers.
        self.write_off_workers(move |conn| {
            super::roles::keeping_an_admin(conn, |conn| {
                conn.prepare_cached("DELETE FROM accounts WHERE id = ?")
                    .and_then(|mut delete| delete.execute([id]))
                    .map(|deleted| deleted > 0)
                    .map_err(db_error)
            })
        })
        .await
    }

    async fn api_usage(&self, id: AccountId) -> StoreResult<Option<ApiUsage>> {
        self.read(|conn| {
            conn.prepare_cached(
                "SELECT api_calls_count, max_api_calls, quota_period, api_calls_period \
                 FROM accounts WHERE id = ?",
            )
            .and_then(|mut select| select.query_row([id], usage_from_row).optional())
            .map_err(db_error)
        })
    }

    async fn add_api_calls(
        &self,
        counts: &[(AccountId, i64, UnixTime)],
    ) -> StoreResult<Vec<(AccountId, ApiUsage)>> {
        let counts = counts.to_vec();
        // One update per account with calls to add: off the async workers.
        self.write_off_workers(move |conn| {
            // A stored count of an earlier period starts over; calls of an
            // earlier period than the stored one (a flush that arrives after
            // a reset or a rollover) no longer count.
            let mut update = conn
                .prepare_cached(
                    "UPDATE accounts SET \
                       api_calls_count = CASE WHEN api_calls_period < ?1 THEN ?2 \
                         WHEN api_calls_period > ?1 THEN api_calls_count \
                         ELSE api_calls_count + ?2 END, \
                       api_calls_period = MAX(api_calls_period, ?1) \
                     WHERE id = ?3 \
                     RETURNING api_calls_count, max_api_calls, quota_period, api_calls_period",
                )
                .map_err(db_error)?;
            let mut totals = Vec::with_capacity(counts.len());
            for (id, count, period_start) in counts {
                let usage = update
                    .query_row(params![period_start, count, id], usage_from_row)
                    .optional()
                    .map_err(db_error)?;
                if let Some(usage) = usage {
                    totals.push((id, usage));
                }
            }
            Ok(totals)
        })
        .await
    }

    async fn record_login_failure(
        &self,
        id: AccountId,
        from_unknown_client: bool,
    ) -> StoreResult<i64> {
        self.write(move |conn| {
            conn.prepare_cached(
                "UPDATE accounts SET failed_login_count = failed_login_count + 1, \
                 consecutive_failures = consecutive_failures + ? WHERE id = ? RETURNING consecutive_failures",
            )
            .and_then(|mut update| {
                update
                    .query_row(params![i64::from(from_unknown_client), id], |row| row.get(0))
                    .optional()
            })
            .map(Option::unwrap_or_default)
            .map_err(db_error)
        })
        .await
    }

    async fn is_known_client(
        &self,
        id: AccountId,
        kind: ClientKind,
        value: &str,
    ) -> StoreResult<bool> {
        let select = match kind {
            ClientKind::Device => {
                "SELECT 1 FROM accounts, json_each(accounts.known_devices) known \
                 WHERE accounts.id = ? AND known.value = ?"
            }
            ClientKind::Address => {
                "SELECT 1 FROM accounts, json_each(accounts.known_addresses) known \
                 WHERE accounts.id = ? AND known.value = ?"
            }
        };
        self.read(|conn| {
            conn.prepare_cached(select)
                .and_then(|mut select| select.exists(params![id, value]))
                .map_err(db_error)
        })
    }
}

/// `list` (a JSON array, newest first) with `seen` moved to its front, at
/// most `keep` long; the list as it is when this login saw no such client.
fn remembered(list: &str, seen: Option<&str>, keep: u32) -> StoreResult<String> {
    let Some(seen) = seen else {
        return Ok(list.to_owned());
    };
    let known: Vec<String> =
        serde_json::from_str(list).map_err(|_| db_error(corrupt("known clients")))?;
    let newest = std::iter::once(seen)
        .chain(
            known
                .iter()
                .map(String::as_str)
                .filter(|value| *value != seen),
        )
        .take(usize::try_from(keep).unwrap_or(usize::MAX));
    serde_json::to_string(&newest.collect::<Vec<_>>())
        .map_err(|_| db_error(corrupt("known clients")))
}

/// A successful login's bookkeeping on the account's row: its counters, and
/// the clients it came from moved to the front of the account's known ones.
/// The lists are read here, inside the writer's transaction, not taken from
/// the login's earlier read: a concurrent login of the account may have
/// changed them since, and the single writer orders the two.
/// Records a successful login on its account; false, with nothing written,
/// if the account is gone or disabled.
pub(super) fn record_success(conn: &Connection, login: &LoginRecord) -> StoreResult<bool> {
    let Some((devices, addresses)) = conn
        .prepare_cached(
            "SELECT known_devices, known_addresses FROM accounts \
             WHERE id = ?1 AND status <> 'disabled' AND (?2 IS NULL OR password_hash = ?2)",
        )
        .and_then(|mut select| {
            select
                .query_row(params![login.account_id, login.password_hash], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                })
                .optional()
        })
        .map_err(db_error)?
    else {
        return Ok(false);
    };
    let devices = remembered(&devices, login.client(ClientKind::Device), login.keep)?;
    let addresses = remembered(&addresses, login.client(ClientKind::Address), login.keep)?;
    conn.prepare_cached(
        "UPDATE accounts SET login_count = login_count + 1, last_login_at = ?, last_login_ip = ?, \
         consecutive_failures = 0, known_devices = ?, known_addresses = ? WHERE id = ?",
    )
    .and_then(|mut update| {
        update.execute(params![
            login.at,
            login.ip,
            devices,
            addresses,
            login.account_id
        ])
    })
    .map(|_| true)
    .map_err(db_error)
}

fn usage_from_row(row: &Row) -> rusqlite::Result<ApiUsage> {
    Ok(ApiUsage {
        count: row.get("api_calls_count")?,
        max: row.get("max_api_calls")?,
        period: period_column(row)?,
        period_start: row.get("api_calls_period")?,
    })
}

#[cfg(test)]
mod tests {
    use super::remembered;

    #[test]
    fn a_client_seen_moves_to_the_front_and_the_list_keeps_its_length() {
        assert_eq!(remembered("[]", Some("a"), 3).unwrap(), r#"["a"]"#);
        assert_eq!(
            remembered(r#"["b","a","c"]"#, Some("a"), 3).unwrap(),
            r#"["a","b","c"]"#
        );
        assert_eq!(
            remembered(r#"["b","c","d"]"#, Some("a"), 3).unwrap(),
            r#"["a","b","c"]"#
        );
        assert_eq!(
            remembered(r#"["b","c"]"#, Some("a"), 1).unwrap(),
            r#"["a"]"#
        );
    }

    #[test]
    fn no_client_seen_leaves_the_list_as_it_is() {
        assert_eq!(
            remembered(r#"["b","c","d"]"#, None, 2).unwrap(),
            r#"["b","c","d"]"#
        );
    }

    #[test]
    fn a_list_that_is_not_json_is_reported_not_replaced() {
        assert!(remembered("b c", Some("a"), 3).is_err());
    }
}
