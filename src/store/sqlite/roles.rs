//! Roles and who holds them, in SQLite. Writes are serialised (the writer's
//! one connection, each in its `BEGIN IMMEDIATE` transaction), so the
//! last-administrator check and the change it guards are never interleaved
//! with another write.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::{SqliteStore, db_error};
use crate::store::{
    ADMIN_PERMISSION, AdminStanding, Role, RoleChange, RoleStore, StoreError, StoreResult,
};

/// How well the deployment is administered: see
/// [`crate::store::AdminStanding`].
fn admin_standing(conn: &Connection) -> StoreResult<AdminStanding> {
    conn.prepare_cached(
        "SELECT COALESCE(MAX(CASE a.status WHEN 'active' THEN 2 ELSE 1 END), 0) \
         FROM accounts a \
           JOIN account_roles ar ON ar.account_id = a.id \
           JOIN role_permissions rp ON rp.role = ar.role \
         WHERE rp.permission = ?1 AND a.status <> 'disabled'",
    )
    .and_then(|mut select| select.query_row([ADMIN_PERMISSION], |row| row.get(0)))
    .map_err(db_error)
}

/// Runs `change`, refusing it (the writer then rolls it back) if it took
/// the last administrator away.
pub(super) fn keeping_an_admin<T>(
    conn: &Connection,
    change: impl FnOnce(&Connection) -> StoreResult<T>,
) -> StoreResult<T> {
    let before = admin_standing(conn)?;
    let result = change(conn)?;
    if admin_standing(conn)? < before {
        return Err(StoreError::LastAdministrator);
    }
    Ok(result)
}

pub(super) fn role_exists(conn: &Connection, name: &str) -> StoreResult<bool> {
    conn.prepare_cached("SELECT 1 FROM roles WHERE name = ?")
        .and_then(|mut select| select.query_row([name], |_| Ok(())).optional())
        .map(|found| found.is_some())
        .map_err(db_error)
}

fn set_permissions(conn: &Connection, role: &str, permissions: &[String]) -> StoreResult<()> {
    conn.prepare_cached("DELETE FROM role_permissions WHERE role = ?")
        .and_then(|mut delete| delete.execute([role]))
        .map_err(db_error)?;
    for permission in permissions {
        conn.prepare_cached(
            "INSERT OR IGNORE INTO role_permissions (role, permission) VALUES (?, ?)",
        )
        .and_then(|mut insert| insert.execute(params![role, permission]))
        .map_err(db_error)?;
    }
    Ok(())
}

#[async_trait]
impl RoleStore for SqliteStore {
    async fn list_roles(&self) -> StoreResult<Vec<Role>> {
        self.read(|conn| {
            let mut select = conn
                .prepare_cached(
                    "SELECT r.name, r.description, \
                       (SELECT json_group_array(permission) FROM (SELECT permission \
                          FROM role_permissions WHERE role = r.name ORDER BY permission)) \
                     FROM roles r ORDER BY r.name",
                )
                .map_err(db_error)?;
            let rows = select
                .query_map([], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                    ))
                })
                .map_err(db_error)?;
            rows.map(|row| {
                let (name, description, permissions) = row.map_err(db_error)?;
                let permissions = serde_json::from_str(&permissions)
                    .map_err(|_| StoreError::Corrupt("role permissions".into()))?;
                Ok(Role {
                    name,
                    description,
                    permissions,
                })
            })
            .collect()
        })
    }

    async fn create_role(&self, role: &Role) -> StoreResult<()> {
        let role = role.clone();
        self.write(move |conn| {
            if role_exists(conn, &role.name)? {
                return Err(StoreError::Conflict("name"));
            }
            conn.prepare_cached("INSERT INTO roles (name, description) VALUES (?, ?)")
                .and_then(|mut insert| insert.execute(params![role.name, role.description]))
                .map_err(db_error)?;
            set_permissions(conn, &role.name, &role.permissions)
        })
        .await
    }

    async fn update_role(&self, name: &str, change: &RoleChange) -> StoreResult<bool> {
        let (name, change) = (name.to_owned(), change.clone());
        self.write(move |conn| {
            if !role_exists(conn, &name)? {
                return Ok(false);
            }
            keeping_an_admin(conn, |conn| {
                if let Some(description) = &change.description {
                    conn.prepare_cached("UPDATE roles SET description = ? WHERE name = ?")
                        .and_then(|mut update| update.execute(params![description, name]))
                        .map_err(db_error)?;
                }
                if let Some(permissions) = &change.permissions {
                    set_permissions(conn, &name, permissions)?;
                }
                for permission in &change.grant {
                    conn.prepare_cached(
                        "INSERT OR IGNORE INTO role_permissions (role, permission) VALUES (?, ?)",
                    )
                    .and_then(|mut insert| insert.execute(params![name, permission]))
                    .map_err(db_error)?;
                }
                for permission in &change.revoke {
                    conn.prepare_cached(
                        "DELETE FROM role_permissions WHERE role = ? AND permission = ?",
                    )
                    .and_then(|mut delete| delete.execute(params![name, permission]))
                    .map_err(db_error)?;
                }
                if let Some(most) = change.permissions_at_most {
                    let held: i64 = conn
                        .prepare_cached("SELECT count(*) FROM role_permissions WHERE role = ?")
                        .and_then(|mut count| count.query_row([&name], |row| row.get(0)))
                        .map_err(db_error)?;
                    if usize::try_from(held).unwrap_or(usize::MAX) > most {
                        return Err(StoreError::TooMany {
                            field: "permissions",
                            most,
                        });
                    }
                }
                Ok(true)
            })
        })
        .await
    }

    async fn delete_role(&self, name: &str) -> StoreResult<bool> {
        let name = name.to_owned();
        // Cascades to every holder of the role: off the async workers.
        self.write_off_workers(move |conn| {
            keeping_an_admin(conn, |conn| {
                // Foreign keys cascade to role_permissions and account_roles.
                conn.prepare_cached("DELETE FROM roles WHERE name = ?")
                    .and_then(|mut delete| delete.execute([&name]))
                    .map(|deleted| deleted > 0)
                    .map_err(db_error)
            })
        })
        .await
    }
}
