//! Password login over the native API.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{
    Deployment, PASSWORD, TestApp, access, assert_problem, jwt_part, refresh_token,
};

#[tokio::test]
async fn logs_in_by_username_email_or_mobile() {
    let app = TestApp::spawn().await;
    app.create_user_full(
        "alice",
        Some("alice@example.com"),
        Some("+8613888888888"),
        &[],
    )
    .await;
    for login in [
        "alice",
        "alice@example.com",
        "ALICE@Example.COM",
        "+8613888888888",
    ] {
        let grant = app.login_ok(login).await;
        assert_eq!(grant["user"]["username"], "alice", "login by {login}");
    }
}

#[tokio::test]
async fn usernames_are_case_and_width_insensitive() {
    let app = TestApp::spawn().await;
    app.create_user("Alice").await;
    for login in ["alice", "ALICE", "ａｌｉｃｅ"] {
        assert_eq!(app.login_ok(login).await["user"]["username"], "Alice");
    }
}

#[tokio::test]
async fn a_grant_has_the_documented_shape_and_no_credentials() {
    let app = TestApp::spawn().await;
    app.create_user_full("bob", Some("bob@example.com"), None, &[])
        .await;
    let response = app.login("bob", PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let text = response.text().await.unwrap();
    assert!(!text.contains("argon2") && !text.contains(PASSWORD));
    let grant: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(grant["token_type"], "Bearer");
    assert_eq!(grant["expires_in"], 3600);
    assert_eq!(grant["refresh_expires_in"], 30 * 86_400);
    assert_eq!(
        refresh_token(&grant).len(),
        43,
        "256-bit base64url refresh token"
    );
    let user = &grant["user"];
    assert_eq!(user["email"], "bob@example.com");
    assert_eq!(user["roles"], serde_json::json!(["user"]));
    assert_eq!(user["permissions"], serde_json::json!(["read"]));
    assert_eq!(user["status"], "active");
    assert_eq!(user["max_api_calls"], 0);
    assert_eq!(user["login_count"], 1);
    assert_eq!(user["last_login_ip"], "127.0.0.1");
    assert_eq!(user["created_at"], "2026-01-01T00:00:00Z");
}

#[tokio::test]
async fn access_tokens_carry_the_documented_claims_and_a_published_kid() {
    let app = TestApp::spawn().await;
    let account = app.create_user("carol").await;
    let grant = app.login_ok("carol").await;
    let token = access(&grant);
    let header = jwt_part(token, 0);
    let claims = jwt_part(token, 1);
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(claims["iss"], "sesame");
    assert_eq!(claims["aud"], "sesame");
    assert_eq!(claims["sub"], account.id.to_string());
    assert_eq!(claims["sid"], grant["session_id"]);
    assert_eq!(claims["roles"], serde_json::json!(["user"]));
    assert_eq!(claims["permissions"], serde_json::json!(["read"]));
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
    let jwks: Value = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert!(
        keys.iter()
            .any(|k| k["kid"] == header["kid"] && k["kty"] == "OKP" && k.get("d").is_none())
    );
}

#[tokio::test]
async fn every_signing_algorithm_works_end_to_end() {
    for (algorithm, kty) in [
        ("RS256", Some("RSA")),
        ("ES256", Some("EC")),
        ("HS256", None),
    ] {
        let app = TestApp::spawn_with(|c| c.tokens.algorithm = algorithm.into()).await;
        app.create_user("dave").await;
        let grant = app.login_ok("dave").await;
        assert_eq!(jwt_part(access(&grant), 0)["alg"], algorithm);
        assert_eq!(
            app.me_status(access(&grant)).await,
            StatusCode::OK,
            "{algorithm}"
        );
        let jwks: Value = app
            .client
            .get(app.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let keys = jwks["keys"].as_array().unwrap();
        match kty {
            Some(kty) => assert!(keys.iter().all(|k| k["kty"] == kty && k.get("d").is_none())),
            None => assert!(keys.is_empty(), "an HMAC secret must never be published"),
        }
    }
}

#[tokio::test]
async fn changing_the_algorithm_keeps_old_tokens_valid() {
    let dir = Deployment::new().await;
    let first = TestApp::spawn_in(dir.clone(), |_| {}).await;
    first.create_user("erin").await;
    let old = first.login_ok("erin").await;
    let second = TestApp::spawn_in(dir, |c| c.tokens.algorithm = "ES256".into()).await;
    assert_eq!(second.me_status(access(&old)).await, StatusCode::OK);
    let new = second.login_ok("erin").await;
    assert_eq!(jwt_part(access(&new), 0)["alg"], "ES256");
}

#[tokio::test]
async fn wrong_password_unknown_and_disabled_accounts_look_the_same() {
    let app = TestApp::spawn().await;
    let frank = app.create_user("frank").await;
    let grace = app.create_user("grace").await;
    app.core
        .set_enabled(grace.id, false, &sesame::core::roles::Actor::Operator)
        .await
        .unwrap();
    let mut bodies = Vec::new();
    for (login, password) in [
        ("frank", "wrong password!"),
        ("nobody", PASSWORD),
        ("grace", PASSWORD),
    ] {
        let response = app.login(login, password).await;
        let body = assert_problem(response, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
        bodies.push(body);
    }
    assert_eq!(bodies[0], bodies[1]);
    assert_eq!(bodies[1], bodies[2]);
    let frank = app.core.account(frank.id).await.unwrap();
    assert_eq!(frank.failed_login_count, 1);
}

#[tokio::test]
async fn access_tokens_expire_by_the_injected_clock() {
    let app = TestApp::spawn().await;
    app.create_user("heidi").await;
    let grant = app.login_ok("heidi").await;
    app.clock.advance(3600 + 29);
    assert_eq!(
        app.me_status(access(&grant)).await,
        StatusCode::OK,
        "within the 30 s leeway"
    );
    app.clock.advance(1);
    let response = app.get("/v1/me", access(&grant)).await;
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    assert_problem(response, StatusCode::UNAUTHORIZED, "unauthenticated").await;
}

#[tokio::test]
async fn outdated_hashes_are_upgraded_at_the_next_login() {
    let dir = Deployment::new().await;
    let old = TestApp::spawn_in(dir.clone(), |c| c.passwords.memory_kib = 128).await;
    let account = old.create_user("ivan").await;
    assert!(
        old.core
            .account(account.id)
            .await
            .unwrap()
            .verifiers
            .password_hash
            .contains("m=128,")
    );
    let new = TestApp::spawn_in(dir, |_| {}).await;
    new.login_ok("ivan").await;
    let upgraded = new
        .core
        .account(account.id)
        .await
        .unwrap()
        .verifiers
        .password_hash;
    assert!(
        upgraded.starts_with("$argon2id$v=19$m=256,t=1,p=1$"),
        "{upgraded}"
    );
    new.login_ok("ivan").await;
}

/// Several logins at once of an account whose hash is outdated: each
/// upgrades it, one of the upgrades is stored, and every login succeeds
/// (the others record against the hash that won, not the one they read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_at_once_that_each_upgrade_the_hash_all_succeed() {
    let dir = Deployment::new().await;
    let old = TestApp::spawn_in(dir.clone(), |c| c.passwords.memory_kib = 128).await;
    old.create_user("ivy").await;
    let new = TestApp::spawn_in(dir, |c| {
        c.passwords.memory_kib = 2048;
        c.abuse.account_burst = 50;
    })
    .await;
    let statuses = futures_util::future::join_all((0..8).map(|_| new.login("ivy", PASSWORD))).await;
    let statuses: Vec<StatusCode> = statuses.iter().map(reqwest::Response::status).collect();
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn a_password_over_1024_bytes_is_refused_without_hashing() {
    let app = TestApp::spawn_with(|c| {
        // Slow enough that hashing would show in the timing.
        c.passwords.memory_kib = 65536;
        c.passwords.iterations = 8;
    })
    .await;
    let long = "x".repeat(1025);
    let started = std::time::Instant::now();
    let response = app.login("anyone", &long).await;
    let elapsed = started.elapsed();
    let body = assert_problem(response, StatusCode::BAD_REQUEST, "invalid_input").await;
    assert_eq!(body["field"], "password");
    assert!(!body.to_string().contains(&long));
    assert!(
        elapsed < std::time::Duration::from_secs(1),
        "took {elapsed:?}"
    );
}
