//! Seed 000: ai-gateway `POST /api/v1/login`.

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{is_jwt, is_rfc3339_utc, status_json};
use crate::helpers::{TestApp, assert_problem};

const PATH: &str = "/api/v1/login";

#[tokio::test]
async fn the_documented_example_answers_every_documented_field() {
    let app = TestApp::spawn().await;
    app.create_with_password("your_username", "your_password", &[])
        .await;
    let response = app
        .post_raw(
            PATH,
            "application/json",
            r#"{
    "username": "your_username",
    "password": "your_password"
  }"#,
        )
        .await;
    let (status, body) = status_json(response).await;
    assert_eq!(status, 200, "{body}");
    assert!(is_jwt(&body["access_token"]));
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 3600);
    let user = &body["user"];
    assert!(user["id"].is_string());
    assert_eq!(user["username"], "your_username");
    assert_eq!(user["role"], "user");
    assert_eq!(user["status"], "active");
    for field in ["created_at", "updated_at", "last_login"] {
        assert!(is_rfc3339_utc(&user[field]), "{field}: {}", user[field]);
    }
    assert!(user["api_calls_count"].is_i64() && user["max_api_calls"].is_i64());
    assert_eq!(
        user.as_object().unwrap().len(),
        9,
        "exactly the documented user fields"
    );
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(
        app.me_status(token).await,
        StatusCode::OK,
        "the token works as a bearer token"
    );
}

#[tokio::test]
async fn every_authenticated_call_counts_and_the_quota_is_enforced() {
    let app = TestApp::spawn().await;
    let account = app
        .create_with_password("quota_user", "quota password", &[])
        .await;
    app.core
        .set_quota(
            account.id,
            Some(3),
            None,
            &sesame::core::roles::Actor::Operator,
        )
        .await
        .unwrap();
    let (_, body) = status_json(
        app.post_json(
            PATH,
            &json!({"username": "quota_user", "password": "quota password"}),
        )
        .await,
    )
    .await;
    assert_eq!(body["user"]["api_calls_count"], 0);
    assert_eq!(body["user"]["max_api_calls"], 3);
    let token = body["access_token"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        assert_eq!(app.me_status(&token).await, StatusCode::OK);
    }
    let me: serde_json::Value = app.get("/v1/me", &token).await.json().await.unwrap();
    assert_eq!(me["api_calls_count"], 3, "this call is the third");
    assert_problem(
        app.get("/v1/me", &token).await,
        StatusCode::TOO_MANY_REQUESTS,
        "quota_exceeded",
    )
    .await;
    assert_eq!(
        app.get("/v1/me/sessions", &token).await.status(),
        StatusCode::OK,
        "listing sessions (to end one) is not counted"
    );

    app.core.flush_api_calls().await.unwrap();
    assert_eq!(
        app.core.account(account.id).await.unwrap().api_calls_count,
        3,
        "refused calls do not count"
    );
    let (_, body) = status_json(
        app.post_json(
            PATH,
            &json!({"username": "quota_user", "password": "quota password"}),
        )
        .await,
    )
    .await;
    assert_eq!(body["user"]["api_calls_count"], 3);

    app.core
        .set_quota(
            account.id,
            Some(10),
            None,
            &sesame::core::roles::Actor::Operator,
        )
        .await
        .unwrap();
    assert_eq!(
        app.me_status(&token).await,
        StatusCode::OK,
        "an operator raised the quota"
    );
}

