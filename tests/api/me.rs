//! The caller's own account: `GET` and `PATCH /v1/me`.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, access, assert_problem};

async fn patch_me(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    app.client
        .patch(app.url("/v1/me"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn me_shows_the_account_behind_the_token() {
    let app = TestApp::spawn().await;
    app.create_user_full(
        "alice",
        Some("alice@example.com"),
        Some("13888888888"),
        &["administrator"],
    )
    .await;
    let grant = app.login_ok("alice").await;
    let me: Value = app
        .get("/v1/me", access(&grant))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["username"], "alice");
    assert_eq!(me["mobile"], "13888888888");
    assert_eq!(me["roles"], json!(["administrator"]));
    assert_eq!(me["permissions"], json!(["admin", "read", "write"]));
    assert!(me.get("password_hash").is_none() && me.get("verifiers").is_none());
}

#[tokio::test]
async fn profile_changes_are_saved_and_attributes_can_be_removed() {
    let app = TestApp::spawn().await;
    app.create_user("bob").await;
    let token = access(&app.login_ok("bob").await).to_owned();
    let body = json!({"display_name": "Bob B.", "avatar_url": "https://example.com/b.png", "profile": {"gender": "1", "birthday": "1990-01-02"}});
    let updated: Value = patch_me(&app, &token, body).await.json().await.unwrap();
    assert_eq!(updated["display_name"], "Bob B.");
    assert_eq!(
        updated["profile"],
        json!({"gender": "1", "birthday": "1990-01-02"})
    );
    let updated: Value = patch_me(&app, &token, json!({"profile": {"gender": null}}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(updated["profile"], json!({"birthday": "1990-01-02"}));
    assert_eq!(updated["display_name"], "Bob B.", "untouched fields stay");
    let me: Value = app.get("/v1/me", &token).await.json().await.unwrap();
    assert_eq!(me["avatar_url"], "https://example.com/b.png");
}

#[tokio::test]
async fn bad_profile_changes_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    app.create_user("carol").await;
    let token = access(&app.login_ok("carol").await).to_owned();
    assert_problem(
        patch_me(&app, &token, json!({"profile": {"bad name!": "x"}})).await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
    )
    .await;
    assert_problem(
        patch_me(&app, &token, json!({"display_name": "a\u{0}b"})).await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
    )
    .await;
    assert_problem(
        patch_me(&app, &token, json!({"displayName": "typo"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;
    assert_problem(
        patch_me(&app, &token, json!({"profile": {"a": 5}})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;
    let me: Value = app.get("/v1/me", &token).await.json().await.unwrap();
    assert_eq!(me["display_name"], "");
    assert_eq!(me["profile"], json!({}));
}

/// Attributes applications may grant rights by (careyshop's `group_id`,
/// users-actions' `department`, …) are set by an administrator, never by
/// their owner; the list is `profile.protected`.
#[tokio::test]
async fn users_cannot_set_the_attributes_applications_trust() {
    let app = TestApp::spawn().await;
    app.create_user("dave").await;
    let token = access(&app.login_ok("dave").await).to_owned();
    for name in [
        "group_id",
        "user_level_id",
        "organization",
        "department",
        "position",
    ] {
        let refused = patch_me(
            &app,
            &token,
            json!({"display_name": "Dave", "profile": {"nickname": "d", name: "1"}}),
        )
        .await;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{name}");
        let problem: Value = refused.json().await.unwrap();
        assert!(
            problem["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("set by an administrator"),
            "{problem}"
        );
        let removal = patch_me(&app, &token, json!({"profile": {name: null}})).await;
        assert_eq!(removal.status(), StatusCode::BAD_REQUEST, "{name}");
    }
    let me: Value = app.get("/v1/me", &token).await.json().await.unwrap();
    assert_eq!(me["profile"], json!({}), "nothing of a refused change");
    assert_eq!(me["display_name"], "");

    // An administrator sets them; the owner still edits the rest.
    let root = app
        .create_user_full("root", None, None, &["administrator"])
        .await;
    let _ = root;
    let admin = access(&app.login_ok("root").await).to_owned();
    let dave = app.core.find_by_username("dave").await.unwrap().id;
    let set = app
        .client
        .patch(app.url(&format!("/v1/admin/users/{dave}")))
        .bearer_auth(&admin)
        .json(&json!({"profile": {"group_id": "3"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), StatusCode::OK);
    let mine: Value = patch_me(&app, &token, json!({"profile": {"nickname": "d"}}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(mine["profile"], json!({"group_id": "3", "nickname": "d"}));
    let created = app
        .client
        .post(app.url("/v1/admin/users"))
        .bearer_auth(&admin)
        .json(&json!({"username": "fay", "password": "a long password 1", "profile": {"department": "ops"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let fay: Value = created.json().await.unwrap();
    assert_eq!(fay["profile"]["department"], "ops");
    let by_operator = crate::helpers::sesame_command(app.deployment.env())
        .args(["user", "set-profile", "fay", "position=lead"])
        .output()
        .unwrap();
    assert!(
        by_operator.status.success(),
        "{}",
        String::from_utf8_lossy(&by_operator.stderr)
    );
    assert_eq!(
        app.core.find_by_username("fay").await.unwrap().profile["position"],
        "lead"
    );

    // Configurable: an empty list protects nothing.
    let open = TestApp::spawn_with(|raw| raw.profile.protected = Vec::new()).await;
    open.create_user("erin").await;
    let erin = access(&open.login_ok("erin").await).to_owned();
    assert_eq!(
        patch_me(&open, &erin, json!({"profile": {"group_id": "1"}}))
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn me_needs_a_well_formed_bearer_token() {
    let app = TestApp::spawn().await;
    let no_header = app.client.get(app.url("/v1/me")).send().await.unwrap();
    assert_problem(no_header, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    for value in ["Basic abc", "Bearer", "Bearer a b", "bearer eyJ.eyJ.sig"] {
        let response = app
            .client
            .get(app.url("/v1/me"))
            .header("authorization", value)
            .send()
            .await
            .unwrap();
        assert_problem(response, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    }
}
