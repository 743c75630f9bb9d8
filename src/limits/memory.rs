//! The in-process failure limiter: one theoretical arrival time per key.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{FailureLimiter, LimitsError, Rule};
use crate::core::clock::UnixTime;

/// Past this many keys, keys whose budget has fully recovered are dropped.
const SWEEP_THRESHOLD: usize = 100_000;

/// Failure windows in a mutex-guarded map.
#[derive(Debug, Default)]
pub struct MemoryLimiter {
    arrivals: Mutex<HashMap<String, UnixTime>>,
}

impl MemoryLimiter {
    /// An empty limiter.
    pub fn new() -> Self {
        Self::default()
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
        let Some(&arrival) = arrivals.get(key) else {
            return Ok(None);
        };
        let wait = arrival - rule.tolerance() - now;
        Ok((wait > 0).then(|| u64::try_from(wait).unwrap_or(u64::MAX)))
    }

    async fn record_failure(
        &self,
        key: &str,
        rule: &Rule,
        now: UnixTime,
    ) -> Result<(), LimitsError> {
        let mut arrivals = self.arrivals.lock().map_err(|_| poisoned())?;
        if arrivals.len() >= SWEEP_THRESHOLD {
            arrivals.retain(|_, arrival| *arrival > now);
        }
        let arrival = arrivals.entry(key.to_owned()).or_insert(now);
        *arrival = (*arrival).max(now) + rule.interval;
        Ok(())
    }

    async fn clear(&self, key: &str) -> Result<(), LimitsError> {
        self.arrivals.lock().map_err(|_| poisoned())?.remove(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: Rule = Rule {
        burst: 3,
        interval: 60,
    };

    #[tokio::test]
    async fn a_burst_is_allowed_then_one_failure_per_interval() {
        let limiter = MemoryLimiter::new();
        for _ in 0..3 {
            assert_eq!(limiter.blocked_for("k", &RULE, 0).await.unwrap(), None);
            limiter.record_failure("k", &RULE, 0).await.unwrap();
        }
        assert_eq!(limiter.blocked_for("k", &RULE, 0).await.unwrap(), Some(60));
        assert_eq!(limiter.blocked_for("k", &RULE, 59).await.unwrap(), Some(1));
        assert_eq!(limiter.blocked_for("k", &RULE, 60).await.unwrap(), None);
        limiter.record_failure("k", &RULE, 60).await.unwrap();
        assert_eq!(limiter.blocked_for("k", &RULE, 60).await.unwrap(), Some(60));
        assert_eq!(limiter.blocked_for("other", &RULE, 60).await.unwrap(), None);
        limiter.clear("k").await.unwrap();
        assert_eq!(limiter.blocked_for("k", &RULE, 60).await.unwrap(), None);
    }

    #[tokio::test]
    async fn the_budget_recovers_fully_with_time() {
        let limiter = MemoryLimiter::new();
        for _ in 0..3 {
            limiter.record_failure("k", &RULE, 0).await.unwrap();
        }
        for _ in 0..3 {
            assert_eq!(limiter.blocked_for("k", &RULE, 1000).await.unwrap(), None);
            limiter.record_failure("k", &RULE, 1000).await.unwrap();
        }
        assert!(
            limiter
                .blocked_for("k", &RULE, 1000)
                .await
                .unwrap()
                .is_some()
        );
    }
}
