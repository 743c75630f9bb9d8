//! Storage tests written once and run against every backend (the SQLite
//! and PostgreSQL modules call each with a fresh store of their own).

use std::sync::Arc;

use crate::store::{
    AccountChange, AccountId, AccountStatus, AuthorizationCode, ClientKind, ContactChange, Kept,
    LoginRecord, NewAccount, NewRefreshToken, NewSession, OAuthClient, PasswordVerifiers,
    ProfilePatch, PurgeCutoffs, QuotaPeriod, Redemption, Role, RoleChange, SessionCursor, Store,
    StoreError, SuccessorHashes, TokenStyle,
};

async fn account(store: &dyn Store, name: &str) -> AccountId {
    account_with(store, name, "user").await
}

/// An account with the `user` role, for a backend's own tests.
pub async fn account_for_tests(store: &dyn Store, name: &str) -> AccountId {
    account(store, name).await
}

/// [`sessions`], for a backend's own tests.
pub async fn sessions_for_tests(store: &dyn Store, n: usize) -> AccountId {
    sessions(store, n).await
}

async fn account_with(store: &dyn Store, name: &str, role: &str) -> AccountId {
    store
        .create_account(NewAccount {
            username: name.into(),
            username_key: name.into(),
            email: None,
            email_key: None,
            mobile: None,
            display_name: String::new(),
            verifiers: PasswordVerifiers {
                password_hash: "x".into(),
                md5_verifier: None,
            },
            roles: vec![role.into()],
            max_api_calls: 0,
            quota_period: None,
            profile: Default::default(),
            created_at: 0,
        })
        .await
        .unwrap()
        .id
}

fn session(id: &str, account_id: AccountId, platform: &str, at: i64) -> NewSession {
    NewSession {
        id: id.into(),
        account_id,
        platform: platform.into(),
        user_agent: None,
        ip: None,
        token_style: TokenStyle::Jwt,
        created_at: at,
        expires_at: at + 1000,
    }
}

fn login(account_id: AccountId, at: i64) -> LoginRecord {
    LoginRecord {
        account_id,
        at,
        ip: Some("192.0.2.1".into()),
        clients: vec![],
        keep: 1,
        password_hash: None,
    }
}

/// Opens `n` sessions `s0`… with first refresh tokens `[i; 32]`.
async fn sessions(store: &dyn Store, n: usize) -> AccountId {
    let account_id = account(store, "a").await;
    for i in 0..n {
        let session = session(&format!("s{i}"), account_id, "web", 0);
        let first = NewRefreshToken {
            hash: [i as u8; 32],
            session_id: session.id.clone(),
            issued_at: 0,
        };
        store
            .record_login(&login(account_id, 0), &session, &first, false)
            .await
            .unwrap();
    }
    account_id
}

/// A login that read the account before an administrator disabled (or
/// deleted) it writes nothing; lockouts and unlocks never undo a disabling.
pub async fn logins_and_lockouts_never_undo_a_disabling(store: Arc<dyn Store>) {
    let account_id = account(&*store, "a").await;
    let open = |id: &'static str, hash: u8| {
        let store = Arc::clone(&store);
        async move {
            store
                .record_login(
                    &login(account_id, 10),
                    &session(id, account_id, "web", 10),
                    &NewRefreshToken {
                        hash: [hash; 32],
                        session_id: id.into(),
                        issued_at: 10,
                    },
                    true,
                )
                .await
                .unwrap()
        }
    };
    let status = || async { store.get_account(account_id).await.unwrap().unwrap().status };

    // Lock and unlock: each only from the status it leaves.
    assert!(store.set_locked(account_id, true, 1).await.unwrap());
    assert!(
        !store.set_locked(account_id, true, 2).await.unwrap(),
        "already locked"
    );
    assert_eq!(status().await, AccountStatus::Locked);
    assert_eq!(
        open("s1", 1).await,
        Some(vec![]),
        "a locked account may sign in"
    );
    assert!(store.set_locked(account_id, false, 3).await.unwrap());
    assert_eq!(status().await, AccountStatus::Active);

    // Disabled (which ends s1 with it): no login records itself, no lock
    // or unlock enables it.
    store
        .set_status(account_id, AccountStatus::Disabled, 4)
        .await
        .unwrap();
    let s1 = store.get_session(&"s1".into()).await.unwrap().unwrap();
    assert_eq!(s1.revoked_at, Some(4), "the disabling ended s1");
    let before = store.get_account(account_id).await.unwrap().unwrap();
    assert_eq!(open("s2", 2).await, None);
    assert!(store.get_session(&"s2".into()).await.unwrap().is_none());
    assert!(store.find_refresh_token(&[2; 32]).await.unwrap().is_none());
    assert!(!store.set_locked(account_id, false, 5).await.unwrap());
    assert!(!store.set_locked(account_id, true, 5).await.unwrap());
    let after = store.get_account(account_id).await.unwrap().unwrap();
    assert_eq!(after.status, AccountStatus::Disabled);
    assert_eq!(after.login_count, before.login_count);

    // Deleted: the same.
    assert!(store.delete_account(account_id).await.unwrap());
    assert_eq!(open("s3", 3).await, None);
    assert!(!store.set_locked(account_id, false, 6).await.unwrap());
}

/// A new password and the end of the account's other sessions are one
/// write: over a hash changed meanwhile, neither happens.
pub async fn a_new_password_ends_sessions_with_it(store: Arc<dyn Store>) {
    let id = account(&*store, "a").await;
    for (n, name) in ["keep", "other"].into_iter().enumerate() {
        let open = session(name, id, "web", 1);
        let refresh = NewRefreshToken {
            hash: [n as u8 + 40; 32],
            session_id: open.id.clone(),
            issued_at: 1,
        };
        store
            .record_login(&login(id, 1), &open, &refresh, false)
            .await
            .unwrap();
    }
    let verifiers = PasswordVerifiers {
        password_hash: "new".into(),
        md5_verifier: None,
    };
    let keep = Kept {
        session: Some("keep".to_owned()),
        ..Kept::default()
    };
    let changed = store
        .set_password_ending_sessions(id, &verifiers, Some("not x"), &keep, "changed", 2)
        .await
        .unwrap();
    assert_eq!(changed, None, "the hash is no longer the one replaced");
    assert_eq!(store.list_live_sessions(id, 2).await.unwrap().len(), 2);
    assert_eq!(
        store
            .get_account(id)
            .await
            .unwrap()
            .unwrap()
            .verifiers
            .password_hash,
        "x"
    );

    let changed = store
        .set_password_ending_sessions(id, &verifiers, Some("x"), &keep, "changed", 3)
        .await
        .unwrap();
    assert_eq!(changed, Some(vec!["other".to_owned()]));
    let live = store.list_live_sessions(id, 3).await.unwrap();
    assert_eq!(
        live.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["keep"]
    );
    let account = store.get_account(id).await.unwrap().unwrap();
    assert_eq!(account.verifiers.password_hash, "new");
    assert_eq!(account.password_changed_at, 3);
    // Without a session to keep (a reset), every one ends.
    let reset = store
        .set_password_ending_sessions(id, &verifiers, None, &Kept::default(), "reset", 4)
        .await
        .unwrap();
    assert_eq!(reset, Some(vec!["keep".to_owned()]));
    assert!(
        store
            .set_password_ending_sessions(999, &verifiers, None, &Kept::default(), "reset", 4)
            .await
            .unwrap()
            .is_none()
    );
}

