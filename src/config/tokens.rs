//! `[tokens]`: signing algorithm, claims and lifetimes.

use serde::{Deserialize, Serialize};

use super::check_range;
use crate::core::keys::SigningAlgorithm;
use crate::core::tokens::TokenSettings;

/// `[tokens]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawTokens {
    /// `EdDSA`, `ES256`, `RS256` or `HS256`.
    pub algorithm: String,
    /// `iss` claim.
    pub issuer: String,
    /// `aud` claim.
    pub audience: String,
    /// Access-token lifetime, seconds.
    pub access_ttl: i64,
    /// Refresh lifetime, seconds.
    pub refresh_ttl: i64,
    /// Reuse grace window, seconds.
    pub reuse_grace: i64,
    /// Clock-skew leeway, seconds.
    pub leeway: i64,
}

impl Default for RawTokens {
    fn default() -> Self {
        let d = TokenSettings::default();
        Self {
            algorithm: d.algorithm.as_str().into(),
            issuer: d.issuer,
            audience: d.audience,
            access_ttl: d.access_ttl,
            refresh_ttl: d.refresh_ttl,
            reuse_grace: d.reuse_grace,
            leeway: d.leeway,
        }
    }
}

impl RawTokens {
    /// Checks the section, recording each problem, and builds its settings.
    pub(super) fn validate(&self, problems: &mut Vec<String>) -> TokenSettings {
        let algorithm = SigningAlgorithm::parse(&self.algorithm).unwrap_or_else(|| {
            problems.push(format!(
                "tokens.algorithm = {:?}: must be one of EdDSA, ES256, RS256, HS256",
                self.algorithm
            ));
            SigningAlgorithm::EdDSA
        });
        for (key, value) in [
            ("tokens.issuer", &self.issuer),
            ("tokens.audience", &self.audience),
        ] {
            if value.trim().is_empty() {
                problems.push(format!("{key}: must not be empty"));
            }
        }
        TokenSettings {
            algorithm,
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            access_ttl: check_range(
                problems,
                "tokens.access_ttl",
                self.access_ttl,
                1,
                7 * 86_400,
            ),
            refresh_ttl: check_range(
                problems,
                "tokens.refresh_ttl",
                self.refresh_ttl,
                60,
                3650 * 86_400,
            ),
            reuse_grace: check_range(problems, "tokens.reuse_grace", self.reuse_grace, 0, 60),
            leeway: check_range(problems, "tokens.leeway", self.leeway, 0, 60),
        }
    }
}
