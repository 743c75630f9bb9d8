//! Per-account API-call counting and quotas.
//!
//! Every bearer-authenticated call counts (but the admin API's). Writing each count to the database
//! would put a write on every request, so counts accumulate in memory and a
//! background task adds them to the store every `FLUSH_INTERVAL` (and once
//! more at shutdown). A crash loses at most the calls counted since the last
//! flush: one second's worth. The quota itself is re-read from the store
//! every `cache_ttl` seconds, so an operator raising it from the CLI takes
//! effect within that time; changes made through this process apply at once.
//!
//! A quota may be per period (`day`, `month`, in UTC; the account's own, or
//! the deployment's default): the count belongs to the period it was made
//! in, and one from an earlier period reads as zero here and is replaced in
//! the store at the next flush. Nothing runs at midnight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::clock::UnixTime;
use super::error::{Error, Result};
use crate::store::{Account, AccountId, ApiUsage, QuotaPeriod, Store};

/// How often pending counts are written to the store.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Seconds after which a limited account's count, with nothing pending
/// here, is read again before a call is admitted: one flush interval.
const SYNC_AGE: i64 = 1;

#[derive(Debug, Clone, Copy)]
struct Usage {
    /// The count in the store when last read or written.
    persisted: i64,
    /// Counted here, being written by a flush not answered yet (a read
    /// meanwhile may or may not see them: they are counted apart).
    in_flight: i64,
    /// The period `in_flight` is being written to.
    in_flight_start: UnixTime,
    /// Counted here, not yet written.
    pending: i64,
    /// Quota; 0 means unlimited.
    max: i64,
    /// The account's period (its own or the default).
    period: QuotaPeriod,
    /// Start of the period `persisted` and `pending` belong to.
    period_start: UnixTime,
    loaded_at: UnixTime,
    /// When `persisted` last took in the other nodes' calls (a read, or a
    /// flush's totals, dated by the last call counted before it).
    synced_at: UnixTime,
    /// When this node last counted a call of the account.
    counted_at: UnixTime,
    /// Times the count was started again from zero (`reset`): calls of a
    /// flush that failed across a reset are dropped, as counted before it.
    resets: u64,
    /// Flush answers taken into `persisted`: a read of the store that one
    /// overtook may predate it (see `ApiCalls::reload`).
    answers: u64,
}

impl Usage {
    fn total(&self) -> i64 {
        self.persisted + self.in_flight + self.pending
    }

    /// Moves to the period containing `now`: an earlier period's count is
    /// over. (Calls pending across the boundary, at most one flush's worth,
    /// go to the new period; calls in flight were written to the old one.)
    fn roll(&mut self, now: UnixTime) {
        let start = self.period.start(now);
        if start > self.period_start {
            self.persisted = 0;
            if start > self.in_flight_start {
                self.in_flight = 0;
            }
            self.period_start = start;
        }
    }
}

/// The count of `account` in the period containing `now`, as stored.
pub fn stored_count(account: &Account, default: QuotaPeriod, now: UnixTime) -> i64 {
    let start = account.quota_period.unwrap_or(default).start(now);
    if account.api_calls_period < start {
        0
    } else {
        account.api_calls_count
    }
}

/// The in-memory counters.
pub struct ApiCalls {
    store: Arc<dyn Store>,
    usage: Mutex<HashMap<AccountId, Usage>>,
    /// Held for a whole flush, so that a final flush at shutdown waits for a
    /// periodic one still writing instead of finding nothing and returning.
    flushing: tokio::sync::Mutex<()>,
    ttl: i64,
    /// The period of accounts without their own.
    default_period: QuotaPeriod,
    metrics: Arc<crate::metrics::Metrics>,
}

impl std::fmt::Debug for ApiCalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiCalls").finish_non_exhaustive()
    }
}

impl ApiCalls {
    /// Counters over `store`, re-reading quotas every `ttl` seconds;
    /// accounts without a period of their own have `default_period`.
    pub fn new(
        store: Arc<dyn Store>,
        ttl: i64,
        default_period: QuotaPeriod,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        Self {
            metrics,
            store,
            usage: Mutex::new(HashMap::new()),
            flushing: tokio::sync::Mutex::new(()),
            ttl,
            default_period,
        }
    }

    /// The period of accounts without their own.
    pub fn default_period(&self) -> QuotaPeriod {
        self.default_period
    }

    /// Counts one call, or refuses it with [`Error::QuotaExceeded`] when the
    /// account has used its quota (refused calls do not count).
    pub async fn admit(&self, account: AccountId, now: UnixTime) -> Result<()> {
        if let Some(answer) = self.try_admit_cached(account, now, false) {
            return answer;
        }
        let answers_before = self
            .usage
            .lock()
            .ok()
            .and_then(|map| map.get(&account).map(|u| u.answers));
        match self.store.api_usage(account).await {
            Ok(Some(usage)) => self.reload(account, usage, now, answers_before),
            Ok(None) => return Err(Error::Unauthenticated),
            // The store is away: a count held here (a second or so behind
            // at worst) answers rather than a 503 on every call, and is
            // trusted for another second before the store is tried again.
            Err(error) => {
                self.read_failed(account, now);
                return self
                    .try_admit_cached(account, now, true)
                    .unwrap_or(Err(error.into()));
            }
        }
        self.try_admit_cached(account, now, true)
            .unwrap_or(Err(Error::Internal("quota state vanished".into())))
    }

