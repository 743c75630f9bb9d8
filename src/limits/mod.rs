//! Fast shared state for brute-force protection, behind one trait.
//!
//! Failure windows live here rather than in the database: they change on
//! every failed login and only matter for minutes. [`memory::MemoryLimiter`]
//! keeps them in process (one node); [`redis::RedisLimiter`] implements the
//! same trait on Redis so that several nodes share one limit, and
//! [`redis::RedisNotices`] carries notices between those nodes.

pub mod memory;
pub mod redis;

use async_trait::async_trait;

use crate::clock::UnixTime;

/// How to reach Redis, when several nodes share state through it.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://host:port/db` or `rediss://…` (TLS).
    pub url: String,
    /// Prefix of every key and channel, so several deployments can share a server.
    pub key_prefix: String,
    /// Longest wait for a connection or a command before failing open.
    pub timeout: std::time::Duration,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &crate::redact::url(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl RedisSettings {
    /// Defaults for a URL.
    pub fn for_url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            key_prefix: "sesame:".into(),
            timeout: std::time::Duration::from_millis(500),
        }
    }
}

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

/// A wait in seconds, if there is one to make (`wait` > 0).
pub(crate) fn to_wait(wait: i64) -> Option<u64> {
    (wait > 0).then(|| u64::try_from(wait).unwrap_or(u64::MAX))
}

/// What [`FailureLimiter::try_charge`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charged {
    /// One attempt was charged; [`FailureLimiter::refund`] gives it back.
    Yes(Charge),
    /// Nothing was charged: the key must wait this many seconds.
    Wait(u64),
}

impl Charged {
    /// The wait, if the attempt was refused.
    pub fn wait(self) -> Option<u64> {
        match self {
            Charged::Yes(_) => None,
            Charged::Wait(wait) => Some(wait),
        }
    }
}

/// One charged attempt, as its refund needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge {
    /// When it was charged.
    pub at: UnixTime,
    /// Whether it was charged to the shared budget (Redis) rather than to
    /// this node's: a refund goes back to where the charge went.
    pub shared: bool,
}

impl Charge {
    /// Whether a refund at `now` can only take back this charge: within
    /// one interval of it, no later charge can have found the budget
    /// empty and started it afresh (which would have dropped this one
    /// already, and a refund would take back someone else's).
    pub fn refundable(&self, rule: &Rule, now: UnixTime) -> bool {
        now.saturating_sub(self.at) < rule.interval
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
    /// Charges one attempt to `key` under `rule` if its budget allows one
    /// now, and otherwise says how many seconds it must wait, charging
    /// nothing: one atomic step, so that attempts made at once (on any node)
    /// cannot all pass a check before any of them is counted. An attempt
    /// that turns out not to be a failure is given back with [`Self::refund`].
    async fn try_charge(
        &self,
        key: &str,
        rule: &Rule,
        now: UnixTime,
    ) -> Result<Charged, LimitsError>;
    /// Gives back one attempt charged by [`Self::try_charge`], to the
    /// budget it was charged to, unless it is too old to tell apart
    /// ([`Charge::refundable`]).
    async fn refund(
        &self,
        key: &str,
        rule: &Rule,
        charge: Charge,
        now: UnixTime,
    ) -> Result<(), LimitsError>;
    /// Forgets `key` (an operator unlocked it).
    async fn clear(&self, key: &str) -> Result<(), LimitsError>;
    /// Forgets what this node alone counted for `key` (its memory, or its
    /// fallback while Redis was away): an unlock on another node, told by
    /// a notice. Never blocks.
    fn forget_here(&self, key: &str);
    /// Whether the shared state answers (for readiness); in-process state always does.
    async fn ping(&self) -> Result<(), LimitsError> {
        Ok(())
    }
    /// Whether this limiter talks to a server (Redis) worth naming in readiness.
    fn is_shared(&self) -> bool {
        false
    }
}

/// Behaviour every [`FailureLimiter`] must show, written once and run
/// against each implementation (`memory`, `redis`).
#[cfg(test)]
pub(crate) mod conformance {
    use super::{Charge, FailureLimiter, Rule};

