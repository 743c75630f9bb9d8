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
    ok(add_user(&env, &["--username", "carol"], CAROL_PASSWORD));
    // An OAuth client, with a session of bob's signed in to it: neither
    // moves (the export says so).
    let app_secret = "a-secret-chosen-by-the-operator-0123456789";
    ok(run(
        sesame(&env).args([
            "client",
            "add",
            "shop-app",
            "--secret-stdin",
            "--grant",
            "password",
            "--redirect-uri",
            "https://shop.example/cb",
        ]),
        Some(&format!("{app_secret}\n")),
    ));

    let server = ServerProcess::start(sesame(&env));
    let signed_in = reqwest::Client::new()
        .post(server.url("/oauth2/token"))
        .basic_auth("shop-app", Some(app_secret))
        .form(&[
            ("grant_type", "password"),
            ("username", "bob"),
            ("password", BOB_PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), StatusCode::OK);
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
    }
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
        text(&exported.stdout).contains("exported 3 accounts and 2 sessions"),
        "the session signed in to an OAuth client is left out: {}",
        text(&exported.stdout)
    );
    assert!(
        text(&exported.stderr).contains("not exported: 1 OAuth client (shop-app)"),
        "{}",
        text(&exported.stderr)
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
    assert_eq!(lines[0]["version"], 2);
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
    let first = ok(run(
        sesame(&deployment.env()).arg("import").arg(&accounts_only),
        None,
    ));
    assert!(
        text(&first.stdout).starts_with("imported 3 accounts and 0 sessions"),
        "{}",
        text(&first.stdout)
    );
    let imported = ok(run(
        sesame(&deployment.env())
            .args(["import", "--on-conflict", "update"])
            .arg(&file),
        None,
    ));
    assert_eq!(
        text(&imported.stdout).trim(),
        "imported 0 accounts and 2 sessions; 0 lines refused; 3 accounts updated\npassword hashes: argon2 3"
    );
    let again = ok(run(
        sesame(&deployment.env())
            .args(["import", "--on-conflict", "skip"])
            .arg(&file),
        None,
    ));
    assert_eq!(
        text(&again.stdout).trim(),
        "imported 0 accounts and 0 sessions; 0 lines refused; 5 lines already there, skipped"
    );

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
    assert_eq!(
        app.login("carol", CAROL_PASSWORD).await.status(),
        StatusCode::OK
    );
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
    ] {
        assert!(!export.contains(secret), "a password or token was exported");
    }
    assert!(
        text(&exported.stderr).contains("exported 3 accounts and 2 sessions"),
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
        session.to_string(),
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
        "checked 19 lines: would import 3 accounts and 1 session; 14 lines refused\npassword hashes: argon2 3"
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
        "imported 3 accounts and 1 session; 14 lines refused\npassword hashes: argon2 3"
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