/// New verifiers of the same password are written only over the hash they
/// replace: a password changed meanwhile stays; and a login checked
/// against a replaced hash opens no session.
pub async fn verifier_upgrades_never_overwrite_a_new_password(store: Arc<dyn Store>) {
    let id = account(&*store, "a").await;
    let verifiers = |hash: &str| PasswordVerifiers {
        password_hash: hash.into(),
        md5_verifier: None,
    };
    let stored = || async { store.get_account(id).await.unwrap().unwrap() };
    // A change: its time is recorded.
    assert!(
        store
            .set_password(id, &verifiers("new"), true, Some("x"), 7)
            .await
            .unwrap()
    );
    assert_eq!(stored().await.password_changed_at, 7);
    // An upgrade read before that change: refused.
    assert!(
        !store
            .set_password(id, &verifiers("x-upgraded"), false, Some("x"), 8)
            .await
            .unwrap()
    );
    assert_eq!(stored().await.verifiers.password_hash, "new");
    // An upgrade of the current hash: written, the time kept.
    assert!(
        store
            .set_password(id, &verifiers("new-upgraded"), false, Some("new"), 9)
            .await
            .unwrap()
    );
    let account = stored().await;
    assert_eq!(account.verifiers.password_hash, "new-upgraded");
    assert_eq!(account.password_changed_at, 7);
    // A reset: unconditional.
    assert!(
        store
            .set_password(id, &verifiers("reset"), true, None, 10)
            .await
            .unwrap()
    );
    assert_eq!(stored().await.verifiers.password_hash, "reset");
    assert!(
        !store
            .set_password(AccountId::MAX, &verifiers("y"), true, None, 11)
            .await
            .unwrap()
    );

    // A login checked against the hash before the reset opens no session.
    let sign_in = |session_id: &'static str, checked: &str, hash: u8| {
        let record = LoginRecord {
            password_hash: Some(checked.into()),
            ..login(id, 12)
        };
        let store = Arc::clone(&store);
        async move {
            let refresh = NewRefreshToken {
                hash: [hash; 32],
                session_id: session_id.into(),
                issued_at: 12,
            };
            let session = session(session_id, id, "web", 12);
            store
                .record_login(&record, &session, &refresh, false)
                .await
                .unwrap()
        }
    };
    assert_eq!(sign_in("late", "new-upgraded", 1).await, None);
    assert!(store.get_session(&"late".into()).await.unwrap().is_none());
    assert!(store.find_refresh_token(&[1; 32]).await.unwrap().is_none());
    assert_eq!(stored().await.login_count, 0);
    assert_eq!(sign_in("current", "reset", 2).await, Some(vec![]));
    assert_eq!(stored().await.login_count, 1);
}

/// 32 concurrent rotations of one token: exactly one successor.
pub async fn concurrent_rotations_have_one_winner(store: Arc<dyn Store>) {
    sessions(&*store, 1).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..32u8 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let successor = NewRefreshToken {
                hash: [100 + i; 32],
                session_id: "s0".into(),
                issued_at: 5,
            };
            store
                .rotate_refresh_token(&[0; 32], &[i; 32], &successor, 5)
                .await
                .unwrap()
        });
    }
    let wins = tasks
        .join_all()
        .await
        .into_iter()
        .filter(|won| *won)
        .count();
    assert_eq!(wins, 1);
    let parent = store.find_refresh_token(&[0; 32]).await.unwrap().unwrap();
    assert_eq!(parent.rotated_at, Some(5));
    let salt = parent.successor_salt.unwrap();
    let winner = 100 + salt[0];
    assert!(
        store
            .find_refresh_token(&[winner; 32])
            .await
            .unwrap()
            .is_some(),
        "the winner's successor exists"
    );
    for loser in (100..132u8).filter(|h| *h != winner) {
        assert!(
            store
                .find_refresh_token(&[loser; 32])
                .await
                .unwrap()
                .is_none(),
            "a loser's successor was stored"
        );
    }
}

/// The same through the one-step read-and-rotate: exactly one call rotates,
/// every call sees the token and its session, and a token of a revoked
/// session is found but never rotated.
pub async fn concurrent_find_and_rotate_has_one_winner(store: Arc<dyn Store>) {
    sessions(&*store, 2).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..32u8 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let successors = SuccessorHashes {
                jwt: [100 + i; 32],
                opaque: [200 - i; 32],
            };
            store
                .find_and_rotate_refresh_token(&[0; 32], &[i; 32], &successors, 5)
                .await
                .unwrap()
                .expect("found")
        });
    }
    let found = tasks.join_all().await;
    assert_eq!(found.iter().filter(|(_, _, rotated)| *rotated).count(), 1);
    assert!(
        found
            .iter()
            .all(|(token, session, _)| token.session_id == "s0" && session.id == "s0")
    );
    let parent = store.find_refresh_token(&[0; 32]).await.unwrap().unwrap();
    let winner = 100 + parent.successor_salt.unwrap()[0];
    let successor = store
        .find_refresh_token(&[winner; 32])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (successor.session_id.as_str(), successor.issued_at),
        ("s0", 5)
    );

    store
        .revoke_session(&"s1".to_owned(), 6, "logout")
        .await
        .unwrap();
    let successors = SuccessorHashes {
        jwt: [50; 32],
        opaque: [51; 32],
    };
    let (token, session, rotated) = store
        .find_and_rotate_refresh_token(&[1; 32], &[1; 32], &successors, 7)
        .await
        .unwrap()
        .unwrap();
    assert!(!rotated && token.rotated_at.is_none() && session.revoked_at == Some(6));
    assert!(store.find_refresh_token(&[50; 32]).await.unwrap().is_none());
    assert!(
        store
            .find_and_rotate_refresh_token(&[99; 32], &[1; 32], &successors, 7)
            .await
            .unwrap()
            .is_none()
    );
}

