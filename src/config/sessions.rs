//! `[sessions]`: the default platform and the per-platform session policies.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::{check_range, parse_policy};
use crate::core::domain::Platform;
use crate::core::sessions::SessionSettings;

/// `[sessions]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawSessions {
    /// Platform of logins that name none.
    pub default_platform: String,
    /// `multiple` or `single`, for platforms not listed in `platforms`.
    pub default_policy: String,
    /// Per-platform policy: `multiple` or `single`.
    pub platforms: BTreeMap<String, String>,
    /// Live-session cache lifetime, seconds.
    pub cache_ttl: i64,
}

impl Default for RawSessions {
    fn default() -> Self {
        let d = SessionSettings::default();
        Self {
            default_platform: d.default_platform.as_str().into(),
            default_policy: "multiple".into(),
            platforms: BTreeMap::new(),
            cache_ttl: d.cache_ttl,
        }
    }
}

impl RawSessions {
    /// Checks the section, recording each problem, and builds its settings.
    pub(super) fn validate(&self, problems: &mut Vec<String>) -> SessionSettings {
        let default_platform = Platform::parse(&self.default_platform).unwrap_or_else(|_| {
            problems.push(
                "sessions.default_platform: must be 1 to 50 characters without control characters"
                    .into(),
            );
            Platform::web()
        });
        let default_policy =
            parse_policy(problems, "sessions.default_policy", &self.default_policy);
        let mut policies = HashMap::new();
        for (platform, policy) in &self.platforms {
            let key = format!("sessions.platforms.{platform}");
            policies.insert(platform.clone(), parse_policy(problems, &key, policy));
        }
        SessionSettings {
            default_platform,
            policies,
            default_policy,
            cache_ttl: check_range(problems, "sessions.cache_ttl", self.cache_ttl, 0, 60),
        }
    }
}
