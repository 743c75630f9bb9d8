//! What the fuzz targets share: one Sesame (core, router, SQLite in a
//! temporary directory, cheap hashing) built once per process, an
//! administrator signed in, and a way to send it a request in process.
//! Every target fails on a 500: a handler that panics is answered 500 by
//! the panic guard, and no input may cause an internal error.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use sesame::config::RawConfig;
use sesame::core::Core;
use sesame::core::accounts::AccountSpec;
use sesame::core::clock::SystemClock;
use sesame::core::domain::{Password, Username};
use sesame::http::AppState;
use tower::ServiceExt;

/// The administrator's password.
pub const PASSWORD: &str = "fuzzing administrator's password";

/// A running Sesame and tokens for it.
pub struct Harness {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    /// The administrator's access token (a JWT).
    pub access: String,
    /// The administrator's refresh token.
    pub refresh: String,
    _dir: tempfile::TempDir,
}

/// The process's harness, built at the first call.
pub fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(build)
}

fn build() -> Harness {
    let dir = tempfile::tempdir().expect("temporary directory");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut raw = RawConfig {
        data_dir: dir.path().to_owned(),
        ..RawConfig::default()
    };
    raw.passwords.memory_kib = 64;
    raw.passwords.iterations = 1;
    raw.passwords.threads = 1;
    raw.passwords.refuse_common = false;
    raw.sessions.cache_ttl = 0;
    // The targets guess a lot from one address; budgets must not end the run.
    raw.abuse.address_burst = 10_000;
    raw.abuse.address_interval = 1;
    let config = raw.validate().expect("configuration");
    let (router, access, refresh) = runtime.block_on(async {
        let core: Arc<Core> = sesame::app::open_serving_core(&config, Arc::new(SystemClock))
            .await
            .expect("core");
        core.create_account(
            AccountSpec {
                username: Username::parse("fuzzer").expect("username"),
                email: None,
                mobile: None,
                display_name: None,
                roles: vec!["administrator".into()],
                max_api_calls: 0,
                password: Password::new_password(PASSWORD).expect("password"),
            },
            &sesame::core::roles::Actor::Operator,
        )
        .await
        .expect("administrator");
        core.set_issuer("http://127.0.0.1:8420".into());
        let state = AppState {
            core,
            contracts: Arc::new(config.contracts.clone()),
            http: Arc::new(config.http.clone()),
            metrics: Arc::new(config.metrics.clone()),
            openapi: Arc::default(),
        };
        let router = sesame::http::router(state, &config.http, &config.metrics);
        (router, String::new(), String::new())
    });
    let mut harness = Harness {
        runtime,
        router,
        access,
        refresh,
        _dir: dir,
    };
    let grant = harness.send_json(
        "POST",
        "/v1/login",
        None,
        format!(r#"{{"login": "fuzzer", "password": "{PASSWORD}"}}"#).as_bytes(),
    );
    let field = |name: &str| {
        let start = grant.find(&format!("\"{name}\":\"")).expect(name) + name.len() + 4;
        grant[start..start + grant[start..].find('"').expect(name)].to_owned()
    };
    harness.access = field("access_token");
    harness.refresh = field("refresh_token");
    harness
}

impl Harness {
    /// Sends `request` from 127.0.0.1 and returns the status and body;
    /// panics (a finding) on a 500.
    pub fn send(&self, mut request: Request<Body>) -> (StatusCode, String) {
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
        let router = self.router.clone();
        self.runtime.block_on(async move {
            let response = router.oneshot(request).await.expect("infallible");
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap_or_default();
            let body = String::from_utf8_lossy(&body).into_owned();
            assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
            (status, body)
        })
    }

    /// A request with a JSON body and, when given, a bearer token.
    pub fn send_json(&self, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> String {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request.body(Body::from(body.to_vec())).expect("request");
        self.send(request).1
    }
}
