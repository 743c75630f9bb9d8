//! Schemathesis (PyPI) fuzzes a live `sesame serve` against the OpenAPI
//! description it serves: every operation, with generated valid and
//! invalid input, signed in as an administrator (tests/schemathesis/
//! hooks.py). No answer may be a server error, and every answer must
//! conform to the description: status, content type, headers and schema.
//! Bounded in time (`SESAME_FUZZ_SECONDS`, default 100 s on SQLite and
//! 40 s on each server backend). `.ci/run` creates the venv; without it (a
//! local run) the test says "skipped", and on CI it fails.

use std::path::PathBuf;
use std::process::Command;

use crate::helpers::{Backend, Deployment, ServerProcess, backend, sesame_command};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

const PASSWORD: &str = "fuzzing administrator's password";

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_description() {
    let Some(st) = crate::helpers::installed(
        root().join("tests/schemathesis/.venv/bin/st"),
        "schemathesis",
    ) else {
        return;
    };
    let seconds = std::env::var("SESAME_FUZZ_SECONDS").unwrap_or_else(|_| {
        match backend() {
            Backend::Sqlite => "100",
            Backend::Postgres | Backend::PostgresRedis => "40",
        }
        .to_owned()
    });
    let deployment = Deployment::new().await;
    // Accounts for the admin routes to find (the fuzzer's own
    // administrators are made by the hooks, through the CLI).
    for name in ["ann", "bob", "cy", "dee", "eve"] {
        let mut add = sesame_command(deployment.env());
        add.args(["user", "add", "--username", name, "--password-stdin"]);
        let mut child = add
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(PASSWORD.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "user add {name}");
    }
    let mut serve = sesame_command(deployment.env());
    // The fuzzer sends many wrong passwords from 127.0.0.1; the
    // administrator must still be able to sign in again.
    serve.env("SESAME_ABUSE__ADDRESS_BURST", "10000");
    let server = ServerProcess::start(serve);

    let reports = root().join("target/schemathesis");
    std::fs::create_dir_all(&reports).unwrap();
    let junit = reports.join(format!("{:?}.xml", backend()).to_lowercase());
    let sign_in_log = reports.join(format!("{:?}-sign-in.log", backend()).to_lowercase());
    let _ = std::fs::remove_file(&sign_in_log);
    let output = tokio::task::spawn_blocking({
        let url = server.address.clone();
        let mut command = Command::new(&st);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", reports.as_os_str())
            .env("PYTHONPATH", root().join("tests/schemathesis"))
            .env("SCHEMATHESIS_HOOKS", "hooks")
            .env("FUZZ_URL", &url)
            .env("FUZZ_PASSWORD", PASSWORD)
            .env("FUZZ_SESAME", env!("CARGO_BIN_EXE_sesame"))
            .envs(deployment.env())
            .env("SESAME_PASSWORDS__MEMORY_KIB", "256")
            .env("SESAME_PASSWORDS__ITERATIONS", "1")
            .env("FUZZ_LOG", &sign_in_log)
            .args(["run", &format!("{url}/openapi.json")])
            // One worker: with two, Hypothesis describes its strategies by
            // parsing their source in both threads at once, and CPython 3.11
            // (the CI machine's) can fail that with "AST constructor
            // recursion depth mismatch" (python/cpython#106905), an error of
            // the tool's own that fails the run with nothing wrong in Sesame.
            .args(["--max-time", &seconds, "--workers", "1"])
            .args(
                std::env::var("SESAME_FUZZ_SEED")
                    .ok()
                    .map(|seed| ["--seed".to_owned(), seed])
                    .into_iter()
                    .flatten(),
            )
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,\
                 response_headers_conformance,response_schema_conformance",
            ])
            .args(["--report", "junit", "--report-junit-path"])
            .arg(&junit)
            .current_dir(root());
        move || command.output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems ({}):\n{stdout}\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        std::fs::read_to_string(&sign_in_log).unwrap_or_default()
    );
    server.stop();
    // It did reach the routes behind the administrator's token: the admin
    // API changed things (each change is audited under its face).
    let events = deployment
        .open_store()
        .await
        .list_audit_events(&sesame::store::AuditQuery {
            face: Some("admin_api".into()),
            limit: 100_000,
            ..Default::default()
        })
        .await
        .unwrap();
    let changes: std::collections::BTreeSet<&str> = events
        .iter()
        .filter(|e| e.outcome == "success")
        .map(|e| e.event.as_str())
        .collect();
    assert!(
        changes.len() >= 3,
        "the fuzzer's administrator changed too little through the admin API: {changes:?}\n{stdout}"
    );
}
