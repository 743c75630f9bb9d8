//! Configuration: defaults < TOML file < `SESAME_*` environment < flags,
//! validated once at start-up into a [`Config`].
//!
//! Every key of the TOML file is also an environment variable: `listen` is
//! `SESAME_LISTEN`, `[tokens] access_ttl` is `SESAME_TOKENS__ACCESS_TTL`.
//! Validation collects every problem and names the key and the fix, so a bad
//! configuration stops start-up with one clear message.
//!
//! Each `[section]` lives in its own file with its raw form, its defaults and
//! its validation; [`RawConfig::validate`] runs them all and gathers the
//! problems.

mod abuse;
mod contracts;
mod cors;
mod database;
mod forward_auth;
mod housekeeping;
mod http;
mod metrics;
mod oidc;
mod passwords;
mod profile;
mod quotas;
mod redis;
mod sessions;
mod tls;
mod tokens;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub use self::abuse::{RawAbuse, RawAudit};
pub use self::contracts::RawContracts;
pub use self::cors::{OriginList, RawCors};
pub use self::database::RawDatabase;
pub use self::forward_auth::RawForwardAuth;
pub use self::housekeeping::RawHousekeeping;
pub use self::http::RawHttp;
pub use self::metrics::{RawMetrics, binds_overlap};
pub use self::passwords::RawPasswords;
pub use self::profile::RawProfile;
pub use self::quotas::RawQuotas;
pub use self::redis::RawRedis;
pub use self::sessions::RawSessions;
pub use self::tls::RawTls;
pub use self::tokens::RawTokens;
use crate::core::CoreSettings;
use crate::core::sessions::PlatformPolicy;
use crate::http::HttpSettings;
use crate::http::contracts::ContractSettings;
use crate::limits::RedisSettings;
use crate::store::DatabaseSettings;
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
    /// `--redis-url`.
    pub redis_url: Option<String>,
    /// `serve --tls-cert`.
    pub tls_cert: Option<PathBuf>,
    /// `serve --tls-key`.
    pub tls_key: Option<PathBuf>,
    /// `serve --require-tls`.
    pub require_tls: bool,
    /// `serve --cors-origin` (repeated).
    pub cors_origins: Vec<String>,
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
    /// Redis URL, for state shared by several nodes; in process when absent.
    pub redis_url: Option<String>,
    /// Log filter (`info`, `debug`, `sesame=debug,tower_http=info` …).
    pub log: String,
    /// `text` (human-readable, the default) or `json` (one JSON object per line).
    pub log_format: String,
    /// The URL clients reach Sesame at: the OpenID Connect issuer. When
    /// absent, `http://` and the address the server listens on.
    pub public_url: Option<String>,
    /// HTTPS: the certificate chain (PEM); with `tls_key`, Sesame serves
    /// HTTPS only.
    pub tls_cert: Option<PathBuf>,
    /// HTTPS: the certificate's private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Refuse to serve plain HTTP on an address beyond this host.
    pub require_tls: bool,
    /// Web pages (origins) that may call Sesame from a browser; none by default.
    pub cors_origins: OriginList,
    /// 32 bytes (hex or base64) sealing private signing keys at rest.
    pub key_encryption_key: Option<String>,
    /// A file holding the key-encryption key.
    pub key_encryption_key_file: Option<PathBuf>,
    /// `[database]`.
    pub database: RawDatabase,
    /// `[redis]`.
    pub redis: RawRedis,
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
    /// `[housekeeping]`.
    pub housekeeping: RawHousekeeping,
    /// `[forward_auth]`.
    pub forward_auth: RawForwardAuth,
    /// `[quotas]`.
    pub quotas: RawQuotas,
    /// `[profile]`.
    pub profile: RawProfile,
    /// `[metrics]`.
    pub metrics: RawMetrics,
    /// `[tls]`.
    pub tls: RawTls,
    /// `[cors]`.
    pub cors: RawCors,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8420".into(),
            data_dir: PathBuf::from("./sesame-data"),
            database_url: None,
            redis_url: None,
            log: "info".into(),
            log_format: "text".into(),
            public_url: None,
            tls_cert: None,
            tls_key: None,
            require_tls: false,
            cors_origins: OriginList::default(),
            key_encryption_key: None,
            key_encryption_key_file: None,
            database: RawDatabase::default(),
            redis: RawRedis::default(),
            tokens: RawTokens::default(),
            passwords: RawPasswords::default(),
            sessions: RawSessions::default(),
            http: RawHttp::default(),
            contracts: RawContracts::default(),
            abuse: RawAbuse::default(),
            audit: RawAudit::default(),
            housekeeping: RawHousekeeping::default(),
            forward_auth: RawForwardAuth::default(),
            quotas: RawQuotas::default(),
            profile: RawProfile::default(),
            metrics: RawMetrics::default(),
            tls: RawTls::default(),
            cors: RawCors::default(),
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
    /// The database: its URL, migrations, pool and timeouts.
    pub database: DatabaseSettings,
    /// Shared state through Redis; `None` keeps it in process (one node).
    pub redis: Option<RedisSettings>,
    /// Log filter.
    pub log: String,
    /// Log lines as JSON objects rather than text.
    pub log_json: bool,
    /// The OpenID Connect issuer URL, if configured.
    pub public_url: Option<String>,
    /// Core settings.
    pub core: CoreSettings,
    /// HTTP settings.
    pub http: HttpSettings,
    /// Contract faces.
    pub contracts: ContractSettings,
    /// `GET /metrics`.
    pub metrics: crate::http::metrics::MetricsSettings,
    /// HTTPS, when configured.
    pub tls: Option<crate::tls::TlsSettings>,
    /// Not mistakes, but worth a look: `SESAME_*` variables that are no
    /// configuration key (ignored), each with the closest key. Logged at start.
    pub warnings: Vec<String>,
    /// Each configuration key (`tokens.access_ttl`) with its value (secrets
    /// redacted) and where it came from (default, the file, the environment,
    /// a flag).
    pub sources: Vec<(String, String, String)>,
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
        // Unknown keys in the file are mistakes (typos); unknown SESAME_*
        // variables are not: Kubernetes sets SESAME_PORT, SESAME_SERVICE_HOST …
        // for a Service named sesame, and scripts set their own. They are
        // left out, with a warning naming the closest key.
        let known = known_keys();
        let mut warnings = Vec::new();
        for (name, _) in std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v)))
            .filter(|(k, _)| k.starts_with("SESAME_"))
        {
            let key = name["SESAME_".len()..]
                .to_ascii_lowercase()
                .replace("__", ".");
            if key == "config" || is_known(&known, &key) {
                continue;
            }
            let closest = known
                .iter()
                .map(|k| (strsim::levenshtein(k, &key), k))
                .min()
                .map(|(_, k)| format!("SESAME_{}", k.to_ascii_uppercase().replace('.', "__")));
            warnings.push(match closest {
                Some(closest) => format!(
                    "{name} is not a configuration key and is ignored (the closest is {closest})"
                ),
                None => format!("{name} is not a configuration key and is ignored"),
            });
        }
        let env_known = known.clone();
        figment = figment.merge(
            Env::prefixed("SESAME_")
                .split("__")
                .ignore(&["config"])
                .filter(move |key| {
                    let key = key.as_str().to_ascii_lowercase();
                    is_known(&env_known, &key) && !key.starts_with(PLATFORMS_FROM_ENV)
                }),
        );
        // Platform names keep their case (`iOS` and `ios` are two
        // platforms), which figment's environment provider folds.
        let platforms: BTreeMap<String, String> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter_map(|(name, value)| {
                // The prefix in any case, as figment matches the others.
                const PREFIX: &str = "SESAME_SESSIONS__PLATFORMS__";
                let (prefix, platform) = name.split_at_checked(PREFIX.len())?;
                (prefix.eq_ignore_ascii_case(PREFIX) && !platform.is_empty())
                    .then(|| (platform.to_owned(), value))
            })
            .collect();
        if !platforms.is_empty() {
            figment = figment.merge(("sessions.platforms", platforms));
        }
        if let Some(listen) = &sources.listen {
            figment = figment.merge(("listen", listen));
        }
        if let Some(dir) = &sources.data_dir {
            figment = figment.merge(("data_dir", dir));
        }
        if let Some(url) = &sources.database_url {
            figment = figment.merge(("database_url", url));
        }
        if let Some(url) = &sources.redis_url {
            figment = figment.merge(("redis_url", url));
        }
        if let Some(cert) = &sources.tls_cert {
            figment = figment.merge(("tls_cert", cert));
        }
        if let Some(key) = &sources.tls_key {
            figment = figment.merge(("tls_key", key));
        }
        if sources.require_tls {
            figment = figment.merge(("require_tls", true));
        }
        if !sources.cors_origins.is_empty() {
            figment = figment.merge(("cors_origins", &sources.cors_origins));
        }
        let raw: RawConfig = figment
            .extract()
            .map_err(|e| ConfigError(e.into_iter().map(|e| without_values(&e)).collect()))?;
        let mut config = raw.validate()?;
        config.warnings.extend(warnings);
        config.sources = known
            .iter()
            .filter(|key| !key.ends_with(".*"))
            .map(|key| {
                let source = figment
                    .find_metadata(key)
                    .map_or("default".to_owned(), |m| match &m.source {
                        Some(figment::Source::File(path)) => format!("file {}", path.display()),
                        _ if m.name.contains("environment") => "environment".to_owned(),
                        // The defaults are a serialized RawConfig.
                        _ if m.name.contains("RawConfig") => "default".to_owned(),
                        // --listen, --data-dir, --database-url, --redis-url
                        // (clap reads their SESAME_ variables into them).
                        _ => "flag or its variable".to_owned(),
                    });
                let value = match figment.find_value(key) {
                    Ok(value) => shown_value(key, &value),
                    Err(_) => "(none)".to_owned(),
                };
                (key.clone(), value, source)
            })
            .collect();
        Ok(config)
    }

    /// Whether the database is the default file inside the data directory
    /// (which must then exist before the database is opened).
    pub fn uses_data_dir(&self) -> bool {
        self.database.url == SqliteStore::url_for_data_dir(&self.data_dir)
    }
}

