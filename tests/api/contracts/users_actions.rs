//! Seed 002: users-actions `POST /api/v1/users/actions/login` with the MD5 of the password.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sesame::store::PasswordVerifiers;

use super::{is_contract_datetime, is_jwt, status_json};
use crate::helpers::{PASSWORD, TestApp, access};

const PATH: &str = "/api/v1/users/actions/login";

fn md5_hex(text: &str) -> String {
    use md5::{Digest, Md5};
    hex::encode(Md5::digest(text.as_bytes()))
}

async fn login(app: &TestApp, account: &str, password_md5: &str) -> (u16, Value) {
    status_json(
        app.post_json(PATH, &json!({"account": account, "password": password_md5}))
            .await,
    )
    .await
}

#[tokio::test]
async fn the_documented_request_shape_signs_in_by_username_email_or_mobile() {
    let app = TestApp::spawn().await;
    app.create_user_full("demo", Some("demo@sample.com"), Some("13888888888"), &[])
        .await;
    let digest = md5_hex(PASSWORD);
    let request = format!("{{\n  \"account\": \"demo\",\n  \"password\": \"{digest}\"\n}}");
    let (status, body) = status_json(app.post_raw(PATH, "application/json", &request).await).await;
    assert_eq!(status, 200, "{body}");
    assert!(is_jwt(&body["accessToken"]));
    let user = &body["value"];
    assert!(user["id"].is_i64());
    assert_eq!(user["userName"], "demo");
    for field in ["createDate", "lastResetPasswordDate", "lastActivityDate"] {
        assert!(
            is_contract_datetime(&user[field]),
            "{field}: {}",
            user[field]
        );
    }
    for field in ["countOfLogin", "countOfFailedLogin", "countOfWriting"] {
        assert!(user[field].is_i64(), "{field}");
    }
    assert_eq!(user["isChecked"], true);
    assert_eq!(user["isLockedOut"], false);
    assert_eq!(user["email"], "demo@sample.com");
    assert_eq!(user["mobile"], "13888888888");
    for field in [
        "displayName",
        "avatarUrl",
        "organization",
        "department",
        "position",
        "gender",
        "birthday",
        "education",
        "graduation",
        "address",
        "weiXin",
        "qq",
        "weiBo",
        "interests",
        "signature",
    ] {
        assert!(
            user[field].is_string(),
            "{field} must be a string, is {}",
            user[field]
        );
    }
    for secret in ["password", "passwordSalt", "passwordFormat"] {
        assert!(
            user.get(secret).is_none(),
            "{secret} must never be returned"
        );
    }
    assert_eq!(
        app.me_status(body["accessToken"].as_str().unwrap()).await,
        StatusCode::OK
    );
    for account in ["demo@sample.com", "13888888888", "DEMO"] {
        assert_eq!(login(&app, account, &digest).await.0, 200, "{account}");
    }
    assert_eq!(
        login(&app, "demo", &digest.to_uppercase()).await.0,
        200,
        "upper-case hex is the same digest"
    );
}

#[tokio::test]
async fn profile_attributes_fill_the_documented_strings() {
    let app = TestApp::spawn().await;
    let account = app.create_user("demo").await;
    let attributes = [("gender", "女"), ("qq", "10000"), ("signature", "hi")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Some(v.to_owned())))
        .collect();
    app.core
        .set_profile_attributes(
            account.id,
            attributes,
            &sesame::core::roles::Actor::Operator,
        )
        .await
        .unwrap();
    let (_, body) = login(&app, "demo", &md5_hex(PASSWORD)).await;
    assert_eq!(body["value"]["gender"], "女");
    assert_eq!(body["value"]["qq"], "10000");
    assert_eq!(body["value"]["education"], "");
}

#[tokio::test]
async fn a_password_changed_through_the_native_api_works_here_at_once() {
    let app = TestApp::spawn().await;
    app.create_user("demo").await;
    let grant = app.login_ok("demo").await;
    let response = app
        .client
        .post(app.url("/v1/me/password"))
        .bearer_auth(access(&grant))
        .json(&json!({"current_password": PASSWORD, "new_password": "a whole new secret"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        login(&app, "demo", &md5_hex("a whole new secret")).await.0,
        200
    );
    assert_eq!(login(&app, "demo", &md5_hex(PASSWORD)).await.0, 401);
}

#[tokio::test]
async fn an_account_without_an_md5_verifier_gets_one_at_its_next_login_anywhere() {
    let app = TestApp::spawn().await;
    let account = app.create_user("legacy").await;
    let store = app.second_store().await;
    let stored = app.core.account(account.id).await.unwrap();
    let without_md5 = PasswordVerifiers {
        password_hash: stored.verifiers.password_hash.clone(),
        md5_verifier: None,
    };
    store
        .set_password(account.id, &without_md5, false, None, 0)
        .await
        .unwrap();
    let (status, first) = login(&app, "legacy", &md5_hex(PASSWORD)).await;
    assert_eq!(
        status, 401,
        "no verifier yet: refused like a wrong password"
    );
    let (_, unknown) = login(&app, "nobody-here", &md5_hex(PASSWORD)).await;
    assert_eq!(first, unknown);
    app.login_ok("legacy").await;
    assert!(
        app.core
            .account(account.id)
            .await
            .unwrap()
            .verifiers
            .md5_verifier
            .is_some()
    );
    assert_eq!(login(&app, "legacy", &md5_hex(PASSWORD)).await.0, 200);
}

#[tokio::test]
async fn refusals_and_bad_parameters() {
    let app = TestApp::spawn().await;
    app.create_user("demo").await;
    let wrong = login(&app, "demo", &md5_hex("not the password")).await;
    let unknown = login(&app, "ghost", &md5_hex(PASSWORD)).await;
    assert_eq!(wrong, unknown);
    assert_eq!(wrong.0, 401);
    assert_eq!(wrong.1["code"], 401);
    assert!(wrong.1["message"].is_string());
    assert_eq!(
        login(&app, "demo", PASSWORD).await.0,
        400,
        "a plain password is not an MD5"
    );
    assert_eq!(login(&app, "demo", "").await.0, 400);
    assert_eq!(login(&app, "", &md5_hex(PASSWORD)).await.0, 400);
    let (status, _) = status_json(app.post_raw(PATH, "application/json", "[1,2]").await).await;
    assert_eq!(status, 400);
}
