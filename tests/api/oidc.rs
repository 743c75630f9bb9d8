//! The OpenID Connect provider over real HTTP: the hosted page, the code
//! flow with PKCE, single sign-on, the token endpoint's four grants,
//! userinfo, introspection, revocation, logout, discovery and key rotation.
//! (Third-party clients and a browser run the same flows in tests/oidc/.)

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::Value;
use sesame::core::clients::ClientSpec;
use sesame::core::roles::Actor;
use sha2::{Digest, Sha256};

use crate::helpers::{PASSWORD, START, TestApp, access, jwt_part};

const REDIRECT: &str = "http://127.0.0.1:9/callback";
const LOGOUT_REDIRECT: &str = "http://127.0.0.1:9/signed-out";

/// A confidential client (`web`) with every grant, and a public one (`spa`).
pub(crate) async fn clients(app: &TestApp) -> String {
    let (_, secret) = app
        .core
        .register_client(
            ClientSpec {
                id: "web".into(),
                redirect_uris: vec![REDIRECT.into()],
                post_logout_redirect_uris: vec![LOGOUT_REDIRECT.into()],
                grants: [
                    "authorization_code",
                    "refresh_token",
                    "password",
                    "client_credentials",
                ]
                .map(String::from)
                .to_vec(),
                ..ClientSpec::default()
            },
            &Actor::Operator,
        )
        .await
        .expect("client registered");
    app.core
        .register_client(
            ClientSpec {
                id: "spa".into(),
                public: true,
                redirect_uris: vec![REDIRECT.into()],
                ..ClientSpec::default()
            },
            &Actor::Operator,
        )
        .await
        .expect("public client registered");
    secret.expect("generated secret")
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

struct Pkce {
    verifier: String,
    challenge: String,
}

fn pkce() -> Pkce {
    let verifier = sesame::core::tokens::random_urlsafe(32);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    Pkce {
        verifier,
        challenge,
    }
}

/// The value of cookie `name` set by a response.
fn set_cookie(headers: &HeaderMap, name: &str) -> Option<(String, String)> {
    headers.get_all(SET_COOKIE).iter().find_map(|v| {
        let text = v.to_str().ok()?;
        let value = text.strip_prefix(&format!("{name}="))?;
        Some((value.split(';').next()?.to_owned(), text.to_owned()))
    })
}

/// Query parameters of a `Location`.
fn location_params(response: &reqwest::Response) -> (String, Vec<(String, String)>) {
    let location = response.headers()[LOCATION]
        .to_str()
        .expect("ascii")
        .to_owned();
    let url = url::Url::parse(&location).expect("absolute location");
    let base = format!("{}://{}{}", url.scheme(), url.authority(), url.path());
    (base, url.query_pairs().into_owned().collect())
}

/// The error a browser is sent back to the client with, and its `state`.
fn redirected_error(response: &reqwest::Response) -> (String, Option<String>) {
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (base, params) = location_params(response);
    assert_eq!(base, REDIRECT);
    (
        param(&params, "error").expect("an error").to_owned(),
        param(&params, "state").map(str::to_owned),
    )
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The value of hidden field `name` in a page.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).expect("hidden field") + marker.len();
    html[start..][..html[start..].find('"').expect("end")].replace("&amp;", "&")
}

fn authorize_url(app: &TestApp, client: &str, pkce: &Pkce, extra: &str) -> String {
    app.url(&format!(
        "/oauth2/authorize?response_type=code&client_id={client}&redirect_uri={}\
         &scope=openid%20profile%20email&state=st%26ate&nonce=n-0S6&code_challenge={}\
         &code_challenge_method=S256{extra}",
        url::form_urlencoded::byte_serialize(REDIRECT.as_bytes()).collect::<String>(),
        pkce.challenge
    ))
}

/// The browser's side: the sign-in page, then the form.
struct Browser {
    http: reqwest::Client,
    cookies: Vec<(String, String)>,
}

impl Browser {
    fn new() -> Self {
        Self {
            http: no_redirects(),
            cookies: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep(&mut self, headers: &HeaderMap) {
        for name in [
            "sesame_csrf",
            "sesame_session",
            "__Host-sesame_csrf",
            "__Host-sesame_session",
        ] {
            if let Some((value, _)) = set_cookie(headers, name) {
                self.cookies.retain(|(k, _)| k != name);
                if !value.is_empty() {
                    self.cookies.push((name.into(), value));
                }
            }
        }
    }

    async fn get(&mut self, url: &str) -> reqwest::Response {
        let response = self
            .http
            .get(url)
            .header("cookie", self.cookie_header())
            .send()
            .await
            .expect("GET");
        self.keep(response.headers());
        response
    }

    async fn post(&mut self, url: &str, form: &[(&str, String)]) -> reqwest::Response {
        let response = self
            .http
            .post(url)
            .header("cookie", self.cookie_header())
            .form(form)
            .send()
            .await
            .expect("POST");
        self.keep(response.headers());
        response
    }

    /// Opens the page and submits it; returns the answer to the form.
    async fn sign_in(
        &mut self,
        app: &TestApp,
        page_url: &str,
        login: &str,
        password: &str,
    ) -> reqwest::Response {
        let page = self.get(page_url).await;
        assert_eq!(page.status(), StatusCode::OK);
        let html = page.text().await.expect("html");
        let mut form: Vec<(&str, String)> = [
            "csrf",
            "client_id",
            "redirect_uri",
            "response_type",
            "scope",
            "code_challenge",
            "code_challenge_method",
            "state",
            "nonce",
            "max_age",
            "prompt",
            "id_token_hint",
        ]
        .into_iter()
        .filter(|name| html.contains(&format!("name=\"{name}\"")))
        .map(|name| (name, hidden(&html, name)))
        .collect();
        form.push(("login", login.into()));
        form.push(("password", password.into()));
        self.post(&app.url("/oauth2/authorize/sign-in"), &form)
            .await
    }
}

/// Signs in through the page and returns the code.
async fn code_for(app: &TestApp, browser: &mut Browser, client: &str, pkce: &Pkce) -> String {
    let answer = browser
        .sign_in(
            app,
            &authorize_url(app, client, pkce, ""),
            "alice",
            PASSWORD,
        )
        .await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    let (base, params) = location_params(&answer);
    assert_eq!(base, REDIRECT);
    assert_eq!(param(&params, "state"), Some("st&ate"));
    assert_eq!(param(&params, "iss"), Some(app.address.as_str()));
    param(&params, "code").expect("code").to_owned()
}

pub(crate) async fn token(
    app: &TestApp,
    auth: Option<(&str, &str)>,
    form: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(app.url("/oauth2/token"))
        .form(form);
    if let Some((id, secret)) = auth {
        request = request.basic_auth(id, Some(secret));
    }
    request.send().await.expect("token request")
}

async fn exchange(app: &TestApp, secret: &str, code: &str, verifier: &str) -> reqwest::Response {
    token(
        app,
        Some(("web", secret)),
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ],
    )
    .await
}

/// Signs `browser` in on the page for the client `web` and exchanges the
/// code: the token endpoint's answer.
async fn signed_in(app: &TestApp, secret: &str, browser: &mut Browser) -> Value {
    let pkce = pkce();
    let code = code_for(app, browser, "web", &pkce).await;
    exchange(app, secret, &code, &pkce.verifier)
        .await
        .json()
        .await
        .unwrap()
}

/// The `refresh_token` grant of the confidential client.
async fn refresh_grant(app: &TestApp, secret: &str, refresh_token: &str) -> reqwest::Response {
    token(
        app,
        Some(("web", secret)),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

/// The `password` grant of the confidential client, scope `openid`.
async fn password_grant(app: &TestApp, secret: &str, username: &str) -> Value {
    token(
        app,
        Some(("web", secret)),
        &[
            ("grant_type", "password"),
            ("username", username),
            ("password", PASSWORD),
            ("scope", "openid"),
        ],
    )
    .await
    .json()
    .await
    .unwrap()
}

async fn oauth_error(response: reqwest::Response, status: StatusCode, error: &str) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"], error, "{body}");
    body
}

pub(crate) async fn userinfo(app: &TestApp, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(app.url("/oauth2/userinfo"))
        .bearer_auth(token)
        .send()
        .await
        .expect("userinfo")
}

async fn spawn() -> (TestApp, String) {
    let app = TestApp::spawn().await;
    app.create_user_full("alice", Some("alice@example.com"), None, &[])
        .await;
    let secret = clients(&app).await;
    (app, secret)
}

#[tokio::test]
async fn discovery_lists_exactly_what_is_supported() {
    let (app, _) = spawn().await;
    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    ] {
        let response = reqwest::get(app.url(path)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let doc: Value = response.json().await.unwrap();
        assert_eq!(doc["issuer"], app.address);
        assert_eq!(doc["authorization_endpoint"], app.url("/oauth2/authorize"));
        assert_eq!(doc["jwks_uri"], app.url("/.well-known/jwks.json"));
        assert_eq!(
            doc["code_challenge_methods_supported"],
            serde_json::json!(["S256"])
        );
        assert_eq!(doc["response_types_supported"], serde_json::json!(["code"]));
        assert_eq!(
            doc["id_token_signing_alg_values_supported"],
            serde_json::json!(["EdDSA"])
        );
    }
}

#[tokio::test]
async fn the_code_flow_signs_in_on_the_page_and_issues_verified_tokens() {
    let (app, secret) = spawn().await;
    let pkce = pkce();
    let mut browser = Browser::new();
    let page = browser.get(&authorize_url(&app, "web", &pkce, "")).await;
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert!(
        csp.contains("form-action 'self' http://127.0.0.1:9"),
        "{csp}"
    );
    assert_eq!(page.headers()["cache-control"], "no-store");
    let (_, csrf_cookie) = set_cookie(page.headers(), "sesame_csrf").expect("csrf cookie");
    assert!(csrf_cookie.contains("HttpOnly") && csrf_cookie.contains("SameSite=Lax"));
    let html = page.text().await.unwrap();
    assert!(html.contains("<label for=\"login\">") && html.contains("<label for=\"password\">"));
    assert!(html.contains("autocomplete=\"current-password\"") && !html.contains("<script"));

    let answer = browser
        .sign_in(
            &app,
            &authorize_url(&app, "web", &pkce, ""),
            "alice",
            PASSWORD,
        )
        .await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    let (_, session_cookie) =
        set_cookie(answer.headers(), "sesame_session").expect("session cookie");
    assert!(session_cookie.contains("HttpOnly") && session_cookie.contains("SameSite=Lax"));
    assert!(!session_cookie.contains("Secure"), "served over http");
    let (_, params) = location_params(&answer);
    let code = param(&params, "code").unwrap();

    let response = exchange(&app, &secret, code, &pkce.verifier).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["pragma"], "no-cache");
    let tokens: Value = response.json().await.unwrap();
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["scope"], "openid profile email");
    let access = tokens["access_token"].as_str().unwrap();
    let id_token = tokens["id_token"].as_str().unwrap();
    let claims = jwt_part(id_token, 1);
    assert_eq!(claims["iss"], app.address);
    assert_eq!(claims["aud"], "web");
    assert_eq!(claims["nonce"], "n-0S6");
    assert_eq!(claims["preferred_username"], "alice");
    assert_eq!(claims["email"], "alice@example.com");
    assert!(claims["sid"].is_string() && claims["auth_time"].is_i64());
    let expected_at_hash = {
        let digest = sha2::Sha512::digest(access.as_bytes());
        URL_SAFE_NO_PAD.encode(&digest[..32])
    };
    assert_eq!(claims["at_hash"], expected_at_hash);
    let access_claims = jwt_part(access, 1);
    assert_eq!(access_claims["client_id"], "web");
    assert_eq!(access_claims["scope"], "openid profile email");
    assert_eq!(jwt_part(access, 0)["typ"], "at+jwt");

