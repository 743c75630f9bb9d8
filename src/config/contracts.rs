//! `[contracts]`: which compatibility faces are served, and how.

use serde::{Deserialize, Serialize};

use super::parse_policy;
use crate::http::contracts::ContractSettings;

/// `[contracts]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawContracts {
    /// Serve `POST /api/v1/login`.
    pub ai_gateway: bool,
    /// Serve `POST /manager/login`.
    pub manager: bool,
    /// Serve `POST /api/v1/users/actions/login`.
    pub users_actions: bool,
    /// Serve the careyshop login and refresh routes.
    pub careyshop: bool,
    /// Serve `POST /user/login`.
    pub fungame: bool,
    /// Permission required to sign in through the manager face.
    pub manager_permission: String,
    /// `single` or `multiple` sessions per platform for careyshop logins.
    pub careyshop_platform_policy: String,
}

impl Default for RawContracts {
    fn default() -> Self {
        let d = ContractSettings::default();
        Self {
            ai_gateway: d.ai_gateway,
            manager: d.manager,
            users_actions: d.users_actions,
            careyshop: d.careyshop,
            fungame: d.fungame,
            manager_permission: d.manager_permission,
            careyshop_platform_policy: "single".into(),
        }
    }
}

impl RawContracts {
    /// Checks the section, recording each problem, and builds its settings.
    pub(super) fn validate(&self, problems: &mut Vec<String>) -> ContractSettings {
        if crate::core::domain::Name::parse(&self.manager_permission, "permission").is_err() {
            problems.push(format!(
                "contracts.manager_permission = {:?}: must name a permission such as \"admin\" \
                 (a-z, 0-9, '_', '.', ':' and '-', starting with a letter)",
                self.manager_permission
            ));
        }
        ContractSettings {
            ai_gateway: self.ai_gateway,
            manager: self.manager,
            users_actions: self.users_actions,
            careyshop: self.careyshop,
            fungame: self.fungame,
            manager_permission: self.manager_permission.clone(),
            careyshop_platform_policy: parse_policy(
                problems,
                "contracts.careyshop_platform_policy",
                &self.careyshop_platform_policy,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::RawConfig;

    /// A value no account can hold would refuse every manager login with
    /// nothing pointing at the cause: refused at start instead.
    #[test]
    fn the_manager_permission_is_a_permission_name() {
        for (permission, valid) in [
            ("admin", true),
            ("shop:manage", true),
            ("Admin", false),
            (" admin", false),
            ("", false),
        ] {
            let mut raw = RawConfig::default();
            raw.contracts.manager_permission = permission.into();
            let result = raw.validate();
            assert_eq!(result.is_ok(), valid, "{permission:?}");
            if let Err(error) = result {
                assert!(
                    error.to_string().contains("contracts.manager_permission"),
                    "{error}"
                );
            }
        }
    }
}