/// Rotations of different sessions at once all succeed; a token presented
/// for another session never rotates.
pub async fn independent_rotations_all_win(store: Arc<dyn Store>) {
    sessions(&*store, 20).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20u8 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let successor = NewRefreshToken {
                hash: [200 - i; 32],
                session_id: format!("s{i}"),
                issued_at: 7,
            };
            store
                .rotate_refresh_token(&[i; 32], &[1; 32], &successor, 7)
                .await
                .unwrap()
        });
    }
    assert!(tasks.join_all().await.into_iter().all(|won| won));
    let wrong_session = NewRefreshToken {
        hash: [250; 32],
        session_id: "s1".into(),
        issued_at: 8,
    };
    assert!(
        !store
            .rotate_refresh_token(&[0; 32], &[1; 32], &wrong_session, 8)
            .await
            .unwrap()
    );
}

/// Sixteen concurrent logins of one account on a `single` platform: each
/// replaces the others, and exactly one session stays live.
pub async fn concurrent_single_platform_logins(store: Arc<dyn Store>) {
    let account_id = account(&*store, "solo").await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16u8 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let session = session(&format!("p{i}"), account_id, "iOS", 10);
            let refresh = NewRefreshToken {
                hash: [i; 32],
                session_id: session.id.clone(),
                issued_at: 10,
            };
            store
                .record_login(&login(account_id, 10), &session, &refresh, true)
                .await
                .unwrap()
                .unwrap()
        });
    }
    let replaced: usize = tasks.join_all().await.iter().map(Vec::len).sum();
    let live = store.list_live_sessions(account_id, 10).await.unwrap();
    assert_eq!(live.len(), 1, "exactly one live session: {live:?}");
    assert_eq!(replaced, 15, "every other login was replaced once");
    let account = store.get_account(account_id).await.unwrap().unwrap();
    assert_eq!(account.login_count, 16);
}

/// Pages of an account's live sessions follow (created_at, id): ties of
/// one second are broken by id, a session ended between two pages is not
/// listed and moves nothing, other accounts' sessions never appear.
pub async fn live_sessions_in_pages(store: Arc<dyn Store>) {
    let account_id = account(&*store, "many").await;
    let other = account(&*store, "other").await;
    // Six sessions over two seconds, ids out of creation order.
    let opened = [("e", 5), ("b", 5), ("d", 5), ("f", 6), ("a", 6), ("c", 6)];
    for (i, (id, at)) in opened.iter().enumerate() {
        let session = session(id, account_id, "web", *at);
        let refresh = NewRefreshToken {
            hash: [i as u8; 32],
            session_id: session.id.clone(),
            issued_at: *at,
        };
        store
            .record_login(&login(account_id, *at), &session, &refresh, false)
            .await
            .unwrap()
            .unwrap();
    }
    let theirs = session("0", other, "web", 5);
    let refresh = NewRefreshToken {
        hash: [99; 32],
        session_id: theirs.id.clone(),
        issued_at: 5,
    };
    store
        .record_login(&login(other, 5), &theirs, &refresh, false)
        .await
        .unwrap()
        .unwrap();
    let page = |after: Option<SessionCursor>, limit| {
        let store = Arc::clone(&store);
        async move {
            store
                .page_live_sessions(account_id, 10, after.as_ref(), limit)
                .await
                .unwrap()
                .into_iter()
                .map(|s| (s.created_at, s.id))
                .collect::<Vec<_>>()
        }
    };
    let cursor = |(created_at, id): &(i64, String)| SessionCursor {
        created_at: *created_at,
        id: id.clone(),
    };
    let first = page(None, 2).await;
    assert_eq!(first, [(5, "b".to_owned()), (5, "d".to_owned())]);
    // The session the cursor names ends between pages: the next page still
    // starts right after it.
    assert!(
        store
            .revoke_session(&"d".to_owned(), 7, "logout")
            .await
            .unwrap()
    );
    let second = page(Some(cursor(&first[1])), 2).await;
    assert_eq!(second, [(5, "e".to_owned()), (6, "a".to_owned())]);
    let third = page(Some(cursor(&second[1])), 2).await;
    assert_eq!(third, [(6, "c".to_owned()), (6, "f".to_owned())]);
    assert!(page(Some(cursor(&third[1])), 2).await.is_empty());
    // All at once, with "d" gone.
    let all: Vec<String> = page(None, 100)
        .await
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    assert_eq!(all, ["b", "e", "a", "c", "f"]);
    // Sessions expired at `now` are not live.
    let later = store
        .page_live_sessions(account_id, 1005, None, 100)
        .await
        .unwrap();
    assert_eq!(later.len(), 3, "those of second 5 expired: {later:?}");
}

