//! CORS: preflights and requests from allowed and disallowed origins, per
//! face, with and without credentials; and a real browser (Debian's headless
//! Chromium) running a page of one origin that signs in on Sesame with
//! `fetch`, which works from an allowed origin and is blocked from another.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{PASSWORD, TestApp};

const APP: &str = "https://app.example.com";
const OTHER: &str = "https://evil.example.net";

fn origins(list: &[&str]) -> sesame::config::OriginList {
    sesame::config::OriginList(list.iter().map(|o| o.to_string()).collect())
}

fn cors_headers(response: &reqwest::Response) -> Vec<(String, String)> {
    response
        .headers()
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("access-control-"))
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
        .collect()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

async fn preflight(app: &TestApp, path: &str, origin: &str) -> reqwest::Response {
    app.client
        .request(Method::OPTIONS, app.url(path))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type, sesame-device",
        )
        .send()
        .await
        .unwrap()
}

async fn login_from(app: &TestApp, origin: Option<&str>, password: &str) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/v1/login"))
        .json(&json!({"login": "ann", "password": password}));
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn an_allowed_origin_gets_its_preflight_and_its_answers() {
    let app = TestApp::spawn_with(|raw| raw.cors_origins = origins(&[APP])).await;
    app.create_user("ann").await;

    let response = preflight(&app, "/v1/login", APP).await;
    assert!(response.status().is_success(), "{}", response.status());
    assert_eq!(header(&response, "access-control-allow-origin"), Some(APP));
    let methods = header(&response, "access-control-allow-methods").unwrap();
    for method in ["GET", "POST", "DELETE"] {
        assert!(methods.contains(method), "{methods}");
    }
    let allowed = header(&response, "access-control-allow-headers").unwrap();
    for name in ["authorization", "content-type", "sesame-device"] {
        assert!(allowed.contains(name), "{allowed}");
    }
    assert_eq!(header(&response, "access-control-max-age"), Some("600"));
    assert!(header(&response, "vary").unwrap().contains("origin"));
    assert_eq!(header(&response, "access-control-allow-credentials"), None);

    let response = login_from(&app, Some(APP), PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "access-control-allow-origin"), Some(APP));
    let exposed = header(&response, "access-control-expose-headers").unwrap();
    for name in ["retry-after", "sesame-device"] {
        assert!(exposed.contains(name), "{exposed}");
    }
    assert!(header(&response, "vary").unwrap().contains("origin"));

    // Errors carry the headers too, so that the page can read them.
    let response = login_from(&app, Some(APP), "wrong password entirely").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(header(&response, "access-control-allow-origin"), Some(APP));
}

