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

/// Unknown fields and map keys are the client's text: named in the error
/// only when they are short plain names.
#[tokio::test]
async fn field_names_the_client_chose_are_named_only_when_plain() {
    let app = TestApp::spawn().await;
    app.create_user("alice").await;
    let grant = app.login_ok("alice").await;
    let token = crate::helpers::access(&grant);
    let send = |method: reqwest::Method, path: &'static str, body: serde_json::Value| {
        app.client
            .request(method, app.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let secret = "correct horse battery staple";
    for (method, path, body) in [
        (reqwest::Method::POST, "/v1/logout", json!({ secret: true })),
        (
            reqwest::Method::PATCH,
            "/v1/me",
            json!({"profile": { secret: 1 }}),
        ),
    ] {
        let body = assert_problem(
            send(method, path, body).await.unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        )
        .await;
        let text = body.to_string();
        assert!(!text.contains("horse"), "echoed: {text}");
        assert!(text.contains("(a field)"), "{text}");
    }
    let body = assert_problem(
        send(
            reqwest::Method::POST,
            "/v1/logout",
            json!({"everywhere": true}),
        )
        .await
        .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;
    assert_eq!(body["detail"], "unknown field `everywhere`");
    assert_eq!(
        app.me_status(token).await,
        StatusCode::OK,
        "the session is untouched"
    );
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

/// Sends a request whose headers promise a body of 100 bytes and only part
/// of it, and returns the status line, the headers and the body of the
/// answer, read until the server closes the connection.
async fn half_sent(app: &TestApp, path: &str, content_type: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n\
         Accept-Language: zh-CN\r\nContent-Length: 100\r\n\r\nlogin=al"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("an answer within 10 s")
    .unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_owned())
}

/// The body of a chunked or sized HTTP/1.1 answer, as JSON.
fn json_of(body: &str) -> serde_json::Value {
    let start = body.find(['{', '"']).unwrap();
    let end = body.rfind(['}', '"']).unwrap();
    serde_json::from_str(&body[start..=end]).unwrap()
}

/// A client that stops sending its body is answered 408 when
/// `http.request_timeout` runs out, by the face it called, in that face's
/// shape (it used to be an empty 408 on every face).
#[tokio::test]
async fn a_body_that_never_arrives_is_a_408_in_the_faces_shape() {
    let app = TestApp::spawn_with(|c| c.http.request_timeout = 1).await;
    let json = "application/json";
    let form = "application/x-www-form-urlencoded";
    // All at once: each waits out the second.
    let [
        native,
        token,
        page,
        careyshop,
        manager,
        ai_gateway,
        users_actions,
        fungame,
    ] = futures_util::future::join_all(
        [
            ("/v1/login", json),
            ("/oauth2/token", form),
            ("/oauth2/authorize/sign-in", form),
            ("/api/v1/user/method/login.user.user", json),
            ("/manager/login", json),
            ("/api/v1/login", json),
            ("/api/v1/users/actions/login", json),
            ("/user/login", json),
        ]
        .map(|(path, content_type)| half_sent(&app, path, content_type)),
    )
    .await
    .try_into()
    .unwrap();

    let (status, head, body) = native;
    assert_eq!(status, 408);
    assert!(
        head.contains("content-type: application/problem+json"),
        "{head}"
    );
    assert_eq!(json_of(&body)["code"], "request_timeout", "{body}");

    let (status, head, body) = token;
    assert_eq!(status, 408);
    assert!(head.contains("cache-control: no-store"), "{head}");
    assert_eq!(json_of(&body)["error"], "invalid_request", "{body}");

    // A page a person sees answers with the error page, in their language.
    let (status, head, body) = page;
    assert_eq!(status, 408);
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(body.contains("表单提交超时"), "{body}");

    let (status, _, body) = careyshop;
    assert_eq!(status, 408);
    assert_eq!(
        json_of(&body),
        json!({"status": 408, "message": "请求超时"}),
        "{body}"
    );
    let (status, _, body) = manager;
    assert_eq!(status, 408);
    assert_eq!(
        json_of(&body)["error"],
        "Request body did not arrive in time"
    );
    let (status, _, body) = ai_gateway;
    assert_eq!(status, 408);
    assert_eq!(
        json_of(&body)["detail"],
        "Request body did not arrive in time"
    );
    let (status, _, body) = users_actions;
    assert_eq!(status, 408);
    assert_eq!(json_of(&body)["message"], "请求超时", "{body}");
    // This contract words every unreadable request alike.
    let (status, _, body) = fungame;
    assert_eq!(status, 400);
    assert_eq!(json_of(&body), json!("服务器暂时无法处理登录请求。"));

    // The server is none the worse for it.
    app.create_user("alice").await;
    assert_eq!(app.login("alice", PASSWORD).await.status(), StatusCode::OK);
}

/// An answer Sesame cannot give in time (here: logins queued behind slow
/// hashes on one thread) is a 503 with `Retry-After` in the face's shape,
/// never the client's 408: an operator alerting on 5xx must see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_not_ready_in_time_is_a_503_in_the_faces_shape() {
    let app = TestApp::spawn_with(|c| {
        c.http.request_timeout = 1;
        c.passwords.threads = 1;
        // 0.1 s a hash or more (about 0.15 s on a 2-core AVX-512 VM):
        // sixteen logins queued on one thread need well over 1 s.
        c.passwords.memory_kib = 256 * 1024;
        c.passwords.iterations = 3;
        // Sixteen logins at once from an unknown client would otherwise
        // be throttled before their hashes.
        c.abuse.account_burst = 99;
    })
    .await;
    app.create_user("alice").await;
    let logins = (0..16).map(|i| {
        let app = &app;
        async move {
            if i % 2 == 0 {
                app.login("alice", PASSWORD).await
            } else {
                app.client
                    .post(app.url("/api/v1/user/method/login.user.user"))
                    .json(&json!({"username": "alice", "password": PASSWORD, "platform": "web"}))
                    .send()
                    .await
                    .unwrap()
            }
        }
    });
    let answers = futures_util::future::join_all(logins).await;
    let mut late = 0;
    for (i, answer) in answers.into_iter().enumerate() {
        if answer.status() == StatusCode::OK {
            continue;
        }
        late += 1;
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer.headers()["retry-after"], "1");
        let body: serde_json::Value = answer.json().await.unwrap();
        if i % 2 == 0 {
            assert_eq!(body["code"], "busy", "{body}");
        } else {
            assert_eq!(
                body,
                json!({"status": 503, "message": "服务器繁忙，请稍后再试"})
            );
        }
    }
    assert!(late > 0, "every login was answered within 1 s");
}