/// A login remembers the clients it came from, newest first and at most
/// `keep` of each kind, and the next login's read says whether its client is
/// among them.
pub async fn known_clients_newest_first(store: Arc<dyn Store>) {
    let account_id = account(&*store, "regular").await;
    let known = |device: &'static str, address: &'static str| {
        let store = Arc::clone(&store);
        async move {
            let found = store
                .find_account_for_login("regular", None, Some(device), Some(address))
                .await
                .unwrap()
                .unwrap();
            (found.known_device, found.known_address)
        }
    };
    let sign_in = |i: u8, device: &'static str, address: &'static str| {
        let store = Arc::clone(&store);
        async move {
            let record = LoginRecord {
                account_id,
                at: i64::from(i),
                ip: Some(address.into()),
                clients: vec![
                    (ClientKind::Address, address.into()),
                    (ClientKind::Device, device.into()),
                ],
                keep: 2,
                password_hash: None,
            };
            let session = session(&format!("k{i}"), account_id, "web", i64::from(i));
            let refresh = NewRefreshToken {
                hash: [100 + i; 32],
                session_id: session.id.clone(),
                issued_at: i64::from(i),
            };
            store
                .record_login(&record, &session, &refresh, false)
                .await
                .unwrap();
        }
    };
    assert_eq!(known("d1", "192.0.2.1").await, (false, false));
    sign_in(1, "d1", "192.0.2.1").await;
    sign_in(2, "d2", "192.0.2.2").await;
    sign_in(3, "d1", "192.0.2.3").await;
    // Devices d1 (seen again last), d2; addresses .3, .2 (.1 pushed out).
    assert_eq!(known("d1", "192.0.2.1").await, (true, false));
    assert_eq!(known("d2", "192.0.2.2").await, (true, true));
    assert_eq!(known("d3", "192.0.2.3").await, (false, true));
    sign_in(4, "d3", "192.0.2.3").await;
    // d3 in front pushes out the oldest device, d2.
    assert_eq!(known("d2", "192.0.2.3").await, (false, true));
    assert_eq!(known("d1", "192.0.2.9").await, (true, false));
    let is_known = |kind, value| store.is_known_client(account_id, kind, value);
    assert!(is_known(ClientKind::Device, "d3").await.unwrap());
    assert!(!is_known(ClientKind::Device, "d2").await.unwrap());
    assert!(is_known(ClientKind::Address, "192.0.2.2").await.unwrap());
    assert!(!is_known(ClientKind::Address, "192.0.2.1").await.unwrap());
    let account = store.get_account(account_id).await.unwrap().unwrap();
    assert_eq!(account.login_count, 4);
    assert_eq!(account.last_login_ip.as_deref(), Some("192.0.2.3"));

    // A new password forgets them all: a client that signed in with the
    // old one (a thief's, perhaps) is exempt from the account's budget
    // and lockout no more. So does a disabling. It unlocks the account
    // too: the owner's clients are unknown now, and the guessing that
    // locked it was of the old password.
    assert!(store.set_locked(account_id, true, 5).await.unwrap());
    let verifiers = PasswordVerifiers {
        password_hash: "new".into(),
        md5_verifier: None,
    };
    store
        .set_password_ending_sessions(
            account_id,
            &verifiers,
            None,
            &Kept::default(),
            "password_reset",
            5,
        )
        .await
        .unwrap();
    let account = store.get_account(account_id).await.unwrap().unwrap();
    assert_eq!(account.status, AccountStatus::Active);
    assert_eq!(account.consecutive_failures, 0);
    assert_eq!(known("d3", "192.0.2.3").await, (false, false));
    assert_eq!(known("d1", "192.0.2.2").await, (false, false));
    sign_in(6, "d6", "192.0.2.6").await;
    assert_eq!(known("d6", "192.0.2.6").await, (true, true));
    // A change by the owner keeps the changing client alone.
    let kept = Kept {
        session: None,
        device: Some("d7".into()),
        address: Some("192.0.2.7".into()),
    };
    store
        .set_password_ending_sessions(account_id, &verifiers, None, &kept, "password_changed", 6)
        .await
        .unwrap();
    assert_eq!(known("d7", "192.0.2.7").await, (true, true));
    assert_eq!(known("d6", "192.0.2.6").await, (false, false));
    store
        .set_status(account_id, AccountStatus::Disabled, 7)
        .await
        .unwrap();
    assert_eq!(known("d7", "192.0.2.7").await, (false, false));
}

