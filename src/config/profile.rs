//! `[profile]`: the profile attributes users may not set on themselves.

use serde::{Deserialize, Serialize};

use crate::core::accounts::check_attribute_name;

/// `[profile]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawProfile {
    /// Attributes only an administrator or operator sets (`PATCH
    /// /v1/admin/users/{id}`, `sesame user set-profile`): those that
    /// applications may read as authority.
    #[serde(deserialize_with = "super::one_or_many")]
    pub protected: Vec<String>,
}

/// What the contract faces hand to applications as server-asserted values
/// an application may grant rights by: careyshop's `group_id` and
/// `user_level_id`, users-actions' `organization`, `department` and
/// `position`.
pub const PROTECTED_BY_DEFAULT: [&str; 5] = [
    "group_id",
    "user_level_id",
    "organization",
    "department",
    "position",
];

impl Default for RawProfile {
    fn default() -> Self {
        Self {
            protected: PROTECTED_BY_DEFAULT.map(String::from).to_vec(),
        }
    }
}

impl RawProfile {
    /// Checks the section, recording each problem, and returns the names.
    pub(super) fn validate(&self, problems: &mut Vec<String>) -> Vec<String> {
        for name in &self.protected {
            if check_attribute_name(name).is_err() {
                problems.push(format!(
                    "profile.protected: {name:?} is not an attribute name (1 to 64 of A-Z, a-z, 0-9, _, - and .)"
                ));
            }
        }
        let mut names = self.protected.clone();
        names.sort();
        names.dedup();
        names
    }
}
