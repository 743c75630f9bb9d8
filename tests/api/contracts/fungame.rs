//! Seed 004: fungame `POST /user/login` with the `PayloadModel` envelope.

use reqwest::StatusCode;
use serde_json::json;

use super::{is_jwt, status_json};
use crate::helpers::TestApp;

/// The document's example password `Passw0rd!` is one Sesame's policy
/// refuses by default; to reproduce the example byte for byte these tests
/// switch the common-password check off.
async fn app_for_the_documented_example() -> TestApp {
    let app = TestApp::spawn_with(|c| c.passwords.refuse_common = false).await;
    app.create_with_password("player123", "Passw0rd!", &[])
        .await;
    app
}

#[tokio::test]
async fn the_documented_example_answers_the_envelope() {
    let app = app_for_the_documented_example().await;
    for path in ["/user/login", "/user/login/"] {
        let body = "{\n  \"Username\": \"player123\",\n  \"Password\": \"Passw0rd!\"\n}";
        let (status, body) = status_json(app.post_raw(path, "application/json", body).await).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["RequestType"], 13);
        assert_eq!(body["StatusCode"], 200);
        assert_eq!(body["Message"], "登录成功！");
        assert!(is_jwt(&body["Data"]["bearerToken"]));
        let open = body["Data"]["openToken"].as_str().unwrap();
        assert!(uuid::Uuid::parse_str(open).is_ok(), "{open}");
        assert_eq!(body.as_object().unwrap().len(), 4);
    }
}

#[tokio::test]
async fn the_open_token_names_the_session_and_can_end_it() {
    let app = app_for_the_documented_example().await;
    let (_, body) = status_json(
        app.post_json(
            "/user/login",
            &json!({"Username": "player123", "Password": "Passw0rd!"}),
        )
        .await,
    )
    .await;
    let bearer = body["Data"]["bearerToken"].as_str().unwrap();
    let open = body["Data"]["openToken"].as_str().unwrap();
    let sessions: serde_json::Value = app
        .get("/v1/me/sessions", bearer)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(sessions["sessions"][0]["id"], open);
    let ended = app
        .client
        .delete(app.url(&format!("/v1/me/sessions/{open}")))
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.me_status(bearer).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn wrong_credentials_are_the_documented_401() {
    let app = app_for_the_documented_example().await;
    let expected = (
        401,
        json!({"RequestType": 13, "StatusCode": 401, "Message": "用户名或密码不正确。", "Data": {}}),
    );
    for body in [
        json!({"Username": "player123", "Password": "wrong!!!"}),
        json!({"Username": "nobody", "Password": "Passw0rd!"}),
    ] {
        assert_eq!(
            status_json(app.post_json("/user/login", &body).await).await,
            expected
        );
    }
}

#[tokio::test]
async fn malformed_requests_are_the_documented_400() {
    let app = TestApp::spawn().await;
    let expected = (400, json!("服务器暂时无法处理登录请求。"));
    for body in [
        json!({"Username": "", "Password": "x"}),
        json!({"Username": "a"}),
        json!({"Username": 1, "Password": "x"}),
        json!([]),
    ] {
        assert_eq!(
            status_json(app.post_json("/user/login", &body).await).await,
            expected,
            "{body}"
        );
    }
    assert_eq!(
        status_json(app.post_raw("/user/login", "application/json", "{").await).await,
        expected
    );
}
