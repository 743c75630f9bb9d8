//! Every answer of every route, walked from the OpenAPI description (so a
//! new route is walked too): `nosniff`, no referrer, JSON labelled UTF-8,
//! and nothing cacheable but the public documents, with `Pragma: no-cache`
//! beside `no-store` (RFC 6749 §5.1).

use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TestApp, access};

/// Documents that carry no token and no account, and say they may be cached.
const PUBLIC: [&str; 4] = [
    "/.well-known/jwks.json",
    "/.well-known/openid-configuration",
    "/.well-known/oauth-authorization-server",
    "/openapi.json",
];

fn check(what: &str, response: &Response, cacheable: bool) -> Vec<String> {
    let headers = response.headers();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let mut wrong = Vec::new();
    if header("x-content-type-options") != "nosniff" {
        wrong.push(format!("{what}: no X-Content-Type-Options: nosniff"));
    }
    if header("referrer-policy") != "no-referrer" {
        wrong.push(format!("{what}: no Referrer-Policy: no-referrer"));
    }
    let content_type = header("content-type");
    if content_type.contains("json") && !content_type.ends_with("; charset=utf-8") {
        wrong.push(format!("{what}: {content_type} without charset=utf-8"));
    }
    if !cacheable && (header("cache-control") != "no-store" || header("pragma") != "no-cache") {
        wrong.push(format!(
            "{what}: Cache-Control {:?}, Pragma {:?}",
            header("cache-control"),
            header("pragma")
        ));
    }
    wrong
}

#[tokio::test]
async fn every_answer_of_every_route_carries_the_security_headers() {
    let app = TestApp::spawn().await;
    let admin = app
        .create_user_full("boss", None, None, &["administrator"])
        .await;
    let grant = app.login_ok("boss").await;
    let token = access(&grant).to_owned();
    let description: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut wrong = Vec::new();
    let mut walked = 0;
    for (template, item) in description["paths"].as_object().unwrap() {
        let path = template
            .replace("{id}", &admin.id.to_string())
            .replace("{name}", "user")
            .replace("{path}", "some/page");
        for method in ["get", "post", "put", "patch", "delete", "head", "options"] {
            if item.get(method).is_none() {
                continue;
            }
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            // Signed in and not: both answers count. (No route that would
            // end the session: its answer is checked last, below.)
            for signed_in in [false, true] {
                if signed_in && (template == "/v1/logout" || template.contains("sessions")) {
                    continue;
                }
                let mut request = app.client.request(method.clone(), app.url(&path));
                if signed_in {
                    request = request.bearer_auth(&token);
                }
                let response = request.send().await.unwrap();
                let what = format!("{method} {template} ({})", response.status());
                wrong.extend(check(&what, &response, PUBLIC.contains(&template.as_str())));
                walked += 1;
            }
        }
    }
    assert!(walked > 80, "walked only {walked}");

    // Answers that carry tokens, from each kind of face.
    let logins = [
        ("/v1/login", json!({"login": "boss", "password": PASSWORD})),
        (
            "/api/v1/login",
            json!({"username": "boss", "password": PASSWORD}),
        ),
        (
            "/manager/login",
            json!({"username": "boss", "password": PASSWORD}),
        ),
        (
            "/user/login",
            json!({"Username": "boss", "Password": PASSWORD}),
        ),
    ];
    for (path, body) in logins {
        let response = app.post_json(path, &body).await;
        assert_eq!(response.status(), 200, "{path}");
        wrong.extend(check(&format!("POST {path} (200)"), &response, false));
    }
    let response = app.refresh(crate::helpers::refresh_token(&grant)).await;
    assert_eq!(response.status(), 200);
    wrong.extend(check("POST /v1/refresh (200)", &response, false));
    let response = app
        .client
        .get(app.url(&format!(
            "/api/v1/user/method/login.user.user/?username=boss&password={}&platform=web",
            PASSWORD.replace(' ', "%20")
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    wrong.extend(check("GET careyshop login (200)", &response, false));
    let response = app.get("/v1/me/sessions", &token).await;
    wrong.extend(check("GET /v1/me/sessions (200)", &response, false));
    let response = app.logout(&token, None).await;
    wrong.extend(check("POST /v1/logout (204)", &response, false));
    // No route at all.
    let response = app.client.get(app.url("/nowhere")).send().await.unwrap();
    wrong.extend(check("GET /nowhere (404)", &response, false));
    assert!(wrong.is_empty(), "{wrong:#?}");
}
