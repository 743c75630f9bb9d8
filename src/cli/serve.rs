//! `sesame serve`: run the server, creating the first administrator if none exists.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use crate::app::Application;
use crate::config::Config;
use crate::core::Core;
use crate::core::accounts::{ADMIN_ROLE, AccountSpec};
use crate::core::clock::SystemClock;
use crate::core::domain::{Password, Username};
use crate::core::tokens::random_urlsafe;
use crate::store::ADMIN_PERMISSION;

/// Options of `sesame serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8420].
    #[arg(long, env = "SESAME_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// `text` or `json` (one JSON object per log line) [default: log_format].
    #[arg(long, value_name = "FORMAT", value_parser = ["text", "json"])]
    pub log_format: Option<String>,
    /// Serve `GET /metrics` on this address only (not with the API)
    /// [default: metrics.listen].
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Serve HTTPS with this certificate chain (PEM) [default: tls_cert].
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The certificate's private key (PEM) [default: tls_key].
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Refuse to serve plain HTTP on an address beyond this host
    /// [default: require_tls].
    #[arg(long)]
    pub require_tls: bool,
    /// A web page origin (https://app.example.com) that may call Sesame from
    /// a browser; repeat for more [default: cors_origins].
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    pub cors_origins: Vec<String>,
}

/// Raises the soft limit on open files to the hard one, as a server must:
/// the usual soft limit (1024 under systemd and in containers) is far below
/// `http.max_connections`, and a file descriptor is also what a database
/// connection, a SQLite reader or a certificate reload needs. Past the
/// limit, idle connections from one host would make logins fail while the
/// connection cap still had room. Warns when even the hard limit is below
/// what the configuration may open.
#[cfg(unix)]
fn raise_open_file_limit(config: &Config) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    // Linux refuses a soft limit above `fs.nr_open` (2^20 unless raised),
    // even under an unlimited hard one.
    const MOST: u64 = 1 << 20;
    let limit = getrlimit(Resource::Nofile);
    let wanted = limit.maximum.unwrap_or(MOST).min(MOST);
    let mut soft = limit.current.unwrap_or(u64::MAX);
    if soft < wanted {
        match setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(wanted),
                maximum: limit.maximum,
            },
        ) {
            Ok(()) => soft = wanted,
            Err(error) => tracing::warn!(%error, "cannot raise the open-file limit"),
        }
    }
    // Connections (a handshake runs on one of them), the database pool,
    // the metrics listener's connections and a reserve for the rest.
    let needed =
        config.http.max_connections as u64 + u64::from(config.database.pool_size) + 16 + 64;
    if soft < needed {
        tracing::warn!(
            limit = soft,
            needed,
            "the open-file limit is below what http.max_connections and the database pool \
             may open: raise it (systemd LimitNOFILE=, ulimit -n) or lower \
             http.max_connections"
        );
    }
}

#[cfg(not(unix))]
fn raise_open_file_limit(_: &Config) {}

pub async fn run(mut config: Config, args: ServeArgs) -> anyhow::Result<()> {
    if let Some(address) = args.metrics_listen {
        anyhow::ensure!(
            config.metrics.enabled,
            "--metrics-listen {address} with metrics.enabled = false: nothing would be served there"
        );
        anyhow::ensure!(
            !crate::config::binds_overlap(address, config.listen),
            "--metrics-listen {address} is on the API's own port and address (listen); leave \
             it out to serve /metrics there"
        );
        config.metrics.listen = Some(address);
    }
    let json = args
        .log_format
        .as_deref()
        .map_or(config.log_json, |format| format == "json");
    super::init_logging_as(&config.log, json);
    raise_open_file_limit(&config);
    // Registered before any start-up work, and watched during it: a stop
    // signal while the node starts (a migration waiting for a lock, say)
    // stops it there.
    let shutdown = shutdown_signal().context("cannot install signal handlers")?;
    let reload = reload_signal().context("cannot install signal handlers")?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let stop_signal = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let app = tokio::select! {
        app = Application::build(&config, Arc::new(SystemClock)) => app?,
        () = stop_signal(stopped.clone()) => {
            tracing::info!("stopped while starting");
            return Ok(());
        }
    };
    tokio::spawn(reload_on_signal(reload, app.tls()));
    // Not cut short by a stop: its password, once the account is made,
    // must be printed.
    create_first_administrator(&app.core()).await?;
    tracing::info!(
        "argon2 kernel: {}",
        crate::core::passwords::Kernel::instruction_set()
    );
    let scheme = if app.tls().is_some() { "https" } else { "http" };
    tracing::info!(address = %app.local_addr(), scheme, "sesame is listening");
    if app.tls().is_none() && !app.local_addr().ip().is_loopback() {
        tracing::warn!(
            address = %app.local_addr(),
            "serving plain HTTP beyond this host: passwords and tokens cross the network \
             readable by anyone on the way; give tls_cert and tls_key (--tls-cert, \
             --tls-key) or keep Sesame behind a proxy that terminates TLS \
             (require_tls refuses to start this way)"
        );
    }
    if let Some(address) = app.metrics_addr() {
        tracing::info!(%address, "metrics are served at http://{address}/metrics");
    }
    app.run_until(stop_signal(stopped))
        .await
        .context("server failed")?;
    tracing::info!("sesame stopped");
    Ok(())
}

