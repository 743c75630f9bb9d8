//! `[http]`: request limits and the proxies whose forwarding headers are believed.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::check_range;
use crate::http::HttpSettings;
use crate::http::extract::ForwardedHeader;

/// `[http]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawHttp {
    /// Largest request body, bytes.
    pub body_limit: usize,
    /// Longest time a request may take, seconds.
    pub request_timeout: u64,
    /// Longest time a client may take to send the request head, seconds.
    pub header_timeout: u64,
    /// Proxies (CIDR) whose forwarding header is believed.
    #[serde(deserialize_with = "super::one_or_many")]
    pub trusted_proxies: Vec<String>,
    /// The header they name the client in: `x-forwarded-for` or `forwarded`.
    pub forwarded_header: String,
    /// Seconds between a stop signal and the end of accepting connections,
    /// during which `/readyz` answers 503 so that load balancers drain.
    pub drain_seconds: u64,
    /// Connections open at once (TLS handshakes included).
    pub max_connections: usize,
}

impl Default for RawHttp {
    fn default() -> Self {
        let d = HttpSettings::default();
        Self {
            body_limit: d.body_limit,
            request_timeout: d.request_timeout.as_secs(),
            header_timeout: d.header_timeout.as_secs(),
            trusted_proxies: Vec::new(),
            forwarded_header: d.forwarded_header.as_str().to_owned(),
            drain_seconds: d.drain.as_secs(),
            max_connections: d.max_connections,
        }
    }
}

/// `::ffff:10.0.0.5` (how `ss` shows an IPv4 peer of a dual-stack socket)
/// as `10.0.0.5`: clients' and proxies' addresses are compared in their
/// canonical form, where an IPv4-mapped one is IPv4, and a range of the
/// other family never contains them.
fn ipv4_mapped_as_ipv4(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => v6
            .addr()
            .to_ipv4_mapped()
            .and_then(|v4| ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).ok())
            .map_or(net, IpNet::V4),
        other => other,
    }
}

impl RawHttp {
    /// Checks the section, recording each problem, and builds its settings.
    pub(super) fn validate(&self, problems: &mut Vec<String>) -> HttpSettings {
        let mut trusted_proxies = Vec::new();
        for proxy in &self.trusted_proxies {
            match proxy
                .parse::<IpNet>()
                .or_else(|_| proxy.parse::<IpAddr>().map(IpNet::from))
                .map(ipv4_mapped_as_ipv4)
            {
                // Trusting every address lets any client name its own
                // (and so escape its failure budget): the proxies
                // themselves are meant.
                Ok(net) if net.prefix_len() == 0 => problems.push(format!(
                    "http.trusted_proxies: {proxy:?} trusts every address, so any client could \
                     name its own; list the proxies' addresses or their network"
                )),
                Ok(net) => trusted_proxies.push(net),
                Err(_) => problems.push(format!(
                    "http.trusted_proxies: {proxy:?} is not an address or CIDR range such as 10.0.0.0/8"
                )),
            }
        }
        let forwarded_header =
            ForwardedHeader::parse(&self.forwarded_header).unwrap_or_else(|| {
                problems.push(format!(
                    "http.forwarded_header: {:?} is neither \"x-forwarded-for\" nor \"forwarded\"",
                    self.forwarded_header
                ));
                ForwardedHeader::XForwardedFor
            });
        HttpSettings {
            body_limit: check_range(
                problems,
                "http.body_limit",
                self.body_limit,
                1024,
                16 * 1024 * 1024,
            ),
            request_timeout: Duration::from_secs(check_range(
                problems,
                "http.request_timeout",
                self.request_timeout,
                1,
                600,
            )),
            header_timeout: Duration::from_secs(check_range(
                problems,
                "http.header_timeout",
                self.header_timeout,
                1,
                300,
            )),
            trusted_proxies,
            forwarded_header,
            drain: Duration::from_secs(check_range(
                problems,
                "http.drain_seconds",
                self.drain_seconds,
                0,
                300,
            )),
            forward_auth: Default::default(),
            max_connections: check_range(
                problems,
                "http.max_connections",
                self.max_connections,
                1,
                1_000_000,
            ),
            cors: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::RawConfig;

    /// A proxy list that trusts every address would let any client name its
    /// own, and so escape its failure budget.
    #[test]
    fn trusted_proxies_name_the_proxies_not_everyone() {
        for (proxies, valid) in [
            (vec!["10.0.0.0/8", "fd00::/8", "192.0.2.7"], true),
            (vec!["0.0.0.0/0"], false),
            (vec!["10.0.0.1", "::/0"], false),
            (vec!["proxy.internal"], false),
            (vec!["::ffff:0.0.0.0/96"], false),
        ] {
            let mut raw = RawConfig::default();
            raw.http.trusted_proxies = proxies.iter().map(|p| p.to_string()).collect();
            let result = raw.validate();
            assert_eq!(result.is_ok(), valid, "{proxies:?}");
            if let Err(error) = result {
                assert!(
                    error.to_string().contains("http.trusted_proxies"),
                    "{error}"
                );
            }
        }
    }

    /// An IPv4-mapped entry matches the IPv4 peer it names (clients'
    /// addresses are compared in their canonical form).
    #[test]
    fn an_ipv4_mapped_proxy_is_trusted_as_its_ipv4_address() {
        let mut raw = RawConfig::default();
        raw.http.trusted_proxies = vec!["::ffff:10.0.0.5".into(), "::ffff:10.1.0.0/112".into()];
        let trusted = raw.validate().unwrap().http.trusted_proxies;
        let contains = |ip: &str| {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            trusted.iter().any(|net| net.contains(&ip))
        };
        assert!(contains("10.0.0.5") && contains("10.1.255.1"));
        assert!(!contains("10.0.0.6") && !contains("10.2.0.1"));
    }
}