    let info: Value = userinfo(&app, access).await.json().await.unwrap();
    assert_eq!(info["sub"], claims["sub"]);
    assert_eq!(info["email_verified"], false);
    assert!(info.get("phone_number").is_none());
    // The account API takes no token of a client: it would show and change
    // more than the scope the user granted (and the user's other sessions).
    let refused = app.get("/v1/me", access).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["code"], "forbidden", "{problem}");
    for (method, path) in [
        (reqwest::Method::GET, "/v1/me/sessions"),
        (reqwest::Method::PATCH, "/v1/me"),
        (reqwest::Method::POST, "/v1/logout"),
    ] {
        let answer = reqwest::Client::new()
            .request(method.clone(), app.url(path))
            .bearer_auth(access)
            .json(&serde_json::json!({"all": true, "display_name": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::FORBIDDEN, "{method} {path}");
    }
    assert_eq!(userinfo(&app, access).await.status(), StatusCode::OK);

    let events = app
        .core
        .audit_events(&sesame::store::AuditQuery {
            limit: 50,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.event == "login" && e.face == "oidc" && e.outcome == "success")
    );
}

/// An application an administrator signs in to gets a token that works on
/// the native API, never on the admin API: neither the application nor
/// whoever steals its token may administer Sesame.
#[tokio::test]
async fn a_token_issued_to_a_client_cannot_administer_sesame() {
    let (app, secret) = spawn().await;
    app.create_user_full("root", None, None, &["administrator"])
        .await;
    let pkce = pkce();
    let mut browser = Browser::new();
    let answer = browser
        .sign_in(
            &app,
            &authorize_url(&app, "web", &pkce, ""),
            "root",
            PASSWORD,
        )
        .await;
    let (_, params) = location_params(&answer);
    let code = param(&params, "code").unwrap();
    let tokens: Value = exchange(&app, &secret, code, &pkce.verifier)
        .await
        .json()
        .await
        .unwrap();
    let client_token = tokens["access_token"].as_str().unwrap();
    assert_eq!(userinfo(&app, client_token).await.status(), StatusCode::OK);
    let refused = app.get("/v1/admin/users", client_token).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["status"], 403, "{problem}");
    let native = app.login_ok("root").await;
    let allowed = app
        .get("/v1/admin/users", native["access_token"].as_str().unwrap())
        .await;
    assert_eq!(allowed.status(), StatusCode::OK, "the native token may");
    app.core.flush_audit().await.unwrap();
    let events = app
        .core
        .audit_events(&sesame::store::AuditQuery {
            limit: 50,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        events.iter().any(|e| e.event == "admin_refused"
            && e.detail
                .as_deref()
                .is_some_and(|d| d.contains("OAuth client web"))),
        "{events:#?}"
    );
}

/// Forward auth takes no token issued to an OAuth client, unless the
/// operator lists the client (an SPA calling its API behind the proxy):
/// an application a user signed in to must not reach the services behind
/// the proxy with the user's permissions.
#[tokio::test]
async fn forward_auth_takes_a_clients_token_only_if_the_client_is_listed() {
    for listed in [false, true] {
        let app = TestApp::spawn_with(|c| {
            if listed {
                c.forward_auth.clients = vec!["web".into()];
            }
        })
        .await;
        app.create_user_full("alice", Some("alice@example.com"), None, &[])
            .await;
        let secret = clients(&app).await;
        let grant = password_grant(&app, &secret, "alice").await;
        let client_token = grant["access_token"].as_str().unwrap();
        let answer = app.get("/v1/authz", client_token).await;
        if listed {
            assert_eq!(answer.status(), StatusCode::OK);
            assert_eq!(answer.headers()["x-sesame-user"], "alice");
        } else {
            assert_eq!(answer.status(), StatusCode::FORBIDDEN);
            assert_eq!(answer.headers()["x-sesame-reason"], "client");
        }
        let native = app.login_ok("alice").await;
        let answer = app
            .get("/v1/authz", native["access_token"].as_str().unwrap())
            .await;
        assert_eq!(answer.status(), StatusCode::OK, "a native token always");
    }
}

#[tokio::test]
async fn a_browser_session_signs_in_again_without_the_form_unless_told_otherwise() {
    let (app, secret) = spawn().await;
    let mut browser = Browser::new();
    code_for(&app, &mut browser, "web", &pkce()).await;

    let again = pkce();
    let response = browser.get(&authorize_url(&app, "web", &again, "")).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "single sign-on");
    let (_, params) = location_params(&response);
    let tokens = exchange(
        &app,
        &secret,
        param(&params, "code").unwrap(),
        &again.verifier,
    )
    .await;
    assert_eq!(tokens.status(), StatusCode::OK);

    let forced = browser
        .get(&authorize_url(&app, "web", &pkce(), "&prompt=login"))
        .await;
    assert_eq!(
        forced.status(),
        StatusCode::OK,
        "prompt=login shows the page"
    );
    let choose = browser
        .get(&authorize_url(
            &app,
            "web",
            &pkce(),
            "&prompt=select_account",
        ))
        .await;
    assert_eq!(
        choose.status(),
        StatusCode::OK,
        "prompt=select_account shows the page, where another account may sign in"
    );
    let consent = browser
        .get(&authorize_url(&app, "web", &pkce(), "&prompt=consent"))
        .await;
    assert_eq!(
        consent.status(),
        StatusCode::OK,
        "prompt=consent asks the signed-in user to confirm"
    );
    assert!(consent.text().await.unwrap().contains("name=\"choice\""));
    let fresh_only = browser
        .get(&authorize_url(&app, "web", &pkce(), "&max_age=0"))
        .await;
    assert_eq!(
        fresh_only.status(),
        StatusCode::OK,
        "max_age=0 is prompt=login"
    );
    let recent = browser
        .get(&authorize_url(&app, "web", &pkce(), "&max_age=5"))
        .await;
    assert_eq!(recent.status(), StatusCode::SEE_OTHER, "signed in 0 s ago");
    app.clock.advance(6);
    let too_old = browser
        .get(&authorize_url(&app, "web", &pkce(), "&max_age=5"))
        .await;
    assert_eq!(
        too_old.status(),
        StatusCode::OK,
        "max_age exceeded shows the page"
    );
    let silent = browser
        .get(&authorize_url(&app, "web", &pkce(), "&prompt=none"))
        .await;
    assert_eq!(
        silent.status(),
        StatusCode::SEE_OTHER,
        "prompt=none with a session"
    );
    assert!(param(&location_params(&silent).1, "code").is_some());

    // A hint naming someone else: the browser's session is not theirs, so
    // a silent request is login_required, and another shows the page.
    app.create_user_full("bob", None, None, &[]).await;
    let bobs = password_grant(&app, &secret, "bob").await;
    let bobs_hint = format!("&id_token_hint={}", bobs["id_token"].as_str().unwrap());
    let not_bob = browser
        .get(&authorize_url(
            &app,
            "web",
            &pkce(),
            &format!("&prompt=none{bobs_hint}"),
        ))
        .await;
    assert_eq!(not_bob.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        param(&location_params(&not_bob).1, "error"),
        Some("login_required")
    );
    let page = browser
        .get(&authorize_url(&app, "web", &pkce(), &bobs_hint))
        .await;
    assert_eq!(page.status(), StatusCode::OK, "the page, to sign in as bob");
    // Someone else signing in on it: not bob, so the client is told
    // login_required (and gets nobody's code); bob signing in gets his.
    let hinted = authorize_url(&app, "web", &pkce(), &bobs_hint);
    let as_alice = browser.sign_in(&app, &hinted, "alice", PASSWORD).await;
    assert_eq!(as_alice.status(), StatusCode::SEE_OTHER);
    let (base, params) = location_params(&as_alice);
    assert_eq!(base, REDIRECT);
    assert_eq!(param(&params, "error"), Some("login_required"));
    assert_eq!(param(&params, "code"), None);
    let as_bob = browser.sign_in(&app, &hinted, "bob", PASSWORD).await;
    assert_eq!(as_bob.status(), StatusCode::SEE_OTHER);
    assert!(param(&location_params(&as_bob).1, "code").is_some());
    let junk = browser
        .get(&authorize_url(&app, "web", &pkce(), "&id_token_hint=junk"))
        .await;
    assert_eq!(
        param(&location_params(&junk).1, "error"),
        Some("invalid_request")
    );

    let stranger = Browser::new()
        .get(&authorize_url(&app, "web", &pkce(), "&prompt=none"))
        .await;
    assert_eq!(
        redirected_error(&stranger),
        ("login_required".into(), Some("st&ate".into()))
    );
}

/// The confirmation page's form, as its hidden fields and the button
/// pressed.
fn confirmation(html: &str, choice: &str) -> Vec<(&'static str, String)> {
    let mut form: Vec<(&str, String)> = [
        "csrf",
        "client_id",
        "redirect_uri",
        "response_type",
        "scope",
        "code_challenge",
        "code_challenge_method",
        "state",
        "nonce",
        "max_age",
        "prompt",
        "id_token_hint",
        "account",
    ]
    .into_iter()
    .filter(|name| html.contains(&format!("name=\"{name}\"")))
    .map(|name| (name, hidden(html, name)))
    .collect();
    form.push(("choice", choice.to_owned()));
    form
}

