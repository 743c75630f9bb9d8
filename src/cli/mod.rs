//! The operator's command line: `sesame serve`, `sesame user …`, `sesame client …`, `sesame keys …`.
//!
//! Every command takes the same `--config`, `--data-dir`, `--database-url`
//! and `--redis-url` as `serve` and works while a server runs on the same
//! database (SQLite in WAL mode allows it).

mod audit;
mod client;
mod config;
mod keys;
mod openapi;
mod role;
mod serve;
mod transfer;
mod user;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, Sources};

/// Sesame: a fast, self-hosted login and token service.
#[derive(Debug, Parser)]
#[command(name = "sesame", version, about)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, global = true, env = "SESAME_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory for the embedded database [default: ./sesame-data].
    #[arg(long, global = true, env = "SESAME_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Database URL [default: the SQLite file in the data directory].
    #[arg(
        long,
        global = true,
        env = "SESAME_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    database_url: Option<String>,
    /// Redis URL, for state shared by several nodes [default: none, state is kept in process].
    #[arg(
        long,
        global = true,
        env = "SESAME_REDIS_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    redis_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve(serve::ServeArgs),
    /// Manage accounts.
    #[command(subcommand)]
    User(user::UserCommand),
    /// Manage roles and their permissions.
    #[command(subcommand)]
    Role(role::RoleCommand),
    /// Read the audit log.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Manage OAuth 2.0 / OpenID Connect clients.
    #[command(subcommand)]
    Client(client::ClientCommand),
    /// List and rotate the token signing keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Check the configuration.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Write the OpenAPI 3.1 description of this deployment's HTTP API.
    Openapi(openapi::OpenapiArgs),
    /// Bring the database schema up to date (for deployments that set
    /// `database.auto_migrate = false`); safe while other nodes run.
    Migrate,
    /// Write roles, OAuth clients and accounts (and with --sessions live
    /// sessions) as JSON lines, to move the deployment to another backend.
    Export(transfer::ExportArgs),
    /// Read an export into this deployment's database.
    Import(transfer::ImportArgs),
}

impl Cli {
    fn sources(&self) -> Sources {
        let mut sources = Sources {
            config_file: self.config.clone(),
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone(),
            redis_url: self.redis_url.clone(),
            ..Sources::default()
        };
        if let Command::Serve(args) = &self.command {
            sources.listen = args.listen.clone();
            sources.tls_cert = args.tls_cert.clone();
            sources.tls_key = args.tls_key.clone();
            sources.require_tls = args.require_tls;
            sources.cors_origins = args.cors_origins.clone();
        }
        sources
    }
}

/// Runs the command line; the binary's whole `main`.
pub fn main() -> ExitCode {
    crate::tls::install_crypto_provider();
    let cli = Cli::parse();
    let config = match Config::load(&cli.sources()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    for warning in &config.warnings {
        eprintln!("warning: {warning}");
    }
    if let Command::Config(command) = cli.command {
        return match config::run(&config, command) {
            Ok(()) => ExitCode::SUCCESS,
            // Listed already; the status of an invalid configuration.
            Err(error) if error.is::<config::ConfigProblems>() => ExitCode::from(2),
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::Openapi(args) = &cli.command {
        return match openapi::run(&config, args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // A reader that goes away has read what it wanted (`sesame user list |
    // head`); but an export cut short must not look finished.
    let pipe_closed_is_fine = !matches!(cli.command, Command::Export(_));
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(config, args).await,
            Command::User(command) => user::run(config, command).await,
            Command::Role(command) => role::run(config, command).await,
            Command::Audit(command) => audit::run(config, command).await,
            Command::Client(command) => client::run(config, command).await,
            Command::Keys(command) => keys::run(config, command).await,
            Command::Config(_) | Command::Openapi(_) => Ok(()),
            Command::Migrate => migrate(config).await,
            Command::Export(args) => transfer::export(config, args).await,
            Command::Import(args) => transfer::import(config, args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of the output went away (`sesame user list | head`):
        // it read what it wanted.
        Err(error) if pipe_closed_is_fine && is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(transfer::exit_code(&error))
        }
    }
}

/// Writes the command's audit events before the process exits, and
/// answers the command's result. A command that did its work but whose
/// events could not be written says both: the change stands, unaudited.
async fn audited<T>(core: &crate::core::Core, result: anyhow::Result<T>) -> anyhow::Result<T> {
    match (core.flush_audit().await, result) {
        (Ok(()), result) => result,
        (Err(error), Ok(_)) => Err(anyhow::anyhow!(
            "done, but its audit event could not be written: {error}"
        )),
        (Err(error), Err(failed)) => {
            eprintln!("warning: the audit events could not be written: {error}");
            Err(failed)
        }
    }
}

/// `sesame migrate`: applies pending migrations under the database's lock.
async fn migrate(config: Config) -> anyhow::Result<()> {
    init_logging("info");
    crate::app::open_store(&config, crate::store::Migrate::Apply).await?;
    println!(
        "the schema of {} is up to date",
        crate::app::displayable_url(&config.database.url)
    );
    Ok(())
}

/// Whether the error is a write to a pipe whose reader has gone.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Sends log lines to stderr, so that stdout carries only what a command prints.
fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// For the server: the same, as JSON lines when `json`.
fn init_logging_as(filter: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().with_current_span(false).try_init()
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init()
    };
}