/// Housekeeping deletes ended sessions (with their tokens), old rotated
/// refresh tokens and expired opaque tokens, in batches, and nothing else.
pub async fn purge_removes_only_what_ended(store: Arc<dyn Store>) {
    let account_id = account(&*store, "keeper").await;
    // s-live: live, with a chain: token 1 rotated at 100 into token 2.
    // s-revoked: revoked at 50. s-expired: expired at 1000 + 0.
    for (id, hash) in [("s-live", 1u8), ("s-revoked", 3), ("s-expired", 4)] {
        let at = if id == "s-expired" { 0 } else { 90 };
        let session = session(id, account_id, "web", at);
        let first = NewRefreshToken {
            hash: [hash; 32],
            session_id: id.into(),
            issued_at: at,
        };
        store
            .record_login(&login(account_id, at), &session, &first, false)
            .await
            .unwrap();
    }
    let second = NewRefreshToken {
        hash: [2; 32],
        session_id: "s-live".into(),
        issued_at: 100,
    };
    assert!(
        store
            .rotate_refresh_token(&[1; 32], &[9; 32], &second, 100)
            .await
            .unwrap()
    );
    store
        .revoke_session(&"s-revoked".to_owned(), 50, "logout")
        .await
        .unwrap();
    // Live: s-live (until 1090) and s-expired (until 1000, exclusive).
    assert_eq!(store.count_live_sessions(100).await.unwrap(), 2);
    assert_eq!(store.count_live_sessions(1000).await.unwrap(), 1);
    assert_eq!(store.count_live_sessions(1090).await.unwrap(), 0);
    // The first opaque token of a session replaces nothing; later ones do.
    let live = "s-live".to_owned();
    assert_eq!(
        store
            .replace_access_token(&live, &[8; 32], 500)
            .await
            .unwrap(),
        Some(false)
    );
    assert_eq!(
        store
            .replace_access_token(&live, &[7; 32], 500)
            .await
            .unwrap(),
        Some(true)
    );
    assert_eq!(store.find_access_token(&[8; 32]).await.unwrap(), None);

    // Nothing ended before 40: nothing goes.
    let nothing = PurgeCutoffs {
        ended_before: 40,
        spent_before: 40,
        expired_before: 40,
    };
    assert_eq!(store.purge(&nothing, 10).await.unwrap(), Default::default());

    let cutoffs = PurgeCutoffs {
        ended_before: 1001,
        spent_before: 101,
        expired_before: 501,
    };
    let first = store.purge(&cutoffs, 1).await.unwrap();
    assert_eq!(
        (first.sessions, first.refresh_tokens, first.access_tokens),
        (1, 1, 1)
    );
    let second = store.purge(&cutoffs, 1).await.unwrap();
    assert_eq!(
        (second.sessions, second.refresh_tokens, second.access_tokens),
        (1, 0, 0)
    );
    assert_eq!(store.purge(&cutoffs, 1).await.unwrap(), Default::default());

    // Audit events past their retention, in batches too.
    let events: Vec<crate::store::AuditEvent> = [10, 20, 30, 500]
        .into_iter()
        .map(|at| crate::store::AuditEvent {
            id: 0,
            at,
            event: "login".into(),
            outcome: "success".into(),
            face: "native".into(),
            account_id: Some(1),
            username: None,
            // The newest is a change made to account 2 by account 1.
            target_id: (at == 500).then_some(2),
            ip: None,
            user_agent: None,
            detail: None,
        })
        .collect();
    store.insert_audit_events(&events).await.unwrap();
    let about_2 = store
        .list_audit_events(&crate::store::AuditQuery {
            account_id: Some(2),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        about_2
            .iter()
            .map(|e| (e.at, e.account_id, e.target_id))
            .collect::<Vec<_>>(),
        [(500, Some(1), Some(2))]
    );
    assert_eq!(store.purge_audit_events(100, 2).await.unwrap(), 2);
    assert_eq!(store.purge_audit_events(100, 2).await.unwrap(), 1);
    assert_eq!(store.purge_audit_events(100, 2).await.unwrap(), 0);
    let kept = store
        .list_audit_events(&crate::store::AuditQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(kept.iter().map(|e| e.at).collect::<Vec<_>>(), [500]);

    assert!(
        store
            .get_session(&"s-revoked".to_owned())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .get_session(&"s-expired".to_owned())
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.find_refresh_token(&[3; 32]).await.unwrap().is_none());
    assert!(store.find_refresh_token(&[1; 32]).await.unwrap().is_none());
    assert!(store.find_access_token(&[7; 32]).await.unwrap().is_none());
    let live = store
        .get_session(&"s-live".to_owned())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(live.last_used_at, 100, "the chain's newest token stays");
    assert!(store.find_refresh_token(&[2; 32]).await.unwrap().is_some());
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

async fn permissions(store: &dyn Store, id: AccountId) -> Vec<String> {
    store.get_account(id).await.unwrap().unwrap().permissions
}

/// Roles are defined, changed, held and deleted; no change leaves the
/// deployment without an administrator, and a refused change writes nothing.
pub async fn roles_and_the_last_administrator(store: Arc<dyn Store>) {
    let store = &*store;
    let names: Vec<String> = store
        .list_roles()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["administrator", "user"]);
    let editor = Role {
        name: "editor".into(),
        description: "edits".into(),
        permissions: strings(&["read", "write"]),
    };
    store.create_role(&editor).await.unwrap();
    assert!(matches!(
        store.create_role(&editor).await,
        Err(StoreError::Conflict("name"))
    ));
    assert!(store.list_roles().await.unwrap().contains(&editor));

    let root = account_with(store, "root", "administrator").await;
    let ann = account(store, "ann").await;
    assert!(
        store
            .set_account_roles(ann, &strings(&["editor", "user"]), 1)
            .await
            .unwrap()
    );
    assert_eq!(permissions(store, ann).await, ["read", "write"]);
    assert!(matches!(
        store.set_account_roles(ann, &strings(&["nope"]), 1).await,
        Err(StoreError::Conflict("roles"))
    ));
    assert!(
        !store
            .set_account_roles(999, &strings(&["user"]), 1)
            .await
            .unwrap()
    );

    // root is the only administrator: every way of taking that away fails.
    let last = |result: Result<bool, StoreError>| {
        assert!(
            matches!(result, Err(StoreError::LastAdministrator)),
            "{result:?}"
        );
    };
    last(
        store
            .set_status(root, AccountStatus::Disabled, 2)
            .await
            .map(|_| true),
    );
    last(store.delete_account(root).await);
    last(store.set_account_roles(root, &strings(&["user"]), 2).await);
    let demote = RoleChange {
        description: None,
        permissions: Some(strings(&["read"])),
        ..RoleChange::default()
    };
    last(store.update_role("administrator", &demote).await);
    last(store.delete_role("administrator").await);
    let root_account = store.get_account(root).await.unwrap().unwrap();
    assert_eq!(
        root_account.status,
        AccountStatus::Active,
        "nothing was written"
    );
    assert_eq!(root_account.roles, ["administrator"]);
    assert_eq!(permissions(store, root).await, ["admin", "read", "write"]);
    // A lockout (failed guesses) is never refused, of the last
    // administrator neither; locked, it is still kept.
    assert!(store.set_locked(root, true, 3).await.unwrap());
    last(
        store
            .set_status(root, AccountStatus::Disabled, 3)
            .await
            .map(|_| true),
    );
    last(store.delete_account(root).await);
    assert!(store.set_locked(root, false, 3).await.unwrap());
    // An operator locking the last active administrator is refused: it
    // could then sign in only from a device it used before.
    last(
        store
            .set_status(root, AccountStatus::Locked, 3)
            .await
            .map(|_| true),
    );

    // With a second administrator (through another role), root may go.
    let promote = RoleChange {
        description: Some("edits and administers".into()),
        permissions: Some(strings(&["admin", "read", "read"])),
        ..RoleChange::default()
    };
    assert!(store.update_role("editor", &promote).await.unwrap());
    assert_eq!(permissions(store, ann).await, ["admin", "read"]);
    // ann locked by guesses: root is the last active administrator.
    assert!(store.set_locked(ann, true, 4).await.unwrap());
    last(
        store
            .set_status(root, AccountStatus::Disabled, 4)
            .await
            .map(|_| true),
    );
    last(store.set_account_roles(root, &strings(&["user"]), 4).await);
    assert!(store.set_locked(ann, false, 4).await.unwrap());
    store
        .set_status(root, AccountStatus::Disabled, 4)
        .await
        .unwrap();
    last(store.update_role("editor", &demote).await);
    last(store.delete_role("editor").await);
    assert!(!store.update_role("nope", &demote).await.unwrap());
    assert!(!store.delete_role("nope").await.unwrap());

    // A role nobody needs goes, and its holders lose it.
    store
        .set_status(root, AccountStatus::Active, 5)
        .await
        .unwrap();
    assert!(store.delete_role("editor").await.unwrap());
    assert_eq!(
        store.get_account(ann).await.unwrap().unwrap().roles,
        ["user"]
    );
}

/// Several changes to one account are written together or not at all:
/// whichever part is refused (a contact another account holds, a role that
/// does not exist, the last administrator), nothing else is written.
pub async fn account_changes_are_all_or_nothing(store: Arc<dyn Store>) {
    let store = &*store;
    let root = account_with(store, "root", "administrator").await;
    let ann = account(store, "ann").await;
    let bob = account(store, "bob").await;
    let email = |address: &str| Some(Some((address.to_owned(), address.to_owned())));
    let bobs = AccountChange {
        contact: ContactChange {
            email: email("bob@example.com"),
            mobile: Some(Some("+8613800000000".into())),
        },
        ..AccountChange::default()
    };
    assert!(store.change_account(bob, &bobs, 1).await.unwrap().is_some());

    let everything = |contact: ContactChange, roles: &[&str]| AccountChange {
        status: Some(AccountStatus::Disabled),
        roles: Some(strings(roles)),
        roles_were: None,
        contact,
        profile: Some(ProfilePatch {
            display_name: Some("Ann".into()),
            avatar_url: Some("https://example.com/ann.png".into()),
            attributes: [("team".to_owned(), Some("red".to_owned()))].into(),
        }),
        max_api_calls: Some(5),
        quota_period: Some(Some(QuotaPeriod::Day)),
    };
    // Every field (verifiers shown redacted, which is enough here).
    let read = |id: AccountId| async move { format!("{:?}", store.get_account(id).await.unwrap()) };
    let untouched = read(ann).await;
    let refused = [
        (
            everything(
                ContactChange {
                    email: email("ann@example.com"),
                    mobile: Some(Some("+8613800000000".into())),
                },
                &["user"],
            ),
            "mobile",
        ),
        (
            everything(
                ContactChange {
                    email: email("bob@example.com"),
                    mobile: None,
                },
                &["user"],
            ),
            "email",
        ),
        (
            everything(ContactChange::default(), &["user", "nope"]),
            "roles",
        ),
    ];
    for (change, field) in refused {
        let result = store.change_account(ann, &change, 2).await;
        assert!(
            matches!(result, Err(StoreError::Conflict(f)) if f == field),
            "{field}: {result:?}"
        );
        assert_eq!(
            read(ann).await,
            untouched,
            "nothing written when {field} is refused"
        );
    }

    // The last administrator: refused as a whole, whichever part does it.
    let root_before = read(root).await;
    for change in [
        AccountChange {
            status: Some(AccountStatus::Disabled),
            max_api_calls: Some(9),
            ..AccountChange::default()
        },
        AccountChange {
            roles: Some(strings(&["user"])),
            profile: Some(ProfilePatch {
                display_name: Some("Not root".into()),
                ..ProfilePatch::default()
            }),
            ..AccountChange::default()
        },
    ] {
        let result = store.change_account(root, &change, 3).await;
        assert!(
            matches!(result, Err(StoreError::LastAdministrator)),
            "{result:?}"
        );
        assert_eq!(read(root).await, root_before);
    }

    // All of it at once.
    let change = everything(
        ContactChange {
            email: email("ann@example.com"),
            mobile: Some(Some("+8613900000000".into())),
        },
        &["user", "administrator"],
    );
    let open = session("ann-web", ann, "web", 3);
    let refresh = NewRefreshToken {
        hash: [77; 32],
        session_id: open.id.clone(),
        issued_at: 3,
    };
    store
        .record_login(&login(ann, 3), &open, &refresh, false)
        .await
        .unwrap();
    assert_eq!(
        store.change_account(ann, &change, 4).await.unwrap(),
        Some(vec!["ann-web".to_owned()]),
        "a disabling ends the account's sessions with it"
    );
    let ended = store
        .get_session(&"ann-web".to_owned())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended.revoked_at, Some(4));
    let changed = store.get_account(ann).await.unwrap().unwrap();
    assert_eq!(changed.status, AccountStatus::Disabled);
    assert_eq!(changed.roles, ["administrator", "user"]);
    assert_eq!(changed.email.as_deref(), Some("ann@example.com"));
    assert_eq!(changed.mobile.as_deref(), Some("+8613900000000"));
    assert_eq!(changed.display_name, "Ann");
    assert_eq!(changed.avatar_url, "https://example.com/ann.png");
    assert_eq!(changed.profile["team"], "red");
    assert_eq!(changed.max_api_calls, 5);
    assert_eq!(changed.quota_period, Some(QuotaPeriod::Day));
    assert_eq!(changed.updated_at, 4);
    // Parts left out stay; `Some(None)` clears.
    let clear = AccountChange {
        status: Some(AccountStatus::Active),
        contact: ContactChange {
            email: Some(None),
            mobile: None,
        },
        profile: Some(ProfilePatch {
            attributes: [("team".to_owned(), None)].into(),
            ..ProfilePatch::default()
        }),
        quota_period: Some(None),
        ..AccountChange::default()
    };
    assert!(
        store
            .change_account(ann, &clear, 5)
            .await
            .unwrap()
            .is_some()
    );
    let cleared = store.get_account(ann).await.unwrap().unwrap();
    assert_eq!(cleared.status, AccountStatus::Active);
    assert_eq!(cleared.email, None);
    assert_eq!(cleared.mobile.as_deref(), Some("+8613900000000"));
    assert_eq!(cleared.display_name, "Ann");
    assert!(cleared.profile.is_empty());
    assert_eq!(cleared.max_api_calls, 5);
    assert_eq!(cleared.quota_period, None);
    assert_eq!(cleared.roles, ["administrator", "user"]);

    // A change of roles computed from roles the account no longer holds
    // (a grant read before another change) is refused whole; one computed
    // from what it holds, in any order, is written.
    let stale = AccountChange {
        roles: Some(strings(&["user"])),
        roles_were: Some(strings(&["user"])),
        profile: Some(ProfilePatch {
            display_name: Some("Someone else".into()),
            ..ProfilePatch::default()
        }),
        ..AccountChange::default()
    };
    assert!(matches!(
        store.change_account(ann, &stale, 6).await,
        Err(StoreError::Conflict("roles_were"))
    ));
    let held = store.get_account(ann).await.unwrap().unwrap();
    assert_eq!(held.roles, ["administrator", "user"]);
    assert_eq!(held.display_name, "Ann", "nothing of it written");
    let current = AccountChange {
        roles: Some(strings(&["administrator"])),
        roles_were: Some(strings(&["user", "administrator"])),
        ..AccountChange::default()
    };
    assert!(
        store
            .change_account(ann, &current, 6)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        store.get_account(ann).await.unwrap().unwrap().roles,
        ["administrator"]
    );

    // No such account: nothing written, and no error.
    assert!(
        store
            .change_account(999, &change, 6)
            .await
            .unwrap()
            .is_none()
    );
}

/// Two administrators disabling each other at the same moment: exactly one
/// succeeds.
pub async fn concurrent_demotions_leave_an_administrator(store: Arc<dyn Store>) {
    let a = account_with(&*store, "a", "administrator").await;
    let b = account_with(&*store, "b", "administrator").await;
    for _ in 0..10 {
        let (first, second) = tokio::join!(
            store.set_status(a, AccountStatus::Disabled, 1),
            store.set_status(b, AccountStatus::Disabled, 1),
        );
        let refused = [&first, &second]
            .iter()
            .filter(|r| matches!(r, Err(StoreError::LastAdministrator)))
            .count();
        assert_eq!(refused, 1, "{first:?} {second:?}");
        store.set_status(a, AccountStatus::Active, 2).await.unwrap();
        store.set_status(b, AccountStatus::Active, 2).await.unwrap();
    }
}

/// API-call counts belong to a period: a count from an earlier period
/// starts over; calls flushed late, from an earlier period than the stored
/// one (after a rollover or a reset), are dropped.
pub async fn api_calls_count_per_period(store: Arc<dyn Store>) {
    let store = &*store;
    let id = account(store, "counted").await;
    let add = |n: i64, start: i64| async move {
        let totals = store.add_api_calls(&[(id, n, start)]).await.unwrap();
        assert_eq!(totals.len(), 1);
        (totals[0].1.count, totals[0].1.period_start)
    };
    assert_eq!(add(2, 0).await, (2, 0));
    assert_eq!(add(3, 0).await, (5, 0));
    assert_eq!(add(1, 100).await, (1, 100), "a new period starts over");
    assert_eq!(
        add(4, 50).await,
        (1, 100),
        "a late flush of an earlier period is dropped"
    );
    assert_eq!(add(2, 100).await, (3, 100));
    let usage = store.api_usage(id).await.unwrap().unwrap();
    assert_eq!(
        (usage.count, usage.period_start, usage.period),
        (3, 100, None)
    );
    assert!(store.reset_api_calls(id, 150).await.unwrap());
    assert_eq!(
        add(5, 100).await,
        (0, 150),
        "counted before the reset, flushed after"
    );
    assert_eq!(add(1, 150).await, (1, 150));
    assert!(!store.reset_api_calls(999, 150).await.unwrap());
    assert!(
        store
            .set_quota_period(id, Some(QuotaPeriod::Day), 1)
            .await
            .unwrap()
    );
    assert_eq!(
        store.api_usage(id).await.unwrap().unwrap().period,
        Some(QuotaPeriod::Day)
    );
    let account = store.get_account(id).await.unwrap().unwrap();
    assert_eq!(
        (account.quota_period, account.api_calls_period),
        (Some(QuotaPeriod::Day), 150)
    );
    assert!(store.set_quota_period(id, None, 2).await.unwrap());
    assert_eq!(store.api_usage(id).await.unwrap().unwrap().period, None);
    assert!(!store.set_quota_period(999, None, 2).await.unwrap());
    assert!(
        store
            .add_api_calls(&[(999, 1, 0)])
            .await
            .unwrap()
            .is_empty()
    );
}

fn oauth_client(id: &str) -> OAuthClient {
    OAuthClient {
        id: id.into(),
        name: id.into(),
        secret_hash: Some([9; 32]),
        redirect_uris: vec!["https://app.example/cb".into()],
        post_logout_redirect_uris: vec![],
        grants: vec!["authorization_code".into()],
        scopes: vec!["openid".into(), "email".into()],
        created_at: 5,
    }
}

/// Clients: created once per id, read back as written, secret replaced, removed.
pub async fn oauth_clients(store: Arc<dyn Store>) {
    let web = oauth_client("web");
    store.create_client(&web).await.unwrap();
    assert!(matches!(
        store.create_client(&web).await,
        Err(StoreError::Conflict("client_id"))
    ));
    store.create_client(&oauth_client("api")).await.unwrap();
    assert_eq!(store.get_client("web").await.unwrap(), Some(web.clone()));
    assert_eq!(store.get_client("WEB").await.unwrap(), None);
    let ids: Vec<String> = store
        .list_clients()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, ["api", "web"]);
    assert!(
        store
            .set_client_secret("web", Some(&[1; 32]))
            .await
            .unwrap()
    );
    assert_eq!(
        store.get_client("web").await.unwrap().unwrap().secret_hash,
        Some([1; 32])
    );
    assert!(!store.set_client_secret("nobody", None).await.unwrap());
    assert!(store.delete_client("web").await.unwrap());
    assert!(!store.delete_client("web").await.unwrap());
    assert_eq!(store.get_client("web").await.unwrap(), None);
    // A grant for a session deleted meanwhile (a concurrent request): an
    // answer a retry settles (503), never a database error (500).
    let gone = store
        .insert_oauth_session(&crate::store::OAuthSession {
            session_id: "no-such-session".into(),
            client_id: "web".into(),
            scope: "openid".into(),
            browser_session: None,
            auth_time: 0,
            nonce: None,
        })
        .await;
    assert!(matches!(gone, Err(StoreError::Unavailable(_))), "{gone:?}");
}

