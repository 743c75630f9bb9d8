//! Housekeeping: ended sessions and spent refresh tokens are purged in the
//! background, in bounded batches, by every node (the deletes are idempotent).

/// What is purged, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HousekeepingSettings {
    /// Seconds between two rounds (0: never purge).
    pub interval: u64,
    /// Rows deleted per statement, so that no purge holds locks for long.
    pub batch: u32,
    /// Seconds an ended (revoked or expired) session is kept before it is deleted.
    pub keep_ended_sessions: i64,
    /// Seconds a rotated refresh token is kept for reuse detection.
    pub keep_spent_refresh_tokens: i64,
}

impl Default for HousekeepingSettings {
    fn default() -> Self {
        Self {
            interval: 300,
            batch: 1000,
            keep_ended_sessions: 7 * 86_400,
            keep_spent_refresh_tokens: 7 * 86_400,
        }
    }
}

use std::sync::Arc;
use std::time::Duration;

use super::Core;
use super::error::Result;
use crate::store::{PurgeCutoffs, Purged};

/// Most batches in one round, so that a round always ends.
const MAX_BATCHES: u32 = 1000;

impl Core {
    /// One housekeeping round: deletes what ended long enough ago, a batch
    /// at a time, until a batch comes back short.
    pub async fn purge_ended(&self) -> Result<Purged> {
        let settings = &self.settings.housekeeping;
        let now = self.now();
        let cutoffs = PurgeCutoffs {
            ended_before: now - settings.keep_ended_sessions,
            spent_before: now - settings.keep_spent_refresh_tokens,
            expired_before: now,
        };
        let batch = u64::from(settings.batch);
        let mut total = Purged::default();
        for _ in 0..MAX_BATCHES {
            let purged = self.store.purge(&cutoffs, settings.batch).await?;
            total.sessions += purged.sessions;
            total.refresh_tokens += purged.refresh_tokens;
            total.access_tokens += purged.access_tokens;
            if purged.sessions < batch
                && purged.refresh_tokens < batch
                && purged.access_tokens < batch
            {
                break;
            }
            // Let requests have the database between batches.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(total)
    }

    /// Runs a round every `housekeeping.interval` seconds for as long as the
    /// core lives (never, when the interval is 0).
    pub fn spawn_housekeeping(self: &Arc<Self>) {
        let interval = self.settings.housekeeping.interval;
        if interval == 0 {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(interval));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(core) = weak.upgrade() else { return };
                match core.purge_ended().await {
                    Ok(purged) if purged != Purged::default() => tracing::info!(
                        sessions = purged.sessions,
                        refresh_tokens = purged.refresh_tokens,
                        access_tokens = purged.access_tokens,
                        "housekeeping purged ended sessions and spent tokens"
                    ),
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "housekeeping failed; will retry"),
                }
            }
        });
    }
}