#[tokio::test]
async fn counts_reach_the_database_in_batches() {
    let app = TestApp::spawn().await;
    let account = app
        .create_with_password("batch_user", "batch password", &[])
        .await;

    let (_, body) = status_json(
        app.post_json(
            PATH,
            &json!({"username": "batch_user", "password": "batch password"}),
        )
        .await,
    )
    .await;
    let token = body["access_token"].as_str().unwrap().to_owned();
    for _ in 0..5 {
        app.me_status(&token).await;
    }
    // The background flusher writes every second; wait for it rather than forcing it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let stored = app.second_store().await;
        let usage = stored.api_usage(account.id).await.unwrap().unwrap();
        if usage.count == 5 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "counts never persisted: {}",
            usage.count
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn refusals_look_the_same_and_bad_bodies_are_422() {
    let app = TestApp::spawn().await;
    app.create_with_password("someone", "right password", &[])
        .await;
    let wrong = status_json(
        app.post_json(
            PATH,
            &json!({"username": "someone", "password": "wrong password"}),
        )
        .await,
    )
    .await;
    let unknown = status_json(
        app.post_json(
            PATH,
            &json!({"username": "nobody", "password": "right password"}),
        )
        .await,
    )
    .await;
    assert_eq!(wrong, unknown);
    assert_eq!(wrong.0, 401);
    assert_eq!(wrong.1, json!({"detail": "Incorrect username or password"}));
    let (status, body) =
        status_json(app.post_json(PATH, &json!({"username": "someone"})).await).await;
    assert_eq!(
        (status, body),
        (422, json!({"detail": "password is required"}))
    );
    let (status, body) = status_json(app.post_raw(PATH, "application/json", "{oops").await).await;
    assert_eq!(status, 422);
    assert!(body["detail"].is_string());
}

#[tokio::test]
async fn a_switched_off_contract_is_a_404() {
    let app = TestApp::spawn_with(|c| c.contracts.ai_gateway = false).await;
    let response = app
        .post_json(PATH, &json!({"username": "a", "password": "b"}))
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

/// A daily quota: the count starts again at midnight UTC by itself, and the
/// contract shows the count of the current period.
#[tokio::test]
async fn a_daily_quota_starts_again_at_midnight_utc() {
    use sesame::core::roles::Actor;
    use sesame::store::QuotaPeriod;
    let app = TestApp::spawn().await;
    let account = app
        .create_with_password("daily_user", "daily password", &[])
        .await;
    app.core
        .set_quota(account.id, Some(2), None, &Actor::Operator)
        .await
        .unwrap();
    app.core
        .set_quota(
            account.id,
            None,
            Some(Some(QuotaPeriod::Day)),
            &Actor::Operator,
        )
        .await
        .unwrap();
    let login = || async {
        let (status, body) = status_json(
            app.post_json(
                PATH,
                &json!({"username": "daily_user", "password": "daily password"}),
            )
            .await,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        body
    };
    let token = login().await["access_token"].as_str().unwrap().to_owned();
    assert_eq!(app.me_status(&token).await, StatusCode::OK);
    assert_eq!(app.me_status(&token).await, StatusCode::OK);
    assert_eq!(app.me_status(&token).await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(login().await["user"]["api_calls_count"], 2);
    // The counts reach the store (flushed every second) before midnight.
    app.core.flush_api_calls().await.unwrap();

    // 23:59:59 on the first day (signed in again: the token expired): still spent.
    app.clock.advance(86_399);
    let body = login().await;
    assert_eq!(body["user"]["api_calls_count"], 2);
    let token = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(app.me_status(&token).await, StatusCode::TOO_MANY_REQUESTS);
    // Midnight UTC: a new day, a new count.
    app.clock.advance(1);
    let body = login().await;
    assert_eq!(body["user"]["api_calls_count"], 0, "{body}");
    let token = body["access_token"].as_str().unwrap().to_owned();
    let me: Value = app.get("/v1/me", &token).await.json().await.unwrap();
    assert_eq!(
        me["api_calls_count"], 1,
        "this call is the first of the day"
    );
    assert_eq!(me["quota_period"], "day");
    assert_eq!(app.me_status(&token).await, StatusCode::OK);
    assert_eq!(app.me_status(&token).await, StatusCode::TOO_MANY_REQUESTS);
    app.core.flush_api_calls().await.unwrap();
    assert_eq!(
        app.core.account(account.id).await.unwrap().api_calls_count,
        2,
        "the store holds the new day's count"
    );
}

/// The deployment's default period applies to accounts without their own;
/// an account's own period (here: none) wins.
#[tokio::test]
async fn the_default_period_is_monthly_when_configured() {
    use sesame::core::roles::Actor;
    use sesame::store::QuotaPeriod;
    let app = TestApp::spawn_with(|c| c.quotas.period = "month".into()).await;
    let monthly = app
        .create_with_password("monthly", "monthly password", &[])
        .await;
    let forever = app
        .create_with_password("forever", "forever password", &[])
        .await;
    app.core
        .set_quota(
            forever.id,
            None,
            Some(Some(QuotaPeriod::None)),
            &Actor::Operator,
        )
        .await
        .unwrap();
    for (name, account) in [("monthly", &monthly), ("forever", &forever)] {
        app.core
            .set_quota(account.id, Some(1), None, &Actor::Operator)
            .await
            .unwrap();
        let grant = app.login_ok_with(name, &format!("{name} password")).await;
        let token = grant["access_token"].as_str().unwrap().to_owned();
        assert_eq!(app.me_status(&token).await, StatusCode::OK);
        assert_eq!(app.me_status(&token).await, StatusCode::TOO_MANY_REQUESTS);
    }
    app.core.flush_api_calls().await.unwrap();
    // START is 2026-01-01T00:00:00Z; a day later is still January.
    app.clock.advance(86_400);
    let token = app.login_ok_with("monthly", "monthly password").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.me_status(&token).await, StatusCode::TOO_MANY_REQUESTS);
    // 2026-02-01T00:00:00Z.
    app.clock.advance(30 * 86_400);
    // (The access tokens expired meanwhile: sign in again.)
    let token = app.login_ok_with("monthly", "monthly password").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.me_status(&token).await, StatusCode::OK, "a new month");
    let token = app.login_ok_with("forever", "forever password").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.me_status(&token).await,
        StatusCode::TOO_MANY_REQUESTS,
        "its own period is none"
    );
}
