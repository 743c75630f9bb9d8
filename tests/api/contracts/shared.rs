//! What every face shares: one account, one failure counter, one policy.

use serde_json::json;

use crate::helpers::TestApp;

#[tokio::test]
async fn a_failure_through_any_face_counts_against_the_account_everywhere() {
    // Throttling is tested on its own; here the budget is large enough not to interfere.
    let app = TestApp::spawn_with(|c| c.abuse.account_burst = 50).await;
    let account = app
        .create_user_full("shared", None, None, &["administrator"])
        .await;
    let wrong = "definitely wrong";
    app.post_json(
        "/api/v1/login",
        &json!({"username": "shared", "password": wrong}),
    )
    .await;
    app.post_json(
        "/manager/login",
        &json!({"username": "shared", "password": wrong}),
    )
    .await;
    app.post_json(
        "/api/v1/users/actions/login",
        &json!({"account": "shared", "password": "0".repeat(32)}),
    )
    .await;
    app.post_json(
        "/api/v1/user/method/login.user.user/",
        &json!({"username": "shared", "password": wrong, "platform": "iOS"}),
    )
    .await;
    app.post_json(
        "/user/login",
        &json!({"Username": "shared", "Password": wrong}),
    )
    .await;
    app.login("shared", wrong).await;
    assert_eq!(
        app.core
            .account(account.id)
            .await
            .unwrap()
            .failed_login_count,
        6
    );
    let grant = app.login_ok("shared").await;
    assert_eq!(grant["user"]["failed_login_count"], 6);
    assert_eq!(grant["user"]["login_count"], 1);
}

#[tokio::test]
async fn contracts_can_be_switched_off_one_by_one() {
    let app = TestApp::spawn_with(|c| {
        c.contracts.manager = false;
        c.contracts.careyshop = false;
        c.contracts.fungame = false;
        c.contracts.users_actions = false;
    })
    .await;
    for path in [
        "/manager/login",
        "/api/v1/user/method/login.user.user/",
        "/user/login",
        "/api/v1/users/actions/login",
    ] {
        let response = app.post_json(path, &json!({})).await;
        assert_eq!(response.status(), reqwest::StatusCode::NOT_FOUND, "{path}");
    }
    let on = app.post_json("/api/v1/login", &json!({})).await;
    assert_eq!(on.status(), reqwest::StatusCode::UNPROCESSABLE_ENTITY);
}

/// A method a route does not take is refused in that face's own shape,
/// not in another face's.
#[tokio::test]
async fn another_method_is_refused_in_each_faces_own_shape() {
    let app = TestApp::spawn().await;
    let http = reqwest::Client::new();
    for (method, path, expected) in [
        (
            reqwest::Method::GET,
            "/api/v1/login",
            json!({"detail": "Method Not Allowed"}),
        ),
        (
            reqwest::Method::GET,
            "/manager/login",
            json!({"error": "Method not allowed"}),
        ),
        (
            reqwest::Method::PUT,
            "/api/v1/users/actions/login",
            json!({"code": 405, "message": "请求方式不被允许"}),
        ),
        (
            reqwest::Method::DELETE,
            "/api/v1/user/method/login.user.user/",
            json!({"status": 405, "message": "请求方式不被允许"}),
        ),
        (
            reqwest::Method::GET,
            "/user/login",
            json!("请求方式不被允许。"),
        ),
    ] {
        let response = http
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            reqwest::StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert!(response.headers().contains_key("allow"), "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body, expected, "{method} {path}");
    }
}
