//! Sesame's benchmark: one command builds the release binary, starts it on a
//! fresh SQLite database, drives it from 127.0.0.1 with bounded runs, and
//! prints one table in which every row sits next to a reference measured in
//! the same run (the machine is shared and noisy; ratios are what count).
//!
//! Usage: `cargo run --release -p sesame-bench -- [--duration SECONDS] [--only GROUPS]
//! [--database-url URL | --postgres] [--redis-url URL | --redis]`
//!
//! - `--only login,refresh` runs some groups of rows, with their references,
//!   while working on one target.
//! - `--database-url URL` names a PostgreSQL *server*: the harness creates a
//!   fresh database on it for the run, starts a second Sesame on it, measures
//!   login, `GET /v1/me` and refresh there in the same rounds as the SQLite
//!   rows (one Sesame driven at a time), and drops the database at the end.
//!   `--postgres` is the local server, `postgres://postgres@127.0.0.1:5432/test`.
//! - `--redis-url URL` gives that second Sesame Redis, under a fresh key
//!   prefix; `--redis` is `redis://127.0.0.1:6379`.

mod argon;
mod cpu;
mod load;
mod report;
mod server;
mod tls;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request};

use load::{Fixed, Outcome, RefreshChain, Target, drive, once};
use report::Report;
use sesame::store::postgres::testing::{DEFAULT_URL as LOCAL_POSTGRES, TempDatabase};

const USERNAME: &str = "bench";
const PASSWORD: &str = "bench password 1";
const FLOOD_CONNECTIONS: usize = 600;
/// Rounds in which references and the rows compared with them alternate.
const ROUNDS: u32 = 3;

/// Groups of rows `--only` can pick; each brings the reference its rows are compared with.
const GROUPS: [&str; 8] = [
    "login", "me", "authz", "refresh", "flood", "import", "metrics", "tls",
];
/// The groups that have PostgreSQL rows.
const POSTGRES_GROUPS: [&str; 3] = ["login", "me", "refresh"];

/// The local Redis `--redis` stands for.
const LOCAL_REDIS: &str = "redis://127.0.0.1:6379";

struct Options {
    duration: Duration,
    /// A PostgreSQL server (a fresh database is created on it for the run).
    database_url: Option<String>,
    /// Redis for the PostgreSQL process.
    redis_url: Option<String>,
    only: Option<Vec<String>>,
}

impl Options {
    fn wants(&self, group: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|g| g == group))
    }
}

const USAGE: &str = "sesame-bench [--duration SECONDS] [--only GROUPS] \
[--database-url URL | --postgres] [--redis-url URL | --redis]";

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        duration: Duration::from_secs(5),
        database_url: None,
        redis_url: None,
        only: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--duration" => {
                let seconds: u64 = args.next().context("--duration needs seconds")?.parse()?;
                options.duration = Duration::from_secs(seconds.clamp(1, 60));
            }
            "--database-url" => {
                let url = args.next().context("--database-url needs a URL")?;
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    bail!(
                        "--database-url: a PostgreSQL server URL, postgres://USER@HOST:PORT/DATABASE"
                    );
                }
                options.database_url = Some(url);
            }
            "--postgres" => options.database_url = Some(LOCAL_POSTGRES.into()),
            "--redis-url" => {
                let url = args.next().context("--redis-url needs a URL")?;
                if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                    bail!("--redis-url: a Redis URL, redis://HOST:PORT");
                }
                options.redis_url = Some(url);
            }
            "--redis" => options.redis_url = Some(LOCAL_REDIS.into()),
            "--help" | "-h" => {
                println!(
                    "usage: {USAGE}\ngroups: {}; bench/README.md says what each row measures",
                    GROUPS.join(",")
                );
                std::process::exit(0);
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
            other => bail!("unknown option {other}; usage: {USAGE}"),
        }
    }
    if options.redis_url.is_some() && options.database_url.is_none() {
        bail!(
            "--redis-url / --redis: Redis is for the PostgreSQL process; add --database-url URL or --postgres"
        );
    }
    Ok(options)
}

fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("bare-axum") {
        return tokio::runtime::Runtime::new()?.block_on(server::serve_bare_axum());
    }
    let options = options()?;
    if let Some(url) = &options.database_url {
        // TempDatabase creates its database on the server this names.
        // SAFETY: no other thread exists yet (the runtime is built below).
        unsafe { std::env::set_var("SESAME_TEST_POSTGRES_URL", url) };
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(options))
}

/// An export file of `accounts` accounts with the same bcrypt hash (cost 10,
/// PHP's `password_hash` default): what a PHP system's users look like.
fn write_bcrypt_export(path: &std::path::Path, accounts: u64) -> anyhow::Result<()> {
    use std::io::Write;
    const HASH: &str = "$2y$10$.vGA1O9wmRjrwAVXD98HNOgsNpDczlqm3Jq7KnEd1rVAGv3Fykk1a";
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(
        out,
        r#"{{"format": "sesame-export", "version": 1, "exported_at": "2026-01-01T00:00:00Z"}}"#
    )?;
    for id in 1..=accounts {
        writeln!(
            out,
            r#"{{"type": "account", "id": {id}, "username": "user{id}", "email": "user{id}@example.com", "password_hash": "{HASH}", "created_at": 1700000000}}"#
        )?;
    }
    out.flush()?;
    Ok(())
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

/// One string field of each grant (its access or refresh token).
fn field(grants: &[serde_json::Value], name: &str) -> Vec<String> {
    grants
        .iter()
        .filter_map(|g| g[name].as_str().map(str::to_owned))
        .collect()
}

/// `n` workers' states from `tokens`, reusing them round-robin.
fn spread(tokens: &[String], n: usize) -> Vec<String> {
    (0..n).map(|i| tokens[i % tokens.len()].clone()).collect()
}

/// `GET /v1/me` at 64 connections (with the access tokens of `grants`)
/// and login at 32 on two servers of one database, in the same rounds, the
/// one going first alternating from round to round so that neither always
/// runs on the other's warm (or hot) machine: `GET /v1/me` on `a` and on
/// `b`, login on `a` and on `b`.
async fn side_by_side(
    a: Target,
    b: Target,
    grants: &[serde_json::Value],
    slice: Duration,
    login: &Arc<Fixed>,
) -> [Outcome; 4] {
    let tokens = field(grants, "access_token");
    let me = Arc::new(Fixed {
        method: Method::GET,
        path: "/v1/me".into(),
        body: None,
        bearer: true,
    });
    let [mut me_a, mut me_b, mut login_a, mut login_b]: [Outcome; 4] = Default::default();
    for round in 0..ROUNDS {
        let order = if round % 2 == 0 {
            [(&a, true), (&b, false)]
        } else {
            [(&b, false), (&a, true)]
        };
        for (target, is_a) in order {
            let outcome = drive(target.clone(), spread(&tokens, 64), slice, me.clone()).await;
            if is_a { &mut me_a } else { &mut me_b }.append(outcome);
        }
        for (target, is_a) in order {
            let outcome = drive(
                target.clone(),
                vec![String::new(); 32],
                slice,
                login.clone(),
            )
            .await;
            if is_a { &mut login_a } else { &mut login_b }.append(outcome);
        }
    }
    [me_a, me_b, login_a, login_b]
}

/// The second deployment: a fresh database on the PostgreSQL server (and a
/// fresh Redis key prefix), dropped with this value.
struct Postgres {
    /// Dropped (with this value) only after the server on it has stopped:
    /// `run` stops it first, and on an early return the server, declared
    /// later, is dropped first.
    database: TempDatabase,
    /// Redis URL and key prefix, when the run has Redis.
    redis: Option<(String, String)>,
    data: tempfile::TempDir,
}

impl Postgres {
    async fn create(options: &Options) -> anyhow::Result<Self> {
        let database = TempDatabase::create()
            .await
            .map_err(|reason| anyhow!("--database-url: {reason}"))?;
        let mut redis = None;
        if let Some(url) = &options.redis_url {
            let address = redis_address(url);
            tokio::net::TcpStream::connect(&address)
                .await
                .with_context(|| format!("--redis-url: no Redis at {address}"))?;
            // A fresh prefix, so that no state of an earlier run is seen.
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis();
            let prefix = format!("sesame-bench-{stamp}-{}:", std::process::id());
            redis = Some((url.clone(), prefix));
        }
        Ok(Self {
            database,
            redis,
            data: tempfile::tempdir()?,
        })
    }

    /// "PostgreSQL" or "PostgreSQL + Redis", the label of its rows.
    fn label(&self) -> &'static str {
        if self.redis.is_some() {
            "PostgreSQL + Redis"
        } else {
            "PostgreSQL"
        }
    }

    /// Sesame's environment for this deployment (CLI and server alike).
    fn env(&self) -> Vec<(&str, &str)> {
        let mut env = vec![("SESAME_DATABASE_URL", self.database.url.as_str())];
        if let Some((url, prefix)) = &self.redis {
            env.push(("SESAME_REDIS_URL", url));
            env.push(("SESAME_REDIS__KEY_PREFIX", prefix));
        }
        env
    }
}

