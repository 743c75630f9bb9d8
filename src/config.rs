//! Configuration: defaults < TOML file < `SESAME_*` environment < flags,
//! validated once at start-up into a [`Config`].
//!
//! Every key of the TOML file is also an environment variable: `listen` is
//! `SESAME_LISTEN`, `[tokens] access_ttl` is `SESAME_TOKENS__ACCESS_TTL`.
//! Validation collects every problem and names the key and the fix, so a bad
//! configuration stops start-up with one clear message.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::core::CoreSettings;
use crate::core::domain::Platform;
use crate::core::guard::AbuseSettings;
use crate::core::keys::SigningAlgorithm;
use crate::core::passwords::HashingSettings;
use crate::core::sessions::{PlatformPolicy, SessionSettings};
use crate::core::tokens::TokenSettings;
use crate::http::HttpSettings;
use crate::http::contracts::ContractSettings;
use crate::limits::Rule;
use crate::store::sqlite::SqliteStore;

/// Where configuration comes from besides defaults and the environment:
/// the command-line flags shared by every command.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// `--config FILE`.
    pub config_file: Option<PathBuf>,
    /// `--listen`.
    pub listen: Option<String>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--database-url`.
    pub database_url: Option<String>,
}

/// Configuration as written, before validation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    /// Address to listen on.
    pub listen: String,
    /// Directory for the embedded database.
    pub data_dir: PathBuf,
    /// Database URL; the SQLite file in `data_dir` when absent.
    pub database_url: Option<String>,
    /// Log filter (`info`, `debug`, `sesame=debug,tower_http=info` …).
    pub log: String,
    /// `[tokens]`.
    pub tokens: RawTokens,
    /// `[passwords]`.
    pub passwords: RawPasswords,
    /// `[sessions]`.
    pub sessions: RawSessions,
    /// `[http]`.
    pub http: RawHttp,
    /// `[contracts]`.
    pub contracts: RawContracts,
    /// `[abuse]`.
    pub abuse: RawAbuse,
    /// `[audit]`.
    pub audit: RawAudit,
}

/// `[abuse]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawAbuse {
    /// Failures one client address may make in a row.
    pub address_burst: u32,
    /// Seconds that earn an address one more failure.
    pub address_interval: i64,
    /// Failures an account may take in a row from unknown clients.
    pub account_burst: u32,
    /// Seconds that earn an account one more failure.
    pub account_interval: i64,
    /// Consecutive unknown-client failures that lock an account for unknown clients.
    pub lockout_threshold: i64,
    /// Known addresses and device tokens remembered per account.
    pub known_clients_kept: u32,
}

/// `[audit]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawAudit {
    /// Days events are kept.
    pub retention_days: i64,
}

impl Default for RawAbuse {
    fn default() -> Self {
        let d = AbuseSettings::default();
        Self {
            address_burst: d.address_rule.burst,
            address_interval: d.address_rule.interval,
            account_burst: d.account_rule.burst,
            account_interval: d.account_rule.interval,
            lockout_threshold: d.lockout_threshold,
            known_clients_kept: d.known_clients_kept,
        }
    }
}

impl Default for RawAudit {
    fn default() -> Self {
        Self {
            retention_days: AbuseSettings::default().audit_retention_days,
        }
    }
}

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

/// `[passwords]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawPasswords {
    /// Argon2id memory, KiB.
    pub memory_kib: u32,
    /// Argon2id iterations.
    pub iterations: u32,
    /// Argon2id lanes.
    pub parallelism: u32,
    /// Hashing threads; 0 means one per core.
    pub threads: usize,
    /// Queue length; 0 means 64 per thread.
    pub queue: usize,
    /// Refuse new passwords that are common or easy to guess.
    pub refuse_common: bool,
}

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
    /// Proxies (CIDR) whose `Forwarded` / `X-Forwarded-For` are believed.
    pub trusted_proxies: Vec<String>,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8420".into(),
            data_dir: PathBuf::from("./sesame-data"),
            database_url: None,
            log: "info".into(),
            tokens: RawTokens::default(),
            passwords: RawPasswords::default(),
            sessions: RawSessions::default(),
            http: RawHttp::default(),
            contracts: RawContracts::default(),
            abuse: RawAbuse::default(),
            audit: RawAudit::default(),
        }
    }
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

