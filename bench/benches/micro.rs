//! Micro-benchmarks, so that regressions show without a server:
//! `cargo bench -p sesame-bench`.

use std::time::Duration;

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use sesame::core::domain::Password;
use sesame::core::keys::{KeyRing, SigningAlgorithm, generate};
use sesame::core::passwords::{HashingSettings, PasswordHasher};
use sesame::core::tokens::{AccessTokens, TokenSettings, hash_token, new_opaque_token};
use sesame::store::sqlite::SqliteStore;
use sesame::store::{
    AccountStore, LoginRecord, NewAccount, NewRefreshToken, NewSession, PasswordVerifiers,
    SessionStore, TokenStyle,
};

fn tokens(algorithm: SigningAlgorithm) -> AccessTokens {
    let key = generate(algorithm, 0).expect("key");
    let ring = KeyRing::load(&[key], algorithm)
        .expect("ring")
        .expect("signing key");
    AccessTokens::new(
        ring,
        TokenSettings {
            algorithm,
            ..TokenSettings::default()
        },
    )
}

fn jwt(c: &mut Criterion) {
    for algorithm in [
        SigningAlgorithm::EdDSA,
        SigningAlgorithm::ES256,
        SigningAlgorithm::RS256,
        SigningAlgorithm::HS256,
    ] {
        let t = tokens(algorithm);
        let roles = vec!["user".to_owned()];
        let permissions = vec!["read".to_owned()];
        c.bench_function(&format!("jwt sign {}", algorithm.as_str()), |b| {
            b.iter(|| {
                t.issue(black_box(42), "session", &roles, &permissions, 1_000)
                    .expect("sign")
            })
        });
        c.bench_function(
            &format!("jwt verify {} (first sight)", algorithm.as_str()),
            |b| {
                // A fresh token each time, so the verified-token memo never answers.
                b.iter_batched(
                    || {
                        t.issue(42, &uuid_like(), &roles, &permissions, 1_000)
                            .expect("sign")
                    },
                    |token| t.verify(&token, 1_000).expect("verify"),
                    criterion::BatchSize::SmallInput,
                )
            },
        );
        let token = t
            .issue(42, "session", &roles, &permissions, 1_000)
            .expect("sign");
        c.bench_function(
            &format!("jwt verify {} (seen before)", algorithm.as_str()),
            |b| b.iter(|| t.verify(black_box(&token), 1_000).expect("verify")),
        );
    }
}

fn uuid_like() -> String {
    new_opaque_token()
}

fn opaque_lookup(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("dir");
    let (store, token) = runtime.block_on(async {
        let store = SqliteStore::connect(&SqliteStore::url_for_data_dir(dir.path()))
            .await
            .expect("store");
        let account = store
            .create_account(NewAccount {
                username: "a".into(),
                username_key: "a".into(),
                email: None,
                email_key: None,
                mobile: None,
                display_name: String::new(),
                verifiers: PasswordVerifiers {
                    password_hash: "x".into(),
                    md5_verifier: None,
                },
                roles: vec!["user".into()],
                max_api_calls: 0,
                quota_period: None,
                profile: Default::default(),
                created_at: 0,
            })
            .await
            .expect("account");
        let mut token = String::new();
        for i in 0..1000 {
            let session = NewSession {
                id: format!("s{i}"),
                account_id: account.id,
                platform: "web".into(),
                user_agent: None,
                ip: None,
                token_style: TokenStyle::Opaque,
                created_at: 0,
                expires_at: i64::MAX,
            };
            let refresh = NewRefreshToken {
                hash: hash_token(&new_opaque_token()),
                session_id: session.id.clone(),
                issued_at: 0,
            };
            store
                .record_login(
                    &LoginRecord {
                        account_id: account.id,
                        at: 0,
                        ip: None,
                        clients: vec![],
                        keep: 1,
                        password_hash: None,
                    },
                    &session,
                    &refresh,
                    false,
                )
                .await
                .expect("session");
            token = new_opaque_token();
            store
                .replace_access_token(&session.id, &hash_token(&token), i64::MAX)
                .await
                .expect("token");
        }
        (store, token)
    });
    c.bench_function("opaque token lookup (SQLite, 1000 tokens)", |b| {
        b.to_async(&runtime).iter(|| async {
            store
                .find_access_token(&hash_token(black_box(&token)))
                .await
                .expect("lookup")
                .expect("found")
        })
    });
}

fn password_verification(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let settings = HashingSettings {
        threads: 1,
        ..HashingSettings::default()
    };
    let hasher =
        PasswordHasher::start(&settings, sesame::metrics::Metrics::new().hashing()).expect("pool");
    let password = Password::presented("correct horse battery").expect("password");
    let verifier = runtime
        .block_on(hasher.hash(password.expose()))
        .expect("hash");
    let mut group = c.benchmark_group("argon2id");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    group.bench_function("verify, OWASP parameters, one pool thread", |b| {
        b.to_async(&runtime)
            .iter(|| async { hasher.verify(&password, &verifier).await.expect("verify") })
    });
    group.finish();
}

criterion_group!(benches, jwt, opaque_lookup, password_verification);
criterion_main!(benches);
