//! Bad input gets a clear 4xx in problem+json; nothing gives a 5xx.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{PASSWORD, TestApp, assert_problem};

async fn raw_login(
    app: &TestApp,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut request = app.client.post(app.url("/v1/login")).body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn malformed_json_is_a_400() {
    let app = TestApp::spawn().await;
    for body in [
        "{",
        "{\"login\": \"a\",}",
        "nul",
        "{\"login\":\"a\",\"password\":\"b\"} trailing",
        "",
    ] {
        let response = raw_login(&app, Some("application/json"), body).await;
        assert_problem(response, StatusCode::BAD_REQUEST, "malformed_json").await;
    }
}

#[tokio::test]
async fn wrong_types_and_missing_fields_are_a_422_that_never_echo_values() {
    let app = TestApp::spawn().await;
    let cases = [
        json!({"login": "alice"}),
        json!({"login": 5, "password": PASSWORD}),
        json!({"login": "alice", "password": 31415926}),
        json!({"login": "alice", "password": PASSWORD, "platform": ["iOS"]}),
        json!(["alice", PASSWORD]),
        json!("alice"),
    ];
    for case in cases {
        let body = assert_problem(
            app.post_json("/v1/login", &case).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        )
        .await;
        let text = body.to_string();
        assert!(
            !text.contains("31415926") && !text.contains(PASSWORD),
            "value echoed: {text}"
        );
    }
}

#[tokio::test]
async fn a_body_that_is_not_json_is_a_415() {
    let app = TestApp::spawn().await;
    let form = "login=alice&password=secret";
    for content_type in [
        None,
        Some("application/x-www-form-urlencoded"),
        Some("text/plain"),
    ] {
        assert_problem(
            raw_login(&app, content_type, form).await,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        )
        .await;
    }
    let ok = raw_login(
        &app,
        Some("application/json; charset=utf-8"),
        r#"{"login":"x","password":"y"}"#,
    )
    .await;
    assert_eq!(
        ok.status(),
        StatusCode::UNAUTHORIZED,
        "charset parameter accepted"
    );
}

#[tokio::test]
async fn control_characters_and_oversized_logins_are_a_400() {
    let app = TestApp::spawn().await;
    for login in ["al\u{0}ice", "al\nice", "\u{7f}", "", &"a".repeat(321)] {
        let body = assert_problem(
            app.login(login, PASSWORD).await,
            StatusCode::BAD_REQUEST,
            "invalid_input",
        )
        .await;
        assert_eq!(body["field"], "login");
    }
    let body = assert_problem(
        app.login("alice", "").await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
    )
    .await;
    assert_eq!(body["field"], "password");
    let body = assert_problem(
        app.post_json(
            "/v1/login",
            &json!({"login": "alice", "password": PASSWORD, "platform": "i\u{1}OS"}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
    )
    .await;
    assert_eq!(body["field"], "platform");
}

#[tokio::test]
async fn bodies_over_the_limit_are_a_413() {
    let app = TestApp::spawn().await;
    let padding = "x".repeat(65 * 1024);
    let body = format!(r#"{{"login":"alice","password":"{padding}"}}"#);
    assert_problem(
        raw_login(&app, Some("application/json"), body).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
    let small = TestApp::spawn_with(|c| c.http.body_limit = 2048).await;
    let body = format!(r#"{{"login":"alice","password":"{}"}}"#, "y".repeat(3000));
    assert_problem(
        raw_login(&small, Some("application/json"), body).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems_too() {
    let app = TestApp::spawn().await;
    let missing = app
        .client
        .get(app.url("/v1/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_problem(missing, StatusCode::NOT_FOUND, "not_found").await;
    let wrong_method = app.client.get(app.url("/v1/login")).send().await.unwrap();
    assert_problem(
        wrong_method,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
}

#[tokio::test]
async fn health_and_jwks_answer() {
    let app = TestApp::spawn().await;
    let health: serde_json::Value = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let jwks = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(jwks.status(), StatusCode::OK);
}
