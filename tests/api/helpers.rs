//! `TestApp`: a running Sesame on a fresh database, with typed helpers.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use sesame::app::Application;
use sesame::config::RawConfig;
use sesame::core::Core;
use sesame::core::accounts::AccountSpec;
use sesame::core::clock::ManualClock;
use sesame::core::domain::{Email, Mobile, Password, Username};
use sesame::store::Account;
use tempfile::TempDir;

/// The time the manual clock starts at (2026-01-01T00:00:00Z).
pub const START: i64 = 1_767_225_600;

/// A password that passes the policy.
pub const PASSWORD: &str = "correct horse battery";

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub clock: Arc<ManualClock>,
    pub core: Arc<Core>,
    _dir: Arc<TempDir>,
}

/// Cheap hashing so tests stay fast; the parameters are not under test here.
pub fn test_config(dir: &TempDir) -> RawConfig {
    let mut raw = RawConfig {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.path().to_path_buf(),
        ..RawConfig::default()
    };
    raw.passwords.memory_kib = 256;
    raw.passwords.iterations = 1;
    raw.passwords.threads = 2;
    raw
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(tweak: impl FnOnce(&mut RawConfig)) -> Self {
        Self::spawn_in(Arc::new(tempfile::tempdir().expect("temp dir")), tweak).await
    }

    /// Starts an application on an existing data directory.
    pub async fn spawn_in(dir: Arc<TempDir>, tweak: impl FnOnce(&mut RawConfig)) -> Self {
        let mut raw = test_config(&dir);
        tweak(&mut raw);
        let config = raw.validate().expect("valid test configuration");
        let clock = Arc::new(ManualClock::new(START));
        let app = Application::build(&config, clock.clone())
            .await
            .expect("application builds");
        let address = format!("http://{}", app.local_addr());
        let core = app.core();
        tokio::spawn(app.run_until(std::future::pending()));
        Self {
            address,
            client: reqwest::Client::new(),
            clock,
            core,
            _dir: dir,
        }
    }

    /// A client whose connections come from another loopback address
    /// (127.0.0.2, 127.0.0.3 …), standing for another machine.
    pub fn client_from(&self, ip: &str) -> reqwest::Client {
        reqwest::Client::builder()
            .local_address(ip.parse::<std::net::IpAddr>().expect("ip"))
            .build()
            .expect("client")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// Creates an account directly through the core (as the CLI would).
    pub async fn create_user(&self, username: &str) -> Account {
        self.create_user_full(username, None, None, &[]).await
    }

    pub async fn create_user_full(
        &self,
        username: &str,
        email: Option<&str>,
        mobile: Option<&str>,
        roles: &[&str],
    ) -> Account {
        let spec = AccountSpec {
            username: Username::parse(username).expect("username"),
            email: email.map(|e| Email::parse(e).expect("email")),
            mobile: mobile.map(|m| Mobile::parse(m).expect("mobile")),
            display_name: None,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            max_api_calls: 0,
            password: Password::new_password(PASSWORD).expect("password"),
        };
        self.core
            .create_account(spec)
            .await
            .expect("account created")
    }

    /// Creates an account with a chosen password and roles.
    pub async fn create_with_password(
        &self,
        username: &str,
        password: &str,
        roles: &[&str],
    ) -> Account {
        let spec = AccountSpec {
            username: Username::parse(username).expect("username"),
            email: None,
            mobile: None,
            display_name: None,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            max_api_calls: 0,
            password: Password::new_password(password).expect("password"),
        };
        self.core
            .create_account(spec)
            .await
            .expect("account created")
    }

    /// The data directory's database, opened a second time (as the CLI would).
    pub async fn second_store(&self) -> sesame::store::sqlite::SqliteStore {
        let url = sesame::store::sqlite::SqliteStore::url_for_data_dir(self._dir.path());
        sesame::store::sqlite::SqliteStore::connect(&url)
            .await
            .expect("store")
    }

    pub async fn post_raw(&self, path: &str, content_type: &str, body: &str) -> Response {
        self.client
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body.to_owned())
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn login(&self, login: &str, password: &str) -> Response {
        self.post_json(
            "/v1/login",
            &json!({ "login": login, "password": password }),
        )
        .await
    }

    pub async fn login_on(&self, login: &str, platform: &str) -> Value {
        let response = self
            .post_json(
                "/v1/login",
                &json!({ "login": login, "password": PASSWORD, "platform": platform }),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("json")
    }

    /// Logs in with the test password and returns the grant body.
    pub async fn login_ok(&self, login: &str) -> Value {
        let response = self.login(login, PASSWORD).await;
        assert_eq!(response.status(), StatusCode::OK, "login of {login} failed");
        response.json().await.expect("json")
    }

    pub async fn refresh(&self, refresh_token: &str) -> Response {
        self.post_json("/v1/refresh", &json!({ "refresh_token": refresh_token }))
            .await
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn me_status(&self, token: &str) -> StatusCode {
        self.get("/v1/me", token).await.status()
    }

    pub async fn logout(&self, token: &str, body: Option<Value>) -> Response {
        let request = self.client.post(self.url("/v1/logout")).bearer_auth(token);
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        request.send().await.expect("request sent")
    }
}

/// The token fields of a grant body.
pub fn access(grant: &Value) -> &str {
    grant["access_token"].as_str().expect("access_token")
}

pub fn refresh_token(grant: &Value) -> &str {
    grant["refresh_token"].as_str().expect("refresh_token")
}

/// Decodes a JWT part without verifying it.
pub fn jwt_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).expect("jwt part");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("json")
}

/// Asserts a problem+json response with the given status and code, returning its body.
pub async fn assert_problem(response: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["code"], code, "unexpected body {body}");
    assert_eq!(body["status"], status.as_u16());
    body
}