impl Default for RawPasswords {
    fn default() -> Self {
        let d = HashingSettings::default();
        Self {
            memory_kib: d.memory_kib,
            iterations: d.iterations,
            parallelism: d.parallelism,
            threads: 0,
            queue: 0,
            refuse_common: true,
        }
    }
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

impl Default for RawHttp {
    fn default() -> Self {
        let d = HttpSettings::default();
        Self {
            body_limit: d.body_limit,
            request_timeout: d.request_timeout.as_secs(),
            header_timeout: d.header_timeout.as_secs(),
            trusted_proxies: Vec::new(),
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Database URL.
    pub database_url: String,
    /// Log filter.
    pub log: String,
    /// Core settings.
    pub core: CoreSettings,
    /// HTTP settings.
    pub http: HttpSettings,
    /// Contract faces.
    pub contracts: ContractSettings,
}

/// Why the configuration was refused; the message lists every problem.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError(pub Vec<String>);

impl Config {
    /// Reads and validates the configuration from all sources.
    pub fn load(sources: &Sources) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(RawConfig::default()));
        if let Some(file) = &sources.config_file {
            if !file.is_file() {
                return Err(ConfigError(vec![format!(
                    "config file {} does not exist or is not a file (--config / SESAME_CONFIG)",
                    file.display()
                )]));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        figment = figment.merge(Env::prefixed("SESAME_").split("__").ignore(&["config"]));
        if let Some(listen) = &sources.listen {
            figment = figment.merge(("listen", listen));
        }
        if let Some(dir) = &sources.data_dir {
            figment = figment.merge(("data_dir", dir));
        }
        if let Some(url) = &sources.database_url {
            figment = figment.merge(("database_url", url));
        }
        let raw: RawConfig = figment
            .extract()
            .map_err(|e| ConfigError(e.into_iter().map(|e| e.to_string()).collect()))?;
        raw.validate()
    }
}

fn check_range<T: PartialOrd + std::fmt::Display + Copy>(
    problems: &mut Vec<String>,
    key: &str,
    value: T,
    min: T,
    max: T,
) -> T {
    if value < min || value > max {
        problems.push(format!("{key} = {value}: must be between {min} and {max}"));
    }
    value
}

fn parse_policy(problems: &mut Vec<String>, key: &str, value: &str) -> PlatformPolicy {
    match value {
        "multiple" => PlatformPolicy::Multiple,
        "single" => PlatformPolicy::Single,
        other => {
            problems.push(format!(
                "{key} = {other:?}: must be \"multiple\" or \"single\""
            ));
            PlatformPolicy::Multiple
        }
    }
}

impl RawConfig {
    /// Checks every value and builds the typed configuration.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let listen = self.listen.parse::<SocketAddr>().unwrap_or_else(|_| {
            problems.push(format!(
                "listen = {:?}: must be an IP address and port such as 127.0.0.1:8420 or [::]:8420",
                self.listen
            ));
            SocketAddr::from(([127, 0, 0, 1], 8420))
        });
        let database_url = match &self.database_url {
            None => SqliteStore::url_for_data_dir(&self.data_dir),
            Some(url) if url.starts_with("sqlite:") => url.clone(),
            Some(url) if url.starts_with("postgres:") || url.starts_with("postgresql:") => {
                problems.push("database_url: PostgreSQL is not supported by this build yet; use a sqlite: URL".into());
                url.clone()
            }
            Some(_) => {
                problems.push("database_url: must start with sqlite: (for example sqlite:///var/lib/sesame/sesame.db)".into());
                String::new()
            }
        };
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log) {
            problems.push(format!(
                "log = {:?}: not a log filter ({e}); try \"info\" or \"sesame=debug\"",
                self.log
            ));
        }

