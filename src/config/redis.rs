//! `redis_url` and `[redis]`: state shared by several nodes.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check_range;
use crate::limits::RedisSettings;

/// `[redis]` as written (used only when `redis_url` is set).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawRedis {
    /// Prefix of every key and channel, so deployments can share a server.
    pub key_prefix: String,
    /// Longest wait for a connection or a command, milliseconds.
    pub timeout_ms: u64,
}

impl Default for RawRedis {
    fn default() -> Self {
        let d = RedisSettings::for_url("");
        Self {
            key_prefix: d.key_prefix,
            timeout_ms: u64::try_from(d.timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

impl RawRedis {
    /// Checks `redis_url` and the section (even without a URL, so that a
    /// mistake shows before Redis is turned on), recording each problem, and
    /// builds the Redis settings, `None` without a URL. A problem with the
    /// URL never quotes it: it may carry a password.
    pub(super) fn validate(
        &self,
        url: Option<&str>,
        problems: &mut Vec<String>,
    ) -> Option<RedisSettings> {
        if let Some(url) = url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            problems.push(
                    "redis_url: must start with redis:// or rediss:// (TLS), for example redis://127.0.0.1:6379"
                        .into(),
                );
        }
        let prefix = &self.key_prefix;
        if prefix.is_empty() || prefix.len() > 64 || !prefix.bytes().all(|b| b.is_ascii_graphic()) {
            problems.push(format!(
                "redis.key_prefix = {prefix:?}: must be 1 to 64 printable ASCII characters without spaces, such as \"sesame:\""
            ));
        }
        let timeout = check_range(problems, "redis.timeout_ms", self.timeout_ms, 10, 60_000);
        url.map(|url| RedisSettings {
            url: url.to_owned(),
            key_prefix: prefix.clone(),
            timeout: Duration::from_millis(timeout),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::RawConfig;

    #[test]
    fn a_redis_url_turns_redis_on() {
        let mut raw = RawConfig {
            redis_url: Some("rediss://:secret@cache.internal:6380/2".into()),
            ..RawConfig::default()
        };
        raw.redis.key_prefix = "sesame-staging:".into();
        let redis = raw.validate().unwrap().redis.unwrap();
        assert_eq!(redis.url, "rediss://:secret@cache.internal:6380/2");
        assert_eq!(redis.key_prefix, "sesame-staging:");
        assert_eq!(redis.timeout, Duration::from_millis(500));
    }

    #[test]
    fn a_bad_redis_url_is_refused_without_echoing_it() {
        let raw = RawConfig {
            redis_url: Some("http://u:s3cret@cache.internal:6379".into()),
            ..RawConfig::default()
        };
        let message = raw.validate().unwrap_err().to_string();
        assert!(message.contains("redis_url"), "{message}");
        assert!(!message.contains("s3cret"), "{message}");
        assert!(!message.contains("cache.internal"), "{message}");
    }

    #[test]
    fn the_key_prefix_is_printable_ascii_without_spaces() {
        let too_long = "x".repeat(65);
        for prefix in ["", "my app:", "sésame:", &too_long] {
            let mut raw = RawConfig::default();
            raw.redis.key_prefix = prefix.to_owned();
            let message = raw.validate().unwrap_err().to_string();
            assert!(
                message.contains("redis.key_prefix"),
                "{prefix:?}: {message}"
            );
        }
        let mut raw = RawConfig::default();
        raw.redis.key_prefix = "x".repeat(64);
        assert!(raw.validate().is_ok());
    }
}
