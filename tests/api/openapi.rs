//! The OpenAPI description: served, written by `sesame openapi`, and
//! complete: a route that exists but is not described fails here.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::TestApp;

/// Every `.route("PATH", …)` of the HTTP faces, read from the source. A
/// route registered any other way (a path in a variable) fails the count,
/// so that nothing escapes the comparison.
fn routes_in_source() -> BTreeSet<String> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http"),
        &mut files,
    );
    let mut routes = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (at, _) in text.match_indices(".route(") {
            let rest = text[at + ".route(".len()..].trim_start();
            let path = rest
                .strip_prefix('"')
                .and_then(|rest| rest.split_once('"'))
                .map(|(path, _)| path)
                .unwrap_or_else(|| {
                    panic!(
                        "{}: a route whose path is not a literal; this test cannot see it",
                        file.display()
                    )
                });
            // axum's catch-all `{*rest}` is an OpenAPI `{rest}`.
            routes.insert(path.replace("{*", "{"));
        }
    }
    assert!(routes.len() > 40, "found only {routes:?}");
    routes
}

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// A concrete path for a template.
fn concrete(template: &str) -> String {
    template
        .replace("{id}", "1")
        .replace("{name}", "admin")
        .replace("{path}", "some/page")
}

#[tokio::test]
async fn the_description_covers_every_route_and_method() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let description: Value = response.json().await.unwrap();
    assert_eq!(description["openapi"], "3.1.0");
    assert_eq!(description["servers"][0]["url"], app.address);
    let paths = description["paths"].as_object().unwrap();

    let missing: Vec<String> = routes_in_source()
        .into_iter()
        .filter(|route| !paths.contains_key(route))
        .collect();
    assert!(
        missing.is_empty(),
        "routes without a description: {missing:?}"
    );

    // Method by method, over HTTP: a described method is routed (anything
    // but 405), one that is not described is not (405).
    let mut wrong = Vec::new();
    let mut operation_ids = BTreeMap::new();
    for (template, item) in paths {
        for method in METHODS {
            let described = item.get(method).is_some();
            if let Some(id) = item[method]["operationId"].as_str()
                && let Some(other) = operation_ids.insert(id.to_owned(), template.clone())
            {
                wrong.push(format!("operationId {id} of {template} is also {other}'s"));
            }
            let status = app
                .client
                .request(
                    Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                    app.url(&concrete(template)),
                )
                .send()
                .await
                .unwrap()
                .status();
            let routed = status != StatusCode::METHOD_NOT_ALLOWED
                && status != StatusCode::NOT_FOUND
                || template.contains('{') && status == StatusCode::NOT_FOUND;
            if described != routed {
                wrong.push(format!(
                    "{} {template}: described {described}, answered {status}",
                    method.to_uppercase()
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[tokio::test]
async fn the_description_is_of_this_deployment() {
    let app = TestApp::spawn_with(|c| {
        c.contracts.careyshop = false;
        c.contracts.fungame = false;
        c.metrics.listen = Some("127.0.0.1:0".into());
    })
    .await;
    let description: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = description["paths"].as_object().unwrap();
    for gone in [
        "/user/login",
        "/user/login/",
        "/api/v1/user/method/login.user.user/",
        "/metrics",
    ] {
        assert!(!paths.contains_key(gone), "{gone} is described");
        let status = app
            .client
            .post(app.url(gone))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, StatusCode::NOT_FOUND, "{gone} is served");
    }
    assert!(paths.contains_key("/api/v1/login"));
    let tags: Vec<&str> = description["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        !tags.contains(&"careyshop") && tags.contains(&"ai-gateway"),
        "{tags:?}"
    );
}

#[test]
fn sesame_openapi_writes_the_served_description() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    let output = crate::helpers::sesame_command([
        ("SESAME_DATA_DIR", dir.path().display().to_string()),
        ("SESAME_PUBLIC_URL", "https://id.example.com".to_owned()),
    ])
    .args(["openapi", "--output"])
    .arg(&file)
    .output()
    .unwrap();
    assert!(output.status.success(), "{output:?}");
    let written: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(written["openapi"], "3.1.0");
    assert_eq!(written["servers"][0]["url"], "https://id.example.com");
    assert!(written["paths"]["/v1/login"]["post"].is_object());
    assert!(
        written["components"]["schemas"]["Problem"]["properties"]["code"].is_object(),
        "{written}"
    );
    let stdout =
        crate::helpers::sesame_command([("SESAME_DATA_DIR", dir.path().display().to_string())])
            .arg("openapi")
            .output()
            .unwrap();
    let printed: Value = serde_json::from_slice(&stdout.stdout).unwrap();
    assert_eq!(printed["paths"], written["paths"]);
    assert!(
        !dir.path().join("sesame.db").exists(),
        "no database is opened"
    );
}