#[tokio::test]
async fn another_origin_or_no_browser_gets_no_cors_header() {
    let app = TestApp::spawn_with(|raw| raw.cors_origins = origins(&[APP])).await;
    app.create_user("ann").await;

    for origin in [
        OTHER,
        "null",
        "https://app.example.com.evil.net",
        "http://app.example.com",
    ] {
        let response = preflight(&app, "/v1/login", origin).await;
        assert_eq!(cors_headers(&response), [], "{origin}");
        assert!(header(&response, "vary").unwrap().contains("origin"));
        let response = login_from(&app, Some(origin), PASSWORD).await;
        assert_eq!(cors_headers(&response), [], "{origin}");
    }
    let response = login_from(&app, None, PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(cors_headers(&response), []);
    assert!(header(&response, "vary").unwrap().contains("origin"));
}

/// Forward auth takes every method, OPTIONS too, and asks for a token
/// whatever CORS allows: a proxy forwarding a client's OPTIONS request must
/// not get an empty 200 (a preflight's answer) as a "yes".
#[tokio::test]
async fn forward_auth_is_no_preflight_whatever_cors_allows() {
    let app = TestApp::spawn_with(|raw| raw.cors_origins = origins(&[APP])).await;
    app.create_user("ann").await;
    for path in ["/v1/authz", "/v1/authz/some/app"] {
        let bare = app
            .client
            .request(Method::OPTIONS, app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(bare.status(), StatusCode::UNAUTHORIZED, "{path}");
        let preflight = preflight(&app, path, APP).await;
        assert_eq!(preflight.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(cors_headers(&preflight), [], "{path}");
    }
    let grant = app.login_ok("ann").await;
    let allowed = app
        .client
        .request(Method::OPTIONS, app.url("/v1/authz"))
        .bearer_auth(grant["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), StatusCode::OK);
    assert_eq!(
        preflight(&app, "/v1/login", APP).await.status(),
        StatusCode::OK,
        "the other native routes keep their preflights"
    );
}

#[tokio::test]
async fn without_configuration_there_is_no_cors_at_all() {
    let app = TestApp::spawn().await;
    app.create_user("ann").await;
    let response = preflight(&app, "/v1/login", APP).await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(cors_headers(&response), []);
    let response = login_from(&app, Some(APP), PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(cors_headers(&response), []);
    assert_eq!(header(&response, "vary"), None);
}

#[tokio::test]
async fn each_face_can_have_its_own_origins_and_credentials_are_opt_in() {
    let app = TestApp::spawn_with(|raw| {
        raw.cors_origins = origins(&[APP]);
        raw.cors.admin = Some(origins(&[]));
        raw.cors.oauth = Some(origins(&[OTHER]));
        raw.cors.allow_credentials = true;
        raw.cors.max_age = 60;
    })
    .await;
    let allowed = |response: &reqwest::Response| {
        header(response, "access-control-allow-origin").map(str::to_owned)
    };

    for (path, origin, expected) in [
        ("/v1/login", APP, Some(APP)),
        ("/v1/me", APP, Some(APP)),
        ("/v1/admin/users", APP, None),
        ("/oauth2/token", APP, None),
        ("/oauth2/token", OTHER, Some(OTHER)),
        ("/.well-known/openid-configuration", OTHER, Some(OTHER)),
        ("/api/v1/login", APP, Some(APP)),
        ("/metrics", APP, None),
    ] {
        let response = preflight(&app, path, origin).await;
        assert_eq!(
            allowed(&response).as_deref(),
            expected,
            "{path} from {origin}"
        );
        if expected.is_some() {
            assert_eq!(
                header(&response, "access-control-allow-credentials"),
                Some("true")
            );
            assert_eq!(header(&response, "access-control-max-age"), Some("60"));
        } else {
            assert_eq!(cors_headers(&response), [], "{path} from {origin}");
        }
    }
    let response = app
        .client
        .get(app.url("/.well-known/openid-configuration"))
        .header("origin", OTHER)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(allowed(&response).as_deref(), Some(OTHER));
    assert_eq!(
        header(&response, "access-control-allow-credentials"),
        Some("true")
    );
}

/// The test's web page: served on a port of its own, so its origin is
/// `http://127.0.0.1:PORT` or `http://localhost:PORT` by the name the
/// browser is given; it signs in with `fetch` on the Sesame named in its
/// query string (`?sesame=URL`) and writes the outcome into its title.
async fn page_server() -> u16 {
    let page = format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>pending</title></head>
<body><script>
const sesame = new URLSearchParams(location.search).get("sesame");
fetch(sesame + "/v1/login", {{
  method: "POST",
  headers: {{"Content-Type": "application/json"}},
  body: JSON.stringify({{login: "ann", password: "{PASSWORD}"}})
}}).then(async (r) => {{
  const body = await r.json();
  document.title = "answered " + r.status + " " + (body.access_token ? "with a token" : "without");
}}).catch((e) => {{ document.title = "blocked: " + e.name; }});
</script></body></html>"#
    );
    let router = axum::Router::new().route(
        "/page.html",
        axum::routing::get(move || {
            let page = page.clone();
            async move { axum::response::Html(page) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    port
}

/// The title of `url` once its scripts have run, in headless Chromium.
async fn title_in_chromium(url: String) -> String {
    let profile = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new("/usr/bin/chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            // Time in the page runs until it is idle (the fetch answered),
            // at most this long.
            "--virtual-time-budget=15000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(&url)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), output)
        .await
        .expect("chromium finishes")
        .expect("chromium runs");
    let dom = String::from_utf8_lossy(&output.stdout);
    let title = dom
        .split("<title>")
        .nth(1)
        .and_then(|rest| rest.split("</title>").next())
        .unwrap_or_else(|| {
            panic!(
                "no title in {dom}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    title.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_signs_in_from_an_allowed_origin_and_is_blocked_from_another() {
    if crate::helpers::installed("/usr/bin/chromium".into(), "Debian's chromium").is_none() {
        return;
    }
    let page_port = page_server().await;
    let app = TestApp::spawn_with(|raw| {
        raw.cors_origins = origins(&[&format!("http://127.0.0.1:{page_port}")]);
    })
    .await;
    app.create_user("ann").await;

    let page = |host: &str| format!("http://{host}:{page_port}/page.html?sesame={}", app.address);
    let allowed = title_in_chromium(page("127.0.0.1")).await;
    assert_eq!(allowed, "answered 200 with a token");
    let blocked = title_in_chromium(page("localhost")).await;
    assert_eq!(blocked, "blocked: TypeError");
}