    /// Counts a call against the count held here, or `None` when it must
    /// be read from the store first (never when `held_will_do`).
    fn try_admit_cached(
        &self,
        account: AccountId,
        now: UnixTime,
        held_will_do: bool,
    ) -> Option<Result<()>> {
        let mut map = self.usage.lock().ok()?;
        let usage = map.get_mut(&account)?;
        // Nothing pending (no flush coming to bring the cluster's total):
        // the quota is re-read every `ttl`, and a limited account's count
        // once it is older than a flush interval, so that a node that sat
        // idle does not admit a burst against a count the other nodes have
        // long since raised. (Busy nodes stay in step through their flushes.)
        // Calls that come while one reads read too: none is admitted
        // against the count being replaced.
        let stale = now.saturating_sub(usage.loaded_at) >= self.ttl.max(1)
            || (usage.max > 0 && now.saturating_sub(usage.synced_at) >= SYNC_AGE);
        if stale && usage.pending == 0 && !held_will_do {
            return None;
        }
        usage.roll(now);
        if usage.max > 0 && usage.total() >= usage.max {
            return Some(Err(Error::QuotaExceeded));
        }
        usage.pending += 1;
        usage.counted_at = now;
        Some(Ok(()))
    }

    /// A read of the account's count failed: the count held is trusted for
    /// another `SYNC_AGE` (an outage does not put a wait for the database
    /// on every call).
    fn read_failed(&self, account: AccountId, now: UnixTime) {
        if let Ok(mut map) = self.usage.lock()
            && let Some(usage) = map.get_mut(&account)
        {
            usage.synced_at = now;
            usage.loaded_at = usage.loaded_at.max(now - self.ttl.max(1) + SYNC_AGE);
        }
    }

    /// Takes a count read from the store; `answers_before` is the
    /// account's [`Usage::answers`] before the read.
    fn reload(
        &self,
        account: AccountId,
        stored: ApiUsage,
        now: UnixTime,
        answers_before: Option<u64>,
    ) {
        if let Ok(mut map) = self.usage.lock() {
            // A flush answered while this read ran: the count it brought
            // holds this node's calls it wrote, which the read may not
            // (read before the flush committed, and their in-flight count
            // already cleared by the answer). Keep that count; take the
            // quota and the period.
            if let Some(usage) = map.get_mut(&account)
                && Some(usage.answers) != answers_before
                && stored.period_start <= usage.period_start
            {
                usage.max = stored.max;
                usage.period = stored.period.unwrap_or(self.default_period);
                usage.loaded_at = now;
                usage.synced_at = now;
                usage.roll(now);
                return;
            }
            // Calls being written stay counted apart: the read may have
            // missed them (their flush's update waiting on the row), and
            // the flush's answer brings the count that holds them.
            // (The store adds them to their period, or starts that period
            // with them when it holds an earlier one.)
            let (pending, in_flight, in_flight_start, counted_at, resets, answers) = map
                .get(&account)
                .map_or((0, 0, UnixTime::MIN, UnixTime::MIN, 0, 0), |u| {
                    let in_flight = if stored.period_start <= u.in_flight_start {
                        u.in_flight
                    } else {
                        0
                    };
                    (
                        u.pending,
                        in_flight,
                        u.in_flight_start,
                        u.counted_at,
                        u.resets,
                        u.answers,
                    )
                });
            let period = stored.period.unwrap_or(self.default_period);
            let mut usage = Usage {
                persisted: stored.count,
                in_flight,
                in_flight_start,
                pending,
                max: stored.max,
                period,
                period_start: stored.period_start,
                loaded_at: now,
                synced_at: now,
                counted_at,
                resets,
                answers,
            };
            // A count of an earlier period is over (the store keeps the
            // later of the two starts, as this does).
            usage.roll(now);
            map.insert(account, usage);
        }
    }

    /// The live count of an account in the period containing `now` (stored
    /// plus pending), if it is tracked.
    pub fn current(&self, account: AccountId, now: UnixTime) -> Option<i64> {
        let mut map = self.usage.lock().ok()?;
        let usage = map.get_mut(&account)?;
        usage.roll(now);
        Some(usage.total())
    }

    /// Makes the next call of an account re-read its count and quota.
    pub fn expire(&self, account: AccountId) {
        if let Ok(mut map) = self.usage.lock()
            && let Some(usage) = map.get_mut(&account)
        {
            usage.loaded_at = UnixTime::MIN;
        }
    }

