//! Redis going away at run time (the `api_redis` binary; the others have no
//! Redis and return at once): logins keep working with per-node budgets,
//! never failing open for authentication; caches are bypassed while notices
//! may be missed; everything resumes by itself when Redis is back.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::helpers::{Backend, Deployment, PASSWORD, TestApp, backend, redis_url};

/// A TCP relay to a server that the test can cut and restore on the same port.
struct Relay {
    port: u16,
    task: Option<JoinHandle<()>>,
}

/// `host:port` of a URL such as `redis://127.0.0.1:6379/0`.
fn authority(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap();
    authority.rsplit('@').next().unwrap().to_owned()
}

impl Relay {
    async fn start(port: u16) -> Self {
        Self::start_to(port, authority(&redis_url())).await
    }

    async fn start_to(port: u16, target: String) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            // Dropping the set (when the task is aborted) cuts every connection.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let target = target.clone();
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self {
            port,
            task: Some(task),
        }
    }

    fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_survive_a_redis_outage_and_shared_state_resumes_after_it() {
    if backend() != Backend::PostgresRedis {
        return;
    }
    let mut relay = Relay::start(0).await;
    let port = relay.port;
    let deployment = Deployment::new().await;
    let app = TestApp::spawn_in(deployment, |c| {
        c.redis_url = Some(format!("redis://127.0.0.1:{port}"));
        c.redis.timeout_ms = 200;
        c.abuse.account_burst = 3;
    })
    .await;
    app.create_user("alice").await;
    app.create_user("bob").await;
    assert_eq!(app.login("alice", PASSWORD).await.status(), StatusCode::OK);

    relay.cut();
    // The subscription notices the cut: caches are no longer trusted.
    eventually("the node stops trusting its caches", async || {
        !app.core.caches_trusted()
    })
    .await;
    // Authentication still works, and still refuses wrong passwords.
    let started = Instant::now();
    assert_eq!(app.login("alice", PASSWORD).await.status(), StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a login waited on Redis for {:?}",
        started.elapsed()
    );
    let grant = app.login_ok("alice").await;
    assert_eq!(
        app.me_status(grant["access_token"].as_str().unwrap()).await,
        StatusCode::OK
    );
    // Throttling falls back to this node's own budget: it still throttles.
    for _ in 0..3 {
        assert_eq!(
            app.login("bob", "wrong guess!").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        app.login("bob", "wrong guess!").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // A logout during the outage still ends the session here at once.
    app.logout(grant["access_token"].as_str().unwrap(), None)
        .await;
    assert_eq!(
        app.me_status(grant["access_token"].as_str().unwrap()).await,
        StatusCode::UNAUTHORIZED
    );

    // Redis is back on the same address: the node reconnects by itself.
    let _relay = Relay::start(port).await;
    eventually(
        "the node resubscribes and trusts its caches again",
        async || app.core.caches_trusted(),
    )
    .await;
    eventually("logins keep working with Redis back", async || {
        app.login("alice", PASSWORD).await.status() == StatusCode::OK
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_a_503_and_the_pool_recovers() {
    if backend() == Backend::Sqlite {
        return;
    }
    let deployment = Deployment::new().await;
    let mut raw = sesame::config::RawConfig::default();
    deployment.apply(&mut raw);
    let database_url = raw.database_url.clone().unwrap();
    let mut relay = Relay::start_to(0, authority(&database_url)).await;
    let port = relay.port;
    let relayed = database_url.replacen(&authority(&database_url), &format!("127.0.0.1:{port}"), 1);
    let app = TestApp::spawn_in(deployment, |c| {
        c.database_url = Some(relayed);
        c.database.connect_timeout = 1;
    })
    .await;
    app.create_user("alice").await;
    assert_eq!(app.login("alice", PASSWORD).await.status(), StatusCode::OK);

    relay.cut();
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

    let _relay = Relay::start_to(port, authority(&database_url)).await;
    eventually("logins work again once the database is back", async || {
        app.login("alice", PASSWORD).await.status() == StatusCode::OK
    })
    .await;
}
