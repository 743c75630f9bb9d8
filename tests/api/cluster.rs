//! Several `sesame serve` processes on one PostgreSQL database (and one
//! Redis, in the `api_redis` binary) behaving as one service. Compiled into
//! the PostgreSQL binaries only (`postgres.rs`, `redis.rs`): SQLite is one
//! process by design.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sesame::store::Store;

use crate::helpers::{Backend, Deployment, PASSWORD, ServerProcess, backend, sesame_command};

/// One node: a `sesame serve` child process.
type Node = ServerProcess;

pub(crate) fn sesame(deployment: &Deployment, extra_env: &[(&str, &str)]) -> Command {
    let mut command = sesame_command(deployment.env());
    command
        // Cached answers would stay trusted for a minute: a refusal on
        // another node can then only come from a notice.
        .env("SESAME_SESSIONS__CACHE_TTL", "60")
        .env("SESAME_LOG", "warn")
        .envs(extra_env.iter().copied());
    command
}

/// Starts `n` nodes on the deployment and waits until each answers.
async fn cluster(deployment: &Deployment, n: usize, extra_env: &[(&str, &str)]) -> Vec<Node> {
    (0..n)
        .map(|_| ServerProcess::start(sesame(deployment, extra_env)))
        .collect()
}

/// Adds an account with the test password through the CLI (another process).
pub(crate) fn add_user(deployment: &Deployment, username: &str, extra: &[&str]) {
    use std::io::Write;
    let mut child = sesame(deployment, &[])
        .args(["user", "add", "--username", username, "--password-stdin"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

pub(crate) async fn login(
    client: &reqwest::Client,
    node: &Node,
    username: &str,
    password: &str,
) -> (StatusCode, Value) {
    let response = client
        .post(node.url("/v1/login"))
        .json(&json!({"login": username, "password": password}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub(crate) async fn me(client: &reqwest::Client, node: &Node, token: &str) -> StatusCode {
    client
        .get(node.url("/v1/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_one_node_works_on_all_and_a_logout_reaches_them_all() {
    let deployment = Deployment::new().await;
    add_user(&deployment, "alice", &[]);
    let nodes = cluster(&deployment, 3, &[]).await;
    let client = reqwest::Client::new();
    let (status, grant) = login(&client, &nodes[0], "alice", PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    let token = grant["access_token"].as_str().unwrap().to_owned();
    for node in &nodes {
        // Twice: the second answer comes from the node's cache.
        assert_eq!(me(&client, node, &token).await, StatusCode::OK);
        assert_eq!(me(&client, node, &token).await, StatusCode::OK);
    }

    let logout = client
        .post(nodes[0].url("/v1/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    let answered = Instant::now();
    // The window between the logout's answer and the last node refusing.
    let mut windows = Vec::new();
    for node in &nodes[1..] {
        loop {
            if me(&client, node, &token).await == StatusCode::UNAUTHORIZED {
                windows.push(answered.elapsed());
                break;
            }
            assert!(
                answered.elapsed() < Duration::from_secs(2),
                "a node still accepts a logged-out token (cache_ttl is 60 s: only a notice can end it)"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    eprintln!("revocation window (logout answered → refused on the other nodes): {windows:?}");

    // An operator's action in another process (the CLI) reaches every node too.
    let (_, grant) = login(&client, &nodes[1], "alice", PASSWORD).await;
    let token = grant["access_token"].as_str().unwrap().to_owned();
    for node in &nodes {
        assert_eq!(me(&client, node, &token).await, StatusCode::OK);
    }
    let disabled = sesame(&deployment, &[])
        .args(["user", "disable", "alice"])
        .output()
        .unwrap();
    assert!(disabled.status.success());
    let deadline = Instant::now() + Duration::from_secs(2);
    for node in &nodes {
        while me(&client, node, &token).await != StatusCode::UNAUTHORIZED {
            assert!(
                Instant::now() < deadline,
                "a node still serves a disabled account"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Forward auth reads permissions from each node's cache of accounts; a
/// change of an account's roles, and of a role's permissions, reaches every
/// node through a notice (cache_ttl is 60 s: nothing else could).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_changes_reach_every_nodes_forward_auth() {
    let deployment = Deployment::new().await;
    add_user(&deployment, "alice", &[]);
    let nodes = cluster(&deployment, 3, &[]).await;
    let client = reqwest::Client::new();
    let (_, grant) = login(&client, &nodes[0], "alice", PASSWORD).await;
    let token = grant["access_token"].as_str().unwrap().to_owned();
    let authz = |node: &Node| {
        let request = client
            .get(node.url("/v1/authz?permission=publish"))
            .bearer_auth(&token);
        async move { request.send().await.unwrap().status() }
    };
    let cli = |args: &[&str]| {
        let output = sesame(&deployment, &[]).args(args).output().unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let every_node_says = |wanted: StatusCode, what: &'static str| {
        let nodes = &nodes;
        async move {
            let deadline = Instant::now() + Duration::from_secs(2);
            for node in nodes {
                while authz(node).await != wanted {
                    assert!(
                        Instant::now() < deadline,
                        "{what}: a node still answers otherwise"
                    );
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    };
    for node in &nodes {
        // Twice: the second answer comes from the node's cache.
        assert_eq!(authz(node).await, StatusCode::FORBIDDEN);
        assert_eq!(authz(node).await, StatusCode::FORBIDDEN);
    }
    cli(&["role", "add", "publisher", "--permission", "publish"]);
    cli(&["user", "grant-role", "alice", "publisher"]);
    every_node_says(StatusCode::OK, "role granted").await;
    cli(&["role", "revoke", "publisher", "publish"]);
    every_node_says(StatusCode::FORBIDDEN, "permission taken from the role").await;
    cli(&["role", "grant", "publisher", "publish"]);
    every_node_says(StatusCode::OK, "permission given back").await;
    cli(&["role", "remove", "publisher"]);
    every_node_says(StatusCode::FORBIDDEN, "role deleted").await;
}

/// Forward auth answers opaque tokens from each node's cache too; a refresh
/// on one node (which replaces the session's opaque token) makes every
/// node refuse the old token, through a notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_opaque_token_is_refused_by_every_node() {
    let deployment = Deployment::new().await;
    add_user(&deployment, "dnyz529", &[]);
    let nodes = cluster(&deployment, 3, &[]).await;
    let client = reqwest::Client::new();
    let careyshop = |node: &Node, path: &str, query: Vec<(&'static str, String)>| {
        client.get(node.url(path)).query(&query).send()
    };
    let login: Value = careyshop(
        &nodes[0],
        "/api/v1/user/method/login.user.user/",
        vec![
            ("username", "dnyz529".into()),
            ("password", PASSWORD.into()),
            ("platform", "web".into()),
        ],
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let old = login["data"]["token"]["token"].as_str().unwrap().to_owned();
    let authz = |node: &Node, token: &str| {
        let request = client.get(node.url("/v1/authz")).bearer_auth(token);
        async move { request.send().await.unwrap().status() }
    };
    for node in &nodes {
        // Twice: the second answer comes from the node's cache.
        assert_eq!(authz(node, &old).await, StatusCode::OK);
        assert_eq!(authz(node, &old).await, StatusCode::OK);
    }
    let refreshed: Value = careyshop(
        &nodes[0],
        "/api/v1/user/method/refresh.token.user/",
        vec![(
            "refresh",
            login["data"]["token"]["refresh"].as_str().unwrap().into(),
        )],
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let new = refreshed["data"]["token"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(2);
    for node in &nodes {
        while authz(node, &old).await != StatusCode::UNAUTHORIZED {
            assert!(
                Instant::now() < deadline,
                "a node still accepts a replaced opaque token (cache_ttl is 60 s: only a notice can end it)"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(authz(node, &new).await, StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_refresh_token_at_three_nodes_at_once_yields_exactly_one_successor() {
    let deployment = Deployment::new().await;
    add_user(&deployment, "bob", &[]);
    let nodes = cluster(&deployment, 3, &[]).await;
    let client = reqwest::Client::new();
    for round in 0..5 {
        let (_, grant) = login(&client, &nodes[round % 3], "bob", PASSWORD).await;
        let refresh = grant["refresh_token"].as_str().unwrap().to_owned();
        let answers = join_all(nodes.iter().map(|node| {
            let request = client
                .post(node.url("/v1/refresh"))
                .json(&json!({"refresh_token": refresh}));
            async move {
                let response = request.send().await.unwrap();
                (response.status(), response.json::<Value>().await.unwrap())
            }
        }))
        .await;
        let successors: Vec<&str> = answers
            .iter()
            .map(|(status, body)| {
                assert_eq!(
                    *status,
                    StatusCode::OK,
                    "a concurrent retry within the grace window: {body}"
                );
                body["refresh_token"].as_str().unwrap()
            })
            .collect();
        assert!(
            successors.iter().all(|s| *s == successors[0]),
            "two different successors: {successors:?}"
        );
        let store: Arc<dyn Store> = deployment.open_store().await;
        let stored = store
            .find_refresh_token(&sha256(successors[0]))
            .await
            .unwrap()
            .expect("the successor is stored");
        assert!(stored.rotated_at.is_none());
        // The successor works once, anywhere.
        let next = client
            .post(nodes[2].url("/v1/refresh"))
            .json(&json!({"refresh_token": successors[0]}))
            .send()
            .await
            .unwrap();
        assert_eq!(next.status(), StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_logins_on_a_single_platform_across_nodes_leave_one_session() {
    let deployment = Deployment::new().await;
    add_user(&deployment, "carol", &[]);
    let nodes = cluster(
        &deployment,
        3,
        &[("SESAME_SESSIONS__DEFAULT_POLICY", "single")],
    )
    .await;
    let client = reqwest::Client::new();
    // Signed in once, this address is a client the account knows: nine
    // attempts at once from an unknown one would pass its failure budget
    // (five) only as fast as the first ones succeed and refund their charge
    // (abuse.rs), which is not what this test is about.
    assert_eq!(
        login(&client, &nodes[0], "carol", PASSWORD).await.0,
        StatusCode::OK
    );
    for _ in 0..3 {
        let grants =
            join_all((0..9).map(|i| login(&client, &nodes[i % 3], "carol", PASSWORD))).await;
        let tokens: Vec<String> = grants
            .iter()
            .map(|(status, grant)| {
                assert_eq!(*status, StatusCode::OK);
                grant["access_token"].as_str().unwrap().to_owned()
            })
            .collect();
        let store = deployment.open_store().await;
        let account = store
            .find_account_by_username("carol")
            .await
            .unwrap()
            .unwrap();
        let live_now = store.list_live_sessions(account.id, now()).await.unwrap();
        assert_eq!(live_now.len(), 1, "exactly one live session: {live_now:?}");
        // Every node agrees: exactly one of the nine tokens still works.
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let mut working = 0;
            for (i, token) in tokens.iter().enumerate() {
                if me(&client, &nodes[(i + 1) % 3], token).await == StatusCode::OK {
                    working += 1;
                }
            }
            if working == 1 {
                break;
            }
            assert!(Instant::now() < deadline, "{working} tokens still work");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accounts_failure_budget_holds_across_nodes() {
    let deployment = Deployment::new().await;
    add_user(&deployment, "dave", &[]);
    let nodes = cluster(&deployment, 3, &[("SESAME_ABUSE__ACCOUNT_BURST", "5")]).await;
    let client = reqwest::Client::new();
    for i in 0..5 {
        let (status, _) = login(&client, &nodes[i % 3], "dave", "wrong guess!").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, _) = login(&client, &nodes[2], "dave", "wrong guess!").await;
    match backend() {
        // Shared budgets: the sixth guess is throttled wherever it lands.
        Backend::PostgresRedis => assert_eq!(status, StatusCode::TOO_MANY_REQUESTS),
        // Without Redis each node keeps its own budget (documented): node 3
        // has seen one guess, so it allows four more before throttling.
        _ => {
            assert_eq!(status, StatusCode::UNAUTHORIZED);
            for _ in 0..3 {
                login(&client, &nodes[2], "dave", "wrong guess!").await;
            }
            let (status, _) = login(&client, &nodes[2], "dave", "wrong guess!").await;
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        }
    }
    // An operator's unlock (the CLI: another process, with no budget of
    // its own) ends the throttling on every node, also what a node counted
    // on its own.
    let output = sesame(&deployment, &[])
        .args(["user", "unlock", "dave"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The throttled node first: once a login goes through, the address is
    // a known client of the account and skips its budget everywhere.
    for node in nodes.iter().rev() {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (status, _) = login(&client, node, "dave", PASSWORD).await;
            if status == StatusCode::OK {
                break;
            }
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
            assert!(
                Instant::now() < deadline,
                "still throttled on {}",
                node.address
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Guesses at a name that matches no account (often a password typed into
/// the login field) count against one budget on every node, as guesses at
/// an account do; and Redis, where that budget lives, holds neither the
/// name nor a plain digest of it that a reader could test guesses against:
/// only an HMAC under the deployment's secret, which is in the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_names_budget_holds_across_nodes_and_redis_never_sees_the_name() {
    let deployment = Deployment::new().await;
    let nodes = cluster(&deployment, 3, &[("SESAME_ABUSE__ACCOUNT_BURST", "5")]).await;
    let client = reqwest::Client::new();
    let typed = "Correct-Horse-Battery-7";
    for i in 0..5 {
        let (status, _) = login(&client, &nodes[i % 3], typed, "wrong guess!").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, _) = login(&client, &nodes[2], typed, "wrong guess!").await;
    let Some(prefix) = deployment.redis_prefix() else {
        // Without Redis each node keeps its own budget (documented).
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        return;
    };
    // Every node names the name alike: its budget is spent wherever the
    // sixth guess lands. The address's own budget is not (another name
    // from it is only refused).
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let (status, _) = login(&client, &nodes[2], "nobody-else", "wrong guess!").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let redis = redis::Client::open(crate::helpers::redis_url()).unwrap();
    let mut connection = redis::aio::ConnectionManager::new(redis).await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut connection)
        .await
        .unwrap();
    let names: Vec<&String> = keys
        .iter()
        .filter(|key| key.starts_with(&format!("{prefix}limit:login:")))
        .collect();
    assert_eq!(names.len(), 2, "one budget per name: {keys:?}");
    for form in [typed.to_owned(), typed.to_lowercase()] {
        let plain = hex::encode(&sha256(&form)[..16]);
        assert!(
            keys.iter()
                .all(|key| !key.contains(&plain) && !key.to_lowercase().contains("horse")),
            "{keys:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_call_quota_holds_for_the_cluster_within_the_documented_bound() {
    let deployment = Deployment::new().await;
    add_user(&deployment, "erin", &["--max-api-calls", "60"]);
    let nodes = cluster(&deployment, 3, &[("SESAME_SESSIONS__CACHE_TTL", "2")]).await;
    let client = reqwest::Client::new();
    let (_, grant) = login(&client, &nodes[0], "erin", PASSWORD).await;
    let token = grant["access_token"].as_str().unwrap().to_owned();
    // Each node takes 10 calls a second for 4 seconds: 120 calls for a quota of 60.
    let per_node_per_second = 10;
    let started = Instant::now();
    let mut admitted = 0;
    for tick in 0..40u32 {
        for node in &nodes {
            if me(&client, node, &token).await == StatusCode::OK {
                admitted += 1;
            }
        }
        let next = started + Duration::from_millis(100 * u64::from(tick + 1));
        tokio::time::sleep(next.saturating_duration_since(Instant::now())).await;
    }
    // The documented bound: what the other nodes admit in two flush
    // intervals (a node learns their counts at its next flush after theirs).
    let bound = 60 + (nodes.len() - 1) * per_node_per_second * 2;
    assert!(admitted >= 60, "the quota was not served: {admitted}");
    assert!(
        admitted <= bound,
        "{admitted} calls admitted; bound {bound}"
    );
    eprintln!("quota 60 over 3 nodes: {admitted} calls admitted (bound {bound})");
    // Once counts have settled, every node refuses.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for node in &nodes {
        assert_eq!(
            me(&client, node, &token).await,
            StatusCode::TOO_MANY_REQUESTS
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_under_load_loses_nothing_it_acknowledged() {
    let deployment = Deployment::new().await;
    for i in 0..4 {
        add_user(&deployment, &format!("user{i}"), &[]);
    }
    let mut nodes = cluster(&deployment, 3, &[]).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    // Logins and refreshes against node 0 from four clients, while it is killed.
    let victim = nodes[0].url("");
    let mut load = tokio::task::JoinSet::new();
    for i in 0..4 {
        let client = client.clone();
        let victim = victim.clone();
        load.spawn(async move {
            let mut acknowledged = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                let answer = client
                    .post(format!("{victim}/v1/login"))
                    .json(&json!({"login": format!("user{i}"), "password": PASSWORD}))
                    .send()
                    .await;
                let Ok(response) = answer else { break };
                if response.status() != StatusCode::OK {
                    continue;
                }
                let Ok(grant) = response.json::<Value>().await else {
                    break;
                };
                let refreshed = client
                    .post(format!("{victim}/v1/refresh"))
                    .json(&json!({"refresh_token": grant["refresh_token"]}))
                    .send()
                    .await;
                let Ok(refreshed) = refreshed else { break };
                let Ok(next) = refreshed.json::<Value>().await else {
                    break;
                };
                acknowledged.push((grant["session_id"].as_str().unwrap().to_owned(), next));
            }
            acknowledged
        });
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    nodes[0].child.kill().unwrap();
    nodes[0].child.wait().unwrap();
    let acknowledged: Vec<(String, Value)> = load.join_all().await.into_iter().flatten().collect();
    assert!(
        !acknowledged.is_empty(),
        "no request was answered before the kill"
    );
    let store = deployment.open_store().await;
    for (session_id, refreshed) in &acknowledged {
        let session = store.get_session(session_id).await.unwrap();
        assert!(session.is_some(), "an acknowledged session is gone");
        if let Some(token) = refreshed["refresh_token"].as_str() {
            assert!(
                store
                    .find_refresh_token(&sha256(token))
                    .await
                    .unwrap()
                    .is_some(),
                "an acknowledged refresh is gone"
            );
            // And the survivors serve it.
            let next = client
                .post(nodes[1].url("/v1/refresh"))
                .json(&json!({"refresh_token": token}))
                .send()
                .await
                .unwrap();
            assert_eq!(next.status(), StatusCode::OK);
        }
    }
    let (status, _) = login(&client, &nodes[2], "user0", PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    nodes.remove(0);
}

fn sha256(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// What the README shows of the example is what the example runs.
#[test]
fn the_readme_shows_the_cluster_example_as_it_is() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    for file in ["nginx.conf", "sesame.toml"] {
        let text = std::fs::read_to_string(format!("{root}/examples/cluster/{file}")).unwrap();
        assert!(
            readme.contains(&text),
            "README does not show examples/cluster/{file} as it is"
        );
    }
    let script = std::fs::read_to_string(format!("{root}/examples/cluster/run.sh")).unwrap();
    let start = script.find("# readme: begin\n").unwrap() + "# readme: begin\n".len();
    let end = script.find("# readme: end").unwrap();
    assert!(
        readme.contains(&script[start..end]),
        "README does not show the commands of examples/cluster/run.sh as they are"
    );
}

/// `sesame keys rotate` (another process) reaches every node through a
/// notice: each publishes the new key within moments (the periodic reload
/// is a minute) and signs on with the old one until the new one's time;
/// `keys rotate --now` has every node sign with the new key within moments.
/// Tokens signed with the old key keep working everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_signing_key_signs_on_every_node_without_a_restart() {
    let deployment = Deployment::new().await;
    add_user(&deployment, "alice", &[]);
    let nodes = cluster(&deployment, 3, &[]).await;
    let client = reqwest::Client::new();
    let (_, before) = login(&client, &nodes[0], "alice", PASSWORD).await;
    let old_token = before["access_token"].as_str().unwrap().to_owned();
    let old_kid = crate::helpers::jwt_part(&old_token, 0)["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    let rotate = |extra: &[&str]| {
        let rotated = sesame(&deployment, &[])
            .args(["keys", "rotate"])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            rotated.status.success(),
            "{}",
            String::from_utf8_lossy(&rotated.stderr)
        );
        let line = String::from_utf8_lossy(&rotated.stdout).into_owned();
        line.split_whitespace().next().unwrap().to_owned()
    };
    let published = |node: usize, kid: String| {
        let request = client.get(nodes[node].url("/.well-known/jwks.json"));
        async move {
            let jwks: Value = request.send().await.unwrap().json().await.unwrap();
            jwks["keys"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kid"] == kid.as_str())
        }
    };

    let ahead = rotate(&[]);
    let deadline = Instant::now() + Duration::from_secs(5);
    for (i, node) in nodes.iter().enumerate() {
        while !published(i, ahead.clone()).await {
            assert!(Instant::now() < deadline, "a node never published the key");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (_, grant) = login(&client, node, "alice", PASSWORD).await;
        let token = grant["access_token"].as_str().unwrap();
        assert_eq!(
            crate::helpers::jwt_part(token, 0)["kid"],
            old_kid.as_str(),
            "published ahead of signing"
        );
    }

    let new_kid = rotate(&["--now"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    for node in &nodes {
        loop {
            let jwks: Value = client
                .get(node.url("/.well-known/jwks.json"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let (_, grant) = login(&client, node, "alice", PASSWORD).await;
            let token = grant["access_token"].as_str().unwrap();
            let kid = crate::helpers::jwt_part(token, 0)["kid"]
                .as_str()
                .unwrap()
                .to_owned();
            let published = jwks["keys"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kid"] == new_kid.as_str());
            if published && kid == new_kid {
                // Verified by every node, including those that heard late.
                for other in &nodes {
                    assert_eq!(me(&client, other, token).await, StatusCode::OK);
                }
                break;
            }
            assert!(
                Instant::now() < deadline,
                "a node never took the rotated key"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            me(&client, node, &old_token).await,
            StatusCode::OK,
            "nobody is logged out"
        );
    }
}