    /// Makes the next call of every account re-read its count and quota.
    pub fn expire_all(&self) {
        if let Ok(mut map) = self.usage.lock() {
            for usage in map.values_mut() {
                usage.loaded_at = UnixTime::MIN;
            }
        }
    }

    /// Starts an account's count again from zero in memory, after it was
    /// reset in the store at `now` (pending calls were flushed before).
    pub fn reset(&self, account: AccountId, now: UnixTime) {
        if let Ok(mut map) = self.usage.lock()
            && let Some(usage) = map.get_mut(&account)
        {
            usage.persisted = 0;
            usage.in_flight = 0;
            usage.pending = 0;
            usage.period_start = now;
            usage.resets += 1;
        }
    }

    /// Sets an account's period in memory after it was changed in the store.
    pub fn set_period(&self, account: AccountId, period: Option<QuotaPeriod>) {
        if let Ok(mut map) = self.usage.lock()
            && let Some(usage) = map.get_mut(&account)
        {
            usage.period = period.unwrap_or(self.default_period);
            usage.loaded_at = UnixTime::MIN;
        }
    }

    /// Sets a new quota in memory after it was changed in the store.
    pub fn set_max(&self, account: AccountId, max: i64) {
        if let Ok(mut map) = self.usage.lock()
            && let Some(usage) = map.get_mut(&account)
        {
            usage.max = max;
        }
    }

    /// Writes pending counts to the store. On failure they stay pending.
    pub async fn flush(&self) -> Result<()> {
        let _flushing = self.flushing.lock().await;
        // With each account's number of resets, to drop at a failure the
        // calls of one reset meanwhile.
        let (batch, resets): (Vec<(AccountId, i64, UnixTime)>, Vec<u64>) = match self.usage.lock() {
            Ok(mut map) => map
                .iter_mut()
                .filter(|(_, u)| u.pending > 0)
                .map(|(id, u)| {
                    let n = u.pending;
                    u.in_flight = n;
                    u.in_flight_start = u.period_start;
                    u.pending = 0;
                    ((*id, n, u.period_start), u.resets)
                })
                .unzip(),
            Err(_) => return Err(Error::Internal("quota counters poisoned".into())),
        };
        if batch.is_empty() {
            return Ok(());
        }
        match self.store.add_api_calls(&batch).await {
            Ok(totals) => {
                let calls: i64 = batch.iter().map(|(_, n, _)| n).sum();
                self.metrics.api_calls(u64::try_from(calls).unwrap_or(0));
                // The stored totals include what other nodes added since
                // this one last looked: take them, so that the quota holds
                // for the cluster within one flush interval.
                if let Ok(mut map) = self.usage.lock() {
                    for (id, _, _) in &batch {
                        if let Some(u) = map.get_mut(id) {
                            u.in_flight = 0;
                        }
                    }
                    for (id, stored) in totals {
                        if let Some(u) = map.get_mut(&id) {
                            if stored.period_start == u.period_start {
                                u.persisted = stored.count;
                                u.max = stored.max;
                                u.synced_at = u.counted_at;
                                u.answers += 1;
                            } else {
                                // The store is in a later period (reset, or
                                // another node rolled over): read it anew.
                                u.loaded_at = UnixTime::MIN;
                            }
                        }
                    }
                }
                Ok(())
            }
            Err(error) => {
                if let Ok(mut map) = self.usage.lock() {
                    for ((id, n, _), resets) in batch.iter().zip(&resets) {
                        if let Some(u) = map.get_mut(id) {
                            // Written again with the next flush (in the
                            // period then current, as calls pending across
                            // a period's end are), unless the count was
                            // reset meanwhile: they came before it.
                            if u.resets == *resets {
                                u.pending += n;
                            }
                            u.in_flight = 0;
                        }
                    }
                }
                // The other nodes' calls still reach this one: their
                // counts are read (off the requests, here), as long as
                // reads answer.
                self.read_counts(&batch).await;
                Err(error.into())
            }
        }
    }

    /// After a failed flush: reads the stored counts of (at most 100 of)
    /// the batch's accounts, stopping at the first read that fails (the
    /// store away: nothing to learn, and no wait worth more).
    async fn read_counts(&self, batch: &[(AccountId, i64, UnixTime)]) {
        for (id, _, _) in batch.iter().take(100) {
            let Ok(Some(stored)) = self.store.api_usage(*id).await else {
                return;
            };
            if let Ok(mut map) = self.usage.lock()
                && let Some(u) = map.get_mut(id)
                && stored.period_start == u.period_start
            {
                u.persisted = stored.count;
                u.max = stored.max;
            }
        }
    }

    /// Flushes every [`FLUSH_INTERVAL`] until the counters are dropped.
    pub fn spawn_flusher(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FLUSH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(calls) = weak.upgrade() else { return };
                if let Err(error) = calls.flush().await {
                    tracing::warn!(%error, "could not persist API-call counts; will retry");
                }
            }
        });
    }
}
