//! Redis going away at run time (the `api_redis` binary; the others have no
//! Redis and return at once): logins keep working with per-node budgets,
//! never failing open for authentication; caches are bypassed while notices
//! may be missed; everything resumes by itself when Redis is back.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::helpers::{Backend, Deployment, PASSWORD, TestApp, backend, redis_url};

/// A TCP relay to Redis that the test can cut and restore on the same port.
struct Relay {
    port: u16,
    task: Option<JoinHandle<()>>,
}

impl Relay {
    async fn start(port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = redis_url()
            .trim_start_matches("redis://")
            .split(['/', '?'])
            .next()
            .unwrap()
            .to_owned();
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