/// `authorize_url` with another redirect URI.
fn authorize_url_to(app: &TestApp, client: &str, redirect: &str, pkce: &Pkce) -> String {
    let encode = |uri: &str| url::form_urlencoded::byte_serialize(uri.as_bytes()).collect();
    let (from, to): (String, String) = (encode(REDIRECT), encode(redirect));
    authorize_url(app, client, pkce, "").replace(&from, &to)
}

/// RFC 8252 §8.6: a public client whose redirect URI is a loopback
/// address or an app's own scheme can be started by any program on the
/// user's machine, which then receives the code. With a browser session,
/// such a request (and any with `prompt=consent`) shows a page naming the
/// account and the client, and a code goes only when the user continues.
#[tokio::test]
async fn a_client_another_program_could_pass_for_asks_the_signed_in_user_first() {
    let (app, secret) = spawn().await;
    for (id, redirect) in [
        ("app", "com.example.app:/callback"),
        ("site", "https://spa.example/callback"),
    ] {
        app.core
            .register_client(
                ClientSpec {
                    id: id.into(),
                    public: true,
                    redirect_uris: vec![redirect.into()],
                    ..ClientSpec::default()
                },
                &Actor::Operator,
            )
            .await
            .expect("public client registered");
    }
    let alice = app.core.find_by_username("alice").await.unwrap();
    let mut browser = Browser::new();
    code_for(&app, &mut browser, "web", &pkce()).await;

    // The public client on a loopback address: the page, no code.
    let spa = pkce();
    let page = browser.get(&authorize_url(&app, "spa", &spa, "")).await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers().get(LOCATION).is_none());
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains("<strong>alice</strong>"), "{html}");
    assert!(html.contains("Continue only if you started"), "{html}");
    assert_eq!(hidden(&html, "account"), alice.id.to_string());
    assert!(!html.contains("name=\"password\""), "no password asked");

    // prompt=none cannot show it.
    let silent = browser
        .get(&authorize_url(&app, "spa", &pkce(), "&prompt=none"))
        .await;
    assert_eq!(
        redirected_error(&silent),
        ("consent_required".into(), Some("st&ate".into()))
    );

    // A form whose CSRF token is not the browser's (posted from another
    // site) decides nothing, whichever button it names: the page again.
    let continue_url = app.url("/oauth2/authorize/continue");
    for choice in ["continue", "cancel", "switch"] {
        let mut forged = confirmation(&html, choice);
        for field in &mut forged {
            if field.0 == "csrf" {
                field.1 = "A".repeat(43);
            }
        }
        let answer = browser.post(&continue_url, &forged).await;
        assert_eq!(answer.status(), StatusCode::OK, "{choice}");
        assert!(answer.headers().get(LOCATION).is_none(), "{choice}");
        let again = answer.text().await.unwrap();
        assert!(
            again.contains("<strong>alice</strong>"),
            "{choice}: {again}"
        );
        assert!(!again.contains("name=\"password\""), "{choice}: {again}");
    }
    // Without the browser's cookies there is no one signed in to confirm:
    // the sign-in form.
    let cookieless = Browser::new()
        .post(&continue_url, &confirmation(&html, "continue"))
        .await;
    assert_eq!(cookieless.status(), StatusCode::OK);
    assert!(cookieless.headers().get(LOCATION).is_none());
    assert!(
        cookieless
            .text()
            .await
            .unwrap()
            .contains("name=\"password\"")
    );
    // Naming another account decides nothing either.
    let bob = app.create_user_full("bob", None, None, &[]).await;
    let mut as_bob = confirmation(&html, "continue");
    for field in &mut as_bob {
        if field.0 == "account" {
            field.1 = bob.id.to_string();
        }
    }
    let swapped = browser.post(&continue_url, &as_bob).await;
    assert_eq!(swapped.status(), StatusCode::OK);
    let again = swapped.text().await.unwrap();
    assert!(again.contains("<strong>alice</strong>"), "{again}");
    let no_choice: Vec<_> = confirmation(&html, "continue")
        .into_iter()
        .filter(|(name, _)| *name != "choice")
        .collect();
    let refused = browser.post(&continue_url, &no_choice).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);

    // Continue: the code, for alice, redeemable by the public client.
    let continued = browser
        .post(&continue_url, &confirmation(&html, "continue"))
        .await;
    assert_eq!(continued.status(), StatusCode::SEE_OTHER);
    let (base, params) = location_params(&continued);
    assert_eq!(base, REDIRECT);
    assert_eq!(param(&params, "state"), Some("st&ate"));
    let tokens = token(
        &app,
        None,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", "spa"),
            ("code", param(&params, "code").expect("code")),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &spa.verifier),
        ],
    )
    .await;
    assert_eq!(tokens.status(), StatusCode::OK);
    let tokens: Value = tokens.json().await.unwrap();
    let id_token = jwt_part(tokens["id_token"].as_str().unwrap(), 1);
    assert_eq!(id_token["sub"], alice.id.to_string());
    assert_eq!(id_token["aud"], "spa");

    // Cancel: the client is told the user declined.
    let html = browser
        .get(&authorize_url(&app, "spa", &pkce(), ""))
        .await
        .text()
        .await
        .unwrap();
    let cancelled = browser
        .post(&continue_url, &confirmation(&html, "cancel"))
        .await;
    assert_eq!(
        redirected_error(&cancelled),
        ("access_denied".into(), Some("st&ate".into()))
    );
    // Another account: the sign-in form.
    let switched = browser
        .post(&continue_url, &confirmation(&html, "switch"))
        .await;
    assert_eq!(switched.status(), StatusCode::OK);
    assert!(switched.text().await.unwrap().contains("name=\"password\""));

    // An app's own scheme asks too; a public client on https does not.
    let app_page = browser
        .get(&authorize_url_to(
            &app,
            "app",
            "com.example.app:/callback",
            &pkce(),
        ))
        .await;
    assert_eq!(app_page.status(), StatusCode::OK);
    assert!(
        app_page
            .text()
            .await
            .unwrap()
            .contains("<strong>app</strong>")
    );
    let site = browser
        .get(&authorize_url_to(
            &app,
            "site",
            "https://spa.example/callback",
            &pkce(),
        ))
        .await;
    assert_eq!(site.status(), StatusCode::SEE_OTHER, "single sign-on");
    assert!(param(&location_params(&site).1, "code").is_some());

    // max_age is judged again when the form comes back: too late, the
    // sign-in form instead of a code.
    let html = browser
        .get(&authorize_url(&app, "spa", &pkce(), "&max_age=60"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(hidden(&html, "max_age"), "60");
    app.clock.advance(61);
    let late = browser
        .post(&continue_url, &confirmation(&html, "continue"))
        .await;
    assert_eq!(late.status(), StatusCode::OK);
    assert!(late.text().await.unwrap().contains("name=\"password\""));

    // prompt=consent for the confidential client: continue gives its code.
    let web = pkce();
    let signed = browser
        .sign_in(
            &app,
            &authorize_url(&app, "web", &pkce(), "&prompt=login"),
            "alice",
            PASSWORD,
        )
        .await;
    assert_eq!(signed.status(), StatusCode::SEE_OTHER);
    let html = browser
        .get(&authorize_url(&app, "web", &web, "&prompt=consent"))
        .await
        .text()
        .await
        .unwrap();
    let code = browser
        .post(&continue_url, &confirmation(&html, "continue"))
        .await;
    let (_, params) = location_params(&code);
    let exchanged = exchange(
        &app,
        &secret,
        param(&params, "code").unwrap(),
        &web.verifier,
    )
    .await;
    assert_eq!(exchanged.status(), StatusCode::OK);

    // A page shown for alice, then bob signs in in the same browser (another
    // tab): continuing alice's page sends no code, it asks bob.
    let html = browser
        .get(&authorize_url(&app, "web", &pkce(), "&prompt=consent"))
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("<strong>alice</strong>"), "{html}");
    let as_bob = browser
        .sign_in(
            &app,
            &authorize_url(&app, "web", &pkce(), "&prompt=login"),
            "bob",
            PASSWORD,
        )
        .await;
    assert_eq!(as_bob.status(), StatusCode::SEE_OTHER);
    let stale = browser
        .post(&continue_url, &confirmation(&html, "continue"))
        .await;
    assert_eq!(stale.status(), StatusCode::OK);
    assert!(stale.headers().get(LOCATION).is_none());
    let asked = stale.text().await.unwrap();
    assert!(asked.contains("<strong>bob</strong>"), "{asked}");
    assert_eq!(hidden(&asked, "account"), bob.id.to_string());
}