/// `host:port` of a Redis URL (`redis[s]://[user:password@]host[:port][/db]`).
fn redis_address(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    let has_port = host
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
        && !host.ends_with(']');
    if has_port {
        host.to_owned()
    } else {
        format!("{host}:6379")
    }
}

async fn run(options: Options) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(2);
    let d = options.duration;
    let postgres = if options.database_url.is_some()
        && POSTGRES_GROUPS.iter().any(|group| options.wants(group))
    {
        Some(Postgres::create(&options).await?)
    } else {
        None
    };
    eprintln!("building the release binary …");
    let binary = server::build_sesame()?;
    let mut report = Report::new(cores, d, postgres.as_ref().map(|pg| pg.label().to_owned()));

    eprintln!("sesame: start …");
    let data = tempfile::tempdir()?;
    server::sesame_cli(
        &binary,
        data.path(),
        &[],
        &["user", "add", "--username", USERNAME, "--password-stdin"],
        &format!("{PASSWORD}\n"),
    )?;
    let (first, first_start) = server::start_sesame(&binary, data.path(), &[])?;
    first.stop();
    let (sesame, restart) = server::start_sesame(&binary, data.path(), &[])?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = sesame.rss_mib();
    report.start(first_start, restart, idle_rss);

    // The PostgreSQL process is started after the SQLite one's start-up and
    // idle figures, and then idles whenever the SQLite one is driven (and
    // the other way round): one Sesame is driven at a time.
    let pg_sesame = match &postgres {
        Some(pg) => {
            eprintln!("sesame on {}: start …", pg.label());
            server::sesame_cli(
                &binary,
                pg.data.path(),
                &pg.env(),
                &["user", "add", "--username", USERNAME, "--password-stdin"],
                &format!("{PASSWORD}\n"),
            )?;
            Some(server::start_sesame(&binary, pg.data.path(), &pg.env())?.0)
        }
        None => None,
    };
    let pg_addr = pg_sesame.as_ref().map(|s| s.addr);
    // Where the rows send requests, each with its server's CPU time read around it.
    let target = sesame.target(false);
    let pg_target = pg_sesame.as_ref().map(|s| s.target(true));

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
        let single = argon::rate(argon::Implementation::SesameKernel, cost, 1, d);
        let rustcrypto = argon::rate(argon::Implementation::RustReusingMemory, cost, cores, d);
        let raw_alloc = argon::rate(argon::Implementation::RustAllocating, cost, cores, d);
        let raw_c = argon::rate(argon::Implementation::CReference, cost, cores, d);
        eprintln!("sesame: login, {ROUNDS} rounds interleaved with raw argon2id …");
        let (mut raw, mut login4, mut login32) = (0.0, Outcome::default(), Outcome::default());
        let (mut pg4, mut pg32) = (Outcome::default(), Outcome::default());
        for _ in 0..ROUNDS {
            raw += argon::rate(argon::Implementation::SesameKernel, cost, cores, slice)
                / f64::from(ROUNDS);
            login4
                .append(drive(target.clone(), vec![String::new(); 4], slice, login.clone()).await);
            if let Some(pg) = &pg_target {
                pg4.append(drive(pg.clone(), vec![String::new(); 4], slice, login.clone()).await);
            }
            login32.append(
                drive(
                    target.clone(),
                    vec![String::new(); 32],
                    slice,
                    login.clone(),
                )
                .await,
            );
            if let Some(pg) = &pg_target {
                pg32.append(drive(pg.clone(), vec![String::new(); 32], slice, login.clone()).await);
            }
        }
        report.argon(single, raw, rustcrypto, raw_alloc, raw_c);
        let pg = pg_addr.map(|_| (&mut pg4, &mut pg32));
        report.login(&mut login4, &mut login32, pg, raw, single);
    }

    let me = |bearer| {
        Arc::new(Fixed {
            method: Method::GET,
            path: "/v1/me".into(),
            body: None,
            bearer,
        })
    };
    let authz = Arc::new(Fixed {
        method: Method::GET,
        path: "/v1/authz".into(),
        body: None,
        bearer: true,
    });
    if options.wants("me") || options.wants("authz") || options.wants("refresh") {
        let bare = server::start_bare_axum()?;
        let bare_target = bare.target(false);
        let access_tokens = |addr| async move {
            Ok::<_, anyhow::Error>(field(&grants(addr, 16).await?, "access_token"))
        };
        let chains = |addr, n| async move {
            Ok::<_, anyhow::Error>(field(&grants(addr, n).await?, "refresh_token"))
        };
        let tokens = access_tokens(sesame.addr).await?;
        let mut chains16 = chains(sesame.addr, 16).await?;
        let mut chains64 = chains(sesame.addr, 64).await?;
        let (mut pg_tokens, mut pg_chains16, mut pg_chains64) =
            (Vec::new(), Vec::new(), Vec::new());
        if let Some(addr) = pg_addr {
            pg_tokens = access_tokens(addr).await?;
            pg_chains16 = chains(addr, 16).await?;
            pg_chains64 = chains(addr, 64).await?;
        }
        let mut bare16 = Outcome::default();
        let mut bare64 = Outcome::default();
        let (mut me16, mut me64) = (Outcome::default(), Outcome::default());
        let mut authz64 = Outcome::default();
        let (mut refresh16, mut refresh64) = (Outcome::default(), Outcome::default());
        let (mut pg_me16, mut pg_me64) = (Outcome::default(), Outcome::default());
        let (mut pg_refresh16, mut pg_refresh64) = (Outcome::default(), Outcome::default());
        eprintln!("bare axum, GET /v1/me, GET /v1/authz, refresh: {ROUNDS} rounds …");
        for _ in 0..ROUNDS {
            for (bare_row, workers) in [(&mut bare16, 16), (&mut bare64, 64)] {
                let states = vec![String::new(); workers];
                bare_row.append(drive(bare_target.clone(), states, slice, me(false)).await);
            }
            if options.wants("me") {
                me16.append(drive(target.clone(), spread(&tokens, 16), slice, me(true)).await);
                if let Some(pg) = &pg_target {
                    pg_me16
                        .append(drive(pg.clone(), spread(&pg_tokens, 16), slice, me(true)).await);
                }
                me64.append(drive(target.clone(), spread(&tokens, 64), slice, me(true)).await);
                if let Some(pg) = &pg_target {
                    pg_me64
                        .append(drive(pg.clone(), spread(&pg_tokens, 64), slice, me(true)).await);
                }
            }
            if options.wants("authz") {
                authz64
                    .append(drive(target.clone(), spread(&tokens, 64), slice, authz.clone()).await);
            }
            if options.wants("refresh") {
                refresh16
                    .append(drive(target.clone(), chains16, slice, Arc::new(RefreshChain)).await);
                chains16 = refresh16.states.clone();
                if let Some(pg) = &pg_target {
                    pg_refresh16.append(
                        drive(pg.clone(), pg_chains16, slice, Arc::new(RefreshChain)).await,
                    );
                    pg_chains16 = pg_refresh16.states.clone();
                }
                refresh64
                    .append(drive(target.clone(), chains64, slice, Arc::new(RefreshChain)).await);
                chains64 = refresh64.states.clone();
                if let Some(pg) = &pg_target {
                    pg_refresh64.append(
                        drive(pg.clone(), pg_chains64, slice, Arc::new(RefreshChain)).await,
                    );
                    pg_chains64 = pg_refresh64.states.clone();
                }
            }
        }
        bare.stop();
        report.bare(&mut bare16, &mut bare64);
        if options.wants("me") {
            let pg = pg_addr.map(|_| (&mut pg_me16, &mut pg_me64));
            report.me(&mut me16, &mut me64, &bare16, &bare64, pg);
        }
        if options.wants("authz") {
            report.authz(&mut authz64, &bare64);
        }
        if options.wants("refresh") {
            let pg = pg_addr.map(|_| (&mut pg_refresh16, &mut pg_refresh64));
            report.refresh(&mut refresh16, &mut refresh64, &bare16, &bare64, pg);
        }
    }

    // What recording metrics costs: the same binary on the same database
    // with `metrics.enabled = false`, interleaved with the one that counts.
    if options.wants("metrics") {
        let (plain, _) = server::start_sesame(
            &binary,
            data.path(),
            &[("SESAME_METRICS__ENABLED", "false")],
        )?;
        eprintln!("metrics on and off: GET /v1/me c=64 and login c=32, {ROUNDS} rounds …");
        let [mut me_on, mut me_off, mut login_on, mut login_off] = side_by_side(
            target.clone(),
            plain.target(false),
            &grants(sesame.addr, 16).await?,
            slice,
            &login,
        )
        .await;
        plain.stop();
        report.metrics_cost(&mut me_on, &mut me_off, &mut login_on, &mut login_off);
    }

    // HTTPS: a second process on the same database serving TLS with a
    // certificate made for the run, interleaved with the plain one; the
    // load generator keeps its connections (the handshake is not measured).
    if options.wants("tls") {
        let certificate = tls::RunCertificate::create()?;
        let env = certificate.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (https, _) = server::start_sesame(&binary, data.path(), &env)?;
        let secure = Target {
            tls: Some(certificate.connector.clone()),
            ..https.target(false)
        };
        eprintln!("HTTPS and plain HTTP: GET /v1/me c=64 and login c=32, {ROUNDS} rounds …");
        let [mut me_tls, mut me_plain, mut login_tls, mut login_plain] = side_by_side(
            secure,
            target.clone(),
            &grants(sesame.addr, 16).await?,
            slice,
            &login,
        )
        .await;
        https.stop();
        report.tls(&mut me_tls, &mut me_plain, &mut login_tls, &mut login_plain);
    }

    if options.wants("import") {
        eprintln!("sesame import: 10,000 and 100,000 bcrypt accounts …");
        let mut runs = Vec::new();
        for accounts in [10_000, 100_000] {
            let dir = tempfile::tempdir()?;
            let file = dir.path().join("users.jsonl");
            write_bcrypt_export(&file, accounts)?;
            let data = tempfile::tempdir()?;
            let (elapsed, peak) = server::import_file(&binary, data.path(), &file)?;
            runs.push((accounts, elapsed, peak));
        }
        report.import(&runs);
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
    if let Some(pg_sesame) = pg_sesame {
        pg_sesame.stop();
    }
    // Drops the run's database (and its data directory).
    drop(postgres);

    report.print();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::redis_address;

    #[test]
    fn the_redis_address_is_host_and_port() {
        assert_eq!(redis_address("redis://127.0.0.1:6379"), "127.0.0.1:6379");
        assert_eq!(redis_address("redis://localhost"), "localhost:6379");
        assert_eq!(redis_address("rediss://u:p@h:7000/2"), "h:7000");
        assert_eq!(redis_address("redis://[::1]"), "[::1]:6379");
        assert_eq!(redis_address("redis://[::1]:6380/0"), "[::1]:6380");
    }
}
