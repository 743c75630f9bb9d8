//! The audit log in SQLite.

use async_trait::async_trait;
use rusqlite::params;

use super::{SqliteStore, db_error};
use crate::clock::UnixTime;
use crate::store::{AuditEvent, AuditQuery, AuditStore, StoreResult};

#[async_trait]
impl AuditStore for SqliteStore {
    async fn insert_audit_events(&self, events: &[AuditEvent]) -> StoreResult<()> {
        let events = events.to_vec();
        self.write_off_workers(move |conn| {
            let mut insert = conn
                .prepare_cached(
                    "INSERT INTO audit_events (at, event, outcome, face, account_id, username, ip, \
                     user_agent, detail, target_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .map_err(db_error)?;
            for e in events {
                insert
                    .execute(params![
                        e.at,
                        e.event,
                        e.outcome,
                        e.face,
                        e.account_id,
                        e.username,
                        e.ip,
                        e.user_agent,
                        e.detail,
                        e.target_id
                    ])
                    .map_err(db_error)?;
            }
            Ok(())
        })
        .await
    }

    async fn list_audit_events(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEvent>> {
        let q = query.clone();
        self.read_off_workers(move |conn| {
            conn.prepare_cached(
                "SELECT id, at, event, outcome, face, account_id, username, ip, user_agent, \
                 detail, target_id FROM audit_events \
                 WHERE (?1 IS NULL OR account_id = ?1 OR target_id = ?1) \
                   AND (?2 IS NULL OR outcome = ?2) AND (?3 IS NULL OR face = ?3) \
                   AND (?4 IS NULL OR at >= ?4) AND (?5 IS NULL OR at < ?5) \
                   AND (?6 IS NULL OR id < ?6) \
                 ORDER BY id DESC LIMIT ?7",
            )
            .and_then(|mut select| {
                select
                    .query_map(
                        params![
                            q.account_id,
                            q.outcome,
                            q.face,
                            q.since,
                            q.until,
                            q.before_id,
                            q.limit
                        ],
                        |row| {
                            Ok(AuditEvent {
                                id: row.get("id")?,
                                at: row.get("at")?,
                                event: row.get("event")?,
                                outcome: row.get("outcome")?,
                                face: row.get("face")?,
                                account_id: row.get("account_id")?,
                                username: row.get("username")?,
                                ip: row.get("ip")?,
                                user_agent: row.get("user_agent")?,
                                detail: row.get("detail")?,
                                target_id: row.get("target_id")?,
                            })
                        },
                    )?
                    .collect()
            })
            .map_err(db_error)
        })
        .await
    }

    async fn purge_audit_events(&self, before: UnixTime, batch: u32) -> StoreResult<u64> {
        self.write_off_workers(move |conn| {
            conn.prepare_cached(
                "DELETE FROM audit_events WHERE id IN \
                 (SELECT id FROM audit_events WHERE at < ? LIMIT ?)",
            )
            .and_then(|mut delete| delete.execute([before, i64::from(batch)]))
            .map(|purged| purged as u64)
            .map_err(db_error)
        })
        .await
    }
}
