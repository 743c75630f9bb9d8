//! Housekeeping: ended sessions and spent refresh tokens are purged, on
//! every backend, and nothing live is touched.

use reqwest::StatusCode;

use crate::helpers::{TestApp, access, assert_problem, refresh_token};

const DAY: i64 = 86_400;

#[tokio::test]
async fn ended_sessions_and_spent_refresh_tokens_are_purged_and_live_ones_kept() {
    let app = TestApp::spawn_with(|c| {
        c.housekeeping.keep_ended_sessions = 7 * DAY;
        c.housekeeping.keep_spent_refresh_tokens = 7 * DAY;
        c.housekeeping.batch = 10;
    })
    .await;
    app.create_user("alice").await;
    let ended = app.login_ok("alice").await;
    let kept = app.login_ok("alice").await;
    let spent = refresh_token(&kept).to_owned();
    let rotated = app.refresh(&spent).await;
    assert_eq!(rotated.status(), StatusCode::OK);
    let current: serde_json::Value = rotated.json().await.unwrap();
    assert_eq!(
        app.logout(access(&ended), None).await.status(),
        StatusCode::NO_CONTENT
    );
    // Eleven more ended sessions, so the purge needs more than one batch.
    for _ in 0..11 {
        let grant = app.login_ok("alice").await;
        app.logout(access(&grant), None).await;
    }

    // Within the retention nothing goes.
    app.clock.advance(6 * DAY);
    let purged = app.core.purge_ended().await.unwrap();
    assert_eq!(purged, Default::default());

    app.clock.advance(2 * DAY);
    let purged = app.core.purge_ended().await.unwrap();
    assert_eq!(purged.sessions, 12, "{purged:?}");
    assert_eq!(purged.refresh_tokens, 1, "{purged:?}");
    let store = app.second_store().await;
    let ended_id = ended["session_id"].as_str().unwrap().to_owned();
    assert!(store.get_session(&ended_id).await.unwrap().is_none());

    // The live session still works: its current refresh token, and the
    // access token that brings.
    let next = app.refresh(refresh_token(&current)).await;
    assert_eq!(next.status(), StatusCode::OK);
    let next: serde_json::Value = next.json().await.unwrap();
    assert_eq!(app.me_status(access(&next)).await, StatusCode::OK);
    // The purged spent token is now merely unknown.
    assert_problem(
        app.refresh(&spent).await,
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
    )
    .await;
    // A second round finds nothing more.
    assert_eq!(app.core.purge_ended().await.unwrap(), Default::default());
}

/// Only servers purge the audit log: an operator's command, perhaps run
/// without the servers' configuration and so with another retention,
/// deletes nothing.
#[tokio::test]
async fn only_servers_purge_the_audit_log() {
    use sesame::store::{AuditEvent, AuditQuery};
    let deployment = crate::helpers::Deployment::new().await;
    let store = deployment.open_store().await;
    let long_ago = AuditEvent {
        id: 0,
        at: crate::helpers::START - 100 * DAY,
        event: "login".into(),
        outcome: "success".into(),
        face: "native".into(),
        account_id: None,
        username: None,
        target_id: None,
        ip: None,
        user_agent: None,
        detail: Some("long ago".into()),
    };
    store.insert_audit_events(&[long_ago]).await.unwrap();
    let stored = || async {
        store
            .list_audit_events(&AuditQuery {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .len()
    };

    // A command's core, by the default retention of 90 days.
    let mut raw = sesame::config::RawConfig::default();
    deployment.apply(&mut raw);
    let config = raw.validate().unwrap();
    let command = sesame::app::open_core(&config, std::sync::Arc::new(sesame::clock::SystemClock))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(stored().await, 1, "a command purged the audit log");
    drop(command);

    // A server purges it at start.
    let _server = TestApp::spawn_in(deployment.clone(), |_| {}).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while stored().await > 0 {
        assert!(std::time::Instant::now() < deadline, "the server kept it");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