/// When no account holds the administrator role, creates `admin` with a
/// random password and prints it once to stdout (never to the log).
async fn create_first_administrator(core: &Core) -> anyhow::Result<()> {
    if core.has_administrator().await? {
        return Ok(());
    }
    // An account made with a role that no longer grants `admin` would
    // administer nothing, and another would be made at every start.
    let role_administers = core
        .role(ADMIN_ROLE)
        .await
        .is_ok_and(|role| role.permissions.iter().any(|p| p == ADMIN_PERMISSION));
    if !role_administers {
        tracing::warn!(
            "no account holds the admin permission, and the {ADMIN_ROLE} role does not grant \
             it: give an account a role that does (sesame role grant, sesame user grant-role)"
        );
        return Ok(());
    }
    let password = random_urlsafe(18);
    let mut username = "admin".to_owned();
    if core.find_by_username(&username).await.is_ok() {
        username = format!("admin-{}", &random_urlsafe(3).to_ascii_lowercase());
    }
    let spec = AccountSpec {
        username: Username::parse(&username)?,
        email: None,
        mobile: None,
        display_name: Some("Administrator".into()),
        roles: vec![ADMIN_ROLE.to_owned()],
        max_api_calls: 0,
        password: Password::new_password(&password)?,
    };
    match core
        .create_account(spec, &crate::core::roles::Actor::Operator)
        .await
    {
        Ok(_) => {}
        // Nodes starting together on an empty database all try; one wins
        // (and prints its password), the others find an administrator.
        Err(crate::core::Error::Conflict(_)) if core.has_administrator().await? => return Ok(()),
        Err(error) => return Err(error.into()),
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "Created the first administrator account.")?;
    writeln!(out, "  username: {username}")?;
    writeln!(out, "  password: {password}")?;
    writeln!(
        out,
        "This password is shown only once. Change it with: sesame user set-password {username}"
    )?;
    out.flush()?;
    Ok(())
}

/// How long after the first stop signal a second one stops the process at
/// once.
#[cfg(unix)]
const SECOND_SIGNAL_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

/// A future that completes on SIGINT or SIGTERM; the handlers are installed
/// when this is called, not when the future is first polled.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {},
            _ = interrupt.recv() => {},
        }
        tracing::info!(
            "shutting down; finishing in-flight requests (a second SIGINT or SIGTERM, 2 s or \
             more after this one, stops at once)"
        );
        // An operator who asks twice (a drain of minutes, a database that
        // does not answer the last flush) gets the process back now; what
        // was not yet written (batched API-call counts, audit events) is
        // lost, as with SIGKILL. Not a signal that follows the first
        // within `SECOND_SIGNAL_AFTER`: one stop often sends two (Ctrl-C
        // reaches a whole process group, whose supervisor then sends
        // SIGTERM too).
        let first = std::time::Instant::now();
        tokio::spawn(async move {
            let code = loop {
                let code = tokio::select! {
                    _ = terminate.recv() => 143,
                    _ = interrupt.recv() => 130,
                };
                if first.elapsed() >= SECOND_SIGNAL_AFTER {
                    break code;
                }
            };
            tracing::warn!(
                "second stop signal: stopping at once, without finishing in-flight requests or \
                 writing batched counters and audit events"
            );
            std::process::exit(code);
        });
    })
}

/// SIGHUP, installed before start-up so that an early one does not stop
/// the process (its default); `None` where there is no such signal.
#[cfg(unix)]
fn reload_signal() -> std::io::Result<Option<tokio::signal::unix::Signal>> {
    use tokio::signal::unix::{SignalKind, signal};
    signal(SignalKind::hangup()).map(Some)
}

#[cfg(not(unix))]
fn reload_signal() -> std::io::Result<Option<()>> {
    Ok(None)
}

/// Reloads the TLS certificate and key at each SIGHUP.
#[cfg(unix)]
async fn reload_on_signal(
    signal: Option<tokio::signal::unix::Signal>,
    tls: Option<Arc<crate::tls::Tls>>,
) {
    let Some(mut signal) = signal else { return };
    while signal.recv().await.is_some() {
        match &tls {
            Some(tls) => tls.reload_and_log("SIGHUP"),
            None => tracing::info!("SIGHUP: nothing to reload (HTTPS is off)"),
        }
    }
}

#[cfg(not(unix))]
async fn reload_on_signal(_: Option<()>, _: Option<Arc<crate::tls::Tls>>) {}

#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down; finishing in-flight requests");
    })
}