    /// The wait `try_charge` answers, `None` when it charged.
    async fn charge(limiter: &dyn FailureLimiter, key: &str, now: i64) -> Option<u64> {
        limiter.try_charge(key, &RULE, now).await.unwrap().wait()
    }

    /// Refunds an attempt charged at `at` (where a healthy limiter puts it).
    async fn refund(limiter: &dyn FailureLimiter, key: &str, at: i64, now: i64) {
        let shared = limiter.is_shared();
        limiter
            .refund(key, &RULE, Charge { at, shared }, now)
            .await
            .unwrap();
    }

    /// Three failures at once, then one a minute.
    pub(crate) const RULE: Rule = Rule {
        burst: 3,
        interval: 60,
    };

    /// A burst is allowed, then one failure per interval; keys are separate
    /// and `clear` forgets one.
    pub(crate) async fn burst_then_interval(limiter: &dyn FailureLimiter) {
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

    /// Charged attempts count as failures until refunded; a charge that
    /// would exceed the budget is refused and charges nothing.
    pub(crate) async fn charges_and_refunds(limiter: &dyn FailureLimiter) {
        for _ in 0..3 {
            assert_eq!(charge(limiter, "k", 0).await, None);
        }
        assert_eq!(charge(limiter, "k", 0).await, Some(60));
        assert_eq!(charge(limiter, "k", 0).await, Some(60));
        assert_eq!(limiter.blocked_for("k", &RULE, 0).await.unwrap(), Some(60));
        // Two of the three were not failures.
        refund(limiter, "k", 0, 0).await;
        refund(limiter, "k", 0, 0).await;
        assert_eq!(charge(limiter, "k", 0).await, None);
        assert_eq!(charge(limiter, "k", 0).await, None);
        assert_eq!(charge(limiter, "k", 0).await, Some(60));
        // Charges and recorded failures are the same budget.
        assert_eq!(charge(limiter, "k", 60).await, None);
        assert_eq!(limiter.blocked_for("k", &RULE, 60).await.unwrap(), Some(60));
        // Refunds never leave credit beyond a full budget.
        for _ in 0..10 {
            refund(limiter, "other", 100, 100).await;
            refund(limiter, "k", 1000, 1000).await;
        }
        for _ in 0..3 {
            assert_eq!(charge(limiter, "other", 100).await, None);
            assert_eq!(charge(limiter, "k", 1000).await, None);
        }
        assert_eq!(charge(limiter, "other", 100).await, Some(60));
        assert_eq!(charge(limiter, "k", 1000).await, Some(60));
        // A refund an interval or more after its charge gives nothing back:
        // the budget may have been started afresh since, by another charge
        // that the refund would take back.
        assert_eq!(charge(limiter, "late", 0).await, None);
        assert_eq!(charge(limiter, "late", 100).await, None);
        refund(limiter, "late", 0, 100).await;
        assert_eq!(charge(limiter, "late", 100).await, None);
        assert_eq!(charge(limiter, "late", 100).await, None);
        assert_eq!(charge(limiter, "late", 100).await, Some(60));
    }

    /// Concurrent attempts: exactly the burst gets through.
    pub(crate) async fn concurrent_charges_stop_at_the_burst(
        limiter: std::sync::Arc<dyn FailureLimiter>,
    ) {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..24 {
            let limiter = std::sync::Arc::clone(&limiter);
            tasks.spawn(async move { limiter.try_charge("k", &RULE, 0).await.unwrap().wait() });
        }
        let passed = tasks
            .join_all()
            .await
            .into_iter()
            .filter(Option::is_none)
            .count();
        assert_eq!(passed, 3);
    }

    /// After a long quiet spell the whole burst is available again.
    pub(crate) async fn budget_recovers_fully(limiter: &dyn FailureLimiter) {
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
