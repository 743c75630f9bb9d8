//! Seed 001: manager `POST /manager/login`, administrators only.

use serde_json::json;

use super::{is_jwt, status_json};
use crate::helpers::TestApp;

const PATH: &str = "/manager/login";

#[tokio::test]
async fn the_documented_example_signs_in_an_administrator() {
    let app = TestApp::spawn().await;
    app.create_with_password("admin", "your_password", &["administrator"])
        .await;
    let body = r#"{
      "username": "admin",
      "password": "your_password"
    }"#;
    let (status, body) = status_json(app.post_raw(PATH, "application/json", body).await).await;
    assert_eq!(status, 200, "{body}");
    assert!(is_jwt(&body["token"]));
    assert_eq!(body["expire"], 3600);
    assert_eq!(
        body["user"],
        json!({"username": "admin", "role": "administrator", "permissions": ["admin", "read", "write"]})
    );
    assert_eq!(
        app.me_status(body["token"].as_str().unwrap()).await,
        reqwest::StatusCode::OK
    );
}

#[tokio::test]
async fn every_refusal_is_the_same_401() {
    let app = TestApp::spawn().await;
    app.create_with_password("admin", "admin password", &["administrator"])
        .await;
    app.create_with_password("plain", "plain password", &[])
        .await;
    let expected = (401, json!({"error": "Invalid username or password"}));
    for body in [
        json!({"username": "admin", "password": "wrong password"}),
        json!({"username": "nobody", "password": "admin password"}),
        json!({"username": "plain", "password": "plain password"}),
        json!({"username": "admin"}),
        json!({"username": "", "password": "x"}),
    ] {
        assert_eq!(
            status_json(app.post_json(PATH, &body).await).await,
            expected,
            "{body}"
        );
    }
    let (status, body) =
        status_json(app.post_raw(PATH, "application/json", "not json").await).await;
    assert_eq!(
        (status, body),
        (400, json!({"error": "Invalid request body"}))
    );
}

#[tokio::test]
async fn the_required_permission_comes_from_the_configuration() {
    let app = TestApp::spawn_with(|c| c.contracts.manager_permission = "read".into()).await;
    app.create_with_password("plain", "plain password", &[])
        .await;
    let (status, body) = status_json(
        app.post_json(
            PATH,
            &json!({"username": "plain", "password": "plain password"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["user"]["role"], "user");
}
