//! Refresh-token rotation, reuse detection and the grace window.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{TestApp, access, assert_problem, refresh_token};

async fn signed_in() -> (TestApp, Value) {
    let app = TestApp::spawn().await;
    app.create_user("alice").await;
    let grant = app.login_ok("alice").await;
    (app, grant)
}

#[tokio::test]
async fn refresh_rotates_both_tokens_in_the_same_session() {
    let (app, first) = signed_in().await;
    app.clock.advance(10);
    let response = app.refresh(refresh_token(&first)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let second: Value = response.json().await.unwrap();
    assert_ne!(refresh_token(&second), refresh_token(&first));
    assert_ne!(access(&second), access(&first));
    assert_eq!(second["session_id"], first["session_id"]);
    assert_eq!(
        second["refresh_expires_in"],
        30 * 86_400 - 10,
        "rotation does not extend the session"
    );
    assert_eq!(app.me_status(access(&second)).await, StatusCode::OK);
    let listed: Value = app
        .get("/v1/me/sessions", access(&second))
        .await
        .json()
        .await
        .unwrap();
    let session = &listed["sessions"][0];
    assert_eq!(session["created_at"], "2026-01-01T00:00:00Z");
    assert_eq!(
        session["last_used_at"], "2026-01-01T00:00:10Z",
        "a refresh is a use"
    );
}

#[tokio::test]
async fn reuse_after_the_grace_window_ends_the_session() {
    let (app, first) = signed_in().await;
    let second: Value = app
        .refresh(refresh_token(&first))
        .await
        .json()
        .await
        .unwrap();
    app.clock.advance(6);
    assert_problem(
        app.refresh(refresh_token(&first)).await,
        StatusCode::UNAUTHORIZED,
        "refresh_token_reused",
    )
    .await;
    assert_problem(
        app.refresh(refresh_token(&second)).await,
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
    )
    .await;
    assert_eq!(
        app.me_status(access(&second)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.me_status(access(&first)).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_retry_within_the_grace_window_gets_the_same_successor() {
    let (app, first) = signed_in().await;
    let second: Value = app
        .refresh(refresh_token(&first))
        .await
        .json()
        .await
        .unwrap();
    app.clock.advance(5);
    let retry: Value = app
        .refresh(refresh_token(&first))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(refresh_token(&retry), refresh_token(&second));
    let third = app.refresh(refresh_token(&retry)).await;
    assert_eq!(
        third.status(),
        StatusCode::OK,
        "the shared successor is still good"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_all_get_one_successor() {
    let (app, first) = signed_in().await;
    let body = serde_json::json!({ "refresh_token": refresh_token(&first) });
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let request = app.client.post(app.url("/v1/refresh")).json(&body);
            tokio::spawn(async move { request.send().await })
        })
        .collect();
    let mut successors = Vec::new();
    for task in tasks {
        let response = task.await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        successors.push(refresh_token(&body).to_owned());
    }
    successors.dedup();
    assert_eq!(
        successors.len(),
        1,
        "every concurrent retry must receive the same successor"
    );
}

#[tokio::test]
async fn the_refresh_lifetime_is_absolute() {
    let (app, first) = signed_in().await;
    app.clock.advance(29 * 86_400);
    let second: Value = app
        .refresh(refresh_token(&first))
        .await
        .json()
        .await
        .unwrap();
    app.clock.advance(86_400);
    assert_problem(
        app.refresh(refresh_token(&second)).await,
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
    )
    .await;
}

#[tokio::test]
async fn tokens_cannot_stand_in_for_each_other() {
    let (app, grant) = signed_in().await;
    assert_eq!(
        app.me_status(refresh_token(&grant)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_problem(
        app.refresh(access(&grant)).await,
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
    )
    .await;
    assert_problem(
        app.refresh("").await,
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
    )
    .await;
}

/// A client looping its refresh token is refused past the session's budget
/// (`abuse.refresh_burst`, then one per `abuse.refresh_interval`) before
/// anything is written: the token refused stays good, however long the
/// client waits (well past the reuse grace window). Other sessions of the
/// account keep their own budget.
#[tokio::test]
async fn a_looping_refresh_is_throttled_and_the_session_kept() {
    let app = TestApp::spawn_with(|c| {
        c.abuse.refresh_burst = 3;
        c.abuse.refresh_interval = 2;
    })
    .await;
    app.create_user("alice").await;
    let looping = app.login_ok("alice").await;
    let other = app.login_ok("alice").await;
    let mut token = refresh_token(&looping).to_owned();
    for turn in 0..3 {
        let response = app.refresh(&token).await;
        assert_eq!(response.status(), StatusCode::OK, "refresh {turn}");
        let grant: Value = response.json().await.unwrap();
        token = refresh_token(&grant).to_owned();
    }
    let refused = app.refresh(&token).await;
    assert_eq!(refused.headers()["retry-after"], "2");
    assert_problem(refused, StatusCode::TOO_MANY_REQUESTS, "throttled").await;
    let again = app.refresh(&token).await;
    assert_eq!(
        again.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "a retry before the wait is refused too"
    );
    let store = app.deployment.open_store().await;
    let stored = store
        .find_refresh_token(&sesame::core::tokens::hash_token(&token))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.rotated_at, None, "refused before it was written");
    let elsewhere = app.refresh(refresh_token(&other)).await;
    assert_eq!(elsewhere.status(), StatusCode::OK, "a budget per session");

    // Back well after the reuse grace window: the token is still good.
    app.clock.advance(10);
    let next = app.refresh(&token).await;
    assert_eq!(next.status(), StatusCode::OK);
    let next: Value = next.json().await.unwrap();
    assert_eq!(next["session_id"], looping["session_id"]);
    assert_eq!(app.me_status(access(&next)).await, StatusCode::OK);
    let after = app.refresh(refresh_token(&next)).await;
    assert_eq!(after.status(), StatusCode::OK, "the chain goes on");

    let metrics = crate::helpers::scrape(&app).await;
    assert!(
        metrics.contains("sesame_refreshes_total{outcome=\"throttled\"} 2"),
        "{metrics}"
    );
}
