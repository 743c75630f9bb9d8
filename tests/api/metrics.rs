//! `GET /metrics`: what a node counted, in the Prometheus text format (and
//! OpenMetrics on request), on the API listener or a listener of its own.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    Backend, METRICS_TOKEN, PASSWORD, ServerProcess, TestApp, access, backend, refresh_token,
    sample, scrape, sesame_command,
};

fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[tokio::test]
async fn metrics_count_logins_refreshes_requests_hashing_and_the_store() {
    let app = TestApp::spawn_with(|c| {
        c.abuse.address_burst = 2;
        c.abuse.address_interval = 30;
    })
    .await;
    app.create_user("alice").await;
    let bob = app.create_user("bob").await;
    app.core
        .set_enabled(bob.id, false, &sesame::core::roles::Actor::Operator)
        .await
        .unwrap();

    let grant = app.login_ok("alice").await;
    assert_eq!(app.login("bob", PASSWORD).await.status(), 401);
    let attacker = app.client_from("127.0.0.9");
    for _ in 0..3 {
        attacker
            .post(app.url("/v1/login"))
            .json(&json!({"login": "alice", "password": "not the password"}))
            .send()
            .await
            .unwrap();
    }
    let second = app.refresh(refresh_token(&grant)).await;
    assert_eq!(second.status(), 200);
    app.clock.advance(60);
    assert_eq!(app.refresh(refresh_token(&grant)).await.status(), 401);
    let fresh = app.login_ok("alice").await;
    for _ in 0..3 {
        assert_eq!(app.me_status(access(&fresh)).await, StatusCode::OK);
    }
    // A token in a mistaken path must not become a label.
    let secret_path = "/v1/me/eyJhbGciOiJFZERTQSJ9.secret-in-the-path";
    app.get(secret_path, access(&fresh)).await;
    app.core.flush_api_calls().await.unwrap();

    let text = scrape(&app).await;
    let logins = |outcome: &str| {
        value(
            &text,
            &format!("sesame_logins_total{{face=\"native\",outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(logins("success"), 2.0);
    assert_eq!(logins("disabled"), 1.0);
    assert_eq!(logins("invalid_credentials"), 2.0);
    assert_eq!(logins("throttled"), 1.0);
    assert_eq!(
        value(&text, "sesame_refreshes_total{outcome=\"success\"}"),
        1.0
    );
    assert_eq!(
        value(&text, "sesame_refreshes_total{outcome=\"reuse_detected\"}"),
        1.0
    );
    assert_eq!(value(&text, "sesame_refresh_reuse_detections_total"), 1.0);
    assert_eq!(
        value(
            &text,
            "sesame_http_requests_total{route=\"/v1/me\",method=\"GET\",status=\"200\"}"
        ),
        3.0
    );
    assert_eq!(
        value(
            &text,
            "sesame_http_requests_total{route=\"/v1/login\",method=\"POST\",status=\"429\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "sesame_http_request_duration_seconds_count{route=\"/v1/login\",method=\"POST\"}"
        ),
        6.0
    );
    assert_eq!(
        value(
            &text,
            "sesame_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"}"
        ),
        1.0
    );
    assert!(!text.contains("secret-in-the-path"), "{text}");
    // Two accounts created (a password hash and an MD5 verifier each), two
    // right passwords, one for the disabled account, two wrong ones (the
    // throttled attempt hashes nothing).
    assert_eq!(value(&text, "sesame_hashing_duration_seconds_count"), 9.0);
    assert_eq!(value(&text, "sesame_hashing_queue_depth"), 0.0);
    assert_eq!(value(&text, "sesame_hashing_rejections_total"), 0.0);
    // The first session ended with the reuse; the fresh one is live.
    assert_eq!(value(&text, "sesame_live_sessions"), 1.0);
    assert_eq!(value(&text, "sesame_api_calls_total"), 3.0);
    assert_eq!(
        value(
            &text,
            "sesame_store_operation_duration_seconds_count{operation=\"record_login\"}"
        ),
        2.0
    );
    assert_eq!(
        sample(
            &text,
            "sesame_store_errors_total{operation=\"record_login\"}"
        ),
        None,
        "no failed operation"
    );
    assert_eq!(value(&text, "sesame_redis_errors_total"), 0.0);
    assert_eq!(value(&text, "sesame_notices_unsent_total"), 0.0);
    assert_eq!(
        value(
            &text,
            &format!(
                "sesame_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0
    );
    match backend() {
        Backend::Sqlite => assert!(!text.contains("sesame_db_pool_connections{")),
        Backend::Postgres | Backend::PostgresRedis => {
            let idle = value(&text, "sesame_db_pool_connections{state=\"idle\"}");
            let in_use = value(&text, "sesame_db_pool_connections{state=\"in_use\"}");
            assert!(idle + in_use >= 1.0, "{idle} idle, {in_use} in use");
        }
    }
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        assert!(line.starts_with("# TYPE sesame_"), "{line}");
    }
}

#[tokio::test]
async fn open_metrics_is_served_to_a_scraper_that_asks_for_it() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth(METRICS_TOKEN)
        // What Prometheus sends.
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
             version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(
        text.contains("# TYPE sesame_redis_errors counter\n"),
        "{text}"
    );
    assert!(text.contains("\nsesame_redis_errors_total 0\n"), "{text}");
}

fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

#[tokio::test]
async fn metrics_can_have_a_listener_of_their_own_or_be_off() {
    let deployment = crate::helpers::Deployment::new().await;
    let metrics_address = free_address();
    let server = ServerProcess::start_with(
        sesame_command(deployment.env()),
        &["--metrics-listen", &metrics_address],
    );
    let client = reqwest::Client::new();
    let on_api = client.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(on_api.status(), StatusCode::NOT_FOUND, "not with the API");
    let health = client.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let own = client
        .get(format!("http://{metrics_address}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), StatusCode::OK);
    let text = own.text().await.unwrap();
    // The API's requests are counted; the metrics listener serves nothing else.
    assert!(
        text.contains(
            "sesame_http_requests_total{route=\"/healthz\",method=\"GET\",status=\"200\"}"
        ),
        "{text}"
    );
    let other = client
        .get(format!("http://{metrics_address}/v1/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    // At most 16 connections at once: the next is closed unanswered, and a
    // place freed is used again. (The client's kept-alive connection first
    // closed.)
    drop(client);
    let client = reqwest::Client::new();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    {
        use std::io::{Read, Write};
        let mut held: Vec<_> = (0..16)
            .map(|_| std::net::TcpStream::connect(&metrics_address).unwrap())
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let mut beyond = std::net::TcpStream::connect(&metrics_address).unwrap();
        beyond
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let _ = beyond.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut answer = String::new();
        let _ = beyond.read_to_string(&mut answer);
        assert_eq!(answer, "", "the 17th connection is refused");
        drop(held.pop());
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let again = client
            .get(format!("http://{metrics_address}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::OK);
    }
    server.stop();

    let mut off = sesame_command(deployment.env());
    off.env("SESAME_METRICS__ENABLED", "false");
    let server = ServerProcess::start(off);
    let response = client.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    server.stop();
}

/// What a node counts tells who has an account and which guesses were
/// right (a locked account's right password): with the API, `GET /metrics`
/// is served only to a scraper with the token, and not at all without one.
#[tokio::test]
async fn metrics_with_the_api_need_the_scrapers_token() {
    let deployment = crate::helpers::Deployment::new().await;
    let client = reqwest::Client::new();
    let server = ServerProcess::start(sesame_command(deployment.env()));
    let response = client.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::NOT_FOUND,
        "no token: not served"
    );
    server.stop();

    let mut with_token = sesame_command(deployment.env());
    with_token.env("SESAME_METRICS__TOKEN", METRICS_TOKEN);
    let server = ServerProcess::start(with_token);
    for sent in [None, Some("Bearer wrong-token"), Some("Basic dGVzdDp0ZXN0")] {
        let mut request = client.get(server.url("/metrics"));
        if let Some(sent) = sent {
            request = request.header("authorization", sent);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{sent:?}");
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer realm=\"sesame-metrics\""
        );
        let body = response.text().await.unwrap();
        assert!(body.contains("\"code\":\"unauthenticated\""), "{body}");
    }
    let response = client
        .get(server.url("/metrics"))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.unwrap().contains("sesame_build_info"));
    server.stop();
}

/// The Prometheus project's own parsers (its Python client) read both
/// formats: a format is proven by a reader we did not write.
#[tokio::test]
async fn prometheus_own_parsers_read_both_formats() {
    let Some(python) = crate::helpers::installed(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/schemathesis/.venv/bin/python"),
        "the schemathesis venv's Python",
    ) else {
        return;
    };
    let app = TestApp::spawn().await;
    app.create_user("alice").await;
    app.login_ok("alice").await;
    let text = scrape(&app).await;
    let open_metrics = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth(METRICS_TOKEN)
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families as prometheus
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
parse = {"prometheus": prometheus, "openmetrics": openmetrics}[sys.argv[1]]
for family in parse(sys.stdin.read()):
    for sample in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
        print(family.type, sample.name, labels, float(sample.value))
"#;
    for (format, body) in [("prometheus", &text), ("openmetrics", &open_metrics)] {
        use std::io::Write;
        let mut child = std::process::Command::new(&python)
            .args(["-c", script, format])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        let parsed = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{format} did not parse: {}\n{body}",
            String::from_utf8_lossy(&output.stderr)
        );
        for expected in [
            "counter sesame_logins_total face=native,outcome=success 1.0",
            "histogram sesame_hashing_duration_seconds_count  3.0",
            "histogram sesame_http_request_duration_seconds_count method=POST,route=/v1/login 1.0",
        ] {
            assert!(
                parsed.contains(expected),
                "{format}: no {expected:?} in\n{parsed}"
            );
        }
    }
}
