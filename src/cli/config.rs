//! `sesame config check`: validate the configuration from every source
//! (file, `SESAME_*`, flags) and show what it amounts to, without starting
//! anything. Secrets in URLs are never shown.

use clap::Subcommand;

use crate::config::Config;
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;
use crate::tls::Tls;

/// The configuration would not start a server (each problem printed).
#[derive(Debug, thiserror::Error)]
#[error("the configuration has problems a start would refuse")]
pub struct ConfigProblems;
use crate::core::passwords::Kernel;
use crate::redact;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check the configuration and show its main settings; exits 2 with
    /// every problem listed if it is invalid.
    Check,
}

pub fn run(config: &Config, command: ConfigCommand) -> anyhow::Result<()> {
    let ConfigCommand::Check = command;
    // What a start would refuse beyond the configuration's own rules: the
    // database URL as its store reads it, the certificate and key as the
    // server loads them.
    let mut problems = Vec::new();
    let database = if config.database.is_postgres() {
        PostgresStore::check_url(&config.database)
    } else {
        SqliteStore::check_url(&config.database.url)
    };
    if let Err(error) = database {
        problems.push(format!("database_url: {error}"));
    }
    if let Some(tls) = &config.tls {
        // A key is usually readable by the server's user alone: one that
        // this user cannot read is not the server's problem.
        let unreadable: Vec<&std::path::Path> = [&tls.cert, &tls.key]
            .into_iter()
            .map(|path| path.as_path())
            .filter(|path| {
                std::fs::File::open(path)
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied)
            })
            .collect();
        for path in &unreadable {
            eprintln!(
                "warning: cannot read {} as this user (the server's user may): the certificate \
                 and key were not checked; run the check as that user",
                path.display()
            );
        }
        if unreadable.is_empty() {
            match Tls::check(tls) {
                Ok(Some(validity)) => {
                    let now = crate::clock::Clock::now(&crate::clock::SystemClock);
                    if let Some(concern) = validity.concern(now) {
                        eprintln!(
                            "warning: the certificate in {} {concern}",
                            tls.cert.display()
                        );
                    }
                }
                Ok(None) => eprintln!(
                    "warning: cannot read the validity of the certificate in {}",
                    tls.cert.display()
                ),
                Err(error) => problems.push(format!("tls: {error}")),
            }
        }
    }
    if !problems.is_empty() {
        for problem in &problems {
            eprintln!("error: {problem}");
        }
        return Err(ConfigProblems.into());
    }
    let hashing = &config.core.hashing;
    println!("configuration ok");
    println!("listen: {}", config.listen);
    println!("database: {}", redact::url(&config.database.url));
    match &config.redis {
        Some(redis) => println!(
            "redis: {} (key prefix {:?})",
            redact::url(&redis.url),
            redis.key_prefix
        ),
        None => println!("redis: none (state kept in this process: one node)"),
    }
    println!(
        "argon2: argon2id m={} KiB, t={}, p={}; {} hashing threads",
        hashing.memory_kib, hashing.iterations, hashing.parallelism, hashing.threads
    );
    println!("argon2 kernel: {}", Kernel::instruction_set());
    println!("quota period: {}", config.core.quota_period.as_str());
    println!();
    println!("{:<40} {:<44} SOURCE", "KEY", "VALUE");
    for (key, value, source) in &config.sources {
        let value: String = value.chars().take(44).collect();
        println!("{key:<40} {value:<44} {source}");
    }
    Ok(())
}
