//! Accounts imported with the password hashes of their old systems: every
//! format of tests/fixtures/foreign/hashes.jsonl (each made by the format's
//! reference implementation, see generate.py there) imported through the
//! real `sesame import`, signed in through two faces, replaced by Argon2id at
//! the first sign-in (and audited), refused with a wrong password.

use std::io::Write;
use std::process::Stdio;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, sesame_command};

fn fixtures() -> Vec<Value> {
    let root = env!("CARGO_MANIFEST_DIR");
    std::fs::read_to_string(format!("{root}/tests/fixtures/foreign/hashes.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

const HEADER: &str =
    r#"{"format": "sesame-export", "version": 1, "exported_at": "2026-01-01T00:00:00Z"}"#;

fn account_line(id: i64, username: &str, row: &Value) -> String {
    let mut line = json!({
        "type": "account",
        "id": id,
        "username": username,
        "password_hash": row["password_hash"],
        "created_at": 1_700_000_000,
    });
    for field in ["password_hash_format", "password_salt"] {
        if let Some(value) = row.get(field) {
            line[field] = value.clone();
        }
    }
    line.to_string()
}

/// Runs `sesame import -` with `lines` (after the header) and `args`.
fn import(app: &TestApp, lines: &[String], args: &[&str]) -> std::process::Output {
    let mut child = sesame_command(app.deployment.env())
        .arg("import")
        .args(args)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = format!("{HEADER}\n");
    for line in lines {
        input.push_str(line);
        input.push('\n');
    }
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

async fn stored_hash(app: &TestApp, username: &str) -> String {
    app.core
        .find_by_username(username)
        .await
        .unwrap()
        .verifiers
        .password_hash
}

#[tokio::test]
async fn every_foreign_format_signs_in_through_two_faces_and_becomes_argon2id() {
    // One wrong password per format, all from this one address: a budget
    // large enough for them (throttling is not under test here).
    let app = TestApp::spawn_with(|raw| raw.abuse.address_burst = 1000).await;
    let rows = fixtures();
    assert!(rows.len() >= 25, "fixtures missing");
    // Two accounts per format: one signs in through the native API, the
    // other through the ai-gateway face; each meets the foreign hash.
    let mut plain = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let name = row["name"].as_str().unwrap();
        let id = 1000 + 2 * i as i64;
        let lines = vec![
            account_line(id, &format!("n-{name}"), row),
            account_line(id + 1, &format!("g-{name}"), row),
        ];
        if let Some(template) = row.get("template").and_then(Value::as_str) {
            let output = import(&app, &lines, &["--template", template]);
            assert!(
                output.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        } else if let Some(firebase) = row.get("firebase") {
            let (rounds, mem_cost) = (
                firebase["rounds"].to_string(),
                firebase["mem_cost"].to_string(),
            );
            let args = [
                "--firebase-signer-key",
                firebase["signer_key"].as_str().unwrap(),
                "--firebase-salt-separator",
                firebase["salt_separator"].as_str().unwrap(),
                "--firebase-rounds",
                &rounds,
                "--firebase-mem-cost",
                &mem_cost,
            ];
            let output = import(&app, &lines, &args);
            assert!(
                output.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        } else {
            plain.extend(lines);
        }
    }
    let output = import(&app, &plain, &[]);
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Every hash not yet replaced moves on as it is: an export of this
    // deployment checks clean against another (Django's `argon2$…` too).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("moved.jsonl");
    let exported = sesame_command(app.deployment.env())
        .args(["export", "--output"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(exported.status.success());
    let elsewhere = TestApp::spawn().await;
    let checked = sesame_command(elsewhere.deployment.env())
        .args(["import", "--dry-run"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    for row in &rows {
        let name = row["name"].as_str().unwrap();
        let password = row["password"].as_str().unwrap();
        let native = format!("n-{name}");
        let gateway = format!("g-{name}");
        let before = stored_hash(&app, &native).await;
        // Stored as imported until the owner signs in (Argon2i/d and
        // Django's Argon2 are Argon2 already; clear passwords are hashed).
        let fixture = row["password_hash"].as_str().unwrap();
        if !fixture.starts_with("$argon2") && !fixture.starts_with("argon2$") && name != "clear" {
            assert!(
                !before.starts_with("$argon2id$"),
                "{name}: replaced before any sign-in"
            );
        }
        if name == "clear" {
            assert!(
                before.starts_with("$argon2id$"),
                "a clear password is hashed at import"
            );
            assert!(!before.contains(password));
        }
        // A wrong password fails and changes nothing.
        assert_eq!(
            app.login(&native, "not the password").await.status(),
            StatusCode::UNAUTHORIZED,
            "{name}"
        );
        assert_eq!(stored_hash(&app, &native).await, before, "{name}");

        let response = app.login(&native, password).await;
        assert_eq!(response.status(), StatusCode::OK, "{name}: native sign-in");
        let response = app
            .post_json(
                "/api/v1/login",
                &json!({"username": gateway, "password": password}),
            )
            .await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "{name}: ai-gateway sign-in"
        );
        for username in [&native, &gateway] {
            let after = stored_hash(&app, username).await;
            assert!(
                after.starts_with("$argon2id$"),
                "{name}: {username} still holds {after:.12}"
            );
            let account = app.core.find_by_username(username).await.unwrap();
            assert!(
                account.verifiers.md5_verifier.is_some(),
                "{name}: the MD5 verifier is written"
            );
        }
        // And again, now against Argon2id.
        assert_eq!(app.login(&native, password).await.status(), StatusCode::OK);
    }

    let events = app
        .core
        .audit_events(&sesame::store::AuditQuery {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    let rehashed: Vec<_> = events.iter().filter(|e| e.event == "rehashed").collect();
    // Every format but the clear one (Argon2id at import; and Argon2i/d,
    // which are rehashed as outdated parameters, not as foreign hashes).
    assert!(
        rehashed.len() >= 2 * (rows.len() - 4),
        "{} rehashed",
        rehashed.len()
    );
    assert!(
        rehashed
            .iter()
            .any(|e| e.detail.as_deref().is_some_and(|d| d.contains("bcrypt")))
    );
    assert!(rehashed.iter().any(|e| e.face == "ai-gateway"));
}

#[tokio::test]
async fn malformed_or_refused_hashes_are_refused_at_import_with_a_reason() {
    let app = TestApp::spawn().await;
    let cases = [
        (
            json!({"password_hash": "$2x$10$abcdefghijklmnopqrstuu5s2v8.iXieOjg/.AySBTTZIIVFJeBui"}),
            "PHP bug",
        ),
        (
            json!({"password_hash": "$2b$31$abcdefghijklmnopqrstuu5s2v8.iXieOjg/.AySBTTZIIVFJeBui"}),
            "cost",
        ),
        (json!({"password_hash": "$2b$10$short"}), "53 characters"),
        (
            // A 7-byte salt: every sign-in was an internal error.
            json!({"password_hash": "$argon2id$v=19$m=64,t=1,p=1$MTIzNDU2Nw$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}),
            "a salt of 7 bytes",
        ),
        (
            json!({"password_hash": "5f4dcc3b5aa765d61d8327deb882cf99"}),
            "name it with password_hash_format",
        ),
        (
            json!({"password_hash": "pbkdf2_sha256$abc$salt$hash"}),
            "rounds",
        ),
        (
            json!({"password_hash": "$6$rounds=10$salt$hash"}),
            "sha-crypt",
        ),
        (json!({"password_hash": "$P$Xabc"}), "phpass"),
        (
            json!({"password_hash": "bm90IGEgaGFzaA==", "password_hash_format": "aspnet-identity"}),
            "aspnet-identity",
        ),
        (
            json!({"password_hash": "o8zLbdX25Tzhe/1/+lCNE5OvZRw=", "password_hash_format": "aspnet-membership-sha1"}),
            "passwordSalt",
        ),
        (
            json!({"password_hash": "abc", "password_hash_format": "template"}),
            "--template",
        ),
        (
            json!({"password_hash": "abc", "password_hash_format": "rot13"}),
            "unknown",
        ),
        (
            json!({"password_hash": "$scrypt$ln=16,r=8$c2FsdA$aGFzaA"}),
            "ln, r and p",
        ),
        (
            json!({"password_hash": "$scrypt$ln=20,r=64,p=1$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}),
            "64 MiB",
        ),
        (
            json!({"password_hash": "$pbkdf2-sha256$many$c2FsdA$aGFzaA"}),
            "iteration",
        ),
        (
            json!({"password_hash": "$pbkdf2-sha512$1000$c2FsdA$aGFzaA"}),
            "10 to 128 bytes",
        ),
        (
            json!({"password_hash": "bcrypt_sha256$$2b$05$tooshort"}),
            "53 characters",
        ),
        (
            json!({"password_hash": "scrypt$1000$salt$8$1$aGFzaA=="}),
            "power of two",
        ),
        (
            json!({"password_hash": "$1$saltsaltsalt$short"}),
            "md5-crypt",
        ),
        (json!({"password_hash": "$apr1$salt$"}), "md5-crypt"),
        (json!({"password_hash": "$5$salt$tooshort"}), "sha-crypt"),
        (json!({"password_hash": "$S$Dshort"}), "55 characters"),
        (
            json!({"password_hash": "$H$Zabcdefgh0123456789012345678901"}),
            "iteration",
        ),
        (
            json!({"password_hash": "AAAAAA==", "password_hash_format": "aspnet-membership-sha256", "password_salt": "c2FsdA=="}),
            "32 bytes",
        ),
        (
            json!({"password_hash": "aGFzaA==", "password_hash_format": "firebase-scrypt"}),
            "--firebase-signer-key",
        ),
        (
            json!({"password_hash": "", "password_hash_format": "clear"}),
            "empty clear password",
        ),
        (
            json!({"password_hash": "argon2$argon2id$v=19$m=999999999,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"}),
            "password_hash",
        ),
    ];
    for (i, (fields, reason)) in cases.iter().enumerate() {
        let mut line =
            json!({"type": "account", "id": 10 + i, "username": format!("u{i}"), "created_at": 1});
        for (key, value) in fields.as_object().unwrap() {
            line[key] = value.clone();
        }
        let output = import(&app, &[line.to_string()], &[]);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned()
            + &String::from_utf8_lossy(&output.stdout);
        assert!(!output.status.success(), "case {i} imported");
        assert!(stderr.contains(reason), "case {i}: {stderr}");
        let hash = fields["password_hash"].as_str().unwrap();
        if hash.len() > 8 {
            assert!(!stderr.contains(hash), "case {i}: the hash is echoed");
        }
    }
    let bad_template = import(&app, &[], &["--template", "md5(password + )"]);
    assert_eq!(bad_template.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_template.stderr).contains("at character 16"));
}

/// CareyShop's own digest, imported with its template, signs in through the
/// CareyShop face itself.
#[tokio::test]
async fn the_careyshop_template_signs_in_through_the_careyshop_face() {
    let app = TestApp::spawn().await;
    let row = fixtures()
        .into_iter()
        .find(|r| r["name"] == "template-careyshop")
        .unwrap();
    let output = import(
        &app,
        &[account_line(500, "shopper", &row)],
        &["--template", row["template"].as_str().unwrap()],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let response = app
        .client
        .post(app.url("/api/v1/user/method/login.user.user/"))
        .form(&[
            ("username", "shopper"),
            ("password", row["password"].as_str().unwrap()),
            ("platform", "web"),
        ])
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], 200, "{body}");
    assert!(stored_hash(&app, "shopper").await.starts_with("$argon2id$"));
}

/// The old system hashed the bytes typed; Sesame takes passwords in NFC. A
/// password typed with a decomposed accent (as some keyboards type it)
/// still matches its imported hash, which is replaced by Argon2id of the
/// NFC form: from then on either form signs in.
#[tokio::test]
async fn a_password_typed_decomposed_matches_its_imported_hash() {
    use md5::{Digest, Md5};
    let app = TestApp::spawn().await;
    let typed = "cafe\u{301} cre\u{300}me bru\u{302}le\u{301}e";
    let row = json!({
        "password_hash": hex::encode(Md5::digest(typed.as_bytes())),
        "password_hash_format": "template",
    });
    let output = import(
        &app,
        &[account_line(600, "chef", &row)],
        &["--template", "md5(password)"],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let composed = "caf\u{e9} cr\u{e8}me br\u{fb}l\u{e9}e";
    assert_ne!(typed, composed);
    assert_eq!(
        app.login("chef", composed).await.status(),
        StatusCode::UNAUTHORIZED,
        "the old system never saw these bytes"
    );
    assert_eq!(app.login("chef", typed).await.status(), StatusCode::OK);
    assert!(stored_hash(&app, "chef").await.starts_with("$argon2id$"));
    assert_eq!(app.login("chef", composed).await.status(), StatusCode::OK);
    assert_eq!(app.login("chef", typed).await.status(), StatusCode::OK);
}

/// Operators see who still holds an imported hash (CLI and admin API) and
/// can expire the old ones: those accounts then need a new password.
#[tokio::test]
async fn legacy_hashes_are_counted_and_old_ones_expired() {
    let app = TestApp::spawn().await;
    let rows = fixtures();
    let row = |name: &str| rows.iter().find(|r| r["name"] == name).unwrap().clone();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut old_bcrypt =
        serde_json::from_str::<Value>(&account_line(900, "old-bcrypt", &row("bcrypt-2b"))).unwrap();
    old_bcrypt["password_changed_at"] = json!(1_700_000_000);
    let mut recent_phpass =
        serde_json::from_str::<Value>(&account_line(901, "recent-phpass", &row("phpass-P")))
            .unwrap();
    recent_phpass["password_changed_at"] = json!(now - 86_400);
    let mut signs_in =
        serde_json::from_str::<Value>(&account_line(902, "signs-in", &row("crypt-sha512")))
            .unwrap();
    signs_in["password_changed_at"] = json!(now - 86_400);
    let signs_in = signs_in.to_string();
    let output = import(
        &app,
        &[old_bcrypt.to_string(), recent_phpass.to_string(), signs_in],
        &[],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let password = row("bcrypt-2b")["password"].as_str().unwrap().to_owned();
    // A session of the old account, which the expiry must end.
    let session = app.login_ok_with("old-bcrypt", &password).await;
    // (That sign-in replaced its hash: import it again under another name.)
    let mut old_again = old_bcrypt.clone();
    old_again["id"] = json!(903);
    old_again["username"] = json!("old-bcrypt-2");
    assert!(import(&app, &[old_again.to_string()], &[]).status.success());
    let old_session = app.login_ok_with("old-bcrypt-2", &password).await;
    let mut old_third = old_bcrypt.clone();
    old_third["id"] = json!(904);
    old_third["username"] = json!("never-signed-in");
    assert!(import(&app, &[old_third.to_string()], &[]).status.success());
    drop((session, old_session));

    let listed = sesame_command(app.deployment.env())
        .args(["user", "list", "--legacy"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(
        listed.contains("bcrypt") && listed.contains("phpass") && listed.contains("sha512-crypt"),
        "{listed}"
    );

    app.create_user_full("root", None, None, &["administrator"])
        .await;
    let admin = app.login_ok("root").await;
    let counts: Value = app
        .get("/v1/admin/legacy-passwords", crate::helpers::access(&admin))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(counts["by_format"]["bcrypt"], 1, "{counts}");
    assert_eq!(counts["total"], 3, "{counts}");

    let expired = sesame_command(app.deployment.env())
        .args(["user", "expire-legacy", "--older-than", "180d"])
        .output()
        .unwrap();
    assert!(
        expired.status.success(),
        "{}",
        String::from_utf8_lossy(&expired.stderr)
    );
    assert!(String::from_utf8_lossy(&expired.stdout).starts_with("1 account"));
    assert_eq!(
        app.login("never-signed-in", &password).await.status(),
        StatusCode::UNAUTHORIZED,
        "an expired hash matches nothing"
    );
    let phpass_password = row("phpass-P")["password"].as_str().unwrap().to_owned();
    assert_eq!(
        app.login("recent-phpass", &phpass_password).await.status(),
        StatusCode::OK
    );
    let counts: Value = app
        .get("/v1/admin/legacy-passwords", crate::helpers::access(&admin))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        counts["by_format"],
        json!({"expired": 1, "sha512-crypt": 1}),
        "{counts}"
    );
    for bad in ["soon", "5é", "é", ""] {
        let bad_age = sesame_command(app.deployment.env())
            .args(["user", "expire-legacy", "--older-than", bad])
            .output()
            .unwrap();
        assert_eq!(bad_age.status.code(), Some(2), "{bad:?}");
        let stderr = String::from_utf8_lossy(&bad_age.stderr);
        assert!(
            stderr.contains("a number followed by d, h or s"),
            "{bad:?}: {stderr}"
        );
    }
}

/// 100,000 bcrypt accounts stream in (no hashing at import); without a
/// terminal the progress is a plain line every 10,000 lines. (100,000 is the
/// size of the SQLite target; the PostgreSQL binaries prove the same path
/// with 20,000, which keeps CI's time bounded: a debug build with a
/// savepoint per line imports ~1,300 a second there.)
#[tokio::test]
async fn a_hundred_thousand_bcrypt_accounts_import_with_plain_progress_lines() {
    let app = TestApp::spawn().await;
    let total: usize = match crate::helpers::backend() {
        crate::helpers::Backend::Sqlite => 100_000,
        _ => 20_000,
    };
    let bcrypt = fixtures()
        .into_iter()
        .find(|r| r["name"] == "bcrypt-2y")
        .unwrap();
    let hash = bcrypt["password_hash"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.jsonl");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    writeln!(file, "{HEADER}").unwrap();
    for i in 1..=total {
        writeln!(
            file,
            r#"{{"type": "account", "id": {i}, "username": "user{i}", "password_hash": "{hash}", "created_at": 1700000000}}"#
        )
        .unwrap();
    }
    file.flush().unwrap();
    drop(file);
    let started = std::time::Instant::now();
    let output = sesame_command(app.deployment.env())
        .arg("import")
        .arg(&path)
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    eprintln!(
        "{total} accounts imported in {:?} (debug build)",
        started.elapsed()
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stdout.contains(&format!("imported {total} accounts"))
            && stdout.contains(&format!("bcrypt {total}")),
        "{stdout}"
    );
    let progress: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("progress: "))
        .collect();
    assert_eq!(progress.len(), total / 10_000, "{stderr}");
    assert!(
        progress[0].starts_with("progress: 10001 lines read, 10000 accounts"),
        "{}",
        progress[0]
    );
    assert!(progress.iter().all(|l| l.ends_with("lines/s")));
    let password = bcrypt["password"].as_str().unwrap();
    assert_eq!(
        app.login(&format!("user{total}"), password).await.status(),
        StatusCode::OK
    );
}

/// CSV with a header row (an ASP.NET Membership table here), profile
/// columns by name; running the import again with --on-conflict skip adds
/// nothing and refuses nothing, while the default refuses the duplicates.
#[tokio::test]
async fn a_csv_export_imports_and_a_second_run_skips_what_is_there() {
    let app = TestApp::spawn().await;
    let rows = fixtures();
    let membership = rows
        .iter()
        .find(|r| r["name"] == "aspnet-membership-sha1")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("members.csv");
    let csv = format!(
        "id,username,email,password_hash,password_salt,password_hash_format,created_at,nickname,gender\n\
         1,ana,ana@example.com,{hash},{salt},aspnet-membership-sha1,1700000000,\"Ana, the first\",f\n\
         2,ben,,{hash},{salt},aspnet-membership-sha1,1700000000,Ben,\n\
         3,bad,,{hash},,aspnet-membership-sha1,1700000000,,\n\
         oops,cat,,{hash},{salt},aspnet-membership-sha1,1700000000,,\n",
        hash = membership["password_hash"].as_str().unwrap(),
        salt = membership["password_salt"].as_str().unwrap(),
    );
    std::fs::write(&path, csv).unwrap();
    let run = |extra: &[&str]| {
        sesame_command(app.deployment.env())
            .args(["import", "--format", "csv"])
            .args(extra)
            .arg(&path)
            .output()
            .unwrap()
    };
    let first = run(&[]);
    let stdout = String::from_utf8_lossy(&first.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&first.stderr).into_owned();
    assert_eq!(first.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("imported 2 accounts") && stdout.contains("2 lines refused"),
        "{stdout}"
    );
    assert!(
        stderr.contains("line 4: account bad: password_salt"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 5: id: not a whole number"),
        "{stderr}"
    );
    let ana = app.core.find_by_username("ana").await.unwrap();
    assert_eq!(ana.email.as_deref(), Some("ana@example.com"));
    let profile: Value = app
        .post_json(
            "/v1/login",
            &json!({"login": "ana", "password": membership["password"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(profile["access_token"].is_string(), "{profile}");
    let me: Value = app
        .get("/v1/me", profile["access_token"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["profile"]["nickname"], "Ana, the first", "{me}");
    assert_eq!(me["profile"]["gender"], "f");

    let again = run(&[]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("id is already taken"));
    let skipped = run(&["--on-conflict", "skip"]);
    let stdout = String::from_utf8_lossy(&skipped.stdout).into_owned();
    assert!(
        stdout.contains("imported 0 accounts") && stdout.contains("2 lines already there, skipped"),
        "{stdout}"
    );
    let no_header = dir.path().join("bare.csv");
    std::fs::write(&no_header, "1,ana\n").unwrap();
    let bare = sesame_command(app.deployment.env())
        .args(["import", "--format", "csv"])
        .arg(&no_header)
        .output()
        .unwrap();
    assert_eq!(bare.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bare.stderr).contains("no id column"));
    // A column named twice: neither value would be sure to count.
    let twice = dir.path().join("twice.csv");
    std::fs::write(
        &twice,
        "id,username,password_hash,created_at,status,status\n1,ana,x,1,disabled,active\n",
    )
    .unwrap();
    let refused = sesame_command(app.deployment.env())
        .args(["import", "--format", "csv"])
        .arg(&twice)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("names the column \"status\" twice"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // A record that cannot be read (a quoted field running on past 1 MiB,
    // over many lines) stops the import at the line it starts at, after
    // the lines before it are imported and summed up: resumed from that
    // line, nothing is lost.
    let runaway = dir.path().join("runaway.csv");
    let text = format!(
        "id,username,email,password_hash,password_salt,password_hash_format,created_at,nickname\n\
         7,dan,,{hash},{salt},aspnet-membership-sha1,1700000000,Dan\n\
         8,eve,,{hash},{salt},aspnet-membership-sha1,1700000000,Eve\n\
         9,fay,,{hash},{salt},aspnet-membership-sha1,1700000000,\"{long}\n",
        hash = membership["password_hash"].as_str().unwrap(),
        salt = membership["password_salt"].as_str().unwrap(),
        long = "x\n".repeat(1 << 20),
    );
    std::fs::write(&runaway, text).unwrap();
    let stopped = sesame_command(app.deployment.env())
        .args(["import", "--format", "csv"])
        .arg(&runaway)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&stopped.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&stopped.stderr).into_owned();
    assert_eq!(stopped.status.code(), Some(2), "{stdout}{stderr}");
    assert!(stderr.contains("cannot read line 4:"), "{stderr}");
    assert!(stdout.contains("imported 2 accounts"), "{stdout}");
    for name in ["dan", "eve"] {
        app.core.find_by_username(name).await.unwrap();
    }
}

/// `--on-conflict update` replaces the accounts that have the lines' ids
/// (profile and roles included) on every node's next read; it never takes
/// a username or email of another account, never leaves no administrator,
/// and a dry run of it writes nothing.
#[tokio::test]
async fn an_update_replaces_accounts_that_are_there() {
    let app = TestApp::spawn().await;
    let root = app
        .create_user_full("root", None, None, &["administrator"])
        .await;
    let rows = fixtures();
    let bcrypt = rows.iter().find(|r| r["name"] == "bcrypt-2b").unwrap();
    let hash = bcrypt["password_hash"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.csv");
    let write = |body: &str| {
        std::fs::write(
            &path,
            format!("id,username,email,password_hash,created_at,nickname,roles\n{body}"),
        )
        .unwrap();
    };
    let run = |extra: &[&str]| {
        let output = sesame_command(app.deployment.env())
            .args(["import", "--format", "csv"])
            .args(extra)
            .arg(&path)
            .output()
            .unwrap();
        (
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    write(&format!(
        "100,ana,ana@example.com,{hash},1700000000,Ana,user\n101,ben,ben@example.com,{hash},1700000000,Ben,user\n"
    ));
    let (stdout, _) = run(&[]);
    assert!(stdout.contains("imported 2 accounts"), "{stdout}");
    // The account is read (and cached) before the update.
    let password = bcrypt["password"].as_str().unwrap();
    let grant = app.login_ok_with("ana", password).await;

    write(&format!(
        "100,ana,ana@new.example,{hash},1700000000,Ana B.,user\n\
         101,ben,ana@new.example,{hash},1700000000,Ben,user\n\
         {},root,,{hash},1700000000,,user\n\
         102,cat,cat@example.com,{hash},1700000000,Cat,user\n",
        root.id
    ));
    // A dry run checks each update against the database as it is (not
    // against earlier lines, nor the administrator rule, which only the
    // write can see).
    let (stdout, stderr) = run(&["--on-conflict", "update", "--dry-run"]);
    assert!(
        stdout.contains("would import 1 account") && stdout.contains("3 accounts would be updated"),
        "{stdout}{stderr}"
    );
    assert_eq!(
        app.core
            .find_by_username("ana")
            .await
            .unwrap()
            .email
            .as_deref(),
        Some("ana@example.com"),
        "a dry run writes nothing"
    );

    let (stdout, stderr) = run(&["--on-conflict", "update"]);
    assert!(
        stdout.contains("imported 1 account") && stdout.contains("1 account updated"),
        "{stdout}{stderr}"
    );
    assert!(
        stderr.contains("line 3: account ben: email is already taken"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 4: account root:") && stderr.contains("administrator"),
        "{stderr}"
    );
    let me: Value = app
        .get("/v1/me", crate::helpers::access(&grant))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["email"], "ana@new.example", "{me}");
    assert_eq!(me["profile"]["nickname"], "Ana B.");
    assert!(
        app.core
            .find_by_username("root")
            .await
            .unwrap()
            .roles
            .contains(&"administrator".to_owned())
    );

    // A line giving an id another username is another person: the
    // previous owner's sessions end (a same-username update kept ana's).
    let cats = app.login_ok_with("cat", password).await;
    write(&format!(
        "102,dan,dan@example.com,{hash},1700000000,Dan,user\n"
    ));
    let (stdout, stderr) = run(&["--on-conflict", "update"]);
    assert!(stdout.contains("1 account updated"), "{stdout}{stderr}");
    assert_eq!(
        app.get("/v1/me", crate::helpers::access(&cats))
            .await
            .status(),
        StatusCode::UNAUTHORIZED,
        "cat's session does not carry over to dan"
    );
    assert_eq!(
        app.get("/v1/me", crate::helpers::access(&grant))
            .await
            .status(),
        StatusCode::OK
    );

    // A file that gives id 102 to eve, with eve's session: the dry run and
    // the import agree on it, it joins her account, and dan's ends.
    use sha2::{Digest, Sha256};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    app.clock.advance(now - crate::helpers::START + 60);
    let dans = app.login_ok_with("dan", password).await;
    let eves_token = "eve-refresh-token-from-the-old-system";
    let file = dir.path().join("eve.jsonl");
    let lines = [
        json!({"format": "sesame-export", "version": 2, "exported_at": "2026-12-01T00:00:00Z"}),
        json!({"type": "account", "id": 102, "username": "eve", "password_hash": hash,
               "created_at": 1_700_000_000}),
        json!({"type": "session", "id": "2b9a8c7d-5555-4666-8777-c88899900011",
               "account_id": 102, "username": "eve", "platform": "web", "token_style": "jwt",
               "created_at": now - 10, "expires_at": now + 86_400,
               "refresh_tokens": [{"hash": hex::encode(Sha256::digest(eves_token)),
                                   "issued_at": now - 10}]}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&file, text).unwrap();
    let import = |dry: bool| {
        let mut command = sesame_command(app.deployment.env());
        command.args(["import", "--on-conflict", "update"]);
        if dry {
            command.arg("--dry-run");
        }
        let output = command.arg(&file).output().unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr)
    };
    let checked = import(true);
    assert!(
        checked.contains("would import 0 accounts and 1 session")
            && checked.contains("1 account would be updated"),
        "{checked}"
    );
    let imported = import(false);
    assert!(
        imported.contains("imported 0 accounts and 1 session")
            && imported.contains("1 account updated"),
        "{imported}"
    );
    assert_eq!(app.refresh(eves_token).await.status(), StatusCode::OK);
    assert_eq!(
        app.get("/v1/me", crate::helpers::access(&dans))
            .await
            .status(),
        StatusCode::UNAUTHORIZED,
        "dan's session ended with the update"
    );
}
