//! PostgreSQL going away at run time (the PostgreSQL binaries): a clear 503,
//! cached bearer checks answered only while notices still arrive (Redis),
//! and recovery by itself. Also the
//! relay the outage tests cut (Redis's are in `with_redis.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::helpers::{Backend, Deployment, PASSWORD, TestApp, backend};

/// A TCP relay to a server that the test can cut and restore on the same
/// port, or freeze.
pub(crate) struct Relay {
    pub(crate) port: u16,
    task: Option<JoinHandle<()>>,
    /// How many times the relay was frozen: a connection freezes when this
    /// passes the count at its accept.
    freezes: tokio::sync::watch::Sender<u64>,
    /// Whether connections accepted from now on are held open and passed
    /// nothing (see [`Relay::go_dark`]).
    dark: Arc<AtomicBool>,
    /// Bytes passed either way on every connection so far.
    moved: Arc<AtomicU64>,
}

/// Copies `from` to `to` until either ends, counting the bytes in `moved`;
/// then closes `to`'s side for writing, as `copy_bidirectional` does.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    moved: &AtomicU64,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    while let Ok(read @ 1..) = from.read(&mut buffer).await {
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
        moved.fetch_add(read as u64, Ordering::Relaxed);
    }
    let _ = to.shutdown().await;
}

/// `host:port` of a URL such as `redis://127.0.0.1:6379/0`.
pub(crate) fn authority(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap();
    authority.rsplit('@').next().unwrap().to_owned()
}

impl Relay {
    pub(crate) async fn start_to(port: u16, target: String) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (freezes, frozen) = tokio::sync::watch::channel(0u64);
        let moved = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&moved);
        let dark = Arc::new(AtomicBool::new(false));
        let gone_dark = Arc::clone(&dark);
        let task = tokio::spawn(async move {
            // Dropping the set (when the task is aborted) cuts every connection.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let target = target.clone();
                let mut frozen = frozen.clone();
                let at_accept = *frozen.borrow_and_update();
                let moved = Arc::clone(&counted);
                if gone_dark.load(Ordering::SeqCst) {
                    // Accepted (as the kernel does for a stopped process),
                    // then nothing.
                    connections.spawn(async move {
                        let _held = inbound;
                        std::future::pending::<()>().await;
                    });
                    continue;
                }
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let (mut from_client, mut to_client) = inbound.split();
                        let (mut from_server, mut to_server) = outbound.split();
                        let relayed = async {
                            tokio::join!(
                                pump(&mut from_client, &mut to_server, &moved),
                                pump(&mut from_server, &mut to_client, &moved),
                            )
                        };
                        let froze = tokio::select! {
                            _ = relayed => false,
                            frozen = frozen.wait_for(|freezes| *freezes > at_accept) => frozen.is_ok(),
                        };
                        if froze {
                            // Both sockets stay open and nothing passes: no
                            // answer, no close, as from a host gone dark.
                            std::future::pending::<()>().await;
                        }
                    }
                });
            }
        });
        Self {
            port,
            task: Some(task),
            freezes,
            dark,
            moved,
        }
    }

    /// A server that stopped (a process stopped, a host whose traffic is
    /// dropped): every open connection freezes at once, and connections
    /// made later are accepted but answered nothing.
    #[allow(
        dead_code,
        reason = "used by with_redis.rs, in the api_redis binary only"
    )]
    pub(crate) fn go_dark(&self) {
        self.dark.store(true, Ordering::SeqCst);
        self.freezes.send_modify(|freezes| *freezes += 1);
    }

    /// Stops every open connection in its tracks, open: nothing more
    /// passes either way, and nothing is closed. Connections made later
    /// pass as before (a failed-over server at the same address).
    ///
    /// It waits first for a moment when nothing has passed for a while
    /// (at most a few seconds): a freeze between the two pings that end a
    /// released PostgreSQL connection's use holds that connection's slot of
    /// the pool until the kernel gives up. The first ping is Sesame's, and
    /// bounded; the second is sqlx's own (sqlx-core 0.8.6,
    /// `Floating::return_to_pool`), which nothing bounds (upstream
    /// transact-rs/sqlx#4349). Sesame cannot reach it, so the tests leave
    /// that window out; README's "Running several nodes" says so.
    pub(crate) async fn freeze(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let before = self.moved.load(Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(300)).await;
            if self.moved.load(Ordering::Relaxed) == before || Instant::now() > deadline {
                break;
            }
        }
        self.freezes.send_modify(|freezes| *freezes += 1);
    }

    pub(crate) fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

