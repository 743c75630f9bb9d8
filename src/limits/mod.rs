//! Fast shared state for brute-force protection, behind one trait.
//!
//! Failure windows live here rather than in the database: they change on
//! every failed login and only matter for minutes. [`memory::MemoryLimiter`]
//! keeps them in process (one node); a Redis implementation of the same
//! trait lets several nodes share one limit.

pub mod memory;

use async_trait::async_trait;

use crate::core::clock::UnixTime;

/// A failure budget (GCRA): `burst` failures may come at once, after which
/// one more is allowed every `interval` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Failures allowed in a row.
    pub burst: u32,
    /// Seconds that earn back one failure.
    pub interval: i64,
}

impl Rule {
    /// The GCRA delay tolerance: how far the theoretical arrival time may run ahead of now.
    pub fn tolerance(&self) -> i64 {
        i64::from(self.burst.saturating_sub(1)) * self.interval
    }
}

/// A failure from the shared-state backend.
#[derive(Debug, thiserror::Error)]
#[error("shared state unavailable: {0}")]
pub struct LimitsError(pub String);

/// Counts failures per key and says when a key must wait.
#[async_trait]
pub trait FailureLimiter: Send + Sync {
    /// Seconds `key` must wait before its next attempt under `rule`, or
    /// `None` if it may try now.
    async fn blocked_for(
        &self,
        key: &str,
        rule: &Rule,
        now: UnixTime,
    ) -> Result<Option<u64>, LimitsError>;
    /// Records one failure of `key` under `rule`.
    async fn record_failure(
        &self,
        key: &str,
        rule: &Rule,
        now: UnixTime,
    ) -> Result<(), LimitsError>;
    /// Forgets `key` (an operator unlocked it).
    async fn clear(&self, key: &str) -> Result<(), LimitsError>;
}
