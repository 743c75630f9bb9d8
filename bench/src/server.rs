//! Starting and watching the servers under test: Sesame (the release
//! binary) and a bare axum handler (this binary, re-run as `bare-axum`).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::cpu::Probe;
use crate::load::Target;

/// A server process.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Server {
    /// Resident memory now, MiB.
    pub fn rss_mib(&self) -> f64 {
        status_kib(self.child.id(), "VmRSS:") / 1024.0
    }

    /// Where a run sends requests, with this process's CPU time read
    /// around it (and the local PostgreSQL's and Redis's, with `services`).
    pub fn target(&self, services: bool) -> Target {
        Target {
            addr: self.addr,
            tls: None,
            probe: Some(Probe {
                pid: self.child.id(),
                services,
            }),
        }
    }

    /// Peak resident memory since start, MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        status_kib(self.child.id(), "VmHWM:") / 1024.0
    }

    /// Stops the process with SIGTERM and waits for it.
    pub fn stop(self) {
        drop(self);
    }
}

/// A server is stopped when dropped, so that a run that fails half-way
/// leaves no process behind (and none on a database about to be dropped).
impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn status_kib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(f64::NAN)
}

/// A free loopback port.
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Polls `GET /healthz` until it answers 200; returns how long that took from `since`.
/// Gives up at once if `child` (the process that should answer) exits.
pub fn wait_healthy(
    addr: SocketAddr,
    since: Instant,
    child: &mut Child,
) -> anyhow::Result<Duration> {
    use std::io::{Read, Write};
    let deadline = since + Duration::from_secs(30);
    loop {
        if let Ok(mut stream) = std::net::TcpStream::connect(addr) {
            let _ = stream.write_all(
                b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            );
            let mut answer = String::new();
            // An HTTPS server tells plain HTTP to use https://: it is up.
            let https_only =
                |answer: &str| answer.starts_with("HTTP/1.1 400") && answer.contains("HTTPS only");
            if stream.read_to_string(&mut answer).is_ok()
                && (answer.starts_with("HTTP/1.1 200") || https_only(&answer))
            {
                return Ok(since.elapsed());
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!("the server for {addr} exited ({status}) before answering /healthz");
        }
        if Instant::now() > deadline {
            bail!("no answer from {addr}/healthz");
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// The workspace root (where `cargo build` must run).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds the release binary of Sesame and returns its path.
pub fn build_sesame() -> anyhow::Result<PathBuf> {
    let root = workspace_root();
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--bin", "sesame"])
        .current_dir(&root)
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("cargo build --release failed");
    }
    Ok(root.join("target/release/sesame"))
}

/// `sesame` with the data directory and any further environment (the
/// PostgreSQL URL, Redis and its key prefix): the CLI and the server of one
/// deployment get the same.
fn sesame_command(binary: &Path, data_dir: &Path, extra_env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(binary);
    command
        // The harness's own setting (where `TempDatabase` creates the run's
        // database); Sesame refuses `SESAME_*` variables it does not know.
        .env_remove("SESAME_TEST_POSTGRES_URL")
        .env("SESAME_DATA_DIR", data_dir)
        .env("SESAME_HTTP__DRAIN_SECONDS", "0")
        // The refresh rows turn each chain as fast as the server answers:
        // a session's budget that never runs out, but is still charged.
        .env("SESAME_ABUSE__REFRESH_BURST", "1000000")
        .envs(extra_env.iter().copied());
    command
}

/// `sesame import FILE` into a fresh database in `data_dir`: its wall time
/// and the import process's peak resident memory (MiB), sampled while it runs.
pub fn import_file(binary: &Path, data_dir: &Path, file: &Path) -> anyhow::Result<(Duration, f64)> {
    let started = Instant::now();
    let mut child = sesame_command(binary, data_dir, &[])
        .arg("import")
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start sesame import")?;
    let mut peak = 0.0f64;
    let status = loop {
        let hwm = status_kib(child.id(), "VmHWM:") / 1024.0;
        if hwm.is_finite() {
            peak = peak.max(hwm);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    if !status.success() {
        bail!("sesame import {} failed ({status})", file.display());
    }
    Ok((started.elapsed(), peak))
}

/// Runs a Sesame CLI command against the data directory (and the database
/// `extra_env` names, if any).
pub fn sesame_cli(
    binary: &Path,
    data_dir: &Path,
    extra_env: &[(&str, &str)],
    args: &[&str],
    stdin: &str,
) -> anyhow::Result<()> {
    use std::io::Write;
    let mut child = sesame_command(binary, data_dir, extra_env)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    // A command that fails early closes its stdin unread: its exit status
    // (and what it printed) is the error worth reporting, not the broken pipe.
    let written = child
        .stdin
        .take()
        .context("stdin")?
        .write_all(stdin.as_bytes());
    let status = child.wait()?;
    if !status.success() {
        bail!("sesame {} failed ({status})", args.join(" "));
    }
    written.context("writing to sesame's stdin")?;
    Ok(())
}

/// Starts `sesame serve` on a fresh port; returns it with its start-up time.
pub fn start_sesame(
    binary: &Path,
    data_dir: &Path,
    extra_env: &[(&str, &str)],
) -> anyhow::Result<(Server, Duration)> {
    let addr = free_addr()?;
    let started = Instant::now();
    let child = sesame_command(binary, data_dir, extra_env)
        .args(["serve", "--listen", &addr.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start sesame")?;
    // Stopped again (by drop) if it never answers.
    let mut server = Server { child, addr };
    let took = wait_healthy(addr, started, &mut server.child)?;
    Ok((server, took))
}

/// Starts this binary as the bare axum reference server.
pub fn start_bare_axum() -> anyhow::Result<Server> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("bare-axum")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let addr: SocketAddr = line
        .trim()
        .parse()
        .context("bare-axum did not print its address")?;
    let mut server = Server { child, addr };
    wait_healthy(addr, Instant::now(), &mut server.child)?;
    Ok(server)
}

/// The bare reference: axum returning a small JSON body, nothing else.
pub async fn serve_bare_axum() -> anyhow::Result<()> {
    use axum::Json;
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route(
            "/v1/me",
            get(|| async {
                Json(serde_json::json!({"id": "1", "username": "alice", "status": "active"}))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
