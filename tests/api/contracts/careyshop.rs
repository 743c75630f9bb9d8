//! Seed 003: careyshop login (query string, form or JSON), opaque tokens,
//! one session per platform, and the refresh call.

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{is_contract_datetime, status_json};
use crate::helpers::{PASSWORD, TestApp};

const LOGIN: &str = "/api/v1/user/method/login.user.user/";
const REFRESH: &str = "/api/v1/user/method/refresh.token.user/";

fn is_token(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

async fn login_get(app: &TestApp, username: &str, password: &str, platform: &str) -> (u16, Value) {
    let response = app
        .client
        .get(app.url(LOGIN))
        .query(&[
            ("username", username),
            ("password", password),
            ("platform", platform),
        ])
        .send()
        .await
        .unwrap();
    status_json(response).await
}

fn check_documented_shape(body: &Value) {
    assert_eq!(body["status"], 200);
    assert_eq!(body["message"], "success");
    let user = &body["data"]["user"];
    for field in [
        "user_id",
        "is_mobile",
        "is_email",
        "sex",
        "user_level_id",
        "user_address_id",
        "group_id",
        "status",
    ] {
        assert!(
            user[field].is_i64(),
            "{field} must be an integer, is {}",
            user[field]
        );
    }
    for field in [
        "username", "mobile", "email", "nickname", "head_pic", "birthday", "last_ip",
    ] {
        assert!(
            user[field].is_string(),
            "{field} must be a string, is {}",
            user[field]
        );
    }
    for field in ["last_login", "create_time", "update_time"] {
        assert!(
            is_contract_datetime(&user[field]),
            "{field}: {}",
            user[field]
        );
    }
    assert_eq!(user.as_object().unwrap().len(), 18);
    let token = &body["data"]["token"];
    assert!(
        is_token(&token["token"]) && is_token(&token["refresh"]),
        "{token}"
    );
    assert!(
        token["group_id"].is_i64()
            && token["token_expires"].is_i64()
            && token["refresh_expires"].is_i64()
    );
}

#[tokio::test]
async fn the_documented_login_works_by_query_string_form_json_and_multipart() {
    let app = TestApp::spawn().await;
    app.create_user_full("dnyz529", None, Some("15867430425"), &[])
        .await;
    let (status, body) = login_get(&app, "dnyz529", PASSWORD, "iOS").await;
    assert_eq!(status, 200, "{body}");
    check_documented_shape(&body);
    assert_eq!(body["data"]["user"]["mobile"], "15867430425");
    assert_eq!(body["data"]["user"]["status"], 1);
    let token = &body["data"]["token"];
    assert_eq!(
        token["token_expires"].as_i64().unwrap(),
        crate::helpers::START + 3600
    );
    assert_eq!(
        token["refresh_expires"].as_i64().unwrap(),
        crate::helpers::START + 30 * 86_400
    );

    let form = format!(
        "username=dnyz529&password={}&platform=Android",
        PASSWORD.replace(' ', "+")
    );
    let (status, body) = status_json(
        app.post_raw(LOGIN, "application/x-www-form-urlencoded", &form)
            .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    check_documented_shape(&body);
    let (status, body) = status_json(
        app.post_json(
            LOGIN,
            &json!({"username": "dnyz529", "password": PASSWORD, "platform": "web"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    check_documented_shape(&body);
    // A browser's `FormData`: multipart, as PHP reads into `$_POST`.
    let multipart = format!(
        "--XyZ\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\ndnyz529\r\n\
         --XyZ\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\n{PASSWORD}\r\n\
         --XyZ\r\nContent-Disposition: form-data; name=\"platform\"\r\n\r\nH5\r\n--XyZ--\r\n"
    );
    let (status, body) = status_json(
        app.post_raw(LOGIN, "multipart/form-data; boundary=XyZ", &multipart)
            .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    check_documented_shape(&body);
    let (status, body) = status_json(
        app.post_raw(
            LOGIN,
            "multipart/form-data; boundary=XyZ",
            "--XyZ\r\nContent-Dis",
        )
        .await,
    )
    .await;
    assert_eq!((status, &body["status"]), (400, &json!(400)), "{body}");
    let no_slash = app
        .post_json(
            LOGIN.trim_end_matches('/'),
            &json!({"username": "dnyz529", "password": PASSWORD, "platform": "web"}),
        )
        .await;
    assert_eq!(no_slash.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_opaque_token_works_as_a_bearer_token() {
    let app = TestApp::spawn().await;
    app.create_user("dnyz529").await;
    let (_, body) = login_get(&app, "dnyz529", PASSWORD, "iOS").await;
    let token = body["data"]["token"]["token"].as_str().unwrap();
    let me: Value = app.get("/v1/me", token).await.json().await.unwrap();
    assert_eq!(me["username"], "dnyz529");
    app.clock.advance(3600);
    assert_eq!(
        app.me_status(token).await,
        StatusCode::UNAUTHORIZED,
        "expired by the injected clock"
    );
}

#[tokio::test]
async fn one_session_per_platform() {
    let app = TestApp::spawn().await;
    app.create_user("dnyz529").await;
    let token = |body: &Value| body["data"]["token"]["token"].as_str().unwrap().to_owned();
    let ios_a = token(&login_get(&app, "dnyz529", PASSWORD, "iOS").await.1);
    let android = token(&login_get(&app, "dnyz529", PASSWORD, "Android").await.1);
    assert_eq!(app.me_status(&ios_a).await, StatusCode::OK);
    let ios_b = token(&login_get(&app, "dnyz529", PASSWORD, "iOS").await.1);
    assert_eq!(
        app.me_status(&ios_a).await,
        StatusCode::UNAUTHORIZED,
        "device A is signed out at once"
    );
    assert_eq!(app.me_status(&ios_b).await, StatusCode::OK);
    assert_eq!(
        app.me_status(&android).await,
        StatusCode::OK,
        "other platforms are untouched"
    );
}

#[tokio::test]
async fn refresh_issues_a_new_token_and_the_old_one_stops_working() {
    let app = TestApp::spawn().await;
    app.create_user("dnyz529").await;
    let (_, body) = login_get(&app, "dnyz529", PASSWORD, "iOS").await;
    let old = body["data"]["token"].clone();
    app.clock.advance(60);
    let response = app
        .client
        .get(app.url(REFRESH))
        .query(&[("refresh", old["refresh"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(response).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], 200);
    let new = &body["data"]["token"];
    assert!(is_token(&new["token"]) && is_token(&new["refresh"]));
    assert_ne!(new["token"], old["token"]);
    assert_ne!(new["refresh"], old["refresh"]);
    assert_eq!(
        new["token_expires"].as_i64().unwrap(),
        crate::helpers::START + 60 + 3600
    );
    assert_eq!(
        new["refresh_expires"], old["refresh_expires"],
        "the session's lifetime is absolute"
    );
    assert_eq!(
        app.me_status(old["token"].as_str().unwrap()).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.me_status(new["token"].as_str().unwrap()).await,
        StatusCode::OK
    );

    app.clock.advance(10);
    let reuse = app
        .post_json(REFRESH, &json!({"refresh": old["refresh"]}))
        .await;
    assert_eq!(
        status_json(reuse).await,
        (
            401,
            json!({"status": 401, "message": "刷新授权码无效或已过期"})
        )
    );
    assert_eq!(
        app.me_status(new["token"].as_str().unwrap()).await,
        StatusCode::UNAUTHORIZED,
        "reuse ends the session"
    );
    let missing = app.post_json(REFRESH, &json!({})).await;
    assert_eq!(status_json(missing).await.0, 400);
}

#[tokio::test]
async fn parameters_are_validated_with_the_envelope() {
    let app = TestApp::spawn().await;
    app.create_user("dnyz529").await;
    let cases = [
        ("abc", PASSWORD, "iOS", "账号长度必须在4到20个字符之间"),
        (
            "abcdefghijklmnopqrstu",
            PASSWORD,
            "iOS",
            "账号长度必须在4到20个字符之间",
        ),
        ("", PASSWORD, "iOS", "账号不能为空"),
        ("dnyz529", "12345", "iOS", "密码长度不能小于6个字符"),
        ("dnyz529", "", "iOS", "密码不能为空"),
        ("dnyz529", PASSWORD, "", "来源平台不能为空"),
    ];
    for (username, password, platform, message) in cases {
        let got = login_get(&app, username, password, platform).await;
        assert_eq!(
            got,
            (400, json!({"status": 400, "message": message})),
            "{username} {password} {platform}"
        );
    }
    let long_platform = "p".repeat(51);
    let got = login_get(&app, "dnyz529", PASSWORD, &long_platform).await;
    assert_eq!(
        got,
        (
            400,
            json!({"status": 400, "message": "来源平台长度不能超过50个字符"})
        )
    );
    let wrong = login_get(&app, "dnyz529", "wrong password", "iOS").await;
    let unknown = login_get(&app, "nobody1", PASSWORD, "iOS").await;
    assert_eq!(wrong, unknown);
    assert_eq!(
        wrong,
        (401, json!({"status": 401, "message": "账号或密码错误"}))
    );
}
