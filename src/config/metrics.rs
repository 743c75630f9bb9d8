//! `[metrics]`: the Prometheus endpoint.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::http::metrics::MetricsSettings;

/// `[metrics]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawMetrics {
    /// Count and serve `GET /metrics` at all.
    pub enabled: bool,
    /// A separate address for `GET /metrics` (then not served with the
    /// API); absent: on the API's own listener.
    pub listen: Option<String>,
}

impl Default for RawMetrics {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: None,
        }
    }
}

impl RawMetrics {
    /// Checks the section, recording each problem, and builds its settings.
    pub(super) fn validate(
        &self,
        listen: SocketAddr,
        problems: &mut Vec<String>,
    ) -> MetricsSettings {
        let own = self
            .listen
            .as_deref()
            .and_then(|address| match address.parse::<SocketAddr>() {
                Ok(own) if own == listen && own.port() != 0 => {
                    problems.push(format!(
                        "metrics.listen = {address:?}: is the API's own address (listen); \
                         leave metrics.listen out to serve /metrics there"
                    ));
                    None
                }
                Ok(own) => Some(own),
                Err(_) => {
                    problems.push(format!(
                        "metrics.listen = {address:?}: must be an IP address and port such as \
                         127.0.0.1:9420"
                    ));
                    None
                }
            });
        MetricsSettings {
            enabled: self.enabled,
            listen: own,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::RawConfig;

    #[test]
    fn metrics_are_on_the_api_listener_by_default() {
        let config = RawConfig::default().validate().unwrap();
        assert!(config.metrics.enabled);
        assert_eq!(config.metrics.listen, None);
    }

    #[test]
    fn a_separate_address_must_be_an_address_and_not_the_api_one() {
        for (address, valid) in [
            ("127.0.0.1:9420", true),
            ("[::1]:9420", true),
            ("localhost:9420", false),
            ("127.0.0.1:8420", false),
        ] {
            let mut raw = RawConfig::default();
            raw.metrics.listen = Some(address.into());
            let result = raw.validate();
            assert_eq!(result.is_ok(), valid, "{address}");
            if let Err(error) = result {
                assert!(error.to_string().contains("metrics.listen"), "{error}");
            }
        }
    }
}
