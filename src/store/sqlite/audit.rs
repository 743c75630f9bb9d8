//! The audit log in SQLite.

use async_trait::async_trait;
use sqlx::Row;

use super::{SqliteStore, db_error};
use crate::core::clock::UnixTime;
use crate::store::{AccountId, AuditEvent, AuditStore, StoreResult};

#[async_trait]
impl AuditStore for SqliteStore {
    async fn insert_audit_events(&self, events: &[AuditEvent]) -> StoreResult<()> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_error)?;
        for e in events {
            sqlx::query(
                "INSERT INTO audit_events (at, event, outcome, face, account_id, username, ip, user_agent, detail) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(e.at)
            .bind(&e.event)
            .bind(&e.outcome)
            .bind(&e.face)
            .bind(e.account_id)
            .bind(&e.username)
            .bind(&e.ip)
            .bind(&e.user_agent)
            .bind(&e.detail)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)
    }

    async fn list_audit_events(
        &self,
        account_id: Option<AccountId>,
        limit: u32,
    ) -> StoreResult<Vec<AuditEvent>> {
        let rows = sqlx::query(
            "SELECT id, at, event, outcome, face, account_id, username, ip, user_agent, detail FROM audit_events \
             WHERE ?1 IS NULL OR account_id = ?1 ORDER BY id DESC LIMIT ?2",
        )
        .bind(account_id)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                Ok(AuditEvent {
                    id: row.try_get("id").map_err(db_error)?,
                    at: row.try_get("at").map_err(db_error)?,
                    event: row.try_get("event").map_err(db_error)?,
                    outcome: row.try_get("outcome").map_err(db_error)?,
                    face: row.try_get("face").map_err(db_error)?,
                    account_id: row.try_get("account_id").map_err(db_error)?,
                    username: row.try_get("username").map_err(db_error)?,
                    ip: row.try_get("ip").map_err(db_error)?,
                    user_agent: row.try_get("user_agent").map_err(db_error)?,
                    detail: row.try_get("detail").map_err(db_error)?,
                })
            })
            .collect()
    }

    async fn purge_audit_events(&self, before: UnixTime) -> StoreResult<u64> {
        let result = sqlx::query("DELETE FROM audit_events WHERE at < ?")
            .bind(before)
            .execute(&self.writer)
            .await
            .map_err(db_error)?;
        Ok(result.rows_affected())
    }
}
