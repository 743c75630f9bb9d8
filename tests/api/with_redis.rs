//! What needs Redis, compiled into the `api_redis` binary only: Redis going
//! away at run time, and the README's cluster example (three nodes on
//! PostgreSQL and Redis behind nginx).

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::cluster::sesame;
use crate::helpers::{Deployment, PASSWORD, ServerProcess, TestApp, redis_url};
use crate::outage::{Relay, authority, eventually};

const BIN: &str = env!("CARGO_BIN_EXE_sesame");

/// A relay to the test Redis on `port` (0: any free port).
async fn relay_to_redis(port: u16) -> Relay {
    Relay::start_to(port, authority(&redis_url())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_survive_a_redis_outage_and_shared_state_resumes_after_it() {
    let mut relay = relay_to_redis(0).await;
    let port = relay.port;
    let deployment = Deployment::new().await;
    let app = TestApp::spawn_in(deployment, |c| {
        c.redis_url = Some(format!("redis://127.0.0.1:{port}"));
        c.redis.timeout_ms = 200;
        c.abuse.account_burst = 3;
    })
    .await;
    app.create_user("alice").await;
    let bob = app.create_user("bob").await;
    assert_eq!(app.login("alice", PASSWORD).await.status(), StatusCode::OK);

    let ready: serde_json::Value = reqwest::get(app.url("/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["redis"], "ok", "{ready}");
    relay.cut();
    // Readiness names Redis but keeps the node in service (logins still
    // work: throttling falls back to this node's budgets).
    let ready = reqwest::get(app.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(ready["degraded"], serde_json::json!(["redis"]), "{ready}");
    assert_eq!(ready["failing"], serde_json::json!([]), "{ready}");
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
    // An unlock stands (and clears this node's budget) though the shared
    // budget in Redis cannot be cleared now.
    app.core
        .unlock(bob.id, &sesame::core::roles::Actor::Operator)
        .await
        .expect("the unlock stands with Redis away");
    assert_eq!(app.login("bob", PASSWORD).await.status(), StatusCode::OK);
    // A logout during the outage still ends the session here at once.
    app.logout(grant["access_token"].as_str().unwrap(), None)
        .await;
    assert_eq!(
        app.me_status(grant["access_token"].as_str().unwrap()).await,
        StatusCode::UNAUTHORIZED
    );

    // Redis is back on the same address: the node reconnects by itself.
    let _relay = relay_to_redis(port).await;
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

/// A Redis gone dark (connections accepted, nothing answered: a stopped
/// process, a host whose traffic is dropped) costs a logout the wait for
/// its notice once; for the next moment, notices skip Redis as failure
/// budgets do, and the logouts answer at once. Each still ends its session
/// on the node, and the log says once that notices went unsent, not once a
/// logout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_do_not_keep_requests_waiting_on_a_redis_gone_dark() {
    let relay = relay_to_redis(0).await;
    let redis = format!("redis://127.0.0.1:{}", relay.port);
    let timeout = Duration::from_millis(1500);
    let deployment = Deployment::new().await;
    crate::cluster::add_user(&deployment, "alice", &[]);
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("node.log");
    let timeout_ms = timeout.as_millis().to_string();
    let node = ServerProcess::start_logged(
        sesame(
            &deployment,
            &[
                ("SESAME_REDIS_URL", &redis),
                ("SESAME_REDIS__TIMEOUT_MS", &timeout_ms),
                ("SESAME_METRICS__TOKEN", METRICS_TOKEN),
            ],
        ),
        &log,
    );
    let client = reqwest::Client::new();
    let mut tokens = Vec::new();
    for _ in 0..3 {
        let (status, grant) = crate::cluster::login(&client, &node, "alice", PASSWORD).await;
        assert_eq!(status, StatusCode::OK);
        tokens.push(grant["access_token"].as_str().unwrap().to_owned());
    }

    relay.go_dark();
    let mut waits = Vec::new();
    for token in &tokens {
        let started = Instant::now();
        let logout = client
            .post(node.url("/v1/logout"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        waits.push(started.elapsed());
        assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    }
    // The first waits out the timeout (its notice is lost); the next ones,
    // within the pause that follows, do not wait for Redis at all.
    assert!(waits[0] < timeout * 2, "{waits:?}");
    for wait in &waits[1..] {
        assert!(
            *wait < timeout / 2,
            "a logout waited on a dark Redis: {waits:?}"
        );
    }
    for token in &tokens {
        assert_eq!(
            crate::cluster::me(&client, &node, token).await,
            StatusCode::UNAUTHORIZED
        );
    }
    let logged = std::fs::read_to_string(&log).unwrap();
    let warnings: Vec<&str> = logged
        .lines()
        .filter(|line| line.contains("could not tell the other nodes"))
        .collect();
    assert_eq!(warnings.len(), 1, "{logged}");
    // The count is where an alert can see it.
    let metrics = client
        .get(node.url("/metrics"))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        crate::helpers::sample(&metrics, "sesame_notices_unsent_total"),
        Some(3.0),
        "{metrics}"
    );
}

const METRICS_TOKEN: &str = "a-scraper-token-for-the-dark-redis-test";

/// The README's cluster example (examples/cluster/) run as written: three
/// nodes on PostgreSQL and Redis behind a real nginx, checked by its script.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_cluster_example_runs_as_written() {
    let path = format!(
        "{}:/usr/sbin:/usr/local/sbin:{}",
        std::path::Path::new(BIN).parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let has_nginx = Command::new("sh")
        .args(["-c", "command -v nginx"])
        .env("PATH", &path)
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_nginx {
        assert!(std::env::var_os("CI").is_none(), "CI must install nginx");
        eprintln!("skipped: no nginx on the PATH (apt-get install nginx)");
        return;
    }
    let deployment = Deployment::new().await;
    let mut command = sesame(&deployment, &[]);
    command
        .env("PATH", &path)
        .env_remove("SESAME_SESSIONS__CACHE_TTL")
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    let output = tokio::task::spawn_blocking(move || {
        // `sesame(..)` names the binary; the example runs `bash run.sh`.
        let mut bash = Command::new("bash");
        bash.args(["examples/cluster/run.sh", "--check"]);
        bash.env_clear();
        for (key, value) in command.get_envs() {
            if let Some(value) = value {
                bash.env(key, value);
            }
        }
        bash.current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("check passed"),
        "the example failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