#[tokio::test]
async fn bad_authorization_requests_never_redirect_to_an_unregistered_uri() {
    let (app, _) = spawn().await;
    let http = no_redirects();
    let pkce = pkce();
    let unknown = http
        .get(authorize_url(&app, "nobody", &pkce, ""))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    assert!(unknown.headers().get(LOCATION).is_none());
    // Not a client id at all (PostgreSQL would refuse the NUL with an error).
    let nul = http
        .get(authorize_url(&app, "%00", &pkce, ""))
        .send()
        .await
        .unwrap();
    assert_eq!(nul.status(), StatusCode::BAD_REQUEST);
    assert!(nul.headers().get(LOCATION).is_none());
    let foreign = http
        .get(authorize_url(&app, "web", &pkce, "").replace("127.0.0.1%3A9", "evil.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), StatusCode::BAD_REQUEST);
    assert!(foreign.headers().get(LOCATION).is_none());
    assert!(foreign.text().await.unwrap().contains("not registered"));

    for (mangle, error) in [
        (
            ("code_challenge_method=S256", "code_challenge_method=plain"),
            "invalid_request",
        ),
        (("&code_challenge=", "&x="), "invalid_request"),
        (("nonce=n-0S6", "nonce=n%000S6"), "invalid_request"),
        (
            ("response_type=code", "response_type=token"),
            "unsupported_response_type",
        ),
        (
            ("scope=openid%20profile%20email", "scope=openid%20admin"),
            "invalid_scope",
        ),
        (("state=st%26ate", "state=st%26ate&state=again"), ""),
    ] {
        let url = authorize_url(&app, "web", &pkce, "").replace(mangle.0, mangle.1);
        let response = http.get(url).send().await.unwrap();
        if error.is_empty() {
            assert_eq!(
                response.status(),
                StatusCode::BAD_REQUEST,
                "repeated parameter"
            );
            continue;
        }
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{mangle:?}");
        let (base, params) = location_params(&response);
        assert_eq!(base, REDIRECT);
        assert_eq!(param(&params, "error"), Some(error), "{mangle:?}");
        assert_eq!(param(&params, "iss"), Some(app.address.as_str()));
    }
}

#[tokio::test]
async fn a_native_app_on_a_loopback_ip_may_listen_on_any_port() {
    // REDIRECT is registered as http://127.0.0.1:9/callback; RFC 8252 §7.3:
    // the app gets its port from the system when it asks.
    let (app, secret) = spawn().await;
    let elsewhere = "http://127.0.0.1:53682/callback";
    let encoded =
        |uri: &str| url::form_urlencoded::byte_serialize(uri.as_bytes()).collect::<String>();
    let with_uri = |pkce: &Pkce, uri: &str| {
        authorize_url(&app, "web", pkce, "").replace(&encoded(REDIRECT), &encoded(uri))
    };
    let first = pkce();
    let mut browser = Browser::new();
    let answer = browser
        .sign_in(&app, &with_uri(&first, elsewhere), "alice", PASSWORD)
        .await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    let (base, params) = location_params(&answer);
    assert_eq!(base, elsewhere);
    let code = param(&params, "code").expect("code").to_owned();
    // The code is bound to the port it was sent to.
    let wrong_port = exchange(&app, &secret, &code, &first.verifier).await;
    oauth_error(wrong_port, StatusCode::BAD_REQUEST, "invalid_grant").await;
    let second = pkce();
    let answer = browser.get(&with_uri(&second, elsewhere)).await;
    let (_, params) = location_params(&answer);
    let code = param(&params, "code")
        .expect("signed in already")
        .to_owned();
    let tokens = token(
        &app,
        Some(("web", &secret)),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", elsewhere),
            ("code_verifier", &second.verifier),
        ],
    )
    .await;
    assert_eq!(tokens.status(), StatusCode::OK);
    let tokens: Value = tokens.json().await.unwrap();
    assert!(tokens["id_token"].is_string());

    // Only the port varies, and only on a loopback IP.
    for other in [
        "http://127.0.0.1:53682/other",
        "http://127.0.0.2:9/callback",
        "http://localhost:9/callback",
        "https://127.0.0.1:9/callback",
        "http://127.0.0.1:53682/x/../callback",
    ] {
        let refused = no_redirects()
            .get(with_uri(&pkce(), other))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{other}");
        assert!(refused.headers().get(LOCATION).is_none(), "{other}");
    }

    // The same for where a logout returns to.
    let id_token = tokens["id_token"].as_str().unwrap();
    let logout_elsewhere = "http://127.0.0.1:4000/signed-out";
    let out = browser
        .get(&app.url(&format!(
            "/oauth2/logout?id_token_hint={id_token}&post_logout_redirect_uri={}",
            encoded(logout_elsewhere)
        )))
        .await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert_eq!(location_params(&out).0, logout_elsewhere);
    let refused = browser
        .get(&app.url(&format!(
            "/oauth2/logout?client_id=web&post_logout_redirect_uri={}",
            encoded("http://localhost:4000/signed-out")
        )))
        .await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_page_refuses_wrong_passwords_forged_forms_and_speaks_chinese() {
    let (app, _) = spawn().await;
    let pkce = pkce();
    let mut browser = Browser::new();
    let wrong = browser
        .sign_in(
            &app,
            &authorize_url(&app, "web", &pkce, ""),
            "alice",
            "wrong password",
        )
        .await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(wrong.headers(), "sesame_session").is_none());
    let html = wrong.text().await.unwrap();
    assert!(html.contains("role=\"alert\"") && html.contains("aria-describedby=\"error\""));
    assert!(html.contains("The login or password is incorrect."));
    assert!(html.contains("value=\"alice\""), "the login is kept");
    let unknown = browser
        .sign_in(
            &app,
            &authorize_url(&app, "web", &pkce, ""),
            "nobody",
            "wrong password",
        )
        .await;
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    assert!(
        unknown
            .text()
            .await
            .unwrap()
            .contains("The login or password is incorrect.")
    );

    // A form posted from elsewhere carries no matching CSRF cookie.
    let mut forger = Browser::new();
    let forged = forger
        .post(
            &app.url("/oauth2/authorize/sign-in"),
            &[
                ("csrf", "A".repeat(43)),
                ("client_id", "web".into()),
                ("redirect_uri", REDIRECT.into()),
                ("response_type", "code".into()),
                ("code_challenge", pkce.challenge.clone()),
                ("code_challenge_method", "S256".into()),
                ("login", "alice".into()),
                ("password", PASSWORD.into()),
            ],
        )
        .await;
    assert_eq!(forged.status(), StatusCode::BAD_REQUEST);
    assert!(set_cookie(forged.headers(), "sesame_session").is_none());

    let chinese = reqwest::Client::new()
        .get(authorize_url(&app, "web", &pkce, ""))
        .header("accept-language", "zh-CN,zh;q=0.9,en;q=0.5")
        .send()
        .await
        .unwrap();
    let html = chinese.text().await.unwrap();
    assert!(html.contains("lang=\"zh-CN\"") && html.contains("用户名、邮箱或手机号"));
}

#[tokio::test]
async fn throttling_on_the_page_is_a_message_that_reveals_nothing() {
    let (app, _) = spawn().await;
    let pkce = pkce();
    let mut browser = Browser::new();
    let mut last = None;
    for _ in 0..30 {
        let response = browser
            .sign_in(
                &app,
                &authorize_url(&app, "web", &pkce, ""),
                "nobody",
                "wrong password",
            )
            .await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(response.headers().get("retry-after").is_some());
            last = Some(response.text().await.unwrap());
            break;
        }
    }
    let html = last.expect("throttled within 30 attempts");
    assert!(html.contains("Too many attempts"));
}

#[tokio::test]
async fn codes_are_single_use_bound_and_short_lived() {
    let (app, secret) = spawn().await;
    let mut browser = Browser::new();

    let pkce_a = pkce();
    let code = code_for(&app, &mut browser, "web", &pkce_a).await;
    let wrong = exchange(&app, &secret, &code, &pkce().verifier).await;
    oauth_error(wrong, StatusCode::BAD_REQUEST, "invalid_grant").await;
    let missing = token(
        &app,
        Some(("web", &secret)),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    oauth_error(missing, StatusCode::BAD_REQUEST, "invalid_request").await;
    let first: Value = exchange(&app, &secret, &code, &pkce_a.verifier)
        .await
        .json()
        .await
        .unwrap();
    let access = first["access_token"].as_str().unwrap();
    assert_eq!(userinfo(&app, access).await.status(), StatusCode::OK);
    // Presented again by another client (a public one needs no secret):
    // refused, and the session the code opened stays.
    let foreign = token(
        &app,
        None,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", "spa"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &pkce_a.verifier),
        ],
    )
    .await;
    oauth_error(foreign, StatusCode::BAD_REQUEST, "invalid_grant").await;
    assert_eq!(
        userinfo(&app, access).await.status(),
        StatusCode::OK,
        "only the code's own client ends its session by replaying it"
    );
    let replay = exchange(&app, &secret, &code, &pkce_a.verifier).await;
    oauth_error(replay, StatusCode::BAD_REQUEST, "invalid_grant").await;
    assert_eq!(
        userinfo(&app, access).await.status(),
        StatusCode::UNAUTHORIZED,
        "a replayed code revokes what it gave"
    );
    let refreshed = token(
        &app,
        Some(("web", &secret)),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", first["refresh_token"].as_str().unwrap()),
        ],
    )
    .await;
    oauth_error(refreshed, StatusCode::BAD_REQUEST, "invalid_grant").await;
    // Replayed again and again: refused each time, but recorded once as
    // the replay that ended the session, then as sampled refusals.
    for _ in 0..40 {
        let again = exchange(&app, &secret, &code, &pkce_a.verifier).await;
        oauth_error(again, StatusCode::BAD_REQUEST, "invalid_grant").await;
    }
    app.core.flush_audit().await.unwrap();
    let replays: Vec<String> = app
        .core
        .audit_events(&sesame::store::AuditQuery {
            limit: 500,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event == "oauth_code_replay")
        .map(|e| e.outcome)
        .collect();
    assert_eq!(
        replays.iter().filter(|o| *o == "session_revoked").count(),
        1,
        "{replays:?}"
    );
    assert!(replays.len() <= 31, "{} recorded", replays.len());

    let pkce_b = pkce();
    let late = code_for(&app, &mut Browser::new(), "web", &pkce_b).await;
    app.clock.advance(61);
    oauth_error(
        exchange(&app, &secret, &late, &pkce_b.verifier).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;

    // A code issued to the public client cannot be redeemed by another.
    let pkce_c = pkce();
    let public_code = code_for(&app, &mut Browser::new(), "spa", &pkce_c).await;
    oauth_error(
        exchange(&app, &secret, &public_code, &pkce_c.verifier).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    let public = token(
        &app,
        None,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", "spa"),
            ("code", &public_code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &pkce_c.verifier),
        ],
    )
    .await;
    assert_eq!(
        public.status(),
        StatusCode::OK,
        "a public client needs no secret"
    );
    // Its spent code, which anyone who saw the redirect has together with
    // the client's id, ends its session only with the PKCE verifier.
    let public_access = public.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let replay = |verifier: String, redirect_uri: &'static str| {
        let (app, code) = (&app, &public_code);
        async move {
            token(
                app,
                None,
                &[
                    ("grant_type", "authorization_code"),
                    ("client_id", "spa"),
                    ("code", code),
                    ("redirect_uri", redirect_uri),
                    ("code_verifier", &verifier),
                ],
            )
            .await
        }
    };
    oauth_error(
        replay(pkce().verifier, REDIRECT).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    oauth_error(
        replay(pkce_c.verifier.clone(), "https://elsewhere.example/cb").await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    assert_eq!(
        userinfo(&app, &public_access).await.status(),
        StatusCode::OK,
        "a replay without the verifier, or to another redirect URI, ends nothing"
    );
    oauth_error(
        replay(pkce_c.verifier.clone(), REDIRECT).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    assert_eq!(
        userinfo(&app, &public_access).await.status(),
        StatusCode::UNAUTHORIZED,
        "the first use's own replay ends its session"
    );
}

#[tokio::test]
async fn client_authentication_and_grant_rules() {
    let (app, secret) = spawn().await;
    let bad_secret = token(
        &app,
        Some(("web", "wrong-secret-wrong-secret-wrong-secret")),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(
        bad_secret.headers()["www-authenticate"],
        "Basic realm=\"sesame\""
    );
    oauth_error(bad_secret, StatusCode::UNAUTHORIZED, "invalid_client").await;
    let nobody = token(&app, None, &[("grant_type", "client_credentials")]).await;
    oauth_error(nobody, StatusCode::UNAUTHORIZED, "invalid_client").await;
    let both = token(
        &app,
        Some(("web", &secret)),
        &[
            ("grant_type", "client_credentials"),
            ("client_secret", &secret),
        ],
    )
    .await;
    oauth_error(both, StatusCode::BAD_REQUEST, "invalid_request").await;
    let unknown_grant = token(
        &app,
        Some(("web", &secret)),
        &[("grant_type", "implicit-hunter2")],
    )
    .await;
    let body = oauth_error(
        unknown_grant,
        StatusCode::BAD_REQUEST,
        "unsupported_grant_type",
    )
    .await;
    assert!(!body.to_string().contains("hunter2"), "echoed: {body}");
    let not_form = reqwest::Client::new()
        .post(app.url("/oauth2/token"))
        .json(&serde_json::json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    oauth_error(not_form, StatusCode::BAD_REQUEST, "invalid_request").await;

    // The public client may not use the password grant.
    let public_password = token(
        &app,
        None,
        &[
            ("grant_type", "password"),
            ("client_id", "spa"),
            ("username", "alice"),
            ("password", PASSWORD),
        ],
    )
    .await;
    oauth_error(
        public_password,
        StatusCode::BAD_REQUEST,
        "unauthorized_client",
    )
    .await;

    // client_secret_post works as well as Basic.
    let post = token(
        &app,
        None,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "web"),
            ("client_secret", &secret),
            ("scope", "email"),
        ],
    )
    .await;
    assert_eq!(post.status(), StatusCode::OK);
    let machine: Value = post.json().await.unwrap();
    assert!(machine.get("refresh_token").is_none() && machine.get("id_token").is_none());
    let claims = jwt_part(machine["access_token"].as_str().unwrap(), 1);
    assert_eq!(
        (claims["sub"].as_str(), claims["client_id"].as_str()),
        (Some("web"), Some("web"))
    );
    assert_eq!(
        userinfo(&app, machine["access_token"].as_str().unwrap())
            .await
            .status(),
        StatusCode::UNAUTHORIZED,
        "a client's own token speaks for no user"
    );
    let too_wide = token(
        &app,
        Some(("web", &secret)),
        &[
            ("grant_type", "client_credentials"),
            ("scope", "admin-hunter2"),
        ],
    )
    .await;
    let body = oauth_error(too_wide, StatusCode::BAD_REQUEST, "invalid_scope").await;
    assert!(!body.to_string().contains("hunter2"), "echoed: {body}");

    let wrong_password = token(
        &app,
        Some(("web", &secret)),
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "nope"),
        ],
    )
    .await;
    oauth_error(wrong_password, StatusCode::BAD_REQUEST, "invalid_grant").await;
    let password = token(
        &app,
        Some(("web", &secret)),
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", PASSWORD),
            ("scope", "openid"),
        ],
    )
    .await;
    assert_eq!(password.status(), StatusCode::OK);
    let grant: Value = password.json().await.unwrap();
    assert_eq!(
        jwt_part(grant["id_token"].as_str().unwrap(), 1)["aud"],
        "web"
    );
}

