//! The admin API (`/v1/admin/`): who may call it, every route's effect and
//! its validation, pagination, the last-administrator rule and the audit log.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TestApp, access, assert_problem};

/// An application with an administrator `root` and a plain user `ann`,
/// both signed in.
struct Admin {
    app: TestApp,
    root: String,
    ann: String,
}

impl Admin {
    async fn spawn() -> Self {
        let app = TestApp::spawn().await;
        app.create_user_full("root", None, None, &["administrator"])
            .await;
        app.create_user("ann").await;
        let root = access(&app.login_ok("root").await).to_owned();
        let ann = access(&app.login_ok("ann").await).to_owned();
        Self { app, root, ann }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> reqwest::Response {
        self.call_as(&self.root, method, path, body).await
    }

    async fn call_as(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let request = self
            .app
            .client
            .request(method, self.app.url(path))
            .bearer_auth(token);
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        request.send().await.unwrap()
    }

    async fn json(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let response = self.call(method.clone(), path, body).await;
        assert!(
            response.status().is_success(),
            "{method} {path}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }

    async fn create(&self, body: Value) -> Value {
        let response = self.call(Method::POST, "/v1/admin/users", Some(body)).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.unwrap()
    }

    async fn id_of(&self, username: &str) -> i64 {
        self.app.core.find_by_username(username).await.unwrap().id
    }
}

/// A NUL or another control character in a path names nothing: 404, on
/// every backend (PostgreSQL refuses a NUL in text with an error).
#[tokio::test]
async fn control_characters_in_a_path_name_nothing() {
    let admin = Admin::spawn().await;
    for (method, path) in [
        (Method::DELETE, "/v1/admin/sessions/%00"),
        (Method::DELETE, "/v1/admin/sessions/a%00b"),
        (Method::GET, "/v1/admin/roles/a%00b"),
        (Method::DELETE, "/v1/admin/roles/%07"),
        (Method::GET, "/v1/admin/users/%00"),
        (Method::GET, "/v1/admin/users/%FF"),
    ] {
        let response = admin.call(method.clone(), path, None).await;
        assert_problem(response, StatusCode::NOT_FOUND, "not_found").await;
    }
    for path in ["/v1/me/sessions/%00", "/v1/me/sessions/%FF%FE"] {
        let response = admin.call_as(&admin.ann, Method::DELETE, path, None).await;
        assert_problem(response, StatusCode::NOT_FOUND, "not_found").await;
    }
    let response = admin
        .call_as(
            &admin.ann,
            Method::DELETE,
            "/v1/me/sessions/not-a-session",
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn every_route_needs_a_live_administrator() {
    let admin = Admin::spawn().await;
    let ann = admin.id_of("ann").await;
    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/v1/admin/users".into(), None),
        (
            Method::POST,
            "/v1/admin/users".into(),
            Some(json!({"username": "x", "password": PASSWORD})),
        ),
        (Method::GET, format!("/v1/admin/users/{ann}"), None),
        (
            Method::PATCH,
            format!("/v1/admin/users/{ann}"),
            Some(json!({"display_name": "A"})),
        ),
        (Method::DELETE, format!("/v1/admin/users/{ann}"), None),
        (
            Method::POST,
            format!("/v1/admin/users/{ann}/password"),
            Some(json!({"password": PASSWORD})),
        ),
        (Method::POST, format!("/v1/admin/users/{ann}/unlock"), None),
        (
            Method::POST,
            format!("/v1/admin/users/{ann}/reset-quota"),
            None,
        ),
        (Method::GET, format!("/v1/admin/users/{ann}/sessions"), None),
        (
            Method::DELETE,
            format!("/v1/admin/users/{ann}/sessions"),
            None,
        ),
        (Method::DELETE, "/v1/admin/sessions/nope".into(), None),
        (Method::GET, "/v1/admin/roles".into(), None),
        (
            Method::POST,
            "/v1/admin/roles".into(),
            Some(json!({"name": "x", "permissions": []})),
        ),
        (Method::GET, "/v1/admin/roles/user".into(), None),
        (
            Method::PATCH,
            "/v1/admin/roles/user".into(),
            Some(json!({"description": "d"})),
        ),
        (Method::DELETE, "/v1/admin/roles/x".into(), None),
        (Method::GET, "/v1/admin/audit".into(), None),
        (Method::GET, "/v1/admin/legacy-passwords".into(), None),
    ];
    // Every operation of the admin API is here (a route added later must
    // be added above).
    let openapi: Value = reqwest::get(admin.app.url("/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let operations: usize = openapi["paths"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(path, _)| path.starts_with("/v1/admin/"))
        .map(|(_, methods)| methods.as_object().unwrap().len())
        .sum();
    assert_eq!(operations, routes.len(), "every admin operation is tried");
    for (method, path, body) in &routes {
        let anonymous = admin
            .app
            .client
            .request(method.clone(), admin.app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(
            anonymous.headers()["www-authenticate"],
            "Bearer realm=\"sesame\""
        );
        assert_problem(anonymous, StatusCode::UNAUTHORIZED, "unauthenticated").await;
        let user = admin
            .call_as(&admin.ann, method.clone(), path, body.clone())
            .await;
        assert_problem(user, StatusCode::FORBIDDEN, "forbidden").await;
    }
    // Nothing above changed anything: ann is still there and signed in.
    assert_eq!(admin.app.me_status(&admin.ann).await, StatusCode::OK);
    // Each refusal of a signed-in caller is in the audit log, with the path
    // (never the query string) and the caller's address.
    let refusals = admin
        .json(
            Method::GET,
            "/v1/admin/audit?outcome=denied&user=ann&limit=200",
            None,
        )
        .await;
    let refusals = refusals["items"].as_array().unwrap();
    assert_eq!(refusals.len(), routes.len());
    assert!(refusals.iter().all(|e| e["event"] == "admin_refused"
        && e["ip"] == "127.0.0.1"
        && e["face"] == "admin_api"));
    assert!(
        refusals
            .iter()
            .any(|e| e["detail"] == "GET /v1/admin/users")
    );
    // A caller who keeps trying cannot fill the audit log: an account's
    // refusals are recorded up to a budget, then one in a while.
    let budget = sesame::core::authz::ADMIN_REFUSALS_AUDITED;
    for _ in 0..budget.burst + 10 {
        let user = admin
            .call_as(&admin.ann, Method::GET, "/v1/admin/users", None)
            .await;
        assert_eq!(user.status(), StatusCode::FORBIDDEN);
    }
    let count = |admin_json: Value| admin_json["items"].as_array().unwrap().len();
    let recorded = count(
        admin
            .json(
                Method::GET,
                "/v1/admin/audit?outcome=denied&user=ann&limit=200",
                None,
            )
            .await,
    );
    assert_eq!(recorded, usize::try_from(budget.burst).unwrap());
    admin.app.clock.advance(budget.interval * 2);
    admin
        .call_as(&admin.ann, Method::GET, "/v1/admin/users", None)
        .await;
    let recorded_later = count(
        admin
            .json(
                Method::GET,
                "/v1/admin/audit?outcome=denied&user=ann&limit=200",
                None,
            )
            .await,
    );
    assert_eq!(
        recorded_later,
        recorded + 1,
        "one more once time has passed"
    );

    // The permission is read live: an administrator demoted is refused at once.
    admin
        .app
        .create_user_full("boss", None, None, &["administrator"])
        .await;
    let boss = access(&admin.app.login_ok("boss").await).to_owned();
    let boss_id = admin.id_of("boss").await;
    assert_eq!(
        admin
            .call_as(&boss, Method::GET, "/v1/admin/users", None)
            .await
            .status(),
        StatusCode::OK
    );
    let demoted = admin
        .call(
            Method::PATCH,
            &format!("/v1/admin/users/{boss_id}"),
            Some(json!({"roles": ["user"]})),
        )
        .await;
    assert_eq!(demoted.status(), StatusCode::OK);
    let refused = admin
        .call_as(&boss, Method::GET, "/v1/admin/users", None)
        .await;
    assert_problem(refused, StatusCode::FORBIDDEN, "forbidden").await;
}

#[tokio::test]
async fn accounts_are_created_shown_changed_and_deleted() {
    let admin = Admin::spawn().await;
    let response = admin
        .call(
            Method::POST,
            "/v1/admin/users",
            Some(json!({
                "username": "Bob", "password": "bob password 1", "email": "Bob@Example.com",
                "mobile": "13800000001", "display_name": "Bob B", "roles": ["user", "administrator"],
                "max_api_calls": 100, "quota_period": "month", "profile": {"gender": "m"},
            })),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let bob: Value = response.json().await.unwrap();
    assert_eq!(
        location,
        format!("/v1/admin/users/{}", bob["id"].as_str().unwrap())
    );
    assert_eq!(bob["username"], "Bob");
    assert_eq!(bob["email"], "Bob@Example.com");
    assert_eq!(bob["roles"], json!(["administrator", "user"]));
    assert_eq!(bob["permissions"], json!(["admin", "read", "write"]));
    assert_eq!(bob["max_api_calls"], 100);
    assert_eq!(bob["quota_period"], "month");
    assert_eq!(bob["profile"], json!({"gender": "m"}));
    assert!(bob.get("password_hash").is_none() && !bob.to_string().contains("argon2"));
    assert_eq!(
        admin.json(Method::GET, &location, None).await["username"],
        "Bob"
    );
    assert_eq!(
        admin.app.login("bob", "bob password 1").await.status(),
        StatusCode::OK
    );

    let changed = admin
        .json(
            Method::PATCH,
            &location,
            Some(json!({
                "display_name": "Robert", "email": "robert@example.com", "mobile": null,
                "max_api_calls": 0, "quota_period": null, "profile": {"gender": null, "qq": "1"},
                "roles": ["user"],
            })),
        )
        .await;
    assert_eq!(changed["display_name"], "Robert");
    assert_eq!(changed["email"], "robert@example.com");
    assert_eq!(changed["mobile"], Value::Null);
    assert_eq!(changed["max_api_calls"], 0);
    assert_eq!(
        changed["quota_period"],
        Value::Null,
        "null: the deployment's default"
    );
    assert_eq!(changed["profile"], json!({"qq": "1"}));
    assert_eq!(changed["roles"], json!(["user"]));
    assert_eq!(
        admin
            .app
            .login("robert@example.com", "bob password 1")
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        admin
            .app
            .login("13800000001", "bob password 1")
            .await
            .status(),
        StatusCode::UNAUTHORIZED,
        "the removed mobile no longer signs in"
    );

    // A new password ends every session.
    let bob_token = access(&admin.app.login_ok_with("bob", "bob password 1").await).to_owned();
    let reset = admin
        .call(
            Method::POST,
            &format!("{location}/password"),
            Some(json!({"password": "bob password 2"})),
        )
        .await;
    assert_eq!(reset.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        admin.app.me_status(&bob_token).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        admin.app.login("bob", "bob password 1").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        admin.app.login("bob", "bob password 2").await.status(),
        StatusCode::OK
    );

    let bob_token = access(&admin.app.login_ok_with("bob", "bob password 2").await).to_owned();
    assert_eq!(
        admin.call(Method::DELETE, &location, None).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        admin.app.me_status(&bob_token).await,
        StatusCode::UNAUTHORIZED
    );
    assert_problem(
        admin.call(Method::GET, &location, None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_problem(
        admin.call(Method::DELETE, &location, None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    for path in [
        "/v1/admin/users/0",
        "/v1/admin/users/abc",
        "/v1/admin/users/%FF",
    ] {
        assert_problem(
            admin.call(Method::GET, path, None).await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }
}

#[tokio::test]
async fn bad_input_is_refused_naming_the_field_and_changes_nothing() {
    let admin = Admin::spawn().await;
    let ann = admin.id_of("ann").await;
    admin
        .create(json!({"username": "carol", "password": PASSWORD, "email": "carol@example.com", "mobile": "13800000002"}))
        .await;
    let create = |body: Value| admin.call(Method::POST, "/v1/admin/users", Some(body));
    for (body, status, code, field) in [
        (
            json!({"username": "CAROL", "password": PASSWORD}),
            409,
            "conflict",
            "username",
        ),
        (
            json!({"username": "c2", "password": PASSWORD, "email": "CAROL@example.COM"}),
            409,
            "conflict",
            "email",
        ),
        (
            json!({"username": "c3", "password": PASSWORD, "mobile": "13800000002"}),
            409,
            "conflict",
            "mobile",
        ),
        (
            json!({"username": "a b", "password": PASSWORD}),
            400,
            "invalid_input",
            "username",
        ),
        // Would pass for carol in a header an upstream app trusts.
        (
            json!({"username": "car\u{200B}ol", "password": PASSWORD}),
            400,
            "invalid_input",
            "username",
        ),
        (
            json!({"username": "c1", "password": PASSWORD, "email": "carol\u{202E}@example.com"}),
            400,
            "invalid_input",
            "email",
        ),
        (
            json!({"username": "c4", "password": PASSWORD, "email": "nope"}),
            400,
            "invalid_input",
            "email",
        ),
        (
            json!({"username": "c5", "password": PASSWORD, "roles": ["nope"]}),
            400,
            "invalid_input",
            "roles",
        ),
        (
            json!({"username": "c5", "password": PASSWORD, "roles": ["Not A Name"]}),
            400,
            "invalid_input",
            "roles",
        ),
        (
            json!({"username": "c6", "password": PASSWORD, "max_api_calls": -1}),
            400,
            "invalid_input",
            "max_api_calls",
        ),
        (
            json!({"username": "c7", "password": PASSWORD, "profile": {"bad name": "x"}}),
            400,
            "invalid_input",
            "profile",
        ),
        (
            json!({"username": "c8", "password": PASSWORD, "display_name": "a\u{7}"}),
            400,
            "invalid_input",
            "display_name",
        ),
    ] {
        let response = create(body.clone()).await;
        let problem = assert_problem(response, StatusCode::from_u16(status).unwrap(), code).await;
        assert_eq!(problem["field"], field, "{body}");
    }
    let weak = create(json!({"username": "c9", "password": "short"})).await;
    assert_eq!(weak.status(), StatusCode::BAD_REQUEST);
    let unknown = create(json!({"username": "c10", "password": PASSWORD, "admin": true})).await;
    assert_problem(unknown, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    let missing = create(json!({"username": "c11"})).await;
    assert_problem(missing, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    let twice =
        create(json!({"username": "c13", "password": PASSWORD, "roles": ["user", "user"]})).await;
    assert_eq!(twice.status(), StatusCode::CREATED);
    assert_eq!(
        twice.json::<Value>().await.unwrap()["roles"],
        json!(["user"])
    );
    for name in ["c5", "c6", "c7", "c8", "c9", "c10", "c11", "c12"] {
        assert!(
            admin.app.core.find_by_username(name).await.is_err(),
            "{name} was created"
        );
    }

    let ann_path = format!("/v1/admin/users/{ann}");
    let patch = |body: Value| admin.call(Method::PATCH, &ann_path, Some(body));
    for (body, status, code, field) in [
        (json!({"status": "locked"}), 400, "invalid_input", "status"),
        (
            json!({"email": "Carol@Example.com"}),
            409,
            "conflict",
            "email",
        ),
        (json!({"mobile": "x"}), 400, "invalid_input", "mobile"),
        (
            json!({"roles": ["Not a role"]}),
            400,
            "invalid_input",
            "roles",
        ),
        (
            json!({"display_name": "ok", "max_api_calls": -5}),
            400,
            "invalid_input",
            "max_api_calls",
        ),
        // Good changes beside a bad one: none of them is applied.
        (
            json!({"status": "disabled", "roles": ["no-such-role"]}),
            400,
            "invalid_input",
            "roles",
        ),
        (
            json!({"status": "disabled", "roles": ["administrator"], "email": "carol@example.com"}),
            409,
            "conflict",
            "email",
        ),
    ] {
        let response = patch(body.clone()).await;
        let problem = assert_problem(response, StatusCode::from_u16(status).unwrap(), code).await;
        assert_eq!(problem["field"], field, "{body}");
    }
    let shown = admin
        .json(Method::GET, &format!("/v1/admin/users/{ann}"), None)
        .await;
    assert_eq!(shown["display_name"], "", "a refused change wrote nothing");
    assert_eq!(shown["email"], Value::Null);
    assert_eq!(shown["status"], "active");
    assert_eq!(shown["roles"], json!(["user"]));

    for query in [
        "limit=0",
        "limit=201",
        "limit=x",
        "status=gone",
        "role=Bad%20Role",
        "cursor=abc",
        "cursor=-1",
        "sort=name",
    ] {
        let response = admin
            .call(Method::GET, &format!("/v1/admin/users?{query}"), None)
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
    }
    for query in [
        "since=yesterday",
        "until=2026-13-01T00:00:00Z",
        "limit=500",
        "cursor=x",
    ] {
        let response = admin
            .call(Method::GET, &format!("/v1/admin/audit?{query}"), None)
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
    }
    // A name no account can have (PostgreSQL refuses a NUL in text): no
    // such account, so no events; the same on every backend.
    for user in ["%00", "ann%00", "%0A"] {
        let response = admin
            .call(Method::GET, &format!("/v1/admin/audit?user={user}"), None)
            .await;
        assert_eq!(response.status(), StatusCode::OK, "{user}");
        let page: Value = response.json().await.unwrap();
        assert_eq!(page["items"], json!([]), "{user}");
    }
    let not_json = admin
        .app
        .client
        .post(admin.app.url("/v1/admin/roles"))
        .bearer_auth(&admin.root)
        .body("name=x")
        .send()
        .await
        .unwrap();
    assert_problem(
        not_json,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
}

#[tokio::test]
async fn pages_have_no_gaps_or_repeats_while_accounts_are_added() {
    let admin = Admin::spawn().await;
    for i in 0..23 {
        admin.app.create_user(&format!("user{i:02}")).await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut added = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/admin/users?limit=7&cursor={c}"),
            None => "/v1/admin/users?limit=7".into(),
        };
        let page = admin.json(Method::GET, &path, None).await;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 7);
        seen.extend(
            items
                .iter()
                .map(|u| u["username"].as_str().unwrap().to_owned()),
        );
        // Accounts keep arriving between pages.
        if added < 3 {
            admin.app.create_user(&format!("late{added}")).await;
            added += 1;
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "a repeat in {seen:?}");
    assert_eq!(
        seen.len(),
        2 + 23 + 3,
        "every account exactly once: {seen:?}"
    );

    let found = admin
        .json(Method::GET, "/v1/admin/users?q=USER1", None)
        .await;
    let names: Vec<&str> = found["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "user10", "user11", "user12", "user13", "user14", "user15", "user16", "user17",
            "user18", "user19"
        ]
    );
    let admins = admin
        .json(Method::GET, "/v1/admin/users?role=administrator", None)
        .await;
    assert_eq!(admins["items"].as_array().unwrap().len(), 1);
    let ann = admin.id_of("ann").await;
    admin
        .call(
            Method::PATCH,
            &format!("/v1/admin/users/{ann}"),
            Some(json!({"status": "disabled", "email": "Ann@Example.org"})),
        )
        .await;
    let disabled = admin
        .json(Method::GET, "/v1/admin/users?status=disabled", None)
        .await;
    assert_eq!(disabled["items"][0]["username"], "ann");
    assert_eq!(disabled["items"].as_array().unwrap().len(), 1);
    let by_email = admin
        .json(Method::GET, "/v1/admin/users?q=ann%40EXAMPLE", None)
        .await;
    assert_eq!(by_email["items"][0]["username"], "ann");
    assert_eq!(by_email["next_cursor"], Value::Null);
}

#[tokio::test]
async fn disabling_ends_every_session_and_enabling_lets_the_account_back() {
    let admin = Admin::spawn().await;
    let ann = admin.id_of("ann").await;
    let other = access(&admin.app.login_on("ann", "ios").await).to_owned();
    let path = format!("/v1/admin/users/{ann}");
    let disabled = admin
        .json(Method::PATCH, &path, Some(json!({"status": "disabled"})))
        .await;
    assert_eq!(disabled["status"], "disabled");
    for token in [&admin.ann, &other] {
        assert_eq!(admin.app.me_status(token).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        admin.app.login("ann", PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    admin
        .json(Method::PATCH, &path, Some(json!({"status": "active"})))
        .await;
    assert_eq!(
        admin.app.login("ann", PASSWORD).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_last_administrator_cannot_be_removed() {
    let admin = Admin::spawn().await;
    let root = admin.id_of("root").await;
    let path = format!("/v1/admin/users/{root}");
    for (method, path, body) in [
        (
            Method::PATCH,
            path.clone(),
            Some(
                json!({"status": "disabled", "display_name": "changed", "email": "r@example.com"}),
            ),
        ),
        (
            Method::PATCH,
            path.clone(),
            Some(json!({"roles": ["user"]})),
        ),
        // Roles that keep it an administrator, with a disabling: refused
        // whole, the roles unchanged.
        (
            Method::PATCH,
            path.clone(),
            Some(json!({"roles": ["administrator", "user"], "status": "disabled"})),
        ),
        (Method::DELETE, path.clone(), None),
        (
            Method::PATCH,
            "/v1/admin/roles/administrator".into(),
            Some(json!({"permissions": ["read"]})),
        ),
    ] {
        let response = admin.call(method.clone(), &path, body).await;
        let problem = assert_problem(response, StatusCode::CONFLICT, "last_administrator").await;
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("administrator"),
            "{method} {path}"
        );
    }
    let builtin = admin
        .call(Method::DELETE, "/v1/admin/roles/administrator", None)
        .await;
    assert_eq!(
        assert_problem(builtin, StatusCode::BAD_REQUEST, "invalid_input").await["field"],
        "name"
    );
    let shown = admin.json(Method::GET, &path, None).await;
    assert_eq!(shown["status"], "active");
    assert_eq!(
        shown["display_name"], "",
        "a refused change leaves nothing half done"
    );
    assert_eq!(shown["email"], Value::Null);
    assert_eq!(shown["roles"], json!(["administrator"]));
    assert_eq!(
        admin.app.me_status(&admin.root).await,
        StatusCode::OK,
        "no session was ended"
    );

    // With a second administrator, root may step down.
    let ann = admin.id_of("ann").await;
    admin
        .json(
            Method::PATCH,
            &format!("/v1/admin/users/{ann}"),
            Some(json!({"roles": ["administrator"]})),
        )
        .await;
    admin
        .json(Method::PATCH, &path, Some(json!({"roles": ["user"]})))
        .await;
    assert_problem(
        admin.call(Method::GET, "/v1/admin/users", None).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
}

#[tokio::test]
async fn roles_are_defined_changed_and_deleted() {
    let admin = Admin::spawn().await;
    let created = admin
        .call(Method::POST, "/v1/admin/roles", Some(json!({"name": "editor", "description": "Edits", "permissions": ["write", "read", "write"]})))
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    assert_eq!(
        created,
        json!({"name": "editor", "description": "Edits", "permissions": ["read", "write"], "built_in": false})
    );
    let again = admin
        .call(
            Method::POST,
            "/v1/admin/roles",
            Some(json!({"name": "editor", "permissions": []})),
        )
        .await;
    assert_eq!(
        assert_problem(again, StatusCode::CONFLICT, "conflict").await["field"],
        "name"
    );
    for (body, field) in [
        (json!({"name": "Editor", "permissions": []}), "name"),
        (json!({"name": "x", "permissions": ["No"]}), "permissions"),
        (
            json!({"name": "y", "description": "a\nb", "permissions": []}),
            "description",
        ),
    ] {
        let response = admin
            .call(Method::POST, "/v1/admin/roles", Some(body))
            .await;
        assert_eq!(
            assert_problem(response, StatusCode::BAD_REQUEST, "invalid_input").await["field"],
            field
        );
    }
    let listed = admin.json(Method::GET, "/v1/admin/roles", None).await;
    let names: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["administrator", "editor", "user"]);
    assert_eq!(listed["items"][0]["built_in"], true);

    let ann = admin.id_of("ann").await;
    admin
        .json(
            Method::PATCH,
            &format!("/v1/admin/users/{ann}"),
            Some(json!({"roles": ["editor", "user"]})),
        )
        .await;
    let changed = admin
        .json(
            Method::PATCH,
            "/v1/admin/roles/editor",
            Some(json!({"permissions": ["publish"]})),
        )
        .await;
    assert_eq!(changed["permissions"], json!(["publish"]));
    assert_eq!(changed["description"], "Edits");
    let me: Value = admin
        .app
        .get("/v1/me", &admin.ann)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        me["permissions"],
        json!(["publish", "read"]),
        "at once, same token"
    );
    assert_eq!(
        admin
            .json(Method::GET, "/v1/admin/roles/editor", None)
            .await["permissions"],
        json!(["publish"])
    );
    assert_eq!(
        admin
            .call(Method::DELETE, "/v1/admin/roles/editor", None)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    let me: Value = admin
        .app
        .get("/v1/me", &admin.ann)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["roles"], json!(["user"]));
    for (method, body) in [
        (Method::GET, None),
        (Method::DELETE, None),
        (Method::PATCH, Some(json!({"description": "x"}))),
    ] {
        let response = admin.call(method, "/v1/admin/roles/editor", body).await;
        assert_problem(response, StatusCode::NOT_FOUND, "not_found").await;
    }
}

#[tokio::test]
async fn sessions_are_listed_and_ended_by_an_administrator() {
    let admin = Admin::spawn().await;
    let ann = admin.id_of("ann").await;
    let ios = access(&admin.app.login_on("ann", "ios").await).to_owned();
    let path = format!("/v1/admin/users/{ann}/sessions");
    let listed = admin.json(Method::GET, &path, None).await;
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let ios_session = items.iter().find(|s| s["platform"] == "ios").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ended = admin
        .call(
            Method::DELETE,
            &format!("/v1/admin/sessions/{ios_session}"),
            None,
        )
        .await;
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    assert_eq!(admin.app.me_status(&ios).await, StatusCode::UNAUTHORIZED);
    assert_eq!(admin.app.me_status(&admin.ann).await, StatusCode::OK);
    let again = admin
        .call(
            Method::DELETE,
            &format!("/v1/admin/sessions/{ios_session}"),
            None,
        )
        .await;
    assert_problem(again, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(
        admin.call(Method::DELETE, &path, None).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        admin.app.me_status(&admin.ann).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        admin.json(Method::GET, &path, None).await["items"],
        json!([])
    );
    assert_problem(
        admin
            .call(Method::GET, "/v1/admin/users/9999/sessions", None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

/// The admin API counts against no quota: the only administrator setting
/// its own quota to 1 keeps administering (its other calls are limited).
#[tokio::test]
async fn a_quota_never_locks_an_administrator_out_of_the_admin_api() {
    let admin = Admin::spawn().await;
    let root = admin.id_of("root").await;
    let patched = admin
        .call(
            Method::PATCH,
            &format!("/v1/admin/users/{root}"),
            Some(json!({"max_api_calls": 1})),
        )
        .await;
    assert_eq!(patched.status(), StatusCode::OK);
    for _ in 0..3 {
        let listed = admin.call(Method::GET, "/v1/admin/users", None).await;
        assert_eq!(listed.status(), StatusCode::OK);
    }
    assert_eq!(admin.app.me_status(&admin.root).await, StatusCode::OK);
    assert_eq!(
        admin.app.me_status(&admin.root).await,
        StatusCode::TOO_MANY_REQUESTS,
        "the native API counts"
    );
}

#[tokio::test]
async fn unlock_and_quota_reset() {
    let admin = Admin::spawn().await;
    let ann = admin.id_of("ann").await;
    admin
        .json(
            Method::PATCH,
            &format!("/v1/admin/users/{ann}"),
            Some(json!({"max_api_calls": 2})),
        )
        .await;
    // The login's own answer does not count; two calls do.
    for _ in 0..2 {
        assert_eq!(admin.app.me_status(&admin.ann).await, StatusCode::OK);
    }
    assert_eq!(
        admin.app.me_status(&admin.ann).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    let reset = admin
        .call(
            Method::POST,
            &format!("/v1/admin/users/{ann}/reset-quota"),
            None,
        )
        .await;
    assert_eq!(reset.status(), StatusCode::NO_CONTENT);
    let me: Value = admin
        .app
        .get("/v1/me", &admin.ann)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["api_calls_count"], 1, "counting starts again from zero");
    let listed = admin.json(Method::GET, "/v1/admin/users?q=ann", None).await;
    assert_eq!(
        listed["items"][0]["api_calls_count"], 1,
        "listings show the live count"
    );

    let store = admin.app.second_store().await;
    store
        .set_status(ann, sesame::store::AccountStatus::Locked, 0)
        .await
        .unwrap();
    let unlocked = admin
        .call(Method::POST, &format!("/v1/admin/users/{ann}/unlock"), None)
        .await;
    assert_eq!(unlocked.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        admin
            .json(Method::GET, &format!("/v1/admin/users/{ann}"), None)
            .await["status"],
        "active"
    );

    // Made active by a PATCH, a locked account is unlocked as by /unlock:
    // its failure budget goes too, and the audit log says so.
    // Guesses from a client ann never signed in from spend her budget.
    let login_from = |ip: &str, password: &str| {
        let request = admin
            .app
            .client_from(ip)
            .post(admin.app.url("/v1/login"))
            .json(&json!({"login": "ann", "password": password}));
        async move { request.send().await.unwrap().status() }
    };
    let mut throttled = false;
    for _ in 0..10 {
        if login_from("127.0.0.7", "not ann's password").await == StatusCode::TOO_MANY_REQUESTS {
            throttled = true;
            break;
        }
    }
    assert!(throttled, "the guesses spent ann's budget");
    assert_eq!(
        login_from("127.0.0.8", PASSWORD).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    store
        .set_status(ann, sesame::store::AccountStatus::Locked, 0)
        .await
        .unwrap();
    let patched = admin
        .call(
            Method::PATCH,
            &format!("/v1/admin/users/{ann}"),
            Some(json!({"status": "active"})),
        )
        .await;
    assert_eq!(patched.status(), StatusCode::OK);
    assert_eq!(login_from("127.0.0.8", PASSWORD).await, StatusCode::OK);
    admin.app.core.flush_audit().await.unwrap();
    let log = admin
        .json(
            Method::GET,
            "/v1/admin/audit?face=admin_api&limit=200",
            None,
        )
        .await;
    let unlocks = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "unlock")
        .count();
    assert_eq!(unlocks, 2, "{log}");
}

#[tokio::test]
async fn every_change_is_audited_with_the_administrator_and_address() {
    let admin = Admin::spawn().await;
    let bob = admin
        .create(json!({"username": "bob", "password": PASSWORD}))
        .await;
    let bob_path = format!("/v1/admin/users/{}", bob["id"].as_str().unwrap());
    admin
        .json(
            Method::PATCH,
            &bob_path,
            Some(json!({"display_name": "B", "roles": ["administrator"]})),
        )
        .await;
    admin
        .call(
            Method::POST,
            &format!("{bob_path}/password"),
            Some(json!({"password": "bob password 9"})),
        )
        .await;
    admin
        .call(
            Method::POST,
            "/v1/admin/roles",
            Some(json!({"name": "ops", "permissions": ["deploy"]})),
        )
        .await;
    admin
        .call(Method::DELETE, "/v1/admin/roles/ops", None)
        .await;
    admin.call(Method::DELETE, &bob_path, None).await;

    let log = admin
        .json(
            Method::GET,
            "/v1/admin/audit?user=root&face=admin_api&limit=200",
            None,
        )
        .await;
    let events: Vec<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    for expected in [
        "account_created",
        "profile_set",
        "roles_changed",
        "password_reset",
        "role_created",
        "role_deleted",
        "account_deleted",
    ] {
        assert!(
            events.contains(&expected),
            "{expected} missing from {events:?}"
        );
    }
    for event in log["items"].as_array().unwrap() {
        assert_eq!(event["username"], "root");
        assert_eq!(event["ip"], "127.0.0.1");
        assert_eq!(event["outcome"], "success");
        if event["event"] == "account_deleted" {
            assert!(
                event["detail"].as_str().unwrap().contains("(bob)"),
                "{event}"
            );
        }
    }
    assert!(
        !log.to_string().contains("bob password 9"),
        "no password in the log"
    );
    // Bob's own trail holds what was done to him (by id: he is deleted),
    // and nothing else the administrator did.
    let bob_id: i64 = bob["id"].as_str().unwrap().parse().unwrap();
    let trail = admin
        .json(
            Method::GET,
            &format!("/v1/admin/audit?user={bob_id}&limit=200"),
            None,
        )
        .await;
    let done_to_bob: Vec<&str> = trail["items"]
        .as_array()
        .unwrap()
        .iter()
        .inspect(|e| {
            assert_eq!(e["target_id"], bob_id, "{e}");
            assert_eq!(e["username"], "root", "{e}");
        })
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    for expected in ["account_created", "password_reset", "account_deleted"] {
        assert!(
            done_to_bob.contains(&expected),
            "{expected}: {done_to_bob:?}"
        );
    }
    assert!(!done_to_bob.contains(&"role_created"), "{done_to_bob:?}");

    // Newest first, in pages that join up.
    let first = admin
        .json(Method::GET, "/v1/admin/audit?limit=3", None)
        .await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = admin
        .json(
            Method::GET,
            &format!("/v1/admin/audit?limit=3&cursor={cursor}"),
            None,
        )
        .await;
    let ids: Vec<i64> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["items"].as_array().unwrap())
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    let future = admin
        .json(
            Method::GET,
            "/v1/admin/audit?since=2100-01-01T00:00:00Z",
            None,
        )
        .await;
    assert_eq!(future["items"], json!([]));
    let past = admin
        .json(Method::GET, "/v1/admin/audit?until=0", None)
        .await;
    assert_eq!(past["items"], json!([]));
    let failures = admin
        .json(
            Method::GET,
            "/v1/admin/audit?outcome=success&user=nobody",
            None,
        )
        .await;
    assert_eq!(failures["items"], json!([]));
    // A name no account can have names no account: no events, not a 400.
    let impossible = admin
        .json(Method::GET, "/v1/admin/audit?user=a%20b", None)
        .await;
    assert_eq!(impossible["items"], json!([]));

    // A username of digits is that account, not the account with that id;
    // an id names its account when no username is those digits.
    let ann_id = admin.id_of("ann").await;
    admin
        .create(json!({"username": ann_id.to_string(), "password": "a long password 1"}))
        .await;
    let digits_id = admin.id_of(&ann_id.to_string()).await;
    admin
        .app
        .login_ok_with(&ann_id.to_string(), "a long password 1")
        .await;
    admin.app.login_ok("ann").await;
    admin.app.core.flush_audit().await.unwrap();
    let by_name = admin
        .json(Method::GET, &format!("/v1/admin/audit?user={ann_id}"), None)
        .await;
    // Its own events, and the administrator's creating it.
    let about = |e: &Value, id| e["account_id"] == json!(id) || e["target_id"] == json!(id);
    let items = by_name["items"].as_array().unwrap();
    assert!(items.iter().any(|e| e["event"] == "login"), "{by_name}");
    assert!(items.iter().all(|e| about(e, digits_id)), "{by_name}");
    let root_id = admin.id_of("root").await;
    let by_id = admin
        .json(
            Method::GET,
            &format!("/v1/admin/audit?user={root_id}"),
            None,
        )
        .await;
    assert!(
        by_id["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| about(e, root_id))
            && !by_id["items"].as_array().unwrap().is_empty()
    );
}
