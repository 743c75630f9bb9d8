//! The in-process failure limiter: one theoretical arrival time per key.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{Charge, Charged, FailureLimiter, LimitsError, Rule};
use crate::clock::UnixTime;

/// Past this many keys, keys whose budget has fully recovered are dropped.
const SWEEP_THRESHOLD: usize = 100_000;

/// Failure windows in a mutex-guarded map.
#[derive(Debug, Default)]
pub struct MemoryLimiter {
    arrivals: Mutex<Arrivals>,
}

#[derive(Debug, Default)]
struct Arrivals {
    by_key: HashMap<String, UnixTime>,
    /// When the map was last swept.
    swept_at: UnixTime,
}

impl MemoryLimiter {
    /// An empty limiter.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Past [`SWEEP_THRESHOLD`] keys, drops those whose budget has recovered;
/// at most once a second: when the keys are all live (many addresses
/// failing at once), a sweep on every call would scan them all each time,
/// under the lock every login takes.
fn sweep(arrivals: &mut Arrivals, now: UnixTime) {
    if arrivals.by_key.len() >= SWEEP_THRESHOLD && now > arrivals.swept_at {
        arrivals.swept_at = now;
        arrivals.by_key.retain(|_, arrival| *arrival > now);
    }
}

fn poisoned() -> LimitsError {
    LimitsError("limiter state poisoned".into())
}

#[async_trait]
impl FailureLimiter for MemoryLimiter {
    async fn blocked_for(
        &self,
        key: &str,
        rule: &Rule,
        now: UnixTime,
    ) -> Result<Option<u64>, LimitsError> {
        let arrivals = self.arrivals.lock().map_err(|_| poisoned())?;
        let Some(&arrival) = arrivals.by_key.get(key) else {
            return Ok(None);
        };
        let wait = arrival - rule.tolerance() - now;
        Ok(super::to_wait(wait))
    }

    async fn record_failure(
        &self,
        key: &str,
        rule: &Rule,
        now: UnixTime,
    ) -> Result<(), LimitsError> {
        let mut arrivals = self.arrivals.lock().map_err(|_| poisoned())?;
        sweep(&mut arrivals, now);
        let arrival = arrivals.by_key.entry(key.to_owned()).or_insert(now);
        *arrival = (*arrival).max(now) + rule.interval;
        Ok(())
    }

    async fn try_charge(
        &self,
        key: &str,
        rule: &Rule,
        now: UnixTime,
    ) -> Result<Charged, LimitsError> {
        let mut arrivals = self.arrivals.lock().map_err(|_| poisoned())?;
        sweep(&mut arrivals, now);
        let arrival = arrivals.by_key.get(key).copied().unwrap_or(now).max(now);
        if let Some(wait) = super::to_wait(arrival - rule.tolerance() - now) {
            return Ok(Charged::Wait(wait));
        }
        arrivals
            .by_key
            .insert(key.to_owned(), arrival + rule.interval);
        Ok(Charged::Yes(Charge {
            at: now,
            shared: false,
        }))
    }

    async fn refund(
        &self,
        key: &str,
        rule: &Rule,
        charge: Charge,
        now: UnixTime,
    ) -> Result<(), LimitsError> {
        if !charge.refundable(rule, now) {
            return Ok(());
        }
        let mut arrivals = self.arrivals.lock().map_err(|_| poisoned())?;
        if let Some(arrival) = arrivals.by_key.get_mut(key) {
            *arrival -= rule.interval;
            if *arrival <= now {
                arrivals.by_key.remove(key);
            }
        }
        Ok(())
    }

    async fn clear(&self, key: &str) -> Result<(), LimitsError> {
        self.arrivals
            .lock()
            .map_err(|_| poisoned())?
            .by_key
            .remove(key);
        Ok(())
    }

    fn forget_here(&self, key: &str) {
        if let Ok(mut arrivals) = self.arrivals.lock() {
            arrivals.by_key.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::conformance;

    #[tokio::test]
    async fn a_burst_is_allowed_then_one_failure_per_interval() {
        conformance::burst_then_interval(&MemoryLimiter::new()).await;
    }

    #[tokio::test]
    async fn attempts_are_charged_at_once_and_refunded() {
        conformance::charges_and_refunds(&MemoryLimiter::new()).await;
        conformance::concurrent_charges_stop_at_the_burst(
            std::sync::Arc::new(MemoryLimiter::new()),
        )
        .await;
    }

    #[tokio::test]
    async fn the_budget_recovers_fully_with_time() {
        conformance::budget_recovers_fully(&MemoryLimiter::new()).await;
    }

    /// Past the threshold, recovered keys are dropped, at most once a
    /// second: live keys are not scanned again at every call.
    #[tokio::test]
    async fn a_full_map_is_swept_at_most_once_a_second() {
        let limiter = MemoryLimiter::new();
        let rule = Rule {
            burst: 1,
            interval: 10,
        };
        for i in 0..SWEEP_THRESHOLD {
            limiter
                .record_failure(&format!("k{i}"), &rule, 100)
                .await
                .unwrap();
        }
        let swept_at = || limiter.arrivals.lock().unwrap().swept_at;
        assert_eq!(swept_at(), 0, "not full yet");
        limiter.record_failure("late", &rule, 100).await.unwrap();
        assert_eq!(swept_at(), 100, "full: swept");
        let before = limiter.arrivals.lock().unwrap().by_key.len();
        assert_eq!(before, SWEEP_THRESHOLD + 1, "every key live");
        limiter.try_charge("again", &rule, 100).await.unwrap();
        assert_eq!(swept_at(), 100, "not again within the second");
        // Ten seconds on, every key but the newest has recovered.
        limiter.record_failure("later", &rule, 110).await.unwrap();
        let arrivals = limiter.arrivals.lock().unwrap();
        assert_eq!(arrivals.swept_at, 110);
        assert_eq!(arrivals.by_key.len(), 1, "only the key just charged");
    }
}