#[tokio::test]
async fn refresh_tokens_rotate_detect_reuse_and_belong_to_their_client() {
    let (app, secret) = spawn().await;
    let first: Value = token(
        &app,
        Some(("web", &secret)),
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", PASSWORD),
        ],
    )
    .await
    .json()
    .await
    .unwrap();
    let refresh = first["refresh_token"].as_str().unwrap();
    // Not usable on the native API, nor by another client; nor on the
    // native API written out with the client's namespace (it would hash as
    // the client's token, and turn into tokens with no client, fit for the
    // admin API).
    assert_eq!(
        app.refresh(refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    for disguised in [
        format!("oauth:web:{refresh}"),
        format!("oauth%3Aweb%3A{refresh}"),
    ] {
        assert_eq!(
            app.refresh(&disguised).await.status(),
            StatusCode::UNAUTHORIZED,
            "{disguised}"
        );
    }
    let introspected: Value = reqwest::Client::new()
        .post(app.url("/oauth2/introspect"))
        .basic_auth("web", Some(&secret))
        .form(&[("token", format!("oauth:web:{refresh}"))])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(introspected["active"], false);
    let other = token(
        &app,
        None,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "spa"),
            ("refresh_token", refresh),
        ],
    )
    .await;
    oauth_error(other, StatusCode::BAD_REQUEST, "invalid_grant").await;

    let narrower = token(
        &app,
        Some(("web", &secret)),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("scope", "openid phone admin"),
        ],
    )
    .await;
    oauth_error(narrower, StatusCode::BAD_REQUEST, "invalid_scope").await;
    let second: Value = token(
        &app,
        Some(("web", &secret)),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("scope", "openid"),
        ],
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(second["scope"], "openid");
    let next = second["refresh_token"].as_str().unwrap();
    assert_ne!(next, refresh);
    app.clock.advance(10);
    let reuse = token(
        &app,
        Some(("web", &secret)),
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
    )
    .await;
    oauth_error(reuse, StatusCode::BAD_REQUEST, "invalid_grant").await;
    let after = token(
        &app,
        Some(("web", &secret)),
        &[("grant_type", "refresh_token"), ("refresh_token", next)],
    )
    .await;
    oauth_error(after, StatusCode::BAD_REQUEST, "invalid_grant").await;
}