        let t = &self.tokens;
        let algorithm = SigningAlgorithm::parse(&t.algorithm).unwrap_or_else(|| {
            problems.push(format!(
                "tokens.algorithm = {:?}: must be one of EdDSA, ES256, RS256, HS256",
                t.algorithm
            ));
            SigningAlgorithm::EdDSA
        });
        for (key, value) in [
            ("tokens.issuer", &t.issuer),
            ("tokens.audience", &t.audience),
        ] {
            if value.trim().is_empty() {
                problems.push(format!("{key}: must not be empty"));
            }
        }
        let tokens = TokenSettings {
            algorithm,
            issuer: t.issuer.clone(),
            audience: t.audience.clone(),
            access_ttl: check_range(
                &mut problems,
                "tokens.access_ttl",
                t.access_ttl,
                1,
                7 * 86_400,
            ),
            refresh_ttl: check_range(
                &mut problems,
                "tokens.refresh_ttl",
                t.refresh_ttl,
                60,
                3650 * 86_400,
            ),
            reuse_grace: check_range(&mut problems, "tokens.reuse_grace", t.reuse_grace, 0, 60),
            leeway: check_range(&mut problems, "tokens.leeway", t.leeway, 0, 60),
        };

        let p = &self.passwords;
        let cores = std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(2);
        let threads = if p.threads == 0 {
            cores
        } else {
            check_range(&mut problems, "passwords.threads", p.threads, 1, 256)
        };
        let hashing = HashingSettings {
            memory_kib: check_range(
                &mut problems,
                "passwords.memory_kib",
                p.memory_kib,
                8 * p.parallelism.max(1),
                1024 * 1024,
            ),
            iterations: check_range(&mut problems, "passwords.iterations", p.iterations, 1, 64),
            parallelism: check_range(&mut problems, "passwords.parallelism", p.parallelism, 1, 64),
            threads,
            queue: if p.queue == 0 {
                64 * threads
            } else {
                check_range(&mut problems, "passwords.queue", p.queue, 1, 100_000)
            },
        };

        let s = &self.sessions;
        let default_platform = Platform::parse(&s.default_platform).unwrap_or_else(|_| {
            problems.push(
                "sessions.default_platform: must be 1 to 50 characters without control characters"
                    .into(),
            );
            Platform::web()
        });
        let default_policy =
            parse_policy(&mut problems, "sessions.default_policy", &s.default_policy);
        let mut policies = std::collections::HashMap::new();
        for (platform, policy) in &s.platforms {
            let key = format!("sessions.platforms.{platform}");
            policies.insert(platform.clone(), parse_policy(&mut problems, &key, policy));
        }
        let sessions = SessionSettings {
            default_platform,
            policies,
            default_policy,
            cache_ttl: check_range(&mut problems, "sessions.cache_ttl", s.cache_ttl, 0, 60),
        };

        let h = &self.http;
        let mut trusted_proxies = Vec::new();
        for proxy in &h.trusted_proxies {
            match proxy.parse::<ipnet::IpNet>().or_else(|_| proxy.parse::<std::net::IpAddr>().map(ipnet::IpNet::from)) {
                Ok(net) => trusted_proxies.push(net),
                Err(_) => problems.push(format!(
                    "http.trusted_proxies: {proxy:?} is not an address or CIDR range such as 10.0.0.0/8"
                )),
            }
        }
        let http = HttpSettings {
            body_limit: check_range(
                &mut problems,
                "http.body_limit",
                h.body_limit,
                1024,
                16 * 1024 * 1024,
            ),
            request_timeout: Duration::from_secs(check_range(
                &mut problems,
                "http.request_timeout",
                h.request_timeout,
                1,
                600,
            )),
            header_timeout: Duration::from_secs(check_range(
                &mut problems,
                "http.header_timeout",
                h.header_timeout,
                1,
                300,
            )),
            trusted_proxies,
        };