/// Eight concurrent exchanges of one code: one opens a session, the others
/// are told it was spent and by which session; an expired code opens none.
pub async fn codes_are_redeemed_once(store: Arc<dyn Store>) {
    let account_id = account(&*store, "a").await;
    // The browser session the code comes from.
    store
        .record_login(
            &login(account_id, 0),
            &session("browser", account_id, "web", 0),
            &NewRefreshToken {
                hash: [0; 32],
                session_id: "browser".into(),
                issued_at: 0,
            },
            false,
        )
        .await
        .unwrap();
    let code = |hash: u8, expires_at| AuthorizationCode {
        hash: [hash; 32],
        client_id: "web".into(),
        redirect_uri: "https://app.example/cb".into(),
        code_challenge: "c".repeat(43),
        account_id,
        browser_session: "browser".into(),
        scope: "openid".into(),
        nonce: Some("n".into()),
        auth_time: 0,
        expires_at,
    };
    store.insert_code(&code(1, 60), 0).await.unwrap();
    assert_eq!(
        store.find_code(&[1; 32], 10).await.unwrap(),
        Some(code(1, 60))
    );
    let attempts = (0..8u8).map(|i| {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let id = format!("client-{i}");
            let refresh = NewRefreshToken {
                hash: [100 + i; 32],
                session_id: id.clone(),
                issued_at: 10,
            };
            let outcome = store
                .redeem_code(&[1; 32], &session(&id, 0, "oauth", 10), &refresh, 10)
                .await
                .unwrap();
            (id, outcome)
        })
    });
    let mut winners = Vec::new();
    let mut told = Vec::new();
    for attempt in attempts.collect::<Vec<_>>() {
        match attempt.await.unwrap() {
            (id, Redemption::Redeemed) => winners.push(id),
            (
                _,
                Redemption::Replayed {
                    opened: Some(opened),
                    ..
                },
            ) => told.push(opened),
            (_, other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one exchange wins");
    assert!(told.iter().all(|opened| *opened == winners[0]));
    assert_eq!(store.find_code(&[1; 32], 10).await.unwrap(), None, "spent");
    let opened = store.get_session(&winners[0]).await.unwrap().unwrap();
    assert_eq!(opened.account_id, account_id, "the code's account");
    let grant = store.get_oauth_session(&winners[0]).await.unwrap().unwrap();
    assert_eq!(
        (
            grant.client_id.as_str(),
            grant.scope.as_str(),
            grant.nonce.as_deref()
        ),
        ("web", "openid", Some("n"))
    );
    assert_eq!(grant.browser_session.as_deref(), Some("browser"));
    assert_eq!(
        store
            .sessions_from_browser(&"browser".into())
            .await
            .unwrap(),
        [winners[0].clone()]
    );
    assert_eq!(
        store.sessions_of_client("web").await.unwrap(),
        [winners[0].clone()]
    );
    assert!(store.sessions_of_client("other").await.unwrap().is_empty());
    store
        .revoke_session(&winners[0], 11, "logout")
        .await
        .unwrap();
    assert!(
        store
            .sessions_from_browser(&"browser".into())
            .await
            .unwrap()
            .is_empty()
    );

    store.insert_code(&code(2, 60), 0).await.unwrap();
    assert_eq!(
        store.find_code(&[2; 32], 60).await.unwrap(),
        None,
        "expired"
    );
    let late = NewRefreshToken {
        hash: [200; 32],
        session_id: "late".into(),
        issued_at: 60,
    };
    assert_eq!(
        store
            .redeem_code(&[2; 32], &session("late", 0, "oauth", 60), &late, 60)
            .await
            .unwrap(),
        Redemption::Invalid
    );
    assert!(store.get_session(&"late".into()).await.unwrap().is_none());
    assert_eq!(
        store
            .redeem_code(&[3; 32], &session("never", 0, "oauth", 60), &late, 60)
            .await
            .unwrap(),
        Redemption::Invalid,
        "unknown"
    );

    // A removed client's codes go with it (none is redeemed afterwards,
    // nor by a client registered again under the same id).
    store.insert_code(&code(5, 100), 20).await.unwrap();
    store.delete_client("web").await.unwrap();
    assert_eq!(store.find_code(&[5; 32], 20).await.unwrap(), None);
    let after_removal = NewRefreshToken {
        hash: [202; 32],
        session_id: "after-removal".into(),
        issued_at: 20,
    };
    assert_eq!(
        store
            .redeem_code(
                &[5; 32],
                &session("after-removal", 0, "oauth", 20),
                &after_removal,
                20
            )
            .await
            .unwrap(),
        Redemption::Invalid
    );

    // A code whose browser session has ended (a logout) opens nothing.
    store.insert_code(&code(4, 100), 20).await.unwrap();
    assert!(
        store
            .revoke_session(&"browser".into(), 21, "logout")
            .await
            .unwrap()
    );
    let after_logout = NewRefreshToken {
        hash: [201; 32],
        session_id: "after-logout".into(),
        issued_at: 22,
    };
    assert_eq!(
        store
            .redeem_code(
                &[4; 32],
                &session("after-logout", 0, "oauth", 22),
                &after_logout,
                22
            )
            .await
            .unwrap(),
        Redemption::Invalid
    );
    assert!(
        store
            .get_session(&"after-logout".into())
            .await
            .unwrap()
            .is_none()
    );
}

/// Ending all of an account's sessions while one of its codes is being
/// exchanged: whichever comes first, no session is live afterwards (the
/// exchange either sees the browser session ended, or opens a session the
/// ending then finds).
pub async fn ending_all_sessions_races_a_code_exchange(store: Arc<dyn Store>) {
    let account_id = account(&*store, "a").await;
    for round in 0..24u8 {
        let browser = format!("browser-{round}");
        store
            .record_login(
                &login(account_id, 0),
                &session(&browser, account_id, "web", 0),
                &NewRefreshToken {
                    hash: [round; 32],
                    session_id: browser.clone(),
                    issued_at: 0,
                },
                false,
            )
            .await
            .unwrap();
        store
            .insert_code(
                &AuthorizationCode {
                    hash: [round; 32],
                    client_id: "web".into(),
                    redirect_uri: "https://app.example/cb".into(),
                    code_challenge: "c".repeat(43),
                    account_id,
                    browser_session: browser.clone(),
                    scope: "openid".into(),
                    nonce: None,
                    auth_time: 0,
                    expires_at: 60,
                },
                0,
            )
            .await
            .unwrap();
        let exchange = {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let id = format!("client-{round}");
                let refresh = NewRefreshToken {
                    hash: [100 + round; 32],
                    session_id: id.clone(),
                    issued_at: 10,
                };
                store
                    .redeem_code(&[round; 32], &session(&id, 0, "oauth", 10), &refresh, 10)
                    .await
                    .unwrap()
            })
        };
        let ending = {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .revoke_account_sessions(account_id, None, 10, "logout_all")
                    .await
                    .unwrap()
            })
        };
        let (exchanged, ended) = (exchange.await.unwrap(), ending.await.unwrap());
        let live = store.list_live_sessions(account_id, 10).await.unwrap();
        assert!(
            live.is_empty(),
            "round {round}: {exchanged:?}, ended {ended:?}, still live {live:?}"
        );
    }
}

