//! Roles and who holds them, in PostgreSQL.
//!
//! Every change that could take the last administrator away runs in
//! a transaction that first takes one advisory transaction lock, so such
//! changes from any node pass one at a time; inside it the check before and
//! after sees every earlier change committed (READ COMMITTED takes a fresh
//! snapshot per statement).

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::PgConnection;

use super::{PostgresStore, db_error};
use crate::store::{
    ADMIN_PERMISSION, AdminStanding, Role, RoleChange, RoleStore, StoreError, StoreResult,
};

/// The advisory-lock key of changes to who is an administrator ("ADMINS").
const ADMINS_LOCK: i64 = 0x4144_4d49_4e53;

/// Takes the administrators' lock (until the transaction ends) and says
/// how well the deployment is administered now (see
/// [`crate::store::AdminStanding`]).
pub(super) async fn admins_before(tx: &mut PgConnection) -> StoreResult<AdminStanding> {
    lock_administrators(tx).await?;
    admin_standing(tx).await
}

/// Takes the administrators' lock until the transaction ends.
pub(super) async fn lock_administrators(tx: &mut PgConnection) -> StoreResult<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(ADMINS_LOCK)
        .execute(&mut *tx)
        .await
        .map(|_| ())
        .map_err(db_error)
}

/// Refuses the transaction's change if it took the last administrator away.
pub(super) async fn admins_after(tx: &mut PgConnection, before: AdminStanding) -> StoreResult<()> {
    if admin_standing(tx).await? < before {
        return Err(StoreError::LastAdministrator);
    }
    Ok(())
}

async fn admin_standing(tx: &mut PgConnection) -> StoreResult<AdminStanding> {
    sqlx::query_scalar(
        "SELECT COALESCE(MAX(CASE a.status WHEN 'active' THEN 2 ELSE 1 END), 0)::BIGINT \
         FROM accounts a \
           JOIN account_roles ar ON ar.account_id = a.id \
           JOIN role_permissions rp ON rp.role = ar.role \
         WHERE rp.permission = $1 AND a.status <> 'disabled'",
    )
    .bind(ADMIN_PERMISSION)
    .fetch_one(&mut *tx)
    .await
    .map_err(db_error)
}

async fn set_permissions(
    tx: &mut PgConnection,
    role: &str,
    permissions: &[String],
) -> StoreResult<()> {
    // Two statements: in one, a DELETE in a WITH and the INSERT would run
    // in no defined order, and a kept permission could collide with itself.
    sqlx::query("DELETE FROM role_permissions WHERE role = $1")
        .bind(role)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    sqlx::query(
        "INSERT INTO role_permissions (role, permission) \
         SELECT DISTINCT $1, p FROM UNNEST($2::text[]) AS p",
    )
    .bind(role)
    .bind(permissions)
    .execute(&mut *tx)
    .await
    .map_err(db_error)?;
    Ok(())
}

#[async_trait]
impl RoleStore for PostgresStore {
    async fn list_roles(&self) -> StoreResult<Vec<Role>> {
        sqlx::query(
            "SELECT r.name, r.description, ARRAY(SELECT permission FROM role_permissions \
               WHERE role = r.name ORDER BY permission COLLATE \"C\") AS permissions \
             FROM roles r ORDER BY r.name COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?
        .iter()
        .map(|row| {
            Ok(Role {
                name: row.try_get("name").map_err(db_error)?,
                description: row.try_get("description").map_err(db_error)?,
                permissions: row.try_get("permissions").map_err(db_error)?,
            })
        })
        .collect()
    }

    async fn create_role(&self, role: &Role) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let created = sqlx::query(
            "INSERT INTO roles (name, description) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&role.name)
        .bind(&role.description)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?
        .rows_affected();
        if created == 0 {
            return Err(StoreError::Conflict("name"));
        }
        set_permissions(&mut tx, &role.name, &role.permissions).await?;
        tx.commit().await.map_err(db_error)
    }

    async fn update_role(&self, name: &str, change: &RoleChange) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let before = admins_before(&mut tx).await?;
        let found =
            sqlx::query("UPDATE roles SET description = COALESCE($2, description) WHERE name = $1")
                .bind(name)
                .bind(&change.description)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?
                .rows_affected();
        if found == 0 {
            return Ok(false);
        }
        if let Some(permissions) = &change.permissions {
            set_permissions(&mut tx, name, permissions).await?;
        }
        if !change.grant.is_empty() {
            sqlx::query(
                "INSERT INTO role_permissions (role, permission) \
                 SELECT $1, p FROM UNNEST($2::text[]) AS p ON CONFLICT DO NOTHING",
            )
            .bind(name)
            .bind(&change.grant)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }
        if !change.revoke.is_empty() {
            sqlx::query("DELETE FROM role_permissions WHERE role = $1 AND permission = ANY($2)")
                .bind(name)
                .bind(&change.revoke)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        }
        if let Some(most) = change.permissions_at_most {
            // The role's row, locked by the update above, orders changes
            // to it; in read committed this count sees every one before.
            let (held,): (i64,) =
                sqlx::query_as("SELECT count(*) FROM role_permissions WHERE role = $1")
                    .bind(name)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db_error)?;
            if usize::try_from(held).unwrap_or(usize::MAX) > most {
                return Err(StoreError::TooMany {
                    field: "permissions",
                    most,
                });
            }
        }
        admins_after(&mut tx, before).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(true)
    }

    async fn delete_role(&self, name: &str) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let before = admins_before(&mut tx).await?;
        // Foreign keys cascade to role_permissions and account_roles.
        let deleted = sqlx::query("DELETE FROM roles WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?
            .rows_affected();
        admins_after(&mut tx, before).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(deleted > 0)
    }
}
