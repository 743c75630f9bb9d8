//! `[quotas]`: the API-call quota period of accounts without their own.

use serde::{Deserialize, Serialize};

use crate::store::QuotaPeriod;

/// `[quotas]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawQuotas {
    /// `none` (a quota for the account's lifetime), `day` or `month` (the
    /// count starts again from zero at midnight UTC, or on the first).
    pub period: String,
}

impl Default for RawQuotas {
    fn default() -> Self {
        Self {
            period: QuotaPeriod::None.as_str().into(),
        }
    }
}

impl RawQuotas {
    /// Checks the section, recording each problem, and returns the period.
    pub(super) fn validate(&self, problems: &mut Vec<String>) -> QuotaPeriod {
        QuotaPeriod::parse(&self.period).unwrap_or_else(|| {
            problems.push(format!(
                "quotas.period = {:?}: must be \"none\", \"day\" or \"month\"",
                self.period
            ));
            QuotaPeriod::None
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::RawConfig;
    use crate::store::QuotaPeriod;

    #[test]
    fn the_period_is_none_by_default_and_one_of_three() {
        let config = RawConfig::default().validate().unwrap();
        assert_eq!(config.core.quota_period, QuotaPeriod::None);
        for (name, period) in [("day", QuotaPeriod::Day), ("month", QuotaPeriod::Month)] {
            let mut raw = RawConfig::default();
            raw.quotas.period = name.into();
            assert_eq!(raw.validate().unwrap().core.quota_period, period);
        }
        let mut raw = RawConfig::default();
        raw.quotas.period = "week".into();
        let message = raw.validate().unwrap_err().to_string();
        assert!(message.contains("quotas.period"), "{message}");
    }
}