/// Eight concurrent replacements of one session's opaque access token leave
/// exactly one of them; a session that is gone gets none.
pub async fn one_opaque_token_per_session(store: Arc<dyn Store>) {
    sessions(&*store, 1).await;
    for round in 0..4u8 {
        let replacing = (0..8u8).map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .replace_access_token(&"s0".to_owned(), &[round * 8 + i; 32], 1000)
                    .await
                    .unwrap()
            })
        });
        for replacement in replacing.collect::<Vec<_>>() {
            replacement.await.unwrap();
        }
        let mut live = 0;
        for hash in 0..32u8 {
            if store
                .find_access_token(&[hash; 32])
                .await
                .unwrap()
                .is_some()
            {
                live += 1;
            }
        }
        assert_eq!(live, 1, "round {round}");
    }
    assert_eq!(
        store
            .replace_access_token(&"no-such-session".to_owned(), &[99; 32], 1000)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.find_access_token(&[99; 32]).await.unwrap(), None);
}

/// A deployment secret is made once: processes asking at once on a new
/// database all get the first one stored, later asks get it again whatever
/// they offer, and each name is a secret of its own.
pub async fn deployment_secrets_are_made_once(store: Arc<dyn Store>) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8u8 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            store
                .deployment_secret("limiter-names", &[i; 32], 5)
                .await
                .unwrap()
        });
    }
    let got = tasks.join_all().await;
    assert!(got.iter().all(|secret| *secret == got[0]), "{got:?}");
    assert!((0..8u8).any(|i| got[0] == [i; 32]), "{:?}", got[0]);
    let again = store
        .deployment_secret("limiter-names", &[99; 32], 6)
        .await
        .unwrap();
    assert_eq!(again, got[0]);
    let other = store
        .deployment_secret("other", &[42; 32], 6)
        .await
        .unwrap();
    assert_eq!(other, [42; 32]);
}