/// Every configuration key (`listen`, `tokens.access_ttl`); `section.*`
/// where a section is a map of any keys (`sessions.platforms.*`).
fn known_keys() -> Vec<String> {
    fn walk(prefix: &str, value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) if map.is_empty() && !prefix.is_empty() => {
                out.push(format!("{prefix}.*"));
            }
            serde_json::Value::Object(map) => {
                for (key, child) in map {
                    let path = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    match child {
                        serde_json::Value::Object(_) => walk(&path, child, out),
                        _ => out.push(path),
                    }
                }
            }
            _ => out.push(prefix.to_owned()),
        }
    }
    let mut keys = Vec::new();
    if let Ok(defaults) = serde_json::to_value(RawConfig::default()) {
        walk("", &defaults, &mut keys);
    }
    keys
}

/// A configuration value as `sesame config check` shows it: secrets never.
fn shown_value(key: &str, value: &figment::value::Value) -> String {
    if let figment::value::Value::Empty(..) = value {
        return "(none)".to_owned();
    }
    if (key.contains("key_encryption_key") && !key.ends_with("_file")) || key == "metrics.token" {
        return "(redacted)".to_owned();
    }
    let text = match value {
        figment::value::Value::String(_, s) => s.clone(),
        other => serde_json::to_string(other).unwrap_or_default(),
    };
    if key.ends_with("url") {
        return crate::redact::url(&text).to_string();
    }
    text
}

