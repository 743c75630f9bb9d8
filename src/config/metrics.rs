//! `[metrics]`: the Prometheus endpoint.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::http::metrics::{MetricsSettings, MetricsToken};

/// `[metrics]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawMetrics {
    /// Count and serve `GET /metrics` at all.
    pub enabled: bool,
    /// A separate address for `GET /metrics` (then not served with the
    /// API); absent: on the API's own listener, if `token` is set.
    pub listen: Option<String>,
    /// The bearer token a scraper must send (`Authorization: Bearer …`):
    /// required for `GET /metrics` on the API's listener, which is not
    /// served without one; on `listen`, required when set.
    pub token: Option<String>,
}

impl Default for RawMetrics {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: None,
            token: None,
        }
    }
}

/// Shortest metrics token accepted.
const MIN_TOKEN_CHARS: usize = 32;

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
                Ok(own) if binds_overlap(own, listen) => {
                    problems.push(format!(
                        "metrics.listen = {address:?}: is on the API's own port and address \
                         (listen); leave metrics.listen out to serve /metrics there"
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
        let token = self.token.as_deref().and_then(|token| {
            if token.chars().count() < MIN_TOKEN_CHARS
                || !token.chars().all(|c| c.is_ascii_graphic())
            {
                // Never the value: it is a secret.
                problems.push(format!(
                    "metrics.token: must be at least {MIN_TOKEN_CHARS} printable ASCII characters \
                     without spaces (e.g. `openssl rand -hex 32`)"
                ));
                return None;
            }
            Some(MetricsToken::new(token))
        });
        MetricsSettings {
            enabled: self.enabled,
            listen: own,
            token,
        }
    }
}

/// Whether two listening addresses collide, so that the second bind
/// would fail: the same port on the same address, or on a wildcard that
/// covers the other (`0.0.0.0` covers IPv4; `[::]` both families, as
/// Linux binds it by default).
pub fn binds_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    let covers = |wide: SocketAddr, other: SocketAddr| match wide.ip() {
        std::net::IpAddr::V4(ip) => ip.is_unspecified() && other.is_ipv4(),
        std::net::IpAddr::V6(ip) => ip.is_unspecified(),
    };
    a.port() == b.port() && a.port() != 0 && (a.ip() == b.ip() || covers(a, b) || covers(b, a))
}

#[cfg(test)]
mod tests {
    use crate::config::RawConfig;

    #[test]
    fn listeners_overlap_on_one_port_of_a_covered_address() {
        let overlap =
            |a: &str, b: &str| super::binds_overlap(a.parse().unwrap(), b.parse().unwrap());
        assert!(overlap("127.0.0.1:8420", "127.0.0.1:8420"));
        assert!(overlap("0.0.0.0:8420", "127.0.0.1:8420"));
        assert!(overlap("127.0.0.1:8420", "[::]:8420"));
        assert!(overlap("[::]:8420", "[::1]:8420"));
        assert!(!overlap("[::1]:8420", "0.0.0.0:8420"), "another family");
        assert!(!overlap("127.0.0.2:8420", "127.0.0.1:8420"));
        assert!(!overlap("0.0.0.0:9420", "0.0.0.0:8420"));
        assert!(!overlap("127.0.0.1:0", "127.0.0.1:0"), "any free port");
    }

    #[test]
    fn metrics_are_on_the_api_listener_by_default() {
        let config = RawConfig::default().validate().unwrap();
        assert!(config.metrics.enabled);
        assert_eq!(config.metrics.listen, None);
    }

    #[test]
    fn a_token_is_long_and_never_repeated_in_an_error() {
        for (token, valid) in [
            ("0123456789abcdef0123456789abcdef", true),
            ("short-secret-value", false),
            ("0123456789abcdef 0123456789abcdef", false),
        ] {
            let mut raw = RawConfig::default();
            raw.metrics.token = Some(token.into());
            let result = raw.validate();
            assert_eq!(result.is_ok(), valid, "{token}");
            if let Err(error) = result {
                let error = error.to_string();
                assert!(
                    error.contains("metrics.token") && !error.contains(token),
                    "{error}"
                );
            }
        }
    }

    #[test]
    fn a_separate_address_must_be_an_address_and_not_the_api_one() {
        for (address, valid) in [
            ("127.0.0.1:9420", true),
            ("[::1]:9420", true),
            ("localhost:9420", false),
            ("127.0.0.1:8420", false),
            // The API's port on every address: the second bind would fail.
            ("0.0.0.0:8420", false),
            ("[::]:8420", false),
            ("127.0.0.2:8420", true),
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