pub(crate) async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    // Generous: the whole suite shares two cores with PostgreSQL.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An application whose database connections pass a relay the test can
/// cut; with the relay and the database's `host:port`.
async fn app_behind_a_relay() -> (TestApp, Relay, String) {
    app_behind_a_relay_with(|_| {}).await
}

async fn app_behind_a_relay_with(
    configure: impl FnOnce(&mut sesame::config::RawConfig),
) -> (TestApp, Relay, String) {
    let deployment = Deployment::new().await;
    let mut raw = sesame::config::RawConfig::default();
    deployment.apply(&mut raw);
    let database_url = raw.database_url.clone().unwrap();
    let target = authority(&database_url);
    let relay = Relay::start_to(0, target.clone()).await;
    let relayed = database_url.replacen(&target, &format!("127.0.0.1:{}", relay.port), 1);
    let app = TestApp::spawn_in(deployment, |c| {
        c.database_url = Some(relayed);
        c.database.connect_timeout = 1;
        configure(c);
    })
    .await;
    (app, relay, target)
}

/// A database that goes silent (no answer, no close: a host powered off,
/// a network cut, a failed-over primary whose address moved to a new
/// server) does not hold the pool's connections until the operating system
/// gives up on them (some 15 minutes): requests get their 503 at
/// `http.request_timeout`, the silent connections are dropped, and the node
/// serves again through new ones as soon as the server at that address
/// answers. A pool of two: two silent connections held would stop it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_database_is_given_up_and_the_pool_recovers() {
    let (app, relay, _) = app_behind_a_relay_with(|c| {
        c.database.pool_size = 2;
        c.database.statement_timeout = 1;
        c.http.request_timeout = 2;
    })
    .await;
    app.create_user("alice").await;
    // Both connections open, and in the pool.
    let (first, second) = tokio::join!(app.login("alice", PASSWORD), app.login("alice", PASSWORD));
    assert_eq!(
        (first.status(), second.status()),
        (StatusCode::OK, StatusCode::OK)
    );

    relay.freeze().await;
    let started = Instant::now();
    let stalled = app.login("alice", PASSWORD).await;
    assert_eq!(stalled.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "a 503 at http.request_timeout: {:?}",
        started.elapsed()
    );
    eventually("logins work again through new connections", async || {
        app.login("alice", PASSWORD).await.status() == StatusCode::OK
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_a_503_and_the_pool_recovers() {
    let (app, mut relay, target) = app_behind_a_relay().await;
    let port = relay.port;
    let alice = app.create_user("alice").await;
    app.core
        .set_quota(
            alice.id,
            Some(100),
            None,
            &sesame::core::roles::Actor::Operator,
        )
        .await
        .unwrap();
    let grant = app.login_ok("alice").await;
    let token = grant["access_token"].as_str().unwrap().to_owned();
    assert_eq!(app.me_status(&token).await, StatusCode::OK);
    app.core.flush_api_calls().await.unwrap();

    relay.cut();
    match backend() {
        // Notices still arrive through Redis: the node's caches still
        // answer a bearer call they vouched for (the manual clock keeps them
        // within sessions.cache_ttl), and the quota its count held here,
        // though a second old (it would be read again, were the store there).
        Backend::PostgresRedis => {
            app.clock.advance(1);
            assert_eq!(app.me_status(&token).await, StatusCode::OK);
        }
        // Notices travelled through PostgreSQL too: once the node knows it
        // may miss some, it trusts no cached answer, and says so with a 503.
        _ => {
            eventually("the node stops trusting its caches", async || {
                !app.core.caches_trusted()
            })
            .await;
            assert_eq!(app.me_status(&token).await, StatusCode::SERVICE_UNAVAILABLE);
        }
    }
    // Readiness names the database.
    let ready = reqwest::get(app.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(ready["failing"], serde_json::json!(["database"]), "{ready}");
    // Readiness is public: not the driver's error (host names, users).
    assert!(
        ready["checks"]["database"] == "the database failed"
            || ready["checks"]["database"] == "no answer within 1000 ms",
        "{ready}"
    );
    let started = Instant::now();
    let refused = app.login("alice", PASSWORD).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key("retry-after"));
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "busy");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    let _relay = Relay::start_to(port, target).await;
    eventually("logins work again once the database is back", async || {
        app.login("alice", PASSWORD).await.status() == StatusCode::OK
    })
    .await;
    assert_eq!(
        reqwest::get(app.url("/readyz")).await.unwrap().status(),
        StatusCode::OK
    );
}

/// The OAuth face during a database outage: a token that may well be good
/// gets `temporarily_unavailable` (retry), never `invalid_token` (throw it
/// away).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oauth_face_says_retry_during_a_database_outage() {
    let (app, mut relay, _) = app_behind_a_relay().await;
    app.create_user_full("alice", Some("alice@example.com"), None, &[])
        .await;
    let secret = crate::oidc::clients(&app).await;
    let tokens: serde_json::Value = crate::oidc::token(
        &app,
        Some(("web", &secret)),
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", PASSWORD),
            ("scope", "openid profile"),
        ],
    )
    .await
    .json()
    .await
    .unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        crate::oidc::userinfo(&app, &access).await.status(),
        StatusCode::OK
    );

    relay.cut();
    let answer = crate::oidc::userinfo(&app, &access).await;
    match backend() {
        // The caches still vouch for the session (notices arrive by Redis).
        Backend::PostgresRedis => assert_eq!(answer.status(), StatusCode::OK),
        _ => {
            eventually("the node stops trusting its caches", async || {
                !app.core.caches_trusted()
            })
            .await;
            let answer = crate::oidc::userinfo(&app, &access).await;
            assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert!(answer.headers().contains_key("retry-after"));
            let body: serde_json::Value = answer.json().await.unwrap();
            assert_eq!(body["error"], "temporarily_unavailable", "{body}");
        }
    }
}

