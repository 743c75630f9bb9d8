//! `TestApp`: a running Sesame on a fresh database, with typed helpers.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use sesame::app::Application;
use sesame::config::RawConfig;
use sesame::core::Core;
use sesame::core::accounts::AccountSpec;
use sesame::core::clock::ManualClock;
use sesame::core::domain::{Email, Mobile, Password, Username};
use sesame::store::postgres::testing::TempDatabase;
use sesame::store::{Account, Store};
use std::path::Path;
use tempfile::TempDir;

/// The time the manual clock starts at (2026-01-01T00:00:00Z).
pub const START: i64 = 1_767_225_600;

/// A password that passes the policy.
pub const PASSWORD: &str = "correct horse battery";

/// The real `sesame` binary with cheap hashing, no cache of live sessions
/// (so that changes by another process show at once) and only `env` from
/// the test's environment (a deployment's variables).
pub fn sesame_command(
    env: impl IntoIterator<Item = (&'static str, String)>,
) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_sesame"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env)
        .env("SESAME_PASSWORDS__MEMORY_KIB", "256")
        .env("SESAME_PASSWORDS__ITERATIONS", "1")
        .env("SESAME_SESSIONS__CACHE_TTL", "0")
        // No load balancer to drain: stop at once.
        .env("SESAME_HTTP__DRAIN_SECONDS", "0");
    command
}

/// A port free on 127.0.0.1 a moment ago (for a child process to bind; the
/// probe has to let it go first).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("address")
        .port()
}

/// The tool at `path`, or `None` (skipped, saying so) when it is not
/// installed, which fails on CI (`.ci/run` installs every one).
pub fn installed(path: std::path::PathBuf, what: &str) -> Option<std::path::PathBuf> {
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must provide {what} ({}); see .ci/run",
        path.display()
    );
    eprintln!(
        "skipped: {what} is not installed ({}); see .ci/run",
        path.display()
    );
    None
}

/// One blocking `GET /healthz`, without an HTTP client runtime.
pub fn healthy(address: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(address) else {
        return false;
    };
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    let mut answer = String::new();
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_to_string(&mut answer).is_ok()
        && answer.starts_with("HTTP/1.1 200")
}

/// A `sesame serve` child process on a free port, killed when dropped.
pub struct ServerProcess {
    pub child: std::process::Child,
    pub address: String,
}

impl ServerProcess {
    /// Runs `command` (the `sesame` binary, configured) as `serve` on a free
    /// port, output discarded, and waits until it answers `/healthz`.
    pub fn start(command: std::process::Command) -> Self {
        Self::start_with(command, &[])
    }

    /// [`start`](Self::start) with more options of `serve`.
    pub fn start_with(command: std::process::Command, options: &[&str]) -> Self {
        Self::launch(command, options, std::process::Stdio::null())
    }

    /// [`start`](Self::start), its standard error (the log) written to `log`.
    pub fn start_logged(command: std::process::Command, log: &std::path::Path) -> Self {
        let file = std::fs::File::create(log).expect("log file");
        Self::launch(command, &[], file.into())
    }

