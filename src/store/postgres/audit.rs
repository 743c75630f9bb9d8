//! The audit log in PostgreSQL.

use async_trait::async_trait;
use sqlx::Row;

use super::{PostgresStore, db_error};
use crate::clock::UnixTime;
use crate::store::{AuditEvent, AuditQuery, AuditStore, StoreResult};

#[async_trait]
impl AuditStore for PostgresStore {
    /// One statement for the whole batch (arrays unnested into rows).
    async fn insert_audit_events(&self, events: &[AuditEvent]) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let column = |f: fn(&AuditEvent) -> Option<String>| -> Vec<Option<String>> {
            events.iter().map(f).collect()
        };
        let insert = sqlx::query(
            "INSERT INTO audit_events (at, event, outcome, face, account_id, username, ip, \
             user_agent, detail, target_id) SELECT * FROM UNNEST($1::bigint[], $2::text[], \
             $3::text[], $4::text[], $5::bigint[], $6::text[], $7::text[], $8::text[], \
             $9::text[], $10::bigint[])",
        )
        .bind(events.iter().map(|e| e.at).collect::<Vec<_>>())
        .bind(column(|e| Some(e.event.clone())))
        .bind(column(|e| Some(e.outcome.clone())))
        .bind(column(|e| Some(e.face.clone())))
        .bind(events.iter().map(|e| e.account_id).collect::<Vec<_>>())
        .bind(column(|e| e.username.clone()))
        .bind(column(|e| e.ip.clone()))
        .bind(column(|e| e.user_agent.clone()))
        .bind(column(|e| e.detail.clone()))
        .bind(events.iter().map(|e| e.target_id).collect::<Vec<_>>())
        .execute(&self.pool);
        self.within(async { insert.await.map(drop).map_err(db_error) })
            .await
    }

    async fn list_audit_events(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEvent>> {
        const COLUMNS: &str =
            "id, at, event, outcome, face, account_id, username, ip, user_agent, detail, target_id";
        const FILTERS: &str = "($2::text IS NULL OR outcome = $2) \
            AND ($3::text IS NULL OR face = $3) AND ($4::bigint IS NULL OR at >= $4) \
            AND ($5::bigint IS NULL OR at < $5) AND ($6::bigint IS NULL OR id < $6)";
        // An account's events and the changes made to it: one page of each
        // (by their indexes, newest first) merged, rather than every event
        // of both kinds sorted for each page.
        let sql = if query.account_id.is_some() {
            format!(
                "SELECT {COLUMNS} FROM ( \
                   (SELECT {COLUMNS} FROM audit_events WHERE account_id = $1 AND {FILTERS} \
                    ORDER BY id DESC LIMIT $7) \
                   UNION ALL \
                   (SELECT {COLUMNS} FROM audit_events WHERE target_id = $1 \
                    AND account_id IS DISTINCT FROM $1 AND {FILTERS} ORDER BY id DESC LIMIT $7) \
                 ) e ORDER BY id DESC LIMIT $7"
            )
        } else {
            format!(
                "SELECT {COLUMNS} FROM audit_events WHERE $1::bigint IS NULL AND {FILTERS} \
                 ORDER BY id DESC LIMIT $7"
            )
        };
        sqlx::query(&sql)
            .bind(query.account_id)
            .bind(&query.outcome)
            .bind(&query.face)
            .bind(query.since)
            .bind(query.until)
            .bind(query.before_id)
            .bind(i64::from(query.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?
            .iter()
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
                    target_id: row.try_get("target_id").map_err(db_error)?,
                })
            })
            .collect()
    }

    /// A background purge, with no request: bounded (see
    /// [`PostgresStore::within`]).
    async fn purge_audit_events(&self, before: UnixTime, batch: u32) -> StoreResult<u64> {
        self.within(async {
            sqlx::query(
                "DELETE FROM audit_events WHERE id IN (SELECT id FROM audit_events \
                 WHERE at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
            )
            .bind(before)
            .bind(i64::from(batch))
            .execute(&self.pool)
            .await
            .map(|done| done.rows_affected())
            .map_err(db_error)
        })
        .await
    }
}
