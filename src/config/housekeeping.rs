//! `[housekeeping]`: background purges of ended sessions and spent refresh tokens.

use serde::{Deserialize, Serialize};

use super::check_range;
use crate::core::housekeeping::HousekeepingSettings;

/// The longest anything is kept: ten years, in seconds.
const KEEP_MAX: i64 = 3650 * 86_400;

/// `[housekeeping]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawHousekeeping {
    /// Seconds between two rounds; 0: never purge.
    pub interval: u64,
    /// Rows deleted per statement.
    pub batch: u32,
    /// Seconds an ended session is kept.
    pub keep_ended_sessions: i64,
    /// Seconds a rotated refresh token is kept for reuse detection.
    pub keep_spent_refresh_tokens: i64,
}

impl Default for RawHousekeeping {
    fn default() -> Self {
        let d = HousekeepingSettings::default();
        Self {
            interval: d.interval,
            batch: d.batch,
            keep_ended_sessions: d.keep_ended_sessions,
            keep_spent_refresh_tokens: d.keep_spent_refresh_tokens,
        }
    }
}

impl RawHousekeeping {
    /// Checks the section, recording each problem, and builds its settings;
    /// `reuse_grace` is `tokens.reuse_grace`, the least a spent refresh token
    /// must be kept.
    pub(super) fn validate(
        &self,
        reuse_grace: i64,
        problems: &mut Vec<String>,
    ) -> HousekeepingSettings {
        if self.interval != 0 && !(10..=86_400).contains(&self.interval) {
            problems.push(format!(
                "housekeeping.interval = {}: must be 0 (off) or between 10 and 86400",
                self.interval
            ));
        }
        let keep_spent_refresh_tokens = check_range(
            problems,
            "housekeeping.keep_spent_refresh_tokens",
            self.keep_spent_refresh_tokens,
            0,
            KEEP_MAX,
        );
        if keep_spent_refresh_tokens < reuse_grace {
            problems.push(format!(
                "housekeeping.keep_spent_refresh_tokens = {keep_spent_refresh_tokens}: must be at least tokens.reuse_grace ({reuse_grace})"
            ));
        }
        HousekeepingSettings {
            interval: self.interval,
            batch: check_range(problems, "housekeeping.batch", self.batch, 10, 100_000),
            keep_ended_sessions: check_range(
                problems,
                "housekeeping.keep_ended_sessions",
                self.keep_ended_sessions,
                0,
                KEEP_MAX,
            ),
            keep_spent_refresh_tokens,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::RawConfig;

    #[test]
    fn spent_refresh_tokens_are_kept_at_least_the_reuse_grace() {
        let mut raw = RawConfig::default();
        raw.tokens.reuse_grace = 10;
        raw.housekeeping.keep_spent_refresh_tokens = 9;
        let message = raw.validate().unwrap_err().to_string();
        assert!(
            message.contains("housekeeping.keep_spent_refresh_tokens"),
            "{message}"
        );
        assert!(message.contains("tokens.reuse_grace"), "{message}");

        let mut raw = RawConfig::default();
        raw.tokens.reuse_grace = 10;
        raw.housekeeping.keep_spent_refresh_tokens = 10;
        assert!(raw.validate().is_ok());
    }

    #[test]
    fn the_interval_is_off_or_in_range() {
        for (interval, valid) in [
            (0, true),
            (9, false),
            (10, true),
            (86_400, true),
            (86_401, false),
        ] {
            let mut raw = RawConfig::default();
            raw.housekeeping.interval = interval;
            let result = raw.validate();
            assert_eq!(result.is_ok(), valid, "interval {interval}");
            if let Err(error) = result {
                assert!(error.to_string().contains("housekeeping.interval"));
            }
        }
    }

    #[test]
    fn the_section_is_range_checked() {
        let mut raw = RawConfig::default();
        raw.housekeeping.batch = 9;
        raw.housekeeping.keep_ended_sessions = -1;
        raw.housekeeping.keep_spent_refresh_tokens = 3651 * 86_400;
        let message = raw.validate().unwrap_err().to_string();
        for key in [
            "housekeeping.batch",
            "housekeeping.keep_ended_sessions",
            "housekeeping.keep_spent_refresh_tokens",
        ] {
            assert!(message.contains(key), "{key} missing from {message}");
        }
    }
}