    fn launch(
        mut command: std::process::Command,
        options: &[&str],
        stderr: std::process::Stdio,
    ) -> Self {
        use std::process::Stdio;
        let listen = format!("127.0.0.1:{}", free_port());
        let child = command
            .args(["serve", "--listen", &listen])
            .args(options)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("server starts");
        let server = Self {
            child,
            address: format!("http://{listen}"),
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !healthy(&listen) {
            assert!(
                std::time::Instant::now() < deadline,
                "server on {listen} did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// SIGTERM (counters and audit are flushed), then waits for a clean exit.
    pub fn stop(mut self) {
        std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(self.child.wait().expect("exit status").success());
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed when dropped (a test that fails half-way leaves
/// no server running).
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Which backends this test binary runs on: the same tests are compiled
/// into one binary per backend (see `[[test]]` in Cargo.toml), told apart
/// by the binary's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite, failure budgets in memory, no notices (one process).
    Sqlite,
    /// PostgreSQL, budgets in memory per node, notices by LISTEN/NOTIFY.
    Postgres,
    /// PostgreSQL with Redis for budgets and notices.
    PostgresRedis,
}

pub fn backend() -> Backend {
    match env!("CARGO_CRATE_NAME") {
        "api_postgres" => Backend::Postgres,
        "api_redis" => Backend::PostgresRedis,
        _ => Backend::Sqlite,
    }
}

/// The Redis tests use unless `SESAME_TEST_REDIS_URL` names another.
pub fn redis_url() -> String {
    std::env::var("SESAME_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Ends this test binary with a "skipped" line when a server it needs is
/// absent, except on CI (`CI` set), where that is a failure.
fn skip_or_fail(reason: &str) -> ! {
    if std::env::var_os("CI").is_some() {
        panic!("{reason} (CI never skips the PostgreSQL and Redis suites)");
    }
    eprintln!(
        "skipped: {reason}; the {} suite needs it (see README: Tests)",
        env!("CARGO_CRATE_NAME")
    );
    std::process::exit(0);
}

/// One deployment's storage: a data directory, and for the server backends
/// a fresh PostgreSQL database and a fresh Redis key prefix. Several
/// `TestApp`s (or `sesame` processes) on one deployment share its state.
pub struct Deployment {
    dir: TempDir,
    database: Option<TempDatabase>,
    redis_prefix: Option<String>,
}

impl Deployment {
    pub async fn new() -> Arc<Self> {
        let database = match backend() {
            Backend::Sqlite => None,
            Backend::Postgres | Backend::PostgresRedis => match TempDatabase::create().await {
                Ok(database) => Some(database),
                Err(reason) => skip_or_fail(&reason),
            },
        };
        let redis_prefix = match backend() {
            Backend::PostgresRedis => {
                let url = redis_url();
                let address = url
                    .trim_start_matches("redis://")
                    .split(['/', '?'])
                    .next()
                    .unwrap_or_default()
                    .rsplit('@')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                if tokio::net::TcpStream::connect(&address).await.is_err() {
                    skip_or_fail(&format!("no Redis at {address}"));
                }
                Some(format!("sesame-test-{}:", uuid::Uuid::new_v4().simple()))
            }
            _ => None,
        };
        Arc::new(Self {
            dir: tempfile::tempdir().expect("temp dir"),
            database,
            redis_prefix,
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The prefix of this deployment's keys in Redis, when it has Redis
    /// (read by the cluster tests, which the SQLite binary has not).
    #[allow(dead_code)]
    pub fn redis_prefix(&self) -> Option<&str> {
        self.redis_prefix.as_deref()
    }

    /// Points a configuration at this deployment.
    pub fn apply(&self, raw: &mut RawConfig) {
        raw.data_dir = self.path().to_path_buf();
        if let Some(database) = &self.database {
            raw.database_url = Some(database.url.clone());
            raw.database.pool_size = 4;
        }
        if let Some(prefix) = &self.redis_prefix {
            raw.redis_url = Some(redis_url());
            raw.redis.key_prefix = prefix.clone();
        }
    }

    /// The same, as environment variables for the `sesame` binary.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![("SESAME_DATA_DIR", self.path().display().to_string())];
        if let Some(database) = &self.database {
            env.push(("SESAME_DATABASE_URL", database.url.clone()));
            env.push(("SESAME_DATABASE__POOL_SIZE", "4".into()));
        }
        if let Some(prefix) = &self.redis_prefix {
            env.push(("SESAME_REDIS_URL", redis_url()));
            env.push(("SESAME_REDIS__KEY_PREFIX", prefix.clone()));
        }
        env
    }

    /// Holds this deployment's database as another process might, until
    /// dropped: SQLite's write lock, or PostgreSQL's migration lock (a node
    /// migrating). The database must exist.
    pub async fn hold(&self) -> Held {
        match &self.database {
            None => {
                let conn = rusqlite::Connection::open(self.path().join("sesame.db")).unwrap();
                conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
                Held::Sqlite(conn)
            }
            Some(database) => {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&database.url).await.unwrap();
                sqlx::query("SELECT pg_advisory_lock($1)")
                    .bind(0x5345_5341_4d45_i64)
                    .execute(&mut conn)
                    .await
                    .unwrap();
                Held::Postgres(conn)
            }
        }
    }

    /// The schema version recorded in this deployment's database, after
    /// setting it back to `back_to` when given (as if the database had been
    /// left by an earlier release).
    pub async fn schema_version(&self, back_to: Option<i64>) -> i64 {
        match &self.database {
            None => {
                let conn = rusqlite::Connection::open(self.path().join("sesame.db")).unwrap();
                if let Some(version) = back_to {
                    conn.pragma_update(None, "user_version", version).unwrap();
                }
                conn.pragma_query_value(None, "user_version", |row| row.get(0))
                    .unwrap()
            }
            Some(database) => {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&database.url).await.unwrap();
                if let Some(version) = back_to {
                    sqlx::query("DELETE FROM sesame_migrations WHERE version > $1")
                        .bind(version)
                        .execute(&mut conn)
                        .await
                        .unwrap();
                }
                sqlx::query_scalar("SELECT MAX(version) FROM sesame_migrations")
                    .fetch_one(&mut conn)
                    .await
                    .unwrap()
            }
        }
    }

    /// Whether nothing was ever written to this deployment's database: no
    /// SQLite file, or no table in the PostgreSQL database.
    pub async fn is_untouched(&self) -> bool {
        match &self.database {
            None => !self.path().join("sesame.db").exists(),
            Some(database) => {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&database.url).await.unwrap();
                let tables: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
                )
                .fetch_one(&mut conn)
                .await
                .unwrap();
                tables == 0
            }
        }
    }

    /// The number of rows in `table` of this deployment's database.
    pub async fn rows(&self, table: &str) -> i64 {
        let sql = format!("SELECT count(*) FROM {table}");
        match &self.database {
            None => {
                let conn = rusqlite::Connection::open(self.path().join("sesame.db")).unwrap();
                conn.query_row(&sql, [], |row| row.get(0)).unwrap()
            }
            Some(database) => {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&database.url).await.unwrap();
                sqlx::query_scalar(&sql).fetch_one(&mut conn).await.unwrap()
            }
        }
    }

    /// A store on this deployment's database, opened a second time (as the
    /// CLI or another node would).
    pub async fn open_store(&self) -> Arc<dyn Store> {
        let mut raw = RawConfig::default();
        self.apply(&mut raw);
        let config = raw.validate().expect("valid configuration");
        sesame::app::open_store(&config, sesame::store::Migrate::Apply)
            .await
            .expect("store")
    }
}

/// A database held by [`Deployment::hold`], let go when dropped.
#[allow(dead_code)]
pub enum Held {
    Sqlite(rusqlite::Connection),
    Postgres(sqlx::PgConnection),
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub clock: Arc<ManualClock>,
    pub core: Arc<Core>,
    pub deployment: Arc<Deployment>,
}

/// Cheap hashing so tests stay fast; the parameters are not under test here.
pub fn test_config(deployment: &Deployment) -> RawConfig {
    let mut raw = RawConfig {
        listen: "127.0.0.1:0".into(),
        ..RawConfig::default()
    };
    deployment.apply(&mut raw);
    raw.passwords.memory_kib = 256;
    raw.passwords.iterations = 1;
    raw.passwords.threads = 2;
    raw.metrics.token = Some(METRICS_TOKEN.into());
    raw
}

/// The metrics bearer token of test applications (`metrics.token`).
pub const METRICS_TOKEN: &str = "test-metrics-token-0123456789abcdef";

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(tweak: impl FnOnce(&mut RawConfig)) -> Self {
        Self::spawn_in(Deployment::new().await, tweak).await
    }

    /// Starts an application on an existing deployment (a second node, or a restart).
    pub async fn spawn_in(deployment: Arc<Deployment>, tweak: impl FnOnce(&mut RawConfig)) -> Self {
        let mut raw = test_config(&deployment);
        tweak(&mut raw);
        let config = raw.validate().expect("valid test configuration");
        let clock = Arc::new(ManualClock::new(START));
        let app = Application::build(&config, clock.clone())
            .await
            .expect("application builds");
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let address = format!("{scheme}://{}", app.local_addr());
        let core = app.core();
        tokio::spawn(app.run_until(std::future::pending()));
        let app = Self {
            address,
            client: reqwest::Client::new(),
            clock,
            core,
            deployment,
        };
        app.wait_until_subscribed().await;
        app
    }

    /// On the server backends, a node trusts its caches only once it hears
    /// the other nodes' notices; wait for that so tests see the steady state.
    async fn wait_until_subscribed(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !self.core.caches_trusted() {
            assert!(
                std::time::Instant::now() < deadline,
                "never subscribed to notices"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// A client whose connections come from another loopback address
    /// (127.0.0.2, 127.0.0.3 …), standing for another machine.
    pub fn client_from(&self, ip: &str) -> reqwest::Client {
        reqwest::Client::builder()
            .local_address(ip.parse::<std::net::IpAddr>().expect("ip"))
            .build()
            .expect("client")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// Creates an account directly through the core (as the CLI would).
    pub async fn create_user(&self, username: &str) -> Account {
        self.create_user_full(username, None, None, &[]).await
    }

    pub async fn create_user_full(
        &self,
        username: &str,
        email: Option<&str>,
        mobile: Option<&str>,
        roles: &[&str],
    ) -> Account {
        let spec = AccountSpec {
            username: Username::parse(username).expect("username"),
            email: email.map(|e| Email::parse(e).expect("email")),
            mobile: mobile.map(|m| Mobile::parse(m).expect("mobile")),
            display_name: None,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            max_api_calls: 0,
            password: Password::new_password(PASSWORD).expect("password"),
        };
        self.core
            .create_account(spec, &sesame::core::roles::Actor::Operator)
            .await
            .expect("account created")
    }

    /// Creates an account with a chosen password and roles.
    pub async fn create_with_password(
        &self,
        username: &str,
        password: &str,
        roles: &[&str],
    ) -> Account {
        let spec = AccountSpec {
            username: Username::parse(username).expect("username"),
            email: None,
            mobile: None,
            display_name: None,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            max_api_calls: 0,
            password: Password::new_password(password).expect("password"),
        };
        self.core
            .create_account(spec, &sesame::core::roles::Actor::Operator)
            .await
            .expect("account created")
    }

    /// The deployment's database, opened a second time (as the CLI would).
    pub async fn second_store(&self) -> Arc<dyn Store> {
        self.deployment.open_store().await
    }

    pub async fn post_raw(&self, path: &str, content_type: &str, body: &str) -> Response {
        self.client
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body.to_owned())
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// A login; a failure is counted against its account (which happens
    /// after the answer) by the time this returns.
    pub async fn login(&self, login: &str, password: &str) -> Response {
        let response = self
            .post_json(
                "/v1/login",
                &json!({ "login": login, "password": password }),
            )
            .await;
        self.core.failures_counted().await;
        response
    }

    pub async fn login_on(&self, login: &str, platform: &str) -> Value {
        let response = self
            .post_json(
                "/v1/login",
                &json!({ "login": login, "password": PASSWORD, "platform": platform }),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("json")
    }

    /// Logs in with a password and returns the grant body.
    pub async fn login_ok_with(&self, login: &str, password: &str) -> Value {
        let response = self.login(login, password).await;
        assert_eq!(response.status(), StatusCode::OK, "login of {login} failed");
        response.json().await.expect("json")
    }

    /// Logs in with the test password and returns the grant body.
    pub async fn login_ok(&self, login: &str) -> Value {
        let response = self.login(login, PASSWORD).await;
        assert_eq!(response.status(), StatusCode::OK, "login of {login} failed");
        response.json().await.expect("json")
    }

    pub async fn refresh(&self, refresh_token: &str) -> Response {
        self.post_json("/v1/refresh", &json!({ "refresh_token": refresh_token }))
            .await
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn me_status(&self, token: &str) -> StatusCode {
        self.get("/v1/me", token).await.status()
    }

    pub async fn logout(&self, token: &str, body: Option<Value>) -> Response {
        let request = self.client.post(self.url("/v1/logout")).bearer_auth(token);
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        request.send().await.expect("request sent")
    }
}

/// The token fields of a grant body.
pub fn access(grant: &Value) -> &str {
    grant["access_token"].as_str().expect("access_token")
}

pub fn refresh_token(grant: &Value) -> &str {
    grant["refresh_token"].as_str().expect("refresh_token")
}

/// Decodes a JWT part without verifying it.
pub fn jwt_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).expect("jwt part");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("json")
}

/// Asserts a problem+json response with the given status and code, returning its body.
pub async fn assert_problem(response: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(content_type, "application/problem+json; charset=utf-8");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["code"], code, "unexpected body {body}");
    assert_eq!(body["status"], status.as_u16());
    body
}

/// The value of the sample `name{labels}` (labels exactly as rendered), if any.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().expect("a number"))
        })
}

/// `GET /metrics` with the scraper's token, in the Prometheus text format.
pub async fn scrape(app: &TestApp) -> String {
    scrape_with(&app.client, app).await
}

/// [`scrape`] through `client` (one that trusts the test's HTTPS CA, say).
pub async fn scrape_with(client: &reqwest::Client, app: &TestApp) -> String {
    let response = client
        .get(app.url("/metrics"))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert_eq!(response.headers()["cache-control"], "no-store");
    response.text().await.unwrap()
}
