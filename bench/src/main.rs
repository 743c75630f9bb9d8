//! Sesame's benchmark: one command builds the release binary, starts it on a
//! fresh SQLite database, drives it from 127.0.0.1 with bounded runs, and
//! prints one table in which every row sits next to a reference measured in
//! the same run (the machine is shared and noisy; ratios are what count).
//!
//! Usage: `cargo run --release -p sesame-bench -- [--duration SECONDS] [--only GROUPS]
//! [--database-url URL]` (`--only login,refresh` runs some groups of rows, with their
//! references, while working on one target; `--database-url` is how a PostgreSQL run will be
//! pointed at its database.)

mod argon;
mod load;
mod report;
mod server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request};

use load::{Fixed, Outcome, RefreshChain, drive, once};
use report::Report;

const USERNAME: &str = "bench";
const PASSWORD: &str = "bench password 1";
const FLOOD_CONNECTIONS: usize = 600;
/// Rounds in which references and the rows compared with them alternate.
const ROUNDS: u32 = 3;

/// Groups of rows `--only` can pick; each brings the reference its rows are compared with.
const GROUPS: [&str; 4] = ["login", "me", "refresh", "flood"];

struct Options {
    duration: Duration,
    database_url: Option<String>,
    only: Option<Vec<String>>,
}

impl Options {
    fn wants(&self, group: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|g| g == group))
    }
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        duration: Duration::from_secs(5),
        database_url: None,
        only: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--duration" => {
                let seconds: u64 = args.next().context("--duration needs seconds")?.parse()?;
                options.duration = Duration::from_secs(seconds.clamp(1, 60));
            }
            "--database-url" | "--postgres" => {
                options.database_url = Some(args.next().context("needs a URL")?)
            }
            "--only" => {
                let groups: Vec<String> = args
                    .next()
                    .context("--only needs groups")?
                    .split(',')
                    .map(str::to_owned)
                    .collect();
                if let Some(unknown) = groups.iter().find(|g| !GROUPS.contains(&g.as_str())) {
                    bail!(
                        "--only: unknown group {unknown}; groups are {}",
                        GROUPS.join(",")
                    );
                }
                options.only = Some(groups);
            }
            other => bail!(
                "unknown option {other}; use --duration SECONDS, --only GROUPS or --database-url URL"
            ),
        }
    }
    Ok(options)
}

fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("bare-axum") {
        return tokio::runtime::Runtime::new()?.block_on(server::serve_bare_axum());
    }
    let options = options()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(options))
}

fn login_body() -> String {
    format!(r#"{{"login":"{USERNAME}","password":"{PASSWORD}"}}"#)
}

fn login_request() -> Request<Full<Bytes>> {
    Request::post("/v1/login")
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(login_body())))
        .expect("request")
}

async fn grants(
    addr: std::net::SocketAddr,
    count: usize,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut grants = Vec::with_capacity(count);
    for _ in 0..count {
        let (status, body) = once(addr, login_request()).await?;
        if status != 200 {
            bail!("set-up login failed with {status}");
        }
        grants.push(serde_json::from_slice(&body)?);
    }
    Ok(grants)
}

