//! The real binary: first start, the operator CLI, configuration and shutdown.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Deployment, healthy, sesame_command};

fn sesame(deployment: &Deployment) -> Command {
    sesame_command(deployment.env())
}

fn run(command: &mut Command, stdin: Option<&str>) -> Output {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("binary starts");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn add_user(dir: &Deployment, args: &[&str], password: &str) -> Output {
    let mut command = sesame(dir);
    command
        .args(["user", "add"])
        .args(args)
        .arg("--password-stdin");
    run(&mut command, Some(&format!("{password}\n")))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

struct Server {
    child: Child,
    address: String,
    stdout: Arc<Mutex<Vec<String>>>,
}

/// Starts `sesame serve` on a free port and waits until it answers `/healthz`.
fn serve(dir: &Deployment, extra_env: &[(&str, &str)]) -> Server {
    let address = format!("127.0.0.1:{}", crate::helpers::free_port());
    let mut command = sesame(dir);
    command
        .arg("serve")
        .arg("--listen")
        .arg(&address)
        .envs(extra_env.iter().copied());
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().expect("server starts");
    let stdout = Arc::new(Mutex::new(Vec::new()));
    let reader = BufReader::new(child.stdout.take().unwrap());
    let lines = Arc::clone(&stdout);
    std::thread::spawn(move || {
        for line in reader.lines().map_while(Result::ok) {
            lines.lock().unwrap().push(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while !healthy(&address) {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Server {
        child,
        address: format!("http://{address}"),
        stdout,
    }
}

impl Server {
    /// The first-start banner's password, waiting for it to be printed.
    fn admin_password(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self
                .stdout
                .lock()
                .unwrap()
                .iter()
                .find_map(|l| l.trim().strip_prefix("password: ").map(str::to_owned));
            if let Some(password) = found {
                return password;
            }
            assert!(Instant::now() < deadline, "no password printed");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stdout_text(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    fn stop(mut self) -> (std::process::ExitStatus, String) {
        terminate(&self.child);
        let status = self.child.wait().unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut self.child.stderr.take().unwrap(), &mut stderr).unwrap();
        (status, stderr)
    }
}

/// A server a test did not stop is killed, not left running after the tests.
impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn terminate(child: &Child) {
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
}

async fn login(address: &str, login: &str, password: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{address}/v1/login"))
        .json(&json!({"login": login, "password": password}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn first_start_prints_an_admin_password_once_and_it_works() {
    let dir = Deployment::new().await;
    let server = serve(&dir, &[]);
    let password = server.admin_password();
    let banner = server.stdout_text();
    assert!(banner.contains("username: admin"), "{banner}");
    assert!(
        banner.contains("sesame user set-password admin"),
        "{banner}"
    );
    let response = login(&server.address, "admin", &password).await;
    assert_eq!(response.status(), StatusCode::OK);
    let grant: Value = response.json().await.unwrap();
    assert_eq!(grant["user"]["roles"], json!(["administrator"]));
    let (status, stderr) = server.stop();
    assert!(status.success(), "graceful exit on SIGTERM");
    assert!(
        !stderr.contains(&password),
        "the admin password reached the log"
    );

    let again = serve(&dir, &[]);
    assert_eq!(
        login(&again.address, "admin", &password).await.status(),
        StatusCode::OK
    );
    let printed = again.stdout_text();
    assert!(again.stop().0.success());
    assert!(
        !printed.contains("password"),
        "second start must not print a password: {printed}"
    );

    // Administration through a role of the operator's own is still an
    // administrator: no second one is made (its password in the log).
    for args in [
        &["role", "add", "ops", "--permission", "admin"][..],
        &["user", "grant-role", "admin", "ops"],
        &["user", "revoke-role", "admin", "administrator"],
    ] {
        let output = run(sesame(&dir).args(args), None);
        assert!(
            output.status.success(),
            "{args:?}: {}",
            text(&output.stderr)
        );
    }
    let third = serve(&dir, &[]);
    let printed = third.stdout_text();
    assert!(third.stop().0.success());
    assert!(
        !printed.contains("password"),
        "an administrator by another role: {printed}"
    );
}

#[tokio::test]
async fn the_user_commands_manage_accounts_while_the_server_runs() {
    let dir = Deployment::new().await;
    let server = serve(&dir, &[]);
    let output = add_user(
        &dir,
        &[
            "--username",
            "Alice",
            "--email",
            "alice@example.com",
            "--mobile",
            "13800000000",
            "--display-name",
            "Alice A",
            "--max-api-calls",
            "1000",
        ],
        "alice password 1",
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("created Alice"));

    for login_id in ["alice", "alice@example.com", "13800000000"] {
        assert_eq!(
            login(&server.address, login_id, "alice password 1")
                .await
                .status(),
            StatusCode::OK
        );
    }
    let md5 = {
        use md5::{Digest, Md5};
        hex::encode(Md5::digest(b"alice password 1"))
    };
    let users_actions = reqwest::Client::new()
        .post(format!("{}/api/v1/users/actions/login", server.address))
        .json(&json!({"account": "alice", "password": md5}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        users_actions.status(),
        StatusCode::OK,
        "a CLI-made account signs in with the MD5 of its password"
    );

    let profile = run(
        sesame(&dir).args(["user", "set-profile", "alice", "gender=女", "qq=10000"]),
        None,
    );
    assert!(profile.status.success(), "{}", text(&profile.stderr));
    let quota = run(sesame(&dir).args(["user", "set-quota", "alice", "5"]), None);
    assert!(quota.status.success(), "{}", text(&quota.stderr));
    let shown = run(sesame(&dir).args(["user", "show", "alice", "--json"]), None);
    let shown: Value = serde_json::from_str(&text(&shown.stdout)).unwrap();
    assert_eq!(shown["profile"], json!({"gender": "女", "qq": "10000"}));
    assert_eq!(shown["max_api_calls"], 5);

    let taken = add_user(&dir, &["--username", "ALICE"], "another password");
    assert!(!taken.status.success());
    assert!(
        text(&taken.stderr).contains("username is already taken"),
        "{}",
        text(&taken.stderr)
    );
    let taken = add_user(
        &dir,
        &["--username", "bob", "--email", "ALICE@example.com"],
        "another password",
    );
    assert!(
        text(&taken.stderr).contains("email is already taken"),
        "{}",
        text(&taken.stderr)
    );
    let taken = add_user(
        &dir,
        &["--username", "bob", "--mobile", "13800000000"],
        "another password",
    );
    assert!(
        text(&taken.stderr).contains("mobile is already taken"),
        "{}",
        text(&taken.stderr)
    );
    let weak = add_user(&dir, &["--username", "bob"], "short");
    assert!(!weak.status.success());
    assert!(
        text(&weak.stderr).contains("at least 8 characters"),
        "{}",
        text(&weak.stderr)
    );
    let common = add_user(&dir, &["--username", "bob"], "password123");
    assert!(!common.status.success());
    assert!(
        text(&common.stderr).contains("too common"),
        "{}",
        text(&common.stderr)
    );
    let unknown_role = add_user(
        &dir,
        &["--username", "bob", "--role", "wizard"],
        "bob password 1",
    );
    assert!(
        text(&unknown_role.stderr).contains("there is no role \"wizard\""),
        "{}",
        text(&unknown_role.stderr)
    );
    let bob = add_user(
        &dir,
        &[
            "--username",
            "bob",
            "--role",
            "administrator",
            "--role",
            "user",
        ],
        "bob password 1",
    );
    assert!(bob.status.success(), "{}", text(&bob.stderr));

    let list = run(sesame(&dir).args(["user", "list"]), None);
    let table = text(&list.stdout);
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table.contains("alice@example.com") && table.contains("administrator,user"),
        "{table}"
    );
    let json_lines = run(sesame(&dir).args(["user", "list", "--json"]), None);
    let accounts: Vec<Value> = text(&json_lines.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(accounts.len(), 3, "admin, Alice, bob");
    let alice = accounts.iter().find(|a| a["username"] == "Alice").unwrap();
    assert_eq!(
        alice["max_api_calls"], 5,
        "created with 1000, then set-quota 5"
    );
    assert_eq!(alice["display_name"], "Alice A");
    let show = run(sesame(&dir).args(["user", "show", "alice", "--json"]), None);
    let shown: Value = serde_json::from_str(&text(&show.stdout)).unwrap();
    assert_eq!(shown["email"], "alice@example.com");

    let grant: Value = login(&server.address, "alice", "alice password 1")
        .await
        .json()
        .await
        .unwrap();
    let token = grant["access_token"].as_str().unwrap().to_owned();
    let me = |token: String, address: String| async move {
        reqwest::Client::new()
            .get(format!("{address}/v1/me"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(
        me(token.clone(), server.address.clone()).await,
        StatusCode::OK
    );

    let set = run(
        sesame(&dir).args(["user", "set-password", "alice", "--password-stdin"]),
        Some("alice password 2\r\n"),
    );
    assert!(set.status.success(), "{}", text(&set.stderr));
    assert_eq!(
        me(token, server.address.clone()).await,
        StatusCode::UNAUTHORIZED,
        "sessions end with the old password"
    );
    assert_eq!(
        login(&server.address, "alice", "alice password 1")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login(&server.address, "alice", "alice password 2")
            .await
            .status(),
        StatusCode::OK,
        "\\r\\n is not part of it"
    );

    assert!(
        run(sesame(&dir).args(["user", "disable", "alice"]), None)
            .status
            .success()
    );
    assert_eq!(
        login(&server.address, "alice", "alice password 2")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert!(
        run(sesame(&dir).args(["user", "enable", "alice"]), None)
            .status
            .success()
    );
    let unlock = run(sesame(&dir).args(["user", "unlock", "alice"]), None);
    assert!(unlock.status.success(), "{}", text(&unlock.stderr));
    assert!(text(&unlock.stdout).contains("Alice unlocked"));
    let audit = run(
        sesame(&dir).args([
            "audit", "list", "--user", "alice", "--limit", "200", "--json",
        ]),
        None,
    );
    assert!(audit.status.success(), "{}", text(&audit.stderr));
    let events: Vec<Value> = text(&audit.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    for expected in [
        "account_created",
        "login",
        "password_reset",
        "account_disabled",
        "account_enabled",
        "unlock",
        "quota_set",
        "profile_set",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    assert!(events.iter().all(|e| e["username"] == "Alice"));
    let table = run(sesame(&dir).args(["audit", "list", "--limit", "5"]), None);
    assert!(
        text(&table.stdout).starts_with("TIME"),
        "{}",
        text(&table.stdout)
    );
    assert_eq!(
        login(&server.address, "alice", "alice password 2")
            .await
            .status(),
        StatusCode::OK
    );
    assert!(
        run(sesame(&dir).args(["user", "delete", "alice"]), None)
            .status
            .success()
    );
    assert_eq!(
        login(&server.address, "alice", "alice password 2")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let missing = run(sesame(&dir).args(["user", "show", "alice"]), None);
    assert!(!missing.status.success());
    assert!(text(&missing.stderr).contains("account not found"));
    server.stop();
}

#[tokio::test]
async fn a_missing_terminal_without_password_stdin_is_a_clear_error() {
    let dir = Deployment::new().await;
    let output = run(
        sesame(&dir).args(["user", "add", "--username", "x"]),
        Some(""),
    );
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("--password-stdin"),
        "{}",
        text(&output.stderr)
    );
}

#[tokio::test]
async fn invalid_configuration_stops_start_up_with_what_to_fix() {
    let dir = Deployment::new().await;
    let output = run(
        sesame(&dir)
            .arg("serve")
            .env("SESAME_TOKENS__LEEWAY", "120")
            .env("SESAME_LISTEN", "not-an-address"),
        None,
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("tokens.leeway = 120: must be between 0 and 60"),
        "{stderr}"
    );
    assert!(stderr.contains("listen"), "{stderr}");

    let config = dir.path().join("sesame.toml");
    std::fs::write(&config, "[tokens]\naccess_ttl = \"soon\"\n").unwrap();
    let output = run(sesame(&dir).arg("serve").arg("--config").arg(&config), None);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("access_ttl"),
        "{}",
        text(&output.stderr)
    );

    std::fs::write(&config, "[tokens]\naccess_tll = 60\n").unwrap();
    let output = run(sesame(&dir).arg("serve").arg("--config").arg(&config), None);
    assert!(
        text(&output.stderr).contains("access_tll"),
        "typos are reported: {}",
        text(&output.stderr)
    );

    let output = run(
        sesame(&dir)
            .arg("serve")
            .arg("--config")
            .arg(dir.path().join("absent.toml")),
        None,
    );
    assert!(
        text(&output.stderr).contains("does not exist"),
        "{}",
        text(&output.stderr)
    );
}

#[tokio::test]
async fn the_config_file_sets_options_and_flags_override_it() {
    let dir = Deployment::new().await;
    let config = dir.path().join("sesame.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:1\"\n[tokens]\naccess_ttl = 120\n",
    )
    .unwrap();
    let server = serve(&dir, &[("SESAME_CONFIG", config.to_str().unwrap())]);
    let password = server.admin_password();
    let grant: Value = login(&server.address, "admin", &password)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(grant["expires_in"], 120, "from the file");
    server.stop();
}

#[tokio::test]
async fn secrets_never_reach_the_log_even_at_debug_level() {
    let dir = Deployment::new().await;
    let output = add_user(&dir, &["--username", "carol"], "carol-secret-pw");
    assert!(output.status.success());
    let server = serve(&dir, &[("SESAME_LOG", "trace")]);
    let client = reqwest::Client::new();
    let grant: Value = login(&server.address, "carol", "carol-secret-pw")
        .await
        .json()
        .await
        .unwrap();
    let refresh = grant["refresh_token"].as_str().unwrap().to_owned();
    let access = grant["access_token"].as_str().unwrap().to_owned();
    client
        .get(format!("{}/v1/me", server.address))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    client
        .post(format!("{}/v1/refresh", server.address))
        .json(&json!({"refresh_token": refresh}))
        .send()
        .await
        .unwrap();
    login(&server.address, "carol", "wrong-secret-pw").await;
    client
        .get(format!(
            "{}/v1/nothing?password=query-secret-pw",
            server.address
        ))
        .send()
        .await
        .unwrap();
    let careyshop = format!(
        "{}/api/v1/user/method/login.user.user/?username=carol&password=carol-secret-pw&platform=iOS",
        server.address
    );
    let answer: Value = client
        .get(careyshop)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["status"], 200, "{answer}");
    let opaque = answer["data"]["token"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    client
        .get(format!("{}/v1/me", server.address))
        .bearer_auth(&opaque)
        .send()
        .await
        .unwrap();
    let (_, stderr) = server.stop();
    assert!(
        stderr.contains("/v1/login"),
        "debug logging was on: {stderr}"
    );
    for secret in [
        "carol-secret-pw",
        "wrong-secret-pw",
        "query-secret-pw",
        refresh.as_str(),
        access.as_str(),
        opaque.as_str(),
    ] {
        assert!(!stderr.contains(secret), "a secret reached the log");
    }
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish() {
    let dir = Deployment::new().await;
    // Heavy enough that a login takes a noticeable time.
    let heavy = [
        ("SESAME_PASSWORDS__MEMORY_KIB", "65536"),
        ("SESAME_PASSWORDS__ITERATIONS", "6"),
    ];
    let mut add = sesame(&dir);
    add.envs(heavy)
        .args(["user", "add", "--username", "dave", "--password-stdin"]);
    assert!(run(&mut add, Some("dave password 1\n")).status.success());
    let server = serve(&dir, &heavy);
    let address = server.address.clone();
    let in_flight =
        tokio::spawn(async move { login(&address, "dave", "dave password 1").await.status() });
    tokio::time::sleep(Duration::from_millis(30)).await;
    let (status, _) = server.stop();
    assert!(status.success());
    assert_eq!(in_flight.await.unwrap(), StatusCode::OK);
}

#[tokio::test]
async fn without_auto_migrate_start_up_waits_for_sesame_migrate() {
    let dir = Deployment::new().await;
    let manual = ("SESAME_DATABASE__AUTO_MIGRATE", "false");
    let refused = run(
        sesame(&dir).args(["user", "list"]).env(manual.0, manual.1),
        None,
    );
    assert!(!refused.status.success());
    let stderr = text(&refused.stderr);
    assert!(stderr.contains("sesame migrate"), "{stderr}");

    let migrated = run(sesame(&dir).arg("migrate").env(manual.0, manual.1), None);
    assert!(migrated.status.success(), "{}", text(&migrated.stderr));
    assert!(text(&migrated.stdout).contains("up to date"));
    // Twice is harmless, and the database URL shown carries no password.
    let again = run(sesame(&dir).arg("migrate"), None);
    assert!(again.status.success());

    let server = serve(&dir, &[manual]);
    assert!(!server.admin_password().is_empty());
    server.stop();
}

#[tokio::test]
async fn an_unreachable_redis_stops_a_server_but_not_an_operator() {
    let dir = Deployment::new().await;
    let unreachable = ("SESAME_REDIS_URL", "redis://:hunter2@127.0.0.1:1");
    let served = run(
        sesame(&dir)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env(unreachable.0, unreachable.1)
            .env("SESAME_REDIS__TIMEOUT_MS", "200"),
        None,
    );
    assert!(!served.status.success());
    let stderr = text(&served.stderr);
    assert!(stderr.contains("cannot reach Redis"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");

    let added = run(
        sesame(&dir)
            .args(["user", "add", "--username", "ops", "--password-stdin"])
            .env(unreachable.0, unreachable.1)
            .env("SESAME_REDIS__TIMEOUT_MS", "200"),
        Some("correct horse battery\n"),
    );
    assert!(added.status.success(), "{}", text(&added.stderr));
    let stderr = text(&added.stderr);
    assert!(stderr.contains("Redis is unreachable"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    let shown = run(sesame(&dir).args(["user", "show", "ops", "--json"]), None);
    assert!(shown.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_role_commands_define_roles_and_changes_apply_at_once() {
    let dir = Deployment::new().await;
    let server = serve(&dir, &[]);
    let ok = |args: &[&str]| {
        let output = run(sesame(&dir).args(args), None);
        assert!(
            output.status.success(),
            "{args:?}: {}",
            text(&output.stderr)
        );
        text(&output.stdout)
    };
    let refused = |args: &[&str]| {
        let output = run(sesame(&dir).args(args), None);
        assert!(!output.status.success(), "{args:?} succeeded");
        text(&output.stderr)
    };

    let created = ok(&[
        "role",
        "add",
        "editor",
        "--description",
        "Edits pages",
        "--permission",
        "read",
        "--permission",
        "edit",
    ]);
    assert!(
        created.contains("created role editor (edit,read)"),
        "{created}"
    );
    assert!(refused(&["role", "add", "editor"]).contains("name is already taken"));
    assert!(refused(&["role", "add", "Editor"]).contains("name"));
    let listed: Vec<Value> = ok(&["role", "list", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        listed,
        [
            json!({"name": "administrator", "description": "Full access, including the admin API", "permissions": ["admin", "read", "write"]}),
            json!({"name": "editor", "description": "Edits pages", "permissions": ["edit", "read"]}),
            json!({"name": "user", "description": "A normal account", "permissions": ["read"]}),
        ]
    );
    assert!(ok(&["role", "list"]).contains("editor"));

    let output = add_user(&dir, &["--username", "bob"], "bob password 1");
    assert!(output.status.success(), "{}", text(&output.stderr));
    let grant: Value = login(&server.address, "bob", "bob password 1")
        .await
        .json()
        .await
        .unwrap();
    let token = grant["access_token"].as_str().unwrap().to_owned();
    let authz = |permission: &str| {
        reqwest::Client::new()
            .get(format!(
                "{}/v1/authz?permission={permission}",
                server.address
            ))
            .bearer_auth(&token)
            .send()
    };
    assert_eq!(authz("edit").await.unwrap().status(), StatusCode::FORBIDDEN);

    assert!(ok(&["user", "grant-role", "bob", "editor"]).contains("roles editor,user"));
    assert_eq!(
        authz("edit").await.unwrap().status(),
        StatusCode::OK,
        "the same token: the check reads live state"
    );
    ok(&["role", "grant", "editor", "publish"]);
    assert_eq!(authz("publish").await.unwrap().status(), StatusCode::OK);
    ok(&["role", "revoke", "editor", "edit"]);
    assert_eq!(authz("edit").await.unwrap().status(), StatusCode::FORBIDDEN);
    assert!(refused(&["role", "revoke", "editor", "edit"]).contains("permission"));
    ok(&["user", "revoke-role", "bob", "editor"]);
    assert_eq!(
        authz("publish").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert!(refused(&["user", "revoke-role", "bob", "editor"]).contains("does not hold"));
    assert!(refused(&["user", "grant-role", "bob", "nope"]).contains("no role"));

    assert!(refused(&["role", "remove", "user"]).contains("built-in"));
    ok(&["role", "remove", "editor"]);
    assert!(!ok(&["role", "list"]).contains("editor"));
    assert!(refused(&["role", "remove", "editor"]).contains("not found"));

    // The first administrator is the only one: nothing may take it away.
    for args in [
        &["user", "disable", "admin"][..],
        &["user", "delete", "admin"],
        &["user", "revoke-role", "admin", "administrator"],
        &["role", "revoke", "administrator", "admin"],
    ] {
        let error = refused(args);
        assert!(
            error.contains("no active administrator"),
            "{args:?}: {error}"
        );
    }
    ok(&["user", "grant-role", "bob", "administrator"]);
    ok(&["user", "disable", "admin"]);
    assert!(refused(&["user", "disable", "bob"]).contains("no active administrator"));

    // A spent quota is reset from the CLI, and the running server sees it.
    ok(&["user", "set-quota", "bob", "1"]);
    let me = |token: String| {
        let url = format!("{}/v1/me", server.address);
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    // (On SQLite another process's change reaches the server when it next
    // re-reads the account's usage, within a second or two.)
    let deadline = Instant::now() + Duration::from_secs(5);
    while me(token.clone()).await != StatusCode::TOO_MANY_REQUESTS {
        assert!(
            Instant::now() < deadline,
            "the quota never reached the server"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok(&["user", "reset-quota", "bob"]).contains("reset to 0"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while me(token.clone()).await != StatusCode::OK {
        assert!(
            Instant::now() < deadline,
            "the reset never reached the server"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused(&["user", "reset-quota", "nobody"]).contains("not found"));

    let audit = ok(&["audit", "list", "--limit", "50"]);
    for event in [
        "role_created",
        "role_updated",
        "role_deleted",
        "roles_changed",
    ] {
        assert!(audit.contains(event), "{event} missing from\n{audit}");
    }
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_check_shows_the_settings_and_the_argon2_kernel() {
    let dir = Deployment::new().await;
    let output = run(sesame(&dir).args(["config", "check"]), None);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let shown = text(&output.stdout);
    assert!(shown.starts_with("configuration ok\n"), "{shown}");
    let kernel = shown
        .lines()
        .find_map(|l| l.strip_prefix("argon2 kernel: "))
        .expect("the kernel is named");
    assert!(
        ["avx512", "avx2", "sse2", "neon", "scalar"].contains(&kernel),
        "{kernel}"
    );
    assert!(shown.contains("argon2: argon2id m=256 KiB, t=1"), "{shown}");

    let invalid = run(
        sesame(&dir)
            .args(["config", "check"])
            .env("SESAME_QUOTAS__PERIOD", "weekly"),
        None,
    );
    assert_eq!(invalid.status.code(), Some(2));
    assert!(text(&invalid.stderr).contains("quotas.period"));

    // What only a start used to refuse: a database URL its store cannot
    // read, a key that is not the certificate's.
    let files = tempfile::tempdir().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let certificate = params
        .self_signed(&rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let (cert, key) = (files.path().join("cert.pem"), files.path().join("key.pem"));
    std::fs::write(&cert, certificate.pem()).unwrap();
    std::fs::write(&key, rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
    for (variables, complaint) in [
        (
            vec![(
                "SESAME_DATABASE_URL",
                "sqlite:///tmp/x.db?mode=rwc".to_owned(),
            )],
            "query parameters are not supported",
        ),
        (
            vec![
                ("SESAME_TLS_CERT", cert.display().to_string()),
                ("SESAME_TLS_KEY", key.display().to_string()),
            ],
            "tls: the key in",
        ),
    ] {
        let refused = run(sesame(&dir).args(["config", "check"]).envs(variables), None);
        assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
        assert!(
            text(&refused.stderr).contains(complaint),
            "{complaint}: {}",
            text(&refused.stderr)
        );
        assert!(!text(&refused.stdout).contains("configuration ok"));
    }

    // A pair that loads but has expired: a start would serve it, so the
    // check passes, saying so.
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.not_before = time::macros::datetime!(2000-01-01 0:00 UTC);
    params.not_after = time::macros::datetime!(2001-01-01 0:00 UTC);
    let pair = rcgen::KeyPair::generate().unwrap();
    std::fs::write(&cert, params.self_signed(&pair).unwrap().pem()).unwrap();
    std::fs::write(&key, pair.serialize_pem()).unwrap();
    let expired = run(
        sesame(&dir).args(["config", "check"]).envs([
            ("SESAME_TLS_CERT", cert.display().to_string()),
            ("SESAME_TLS_KEY", key.display().to_string()),
        ]),
        None,
    );
    assert!(expired.status.success(), "{}", text(&expired.stderr));
    assert!(
        text(&expired.stderr).contains("expired at 2001-01-01T00:00:00Z: clients refuse it"),
        "{}",
        text(&expired.stderr)
    );

    // The server names the same kernel when it starts.
    let server = serve(&dir, &[]);
    let (_, log) = server.stop();
    assert!(log.contains(&format!("argon2 kernel: {kernel}")), "{log}");
}

/// `sesame client`: registration with a generated or given secret (only the
/// hash is kept), listing, showing, replacing the secret and removing; bad
/// input names the mistake and changes nothing.
#[tokio::test]
async fn clients_are_managed_from_the_command_line() {
    let dir = Deployment::new().await;
    let added = run(
        sesame(&dir).args([
            "client",
            "add",
            "web",
            "--redirect-uri",
            "https://app.example/cb",
            "--grant",
            "authorization_code",
            "--grant",
            "client_credentials",
        ]),
        None,
    );
    assert!(added.status.success(), "{}", text(&added.stderr));
    let stdout = text(&added.stdout);
    let secret = stdout
        .lines()
        .find_map(|l| l.strip_prefix("client_secret: "))
        .expect("the secret is printed once")
        .to_owned();
    assert_eq!(secret.len(), 43);
    let given = "a-secret-chosen-by-the-operator-0123456789";
    let public = run(
        sesame(&dir).args([
            "client",
            "add",
            "spa",
            "--secret-stdin",
            "--redirect-uri",
            "https://spa.example/cb",
        ]),
        Some(&format!("{given}\n")),
    );
    assert!(public.status.success(), "{}", text(&public.stderr));
    assert!(
        !text(&public.stdout).contains(given),
        "a given secret is not echoed"
    );

    for (args, complaint) in [
        (
            vec![
                "client",
                "add",
                "web",
                "--redirect-uri",
                "https://x.example/cb",
            ],
            "client_id is already taken",
        ),
        (
            vec![
                "client",
                "add",
                "bad",
                "--redirect-uri",
                "http://app.example/cb",
            ],
            "loopback",
        ),
        (
            vec![
                "client",
                "add",
                "bad",
                "--public",
                "--grant",
                "password",
                "--redirect-uri",
                "https://x.example/cb",
            ],
            "public client",
        ),
        (
            vec!["client", "add", "bad", "--grant", "implicit"],
            "implicit",
        ),
        (vec!["client", "add", "bad"], "at least one redirect URI"),
        (vec!["client", "show", "nobody"], "client not found"),
    ] {
        let output = run(sesame(&dir).args(&args), None);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(
            text(&output.stderr).contains(complaint),
            "{args:?}: {}",
            text(&output.stderr)
        );
    }
    let short = run(
        sesame(&dir).args(["client", "set-secret", "web", "--secret-stdin"]),
        Some("short\n"),
    );
    assert!(text(&short.stderr).contains("32 to 256 characters"));

    let list = run(sesame(&dir).args(["client", "list", "--json"]), None);
    let clients: Vec<Value> = text(&list.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(clients.len(), 2);
    assert_eq!(clients[1]["client_id"], "web");
    assert_eq!(clients[1]["type"], "confidential");
    assert_eq!(
        clients[1]["grants"],
        json!(["authorization_code", "client_credentials"])
    );
    assert!(
        !text(&list.stdout).contains(&secret),
        "secrets are never listed"
    );

    // The secret works at the token endpoint; a replaced one stops working.
    let server = serve(&dir, &[]);
    let grant = |secret: String| {
        let url = format!("{}/oauth2/token", server.address);
        async move {
            reqwest::Client::new()
                .post(url)
                .basic_auth("web", Some(secret))
                .form(&[("grant_type", "client_credentials")])
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(grant(secret.clone()).await, StatusCode::OK);
    let replaced = run(sesame(&dir).args(["client", "set-secret", "web"]), None);
    let new_secret = text(&replaced.stdout)
        .trim()
        .strip_prefix("client_secret: ")
        .unwrap()
        .to_owned();
    assert_eq!(grant(secret).await, StatusCode::UNAUTHORIZED);
    assert_eq!(grant(new_secret.clone()).await, StatusCode::OK);
    let removed = run(sesame(&dir).args(["client", "remove", "web"]), None);
    assert!(removed.status.success());
    assert_eq!(grant(new_secret).await, StatusCode::UNAUTHORIZED);
}

/// With a key-encryption key, signing keys are sealed at rest: `keys list`
/// says so, the stored bytes are not the key, and a start without the key
/// (or with another) is refused with a message that names the fix.
#[tokio::test]
async fn signing_keys_are_sealed_with_the_key_encryption_key() {
    let dir = Deployment::new().await;
    let kek = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let first = run(
        sesame(&dir)
            .env("SESAME_KEY_ENCRYPTION_KEY", kek)
            .args(["keys", "rotate"]),
        None,
    );
    assert!(first.status.success(), "{}", text(&first.stderr));
    let listed = run(
        sesame(&dir)
            .env("SESAME_KEY_ENCRYPTION_KEY", kek)
            .args(["keys", "list"]),
        None,
    );
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    assert!(
        text(&listed.stdout).contains("encrypted"),
        "{}",
        text(&listed.stdout)
    );
    let stored = dir.open_store().await.signing_keys().await.unwrap();
    assert!(stored[0].private_der.starts_with(b"sesame-aes256gcm-v1:"));

    let without = run(sesame(&dir).args(["keys", "list"]), None);
    assert!(!without.status.success());
    assert!(
        text(&without.stderr).contains("SESAME_KEY_ENCRYPTION_KEY"),
        "{}",
        text(&without.stderr)
    );
    let other = run(
        sesame(&dir)
            .env("SESAME_KEY_ENCRYPTION_KEY", "f".repeat(64))
            .args(["keys", "list"]),
        None,
    );
    assert!(!other.status.success());
    assert!(
        text(&other.stderr).contains("does not open"),
        "{}",
        text(&other.stderr)
    );
    let malformed = run(
        sesame(&dir)
            .env("SESAME_KEY_ENCRYPTION_KEY", "not-a-key-secret-value")
            .args(["keys", "list"]),
        None,
    );
    assert_eq!(malformed.status.code(), Some(2));
    assert!(
        !text(&malformed.stderr).contains("not-a-key-secret-value"),
        "the value is never echoed"
    );

    // A server with the key signs tokens that verify; rotation seals the new key too.
    let rotated = run(
        sesame(&dir)
            .env("SESAME_KEY_ENCRYPTION_KEY", kek)
            .args(["keys", "rotate"]),
        None,
    );
    assert!(
        text(&rotated.stdout).contains("encrypted"),
        "{}",
        text(&rotated.stdout)
    );
    let server = serve(&dir, &[("SESAME_KEY_ENCRYPTION_KEY", kek)]);
    let jwks: Value = reqwest::get(format!("{}/.well-known/jwks.json", server.address))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    // The server made the secret that names login names in the limiter:
    // sealed too.
    let secret = dir
        .open_store()
        .await
        .deployment_secret("limiter-names", &[0; 32], 0)
        .await
        .unwrap();
    assert!(secret.starts_with(b"sesame-aes256gcm-v1:"));
}

/// An operator's command makes no signing key: not on a fresh database
/// (the first server start makes it), nor when its configuration names
/// another `tokens.algorithm` than the servers' (they would publish a key
/// nobody signs with). `keys rotate` still makes one, on purpose.
#[tokio::test]
async fn operator_commands_make_no_signing_key() {
    let dir = Deployment::new().await;
    let listed = run(sesame(&dir).args(["keys", "list"]), None);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    assert!(
        text(&listed.stderr).contains("no signing key yet"),
        "{}",
        text(&listed.stderr)
    );
    assert!(
        dir.open_store()
            .await
            .signing_keys()
            .await
            .unwrap()
            .is_empty()
    );

    let server = serve(&dir, &[]);
    let jwks = || async {
        let jwks: Value = reqwest::get(format!("{}/.well-known/jwks.json", server.address))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        jwks["keys"].as_array().unwrap().len()
    };
    assert_eq!(jwks().await, 1);
    let mut command = sesame(&dir);
    command.env("SESAME_TOKENS__ALGORITHM", "RS256").args([
        "user",
        "add",
        "--username",
        "otheralg",
        "--password-stdin",
    ]);
    let added = run(&mut command, Some("a long enough passphrase 1\n"));
    assert!(added.status.success(), "{}", text(&added.stderr));
    let listed = run(
        sesame(&dir)
            .env("SESAME_TOKENS__ALGORITHM", "RS256")
            .args(["keys", "list"]),
        None,
    );
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let algorithms = || async {
        let stored = dir.open_store().await.signing_keys().await.unwrap();
        stored.into_iter().map(|k| k.algorithm).collect::<Vec<_>>()
    };
    assert_eq!(algorithms().await, ["EdDSA"]);
    assert_eq!(jwks().await, 1);
    let rotated = run(sesame(&dir).args(["keys", "rotate"]), None);
    assert!(rotated.status.success(), "{}", text(&rotated.stderr));
    assert_eq!(algorithms().await, ["EdDSA", "EdDSA"]);
}

/// Unknown `SESAME_*` variables (Kubernetes' SESAME_PORT and friends, a
/// script's own) are not mistakes: one warning each, naming the closest
/// key, and Sesame starts. An unknown key in the file still is one.
/// `config check` shows every key's value and source, secrets redacted.
#[tokio::test]
async fn unknown_sesame_variables_warn_and_config_check_names_sources() {
    let dir = Deployment::new().await;
    let output = run(
        sesame(&dir)
            .args(["config", "check"])
            .env("SESAME_PORT", "tcp://10.0.0.7:8420")
            .env("SESAME_SERVICE_HOST", "10.0.0.7")
            .env("SESAME_TOKEN__ACCESS_TTL", "5")
            .env("SESAME_TOKENS__ACCESS_TTL", "99")
            .env("SESAME_KEY_ENCRYPTION_KEY", "ab".repeat(32))
            .env("SESAME_SESSIONS__PLATFORMS__IOS", "single"),
        None,
    );
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "warning: SESAME_TOKEN__ACCESS_TTL is not a configuration key and is ignored \
             (the closest is SESAME_TOKENS__ACCESS_TTL)"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: SESAME_PORT is not a configuration key"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("SESAME_SESSIONS__PLATFORMS__IOS"),
        "a map's keys are any"
    );
    let line = |key: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(key))
            .unwrap_or_else(|| panic!("{key} missing: {stdout}"))
            .to_owned()
    };
    assert!(
        line("tokens.access_ttl").contains("99")
            && line("tokens.access_ttl").ends_with("environment")
    );
    assert!(line("tokens.leeway").ends_with("default"));
    assert!(line("key_encryption_key").contains("(redacted)"));
    assert!(!stdout.contains(&"ab".repeat(32)), "the key is never shown");

    // The server starts with them too.
    let server = serve(&dir, &[("SESAME_PORT", "tcp://10.0.0.7:8420")]);
    let (_, log) = server.stop();
    assert!(
        log.contains("SESAME_PORT is not a configuration key"),
        "{log}"
    );

    let file = dir.path().join("sesame.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:0\"\n[tokens]\naccess_tll = 5\n",
    )
    .unwrap();
    let typo = run(
        sesame(&dir)
            .args(["config", "check"])
            .arg("--config")
            .arg(&file),
        None,
    );
    assert_eq!(typo.status.code(), Some(2));
    assert!(
        text(&typo.stderr).contains("access_tll"),
        "{}",
        text(&typo.stderr)
    );
}

/// Passwords in URLs and values the configuration refuses are never
/// repeated: not by `--help`, `config check`, nor the refusal itself.
#[tokio::test]
async fn configuration_never_repeats_a_secret_or_a_refused_value() {
    let dir = Deployment::new().await;
    // A password with an unencoded `/` (which the PostgreSQL driver does
    // not read: `config check` says so, as a start would), and the same
    // password encoded.
    let unencoded = "postgres://sesame:Ab/hunter2+ef@127.0.0.1:1/sesame";
    let encoded = "postgres://sesame:Ab%2Fhunter2+ef@127.0.0.1:1/sesame";
    for (command, url, status) in [
        (vec!["--help"], unencoded, Some(0)),
        (vec!["user", "--help"], unencoded, Some(0)),
        (vec!["config", "check"], unencoded, Some(2)),
        (vec!["config", "check"], encoded, Some(0)),
    ] {
        let output = run(
            sesame(&dir)
                .args(&command)
                .env("SESAME_DATABASE_URL", url)
                .env("SESAME_REDIS_URL", "redis://:hunter2@127.0.0.1:1"),
            None,
        );
        let shown = format!("{}{}", text(&output.stdout), text(&output.stderr));
        assert_eq!(output.status.code(), status, "{command:?}: {shown}");
        assert!(!shown.contains("hunter2"), "{command:?}: {shown}");
    }
    // A whole section set from one variable is no key: ignored, with a
    // warning, and its value (a password here) not repeated.
    let section = run(
        sesame(&dir)
            .args(["config", "check"])
            .env("SESAME_REDIS", "redis://:hunter2@127.0.0.1:1"),
        None,
    );
    let stderr = text(&section.stderr);
    assert!(section.status.success(), "{stderr}");
    assert!(
        stderr.contains("SESAME_REDIS is not a configuration key"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
    // A wrong type, and a TOML line that does not parse: the key and the
    // line, never the value.
    let wrong_type = run(
        sesame(&dir)
            .args(["config", "check"])
            .env("SESAME_TOKENS__ACCESS_TTL", "hunter2"),
        None,
    );
    let stderr = text(&wrong_type.stderr);
    assert_eq!(wrong_type.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("tokens.access_ttl"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    // An empty variable (an unset `${VAR}` in a compose file) does not
    // quietly empty a list: it is refused; `[]` says "none".
    let empty = run(
        sesame(&dir)
            .args(["config", "check"])
            .env("SESAME_PROFILE__PROTECTED", ""),
        None,
    );
    let stderr = text(&empty.stderr);
    assert_eq!(empty.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("profile.protected"), "{stderr}");
    let none = run(
        sesame(&dir)
            .args(["config", "check"])
            .env("SESAME_PROFILE__PROTECTED", "[]"),
        None,
    );
    assert!(none.status.success(), "{}", text(&none.stderr));
    let file = dir.path().join("unquoted.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:0\"\nkey_encryption_key = hunter2abc\n",
    )
    .unwrap();
    let unquoted = run(
        sesame(&dir)
            .args(["config", "check"])
            .arg("--config")
            .arg(&file),
        None,
    );
    let stderr = text(&unquoted.stderr);
    assert_eq!(unquoted.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("line 2"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

/// Platform names keep their case from the environment as from the file:
/// `iOS` and `ios` are two platforms.
#[tokio::test]
async fn a_platform_policy_from_the_environment_keeps_the_platforms_case() {
    let dir = Deployment::new().await;
    add_user(&dir, &["--username", "ada"], crate::helpers::PASSWORD);
    let server = serve(&dir, &[("SESAME_SESSIONS__PLATFORMS__iOS", "single")]);
    let sign_in = |platform: &'static str| {
        let address = server.address.clone();
        async move {
            let grant: Value = reqwest::Client::new()
                .post(format!("{address}/v1/login"))
                .json(&json!({"login": "ada", "password": crate::helpers::PASSWORD, "platform": platform}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            grant["access_token"].as_str().unwrap().to_owned()
        }
    };
    let me = |token: String| {
        let address = server.address.clone();
        async move {
            reqwest::Client::new()
                .get(format!("{address}/v1/me"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let first = sign_in("iOS").await;
    let second = sign_in("iOS").await;
    assert_eq!(me(second).await, StatusCode::OK);
    assert_eq!(me(first).await, StatusCode::UNAUTHORIZED, "iOS is single");
    let lower = sign_in("ios").await;
    let _ = sign_in("ios").await;
    assert_eq!(me(lower).await, StatusCode::OK, "ios is another platform");
}

/// A stopping server keeps answering for `http.drain_seconds`, with
/// `/readyz` at 503 (`shutdown`), so that a load balancer takes it out
/// before it closes; then it exits cleanly.
#[tokio::test]
async fn a_stopping_server_is_unready_while_it_drains() {
    let dir = Deployment::new().await;
    let server = serve(&dir, &[("SESAME_HTTP__DRAIN_SECONDS", "2")]);
    let ready = reqwest::get(format!("{}/readyz", server.address))
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["checks"]["database"], "ok");
    let stop_sent = Instant::now();
    Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    let mut unready = None;
    while stop_sent.elapsed() < Duration::from_millis(1500) {
        if let Ok(response) = reqwest::get(format!("{}/readyz", server.address)).await
            && response.status() == StatusCode::SERVICE_UNAVAILABLE
        {
            unready = Some(response.json::<Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let unready = unready.expect("readyz turns 503 while draining");
    assert_eq!(unready["failing"], json!(["shutdown"]), "{unready}");
    // The signal already sent ends it (a second would stop it at once).
    let mut server = server;
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "never stopped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
    assert!(
        stop_sent.elapsed() >= Duration::from_secs(2),
        "it drained first"
    );
}

/// A second stop signal during a long drain ends the process at once,
/// with the signal's exit status and a warning that says what was skipped;
/// not one that comes with the first (one stop often sends two).
#[tokio::test]
async fn a_second_stop_signal_stops_at_once() {
    let dir = Deployment::new().await;
    let server = serve(&dir, &[("SESAME_HTTP__DRAIN_SECONDS", "60")]);
    let interrupt = || {
        Command::new("kill")
            .args(["-INT", &server.child.id().to_string()])
            .status()
            .unwrap()
    };
    let first = Instant::now();
    interrupt();
    interrupt();
    // Draining: still serving, unready.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = reqwest::get(format!("{}/readyz", server.address))
            .await
            .unwrap();
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        assert!(Instant::now() < deadline, "readyz never turned 503");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(2100).saturating_sub(first.elapsed())).await;
    let response = reqwest::get(format!("{}/readyz", server.address)).await;
    assert_eq!(
        response.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "still draining: the signal sent with the first did not stop it"
    );
    let second = Instant::now();
    interrupt();
    let mut server = server;
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            second.elapsed() < Duration::from_secs(10),
            "still running after the second signal"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(130), "{status:?}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut server.child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("second stop signal"), "{stderr}");
}

/// A stop signal while the server is still starting (here waiting for a
/// database another process holds) stops it there, cleanly.
#[tokio::test]
async fn a_stop_signal_while_starting_stops_there() {
    let dir = Deployment::new().await;
    let created = run(sesame(&dir).args(["role", "list"]), None);
    assert!(created.status.success(), "{}", text(&created.stderr));
    let held = dir.hold().await;
    let address = format!("127.0.0.1:{}", crate::helpers::free_port());
    let mut child = sesame(&dir)
        .args(["serve", "--listen", &address])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "it waits for the database"
    );
    assert!(!healthy(&address), "not serving yet");
    let signalled = Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(5),
            "still starting after the signal"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    drop(held);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{status:?}: {stderr}");
    assert!(stderr.contains("stopped while starting"), "{stderr}");
}

/// One log line per request (method, route template, status, latency,
/// client, request id; JSON with log_format = "json"), and at debug level,
/// across the faces, not one of the secrets the requests carried.
#[tokio::test]
async fn requests_are_logged_without_a_secret_even_at_debug_level() {
    let dir = Deployment::new().await;
    let password = "correct horse battery staple 77";
    assert!(
        add_user(&dir, &["--username", "logged"], password)
            .status
            .success()
    );
    let server = serve(
        &dir,
        &[("SESAME_LOG", "debug"), ("SESAME_LOG_FORMAT", "json")],
    );
    let client = reqwest::Client::new();
    let login = client
        .post(format!("{}/v1/login", server.address))
        .header("x-request-id", "trace-42.a_b")
        .json(&json!({"login": "logged", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.headers()["x-request-id"], "trace-42.a_b");
    let grant: Value = login.json().await.unwrap();
    let access = grant["access_token"].as_str().unwrap().to_owned();
    let refresh = grant["refresh_token"].as_str().unwrap().to_owned();
    let me = client
        .get(format!("{}/v1/me", server.address))
        .bearer_auth(&access)
        .header("x-request-id", "evil\tid")
        .send()
        .await
        .unwrap();
    let generated = me.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(
        generated != "evil\tid" && generated.contains('-'),
        "an insane id is replaced: {generated}"
    );
    let refreshed: Value = client
        .post(format!("{}/v1/refresh", server.address))
        .json(&json!({"refresh_token": refresh}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let careyshop = client
        .get(format!(
            "{}/api/v1/user/method/login.user.user/?username=logged&password={}&platform=web",
            server.address,
            password.replace(' ', "%20")
        ))
        .send()
        .await
        .unwrap();
    let careyshop: Value = careyshop.json().await.unwrap();
    let _ = client
        .get(format!("{}/v1/me/{}", server.address, access))
        .send()
        .await
        .unwrap();
    let (_, log) = server.stop();
    let lines: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let request = lines
        .iter()
        .find(|l| l["fields"]["request_id"] == "trace-42.a_b")
        .unwrap_or_else(|| panic!("no request line: {log}"));
    assert_eq!(request["target"], "sesame::request");
    assert_eq!(request["fields"]["route"], "/v1/login");
    assert_eq!(request["fields"]["method"], "POST");
    assert_eq!(request["fields"]["status"], 200);
    assert_eq!(request["fields"]["client"], "127.0.0.1");
    assert!(request["fields"]["latency_ms"].is_f64());
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["request_id"] == generated.as_str())
    );
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["route"] == "-" && l["fields"]["status"] == 404),
        "an unknown path is logged without the path"
    );
    let mut secrets = vec![
        password.to_owned(),
        password.replace(' ', "%20"),
        access.clone(),
        refresh,
        refreshed["access_token"].as_str().unwrap().to_owned(),
        refreshed["refresh_token"].as_str().unwrap().to_owned(),
    ];
    for field in ["token", "refresh_token", "access_token"] {
        if let Some(token) = careyshop["data"][field].as_str() {
            secrets.push(token.to_owned());
        }
    }
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "a secret is in the log:\n{log}"
        );
    }
    // The JWT's signature alone would be enough to matter.
    assert!(!log.contains(access.rsplit('.').next().unwrap()));
}

/// A server raises its soft limit on open files to the hard one: under the
/// usual soft limit (1024 in containers and systemd units), idle
/// connections from one host would exhaust the descriptors that logins
/// need (a database connection, a SQLite reader) long before
/// `http.max_connections`.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_server_raises_its_open_file_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    use std::os::unix::process::CommandExt;
    let deployment = Deployment::new().await;
    let hard = getrlimit(Resource::Nofile).maximum;
    let mut command = sesame(&deployment);
    // SAFETY: only a system call between fork and exec.
    unsafe {
        command.pre_exec(move || {
            setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(256),
                    maximum: hard,
                },
            )
            .map_err(std::io::Error::from)
        });
    }
    let server = crate::helpers::ServerProcess::start(command);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.child.id())).unwrap();
    let open_files: Vec<&str> = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect();
    let wanted = hard.unwrap_or(1 << 20).min(1 << 20);
    assert_eq!(open_files[3], wanted.to_string(), "{limits}");
    server.stop();
}

/// `keys rotate` from the command line deletes no key, however long ago
/// one retired by its own settings (which need not be the servers': a
/// file without `[tokens]` has the default lifetime); servers delete
/// keys retired twice their retention.
#[tokio::test]
async fn an_operators_rotation_deletes_no_key() {
    use sesame::core::roles::Actor;
    let dir = Deployment::new().await;
    let mut raw = sesame::config::RawConfig::default();
    dir.apply(&mut raw);
    let config = raw.validate().unwrap();
    let clock = Arc::new(sesame::clock::ManualClock::new(crate::helpers::START));
    let command = sesame::app::open_core(&config, clock.clone())
        .await
        .unwrap();
    let first = command.rotate_keys(&Actor::Operator, false).await.unwrap();
    for _ in 0..2 {
        clock.advance(30 * 86_400);
        command.rotate_keys(&Actor::Operator, false).await.unwrap();
    }
    command.reload_keys().await.unwrap();
    let kids: Vec<String> = command
        .signing_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert_eq!(kids.len(), 3, "{kids:?}");
    assert!(kids.contains(&first.kid));
}

/// An operator's command sets up a new database, but refuses one whose
/// schema is behind instead of upgrading it behind the servers' backs;
/// `sesame migrate` is the way.
#[tokio::test]
async fn a_command_refuses_a_schema_behind_instead_of_upgrading_it() {
    let dir = Deployment::new().await;
    let fresh = run(sesame(&dir).args(["role", "list"]), None);
    assert!(fresh.status.success(), "{}", text(&fresh.stderr));
    let latest = dir.schema_version(None).await;
    assert!(latest >= 10, "set up: {latest}");
    let export = dir.path().join("export.jsonl");
    let exported = run(sesame(&dir).args(["export", "--output"]).arg(&export), None);
    assert!(exported.status.success(), "{}", text(&exported.stderr));
    assert_eq!(dir.schema_version(Some(latest - 1)).await, latest - 1);
    // A dry run changes nothing, so it cannot read a schema behind either.
    let dry = run(
        sesame(&dir).args(["import", "--dry-run"]).arg(&export),
        None,
    );
    assert!(!dry.status.success());
    assert!(
        text(&dry.stderr)
            .contains("changes nothing, so it cannot read it: run `sesame migrate` first"),
        "{}",
        text(&dry.stderr)
    );
    let refused = run(sesame(&dir).args(["role", "list"]), None);
    assert!(!refused.status.success());
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains("does not upgrade a database in service")
            && stderr.contains("run `sesame migrate`"),
        "{stderr}"
    );
    assert_eq!(dir.schema_version(None).await, latest - 1, "left as it was");
}

/// An operator's command that finds no SQLite database where it looks
/// (another directory, the server's --config left out) says that it made a
/// new one, instead of quietly working on it.
#[tokio::test]
async fn a_command_says_when_it_made_a_new_database() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("SESAME_DATA_DIR", dir.path().display().to_string())];
    let first = run(sesame_command(env.clone()).args(["keys", "list"]), None);
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(
        text(&first.stderr).contains("no database was there: this command made a new one"),
        "{}",
        text(&first.stderr)
    );
    let again = run(sesame_command(env).args(["keys", "list"]), None);
    assert!(
        !text(&again.stderr).contains("no database was there"),
        "{}",
        text(&again.stderr)
    );
}