/// Whether `key` (`tokens.access_ttl`) is a configuration key, or a key of
/// a map section (`sessions.platforms.ios`). A section's own name is not:
/// `SESAME_REDIS=redis://…` sets nothing.
fn is_known(known: &[String], key: &str) -> bool {
    known.iter().any(|k| {
        k == key
            || k.strip_suffix(".*").is_some_and(|map| {
                key.strip_prefix(map)
                    .is_some_and(|rest| rest.len() > 1 && rest.starts_with('.'))
            })
    })
}

/// `sessions.platforms.…` from the environment, read apart (case kept).
const PLATFORMS_FROM_ENV: &str = "sessions.platforms.";

/// A configuration error as shown: where, and what was expected, never
/// the value found (a URL with its password, a key written without
/// quotes), nor the source line a TOML syntax error quotes.
fn without_values(error: &figment::Error) -> String {
    use figment::error::{Actual, Kind};
    let kind_of = |actual: &Actual| match actual {
        Actual::Bool(_) => "a boolean",
        Actual::Unsigned(_) | Actual::Signed(_) => "an integer",
        Actual::Float(_) => "a number",
        Actual::Char(_) | Actual::Str(_) => "a string",
        Actual::Bytes(_) => "bytes",
        Actual::Unit | Actual::Option => "nothing",
        Actual::Seq => "a list",
        Actual::Map => "a table",
        _ => "a value of another kind",
    };
    let key = if error.path.is_empty() {
        None
    } else {
        Some(error.path.join("."))
    };
    let source = error
        .metadata
        .as_ref()
        .map(|m| match &m.source {
            Some(figment::Source::File(path)) => format!(" in {}", path.display()),
            _ => format!(" in {}", m.name),
        })
        .unwrap_or_default();
    let what = match &error.kind {
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
            format!("expected {expected}, found {}", kind_of(actual))
        }
        Kind::Message(message) => message
            .lines()
            .filter(|line| {
                // toml's snippet: `  |`, `3 | key = value`, `  |   ^`.
                let trimmed = line
                    .trim_start()
                    .trim_start_matches(|c: char| c.is_ascii_digit());
                !trimmed.trim_start().starts_with('|')
            })
            .collect::<Vec<_>>()
            .join("; "),
        Kind::UnknownVariant(_, expected) => format!("expected one of {expected:?}"),
        Kind::Unsupported(actual) | Kind::UnsupportedKey(actual, _) => {
            format!("unsupported: {}", kind_of(actual))
        }
        other => other.to_string(),
    };
    match key {
        Some(key) => format!("{key}{source}: {what}"),
        None => format!("{what}{source}"),
    }
}

