//! The audit log: every login (success and each kind of failure, with the
//! face), refresh, reuse detection, logout, lockout, unlock, password change
//! and operator action, with time, account, address, user agent and outcome.
//! Never a password or token; for an unknown account not even the login
//! name (people type passwords into it).
//!
//! Events are buffered and written in batches every `FLUSH_INTERVAL` (and at
//! shutdown), so a login costs no extra database transaction; a crash loses
//! at most that interval's events. Events older than the retention are
//! purged hourly.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::ClientInfo;
use super::clock::{Clock, UnixTime};
use super::error::{Error, Result};
use crate::store::{Account, AuditEvent, Store};

/// How often buffered events are written.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(250);
const PURGE_EVERY: u32 = 4 * 3600;
/// Events deleted per statement of a purge.
const PURGE_BATCH: u32 = 5_000;

/// Builds an event; the core fills in what it knows.
pub fn event(event: &str, outcome: &str, face: &str) -> AuditEvent {
    AuditEvent {
        id: 0,
        at: 0,
        event: event.to_owned(),
        outcome: outcome.to_owned(),
        face: face.to_owned(),
        account_id: None,
        username: None,
        target_id: None,
        ip: None,
        user_agent: None,
        detail: None,
    }
}

/// Builder steps for [`AuditEvent`].
pub trait AuditEventExt {
    /// Names the account.
    fn account(self, account: &Account) -> Self;
    /// Names the client.
    fn client(self, client: &ClientInfo) -> Self;
    /// Adds a detail.
    fn detail(self, detail: impl Into<String>) -> Self;
    /// Replaces the outcome.
    fn with_outcome(self, outcome: &str) -> Self;
    /// Replaces the event name.
    fn with_event(self, event: &str) -> Self;
}

impl AuditEventExt for AuditEvent {
    fn account(mut self, account: &Account) -> Self {
        self.account_id = Some(account.id);
        self.username = Some(account.username.clone());
        self
    }

    fn client(mut self, client: &ClientInfo) -> Self {
        self.ip = client.ip.map(|ip| ip.to_string());
        self.user_agent = client.user_agent.clone();
        self
    }

    fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    fn with_outcome(mut self, outcome: &str) -> Self {
        outcome.clone_into(&mut self.outcome);
        self
    }

    fn with_event(mut self, event: &str) -> Self {
        event.clone_into(&mut self.event);
        self
    }
}

/// How many refusals that cost their sender nothing (a throttled login, a
/// refresh with a string that is no live token, a refused token request)
/// the audit log records per client address: 30 at once, then one every
/// 10 seconds (on every node together, with Redis). Past it they are only
/// counted (`sesame_logins_total`, `sesame_refreshes_total`): anyone could
/// otherwise fill the database with rows, and crowd the real events out of
/// a log that falls behind.
pub const CHEAP_REFUSALS_AUDITED: crate::limits::Rule = crate::limits::Rule {
    burst: 30,
    interval: 10,
};

impl super::Core {
    /// Records `entry`, a refusal that cost `client` nothing, within its
    /// address's budget ([`CHEAP_REFUSALS_AUDITED`]).
    pub(crate) async fn audit_cheap_refusal(&self, entry: AuditEvent, client: &ClientInfo) {
        let address = super::guard::address_key(client, self.settings.abuse.ipv6_prefix);
        let key = format!(
            "audit-refused:{}",
            address.as_deref().unwrap_or("no-address")
        );
        self.audit_within(&key, &CHEAP_REFUSALS_AUDITED, entry)
            .await;
    }

    /// Records `entry` if the limiter's budget `key` under `rule` admits
    /// one more; with shared state unreachable, recorded (the limiter
    /// already falls back to this node's memory when it can).
    pub(crate) async fn audit_within(
        &self,
        key: &str,
        rule: &crate::limits::Rule,
        entry: AuditEvent,
    ) {
        let charged = self.limiter.try_charge(key, rule, self.now()).await;
        if !matches!(charged, Ok(crate::limits::Charged::Wait(_))) {
            self.audit.record(entry);
        }
    }
}