        let a = &self.abuse;
        let abuse = AbuseSettings {
            address_rule: Rule {
                burst: check_range(
                    &mut problems,
                    "abuse.address_burst",
                    a.address_burst,
                    1,
                    10_000,
                ),
                interval: check_range(
                    &mut problems,
                    "abuse.address_interval",
                    a.address_interval,
                    1,
                    86_400,
                ),
            },
            account_rule: Rule {
                burst: check_range(&mut problems, "abuse.account_burst", a.account_burst, 1, 99),
                interval: check_range(
                    &mut problems,
                    "abuse.account_interval",
                    a.account_interval,
                    1,
                    86_400,
                ),
            },
            lockout_threshold: check_range(
                &mut problems,
                "abuse.lockout_threshold",
                a.lockout_threshold,
                1,
                1_000_000,
            ),
            known_clients_kept: check_range(
                &mut problems,
                "abuse.known_clients_kept",
                a.known_clients_kept,
                1,
                1000,
            ),
            audit_retention_days: check_range(
                &mut problems,
                "audit.retention_days",
                self.audit.retention_days,
                1,
                36_500,
            ),
            refuse_common_passwords: self.passwords.refuse_common,
        };

        let c = &self.contracts;
        if c.manager_permission.trim().is_empty() {
            problems.push(
                "contracts.manager_permission: must name a permission such as \"admin\"".into(),
            );
        }
        let contracts = ContractSettings {
            ai_gateway: c.ai_gateway,
            manager: c.manager,
            users_actions: c.users_actions,
            careyshop: c.careyshop,
            fungame: c.fungame,
            manager_permission: c.manager_permission.clone(),
            careyshop_platform_policy: parse_policy(
                &mut problems,
                "contracts.careyshop_platform_policy",
                &c.careyshop_platform_policy,
            ),
        };

        if !problems.is_empty() {
            return Err(ConfigError(problems));
        }
        Ok(Config {
            listen,
            data_dir: self.data_dir,
            database_url,
            log: self.log,
            core: CoreSettings {
                tokens,
                hashing,
                sessions,
                abuse,
            },
            http,
            contracts,
        })
    }
}

impl Config {
    /// Whether the database is the default file inside the data directory
    /// (which must then exist before the database is opened).
    pub fn uses_data_dir(&self) -> bool {
        self.database_url == SqliteStore::url_for_data_dir(&self.data_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_documentation() {
        let config = RawConfig::default().validate().unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8420");
        assert_eq!(config.core.tokens.access_ttl, 3600);
        assert_eq!(config.core.tokens.refresh_ttl, 30 * 86_400);
        assert_eq!(config.core.hashing.memory_kib, 19456);
        assert_eq!(config.http.body_limit, 64 * 1024);
        assert!(config.uses_data_dir());
    }

    /// The configuration shown in README.md is what Sesame accepts.
    #[test]
    fn the_readme_configuration_example_is_valid() {
        let readme = include_str!("../README.md");
        let start =
            readme.find("```toml\n").expect("README has a TOML example") + "```toml\n".len();
        let end = start + readme[start..].find("```").expect("closed block");
        let raw: RawConfig = Figment::from(Serialized::defaults(RawConfig::default()))
            .merge(Toml::string(&readme[start..end]))
            .extract()
            .expect("every key of the example is known");
        let config = raw.validate().expect("the example is valid");
        assert_eq!(config.core.tokens.leeway, 30);
        assert!(config.contracts.fungame);
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let mut raw = RawConfig {
            listen: "nowhere".into(),
            ..RawConfig::default()
        };
        raw.tokens.leeway = 61;
        raw.tokens.algorithm = "none".into();
        raw.sessions.platforms.insert("iOS".into(), "one".into());
        let message = raw.validate().unwrap_err().to_string();
        for key in [
            "listen",
            "tokens.leeway",
            "tokens.algorithm",
            "sessions.platforms.iOS",
        ] {
            assert!(message.contains(key), "{key} missing from {message}");
        }
    }
}