/// A list key as written: a TOML array, or one string with the items
/// separated by commas or spaces, as an environment variable gives it most
/// easily (`SESAME_HTTP__TRUSTED_PROXIES=10.0.0.0/8,192.0.2.7`). A string
/// with no item is refused: an empty variable (an unset `${VAR}` in a
/// compose file) must not quietly empty a list such as `profile.protected`;
/// an empty list is written `[]`.
pub(crate) fn one_or_many<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        One(String),
        Many(Vec<String>),
    }
    let written = Written::deserialize(deserializer).map_err(|_| {
        serde::de::Error::custom("expected a list, or one string of items separated by commas")
    })?;
    match written {
        Written::One(text) => {
            let items: Vec<String> = text
                .split([',', ' '])
                .filter(|item| !item.is_empty())
                .map(str::to_owned)
                .collect();
            if items.is_empty() {
                return Err(serde::de::Error::custom(
                    "an empty string: write [] for an empty list",
                ));
            }
            Ok(items)
        }
        Written::Many(items) => Ok(items),
    }
}

/// Records a problem unless `min <= value <= max`; returns `value` either way.
pub(crate) fn check_range<T: PartialOrd + std::fmt::Display + Copy>(
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

/// Reads `multiple` or `single`, recording a problem for anything else.
pub(crate) fn parse_policy(problems: &mut Vec<String>, key: &str, value: &str) -> PlatformPolicy {
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
        let database =
            self.database
                .validate(self.database_url.as_deref(), &self.data_dir, &mut problems);
        let redis = self
            .redis
            .validate(self.redis_url.as_deref(), &mut problems);
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log) {
            problems.push(format!(
                "log = {:?}: not a log filter ({e}); try \"info\" or \"sesame=debug\"",
                self.log
            ));
        }
        let tokens = self.tokens.validate(&mut problems);
        let hashing = self.passwords.validate(&mut problems);
        let sessions = self.sessions.validate(&mut problems);
        let mut http = self.http.validate(&mut problems);
        http.forward_auth = self.forward_auth.validate(&mut problems);
        let abuse = self
            .abuse
            .validate(&self.audit, self.passwords.refuse_common, &mut problems);
        let contracts = self.contracts.validate(&mut problems);
        let housekeeping = self
            .housekeeping
            .validate(tokens.reuse_grace, &mut problems);
        let quota_period = self.quotas.validate(&mut problems);
        let protected_profile = self.profile.validate(&mut problems);
        let metrics = self.metrics.validate(listen, &mut problems);
        let tls = self.tls.validate(
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
            self.require_tls,
            listen,
            &mut problems,
        );
        http.cors = self.cors.validate(&self.cors_origins, &mut problems);
        let public_url = oidc::public_url(self.public_url.as_deref(), &mut problems);
        let log_json = match self.log_format.as_str() {
            "text" => false,
            "json" => true,
            other => {
                problems.push(format!(
                    "log_format = {other:?}: must be \"text\" or \"json\""
                ));
                false
            }
        };
        let key_encryption = oidc::key_encryption_key(
            self.key_encryption_key.as_deref(),
            self.key_encryption_key_file.as_deref(),
            &mut problems,
        );

        if !problems.is_empty() {
            return Err(ConfigError(problems));
        }
        let mut warnings: Vec<String> =
            oidc::rewritten(self.public_url.as_deref(), public_url.as_deref())
                .into_iter()
                .collect();
        if database.is_postgres() && database.statement_timeout >= http.request_timeout {
            warnings.push(format!(
                "database.statement_timeout ({} s) is not below http.request_timeout ({} s): a \
                 request gives up on a slow statement before the database does, and the \
                 statement runs on, holding its connection",
                database.statement_timeout.as_secs(),
                http.request_timeout.as_secs()
            ));
        }
        if abuse.refresh_rule.burst > 0 && abuse.refresh_rule.interval > tokens.reuse_grace {
            warnings.push(format!(
                "abuse.refresh_interval ({} s) is longer than tokens.reuse_grace ({} s): a \
                 client refused a refresh after its token rotated (a token another node \
                 issued) may come back after the grace window, and so end its own session \
                 as a reused token would",
                abuse.refresh_rule.interval, tokens.reuse_grace
            ));
        }
        if let Some(address) = metrics.listen
            && !address.ip().is_loopback()
            && metrics.token.is_none()
        {
            warnings.push(format!(
                "metrics.listen = {address} is reachable beyond this host and has no \
                 metrics.token: whoever reaches it learns which accounts exist and which \
                 guesses were right; keep it on an internal network, or set metrics.token"
            ));
        }
        Ok(Config {
            listen,
            data_dir: self.data_dir,
            database,
            redis,
            log: self.log,
            log_json,
            public_url,
            core: CoreSettings {
                tokens,
                hashing,
                sessions,
                abuse,
                housekeeping,
                quota_period,
                protected_profile,
                key_encryption,
            },
            http,
            contracts,
            metrics,
            tls,
            warnings,
            sources: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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

    /// Settings that start but work against each other are named in a
    /// warning, and the defaults give none.
    #[test]
    fn settings_at_odds_are_warned_about() {
        assert!(RawConfig::default().validate().unwrap().warnings.is_empty());
        let mut raw = RawConfig {
            database_url: Some("postgres://sesame@db.internal/sesame".into()),
            ..RawConfig::default()
        };
        raw.database.statement_timeout = 30;
        raw.metrics.listen = Some("10.0.0.5:9420".into());
        let warnings = raw.validate().unwrap().warnings;
        assert_eq!(warnings.len(), 2, "{warnings:#?}");
        assert!(warnings[0].contains("database.statement_timeout (30 s) is not below"));
        assert!(warnings[1].contains("metrics.listen = 10.0.0.5:9420 is reachable beyond"));
        let mut raw = RawConfig::default();
        raw.metrics.listen = Some("10.0.0.5:9420".into());
        raw.metrics.token = Some("0123456789abcdef0123456789abcdef".into());
        raw.database.statement_timeout = 30;
        assert!(
            raw.validate().unwrap().warnings.is_empty(),
            "a token, and SQLite (no statement timeout)"
        );
        let mut raw = RawConfig::default();
        raw.tokens.reuse_grace = 1;
        let warnings = raw.clone().validate().unwrap().warnings;
        assert_eq!(warnings.len(), 1, "{warnings:#?}");
        assert!(
            warnings[0]
                .contains("abuse.refresh_interval (2 s) is longer than tokens.reuse_grace (1 s)")
        );
        raw.abuse.refresh_burst = 0;
        assert!(
            raw.validate().unwrap().warnings.is_empty(),
            "no refresh budget"
        );
    }

    #[test]
    fn the_new_sections_default_as_documented() {
        let config = RawConfig::default().validate().unwrap();
        assert!(!config.database.is_postgres());
        assert!(config.database.auto_migrate);
        assert_eq!(config.database.pool_size, 16);
        assert_eq!(config.database.connect_timeout, Duration::from_secs(5));
        assert_eq!(config.database.statement_timeout, Duration::from_secs(10));
        assert_eq!(config.redis, None);
        let raw = RawConfig::default();
        assert_eq!(raw.redis.key_prefix, "sesame:");
        assert_eq!(raw.redis.timeout_ms, 500);
        let housekeeping = &config.core.housekeeping;
        assert_eq!(housekeeping.interval, 300);
        assert_eq!(housekeeping.batch, 1000);
        assert_eq!(housekeeping.keep_ended_sessions, 7 * 86_400);
        assert_eq!(housekeeping.keep_spent_refresh_tokens, 7 * 86_400);
    }

    /// The configuration shown in README.md is what Sesame accepts.
    #[test]
    fn the_readme_configuration_example_is_valid() {
        let readme = include_str!("../../README.md");
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
