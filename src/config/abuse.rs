//! `[abuse]` and `[audit]`: brute-force protection and audit retention, which
//! the core keeps together in [`AbuseSettings`].

use serde::{Deserialize, Serialize};

use super::check_range;
use crate::core::guard::AbuseSettings;
use crate::limits::Rule;

/// `[abuse]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawAbuse {
    /// Failures one client address may make in a row.
    pub address_burst: u32,
    /// Seconds that earn an address one more failure.
    pub address_interval: i64,
    /// Failures an account may take in a row from unknown clients.
    pub account_burst: u32,
    /// Seconds that earn an account one more failure.
    pub account_interval: i64,
    /// Consecutive unknown-client failures that lock an account for unknown clients.
    pub lockout_threshold: i64,
    /// Known addresses and device tokens remembered per account.
    pub known_clients_kept: u32,
    /// Bits of an IPv6 address that make one client for the address budget.
    pub ipv6_prefix: u32,
    /// Refreshes one session may make in a row on one node; 0: no budget.
    pub refresh_burst: u32,
    /// Seconds that earn a session one more refresh.
    pub refresh_interval: i64,
}

/// `[audit]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawAudit {
    /// Days events are kept.
    pub retention_days: i64,
}

impl Default for RawAbuse {
    fn default() -> Self {
        let d = AbuseSettings::default();
        Self {
            address_burst: d.address_rule.burst,
            address_interval: d.address_rule.interval,
            account_burst: d.account_rule.burst,
            account_interval: d.account_rule.interval,
            lockout_threshold: d.lockout_threshold,
            known_clients_kept: d.known_clients_kept,
            ipv6_prefix: u32::from(d.ipv6_prefix),
            refresh_burst: d.refresh_rule.burst,
            refresh_interval: d.refresh_rule.interval,
        }
    }
}

impl Default for RawAudit {
    fn default() -> Self {
        Self {
            retention_days: AbuseSettings::default().audit_retention_days,
        }
    }
}

impl RawAbuse {
    /// Checks `[abuse]` and `[audit]`, recording each problem, and builds the
    /// abuse settings; `refuse_common` is `passwords.refuse_common`.
    pub(super) fn validate(
        &self,
        audit: &RawAudit,
        refuse_common: bool,
        problems: &mut Vec<String>,
    ) -> AbuseSettings {
        AbuseSettings {
            address_rule: Rule {
                burst: check_range(
                    problems,
                    "abuse.address_burst",
                    self.address_burst,
                    1,
                    10_000,
                ),
                interval: check_range(
                    problems,
                    "abuse.address_interval",
                    self.address_interval,
                    1,
                    86_400,
                ),
            },
            account_rule: Rule {
                burst: check_range(problems, "abuse.account_burst", self.account_burst, 1, 99),
                interval: check_range(
                    problems,
                    "abuse.account_interval",
                    self.account_interval,
                    1,
                    86_400,
                ),
            },
            lockout_threshold: check_range(
                problems,
                "abuse.lockout_threshold",
                self.lockout_threshold,
                1,
                1_000_000,
            ),
            known_clients_kept: check_range(
                problems,
                "abuse.known_clients_kept",
                self.known_clients_kept,
                1,
                1000,
            ),
            ipv6_prefix: u8::try_from(check_range(
                problems,
                "abuse.ipv6_prefix",
                self.ipv6_prefix,
                32,
                128,
            ))
            .unwrap_or(64),
            refresh_rule: Rule {
                burst: check_range(
                    problems,
                    "abuse.refresh_burst",
                    self.refresh_burst,
                    0,
                    1_000_000,
                ),
                interval: check_range(
                    problems,
                    "abuse.refresh_interval",
                    self.refresh_interval,
                    1,
                    86_400,
                ),
            },
            audit_retention_days: check_range(
                problems,
                "audit.retention_days",
                audit.retention_days,
                1,
                36_500,
            ),
            refuse_common_passwords: refuse_common,
        }
    }
}