async fn run(options: Options) -> anyhow::Result<()> {
    if options.database_url.is_some() {
        bail!(
            "--database-url: this build of Sesame supports SQLite only; PostgreSQL rows come with the PostgreSQL store"
        );
    }
    let cores = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(2);
    let d = options.duration;
    eprintln!("building the release binary …");
    let binary = server::build_sesame()?;
    let mut report = Report::new(cores, d);

    eprintln!("sesame: start …");
    let data = tempfile::tempdir()?;
    server::sesame_cli(
        &binary,
        data.path(),
        &["user", "add", "--username", USERNAME, "--password-stdin"],
        &format!("{PASSWORD}\n"),
    )?;
    let (first, first_start) = server::start_sesame(&binary, data.path(), &[])?;
    first.stop();
    let (sesame, restart) = server::start_sesame(&binary, data.path(), &[])?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = sesame.rss_mib();
    report.start(first_start, restart, idle_rss);

    // References are measured in the same run as the rows compared with
    // them, interleaved in rounds (reference, rows, reference, rows, …) so
    // that the drift of a shared machine hits both alike.
    let slice = d / ROUNDS;
    let login = Arc::new(Fixed {
        method: Method::POST,
        path: "/v1/login".into(),
        body: Some(login_body()),
        bearer: false,
    });
    if options.wants("login") {
        eprintln!("raw argon2id (Sesame idle) …");
        let cost = argon::Cost {
            memory_kib: 19456,
            iterations: 2,
        };
        let single = argon::rate(argon::Implementation::RustReusingMemory, cost, 1, d);
        let raw_alloc = argon::rate(argon::Implementation::RustAllocating, cost, cores, d);
        let raw_c = argon::rate(argon::Implementation::CReference, cost, cores, d);
        eprintln!("sesame: login, {ROUNDS} rounds interleaved with raw argon2id …");
        let (mut raw, mut login4, mut login32) = (0.0, Outcome::default(), Outcome::default());
        for _ in 0..ROUNDS {
            raw += argon::rate(argon::Implementation::RustReusingMemory, cost, cores, slice)
                / f64::from(ROUNDS);
            login4.append(drive(sesame.addr, vec![String::new(); 4], slice, login.clone()).await);
            login32.append(drive(sesame.addr, vec![String::new(); 32], slice, login.clone()).await);
        }
        report.argon(single, raw, raw_alloc, raw_c);
        report.login(&mut login4, &mut login32, raw, single);
    }

    let me = |bearer| {
        Arc::new(Fixed {
            method: Method::GET,
            path: "/v1/me".into(),
            body: None,
            bearer,
        })
    };
    if options.wants("me") || options.wants("refresh") {
        let bare = server::start_bare_axum()?;
        let tokens: Vec<String> = grants(sesame.addr, 16)
            .await?
            .iter()
            .filter_map(|g| g["access_token"].as_str().map(str::to_owned))
            .collect();
        let spread = |n: usize| {
            (0..n)
                .map(|i| tokens[i % tokens.len()].clone())
                .collect::<Vec<_>>()
        };
        let chains = |n| async move {
            let grants = grants(sesame.addr, n).await?;
            Ok::<Vec<String>, anyhow::Error>(
                grants
                    .iter()
                    .filter_map(|g| g["refresh_token"].as_str().map(str::to_owned))
                    .collect(),
            )
        };
        let mut chains16 = chains(16).await?;
        let mut chains64 = chains(64).await?;
        let mut bare16 = Outcome::default();
        let mut bare64 = Outcome::default();
        let (mut me16, mut me64) = (Outcome::default(), Outcome::default());
        let (mut refresh16, mut refresh64) = (Outcome::default(), Outcome::default());
        eprintln!("bare axum, GET /v1/me, refresh: {ROUNDS} rounds …");
        for _ in 0..ROUNDS {
            bare16.append(drive(bare.addr, vec![String::new(); 16], slice, me(false)).await);
            bare64.append(drive(bare.addr, vec![String::new(); 64], slice, me(false)).await);
            if options.wants("me") {
                me16.append(drive(sesame.addr, spread(16), slice, me(true)).await);
                me64.append(drive(sesame.addr, spread(64), slice, me(true)).await);
            }
            if options.wants("refresh") {
                refresh16.append(drive(sesame.addr, chains16, slice, Arc::new(RefreshChain)).await);
                chains16 = refresh16.states.clone();
                refresh64.append(drive(sesame.addr, chains64, slice, Arc::new(RefreshChain)).await);
                chains64 = refresh64.states.clone();
            }
        }
        bare.stop();
        report.bare(&mut bare16, &mut bare64);
        if options.wants("me") {
            report.me(&mut me16, &mut me64, &bare16, &bare64);
        }
        if options.wants("refresh") {
            report.refresh(&mut refresh16, &mut refresh64, &bare16, &bare64);
        }
    }

    if options.wants("flood") {
        eprintln!("sesame: {FLOOD_CONNECTIONS}-connection login flood …");
        let flood_started = Instant::now();
        let mut flood = drive(
            sesame.addr,
            vec![String::new(); FLOOD_CONNECTIONS],
            d,
            login,
        )
        .await;
        let flood_peak = sesame.peak_rss_mib();
        let (after, _) = once(sesame.addr, login_request()).await?;
        report.flood(&mut flood, flood_peak, after, flood_started.elapsed());
    }
    sesame.stop();

    report.print();
    Ok(())
}
