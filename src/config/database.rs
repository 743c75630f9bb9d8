//! `database_url` and `[database]`: which database, and how it is run.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check_range;
use crate::store::DatabaseSettings;
use crate::store::sqlite::SqliteStore;

/// `[database]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawDatabase {
    /// Run pending migrations at start (otherwise `sesame migrate` does).
    pub auto_migrate: bool,
    /// Most connections one node keeps (PostgreSQL).
    pub pool_size: u32,
    /// Longest wait for a connection, seconds.
    pub connect_timeout: u64,
    /// Longest a statement may run, seconds (PostgreSQL).
    pub statement_timeout: u64,
}

impl Default for RawDatabase {
    fn default() -> Self {
        let d = DatabaseSettings::for_url("");
        Self {
            auto_migrate: d.auto_migrate,
            pool_size: d.pool_size,
            connect_timeout: d.connect_timeout.as_secs(),
            statement_timeout: d.statement_timeout.as_secs(),
        }
    }
}

impl RawDatabase {
    /// Checks `database_url` (the SQLite file in `data_dir` when absent) and
    /// the section, recording each problem, and builds the database settings.
    /// A problem with the URL never quotes it: it may carry a password.
    pub(super) fn validate(
        &self,
        url: Option<&str>,
        data_dir: &Path,
        problems: &mut Vec<String>,
    ) -> DatabaseSettings {
        let url = match url {
            None => SqliteStore::url_for_data_dir(data_dir),
            Some(url)
                if url.starts_with("sqlite:")
                    || url.starts_with("postgres://")
                    || url.starts_with("postgresql://") =>
            {
                url.to_owned()
            }
            Some(_) => {
                problems.push(
                    "database_url: must start with sqlite: (for example sqlite:///var/lib/sesame/sesame.db) or postgres://user@host/db"
                        .into(),
                );
                String::new()
            }
        };
        DatabaseSettings {
            url,
            auto_migrate: self.auto_migrate,
            pool_size: check_range(problems, "database.pool_size", self.pool_size, 1, 1000),
            connect_timeout: Duration::from_secs(check_range(
                problems,
                "database.connect_timeout",
                self.connect_timeout,
                1,
                300,
            )),
            statement_timeout: Duration::from_secs(check_range(
                problems,
                "database.statement_timeout",
                self.statement_timeout,
                1,
                3600,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::RawConfig;

    fn with_url(url: &str) -> RawConfig {
        RawConfig {
            database_url: Some(url.into()),
            ..RawConfig::default()
        }
    }

    #[test]
    fn postgres_urls_are_accepted() {
        for url in [
            "postgres://sesame@db.internal/sesame?sslmode=require",
            "postgresql://sesame:secret@db.internal:5432/sesame",
        ] {
            let config = with_url(url).validate().unwrap();
            assert!(config.database.is_postgres(), "{url}");
            assert_eq!(config.database.url, url);
            assert!(!config.uses_data_dir());
        }
    }

    #[test]
    fn sqlite_urls_are_accepted() {
        let config = with_url("sqlite:///var/lib/sesame/sesame.db")
            .validate()
            .unwrap();
        assert!(!config.database.is_postgres());
        assert_eq!(config.database.url, "sqlite:///var/lib/sesame/sesame.db");
    }

    #[test]
    fn other_databases_are_refused_without_echoing_the_url() {
        let message = with_url("mysql://u:hunter2@h/db")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(message.contains("database_url"), "{message}");
        assert!(message.contains("postgres://user@host/db"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        assert!(!message.contains("mysql"), "{message}");
    }

    #[test]
    fn the_section_is_range_checked() {
        let mut raw = RawConfig::default();
        raw.database.pool_size = 0;
        raw.database.connect_timeout = 301;
        raw.database.statement_timeout = 0;
        let message = raw.validate().unwrap_err().to_string();
        for key in [
            "database.pool_size",
            "database.connect_timeout",
            "database.statement_timeout",
        ] {
            assert!(message.contains(key), "{key} missing from {message}");
        }
    }
}
