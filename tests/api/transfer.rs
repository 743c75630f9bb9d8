//! `sesame export` and `sesame import`: a populated SQLite deployment moves
//! to this binary's backend (SQLite, PostgreSQL, PostgreSQL with Redis) and
//! its accounts and sessions carry on there.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{Deployment, START, ServerProcess, TestApp, assert_problem, refresh_token};

/// The real binary with cheap hashing, on the given deployment's variables.
fn sesame(env: &[(&'static str, String)]) -> Command {
    crate::helpers::sesame_command(env.iter().cloned())
}

fn run(command: &mut Command, stdin: Option<&str>) -> Output {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("binary starts");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(output: Output) -> Output {
    assert!(
        output.status.success(),
        "{}\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    output
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A plain SQLite deployment: only a data directory.
fn sqlite_env(dir: &Path) -> Vec<(&'static str, String)> {
    vec![("SESAME_DATA_DIR", dir.display().to_string())]
}

fn add_user(env: &[(&'static str, String)], args: &[&str], password: &str) -> Output {
    run(
        sesame(env)
            .args(["user", "add"])
            .args(args)
            .arg("--password-stdin"),
        Some(&format!("{password}\n")),
    )
}

/// `POST path` with a JSON body to a server, expecting 200.
async fn post(server: &ServerProcess, path: &str, body: Value) -> Value {
    let response = reqwest::Client::new()
        .post(server.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.json().await.unwrap()
}

const ALICE_PASSWORD: &str = "alice password 1";
const BOB_PASSWORD: &str = "bob password 1";
const CAROL_PASSWORD: &str = "carol password 1";
const APP_SECRET: &str = "a-secret-chosen-by-the-operator-0123456789";

/// A SQLite deployment with accounts (profile, quota, roles) and sessions,
/// made by the real binary as an operator would.
struct Source {
    dir: tempfile::TempDir,
    alice_id: i64,
    /// Alice's first refresh token, rotated once before the export.
    alice_rotated: String,
    /// Its successor, the live token of that session at the export.
    alice_live: String,
    alice_access: String,
    bob_refresh: String,
    /// Bob's refresh token of the session signed in to the OAuth client
    /// `shop-app`, whose secret is [`APP_SECRET`].
    bob_app_refresh: String,
}

impl Source {
    fn env(&self) -> Vec<(&'static str, String)> {
        sqlite_env(self.dir.path())
    }
}

async fn populated_source() -> Source {
    let dir = tempfile::tempdir().unwrap();
    let env = sqlite_env(dir.path());
    ok(add_user(
        &env,
        &[
            "--username",
            "Alice",
            "--email",
            "alice@example.com",
            "--mobile",
            "13800000000",
            "--display-name",
            "Alice A",
            "--role",
            "administrator",
            "--role",
            "user",
            "--max-api-calls",
            "1000",
        ],
        ALICE_PASSWORD,
    ));
    ok(run(
        sesame(&env).args(["user", "set-profile", "alice", "gender=女", "qq=10000"]),
        None,
    ));
    ok(run(
        sesame(&env).args(["user", "set-quota", "alice", "1000", "--period", "month"]),
        None,
    ));
    ok(add_user(
        &env,
        &["--username", "bob", "--email", "bob@example.com"],
        BOB_PASSWORD,
    ));
    // A role of the deployment's own, which carol holds: it moves too.
    ok(run(
        sesame(&env).args([
            "role",
            "add",
            "editor",
            "--description",
            "Edits articles",
            "--permission",
            "articles.write",
        ]),
        None,
    ));
    ok(add_user(
        &env,
        &["--username", "carol", "--role", "editor"],
        CAROL_PASSWORD,
    ));
    // An OAuth client with a session of bob's signed in to it, and a
    // public one: both move, and so does the session.
    ok(run(
        sesame(&env).args([
            "client",
            "add",
            "shop-app",
            "--secret-stdin",
            "--grant",
            "password",
            "--grant",
            "refresh_token",
            "--scope",
            "openid",
            "--scope",
            "email",
            "--redirect-uri",
            "https://shop.example/cb",
        ]),
        Some(&format!("{APP_SECRET}\n")),
    ));
    ok(run(
        sesame(&env).args([
            "client",
            "add",
            "spa",
            "--public",
            "--redirect-uri",
            "https://spa.example/cb",
            "--post-logout-redirect-uri",
            "https://spa.example/",
        ]),
        None,
    ));

    let server = ServerProcess::start(sesame(&env));
    let signed_in = reqwest::Client::new()
        .post(server.url("/oauth2/token"))
        .basic_auth("shop-app", Some(APP_SECRET))
        .form(&[
            ("grant_type", "password"),
            ("username", "bob"),
            ("password", BOB_PASSWORD),
            ("scope", "openid email"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), StatusCode::OK);
    let signed_in: Value = signed_in.json().await.unwrap();
    let bob_app_refresh = refresh_token(&signed_in).to_owned();
    let grant = post(
        &server,
        "/v1/login",
        json!({"login": "alice", "password": ALICE_PASSWORD, "platform": "iOS"}),
    )
    .await;
    let alice_id: i64 = grant["user"]["id"].as_str().unwrap().parse().unwrap();
    let alice_access = grant["access_token"].as_str().unwrap().to_owned();
    let me = reqwest::Client::new()
        .get(server.url("/v1/me"))
        .bearer_auth(&alice_access)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    let alice_rotated = refresh_token(&grant).to_owned();
    let rotated = post(
        &server,
        "/v1/refresh",
        json!({"refresh_token": alice_rotated}),
    )
    .await;
    let alice_live = refresh_token(&rotated).to_owned();
    let bob = post(
        &server,
        "/v1/login",
        json!({"login": "bob@example.com", "password": BOB_PASSWORD}),
    )
    .await;
    let carol = post(
        &server,
        "/v1/login",
        json!({"login": "carol", "password": CAROL_PASSWORD}),
    )
    .await;
    let logout = reqwest::Client::new()
        .post(server.url("/v1/logout"))
        .bearer_auth(carol["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    server.stop();
    Source {
        dir,
        alice_id,
        alice_rotated,
        alice_live,
        alice_access,
        bob_refresh: refresh_token(&bob).to_owned(),
        bob_app_refresh,
    }
}

/// The OAuth `refresh_token` grant of a confidential client.
async fn client_refresh(
    app: &TestApp,
    client: &str,
    secret: &str,
    refresh_token: &str,
) -> reqwest::Response {
    app.client
        .post(app.url("/oauth2/token"))
        .basic_auth(client, Some(secret))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .send()
        .await
        .unwrap()
}

/// The session lines of an export.
fn session_lines(export: &str) -> Vec<Value> {
    export
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["type"] == "session")
        .collect()
}

/// The `line N: …` lines of an import's stderr.
fn refusals(output: &Output) -> Vec<String> {
    text(&output.stderr)
        .lines()
        .filter(|l| l.starts_with("line "))
        .map(str::to_owned)
        .collect()
}

/// A TestApp on the deployment, its clock moved to the real time (the
/// source ran on the system clock) plus a minute, past the reuse grace.
async fn app_on(deployment: std::sync::Arc<Deployment>) -> TestApp {
    let app = TestApp::spawn_in(deployment, |_| {}).await;
    app.clock.advance(now() - START + 60);
    app
}

#[tokio::test]
async fn a_sqlite_deployment_moves_with_its_passwords_and_refresh_tokens() {
    let source = populated_source().await;
    let files = tempfile::tempdir().unwrap();
    let file = files.path().join("sesame.jsonl");
    let exported = ok(run(
        sesame(&source.env())
            .args(["export", "--sessions", "--output"])
            .arg(&file),
        None,
    ));
    assert!(
        text(&exported.stdout)
            .contains("exported 3 roles, 2 OAuth clients, 3 accounts and 3 sessions"),
        "{}",
        text(&exported.stdout)
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the export holds password verifiers");
    }
    assert!(
        !files.path().join("sesame.jsonl.partial").exists(),
        "the partial file was renamed"
    );
    let export = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["format"], "sesame-export");
    assert_eq!(lines[0]["version"], 3);
    let types: Vec<&str> = lines[1..6]
        .iter()
        .map(|l| l["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["role", "role", "role", "client", "client"],
        "roles and clients come first"
    );
    assert_eq!(
        lines[2],
        json!({"type": "role", "name": "editor", "description": "Edits articles",
               "permissions": ["articles.write"]})
    );
    assert_eq!(lines[4]["id"], "shop-app");
    assert_eq!(
        lines[4]["secret_hash"],
        hex::encode(Sha256::digest(APP_SECRET)),
        "the secret moves as its hash"
    );
    assert_eq!(lines[5]["id"], "spa");
    assert_eq!(lines[5].get("secret_hash"), Some(&Value::Null), "public");
    let app_session = lines
        .iter()
        .find(|l| l["type"] == "session" && l["client"].is_object())
        .expect("the session signed in to shop-app is exported");
    assert_eq!(app_session["client"]["client_id"], "shop-app");
    assert_eq!(app_session["client"]["scope"], "openid email");
    assert_eq!(app_session["platform"], "oauth");
    let alice_session = lines
        .iter()
        .find(|l| l["type"] == "session" && l["account_id"] == source.alice_id)
        .expect("alice's session exported");
    assert_eq!(
        alice_session["refresh_tokens"].as_array().unwrap().len(),
        2,
        "the whole chain: the rotated token and its successor"
    );
    assert_eq!(alice_session["platform"], "iOS");

    let deployment = Deployment::new().await;
    // An import cut short after the accounts, then run again whole with
    // --on-conflict update: the accounts are written again, so their
    // sessions join them; and once more with --on-conflict skip, which
    // finds everything there (sessions with their accounts: skipped).
    let accounts_only = files.path().join("accounts.jsonl");
    let text_of_accounts: String = export
        .lines()
        .zip(&lines)
        .filter(|(_, parsed)| parsed["type"] != "session")
        .map(|(line, _)| format!("{line}\n"))
        .collect();
    std::fs::write(&accounts_only, text_of_accounts).unwrap();
    // A dry run first, on the new database: it checks the file against an
    // empty database of its own and leaves this one as it found it.
    let dry = ok(run(
        sesame(&deployment.env())
            .args(["import", "--dry-run"])
            .arg(&file),
        None,
    ));
    assert_eq!(
        text(&dry.stdout).trim(),
        "checked 12 lines: would import 1 role, 2 OAuth clients, 3 accounts and 3 sessions; \
         0 lines refused\npassword hashes: argon2 3",
        "{}",
        text(&dry.stderr)
    );
    assert!(
        text(&dry.stderr).contains("is not set up yet, and a dry run sets up nothing"),
        "{}",
        text(&dry.stderr)
    );
    assert!(deployment.is_untouched().await, "a dry run wrote nothing");
    let first = ok(run(
        sesame(&deployment.env()).arg("import").arg(&accounts_only),
        None,
    ));
    assert!(
        text(&first.stdout)
            .starts_with("imported 1 role, 2 OAuth clients, 3 accounts and 0 sessions"),
        "{}",
        text(&first.stdout)
    );
    // Operators' commands sign nobody in: the secret that keys login names
    // in the limiter is left for the first server to make.
    assert_eq!(deployment.rows("deployment_secrets").await, 0);
    let imported = ok(run(
        sesame(&deployment.env())
            .args(["import", "--on-conflict", "update"])
            .arg(&file),
        None,
    ));
    assert_eq!(
        text(&imported.stdout).trim(),
        "imported 0 accounts and 3 sessions; 0 lines refused; 3 accounts updated; \
         2 lines already there, skipped\npassword hashes: argon2 3",
        "the clients are there as the file has them: their sessions join them"
    );
    let again = ok(run(
        sesame(&deployment.env())
            .args(["import", "--on-conflict", "skip"])
            .arg(&file),
        None,
    ));
    assert_eq!(
        text(&again.stdout).trim(),
        "imported 0 accounts and 0 sessions; 0 lines refused; 8 lines already there, skipped"
    );
    // Exported again from this backend, the sessions are the same: each
    // chain, the app's grant, and the sessions of clients last.
    let again = ok(run(
        sesame(&deployment.env()).args(["export", "--sessions"]),
        None,
    ));
    let (before, after) = (session_lines(&export), session_lines(&text(&again.stdout)));
    assert_eq!(after.len(), before.len());
    assert!(
        after.last().unwrap()["client"].is_object(),
        "clients' sessions last"
    );
    for session in &before {
        let moved = after
            .iter()
            .find(|s| s["id"] == session["id"])
            .unwrap_or_else(|| panic!("{} is not exported again", session["id"]));
        for field in [
            "account_id",
            "username",
            "platform",
            "refresh_tokens",
            "client",
        ] {
            assert_eq!(
                moved.get(field),
                session.get(field),
                "{field} of {}",
                session["id"]
            );
        }
    }

    let app = app_on(deployment.clone()).await;
    for login in ["alice", "alice@example.com", "13800000000"] {
        let response = app.login(login, ALICE_PASSWORD).await;
        assert_eq!(response.status(), StatusCode::OK, "{login}");
        let grant: Value = response.json().await.unwrap();
        assert_eq!(grant["user"]["id"], source.alice_id.to_string(), "id kept");
    }
    assert_eq!(
        app.login("bob@example.com", BOB_PASSWORD).await.status(),
        StatusCode::OK
    );
    let carol = app.login("carol", CAROL_PASSWORD).await;
    assert_eq!(carol.status(), StatusCode::OK);
    let carol: Value = carol.json().await.unwrap();
    assert_eq!(carol["user"]["roles"], json!(["editor"]));
    assert_eq!(carol["user"]["permissions"], json!(["articles.write"]));
    let md5 = hex::encode(md5::Md5::digest(ALICE_PASSWORD.as_bytes()));
    let users_actions = app
        .post_json(
            "/api/v1/users/actions/login",
            &json!({"account": "alice", "password": md5}),
        )
        .await;
    assert_eq!(
        users_actions.status(),
        StatusCode::OK,
        "the MD5 verifier moved too"
    );
    assert_eq!(
        app.me_status(&source.alice_access).await,
        StatusCode::UNAUTHORIZED,
        "access tokens are signed by the old deployment's keys: clients refresh"
    );

    // The session's live token works and rotates.
    let response = app.refresh(&source.alice_live).await;
    assert_eq!(response.status(), StatusCode::OK);
    let grant: Value = response.json().await.unwrap();
    let access = grant["access_token"].as_str().unwrap().to_owned();
    let successor = refresh_token(&grant).to_owned();
    let me: Value = app.get("/v1/me", &access).await.json().await.unwrap();
    assert_eq!(me["id"], source.alice_id.to_string());
    assert_eq!(me["profile"], json!({"gender": "女", "qq": "10000"}));
    assert_eq!(me["roles"], json!(["administrator", "user"]));
    assert_eq!(me["max_api_calls"], 1000);
    assert_eq!(me["quota_period"], "month");
    assert_eq!(me["display_name"], "Alice A");
    assert!(me["api_calls_count"].as_i64().unwrap() >= 1, "{me}");
    let bob = app.refresh(&source.bob_refresh).await;
    assert_eq!(bob.status(), StatusCode::OK, "bob's session moved too");

    // The application carries on with its secret and bob's refresh token,
    // within the scopes bob granted it.
    let app_refresh =
        |secret: &'static str| client_refresh(&app, "shop-app", secret, &source.bob_app_refresh);
    assert_eq!(
        app_refresh("not-the-secret-of-shop-app-0123456789")
            .await
            .status(),
        StatusCode::UNAUTHORIZED,
        "only the secret the app had"
    );
    let refreshed = app_refresh(APP_SECRET).await;
    assert_eq!(
        refreshed.status(),
        StatusCode::OK,
        "the app's session moved"
    );
    let refreshed: Value = refreshed.json().await.unwrap();
    assert_eq!(refreshed["scope"], "openid email");
    let userinfo: Value = app
        .get(
            "/oauth2/userinfo",
            refreshed["access_token"].as_str().unwrap(),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(userinfo["email"], "bob@example.com");
    assert!(userinfo.get("phone_number").is_none(), "{userinfo}");
    let clients = ok(run(
        sesame(&deployment.env()).args(["client", "show", "spa"]),
        None,
    ));
    let spa: Value = serde_json::from_slice(&clients.stdout).unwrap();
    assert_eq!(spa["type"], "public");
    assert_eq!(spa["redirect_uris"], json!(["https://spa.example/cb"]));
    assert_eq!(
        spa["post_logout_redirect_uris"],
        json!(["https://spa.example/"])
    );

    // The token rotated before the export is recognised as reused.
    assert_problem(
        app.refresh(&source.alice_rotated).await,
        StatusCode::UNAUTHORIZED,
        "refresh_token_reused",
    )
    .await;
    assert_problem(
        app.refresh(&successor).await,
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
    )
    .await;
    assert_eq!(app.me_status(&access).await, StatusCode::UNAUTHORIZED);

    // New accounts get ids past the imported ones.
    let max_id = lines
        .iter()
        .filter(|l| l["type"] == "account")
        .map(|l| l["id"].as_i64().unwrap())
        .max()
        .unwrap();
    let added = ok(add_user(
        &deployment.env(),
        &["--username", "dave"],
        "dave password 1",
    ));
    let created = text(&added.stdout);
    let id: i64 = created
        .split("(id ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no id in {created}"));
    assert!(
        id > max_id,
        "{id} collides with an imported id (max {max_id})"
    );
}

#[tokio::test]
async fn the_export_holds_no_password_and_no_token() {
    let source = populated_source().await;
    let exported = ok(run(
        sesame(&source.env()).args(["export", "--sessions"]),
        None,
    ));
    let export = text(&exported.stdout);
    assert!(
        export.starts_with("{\"format\":\"sesame-export\""),
        "{export}"
    );
    assert!(export.contains("$argon2id$"), "verifiers are exported");
    for secret in [
        ALICE_PASSWORD,
        BOB_PASSWORD,
        CAROL_PASSWORD,
        &source.alice_rotated,
        &source.alice_live,
        &source.alice_access,
        &source.bob_refresh,
        &source.bob_app_refresh,
        APP_SECRET,
    ] {
        assert!(!export.contains(secret), "a password or token was exported");
    }
    assert!(
        text(&exported.stderr)
            .contains("exported 3 roles, 2 OAuth clients, 3 accounts and 3 sessions"),
        "{}",
        text(&exported.stderr)
    );
    let without_sessions = ok(run(sesame(&source.env()).arg("export"), None));
    assert!(!text(&without_sessions.stdout).contains("\"type\":\"session\""));
}

/// An Argon2id PHC string made outside Sesame (by the argon2 crate itself).
fn phc(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::encode_b64(b"sixteen byte sal").unwrap();
    let params = argon2::Params::new(256, 1, 1, Some(32)).unwrap();
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

fn account_line(id: i64, username: &str, hash: &str, extra: &str) -> String {
    format!(
        r#"{{"type": "account", "id": {id}, "username": "{username}", "password_hash": "{hash}", "created_at": 1700000000{extra}}}"#
    )
}

const ERIN_REFRESH: &str = "erin-refresh-token-carried-over-by-hand";
const JACK_REFRESH: &str = "jack-refresh-token-from-the-old-system";
const PLANTED_REFRESH: &str = "a-token-the-file-chose-for-ivan";
const KIOSK_REFRESH: &str = "erin-refresh-token-at-the-kiosk-app";
const KIOSK_SECRET: &str = "the-kiosk-apps-secret-0123456789abcdef";
const ERIN_COOKIE: &str = "erins-sign-in-page-cookie-0123456789abcdefgh";
/// A client already registered on the deployment imported into: a
/// session naming it must not join it.
const ELSEWHERE: &str = "elsewhere";

/// A file with good and bad lines mixed, and what each bad line is refused for.
fn mixed_file() -> (String, Vec<(u64, &'static str)>, Vec<String>) {
    let erin = phc("erin password 1");
    let hank = "$scrypt$ln=40,r=8,p=1$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let now = now();
    let session = json!({
        "type": "session", "id": "5f0c2a52-6a3b-4d5e-9f10-2b3c4d5e6f70", "account_id": 10,
        "username": "erin", "platform": "web", "token_style": "jwt", "created_at": now - 100,
        "expires_at": now + 86_400,
        "refresh_tokens": [{"hash": hex::encode(Sha256::digest(ERIN_REFRESH)), "issued_at": now - 100}],
    });
    // A session line of a version 1 export, which had no username.
    let mut old_style = session.clone();
    old_style["id"] = json!("9c8d7e6f-3333-4444-8555-b66677788899");
    old_style.as_object_mut().unwrap().remove("username");
    old_style["refresh_tokens"][0]["hash"] = json!(hex::encode(Sha256::digest("an old token")));
    let mut orphan = session.clone();
    orphan["id"] = json!("0a4f1c6e-1111-4222-8333-944455566677");
    orphan["account_id"] = json!(999);
    orphan["refresh_tokens"][0]["hash"] = json!(hex::encode(Sha256::digest("another token")));
    // Jack's account line is refused (id 1 is ivan's in the database): his
    // session must not join ivan's account, whose id it names.
    let mut jacks = session.clone();
    jacks["id"] = json!("7b1e2d3c-2222-4333-8444-a55566677788");
    jacks["account_id"] = json!(1);
    jacks["username"] = json!("jack");
    jacks["refresh_tokens"][0]["hash"] = json!(hex::encode(Sha256::digest(JACK_REFRESH)));
    // Another deployment's ivan (id 1 and the same username as this one's,
    // another person): his line is refused, and his session, with a token
    // the file chose, must not join this ivan's account either.
    let mut planted = jacks.clone();
    planted["id"] = json!("7b1e2d3c-5555-4333-8444-a55566677788");
    planted["username"] = json!("ivan");
    planted["expires_at"] = json!(253_402_300_799_i64);
    planted["refresh_tokens"][0]["hash"] = json!(hex::encode(Sha256::digest(PLANTED_REFRESH)));
    let kiosk = json!({
        "type": "client", "id": "kiosk", "secret_hash": hex::encode(Sha256::digest(KIOSK_SECRET)),
        "grants": ["password", "refresh_token"], "scopes": ["openid", "profile"],
        "created_at": 1700000000,
    });
    let public_with_password = json!({
        "type": "client", "id": "bad-app", "grants": ["password"], "created_at": 1700000000,
    });
    let bad_secret = json!({
        "type": "client", "id": "odd-app", "secret_hash": "hunter2-secret", "grants": ["password"],
        "created_at": 1700000000,
    });
    let at_the_kiosk = |id: &str, client_id: &str, scope: &str, token: &str| {
        let mut line = session.clone();
        line["id"] = json!(id);
        line["platform"] = json!("oauth");
        line["client"] = json!({"client_id": client_id, "scope": scope, "auth_time": now - 100});
        line["refresh_tokens"][0]["hash"] = json!(hex::encode(Sha256::digest(format!(
            "oauth:{client_id}:{token}"
        ))));
        line.to_string()
    };
    // Erin's sign-in page session, with its cookie, and a session it gave
    // the kiosk: logging out on the page ends both after the move.
    let mut erin_web = session.clone();
    erin_web["access_tokens"] = json!([{
        "hash": hex::encode(Sha256::digest(format!("sesame-browser:{ERIN_COOKIE}"))),
        "expires_at": now + 3600,
    }]);
    let mut from_the_page: Value = serde_json::from_str(&at_the_kiosk(
        "1d2e3f40-6666-4777-8888-999aaabbbccc",
        "kiosk",
        "openid",
        KIOSK_REFRESH,
    ))
    .unwrap();
    from_the_page["client"]["browser_session"] = session["id"].clone();
    let lines = [
        r#"{"format": "sesame-export", "version": 1, "exported_at": "2026-11-21T09:10:25Z"}"#
            .to_owned(),
        account_line(10, "erin", &erin, r#", "email": "erin@example.com""#),
        account_line(12, "mallory", &erin, r#", "pasword": "hunter2-secret""#),
        account_line(11, "ERIN", &erin, ""),
        r#"{"type": "account", "id": 12, "username": "half"#.to_owned(),
        account_line(13, "frank", &erin, r#", "password_hash_format": "bcrypt""#),
        account_line(
            14,
            "gina",
            &phc("gina password 1"),
            r#", "email": "gina@example.com", "max_api_calls": 7, "quota_period": "day", "profile": {"qq": "1"}"#,
        ),
        erin_web.to_string(),
        r#"{"type": "widget", "secret": "hunter2-secret"}"#.to_owned(),
        account_line(15, "hank", hank, ""),
        orphan.to_string(),
        account_line(16, "Ivan", &erin, ""),
        account_line(1, "jack", &erin, ""),
        jacks.to_string(),
        old_style.to_string(),
        account_line(
            18,
            "big",
            &erin,
            &format!(r#", "display_name": "{}""#, "x".repeat(1 << 20)),
        ),
        account_line(
            17,
            "kate",
            &phc("kate password 1"),
            r#", "roles": ["administrator"]"#,
        ),
        account_line(1, "ivan", &erin, ""),
        planted.to_string(),
        kiosk.to_string(),
        public_with_password.to_string(),
        bad_secret.to_string(),
        from_the_page.to_string(),
        at_the_kiosk(
            "1d2e3f40-7777-4777-8888-999aaabbbccc",
            ELSEWHERE,
            "openid",
            "a-token-for-another-app",
        ),
        at_the_kiosk(
            "1d2e3f40-8888-4777-8888-999aaabbbccc",
            "kiosk",
            "openid admin",
            "a-token-with-a-made-up-scope",
        ),
        // A new role, and an account after it naming it.
        r#"{"type": "role", "name": "auditor", "permissions": ["audit.read"]}"#.to_owned(),
        account_line(19, "lena", &erin, r#", "roles": ["auditor"]"#),
        // The built-in user role as another deployment changed it: this
        // one's may hold other permissions on purpose.
        r#"{"type": "role", "name": "user", "description": "A normal account", "permissions": ["read", "write"]}"#
            .to_owned(),
        r#"{"type": "role", "name": "Bad Name"}"#.to_owned(),
        // The built-in administrator role exactly as this deployment has
        // it: nothing to do.
        r#"{"type": "role", "name": "administrator", "description": "Full access, including the admin API", "permissions": ["write", "admin", "read"]}"#
            .to_owned(),
        // An account holding the user role whose line was refused: it
        // would get this deployment's permissions, not the file's.
        account_line(20, "mike", &erin, ""),
        // Another application of the same id is registered here: the
        // file's is not imported over it.
        json!({
            "type": "client", "id": ELSEWHERE, "grants": ["password"], "created_at": 1700000000,
            "secret_hash": hex::encode(Sha256::digest(KIOSK_SECRET)),
        })
        .to_string(),
        // A grant beyond what the client may be granted.
        at_the_kiosk(
            "1d2e3f40-9999-4777-8888-999aaabbbccc",
            "kiosk",
            "openid email",
            "a-token-beyond-the-kiosks-scopes",
        ),
    ];
    let expected = vec![
        (3, "unknown field `pasword`"),
        (4, "account ERIN: username is already taken"),
        (5, "malformed JSON"),
        (6, "account frank: password_hash: not a bcrypt hash"),
        (9, "unknown record type"),
        (
            10,
            "account hank: password_hash: scrypt: parameters beyond what Sesame verifies",
        ),
        (11, "session: account_id names no account this import wrote"),
        (12, "account Ivan: username is already taken"),
        (13, "account jack: id is already taken"),
        (14, "session: account_id names no account this import wrote"),
        (15, "username: required (format version 2)"),
        (16, "longer than"),
        (18, "account ivan: id is already taken"),
        (19, "session: account_id names no account this import wrote"),
        (
            21,
            "client bad-app: grant: a public client cannot use password",
        ),
        (
            22,
            "client odd-app: secret_hash: must be the 64 hex digits of a SHA-256",
        ),
        (
            24,
            "session: client.client_id names no client this import wrote",
        ),
        (25, "session: client.scope: unknown \"admin\""),
        (
            28,
            "role user: defined here with another description or other permissions",
        ),
        (29, "role Bad Name: name: must be 1 to"),
        (
            31,
            "account mike: roles: the line defining user was refused",
        ),
        (
            32,
            "client elsewhere: client_id is already taken by a client registered otherwise",
        ),
        (
            33,
            "session: client.scope: beyond the scopes of client kiosk",
        ),
    ];
    let secrets = vec![erin, hank.to_owned(), "hunter2".to_owned()];
    (lines.join("\n") + "\n", expected, secrets)
}

#[tokio::test]
async fn bad_lines_are_refused_with_their_number_and_the_rest_is_imported() {
    let (file_text, expected, secrets) = mixed_file();
    let files = tempfile::tempdir().unwrap();
    let file = files.path().join("mixed.jsonl");
    std::fs::write(&file, &file_text).unwrap();
    let deployment = Deployment::new().await;
    let env = deployment.env();
    ok(add_user(&env, &["--username", "ivan"], "ivan password 1"));
    ok(run(
        sesame(&env).args(["client", "add", ELSEWHERE, "--grant", "password"]),
        None,
    ));

    let check = |output: &Output| {
        assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
        let refused = refusals(output);
        assert_eq!(refused.len(), expected.len(), "{refused:#?}");
        for (line, (number, reason)) in refused.iter().zip(&expected) {
            assert!(
                line.starts_with(&format!("line {number}: ")) && line.contains(reason),
                "{line:?} is not line {number}: …{reason}…"
            );
        }
        let stderr = text(&output.stderr);
        for secret in &secrets {
            assert!(
                !stderr.contains(secret.as_str()),
                "a value was echoed: {stderr}"
            );
        }
        assert!(
            !stderr.contains("$argon2") && !stderr.contains("$pbkdf2"),
            "{stderr}"
        );
        refused
    };

    let dry = run(sesame(&env).args(["import", "--dry-run"]).arg(&file), None);
    let dry_refusals = check(&dry);
    assert_eq!(
        text(&dry.stdout).trim(),
        "checked 33 lines: would import 1 role, 1 OAuth client, 4 accounts and 2 sessions; 23 lines refused\npassword hashes: argon2 4"
    );
    let listed = ok(run(sesame(&env).args(["user", "list", "--json"]), None));
    assert_eq!(
        text(&listed.stdout).lines().count(),
        1,
        "a dry run writes nothing: {}",
        text(&listed.stdout)
    );

    // A small batch, so that the bad lines fall into several transactions.
    let real = run(
        sesame(&env).args(["import", "--batch", "4"]).arg(&file),
        None,
    );
    assert_eq!(
        check(&real),
        dry_refusals,
        "the dry run reports what the import does"
    );
    assert_eq!(
        text(&real.stdout).trim(),
        "imported 1 role, 1 OAuth client, 4 accounts and 2 sessions; 23 lines refused\npassword hashes: argon2 4"
    );

    let app = app_on(deployment.clone()).await;
    for (login, password) in [
        ("erin@example.com", "erin password 1"),
        ("gina", "gina password 1"),
        ("kate", "kate password 1"),
        ("ivan", "ivan password 1"),
    ] {
        assert_eq!(
            app.login(login, password).await.status(),
            StatusCode::OK,
            "{login}"
        );
    }
    for refused in ["mallory", "frank", "hank", "jack", "big"] {
        assert_eq!(
            app.login(refused, "erin password 1").await.status(),
            StatusCode::UNAUTHORIZED,
            "{refused}"
        );
    }
    let erin = app.refresh(ERIN_REFRESH).await;
    assert_eq!(erin.status(), StatusCode::OK, "a hand-made session imports");
    let kiosk = client_refresh(&app, "kiosk", KIOSK_SECRET, KIOSK_REFRESH).await;
    assert_eq!(kiosk.status(), StatusCode::OK, "a hand-made client session");
    let kiosk: Value = kiosk.json().await.unwrap();
    assert_eq!(kiosk["scope"], "openid");
    // Exported again from this backend: the cookie's hash, and the link.
    let exported = ok(run(sesame(&env).args(["export", "--sessions"]), None));
    let sessions = session_lines(&text(&exported.stdout));
    let web = sessions
        .iter()
        .find(|s| s["id"] == "5f0c2a52-6a3b-4d5e-9f10-2b3c4d5e6f70")
        .expect("erin's page session");
    assert_eq!(
        web["access_tokens"][0]["hash"],
        hex::encode(Sha256::digest(format!("sesame-browser:{ERIN_COOKIE}")))
    );
    let at_the_kiosk = sessions
        .iter()
        .find(|s| s["id"] == "1d2e3f40-6666-4777-8888-999aaabbbccc")
        .expect("the kiosk's session");
    assert_eq!(at_the_kiosk["client"]["browser_session"], web["id"]);
    // The page's cookie moved, and so did the link: logging out there
    // (the kiosk's ID token names erin) ends the kiosk's session too.
    let logout = app
        .client
        .get(app.url(&format!(
            "/oauth2/logout?id_token_hint={}",
            kiosk["id_token"].as_str().unwrap()
        )))
        .header("cookie", format!("sesame_session={ERIN_COOKIE}"))
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::OK);
    let ended = client_refresh(
        &app,
        "kiosk",
        KIOSK_SECRET,
        kiosk["refresh_token"].as_str().unwrap(),
    )
    .await;
    assert_eq!(
        ended.status(),
        StatusCode::BAD_REQUEST,
        "single logout reaches the moved session"
    );
    assert_eq!(
        app.refresh(JACK_REFRESH).await.status(),
        StatusCode::UNAUTHORIZED,
        "jack's old token gives no tokens of ivan's"
    );
    assert_eq!(
        app.refresh(PLANTED_REFRESH).await.status(),
        StatusCode::UNAUTHORIZED,
        "another ivan's session does not join this one's account"
    );
    let gina: Value = app
        .login("gina", "gina password 1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(gina["user"]["max_api_calls"], 7);
    assert_eq!(gina["user"]["quota_period"], "day");
    assert_eq!(gina["user"]["roles"], json!(["user"]), "the default role");
    assert_eq!(
        gina["user"]["permissions"],
        json!(["read"]),
        "the user role as this deployment defines it"
    );
    let lena: Value = app
        .login("lena", "erin password 1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(lena["user"]["roles"], json!(["auditor"]));
    assert_eq!(lena["user"]["permissions"], json!(["audit.read"]));

    // Run again under --on-conflict update: the user role is replaced, and
    // every holder's permissions follow at once.
    let updated = run(
        sesame(&env)
            .args(["import", "--on-conflict", "update"])
            .arg(&file),
        None,
    );
    assert!(
        text(&updated.stdout).contains("; 1 role updated"),
        "{}",
        text(&updated.stdout)
    );
    let refused = refusals(&updated);
    assert!(
        refused
            .iter()
            .any(|r| r.starts_with("line 32: client elsewhere: client_id is already taken")),
        "update never replaces another application: {refused:#?}"
    );
    assert!(
        !refused.iter().any(|r| r.starts_with("line 31: ")),
        "mike's role is now the file's: {refused:#?}"
    );
    assert_eq!(
        app.login("mike", "erin password 1").await.status(),
        StatusCode::OK
    );
    let gina: Value = app
        .login("gina", "gina password 1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(gina["user"]["permissions"], json!(["read", "write"]));
}

/// An import update that gives an account another password clears the
/// guesses counted against the old one, as a reset does, and so does one
/// that lifts a lock, as an unlock does; an identical line (an import run
/// again) leaves the budget as it is.
#[tokio::test]
async fn an_import_update_with_another_password_clears_the_failure_budget() {
    use sesame::core::transfer::{ImportOptions, OnConflict};
    let app = TestApp::spawn_with(|c| {
        c.abuse.account_burst = 3;
        c.abuse.address_burst = 100;
    })
    .await;
    let import = |line: String| {
        let app = &app;
        async move {
            let mut import = app
                .core
                .start_import(ImportOptions {
                    dry_run: false,
                    template: None,
                    firebase: None,
                    on_conflict: OnConflict::Update,
                })
                .await
                .unwrap();
            let parsed = import.parse(2, &line).unwrap().unwrap();
            let refused = app
                .core
                .import_batch(&mut import, vec![parsed])
                .await
                .unwrap();
            assert!(refused.is_empty(), "{refused:?}");
        }
    };
    let guessed_out = |username: &'static str| {
        let app = &app;
        async move {
            for _ in 0..3 {
                let status = app.login(username, "a wrong guess").await.status();
                assert_eq!(status, StatusCode::UNAUTHORIZED);
            }
            let status = app.login(username, "a wrong guess").await.status();
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        }
    };
    import(account_line(700, "quinn", &phc("quinn password 1"), "")).await;
    import(account_line(701, "pia", &phc("pia password 1"), "")).await;
    let rex = phc("rex password 1");
    import(account_line(702, "rex", &rex, r#", "status": "locked""#)).await;
    guessed_out("quinn").await;
    guessed_out("pia").await;
    guessed_out("rex").await;

    import(account_line(700, "quinn", &phc("quinn password 1"), "")).await;
    assert_eq!(
        app.login("quinn", "quinn password 1").await.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the same line again: the same password, the same budget"
    );
    import(account_line(701, "pia", &phc("pia password 2"), "")).await;
    assert_eq!(
        app.login("pia", "pia password 2").await.status(),
        StatusCode::OK,
        "another password: the guesses at the old one count no more"
    );
    import(account_line(702, "rex", &rex, r#", "status": "active""#)).await;
    assert_eq!(
        app.login("rex", "rex password 1").await.status(),
        StatusCode::OK,
        "the lock lifted, and the guesses made while it held with it"
    );
}

/// `--on-conflict update` with another password, another username or a
/// disabling forgets the clients the account knew, as a new password does
/// (they signed in as whoever the account was), and ends its sessions, as
/// a reset or a disabling does; an identical line keeps both. A session
/// line of an account the file disables is refused. Each replacement is in
/// the audit log.
#[tokio::test]
async fn an_import_update_that_changes_who_signs_in_forgets_known_clients() {
    let deployment = Deployment::new().await;
    let env = deployment.env();
    ok(add_user(&env, &["--username", "olga"], "olga password 1"));
    let app = TestApp::spawn_in(deployment.clone(), |_| {}).await;
    let grant: Value = app
        .login("olga", "olga password 1")
        .await
        .json()
        .await
        .unwrap();
    let store = deployment.open_store().await;
    let session_ended = |grant: Value| {
        let store = &store;
        async move {
            let id = grant["session_id"].as_str().unwrap().to_owned();
            store
                .get_session(&id)
                .await
                .unwrap()
                .unwrap()
                .revoked_at
                .is_some()
        }
    };
    let known = || async {
        store
            .find_account_for_login("olga", None, None, Some("127.0.0.1"))
            .await
            .unwrap()
            .unwrap()
            .known_address
    };
    assert!(known().await, "signed in from here");
    let export = text(&ok(run(sesame(&env).arg("export"), None)).stdout);
    let header = export.lines().next().unwrap().to_owned();
    let mut olga: Value = export
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|l| l["type"] == "account" && l["username"] == "olga")
        .unwrap();
    let import = |line: &Value| {
        ok(run(
            sesame(&env).args(["import", "--on-conflict", "update", "-"]),
            Some(&format!("{header}\n{line}\n")),
        ))
    };
    import(&olga);
    assert!(known().await, "the same account, the same clients");
    assert!(!session_ended(grant.clone()).await, "and the same sessions");
    olga["password_hash"] = json!(phc("olga password 2"));
    import(&olga);
    assert!(
        !known().await,
        "another password: its clients are strangers"
    );
    assert!(session_ended(grant).await, "another password ends them");

    let grant: Value = app
        .login("olga", "olga password 2")
        .await
        .json()
        .await
        .unwrap();
    olga["status"] = json!("disabled");
    let session = json!({
        "type": "session", "id": "0f6a3b1e-8c2d-4e5f-9a7b-1c2d3e4f5a6b",
        "account_id": olga["id"], "username": "olga", "platform": "web",
        "token_style": "jwt", "created_at": now(), "expires_at": now() + 86_400,
        "refresh_tokens": [{"hash": "ab".repeat(32), "issued_at": now()}],
    });
    let output = run(
        sesame(&env).args(["import", "--on-conflict", "update", "-"]),
        Some(&format!("{header}\n{olga}\n{session}\n")),
    );
    let refused = refusals(&output);
    assert!(
        refused.len() == 1
            && refused[0].starts_with("line 3: ")
            && refused[0].contains("account_id names a disabled account"),
        "{}",
        text(&output.stderr)
    );
    assert!(session_ended(grant).await, "a disabling ends them");

    let replaced = store
        .list_audit_events(&sesame::store::AuditQuery {
            account_id: olga["id"].as_i64(),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event == "account_replaced")
        .map(|e| e.detail.unwrap_or_default())
        .collect::<Vec<_>>();
    assert_eq!(replaced.len(), 3, "{replaced:#?}");
    assert_eq!(
        replaced[0], "by the import's line 2: status disabled, roles user",
        "newest first"
    );
}

/// Under `--on-conflict update`, a role line that would take the admin
/// permission from the last administrators is refused on its line, the
/// accounts after it that name it too, and the rest goes on.
#[tokio::test]
async fn a_role_replacement_leaving_no_administrator_is_refused_on_its_line() {
    let deployment = Deployment::new().await;
    let env = deployment.env();
    ok(add_user(&env, &["--username", "boss"], "boss password 1"));
    ok(run(
        sesame(&env).args(["user", "grant-role", "boss", "administrator"]),
        None,
    ));
    let file = [
        r#"{"format": "sesame-export", "version": 3}"#.to_owned(),
        r#"{"type": "role", "name": "administrator", "description": "Reads", "permissions": ["read"]}"#
            .to_owned(),
        account_line(
            7,
            "newcomer",
            &phc("newcomer password 1"),
            r#", "roles": ["administrator"]"#,
        ),
        r#"{"type": "role", "name": "user", "description": "A normal account", "permissions": ["read", "write"]}"#
            .to_owned(),
    ]
    .join("\n")
        + "\n";
    let output = run(
        sesame(&env).args(["import", "--on-conflict", "update", "-"]),
        Some(&file),
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert_eq!(
        refusals(&output),
        [
            "line 2: role administrator: replacing it would leave no administrator who can sign in",
            "line 3: account newcomer: roles: the line defining administrator was refused, so \
             its permissions here may not be the file's",
        ],
        "{}",
        text(&output.stderr)
    );
    assert!(
        text(&output.stdout).contains("1 role updated"),
        "{}",
        text(&output.stdout)
    );
    let app = app_on(deployment.clone()).await;
    let boss: Value = app
        .login("boss", "boss password 1")
        .await
        .json()
        .await
        .unwrap();
    assert!(
        boss["user"]["permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("admin")),
        "{boss}"
    );
    assert_eq!(
        app.login("newcomer", "newcomer password 1").await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn an_unreadable_file_or_a_bad_header_stops_with_status_2() {
    let deployment = Deployment::new().await;
    let env = deployment.env();
    let files = tempfile::tempdir().unwrap();
    let missing = run(
        sesame(&env)
            .arg("import")
            .arg(files.path().join("absent.jsonl")),
        None,
    );
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing.stderr).contains("cannot read"),
        "{}",
        text(&missing.stderr)
    );

    for (content, reason) in [
        ("", "no header"),
        ("{\"type\": \"account\"}\n", "not a Sesame export"),
        (
            "{\"format\": \"sesame-export\", \"version\": 9}\n",
            "newer Sesame",
        ),
    ] {
        let output = run(sesame(&env).args(["import", "-"]), Some(content));
        assert_eq!(output.status.code(), Some(2), "{content:?}");
        assert!(
            text(&output.stderr).contains(reason),
            "{}",
            text(&output.stderr)
        );
    }
    let header = "{\"format\": \"sesame-export\", \"version\": 1}\n";
    let empty = ok(run(sesame(&env).args(["import", "-"]), Some(header)));
    assert_eq!(
        text(&empty.stdout).trim(),
        "imported 0 accounts and 0 sessions; 0 lines refused"
    );
}