/// `/readyz` is public: probes that arrive while a check of the database
/// runs take its answer instead of each running one, so that a flood of
/// probes holds at most one of the pool's connections. Here the check is
/// held up by a lock on the table it reads, while forty probes arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_probes_at_once_share_one_check() {
    use sqlx::Connection;
    let deployment = Deployment::new().await;
    let mut raw = sesame::config::RawConfig::default();
    deployment.apply(&mut raw);
    let app = TestApp::spawn_in(deployment, |_| {}).await;
    let mut locker = sqlx::PgConnection::connect(&raw.database_url.unwrap())
        .await
        .unwrap();
    const CHECKS: &str = "sesame_store_operation_duration_seconds_count{operation=\"role_names\"}";
    let checks =
        async || crate::helpers::sample(&crate::helpers::scrape(&app).await, CHECKS).unwrap_or(0.0);
    let before = checks().await;

    let mut lock = locker.begin().await.unwrap();
    sqlx::query("LOCK TABLE roles IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let probes: Vec<_> = (0..40)
        .map(|_| tokio::spawn(reqwest::get(app.url("/readyz"))))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    lock.commit().await.unwrap();
    for probe in probes {
        assert_eq!(probe.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    let made = checks().await - before;
    assert!((1.0..=3.0).contains(&made), "40 probes made {made} checks");
}