/// Most events waiting for the database. Past it (a long database outage)
/// new events are dropped and counted, rather than growing the node's
/// memory without bound; each is ~300 bytes.
const MAX_BUFFERED: usize = 100_000;
/// Most events written in one statement: after an outage the backlog goes
/// in batches that each stay well inside `statement_timeout`.
const FLUSH_BATCH: usize = 1_000;

/// The buffered audit log.
pub struct AuditLog {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    buffer: Mutex<Vec<AuditEvent>>,
    /// Events dropped because the buffer was full, not yet reported.
    dropped: std::sync::atomic::AtomicU64,
    /// Held for a whole flush, so that the flush before a CLI command exits
    /// waits for a periodic one still writing instead of finding nothing.
    flushing: tokio::sync::Mutex<()>,
    retention_days: i64,
}

impl AuditLog {
    /// A log writing to `store`, keeping events for `retention_days`.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, retention_days: i64) -> Self {
        Self {
            store,
            clock,
            buffer: Mutex::new(Vec::new()),
            dropped: std::sync::atomic::AtomicU64::new(0),
            flushing: tokio::sync::Mutex::new(()),
            retention_days,
        }
    }

    /// Stamps and buffers an event.
    pub fn record(&self, mut event: AuditEvent) {
        event.at = self.clock.now();
        tracing::debug!(
            event = %event.event, outcome = %event.outcome, face = %event.face,
            account_id = event.account_id, ip = event.ip.as_deref().unwrap_or("-"), "audit"
        );
        if let Ok(mut buffer) = self.buffer.lock() {
            if buffer.len() < MAX_BUFFERED {
                buffer.push(event);
            } else {
                self.dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// Writes buffered events now, [`FLUSH_BATCH`] at a time; on failure
    /// the unwritten ones stay buffered, ahead of newer ones.
    pub async fn flush(&self) -> Result<()> {
        let _flushing = self.flushing.lock().await;
        let dropped = self.dropped.swap(0, std::sync::atomic::Ordering::Relaxed);
        if dropped > 0 {
            tracing::error!(
                dropped,
                "audit events dropped: the database did not take them and the buffer was full"
            );
        }
        let mut events = match self.buffer.lock() {
            Ok(mut buffer) => std::mem::take(&mut *buffer),
            Err(_) => return Err(Error::Internal("audit buffer poisoned".into())),
        };
        while !events.is_empty() {
            let batch = events.len().min(FLUSH_BATCH);
            if let Err(error) = self.store.insert_audit_events(&events[..batch]).await {
                if let Ok(mut buffer) = self.buffer.lock() {
                    let newer = std::mem::replace(&mut *buffer, events);
                    buffer.extend(newer);
                    let over = buffer.len().saturating_sub(MAX_BUFFERED);
                    if over > 0 {
                        buffer.truncate(MAX_BUFFERED);
                        self.dropped
                            .fetch_add(over as u64, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                return Err(error.into());
            }
            events.drain(..batch);
        }
        Ok(())
    }

    /// Deletes events past the retention, in batches of [`PURGE_BATCH`]
    /// (each one short statement: never one delete of an hour's millions
    /// of rows that the statement timeout would cancel every time).
    pub async fn purge(&self) -> Result<u64> {
        let cutoff: UnixTime = self.clock.now() - self.retention_days * 86_400;
        let mut purged = 0;
        loop {
            let batch = self.store.purge_audit_events(cutoff, PURGE_BATCH).await?;
            purged += batch;
            if batch < u64::from(PURGE_BATCH) {
                return Ok(purged);
            }
        }
    }

    /// Flushes every [`FLUSH_INTERVAL`] and, when `purges`, purges hourly,
    /// until dropped.
    pub fn spawn_flusher(self: &Arc<Self>, purges: bool) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FLUSH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut ticks: u32 = 0;
            let purging = Arc::new(AtomicBool::new(false));
            loop {
                tick.tick().await;
                let Some(log) = weak.upgrade() else { return };
                if let Err(error) = log.flush().await {
                    tracing::warn!(%error, "could not write audit events; will retry");
                }
                // On its own task: a long purge must not hold up the flushes.
                if purges
                    && ticks.is_multiple_of(PURGE_EVERY)
                    && !purging.swap(true, Ordering::AcqRel)
                {
                    let purging = Arc::clone(&purging);
                    tokio::spawn(async move {
                        if let Err(error) = log.purge().await {
                            tracing::warn!(%error, "could not purge old audit events");
                        }
                        purging.store(false, Ordering::Release);
                    });
                }
                ticks = ticks.wrapping_add(1);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{AuditLog, event};
    use crate::core::clock::ManualClock;
    use crate::store::AuditStore;
    use crate::store::sqlite::SqliteStore;

    /// The CLI flushes before it exits; if the periodic flush has just taken
    /// the buffer and is still writing, that flush must wait for it rather
    /// than find nothing and let the process exit with the events unwritten.
    #[tokio::test]
    async fn a_flush_waits_for_one_already_writing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            SqliteStore::connect(&SqliteStore::url_for_data_dir(dir.path()))
                .await
                .unwrap(),
        );
        let log = Arc::new(AuditLog::new(
            store.clone(),
            Arc::new(ManualClock::new(1_000)),
            30,
        ));
        log.record(event("account_disabled", "ok", "cli"));
        // Another process holds the write lock for a while (as a running
        // server or CLI command can), so the periodic flush's write waits.
        let other = rusqlite::Connection::open(dir.path().join("sesame.db")).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let other = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            other.execute_batch("COMMIT").unwrap();
        });
        let periodic = tokio::spawn({
            let log = Arc::clone(&log);
            async move { log.flush().await }
        });
        // On this single-threaded runtime the periodic flush now runs until it
        // waits for the database, holding the events it took.
        tokio::task::yield_now().await;
        log.flush().await.unwrap();
        let written = store
            .list_audit_events(&crate::store::AuditQuery {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(written.len(), 1, "the event is written when flush returns");
        periodic.await.unwrap().unwrap();
        other.join().unwrap();
    }

    /// While the database refuses events they stay buffered, up to a bound
    /// past which new ones are dropped (and reported); once it takes them
    /// again the backlog goes in batches, oldest first.
    #[tokio::test]
    async fn a_backlog_is_bounded_and_written_in_batches_once_possible() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            SqliteStore::connect(&SqliteStore::url_for_data_dir(dir.path()))
                .await
                .unwrap(),
        );
        let log = AuditLog::new(store.clone(), Arc::new(ManualClock::new(1_000)), 30);
        let other = rusqlite::Connection::open(dir.path().join("sesame.db")).unwrap();
        other
            .execute_batch("ALTER TABLE audit_events RENAME TO audit_hidden")
            .unwrap();
        log.record(event("first", "ok", "cli"));
        assert!(log.flush().await.is_err(), "the table is gone");
        for _ in 1..super::MAX_BUFFERED + 10 {
            log.record(event("later", "ok", "cli"));
        }
        assert!(log.flush().await.is_err());
        assert_eq!(log.buffer.lock().unwrap().len(), super::MAX_BUFFERED);
        assert_eq!(log.buffer.lock().unwrap()[0].event, "first", "oldest first");
        assert_eq!(
            log.dropped.load(std::sync::atomic::Ordering::Relaxed),
            0,
            "reported by the flush"
        );
        log.record(event("dropped", "ok", "cli"));
        assert_eq!(log.dropped.load(std::sync::atomic::Ordering::Relaxed), 1);
        other
            .execute_batch("ALTER TABLE audit_hidden RENAME TO audit_events")
            .unwrap();
        log.flush().await.unwrap();
        assert!(log.buffer.lock().unwrap().is_empty());
        let written: i64 = other
            .query_row("SELECT COUNT(*) FROM audit_events", [], |row| row.get(0))
            .unwrap();
        assert_eq!(written, super::MAX_BUFFERED as i64);
    }
}