async fn form_post(
    app: &TestApp,
    path: &str,
    auth: Option<(&str, &str)>,
    form: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = reqwest::Client::new().post(app.url(path)).form(form);
    if let Some((id, secret)) = auth {
        request = request.basic_auth(id, Some(secret));
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn introspection_and_revocation() {
    let (app, secret) = spawn().await;
    let grant: Value = token(
        &app,
        Some(("web", &secret)),
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", PASSWORD),
        ],
    )
    .await
    .json()
    .await
    .unwrap();
    let access = grant["access_token"].as_str().unwrap();
    let refresh = grant["refresh_token"].as_str().unwrap();
    let introspect = |token: String| {
        let app = &app;
        let secret = secret.clone();
        async move {
            let response = form_post(
                app,
                "/oauth2/introspect",
                Some(("web", &secret)),
                &[("token", &token)],
            )
            .await;
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()["cache-control"], "no-store");
            response.json::<Value>().await.unwrap()
        }
    };
    let active = introspect(access.to_owned()).await;
    assert_eq!(active["active"], true);
    assert_eq!(active["client_id"], "web");
    assert_eq!(active["username"], "alice");
    let active_refresh = introspect(refresh.to_owned()).await;
    assert_eq!(
        (
            active_refresh["active"].as_bool(),
            active_refresh["token_type"].as_str()
        ),
        (Some(true), Some("refresh_token"))
    );
    for junk in ["garbage", "a.b.c", &"f".repeat(32)] {
        assert_eq!(
            introspect(junk.to_owned()).await,
            serde_json::json!({"active": false})
        );
    }
    // Sent without a value, as if omitted (RFC 6749 §3.1): `token` is required.
    oauth_error(
        form_post(
            &app,
            "/oauth2/introspect",
            Some(("web", &secret)),
            &[("token", "")],
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    let native = app.login_ok("alice").await;
    assert_eq!(
        introspect(crate::helpers::access(&native).to_owned()).await["active"],
        true
    );

    let public = form_post(
        &app,
        "/oauth2/introspect",
        None,
        &[("client_id", "spa"), ("token", access)],
    )
    .await;
    oauth_error(public, StatusCode::UNAUTHORIZED, "invalid_client").await;

    let garbage = form_post(
        &app,
        "/oauth2/revoke",
        Some(("web", &secret)),
        &[("token", "garbage")],
    )
    .await;
    assert_eq!(garbage.status(), StatusCode::OK);
    let revoked = form_post(
        &app,
        "/oauth2/revoke",
        Some(("web", &secret)),
        &[("token", refresh), ("token_type_hint", "refresh_token")],
    )
    .await;
    assert_eq!(revoked.status(), StatusCode::OK);
    assert_eq!(introspect(refresh.to_owned()).await["active"], false);
    assert_eq!(
        introspect(access.to_owned()).await["active"],
        false,
        "the session ended"
    );
    assert_eq!(
        userinfo(&app, access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    app.clock.advance(3700);
    assert_eq!(
        introspect(crate::helpers::access(&native).to_owned()).await["active"],
        false,
        "expired"
    );
}

#[tokio::test]
async fn logout_ends_the_browser_session_and_what_it_gave_clients() {
    let (app, secret) = spawn().await;
    let mut browser = Browser::new();
    let tokens = signed_in(&app, &secret, &mut browser).await;
    let access = tokens["access_token"].as_str().unwrap();
    let id_token = tokens["id_token"].as_str().unwrap();

    // Without a hint the user is asked first: a link elsewhere signs no one out.
    let ask = browser.get(&app.url("/oauth2/logout")).await;
    assert_eq!(ask.status(), StatusCode::OK);
    assert!(
        ask.text()
            .await
            .unwrap()
            .contains("action=\"/oauth2/logout\"")
    );
    assert_eq!(userinfo(&app, access).await.status(), StatusCode::OK);

    let unregistered = browser
        .get(&app.url(&format!(
            "/oauth2/logout?id_token_hint={id_token}&post_logout_redirect_uri=https%3A%2F%2Fevil.example%2F"
        )))
        .await;
    assert_eq!(unregistered.status(), StatusCode::BAD_REQUEST);
    assert_eq!(userinfo(&app, access).await.status(), StatusCode::OK);

    // Somebody else's ID token in a link does not sign alice out: she is
    // asked. Her own, sent from another browser (no cookie), ends nothing
    // of hers. An access token is no ID token.
    app.create_user_full("bob", None, None, &[]).await;
    let bobs: Value = password_grant(&app, &secret, "bob").await;
    let bobs_id_token = bobs["id_token"].as_str().unwrap();
    let foreign = browser
        .get(&app.url(&format!("/oauth2/logout?id_token_hint={bobs_id_token}")))
        .await;
    assert_eq!(foreign.status(), StatusCode::OK);
    assert!(
        foreign
            .text()
            .await
            .unwrap()
            .contains("action=\"/oauth2/logout\""),
        "asked first"
    );
    assert_eq!(userinfo(&app, access).await.status(), StatusCode::OK);
    let elsewhere = Browser::new()
        .get(&app.url(&format!("/oauth2/logout?id_token_hint={id_token}")))
        .await;
    assert_eq!(elsewhere.status(), StatusCode::OK);
    assert_eq!(userinfo(&app, access).await.status(), StatusCode::OK);
    let not_an_id_token = browser
        .get(&app.url(&format!("/oauth2/logout?id_token_hint={access}")))
        .await;
    assert_eq!(not_an_id_token.status(), StatusCode::BAD_REQUEST);
    assert_eq!(userinfo(&app, access).await.status(), StatusCode::OK);

    let out = browser
        .get(&app.url(&format!(
            "/oauth2/logout?id_token_hint={id_token}&post_logout_redirect_uri={}&state=bye",
            url::form_urlencoded::byte_serialize(LOGOUT_REDIRECT.as_bytes()).collect::<String>()
        )))
        .await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let (base, params) = location_params(&out);
    assert_eq!(
        (base.as_str(), param(&params, "state")),
        (LOGOUT_REDIRECT, Some("bye"))
    );
    assert_eq!(
        userinfo(&app, access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let refresh = token(
        &app,
        Some(("web", &secret)),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
        ],
    )
    .await;
    oauth_error(refresh, StatusCode::BAD_REQUEST, "invalid_grant").await;
    let page = browser.get(&authorize_url(&app, "web", &pkce(), "")).await;
    assert_eq!(
        page.status(),
        StatusCode::OK,
        "the browser must sign in again"
    );
}

/// Posts the logout confirmation form of `html` as the user would.
async fn confirm_logout(app: &TestApp, browser: &mut Browser, html: &str) -> reqwest::Response {
    let form = [
        ("csrf", hidden(html, "csrf")),
        (
            "post_logout_redirect_uri",
            hidden(html, "post_logout_redirect_uri"),
        ),
        ("client_id", hidden(html, "client_id")),
    ];
    browser.post(&app.url("/oauth2/logout"), &form).await
}

/// Every session a browser opened is within reach of its logout: one it
/// signed in again over (`prompt=login`), a logout form posted from
/// another site (which comes without the cookie), a confirmation asked
/// for on somebody else's hint, and a hint signed by a retired key.
#[tokio::test]
async fn logout_reaches_every_session_the_browser_opened() {
    let (app, secret) = spawn().await;
    let tokens = |code: String, verifier: String| {
        let (app, secret) = (&app, &secret);
        async move {
            let answer = exchange(app, secret, &code, &verifier).await;
            assert_eq!(answer.status(), StatusCode::OK);
            answer.json::<Value>().await.unwrap()
        }
    };
    let refused = |tokens: &Value| {
        let (app, secret) = (&app, &secret);
        let access = tokens["access_token"].as_str().unwrap().to_owned();
        let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
        async move {
            assert_eq!(
                userinfo(app, &access).await.status(),
                StatusCode::UNAUTHORIZED
            );
            let grant = token(
                app,
                Some(("web", secret)),
                &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
            )
            .await;
            oauth_error(grant, StatusCode::BAD_REQUEST, "invalid_grant").await;
        }
    };
    let encoded = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();

    // Signed in, then again over it (prompt=login): the first client
    // session moves to the new browser session, which a logout ends.
    let mut browser = Browser::new();
    let first_pkce = pkce();
    let first = code_for(&app, &mut browser, "web", &first_pkce).await;
    let first = tokens(first, first_pkce.verifier.clone()).await;
    let again_pkce = pkce();
    let again = browser
        .sign_in(
            &app,
            &authorize_url(&app, "web", &again_pkce, "&prompt=login"),
            "alice",
            PASSWORD,
        )
        .await;
    assert_eq!(again.status(), StatusCode::SEE_OTHER);
    let (_, params) = location_params(&again);
    let again = tokens(
        param(&params, "code").unwrap().to_owned(),
        again_pkce.verifier.clone(),
    )
    .await;
    assert_eq!(
        userinfo(&app, first["access_token"].as_str().unwrap())
            .await
            .status(),
        StatusCode::OK,
        "signing in again ends no client's session"
    );

    // The RP posts its logout form from another site: no cookie comes
    // with it, so it is sent on to the same request as a GET, which
    // brings the cookie and ends both.
    let hint = first["id_token"].as_str().unwrap();
    let cross_site = no_redirects()
        .post(app.url("/oauth2/logout"))
        .form(&[
            ("id_token_hint", hint),
            ("post_logout_redirect_uri", LOGOUT_REDIRECT),
            ("state", "bye"),
            ("unrelated", "field"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), StatusCode::SEE_OTHER);
    let location = cross_site.headers()["location"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        location.starts_with(&app.url("/oauth2/logout?")) && !location.contains("unrelated"),
        "{location}"
    );
    assert!(
        first["access_token"].is_string()
            && userinfo(&app, first["access_token"].as_str().unwrap())
                .await
                .status()
                == StatusCode::OK,
        "nothing ended before the browser comes back with its cookie"
    );
    let out = browser.get(&location).await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let (base, params) = location_params(&out);
    assert_eq!(
        (base.as_str(), param(&params, "state")),
        (LOGOUT_REDIRECT, Some("bye"))
    );
    refused(&first).await;
    refused(&again).await;

    // Signed in again as alice; bob's ID token and a return address, no
    // client_id: she is asked, and the confirmed form (which carries the
    // hint's client) signs her out and goes back to the client.
    let mut browser = Browser::new();
    let third_pkce = pkce();
    let third = code_for(&app, &mut browser, "web", &third_pkce).await;
    let third = tokens(third, third_pkce.verifier.clone()).await;
    app.create_user_full("bob", None, None, &[]).await;
    let bobs = password_grant(&app, &secret, "bob").await;
    let ask = browser
        .get(&app.url(&format!(
            "/oauth2/logout?id_token_hint={}&post_logout_redirect_uri={}",
            bobs["id_token"].as_str().unwrap(),
            encoded(LOGOUT_REDIRECT)
        )))
        .await;
    assert_eq!(ask.status(), StatusCode::OK);
    let html = ask.text().await.unwrap();
    assert_eq!(hidden(&html, "client_id"), "web");
    let confirmed = confirm_logout(&app, &mut browser, &html).await;
    assert_eq!(confirmed.status(), StatusCode::SEE_OTHER);
    assert_eq!(location_params(&confirmed).0, LOGOUT_REDIRECT);
    refused(&third).await;

    // An ID token signed by a key retired since: the user is asked (not
    // an error page, which would sign no one out).
    let mut browser = Browser::new();
    let fourth_pkce = pkce();
    let fourth = code_for(&app, &mut browser, "web", &fourth_pkce).await;
    let fourth = tokens(fourth, fourth_pkce.verifier.clone()).await;
    app.core.rotate_keys(&Actor::Operator, true).await.unwrap();
    // The reload the rotation's notice starts (PostgreSQL, Redis) settles
    // at the old time first.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    app.clock.advance(3600 + 30 + 60 + 1);
    let old_hint = fourth["id_token"].as_str().unwrap();
    // Retired once the node has reloaded after the advance (a reload the
    // rotation's notice started before it may finish after ours).
    let old_kid = jwt_part(old_hint, 0)["kid"].as_str().unwrap().to_owned();
    let mut retired = false;
    for _ in 0..100 {
        app.core.reload_keys().await.unwrap();
        let jwks: Value = reqwest::get(app.url("/.well-known/jwks.json"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if !jwks.to_string().contains(&old_kid) {
            retired = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(retired, "the old key retires");
    // Nor may a silent authorization answer for whoever is signed in.
    let silent = browser
        .get(&authorize_url(
            &app,
            "web",
            &pkce(),
            &format!("&prompt=none&id_token_hint={old_hint}"),
        ))
        .await;
    assert_eq!(
        param(&location_params(&silent).1, "error"),
        Some("login_required")
    );
    // The usual form (a return address, no client_id): the hint still
    // names whose return addresses count, once the user confirmed.
    let ask = browser
        .get(&app.url(&format!(
            "/oauth2/logout?id_token_hint={old_hint}&post_logout_redirect_uri={}",
            encoded(LOGOUT_REDIRECT)
        )))
        .await;
    assert_eq!(ask.status(), StatusCode::OK);
    let html = ask.text().await.unwrap();
    assert!(html.contains("action=\"/oauth2/logout\""));
    assert_eq!(hidden(&html, "client_id"), "web");
    let confirmed = confirm_logout(&app, &mut browser, &html).await;
    assert_eq!(confirmed.status(), StatusCode::SEE_OTHER);
    assert_eq!(location_params(&confirmed).0, LOGOUT_REDIRECT);
    refused(&fourth).await;
}

#[tokio::test]
async fn rotated_keys_keep_verifying_until_their_tokens_expire() {
    let (app, secret) = spawn().await;
    let old: Value = password_grant(&app, &secret, "alice").await;
    let old_access = old["access_token"].as_str().unwrap();
    let old_kid = jwt_part(old_access, 0)["kid"].as_str().unwrap().to_owned();
    let rotated = app.core.rotate_keys(&Actor::Operator, false).await.unwrap();
    assert_ne!(rotated.kid, old_kid);
    let ahead = sesame::core::keys::PUBLISH_AHEAD;
    assert_eq!(
        rotated.state,
        sesame::core::keys::KeyState::Next(rotated.created_at + ahead)
    );
    let jwks: Value = reqwest::get(app.url("/.well-known/jwks.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(kids.contains(&old_kid.as_str()) && kids.contains(&rotated.kid.as_str()));
    // Published ahead: the old key signs on until the new one's time.
    let early: Value = password_grant(&app, &secret, "alice").await;
    assert_eq!(
        jwt_part(early["access_token"].as_str().unwrap(), 0)["kid"],
        old_kid.as_str()
    );
    // (The new key was dated a second after the old one: both fell in the
    // same second of the test clock.)
    app.clock.advance(ahead + 1);
    let new: Value = token(
        &app,
        Some(("web", &secret)),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", old["refresh_token"].as_str().unwrap()),
        ],
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        jwt_part(new["access_token"].as_str().unwrap(), 0)["kid"],
        rotated.kid.as_str()
    );
    assert_eq!(
        jwt_part(new["id_token"].as_str().unwrap(), 0)["kid"],
        rotated.kid.as_str()
    );
    assert_eq!(
        userinfo(&app, old_access).await.status(),
        StatusCode::OK,
        "no one is logged out"
    );

    // Access lifetime plus leeway after the new key started signing, and
    // the minute in which a node that missed the rotation's notice may
    // still sign with the old key.
    let published = || async {
        app.core.reload_keys().await.unwrap();
        let jwks: Value = reqwest::get(app.url("/.well-known/jwks.json"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect::<Vec<String>>()
    };
    // (The clock stands at the new key's start.)
    app.clock.advance(3600 + 30 + 60 - 1);
    assert!(
        published().await.contains(&old_kid),
        "verifying while a node that missed the notice may sign with it"
    );
    app.clock.advance(1);
    assert_eq!(
        published().await,
        std::slice::from_ref(&rotated.kid),
        "the old key retired"
    );
    // Retired as long again, it is deleted by a reload (its private key is
    // gone from the database), not kept until the next rotation. A
    // rotation before then (the CLI's, perhaps, whose access_ttl may be
    // shorter than the servers') keeps it too.
    let stored = app.core.signing_keys().await.unwrap();
    assert!(stored.iter().any(|k| k.kid == old_kid), "{stored:?}");
    app.core.rotate_keys(&Actor::Operator, true).await.unwrap();
    let stored = app.core.signing_keys().await.unwrap();
    assert!(stored.iter().any(|k| k.kid == old_kid), "{stored:?}");
    app.clock.advance(3600 + 30 + 60);
    app.core.reload_keys().await.unwrap();
    let stored = app.core.signing_keys().await.unwrap();
    assert!(stored.iter().all(|k| k.kid != old_kid), "{stored:?}");
}

/// Junk at every OAuth route: never a 500, always the face's own shape
/// (JSON errors for the machine endpoints, an HTML page for the browser ones).
#[tokio::test]
async fn junk_at_every_oauth_route_gets_an_error_in_the_routes_own_shape() {
    let (app, _) = spawn().await;
    let http = no_redirects();
    let bodies: [&[u8]; 8] = [
        b"",
        b"%ff%fe=%00",
        b"grant_type=authorization_code&grant_type=password",
        b"token=\x01\x02&client_id=%zz",
        b"\xff\xfe\xfd",
        b"client_id=web&client_secret=",
        b"code_challenge=&code_challenge_method=S256&client_id=web&response_type=code",
        b"=&&==&a",
    ];
    let long = "x".repeat(60_000);
    let machine = [
        "/oauth2/token",
        "/oauth2/introspect",
        "/oauth2/revoke",
        "/oauth2/userinfo",
    ];
    let browser = [
        "/oauth2/authorize",
        "/oauth2/authorize/sign-in",
        "/oauth2/authorize/continue",
        "/oauth2/logout",
    ];
    for path in machine.iter().chain(browser.iter()) {
        let mut requests = Vec::new();
        for body in bodies {
            for content_type in [
                "application/x-www-form-urlencoded",
                "application/json",
                "text/plain",
            ] {
                requests.push(
                    http.post(app.url(path))
                        .header("content-type", content_type)
                        .header("authorization", "Basic !!!not-base64")
                        .body(body.to_vec()),
                );
            }
        }
        requests.push(
            http.post(app.url(path))
                .basic_auth("no:colon\u{7f}", Some(""))
                .body(""),
        );
        requests.push(
            http.post(app.url(path))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("client_id={long}&token={long}")),
        );
        requests.push(http.put(app.url(path)).body("x"));
        requests.push(http.delete(app.url(path)));
        let too_large = http
            .post(app.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("client_id={long}&token={long}"))
            .send()
            .await
            .unwrap();
        assert_eq!(too_large.status(), StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        requests.push(http.get(app.url(&format!("{path}?client_id=%ff&redirect_uri={long}&x=%"))));
        requests.push(http.get(app.url(&format!("{path}?id_token_hint=a.b.c&state=%00"))));
        for request in requests {
            let response = request.send().await.unwrap();
            let status = response.status();
            assert!(
                status.is_client_error() || status.is_success() || status.is_redirection(),
                "{path}: {status}"
            );
            let content_type = response
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            if machine.contains(path) {
                assert!(
                    content_type.starts_with("application/json"),
                    "{path} {status}: {content_type}"
                );
                let body: Value = response.json().await.unwrap();
                assert!(body["error"].is_string(), "{path}: {body}");
            } else if !status.is_redirection() {
                assert_eq!(content_type, "text/html; charset=utf-8", "{path} {status}");
                let html = response.text().await.unwrap();
                assert!(!html.contains(&long), "{path} echoes a huge value");
            }
        }
    }
}

/// Ending a browser session anywhere (the user's session list here) ends
/// what it gave clients; removing a client ends every session opened for it.
#[tokio::test]
async fn ending_a_browser_session_or_removing_a_client_ends_their_sessions() {
    let (app, secret) = spawn().await;
    let mut browser = Browser::new();
    let tokens = signed_in(&app, &secret, &mut browser).await;
    let access = tokens["access_token"].as_str().unwrap();
    let browser_session = jwt_part(tokens["id_token"].as_str().unwrap(), 1)["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    // The user, signed in to the native API, ends the browser session.
    let native = app.login_ok("alice").await;
    let listed: Value = app
        .get("/v1/me/sessions", crate::helpers::access(&native))
        .await
        .json()
        .await
        .unwrap();
    assert!(listed.to_string().contains(&browser_session), "{listed}");
    let ended = reqwest::Client::new()
        .delete(app.url(&format!("/v1/me/sessions/{browser_session}")))
        .bearer_auth(crate::helpers::access(&native))
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        userinfo(&app, access).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // An administrator ending the browser session does the same.
    let tokens = signed_in(&app, &secret, &mut Browser::new()).await;
    let access_b = tokens["access_token"].as_str().unwrap().to_owned();
    let browser_b = jwt_part(tokens["id_token"].as_str().unwrap(), 1)["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    app.create_user_full("root", None, None, &["administrator"])
        .await;
    let admin = app.login_ok("root").await;
    let ended = reqwest::Client::new()
        .delete(app.url(&format!("/v1/admin/sessions/{browser_b}")))
        .bearer_auth(crate::helpers::access(&admin))
        .send()
        .await
        .unwrap();
    assert!(ended.status().is_success(), "{}", ended.status());
    assert_eq!(
        userinfo(&app, &access_b).await.status(),
        StatusCode::UNAUTHORIZED
    );

    let grant: Value = token(
        &app,
        Some(("web", &secret)),
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", PASSWORD),
        ],
    )
    .await
    .json()
    .await
    .unwrap();
    let access = grant["access_token"].as_str().unwrap();
    assert_eq!(userinfo(&app, access).await.status(), StatusCode::OK);
    app.core
        .remove_client("web", &Actor::Operator)
        .await
        .unwrap();
    assert_eq!(
        userinfo(&app, access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.me_status(access).await, StatusCode::UNAUTHORIZED);
}

/// A login on a `single` platform replaces the account's sessions on it.
/// The sign-in page's session is on `web`: replaced, it takes the sessions
/// it gave clients with it, as its logout would (they outlived it). The
/// clients' own sessions (platform `oauth`) are never replaced by a login
/// that names that platform.
#[tokio::test]
async fn a_login_replacing_the_browser_session_ends_what_it_gave_clients() {
    let app = TestApp::spawn_with(|c| {
        c.sessions.platforms.insert("web".into(), "single".into());
        c.sessions.platforms.insert("oauth".into(), "single".into());
    })
    .await;
    app.create_user_full("alice", Some("alice@example.com"), None, &[])
        .await;
    let secret = clients(&app).await;
    let mut browser = Browser::new();
    let tokens = signed_in(&app, &secret, &mut browser).await;
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let refreshed: Value = refresh_grant(&app, &secret, &refresh)
        .await
        .json()
        .await
        .unwrap();
    let refresh = refreshed["refresh_token"].as_str().unwrap().to_owned();

    // A login naming the clients' platform leaves their sessions alone.
    let answer = app
        .post_json(
            "/v1/login",
            &serde_json::json!({"login": "alice", "password": PASSWORD, "platform": "oauth"}),
        )
        .await;
    assert_eq!(answer.status(), StatusCode::OK);
    let refreshed: Value = refresh_grant(&app, &secret, &refresh)
        .await
        .json()
        .await
        .unwrap();
    let refresh = refreshed["refresh_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{refreshed}"))
        .to_owned();
    let access = refreshed["access_token"].as_str().unwrap().to_owned();
    assert_eq!(userinfo(&app, &access).await.status(), StatusCode::OK);

    // A login on `web` replaces the browser session, and with it the
    // client's session.
    let answer = app
        .post_json(
            "/v1/login",
            &serde_json::json!({"login": "alice", "password": PASSWORD, "platform": "web"}),
        )
        .await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(
        userinfo(&app, &access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    oauth_error(
        refresh_grant(&app, &secret, &refresh).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    // The page asks again: the browser session is gone.
    let page = browser.get(&authorize_url(&app, "web", &pkce(), "")).await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("name=\"password\""));
}

/// A client's session ends no later than the browser session it came
/// from: a code redeemed on the sign-in's last day gives no session a whole
/// refresh lifetime beyond it (which no logout could reach afterwards).
#[tokio::test]
async fn a_clients_session_ends_with_its_browser_session() {
    let (app, secret) = spawn().await;
    let mut browser = Browser::new();
    code_for(&app, &mut browser, "web", &pkce()).await;
    let lifetime = app.core.settings().tokens.refresh_ttl;
    app.clock.advance(lifetime - 100);
    let late = pkce();
    let response = browser.get(&authorize_url(&app, "web", &late, "")).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "single sign-on");
    let (_, params) = location_params(&response);
    let tokens: Value = exchange(
        &app,
        &secret,
        param(&params, "code").unwrap(),
        &late.verifier,
    )
    .await
    .json()
    .await
    .unwrap();
    let answer = refresh_grant(&app, &secret, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(answer.status(), StatusCode::OK);
    let rotated: Value = answer.json().await.unwrap();
    app.clock.advance(101);
    oauth_error(
        refresh_grant(&app, &secret, rotated["refresh_token"].as_str().unwrap()).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
}

/// Behind HTTPS (`public_url`), the cookies are `Secure` with the `__Host-`
/// prefix, so no other host (a sibling subdomain) can plant or read them;
/// under a path prefix, the pages link below it.
#[tokio::test]
async fn over_https_the_cookies_are_secure_host_cookies() {
    let app =
        TestApp::spawn_with(|raw| raw.public_url = Some("https://login.example.test/auth".into()))
            .await;
    app.create_user_full("alice", None, None, &[]).await;
    clients(&app).await;
    let pkce = pkce();
    let mut browser = Browser::new();
    let page = browser.get(&authorize_url(&app, "web", &pkce, "")).await;
    let (_, csrf) = set_cookie(page.headers(), "__Host-sesame_csrf").expect("csrf cookie");
    let html = page.text().await.unwrap();
    assert!(
        html.contains("action=\"/auth/oauth2/authorize/sign-in\""),
        "{html}"
    );
    assert!(
        csrf.contains("; Path=/;") && csrf.contains("Secure"),
        "{csrf}"
    );
    let answer = browser
        .sign_in(
            &app,
            &authorize_url(&app, "web", &pkce, ""),
            "alice",
            PASSWORD,
        )
        .await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    let (_, session) =
        set_cookie(answer.headers(), "__Host-sesame_session").expect("session cookie");
    assert!(
        session.contains("Secure") && session.contains("HttpOnly"),
        "{session}"
    );
    let (_, params) = location_params(&answer);
    assert_eq!(
        param(&params, "iss"),
        Some("https://login.example.test/auth")
    );
    let discovery: Value = reqwest::get(app.url("/.well-known/openid-configuration"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], "https://login.example.test/auth");
    assert_eq!(
        discovery["token_endpoint"],
        "https://login.example.test/auth/oauth2/token"
    );
}

/// The algorithm changed (EdDSA to RS256) and, long after, back: the old
/// EdDSA key, retired since, is not put back to sign (the change back may
/// be because it was suspect); a new one is made at start.
#[tokio::test]
async fn a_retired_key_is_not_revived_by_changing_the_algorithm_back() {
    use sesame::core::keys::{SigningAlgorithm, generate};
    let deployment = crate::helpers::Deployment::new().await;
    let store = deployment.open_store().await;
    let old = generate(SigningAlgorithm::EdDSA, START - 20_000).unwrap();
    let other = generate(SigningAlgorithm::RS256, START - 10_000).unwrap();
    store.insert_signing_key(&old).await.unwrap();
    store.insert_signing_key(&other).await.unwrap();
    let app = TestApp::spawn_in(deployment, |_| {}).await;
    app.create_user("alice").await;
    let grant = app.login_ok("alice").await;
    let kid = jwt_part(access(&grant), 0)["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(kid, old.kid, "the retired key signs again");
    assert_ne!(kid, other.kid);
    let jwks: Value = reqwest::get(app.url("/.well-known/jwks.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let published = jwks.to_string();
    assert!(!published.contains(&old.kid), "{published}");
    assert!(published.contains(&kid));
    assert!(published.contains(&other.kid), "verifies a while yet");
}

/// The `refresh_token` grant spends the session's refresh budget like
/// every face's refresh: refused with 429 and `Retry-After`, in RFC 6749's
/// error shape, and collected after the wait.
#[tokio::test]
async fn a_clients_looping_refresh_is_throttled() {
    let app = TestApp::spawn_with(|c| {
        c.abuse.refresh_burst = 1;
        c.abuse.refresh_interval = 3;
    })
    .await;
    app.create_user_full("alice", Some("alice@example.com"), None, &[])
        .await;
    let secret = clients(&app).await;
    let mut browser = Browser::new();
    let tokens = signed_in(&app, &secret, &mut browser).await;
    let first = tokens["refresh_token"].as_str().unwrap().to_owned();
    let answer = refresh_grant(&app, &secret, &first).await;
    assert_eq!(answer.status(), StatusCode::OK);
    let second: Value = answer.json().await.unwrap();
    let second = second["refresh_token"].as_str().unwrap().to_owned();
    let refused = refresh_grant(&app, &secret, &second).await;
    assert_eq!(refused.headers()["retry-after"], "3");
    oauth_error(
        refused,
        StatusCode::TOO_MANY_REQUESTS,
        "temporarily_unavailable",
    )
    .await;
    app.clock.advance(3);
    let collected = refresh_grant(&app, &secret, &second).await;
    assert_eq!(collected.status(), StatusCode::OK);
    let collected: Value = collected.json().await.unwrap();
    let access = collected["access_token"].as_str().unwrap();
    assert_eq!(userinfo(&app, access).await.status(), StatusCode::OK);
}

/// A logout cut short after its first step (the browser session ended,
/// the database gone before its client sessions were) is finished by the
/// user's next try: the client sessions do not outlive the browser session.
#[tokio::test]
async fn a_logout_tried_again_ends_the_client_sessions_left_live() {
    let (app, secret) = spawn().await;
    let mut browser = Browser::new();
    let tokens = signed_in(&app, &secret, &mut browser).await;
    let access = tokens["access_token"].as_str().unwrap();
    let browser_session = jwt_part(tokens["id_token"].as_str().unwrap(), 1)["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let store = app.deployment.open_store().await;
    assert!(
        store
            .revoke_session(
                &browser_session,
                sesame::clock::Clock::now(&*app.clock),
                "logout"
            )
            .await
            .unwrap()
    );
    assert_eq!(
        userinfo(&app, access).await.status(),
        StatusCode::OK,
        "left live by the first try"
    );
    let again = browser.get(&app.url("/oauth2/logout")).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert!(
        !again
            .text()
            .await
            .unwrap()
            .contains("action=\"/oauth2/logout\""),
        "signed out already: nothing to confirm"
    );
    assert_eq!(
        userinfo(&app, access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    oauth_error(
        refresh_grant(&app, &secret, tokens["refresh_token"].as_str().unwrap()).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
}

/// A parameter sent without a value is as if omitted (RFC 6749 §3.1), and
/// `state` is printable ASCII: one the sign-in form would hand back changed
/// is refused to the (verified) redirect URI.
#[tokio::test]
async fn empty_parameters_are_omitted_and_state_is_printable() {
    let (app, _) = spawn().await;
    let mut browser = Browser::new();
    let page = browser
        .get(&authorize_url(
            &app,
            "web",
            &pkce(),
            "&response_mode=&prompt=",
        ))
        .await;
    assert_eq!(page.status(), StatusCode::OK, "the sign-in page, no error");
    assert!(page.text().await.unwrap().contains("name=\"password\""));

    let challenge = pkce().challenge;
    let redirect = url::form_urlencoded::byte_serialize(REDIRECT.as_bytes()).collect::<String>();
    let refused = browser
        .get(&app.url(&format!(
            "/oauth2/authorize?response_type=code&client_id=web&redirect_uri={redirect}\
             &scope=openid&state=line%0Abreak&code_challenge={challenge}\
             &code_challenge_method=S256"
        )))
        .await;
    assert_eq!(
        redirected_error(&refused),
        ("invalid_request".into(), Some("line\nbreak".into()))
    );
}

/// The `password` grant comes from the application's server, whose address
/// all its users share: a sign-in through it does not make that address a
/// known client, so guesses through the application stay within the
/// account's budget.
#[tokio::test]
async fn the_password_grants_address_never_becomes_a_known_client() {
    let (app, secret) = spawn().await;
    let signed_in = password_grant(&app, &secret, "alice").await;
    assert!(signed_in["access_token"].is_string(), "{signed_in}");
    let store = app.deployment.open_store().await;
    let found = store
        .find_account_for_login("alice", None, None, Some("127.0.0.1"))
        .await
        .unwrap()
        .unwrap();
    assert!(!found.known_address);
    let guess = || {
        token(
            &app,
            Some(("web", &secret)),
            &[
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", "not her password"),
            ],
        )
    };
    for _ in 0..5 {
        oauth_error(guess().await, StatusCode::BAD_REQUEST, "invalid_grant").await;
    }
    oauth_error(
        guess().await,
        StatusCode::TOO_MANY_REQUESTS,
        "temporarily_unavailable",
    )
    .await;

    // The application's server listed as a trusted proxy, forwarding the
    // user's address: that one is the user's, and known from then on.
    let app = TestApp::spawn_with(|c| c.http.trusted_proxies = vec!["127.0.0.1/32".into()]).await;
    app.create_user_full("alice", Some("alice@example.com"), None, &[])
        .await;
    let secret = clients(&app).await;
    let forwarded = reqwest::Client::new()
        .post(app.url("/oauth2/token"))
        .basic_auth("web", Some(&secret))
        .header("x-forwarded-for", "203.0.113.7")
        .form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(forwarded.status(), StatusCode::OK);
    let store = app.deployment.open_store().await;
    let known = |address: &'static str| {
        let store = &store;
        async move {
            store
                .find_account_for_login("alice", None, None, Some(address))
                .await
                .unwrap()
                .unwrap()
                .known_address
        }
    };
    assert!(known("203.0.113.7").await, "the user's forwarded address");
    assert!(!known("127.0.0.1").await, "never the server's own");
}

/// A signed-in browser asking for codes again and again gets 30 at once,
/// then one every 2 s: each code redeemed opens a session with no password
/// checked. The refusal goes to the client as `temporarily_unavailable`.
#[tokio::test]
async fn single_sign_on_codes_are_bounded_per_browser_session() {
    let (app, _) = spawn().await;
    let mut browser = Browser::new();
    code_for(&app, &mut browser, "web", &pkce()).await;
    let url = || authorize_url(&app, "web", &pkce(), "");
    for turn in 0..30 {
        let answer = browser.get(&url()).await;
        let (_, params) = location_params(&answer);
        assert!(param(&params, "code").is_some(), "code {turn}: {params:?}");
    }
    let refused = browser.get(&url()).await;
    assert_eq!(
        redirected_error(&refused),
        ("temporarily_unavailable".into(), Some("st&ate".into()))
    );
    app.clock.advance(2);
    let again = browser.get(&url()).await;
    let (_, params) = location_params(&again);
    assert!(param(&params, "code").is_some(), "{params:?}");
}

/// A code given through the confirmation page's Continue spends the same
/// budget: the page itself is shown (nothing is given yet), and Continue
/// is refused once the browser session's codes are spent.
#[tokio::test]
async fn continue_spends_the_single_sign_on_code_budget() {
    let (app, _) = spawn().await;
    let mut browser = Browser::new();
    code_for(&app, &mut browser, "web", &pkce()).await;
    for turn in 0..30 {
        let answer = browser.get(&authorize_url(&app, "web", &pkce(), "")).await;
        let (_, params) = location_params(&answer);
        assert!(param(&params, "code").is_some(), "code {turn}: {params:?}");
    }
    let continue_url = app.url("/oauth2/authorize/continue");
    let page = browser.get(&authorize_url(&app, "spa", &pkce(), "")).await;
    assert_eq!(page.status(), StatusCode::OK, "the page asks first");
    let html = page.text().await.unwrap();
    let refused = browser
        .post(&continue_url, &confirmation(&html, "continue"))
        .await;
    assert_eq!(
        redirected_error(&refused),
        ("temporarily_unavailable".into(), Some("st&ate".into()))
    );
    app.clock.advance(2);
    let page = browser.get(&authorize_url(&app, "spa", &pkce(), "")).await;
    let html = page.text().await.unwrap();
    let continued = browser
        .post(&continue_url, &confirmation(&html, "continue"))
        .await;
    let (base, params) = location_params(&continued);
    assert_eq!(base, REDIRECT);
    assert!(param(&params, "code").is_some(), "{params:?}");
}
