//! Forward auth (`/v1/authz`): the answers a reverse proxy acts on, and a
//! real nginx in front of a small upstream, configured as the README shows.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TestApp, access, assert_problem, free_port};

async fn authz(app: &TestApp, path: &str, token: Option<&str>) -> reqwest::Response {
    let request = app.client.get(app.url(path));
    let request = match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    request.send().await.unwrap()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn a_live_token_passes_with_the_caller_described() {
    let app = TestApp::spawn().await;
    let ann = app.create_user("ann").await;
    let token = access(&app.login_ok("ann").await).to_owned();
    for (method, path) in [
        ("GET", "/v1/authz"),
        ("POST", "/v1/authz/some/original/path?x=1"),
        ("DELETE", "/v1/authz/"),
        ("PATCH", "/v1/authz/a%20b"),
    ] {
        let response = app
            .client
            .request(method.parse().unwrap(), app.url(path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{method} {path}");
        assert_eq!(response.content_length(), Some(0));
        assert_eq!(header(&response, "x-sesame-user"), Some("ann"));
        assert_eq!(
            header(&response, "x-sesame-user-id"),
            Some(ann.id.to_string().as_str())
        );
        assert_eq!(header(&response, "x-sesame-roles"), Some("user"));
        assert_eq!(header(&response, "x-sesame-permissions"), Some("read"));
        assert_eq!(header(&response, "cache-control"), Some("no-store"));
    }
}

#[tokio::test]
async fn without_a_live_session_the_answer_is_401() {
    let app = TestApp::spawn().await;
    app.create_user("ann").await;
    let grant = app.login_ok("ann").await;
    let token = access(&grant).to_owned();

    let missing = authz(&app, "/v1/authz", None).await;
    assert_eq!(
        header(&missing, "www-authenticate"),
        Some("Bearer realm=\"sesame\"")
    );
    assert_problem(missing, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    for bad in ["garbage", "a.b.c", &format!("{token}x")] {
        let response = authz(&app, "/v1/authz", Some(bad)).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{bad}");
    }
    let basic = app
        .client
        .get(app.url("/v1/authz"))
        .basic_auth("ann", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(
        basic.status(),
        StatusCode::UNAUTHORIZED,
        "passwords are not tokens"
    );

    assert_eq!(
        authz(&app, "/v1/authz", Some(&token)).await.status(),
        StatusCode::OK
    );
    app.clock.advance(3600 + 30);
    assert_eq!(
        authz(&app, "/v1/authz", Some(&token)).await.status(),
        StatusCode::UNAUTHORIZED,
        "expired (past the 30 s leeway) by the injected clock"
    );

    let token = access(&app.login_ok("ann").await).to_owned();
    assert_eq!(
        authz(&app, "/v1/authz", Some(&token)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.logout(&token, None).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        authz(&app, "/v1/authz", Some(&token)).await.status(),
        StatusCode::UNAUTHORIZED,
        "a logout ends forward auth at once"
    );
}

#[tokio::test]
async fn a_required_permission_that_is_missing_is_403_permission() {
    let app = TestApp::spawn().await;
    app.create_user("ann").await;
    app.create_user_full("root", None, None, &["administrator"])
        .await;
    let ann = access(&app.login_ok("ann").await).to_owned();
    let root = access(&app.login_ok("root").await).to_owned();

    for path in [
        "/v1/authz?permission=admin",
        "/v1/authz/x?permission=read,admin",
    ] {
        let response = authz(&app, path, Some(&ann)).await;
        assert_eq!(header(&response, "x-sesame-reason"), Some("permission"));
        assert!(header(&response, "x-sesame-user").is_none());
        assert_problem(response, StatusCode::FORBIDDEN, "forbidden").await;
    }
    let by_header = app
        .client
        .get(app.url("/v1/authz"))
        .bearer_auth(&ann)
        .header("x-sesame-require-permission", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(by_header.status(), StatusCode::FORBIDDEN);
    assert_eq!(header(&by_header, "x-sesame-reason"), Some("permission"));

    assert_eq!(
        authz(&app, "/v1/authz?permission=read", Some(&ann))
            .await
            .status(),
        StatusCode::OK
    );
    let admin = authz(
        &app,
        "/v1/authz?permission=admin&permission=write",
        Some(&root),
    )
    .await;
    assert_eq!(admin.status(), StatusCode::OK);
    assert_eq!(header(&admin, "x-sesame-roles"), Some("administrator"));
    assert_eq!(
        header(&admin, "x-sesame-permissions"),
        Some("admin,read,write")
    );

    // A query naming no possible permission (it may be the client's, passed
    // on with the original URI) is a permission no one holds: 403, which
    // every proxy passes on (nginx makes a 500 of a 400).
    for query in [
        "permission=Not%20a%20name",
        "permission=%FF",
        "permission=a&x=%",
    ] {
        let bad = authz(&app, &format!("/v1/authz/app?{query}"), Some(&root)).await;
        assert_eq!(
            header(&bad, "x-sesame-reason"),
            Some("permission"),
            "{query}"
        );
        assert_problem(bad, StatusCode::FORBIDDEN, "forbidden").await;
    }
    // A malformed header is the proxy's configuration: a 400 naming it.
    let bad = app
        .client
        .get(app.url("/v1/authz"))
        .bearer_auth(&root)
        .header("x-sesame-require-permission", "Not a name")
        .send()
        .await
        .unwrap();
    let problem = assert_problem(bad, StatusCode::BAD_REQUEST, "invalid_input").await;
    assert_eq!(problem["field"], "permission");
}

#[tokio::test]
async fn each_pass_counts_one_call_and_a_spent_quota_is_403_quota() {
    let app = TestApp::spawn().await;
    let ann = app.create_user("ann").await;
    app.core
        .set_quota(ann.id, Some(3), None, &sesame::core::roles::Actor::Operator)
        .await
        .unwrap();
    let token = access(&app.login_ok("ann").await).to_owned();

    // Refusals for a missing permission do not count.
    for _ in 0..5 {
        let response = authz(&app, "/v1/authz?permission=admin", Some(&token)).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    }
    for _ in 0..3 {
        assert_eq!(
            authz(&app, "/v1/authz", Some(&token)).await.status(),
            StatusCode::OK
        );
    }
    let spent = authz(&app, "/v1/authz", Some(&token)).await;
    assert_eq!(header(&spent, "x-sesame-reason"), Some("quota"));
    assert_problem(spent, StatusCode::FORBIDDEN, "forbidden").await;

    app.core
        .set_quota(ann.id, Some(0), None, &sesame::core::roles::Actor::Operator)
        .await
        .unwrap();
    let me: Value = app.get("/v1/me", &token).await.json().await.unwrap();
    assert_eq!(me["api_calls_count"], 4, "three passes and this call");
}

/// A node that sat idle while another spent an account's quota does not
/// admit a burst against the count it read long ago, however long
/// `sessions.cache_ttl` is: it reads the count again first.
#[tokio::test]
async fn an_idle_node_reads_the_count_again_before_admitting_a_burst() {
    let deployment = crate::helpers::Deployment::new().await;
    let a = TestApp::spawn_in(deployment.clone(), |c| c.sessions.cache_ttl = 60).await;
    let b = TestApp::spawn_in(deployment, |c| c.sessions.cache_ttl = 60).await;
    let ann = a.create_user("ann").await;
    a.core
        .set_quota(
            ann.id,
            Some(10),
            None,
            &sesame::core::roles::Actor::Operator,
        )
        .await
        .unwrap();
    let token = access(&a.login_ok("ann").await).to_owned();
    assert_eq!(a.me_status(&token).await, StatusCode::OK);
    a.core.flush_api_calls().await.unwrap();
    for _ in 0..9 {
        assert_eq!(b.me_status(&token).await, StatusCode::OK);
    }
    b.core.flush_api_calls().await.unwrap();
    // Node A has counted nothing since; two seconds later a burst comes.
    a.clock.advance(2);
    let admitted = futures_util::future::join_all((0..10).map(|_| a.me_status(&token)))
        .await
        .into_iter()
        .filter(|status| *status == StatusCode::OK)
        .count();
    assert_eq!(admitted, 0, "the quota of 10 was spent on the other node");
}

#[tokio::test]
async fn headers_a_client_sends_under_our_names_are_ignored() {
    let app = TestApp::spawn().await;
    app.create_user("ann").await;
    let token = access(&app.login_ok("ann").await).to_owned();
    let forged = |request: reqwest::RequestBuilder| {
        request
            .header("x-sesame-user", "root")
            .header("x-sesame-user-id", "1")
            .header("x-sesame-roles", "administrator")
            .header("x-sesame-permissions", "admin")
    };
    let anonymous = forged(app.client.get(app.url("/v1/authz")))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&anonymous, "x-sesame-user").is_none());

    let ann_forging = forged(app.client.get(app.url("/v1/authz?permission=admin")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(ann_forging.status(), StatusCode::FORBIDDEN);
    let plain = forged(app.client.get(app.url("/v1/authz")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(header(&plain, "x-sesame-user"), Some("ann"));
    assert_eq!(header(&plain, "x-sesame-roles"), Some("user"));
}

#[tokio::test]
async fn a_configured_cookie_carries_the_token() {
    let app = TestApp::spawn_with(|c| c.forward_auth.cookie = Some("sesame_at".into())).await;
    app.create_user("ann").await;
    let token = access(&app.login_ok("ann").await).to_owned();
    let with_cookie = |cookie: String| {
        app.client
            .get(app.url("/v1/authz"))
            .header("cookie", cookie)
            .send()
    };
    let response = with_cookie(format!("theme=dark; sesame_at={token}; lang=en"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "x-sesame-user"), Some("ann"));
    for other in [
        format!("sesame={token}"),
        "sesame_at=garbage".into(),
        String::new(),
    ] {
        let response = with_cookie(other.clone()).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{other}");
    }

    // Without the setting, cookies are not read at all.
    let plain = TestApp::spawn().await;
    plain.create_user("ann").await;
    let token = access(&plain.login_ok("ann").await).to_owned();
    let response = plain
        .client
        .get(plain.url("/v1/authz"))
        .header("cookie", format!("sesame_at={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_opaque_token_passes_too() {
    let app = TestApp::spawn().await;
    app.create_user("dnyz529").await;
    let response = app
        .client
        .get(app.url("/api/v1/user/method/login.user.user/"))
        .query(&[
            ("username", "dnyz529"),
            ("password", PASSWORD),
            ("platform", "web"),
        ])
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    let token = body["data"]["token"]["token"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        // Twice: the second answer comes from the cache.
        let response = authz(&app, "/v1/authz", Some(&token)).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, "x-sesame-user"), Some("dnyz529"));
    }

    // A refresh replaces the session's opaque token: the old one, though
    // cached, is refused from then on.
    let refreshed: Value = app
        .client
        .get(app.url("/api/v1/user/method/refresh.token.user/"))
        .query(&[(
            "refresh",
            body["data"]["token"]["refresh"].as_str().unwrap(),
        )])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let new = refreshed["data"]["token"]["token"].as_str().unwrap();
    assert_eq!(
        authz(&app, "/v1/authz", Some(&token)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        authz(&app, "/v1/authz", Some(new)).await.status(),
        StatusCode::OK
    );
    // A retry of that refresh in the grace window (another tab, a lost
    // answer) gets the same tokens, and revokes nothing of the first's.
    let retried: Value = app
        .client
        .get(app.url("/api/v1/user/method/refresh.token.user/"))
        .query(&[(
            "refresh",
            body["data"]["token"]["refresh"].as_str().unwrap(),
        )])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(retried["data"]["token"]["token"], new);
    assert_eq!(
        retried["data"]["token"]["refresh"],
        refreshed["data"]["token"]["refresh"]
    );
    assert_eq!(
        authz(&app, "/v1/authz", Some(new)).await.status(),
        StatusCode::OK
    );
    app.clock.advance(3600);
    assert_eq!(
        authz(&app, "/v1/authz", Some(new)).await.status(),
        StatusCode::UNAUTHORIZED,
        "expired by the injected clock, cached or not"
    );
}

/// A reverse proxy of the README's, running in front of a test's Sesame and
/// upstream; stopped when dropped: SIGTERM, so that it stops its workers
/// (SIGKILL would leave nginx's running, holding the test's output).
struct Proxy {
    child: Child,
    /// `127.0.0.1:PORT` it listens on.
    front: String,
    _dir: tempfile::TempDir,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return; // exited and reaped: its id may be someone else's now
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// Starts the first of `binaries` that exists on `examples/forward-auth/FILE`,
/// its addresses (front 127.0.0.1:8000, Sesame 127.0.0.1:8420, upstream
/// 127.0.0.1:8080) replaced by this test's; `None` (skipped) where the proxy
/// is not installed, which fails on CI. `command` builds the command line
/// from the binary, a private directory and the configuration file in it;
/// the proxy's standard error goes to a file whose text a failure shows.
/// A front port taken by someone else between our probe and the proxy's
/// bind (the probe has to let it go) is retried on another port.
async fn start_proxy(
    app: &TestApp,
    upstream: &str,
    binaries: &[&str],
    file: &str,
    command: impl Fn(&str, &std::path::Path, &std::path::Path) -> Command,
) -> Option<Proxy> {
    let Some(binary) = binaries
        .iter()
        .find(|path| std::path::Path::new(path).exists())
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install {file}'s proxy"
        );
        eprintln!("skipped: none of {binaries:?} is installed");
        return None;
    };
    let sesame = app.address.trim_start_matches("http://").to_owned();
    let root = env!("CARGO_MANIFEST_DIR");
    let template = std::fs::read_to_string(format!("{root}/examples/forward-auth/{file}")).unwrap();
    for attempt in 1..=3 {
        let front = format!("127.0.0.1:{}", free_port());
        let config = template
            .replace("127.0.0.1:8000", &front)
            .replace("127.0.0.1:8420", &sesame)
            .replace("127.0.0.1:8080", upstream);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(file);
        std::fs::write(&path, config).unwrap();
        let log_path = dir.path().join("stderr.log");
        let child = command(binary, dir.path(), &path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap();
        let mut proxy = Proxy {
            child,
            front,
            _dir: dir,
        };
        // Generous: the whole suite shares two cores while this starts.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::net::TcpStream::connect(&proxy.front).is_ok() {
                return Some(proxy);
            }
            let exited = proxy.child.try_wait().unwrap();
            if exited.is_some() || Instant::now() >= deadline {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let taken = log.to_lowercase().contains("address already in use");
                if exited.is_some() && taken && attempt < 3 {
                    break;
                }
                panic!("{binary} did not start ({exited:?}); its standard error:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    unreachable!("the third attempt returns or panics")
}

/// The upstream service: answers every request with what it was told
/// about the caller, as JSON.
async fn upstream() -> String {
    use axum::http::HeaderMap;
    async fn echo(headers: HeaderMap, uri: axum::http::Uri) -> axum::Json<Value> {
        let get = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
        axum::Json(json!({
            "path": uri.to_string(),
            "user": get("x-sesame-user"),
            "user_id": get("x-sesame-user-id"),
            "roles": get("x-sesame-roles"),
            "permissions": get("x-sesame-permissions"),
            "authorization": get("authorization"),
        }))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        axum::serve(listener, axum::Router::new().fallback(echo))
            .await
            .unwrap();
    });
    address
}

/// The README's nginx configuration (examples/forward-auth/nginx.conf), its
/// addresses replaced by this test's, in front of a real upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_protects_an_upstream() {
    let app = TestApp::spawn().await;
    let upstream = upstream().await;
    let binaries = ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"];
    let Some(nginx) = start_proxy(
        &app,
        &upstream,
        &binaries,
        "nginx.conf",
        |bin, dir, conf| {
            let mut command = Command::new(bin);
            command.arg("-p").arg(dir).arg("-c").arg(conf);
            command
        },
    )
    .await
    else {
        return;
    };
    let front = nginx.front.clone();
    let url = |path: &str| format!("http://{front}{path}");

    let ann = app.create_user("ann").await;
    app.create_user_full("root", None, None, &["administrator"])
        .await;
    let token = access(&app.login_ok("ann").await).to_owned();
    let root_token = access(&app.login_ok("root").await).to_owned();
    let client = reqwest::Client::new();
    let get = |path: &str, token: Option<&str>| {
        let request = client
            .get(url(path))
            .header("x-sesame-user", "root")
            .header("x-sesame-user-id", "999");
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
        .send()
    };

    let anonymous = get("/app/page", None).await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        header(&anonymous, "www-authenticate"),
        Some("Bearer realm=\"sesame\""),
        "nginx passes the challenge on"
    );

    let seen: Value = {
        let response = get("/app/page?q=1", Some(&token)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    };
    assert_eq!(seen["path"], "/app/page?q=1");
    assert_eq!(seen["user"], "ann", "the forged header was replaced");
    assert_eq!(seen["user_id"], ann.id.to_string());
    assert_eq!(seen["roles"], "user");
    assert_eq!(seen["permissions"], "read");
    assert_eq!(seen["authorization"], Value::Null, "no token upstream");

    for path in ["/admin/panel", "/admin", "/ADMIN/panel", "/Admin;x/panel"] {
        assert_eq!(
            get(path, Some(&token)).await.unwrap().status(),
            StatusCode::FORBIDDEN,
            "ann lacks admin: {path}"
        );
    }
    let admin: Value = get("/admin/panel", Some(&root_token))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(admin["user"], "root");
    let root_id = app.core.find_by_username("root").await.unwrap().id;
    assert_eq!(admin["user_id"], root_id.to_string(), "forged id replaced");
    assert_eq!(admin["roles"], "administrator");
    assert_eq!(admin["authorization"], Value::Null);

    // A requirement a client sends is not Sesame's to read (a malformed
    // one would turn into nginx's 500).
    let forged_requirement = client
        .get(url("/app/page"))
        .bearer_auth(&token)
        .header("x-sesame-require-permission", "Not A Name!")
        .send()
        .await
        .unwrap();
    assert_eq!(forged_requirement.status(), StatusCode::OK);

    app.core
        .set_quota(ann.id, Some(3), None, &sesame::core::roles::Actor::Operator)
        .await
        .unwrap();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(get("/app/page", Some(&token)).await.unwrap().status());
    }
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::FORBIDDEN, StatusCode::FORBIDDEN],
        "two calls counted above, one more admitted, then the quota is spent"
    );

    // Through the admin API: the quota reset lets ann back in; her
    // sessions revoked, she is refused at the next request.
    let admin = |method: reqwest::Method, path: String| {
        client
            .request(method, app.url(&path))
            .bearer_auth(&root_token)
            .send()
    };
    let reset = admin(
        reqwest::Method::POST,
        format!("/v1/admin/users/{}/reset-quota", ann.id),
    );
    assert_eq!(reset.await.unwrap().status(), StatusCode::NO_CONTENT);
    assert_eq!(
        get("/app/page", Some(&token)).await.unwrap().status(),
        StatusCode::OK
    );
    let revoke = admin(
        reqwest::Method::DELETE,
        format!("/v1/admin/users/{}/sessions", ann.id),
    );
    assert_eq!(revoke.await.unwrap().status(), StatusCode::NO_CONTENT);
    assert_eq!(
        get("/app/page", Some(&token)).await.unwrap().status(),
        StatusCode::UNAUTHORIZED,
        "a session revoked through the admin API is refused at the next request"
    );

    assert_eq!(
        get("/app/page", Some(&root_token)).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        app.logout(&root_token, None).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        get("/app/page", Some(&root_token)).await.unwrap().status(),
        StatusCode::UNAUTHORIZED,
        "a session ended is refused at the next request"
    );
}

/// Roles change what `/v1/authz` allows at once (the node's cached account
/// is dropped), and what the next token's claims say.
#[tokio::test]
async fn a_role_change_applies_at_once_and_to_the_next_token() {
    use sesame::core::roles::Actor;
    let app = TestApp::spawn().await;
    let ann = app.create_user("ann").await;
    let grant = app.login_ok("ann").await;
    let token = access(&grant).to_owned();
    assert_eq!(
        crate::helpers::jwt_part(&token, 1)["permissions"],
        json!(["read"])
    );
    let status = |permission: &'static str| {
        let request = app
            .client
            .get(app.url(&format!("/v1/authz?permission={permission}")))
            .bearer_auth(&token);
        async move { request.send().await.unwrap().status() }
    };
    // Twice, so that the account is in the node's cache.
    assert_eq!(status("publish").await, StatusCode::FORBIDDEN);
    assert_eq!(status("read").await, StatusCode::OK);

    let operator = Actor::Operator;
    app.core
        .create_role("publisher", None, &["publish".into()], &operator)
        .await
        .unwrap();
    app.core
        .grant_role(ann.id, "publisher", &operator)
        .await
        .unwrap();
    assert_eq!(status("publish").await, StatusCode::OK);
    let me: Value = app.get("/v1/me", &token).await.json().await.unwrap();
    assert_eq!(me["permissions"], json!(["publish", "read"]));
    assert_eq!(me["roles"], json!(["publisher", "user"]));

    // A change to the role itself reaches its holders too.
    app.core
        .revoke_permission("publisher", "publish", &operator)
        .await
        .unwrap();
    assert_eq!(status("publish").await, StatusCode::FORBIDDEN);
    app.core
        .grant_permission("publisher", "publish", &operator)
        .await
        .unwrap();
    assert_eq!(status("publish").await, StatusCode::OK);
    app.core.delete_role("publisher", &operator).await.unwrap();
    assert_eq!(status("publish").await, StatusCode::FORBIDDEN);

    app.core
        .grant_role(ann.id, "administrator", &operator)
        .await
        .unwrap();
    let next = access(&app.login_ok("ann").await).to_owned();
    let claims = crate::helpers::jwt_part(&next, 1);
    assert_eq!(claims["roles"], json!(["administrator", "user"]));
    assert_eq!(claims["permissions"], json!(["admin", "read", "write"]));
}

/// The README's Caddy configuration (examples/forward-auth/Caddyfile), its
/// addresses replaced by this test's, in front of a real upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_forward_auth_protects_an_upstream() {
    let app = TestApp::spawn().await;
    let upstream = upstream().await;
    let binaries = ["/usr/bin/caddy", "/usr/local/bin/caddy"];
    let Some(caddy) = start_proxy(&app, &upstream, &binaries, "Caddyfile", |bin, dir, conf| {
        let mut command = Command::new(bin);
        command
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(conf)
            // Caddy keeps its state under these; not in the test's home.
            .env("HOME", dir)
            .env("XDG_DATA_HOME", dir)
            .env("XDG_CONFIG_HOME", dir);
        command
    })
    .await
    else {
        return;
    };
    let front = caddy.front.clone();

    let ann = app.create_user("ann").await;
    let token = access(&app.login_ok("ann").await).to_owned();
    let client = reqwest::Client::new();
    let get = |token: Option<&str>| {
        let request = client
            .get(format!("http://{front}/app/page?q=1"))
            .header("x-sesame-user", "root")
            .header("x-sesame-user-id", "999")
            .header("x-sesame-roles", "administrator")
            .header("x-sesame-permissions", "admin")
            .header("x-sesame-require-permission", "Not A Name!");
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
        .send()
    };
    let anonymous = get(None).await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        header(&anonymous, "www-authenticate"),
        Some("Bearer realm=\"sesame\"")
    );
    let response = get(Some(&token)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["path"], "/app/page?q=1");
    assert_eq!(seen["user"], "ann", "the forged header was replaced");
    assert_eq!(seen["user_id"], ann.id.to_string());
    assert_eq!(seen["roles"], "user");
    assert_eq!(seen["permissions"], "read");
    assert_eq!(seen["authorization"], Value::Null, "no token upstream");

    // An account with no role (so no permission): its empty lists replace
    // the forged ones too.
    app.core
        .set_account_roles(ann.id, &[], &sesame::core::roles::Actor::Operator)
        .await
        .unwrap();
    let seen: Value = get(Some(&token)).await.unwrap().json().await.unwrap();
    for field in ["roles", "permissions"] {
        assert!(
            seen[field].is_null() || seen[field] == "",
            "{field}: {seen}"
        );
    }

    assert_eq!(
        app.logout(&token, None).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        get(Some(&token)).await.unwrap().status(),
        StatusCode::UNAUTHORIZED,
        "a session ended is refused at the next request"
    );
}

/// What the README shows is what the tests run.
#[test]
fn the_readme_shows_the_proxy_configurations_as_tested() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    for file in ["nginx.conf", "Caddyfile"] {
        let config =
            std::fs::read_to_string(format!("{root}/examples/forward-auth/{file}")).unwrap();
        assert!(
            readme.contains(&config),
            "README does not show examples/forward-auth/{file} as it is"
        );
    }
}

/// Grants and revocations of a role's permissions sent at once (by several
/// administrators, on several nodes) never undo each other: each is its
/// own change in the store, not a list read and written back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_changes_at_once_never_undo_each_other() {
    use sesame::core::roles::Actor;
    let app = TestApp::spawn().await;
    let operator = Actor::Operator;
    let first: Vec<String> = (0..20).map(|i| format!("p{i}")).collect();
    app.core
        .create_role("many", None, &first, &operator)
        .await
        .unwrap();
    let revoked = first[..10].iter().map(|p| {
        let core = app.core.clone();
        let p = p.clone();
        tokio::spawn(async move { core.revoke_permission("many", &p, &Actor::Operator).await })
    });
    let granted = (20..30).map(|i| {
        let core = app.core.clone();
        tokio::spawn(async move {
            core.grant_permission("many", &format!("p{i}"), &Actor::Operator)
                .await
        })
    });
    let tasks: Vec<_> = revoked.chain(granted).collect();
    for task in futures_util::future::join_all(tasks).await {
        task.unwrap().unwrap();
    }
    let mut held = app.core.role("many").await.unwrap().permissions;
    held.sort();
    let mut expected: Vec<String> = (10..30).map(|i| format!("p{i}")).collect();
    expected.sort();
    assert_eq!(held, expected);
}

/// A role holds at most 64 permissions, also when grants arrive at once:
/// each is counted inside its own transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_at_once_stop_at_the_permission_limit() {
    use sesame::core::Error;
    use sesame::core::roles::Actor;
    let app = TestApp::spawn().await;
    let first: Vec<String> = (0..60).map(|i| format!("p{i}")).collect();
    app.core
        .create_role("full", None, &first, &Actor::Operator)
        .await
        .unwrap();
    let granted = (60..70).map(|i| {
        let core = app.core.clone();
        tokio::spawn(async move {
            core.grant_permission("full", &format!("p{i}"), &Actor::Operator)
                .await
        })
    });
    let mut admitted = 0;
    for result in futures_util::future::join_all(granted).await {
        match result.unwrap() {
            Ok(_) => admitted += 1,
            Err(Error::InvalidInput { field, reason }) => {
                assert_eq!(
                    (field, reason.as_str()),
                    ("permissions", "at most 64 names")
                );
            }
            Err(other) => panic!("unexpected: {other}"),
        }
    }
    assert_eq!(admitted, 4);
    assert_eq!(app.core.role("full").await.unwrap().permissions.len(), 64);
}
