//! `tls_cert`, `tls_key`, `require_tls` and `[tls]`: HTTPS served by Sesame itself.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::http::HeaderValue;
use serde::{Deserialize, Serialize};

use super::check_range;
use crate::tls::TlsSettings;

/// `[tls]` as written (used only with `tls_cert` and `tls_key`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawTls {
    /// Send `Strict-Transport-Security` on HTTPS answers.
    pub hsts: bool,
    /// Its `max-age`, seconds.
    pub hsts_max_age: u64,
    /// Add `includeSubDomains` (only when every subdomain serves HTTPS).
    pub hsts_include_subdomains: bool,
    /// Longest a client may take to complete its TLS handshake, seconds.
    pub handshake_timeout: u64,
    /// TLS handshakes in progress at once; a connection beyond is closed.
    pub max_handshakes: usize,
    /// How often the certificate and key files are checked for a change,
    /// seconds (SIGHUP reloads them at once).
    pub watch_interval: u64,
}

impl Default for RawTls {
    fn default() -> Self {
        Self {
            hsts: true,
            hsts_max_age: 31_536_000,
            hsts_include_subdomains: false,
            handshake_timeout: 10,
            max_handshakes: 256,
            watch_interval: 10,
        }
    }
}

impl RawTls {
    /// Checks the TLS keys and the section (even without a certificate, so
    /// that a mistake shows before HTTPS is turned on), recording each
    /// problem; `None` when HTTPS is off.
    pub(super) fn validate(
        &self,
        cert: Option<&Path>,
        key: Option<&Path>,
        require_tls: bool,
        listen: SocketAddr,
        problems: &mut Vec<String>,
    ) -> Option<TlsSettings> {
        let handshake_timeout = check_range(
            problems,
            "tls.handshake_timeout",
            self.handshake_timeout,
            1,
            60,
        );
        let max_handshakes = check_range(
            problems,
            "tls.max_handshakes",
            self.max_handshakes,
            1,
            65_536,
        );
        let watch_interval =
            check_range(problems, "tls.watch_interval", self.watch_interval, 1, 3600);
        let max_age = check_range(
            problems,
            "tls.hsts_max_age",
            self.hsts_max_age,
            0,
            2 * 31_536_000,
        );
        let (cert, key) = match (cert, key) {
            (Some(cert), Some(key)) => (cert, key),
            (None, None) => {
                if require_tls && !listen.ip().is_loopback() {
                    problems.push(format!(
                        "require_tls: listen = {listen} would serve plain HTTP beyond this host; \
                         give tls_cert and tls_key (--tls-cert, --tls-key), or listen on a \
                         loopback address behind a proxy that terminates TLS"
                    ));
                }
                return None;
            }
            (Some(_), None) => {
                problems.push("tls_cert is set but tls_key is not: give both, or neither".into());
                return None;
            }
            (None, Some(_)) => {
                problems.push("tls_key is set but tls_cert is not: give both, or neither".into());
                return None;
            }
        };
        for (name, path) in [("tls_cert", cert), ("tls_key", key)] {
            if !path.is_file() {
                problems.push(format!(
                    "{name} = {:?}: no such file (a PEM file is expected)",
                    path.display().to_string()
                ));
            }
        }
        let hsts = self.hsts.then(|| {
            let mut value = format!("max-age={max_age}");
            if self.hsts_include_subdomains {
                value.push_str("; includeSubDomains");
            }
            HeaderValue::try_from(value).unwrap_or(HeaderValue::from_static("max-age=0"))
        });
        Some(TlsSettings {
            cert: PathBuf::from(cert),
            key: PathBuf::from(key),
            hsts,
            handshake_timeout: Duration::from_secs(handshake_timeout),
            max_handshakes,
            watch_interval: Duration::from_secs(watch_interval),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::config::RawConfig;

    fn pem_files() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, "not checked here").unwrap();
        std::fs::write(&key, "not checked here").unwrap();
        (dir, cert, key)
    }

    #[test]
    fn https_is_off_by_default_and_hsts_on_with_it() {
        let config = RawConfig::default().validate().unwrap();
        assert!(config.tls.is_none());

        let (_dir, cert, key) = pem_files();
        let raw = RawConfig {
            tls_cert: Some(cert),
            tls_key: Some(key),
            ..RawConfig::default()
        };
        let tls = raw.validate().unwrap().tls.unwrap();
        assert_eq!(tls.hsts.unwrap(), "max-age=31536000");
    }

    #[test]
    fn a_certificate_without_its_key_or_missing_files_are_refused() {
        let (_dir, cert, key) = pem_files();
        let cases = [
            (Some(cert.clone()), None, "tls_key is set but"),
            (None, Some(key.clone()), "tls_cert is set but"),
            (Some(cert.with_extension("nope")), Some(key), "no such file"),
        ];
        for (cert, key, expected) in cases {
            let raw = RawConfig {
                tls_cert: cert,
                tls_key: key,
                ..RawConfig::default()
            };
            let error = raw.validate().unwrap_err().to_string();
            assert!(
                error.contains(expected.split(' ').next().unwrap()),
                "{error}"
            );
        }
    }

    #[test]
    fn require_tls_refuses_plain_http_beyond_loopback_only() {
        for (listen, valid) in [
            ("127.0.0.1:8420", true),
            ("[::1]:8420", true),
            ("0.0.0.0:8420", false),
            ("10.1.2.3:8420", false),
        ] {
            let raw = RawConfig {
                listen: listen.into(),
                require_tls: true,
                ..RawConfig::default()
            };
            let result = raw.validate();
            assert_eq!(result.is_ok(), valid, "{listen}");
            if let Err(error) = result {
                assert!(error.to_string().contains("require_tls"), "{error}");
            }
        }
    }

    #[test]
    fn hsts_can_cover_subdomains_or_be_turned_off() {
        let (_dir, cert, key) = pem_files();
        let mut raw = RawConfig {
            tls_cert: Some(cert),
            tls_key: Some(key),
            ..RawConfig::default()
        };
        raw.tls.hsts_max_age = 600;
        raw.tls.hsts_include_subdomains = true;
        let tls = raw.clone().validate().unwrap().tls.unwrap();
        assert_eq!(tls.hsts.unwrap(), "max-age=600; includeSubDomains");
        raw.tls.hsts = false;
        assert!(raw.validate().unwrap().tls.unwrap().hsts.is_none());
    }
}
