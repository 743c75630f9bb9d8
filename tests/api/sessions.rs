//! Logout, password change, session listing and per-platform policy.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TestApp, access, assert_problem, refresh_token};

#[tokio::test]
async fn logout_takes_effect_on_the_next_request() {
    let app = TestApp::spawn().await;
    app.create_user("alice").await;
    let grant = app.login_ok("alice").await;
    let other = app.login_ok("alice").await;
    assert_eq!(
        app.me_status(access(&grant)).await,
        StatusCode::OK,
        "warms the live-session cache"
    );
    assert_eq!(
        app.logout(access(&grant), None).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.me_status(access(&grant)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_problem(
        app.refresh(refresh_token(&grant)).await,
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
    )
    .await;
    assert_eq!(
        app.me_status(access(&other)).await,
        StatusCode::OK,
        "other sessions stay"
    );
}

#[tokio::test]
async fn logout_all_ends_every_session() {
    let app = TestApp::spawn().await;
    app.create_user("bob").await;
    let grants = [
        app.login_ok("bob").await,
        app.login_ok("bob").await,
        app.login_ok("bob").await,
    ];
    for grant in &grants {
        assert_eq!(app.me_status(access(grant)).await, StatusCode::OK);
    }
    assert_eq!(
        app.logout(access(&grants[0]), Some(json!({"all": true})))
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    for grant in &grants {
        assert_eq!(app.me_status(access(grant)).await, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn logout_refuses_a_malformed_body_and_keeps_the_session() {
    let app = TestApp::spawn().await;
    app.create_user("bob").await;
    let grant = app.login_ok("bob").await;
    assert_problem(
        app.logout(access(&grant), Some(json!({"all": "yes"})))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;
    assert_eq!(app.me_status(access(&grant)).await, StatusCode::OK);
    assert_problem(
        app.logout("not-a-token", None).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await;
}

async fn change_password(
    app: &TestApp,
    token: &str,
    current: &str,
    new: &str,
) -> reqwest::Response {
    app.client
        .post(app.url("/v1/me/password"))
        .bearer_auth(token)
        .json(&json!({ "current_password": current, "new_password": new }))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_password_change_ends_every_other_session() {
    let app = TestApp::spawn().await;
    app.create_user("carol").await;
    let mine = app.login_ok("carol").await;
    let other = app.login_ok("carol").await;
    assert_eq!(app.me_status(access(&other)).await, StatusCode::OK);
    let response = change_password(&app, access(&mine), PASSWORD, "a brand new passphrase").await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.me_status(access(&other)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_problem(
        app.refresh(refresh_token(&other)).await,
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
    )
    .await;
    assert_eq!(app.me_status(access(&mine)).await, StatusCode::OK);
    assert_problem(
        app.login("carol", PASSWORD).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    assert_eq!(
        app.login("carol", "a brand new passphrase").await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_password_change_needs_the_current_password_and_a_policy_compliant_new_one() {
    let app = TestApp::spawn().await;
    app.create_user("dan").await;
    let grant = app.login_ok("dan").await;
    let body = assert_problem(
        change_password(&app, access(&grant), "not my password", "another good one").await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
    )
    .await;
    assert_eq!(body["field"], "current_password");
    assert_problem(
        change_password(&app, access(&grant), PASSWORD, "short").await,
        StatusCode::BAD_REQUEST,
        "weak_password",
    )
    .await;
    assert_eq!(
        app.login("dan", PASSWORD).await.status(),
        StatusCode::OK,
        "nothing changed"
    );
}

/// Whoever holds a token cannot guess the password through the change form
/// faster than through the login: wrong current passwords spend the
/// account's failure budget, and a weak new password is refused before the
/// current one is checked, so that refusal tells nothing about it.
#[tokio::test]
async fn guessing_the_current_password_is_throttled_like_a_login() {
    let app = TestApp::spawn_with(|c| {
        c.abuse.account_burst = 3;
        c.abuse.account_interval = 60;
    })
    .await;
    app.create_user("dana").await;
    let grant = app.login_ok("dana").await;
    // Strangers spending the logins' budget do not hold up the owner's change.
    for i in 0..4 {
        let stranger = app.client_from(&format!("127.0.0.{}", 50 + i));
        let response = stranger
            .post(app.url("/v1/login"))
            .json(&json!({"login": "dana", "password": "wrong guess!"}))
            .send()
            .await
            .unwrap();
        assert_ne!(response.status(), StatusCode::OK);
    }
    assert_problem(
        change_password(&app, access(&grant), "not my password", "short").await,
        StatusCode::BAD_REQUEST,
        "weak_password",
    )
    .await;
    for guess in ["guess one!", "guess two!", "guess three!"] {
        let body = assert_problem(
            change_password(&app, access(&grant), guess, "another good one").await,
            StatusCode::BAD_REQUEST,
            "invalid_input",
        )
        .await;
        assert_eq!(body["field"], "current_password");
    }
    let throttled = change_password(&app, access(&grant), PASSWORD, "another good one").await;
    assert_eq!(throttled.headers()["retry-after"], "60");
    assert_problem(throttled, StatusCode::TOO_MANY_REQUESTS, "throttled").await;
    app.clock.advance(60);
    assert_eq!(
        change_password(&app, access(&grant), PASSWORD, "another good one")
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
}

/// A thief holding a token spends the account's API-call quota: the owner
/// can still list and end sessions, change the password and sign out, and
/// none of that counts against the quota.
#[tokio::test]
async fn a_spent_quota_does_not_keep_the_owner_from_taking_the_account_back() {
    let app = TestApp::spawn().await;
    let account = app.create_user("gwen").await;
    app.core
        .set_quota(
            account.id,
            Some(2),
            None,
            &sesame::core::roles::Actor::Operator,
        )
        .await
        .unwrap();
    let thief = app.login_on("gwen", "iOS").await;
    let owner = app.login_ok("gwen").await;
    for _ in 0..2 {
        assert_eq!(app.me_status(access(&thief)).await, StatusCode::OK);
    }
    assert_problem(
        app.get("/v1/me", access(&owner)).await,
        StatusCode::TOO_MANY_REQUESTS,
        "quota_exceeded",
    )
    .await;

    let listed = app.get("/v1/me/sessions", access(&owner)).await;
    assert_eq!(listed.status(), StatusCode::OK);
    let listed: Value = listed.json().await.unwrap();
    assert_eq!(listed["sessions"].as_array().unwrap().len(), 2);
    let path = format!("/v1/me/sessions/{}", thief["session_id"].as_str().unwrap());
    let ended = app
        .client
        .delete(app.url(&path))
        .bearer_auth(access(&owner))
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    assert_problem(
        app.refresh(refresh_token(&thief)).await,
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
    )
    .await;
    let changed = change_password(&app, access(&owner), PASSWORD, "gwen's new passphrase").await;
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.logout(access(&owner), None).await.status(),
        StatusCode::NO_CONTENT
    );

    app.core.flush_api_calls().await.unwrap();
    assert_eq!(
        app.core.account(account.id).await.unwrap().api_calls_count,
        2,
        "only the thief's calls counted"
    );
}

#[tokio::test]
async fn sessions_are_listed_and_can_be_ended_one_by_one() {
    let app = TestApp::spawn().await;
    app.create_user("erin").await;
    let phone = app.login_on("erin", "iOS").await;
    let laptop = app
        .client
        .post(app.url("/v1/login"))
        .header("user-agent", "test-browser/1.0")
        .json(&json!({"login": "erin", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let listed: Value = app
        .get("/v1/me/sessions", access(&laptop))
        .await
        .json()
        .await
        .unwrap();
    let sessions = listed["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    let current = sessions.iter().find(|s| s["current"] == true).unwrap();
    assert_eq!(current["id"], laptop["session_id"]);
    assert_eq!(current["platform"], "web");
    assert_eq!(current["user_agent"], "test-browser/1.0");
    assert_eq!(current["ip"], "127.0.0.1");
    let phone_session = sessions.iter().find(|s| s["current"] == false).unwrap();
    assert_eq!(phone_session["platform"], "iOS");

    let path = format!("/v1/me/sessions/{}", phone["session_id"].as_str().unwrap());
    let ended = app
        .client
        .delete(app.url(&path))
        .bearer_auth(access(&laptop))
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.me_status(access(&phone)).await,
        StatusCode::UNAUTHORIZED
    );
    let again = app
        .client
        .delete(app.url(&path))
        .bearer_auth(access(&laptop))
        .send()
        .await
        .unwrap();
    assert_problem(again, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn nobody_can_end_someone_elses_session() {
    let app = TestApp::spawn().await;
    app.create_user("frank").await;
    app.create_user("mallory").await;
    let victim = app.login_ok("frank").await;
    let attacker = app.login_ok("mallory").await;
    let path = format!("/v1/me/sessions/{}", victim["session_id"].as_str().unwrap());
    let response = app
        .client
        .delete(app.url(&path))
        .bearer_auth(access(&attacker))
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(app.me_status(access(&victim)).await, StatusCode::OK);
}

#[tokio::test]
async fn a_single_session_platform_keeps_only_the_newest_session() {
    let app = TestApp::spawn_with(|c| {
        c.sessions.platforms.insert("iOS".into(), "single".into());
    })
    .await;
    app.create_user("grace").await;
    let ios_a = app.login_on("grace", "iOS").await;
    let android = app.login_on("grace", "Android").await;
    let web_a = app.login_on("grace", "web").await;
    assert_eq!(app.me_status(access(&ios_a)).await, StatusCode::OK);
    let ios_b = app.login_on("grace", "iOS").await;
    assert_eq!(
        app.me_status(access(&ios_a)).await,
        StatusCode::UNAUTHORIZED,
        "replaced at once"
    );
    assert_problem(
        app.refresh(refresh_token(&ios_a)).await,
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
    )
    .await;
    let web_b = app.login_on("grace", "web").await;
    for grant in [&ios_b, &android, &web_a, &web_b] {
        assert_eq!(app.me_status(access(grant)).await, StatusCode::OK);
    }
}

#[tokio::test]
async fn disabling_an_account_ends_its_sessions() {
    let app = TestApp::spawn().await;
    let account = app.create_user("heidi").await;
    let grant = app.login_ok("heidi").await;
    assert_eq!(app.me_status(access(&grant)).await, StatusCode::OK);
    app.core
        .set_enabled(account.id, false, &sesame::core::roles::Actor::Operator)
        .await
        .unwrap();
    assert_eq!(
        app.me_status(access(&grant)).await,
        StatusCode::UNAUTHORIZED
    );
    app.core
        .set_enabled(account.id, true, &sesame::core::roles::Actor::Operator)
        .await
        .unwrap();
    assert_eq!(
        app.me_status(access(&grant)).await,
        StatusCode::UNAUTHORIZED,
        "a re-enabled account signs in afresh"
    );
    app.login_ok("heidi").await;
}

/// A session list comes in pages (`limit`, then `cursor` = the previous
/// page's `next_cursor`), oldest first, each session once, also when many
/// were opened in the same second; an account with thousands of sessions
/// (a script that signs in every minute) no longer answers them all at once.
#[tokio::test]
async fn session_lists_come_in_pages() {
    let app = TestApp::spawn().await;
    let alice = app.create_user("alice").await;
    let mut opened = Vec::new();
    for i in 0..7 {
        if i % 3 == 0 {
            app.clock.advance(1);
        }
        opened.push(
            app.login_ok("alice").await["session_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    app.clock.advance(1);
    let token = app.login_ok("alice").await;
    let token = access(&token).to_owned();
    let mut seen: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            None => "/v1/me/sessions?limit=2".to_owned(),
            Some(cursor) => format!("/v1/me/sessions?limit=2&cursor={cursor}"),
        };
        let page: Value = app.get(&path, &token).await.json().await.unwrap();
        pages += 1;
        let sessions = page["sessions"].as_array().unwrap();
        assert!(sessions.len() <= 2, "{page}");
        seen.extend(sessions.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 4);
    let ids: Vec<&str> = seen.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 8);
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), 8, "a session listed twice: {ids:?}");
    for id in &opened {
        assert!(ids.contains(&id.as_str()), "{id} missing");
    }
    let created: Vec<&str> = seen
        .iter()
        .map(|s| s["created_at"].as_str().unwrap())
        .collect();
    assert!(created.windows(2).all(|w| w[0] <= w[1]), "{created:?}");
    assert_eq!(seen.iter().filter(|s| s["current"] == true).count(), 1);
    assert_eq!(seen[7]["current"], true, "the newest is the caller's");
    // Without a limit: 50 at most, here all of them.
    let all: Value = app
        .get("/v1/me/sessions", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all["sessions"].as_array().unwrap().len(), 8);
    assert_eq!(all["next_cursor"], Value::Null);

    for (query, field) in [
        ("cursor=12", "cursor"),
        ("cursor=12.not-a-session", "cursor"),
        ("cursor=-5.00000000-0000-0000-0000-000000000000", "cursor"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=many", "limit"),
        ("limit=-1", "limit"),
        ("limit=4294967296", "limit"),
        ("cursor=a&cursor=b", "query"),
    ] {
        let body = assert_problem(
            app.get(&format!("/v1/me/sessions?{query}"), &token).await,
            StatusCode::BAD_REQUEST,
            "invalid_input",
        )
        .await;
        assert_eq!(body["field"], field, "{query}: {body}");
    }

    // Other parameters are ignored, as before these lists had pages.
    let busted: Value = app
        .get("/v1/me/sessions?_=1764600000", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(busted["sessions"], all["sessions"]);

    // The administrator's list of the same account pages alike.
    app.create_user_full("root", None, None, &["administrator"])
        .await;
    let root = access(&app.login_ok("root").await).to_owned();
    let path = format!("/v1/admin/users/{}/sessions?limit=5", alice.id);
    let first: Value = app.get(&path, &root).await.json().await.unwrap();
    assert_eq!(first["items"].as_array().unwrap().len(), 5);
    let next = first["next_cursor"].as_str().unwrap();
    let rest: Value = app
        .get(&format!("{path}&cursor={next}"), &root)
        .await
        .json()
        .await
        .unwrap();
    let rest_ids: Vec<&str> = rest["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(rest_ids, ids[5..].to_vec());
    assert_eq!(rest["next_cursor"], Value::Null);
}
