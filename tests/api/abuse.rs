//! Brute-force protection over real HTTP, with loopback source addresses
//! standing for attacker (127.0.0.2 …) and owner (127.0.0.1 or its device).

use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    PASSWORD, ServerProcess, TestApp, access, assert_problem, refresh_token, sesame_command,
};

/// A login from `client`; a failure is counted against its account (after
/// the answer) by the time this returns.
async fn login_from(
    app: &TestApp,
    client: &Client,
    login: &str,
    password: &str,
) -> reqwest::Response {
    let response = client
        .post(app.url("/v1/login"))
        .json(&json!({"login": login, "password": password}))
        .send()
        .await
        .unwrap();
    app.core.failures_counted().await;
    response
}

fn retry_after(response: &reqwest::Response) -> u64 {
    response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn an_address_is_throttled_after_its_failures_even_when_it_then_guesses_right() {
    let app = TestApp::spawn_with(|c| {
        c.abuse.address_burst = 3;
        c.abuse.address_interval = 30;
    })
    .await;
    app.create_user("alice").await;
    let attacker = app.client_from("127.0.0.2");
    for guess in ["guess one!", "guess two!", "guess three!"] {
        assert_eq!(
            login_from(&app, &attacker, "alice", guess).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let response = login_from(&app, &attacker, "alice", PASSWORD).await;
    assert_eq!(retry_after(&response), 30);
    assert_problem(response, StatusCode::TOO_MANY_REQUESTS, "throttled").await;
    let owner = app.client_from("127.0.0.3");
    assert_eq!(
        login_from(&app, &owner, "alice", PASSWORD).await.status(),
        StatusCode::OK,
        "other addresses are not affected"
    );
    app.clock.advance(30);
    assert_eq!(
        login_from(&app, &attacker, "alice", PASSWORD)
            .await
            .status(),
        StatusCode::OK,
        "the budget recovers with time"
    );
}

#[tokio::test]
async fn every_face_renders_the_throttle_in_its_own_shape() {
    let app = TestApp::spawn_with(|c| c.abuse.address_burst = 1).await;
    app.create_user_full("alice", None, None, &["administrator"])
        .await;
    let attacker = app.client_from("127.0.0.5");
    assert_eq!(
        login_from(&app, &attacker, "alice", "wrong guess!")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let post = |path: &'static str, body: Value| {
        let request = attacker.post(app.url(path)).json(&body);
        async move { request.send().await.unwrap() }
    };
    let cases = [
        (
            "/api/v1/login",
            json!({"username": "alice", "password": PASSWORD}),
            json!({"detail": "Too many login attempts"}),
        ),
        (
            "/manager/login",
            json!({"username": "alice", "password": PASSWORD}),
            json!({"error": "Too many login attempts"}),
        ),
        (
            "/api/v1/users/actions/login",
            json!({"account": "alice", "password": "0".repeat(32)}),
            json!({"code": 429, "message": "登录尝试过于频繁，请稍后再试"}),
        ),
        (
            "/api/v1/user/method/login.user.user/",
            json!({"username": "alice", "password": PASSWORD, "platform": "iOS"}),
            json!({"status": 429, "message": "登录尝试过于频繁，请稍后再试"}),
        ),
        (
            "/user/login",
            json!({"Username": "alice", "Password": PASSWORD}),
            json!({"RequestType": 13, "StatusCode": 429, "Message": "登录尝试过于频繁，请稍后再试。", "Data": {}}),
        ),
    ];
    for (path, body, expected) in cases {
        let response = post(path, body).await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS, "{path}");
        assert!(retry_after(&response) > 0, "{path} lacks Retry-After");
        assert_eq!(response.json::<Value>().await.unwrap(), expected, "{path}");
    }
}

#[tokio::test]
async fn guesses_sent_at_once_get_no_more_than_the_account_budget() {
    let app = TestApp::spawn_with(|c| {
        c.abuse.account_burst = 3;
        c.abuse.address_burst = 100;
    })
    .await;
    app.create_user("alice").await;
    // Twelve strangers guess at once: all pass a check made before any
    // failure is counted, unless each guess is charged before its hash.
    let guesses = (0..12).map(|i| {
        let client = app.client_from(&format!("127.0.0.{}", 10 + i));
        let app = &app;
        async move {
            login_from(app, &client, "alice", &format!("wrong guess {i}"))
                .await
                .status()
        }
    });
    let statuses = futures_util::future::join_all(guesses).await;
    let tested = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let throttled = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((tested, throttled), (3, 9), "{statuses:?}");
    // A right password from a stranger is throttled too.
    let stranger = login_from(&app, &app.client_from("127.0.0.30"), "alice", PASSWORD).await;
    assert_eq!(stranger.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn successful_logins_spend_no_budget() {
    let app = TestApp::spawn_with(|c| {
        c.abuse.account_burst = 2;
        c.abuse.address_burst = 2;
    })
    .await;
    app.create_user("alice").await;
    // Each from a new address, so that none is a known client.
    for i in 0..6 {
        let client = app.client_from(&format!("127.0.0.{}", 40 + i));
        let response = login_from(&app, &client, "alice", PASSWORD).await;
        assert_eq!(response.status(), StatusCode::OK, "login {i}");
    }
}

#[tokio::test]
async fn failures_from_elsewhere_do_not_lock_the_owner_out() {
    let app = TestApp::spawn_with(|c| {
        c.abuse.account_burst = 3;
        c.abuse.address_burst = 100;
    })
    .await;
    app.create_user("alice").await;
    let owner_device = app.client_from("127.0.0.1");
    let first: Value = login_from(&app, &owner_device, "alice", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let device_token = first["device_token"]
        .as_str()
        .expect("a device token is issued")
        .to_owned();
    for (i, address) in ["127.0.0.2", "127.0.0.3", "127.0.0.4"].iter().enumerate() {
        let response = login_from(
            &app,
            &app.client_from(address),
            "alice",
            &format!("wrong guess {i}"),
        )
        .await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let stranger = app.client_from("127.0.0.6");
    let response = login_from(&app, &stranger, "alice", PASSWORD).await;
    assert_problem(response, StatusCode::TOO_MANY_REQUESTS, "throttled").await;

    let from_known_address = login_from(&app, &owner_device, "alice", PASSWORD).await;
    assert_eq!(
        from_known_address.status(),
        StatusCode::OK,
        "the owner's known address is let through"
    );
    let travelling = app.client_from("127.0.0.7");
    let with_device = travelling
        .post(app.url("/v1/login"))
        .header("sesame-device", &device_token)
        .json(&json!({"login": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        with_device.status(),
        StatusCode::OK,
        "the owner's device token is let through from a new address"
    );
    let forged = app
        .client_from("127.0.0.8")
        .post(app.url("/v1/login"))
        .header("sesame-device", "not-a-token-we-issued")
        .json(&json!({"login": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        forged.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "a made-up device token is worth nothing"
    );
}

/// A thief who signed in once with a stolen password keeps the device token
/// that made him a known client; once the owner sets a new password, his
/// guesses with it spend the account's budget like anyone's.
#[tokio::test]
async fn a_new_password_forgets_the_clients_that_signed_in_with_the_old_one() {
    let app = TestApp::spawn_with(|c| {
        c.abuse.account_burst = 3;
        c.abuse.address_burst = 100;
    })
    .await;
    app.create_user("alice").await;
    let thief = app.client_from("127.0.0.2");
    let stolen: Value = login_from(&app, &thief, "alice", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let device_token = stolen["device_token"].as_str().unwrap().to_owned();
    let guess = |i: usize| {
        let thief = app.client_from(&format!("127.0.1.{i}"));
        let device_token = device_token.clone();
        let app = &app;
        async move {
            let response = thief
                .post(app.url("/v1/login"))
                .header("sesame-device", device_token)
                .json(&json!({"login": "alice", "password": format!("guess number {i}")}))
                .send()
                .await
                .unwrap();
            app.core.failures_counted().await;
            response.status()
        }
    };
    for i in 0..5 {
        assert_eq!(guess(i).await, StatusCode::UNAUTHORIZED, "known: exempt");
    }

    let owner = app.login_ok("alice").await;
    let changed = app
        .client
        .post(app.url("/v1/me/password"))
        .bearer_auth(access(&owner))
        .json(&json!({"current_password": PASSWORD, "new_password": "alice's new passphrase"}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);
    let mut statuses = Vec::new();
    for i in 10..15 {
        statuses.push(guess(i).await);
    }
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::UNAUTHORIZED)
            .count(),
        3,
        "the account's budget, then throttled: {statuses:?}"
    );
    assert_eq!(statuses[4], StatusCode::TOO_MANY_REQUESTS);
    // The client that made the change is still known: the thief's
    // guesses do not keep the owner out.
    let owner_again = login_from(&app, &app.client, "alice", "alice's new passphrase").await;
    assert_eq!(owner_again.status(), StatusCode::OK);
}

#[tokio::test]
async fn unknown_login_names_are_throttled_like_real_accounts() {
    let app = TestApp::spawn_with(|c| c.abuse.account_burst = 2).await;
    app.create_user("alice").await;
    let mut statuses = Vec::new();
    for login in ["alice", "ghost"] {
        for address in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
            statuses.push(
                login_from(&app, &app.client_from(address), login, "wrong guess!")
                    .await
                    .status()
                    .as_u16(),
            );
        }
    }
    assert_eq!(
        statuses,
        [401, 401, 429, 401, 401, 429],
        "existence must not show in the throttle"
    );

    // A mobile number spelled three ways is one budget, whether or not an
    // account has it (the lookup finds the account by any spelling).
    app.create_user_full("bob", None, Some("13800000000"), &[])
        .await;
    let mut statuses = Vec::new();
    for number in ["138", "139"] {
        for (spelling, address) in [
            (format!("{number}00000000"), "127.0.0.5"),
            (format!("{number}-0000-0000"), "127.0.0.6"),
            (format!("{number} 0000 0000"), "127.0.0.7"),
        ] {
            statuses.push(
                login_from(&app, &app.client_from(address), &spelling, "wrong guess!")
                    .await
                    .status()
                    .as_u16(),
            );
        }
    }
    assert_eq!(
        statuses,
        [401, 401, 429, 401, 401, 429],
        "a mobile's existence must not show in the throttle"
    );
}

#[tokio::test]
async fn a_lockout_holds_for_strangers_but_not_for_the_owner() {
    let app = TestApp::spawn_with(|c| {
        c.abuse.lockout_threshold = 4;
        c.abuse.account_burst = 99;
    })
    .await;
    let account = app.create_user("alice").await;
    let owner = app.client_from("127.0.0.1");
    let signed_in = login_from(&app, &owner, "alice", PASSWORD).await;
    assert_eq!(signed_in.status(), StatusCode::OK);
    let signed_in: Value = signed_in.json().await.unwrap();
    for i in 0..4 {
        let attacker = app.client_from(&format!("127.0.0.{}", 10 + i));
        login_from(&app, &attacker, "alice", "wrong guess!").await;
    }
    assert_eq!(
        app.core.account(account.id).await.unwrap().status,
        sesame::store::AccountStatus::Locked
    );
    // Strangers' failures do not sign the owner out: her session goes on,
    // and its refresh token rotates.
    assert_eq!(app.me_status(access(&signed_in)).await, StatusCode::OK);
    let rotated = app.refresh(refresh_token(&signed_in)).await;
    assert_eq!(rotated.status(), StatusCode::OK);
    let rotated: Value = rotated.json().await.unwrap();
    assert_eq!(app.me_status(access(&rotated)).await, StatusCode::OK);
    let stranger = app.client_from("127.0.0.20");
    let right = login_from(&app, &stranger, "alice", PASSWORD).await;
    let right = (right.status(), right.json::<Value>().await.unwrap());
    let wrong = login_from(&app, &stranger, "alice", "wrong guess!").await;
    let wrong = (wrong.status(), wrong.json::<Value>().await.unwrap());
    assert_eq!(
        right, wrong,
        "a locked account looks like a wrong password, even with the right one"
    );
    assert_eq!(right.0, StatusCode::UNAUTHORIZED);

    assert_eq!(
        login_from(&app, &owner, "alice", PASSWORD).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.core.account(account.id).await.unwrap().status,
        sesame::store::AccountStatus::Active,
        "the owner's sign-in unlocks"
    );

    for i in 0..4 {
        login_from(
            &app,
            &app.client_from(&format!("127.0.0.{}", 30 + i)),
            "alice",
            "wrong guess!",
        )
        .await;
    }
    assert_eq!(
        login_from(&app, &stranger, "alice", PASSWORD)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    app.core
        .unlock(account.id, &sesame::core::roles::Actor::Operator)
        .await
        .unwrap();
    assert_eq!(
        login_from(&app, &stranger, "alice", PASSWORD)
            .await
            .status(),
        StatusCode::OK,
        "an operator unlocked it"
    );

    // Locked again; the owner changes her password from her session: the
    // guesses were of the old one, so the lock goes with it.
    for i in 0..4 {
        let attacker = app.client_from(&format!("127.0.0.{}", 40 + i));
        login_from(&app, &attacker, "alice", "wrong guess!").await;
    }
    let owner_session = login_from(&app, &owner, "alice", PASSWORD)
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(
        app.core.account(account.id).await.unwrap().status,
        sesame::store::AccountStatus::Active,
        "the owner's sign-in unlocked it again"
    );
    for i in 0..4 {
        let attacker = app.client_from(&format!("127.0.0.{}", 50 + i));
        login_from(&app, &attacker, "alice", "wrong guess!").await;
    }
    assert_eq!(
        app.core.account(account.id).await.unwrap().status,
        sesame::store::AccountStatus::Locked
    );
    let changed = owner
        .post(app.url("/v1/me/password"))
        .bearer_auth(access(&owner_session))
        .json(&json!({"current_password": PASSWORD, "new_password": "alice's new passphrase"}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.core.account(account.id).await.unwrap().status,
        sesame::store::AccountStatus::Active,
        "a new password lifts the lockout"
    );
    assert_eq!(
        login_from(&app, &stranger, "alice", "alice's new passphrase")
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        unlocks_by_a_new_password(&app).await,
        1,
        "the lift is in the audit log"
    );

    // Locked again; an operator's reset lifts it the same way, and the
    // strangers' budget goes with it.
    for i in 0..4 {
        let attacker = app.client_from(&format!("127.0.0.{}", 60 + i));
        login_from(&app, &attacker, "alice", "wrong guess!").await;
    }
    assert_eq!(
        app.core.account(account.id).await.unwrap().status,
        sesame::store::AccountStatus::Locked
    );
    app.core
        .reset_password(
            account.id,
            &sesame::core::domain::Password::new_password("alice's third passphrase").unwrap(),
            &sesame::core::roles::Actor::Operator,
        )
        .await
        .unwrap();
    assert_eq!(
        app.core.account(account.id).await.unwrap().status,
        sesame::store::AccountStatus::Active,
        "a reset lifts the lockout"
    );
    let newcomer = app.client_from("127.0.0.70");
    assert_eq!(
        login_from(&app, &newcomer, "alice", "alice's third passphrase")
            .await
            .status(),
        StatusCode::OK,
        "a stranger signs in with the new password"
    );
    assert_eq!(
        unlocks_by_a_new_password(&app).await,
        2,
        "the operator's lift is in the audit log too"
    );
}

/// A right password on a locked account is refused like a wrong one, and
/// it must spend the budgets like one too: were it given back, the next
/// attempt's throttling would tell the attacker the password was right.
#[tokio::test]
async fn a_right_password_on_a_locked_account_spends_the_budgets_like_a_guess() {
    let app = TestApp::spawn_with(|c| {
        c.abuse.lockout_threshold = 2;
        c.abuse.account_burst = 3;
        c.abuse.account_interval = 60;
        c.abuse.address_burst = 1;
        c.abuse.address_interval = 60;
    })
    .await;
    app.create_user("alice").await;
    for i in 0..2 {
        let attacker = app.client_from(&format!("127.0.0.{}", 10 + i));
        let response = login_from(&app, &attacker, "alice", "wrong guess!").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    // Locked, with one attempt left in the account's budget. Each probe
    // comes from a fresh address, then that address tries again.
    let probe = |address: &'static str, password: &'static str| {
        let app = &app;
        async move {
            let client = app.client_from(address);
            let first = login_from(app, &client, "alice", password).await.status();
            let again = login_from(app, &client, "alice", "another guess!")
                .await
                .status();
            let other = app.client_from(&format!("{address}0"));
            let elsewhere = login_from(app, &other, "alice", "another guess!")
                .await
                .status();
            (first, again, elsewhere)
        }
    };
    let right = probe("127.0.0.20", PASSWORD).await;
    app.clock.advance(60);
    let wrong = probe("127.0.0.21", "wrong guess!").await;
    assert_eq!(
        right,
        (
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS
        )
    );
    assert_eq!(right, wrong);
}

#[tokio::test]
async fn forwarded_headers_count_only_from_trusted_proxies() {
    let app = TestApp::spawn_with(|c| c.abuse.address_burst = 2).await;
    app.create_user("alice").await;
    let direct = app.client_from("127.0.0.2");
    for forged in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
        let response = direct
            .post(app.url("/v1/login"))
            .header("x-forwarded-for", forged)
            .json(&json!({"login": "alice", "password": "wrong guess!"}))
            .send()
            .await
            .unwrap();
        let _ = response;
    }
    let response = login_from(&app, &direct, "alice", PASSWORD).await;
    assert_eq!(
        response.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "forging X-Forwarded-For evades nothing"
    );

    let proxied = TestApp::spawn_with(|c| {
        c.abuse.address_burst = 2;
        c.http.trusted_proxies = vec!["127.0.0.2/32".into()];
    })
    .await;
    proxied.create_user("alice").await;
    let proxy = proxied.client_from("127.0.0.2");
    // Each guess also carries a `Forwarded` the client wrote and the proxy
    // (which sets X-Forwarded-For) passed on: it must not count.
    let guesses = std::sync::atomic::AtomicU32::new(0);
    let via = |client_ip: &'static str, password: &'static str| {
        let n = guesses.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let request = proxy
            .post(proxied.url("/v1/login"))
            .header("forwarded", format!("for=203.0.113.{n}"))
            .header("x-forwarded-for", client_ip)
            .json(&json!({"login": "alice", "password": password}));
        async move { request.send().await.unwrap().status() }
    };
    for _ in 0..2 {
        assert_eq!(
            via("198.51.100.1", "wrong guess!").await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        via("198.51.100.1", PASSWORD).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    let other: Value = proxy
        .post(proxied.url("/v1/login"))
        .header("x-forwarded-for", "198.51.100.2")
        .json(&json!({"login": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        other["user"]["last_login_ip"], "198.51.100.2",
        "the client behind the proxy is seen"
    );
}

/// A proxy set up for `Forwarded` in front of a Sesame reading
/// `X-Forwarded-For` (the default) makes every client the proxy: said in
/// the log, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_sending_only_the_other_header_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sesame.toml");
    std::fs::write(&config, "[http]\ntrusted_proxies = [\"127.0.0.1/32\"]\n").unwrap();
    let log = dir.path().join("stderr.log");
    let server = ServerProcess::start_logged(
        sesame_command([
            ("SESAME_CONFIG", config.display().to_string()),
            (
                "SESAME_DATA_DIR",
                dir.path().join("data").display().to_string(),
            ),
        ]),
        &log,
    );
    let warnings = || {
        std::fs::read_to_string(&log)
            .unwrap()
            .matches("http.forwarded_header")
            .count()
    };
    let login = |headers: &'static [(&'static str, &'static str)]| {
        let mut request = reqwest::Client::new()
            .post(server.url("/v1/login"))
            .json(&json!({"login": "nobody", "password": "wrong guess!"}));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        async move { request.send().await.unwrap().status() }
    };
    // Both headers, as the documented nginx setup passes a client's own
    // `Forwarded` on: nothing to say.
    const BOTH: &[(&str, &str)] = &[
        ("x-forwarded-for", "198.51.100.1"),
        ("forwarded", "for=198.51.100.2"),
    ];
    assert_eq!(login(BOTH).await, StatusCode::UNAUTHORIZED);
    assert_eq!(warnings(), 0);
    for _ in 0..2 {
        assert_eq!(
            login(&[("forwarded", "for=198.51.100.3")]).await,
            StatusCode::UNAUTHORIZED
        );
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while warnings() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(warnings(), 1, "{}", std::fs::read_to_string(&log).unwrap());
    server.stop();
}

#[tokio::test]
async fn refusals_take_about_the_same_time_whatever_the_reason() {
    // Real hashing cost, so that a skipped hash would stand out.
    let app = TestApp::spawn_with(|c| {
        c.passwords.memory_kib = 8192;
        c.passwords.iterations = 2;
        c.abuse.account_burst = 99;
        c.abuse.address_burst = 999;
    })
    .await;
    app.create_user("alice").await;
    let disabled = app.create_user("bob").await;
    app.core
        .set_enabled(disabled.id, false, &sesame::core::roles::Actor::Operator)
        .await
        .unwrap();
    // A skipped hash would make one kind of refusal several times faster;
    // a busy machine (tests run in parallel) can blur one measurement,
    // so a pass in any of three rounds counts.
    let mut rounds = Vec::new();
    for _ in 0..3 {
        let mut medians = Vec::new();
        for (login, password) in [
            ("alice", "wrong guess!"),
            ("nobody", PASSWORD),
            ("bob", PASSWORD),
        ] {
            let mut times = Vec::new();
            for _ in 0..7 {
                let started = Instant::now();
                let status = app.login(login, password).await.status();
                times.push(started.elapsed());
                assert_eq!(status, StatusCode::UNAUTHORIZED);
            }
            times.sort();
            medians.push(times[3]);
        }
        let (fastest, slowest) = (
            *medians.iter().min().unwrap(),
            *medians.iter().max().unwrap(),
        );
        if slowest < fastest * 2 {
            return;
        }
        rounds.push(medians);
    }
    panic!("medians differ too much in every round: {rounds:?}");
}

#[tokio::test]
async fn a_full_hashing_queue_answers_at_once_with_retry_after() {
    let app = TestApp::spawn_with(|c| {
        c.passwords.memory_kib = 32768;
        c.passwords.iterations = 3;
        c.passwords.threads = 1;
        c.passwords.queue = 1;
        c.abuse.address_burst = 999;
        c.abuse.account_burst = 99;
    })
    .await;
    app.create_user("alice").await;
    let requests: Vec<_> = (0..8)
        .map(|_| {
            let request = app
                .client
                .post(app.url("/v1/login"))
                .json(&json!({"login": "alice", "password": PASSWORD}));
            tokio::spawn(async move {
                let started = Instant::now();
                let response = request.send().await.unwrap();
                (
                    response.status(),
                    response.headers().get("retry-after").is_some(),
                    started.elapsed(),
                )
            })
        })
        .collect();
    let mut busy = 0;
    for request in requests {
        let (status, has_retry_after, elapsed) = request.await.unwrap();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            busy += 1;
            assert!(has_retry_after);
            assert!(
                elapsed < Duration::from_secs(2),
                "refused at once, not after waiting: {elapsed:?}"
            );
        } else {
            assert_eq!(status, StatusCode::OK);
        }
    }
    assert!(
        busy >= 1,
        "some logins must be refused while the queue is full"
    );
    assert_eq!(
        app.login("alice", PASSWORD).await.status(),
        StatusCode::OK,
        "normal logins succeed right after"
    );
}

#[tokio::test]
async fn the_fungame_face_renders_a_full_queue_as_its_documented_400() {
    let app = TestApp::spawn_with(|c| {
        c.passwords.memory_kib = 131_072;
        c.passwords.iterations = 48;
        c.passwords.threads = 1;
        c.passwords.queue = 1;
        c.passwords.refuse_common = false;
    })
    .await;
    app.create_with_password("player123", "Passw0rd!", &[])
        .await;
    // One login hashing, one waiting. Each hash takes half a second or more
    // (128 MiB, 48 passes: ~0.7 s even with AVX-512);
    // the pauses let the first reach the hashing thread before the second
    // queues, even on a loaded machine (a job counts as queued until a
    // thread has picked it up).
    let mut holders = Vec::new();
    for _ in 0..2 {
        let request = app
            .client
            .post(app.url("/v1/login"))
            .json(&json!({"login": "player123", "password": "Passw0rd!"}));
        holders.push(tokio::spawn(async move {
            request.send().await.unwrap().status()
        }));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let response = app
        .post_json(
            "/user/login",
            &json!({"Username": "player123", "Password": "Passw0rd!"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.headers().get("retry-after").is_some());
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!("服务器暂时无法处理登录请求。")
    );
    for holder in holders {
        assert_eq!(holder.await.unwrap(), StatusCode::OK);
    }
}

#[tokio::test]
async fn a_slowloris_connection_is_dropped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn_with(|c| c.http.header_timeout = 1).await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    stream
        .write_all(b"POST /v1/login HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buffer = [0u8; 512];
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = stream.write_all(b"X-Slow: 1\r\n").await;
        match tokio::time::timeout(Duration::from_millis(10), stream.read(&mut buffer)).await {
            Ok(Ok(_)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Err(_) => {}
        }
    }
    assert!(closed, "the server kept a trickling connection open");
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn common_passwords_are_refused_wherever_a_password_is_set() {
    let app = TestApp::spawn().await;
    app.create_user("alice").await;
    let token = access(&app.login_ok("alice").await).to_owned();
    for weak in ["password123", "qwertyuiop", "alice1234", "12345678"] {
        let response = app
            .client
            .post(app.url("/v1/me/password"))
            .bearer_auth(&token)
            .json(&json!({"current_password": PASSWORD, "new_password": weak}))
            .send()
            .await
            .unwrap();
        let body = assert_problem(response, StatusCode::BAD_REQUEST, "weak_password").await;
        assert!(
            body["detail"].as_str().unwrap().contains("too common"),
            "{body}"
        );
    }
    let spec = sesame::core::accounts::AccountSpec {
        username: sesame::core::domain::Username::parse("bob").unwrap(),
        email: None,
        mobile: None,
        display_name: None,
        roles: vec![],
        max_api_calls: 0,
        password: sesame::core::domain::Password::new_password("iloveyou").unwrap(),
    };
    assert!(matches!(
        app.core
            .create_account(spec, &sesame::core::roles::Actor::Operator)
            .await,
        Err(sesame::core::Error::WeakPassword(_))
    ));
}

#[tokio::test]
async fn the_audit_log_tells_apart_what_the_client_cannot() {
    let app = TestApp::spawn_with(|c| {
        c.abuse.lockout_threshold = 3;
        c.abuse.account_burst = 99;
    })
    .await;
    let alice = app.create_user("alice").await;
    let bob = app.create_user("bob").await;
    app.core
        .set_enabled(bob.id, false, &sesame::core::roles::Actor::Operator)
        .await
        .unwrap();
    let grant = app.login_ok("alice").await;
    app.refresh(crate::helpers::refresh_token(&grant)).await;
    app.clock.advance(10);
    app.refresh(crate::helpers::refresh_token(&grant)).await;
    app.login("bob", PASSWORD).await;
    app.login("nobody", PASSWORD).await;
    app.post_json(
        "/user/login",
        &json!({"Username": "alice", "Password": "wrong-secret-1"}),
    )
    .await;
    for i in 0..3 {
        login_from(
            &app,
            &app.client_from(&format!("127.0.0.{}", 40 + i)),
            "alice",
            "wrong-secret-2",
        )
        .await;
    }
    let fresh = app.login_ok("alice").await;
    app.logout(access(&fresh), None).await;
    app.core
        .unlock(alice.id, &sesame::core::roles::Actor::Operator)
        .await
        .unwrap();

    let events = app
        .core
        .audit_events(&sesame::store::AuditQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let seen: Vec<(String, String, String)> = events
        .iter()
        .rev()
        .map(|e| (e.event.clone(), e.outcome.clone(), e.face.clone()))
        .collect();
    let expect = |event: &str, outcome: &str, face: &str| {
        assert!(
            seen.contains(&(event.to_owned(), outcome.to_owned(), face.to_owned())),
            "missing {event}/{outcome}/{face} in {seen:?}"
        );
    };
    expect("account_created", "success", "operator");
    expect("account_disabled", "success", "operator");
    expect("login", "success", "native");
    expect("refresh", "success", "native");
    expect("refresh", "reuse_detected", "native");
    expect("login", "disabled", "native");
    expect("login", "unknown_account", "native");
    expect("login", "wrong_password", "fungame");
    expect("lockout", "success", "native");
    expect("logout", "success", "native");
    expect("unlock", "success", "operator");
    let failure = events
        .iter()
        .find(|e| e.outcome == "wrong_password")
        .unwrap();
    assert!(failure.ip.is_some() && failure.at > 0);
    let everything = format!("{events:?}");
    for secret in [
        PASSWORD,
        "wrong-secret-1",
        "wrong-secret-2",
        access(&grant),
        crate::helpers::refresh_token(&grant),
    ] {
        assert!(
            !everything.contains(secret),
            "a secret reached the audit log"
        );
    }
    assert!(
        !everything.contains("nobody"),
        "unknown login names are not recorded"
    );

    app.clock.advance(91 * 86_400);
    assert!(app.core.purge_audit().await.unwrap() >= events.len() as u64);
    assert!(
        app.core
            .audit_events(&sesame::store::AuditQuery {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .is_empty(),
        "retention is 90 days by default"
    );
}

#[tokio::test]
async fn only_the_newest_known_clients_are_remembered() {
    let app = TestApp::spawn_with(|c| {
        c.abuse.known_clients_kept = 1;
        c.abuse.account_burst = 1;
    })
    .await;
    app.create_user("alice").await;
    let (home, office) = (app.client_from("127.0.0.1"), app.client_from("127.0.0.2"));
    assert_eq!(
        login_from(&app, &home, "alice", PASSWORD).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        login_from(&app, &office, "alice", PASSWORD).await.status(),
        StatusCode::OK
    );
    login_from(&app, &app.client_from("127.0.0.9"), "alice", "wrong guess!").await;
    assert_eq!(
        login_from(&app, &office, "alice", PASSWORD).await.status(),
        StatusCode::OK,
        "still known"
    );
    assert_eq!(
        login_from(&app, &home, "alice", PASSWORD).await.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "forgotten"
    );
}

/// A right password refused for a missing permission hides nothing (the
/// same password signs in on the native face), so it spends no budget: a
/// whole office behind one address trying a face they may not use is not
/// throttled for it.
#[tokio::test]
async fn a_missing_permission_spends_no_budget() {
    let app = TestApp::spawn_with(|c| {
        c.abuse.address_burst = 1;
        c.abuse.account_burst = 1;
    })
    .await;
    app.create_user("ann").await;
    let office = app.client_from("127.0.0.9");
    let refused = office
        .post(app.url("/manager/login"))
        .json(&json!({"username": "ann", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        login_from(&app, &office, "ann", PASSWORD).await.status(),
        StatusCode::OK
    );
}

/// Refusals that cost their sender nothing (a refresh with a string that
/// is no token, a throttled login) are recorded within the address's
/// budget: 30 at once, then one every 10 seconds. They are still counted
/// and refused all the same.
#[tokio::test]
async fn cheap_refusals_cannot_fill_the_audit_log() {
    let app = TestApp::spawn().await;
    let refreshes_refused = async || {
        app.core.flush_audit().await.unwrap();
        app.core
            .audit_events(&sesame::store::AuditQuery {
                outcome: Some("invalid_token".into()),
                limit: 200,
                ..Default::default()
            })
            .await
            .unwrap()
            .len()
    };
    for _ in 0..40 {
        assert_eq!(
            app.refresh("not a token").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(refreshes_refused().await, 30);
    app.clock.advance(10);
    for _ in 0..3 {
        assert_eq!(
            app.refresh("not a token").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(refreshes_refused().await, 31, "one more after 10 s");
}

/// A new password from an operator clears the account's failure budget on
/// every node (the guesses were of the old one): a client it does not know
/// signs in with the new password at once, where the spent budget would
/// have throttled it for a minute.
#[tokio::test]
async fn a_reset_clears_the_accounts_failure_budget() {
    let app = TestApp::spawn_with(|c| {
        c.abuse.account_burst = 3;
        c.abuse.account_interval = 60;
        c.abuse.lockout_threshold = 100;
    })
    .await;
    let account = app.create_user("alice").await;
    for i in 0..3 {
        let attacker = app.client_from(&format!("127.0.0.{}", 80 + i));
        login_from(&app, &attacker, "alice", "wrong guess!").await;
    }
    let stranger = app.client_from("127.0.0.90");
    assert_eq!(
        login_from(&app, &stranger, "alice", PASSWORD)
            .await
            .status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the account's budget is spent"
    );
    app.core
        .reset_password(
            account.id,
            &sesame::core::domain::Password::new_password("alice's new passphrase").unwrap(),
            &sesame::core::roles::Actor::Operator,
        )
        .await
        .unwrap();
    assert_eq!(
        login_from(&app, &stranger, "alice", "alice's new passphrase")
            .await
            .status(),
        StatusCode::OK,
        "cleared with the reset"
    );
}

/// How many unlocks by a new password the audit log holds.
async fn unlocks_by_a_new_password(app: &TestApp) -> usize {
    app.core.flush_audit().await.unwrap();
    app.core
        .audit_events(&sesame::store::AuditQuery {
            limit: 200,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event == "unlock" && e.detail.as_deref() == Some("by the new password"))
        .count()
}
