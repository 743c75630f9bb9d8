//! Third-party clients against a real `sesame serve`: the Python suite
//! (Authlib, PyJWT, Selenium driving Debian's Chromium) and the Node script
//! (panva's openid-client) in tests/oidc/. `.ci/run` creates their venv and
//! installs their npm packages from the committed lockfile; without them
//! (a local run) the test says "skipped", and on CI it fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::helpers::{Deployment, ServerProcess, backend, installed, sesame_command};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What the suites need to find the server and run its CLI on the same
/// database: the deployment's variables, cheap hashing, the binary.
fn client_command(
    program: &Path,
    deployment: &Deployment,
    server: &ServerProcess,
    home: &Path,
) -> Command {
    let mut command = Command::new(program);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .envs(deployment.env())
        .env("SESAME_PASSWORDS__MEMORY_KIB", "256")
        .env("SESAME_PASSWORDS__ITERATIONS", "1")
        .env("OIDC_ISSUER", &server.address)
        .env("OIDC_SESAME_BIN", env!("CARGO_BIN_EXE_sesame"))
        .current_dir(root());
    command
}

fn assert_success(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn python_clients_and_a_real_browser_complete_the_flows() {
    let Some(python) = installed(
        root().join("tests/oidc/.venv/bin/python"),
        "the Python venv",
    ) else {
        return;
    };
    let deployment = Deployment::new().await;
    let server = ServerProcess::start(sesame_command(deployment.env()));
    let home = tempfile::tempdir().unwrap();
    let artifacts = root().join(format!("target/oidc-artifacts/{:?}", backend()).to_lowercase());
    std::fs::create_dir_all(&artifacts).unwrap();
    let output = tokio::task::spawn_blocking({
        let mut command = client_command(&python, &deployment, &server, home.path());
        command.env("OIDC_ARTIFACTS", &artifacts).args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/oidc",
        ]);
        move || command.output().expect("pytest runs")
    })
    .await
    .unwrap();
    assert_success("the Python suite", &output);
    server.stop();
}

#[tokio::test]
async fn openid_client_completes_the_code_flow() {
    let Some(_) = installed(
        root().join("tests/oidc/node/node_modules/openid-client"),
        "openid-client (npm ci)",
    ) else {
        return;
    };
    let deployment = Deployment::new().await;
    let server = ServerProcess::start(sesame_command(deployment.env()));
    let home = tempfile::tempdir().unwrap();
    let output = tokio::task::spawn_blocking({
        let mut command = client_command(Path::new("node"), &deployment, &server, home.path());
        command.arg("tests/oidc/node/code_flow.mjs");
        move || command.output().expect("node runs")
    })
    .await
    .unwrap();
    assert_success("the openid-client script", &output);
    assert!(String::from_utf8_lossy(&output.stdout).contains("ok"));
    server.stop();
}
