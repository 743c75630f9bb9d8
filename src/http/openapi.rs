//! The OpenAPI 3.1 description of every route Sesame serves: `GET
//! /openapi.json` and `sesame openapi`.
//!
//! Paths come from the `#[utoipa::path]` attribute on each handler, schemas
//! from the derives on the request and response types themselves; faces
//! that build their answers by hand (the contracts, OAuth) describe them
//! with types in [`schemas`]. The description is of this deployment: a
//! contract that is off, or metrics on a listener of their own, are left
//! out. `tests/api/openapi.rs` fails when a route exists that it lacks, and
//! CI fuzzes a live server against it (schemathesis).

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

use super::AppState;
use super::contracts::ContractSettings;
use super::metrics::MetricsSettings;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Sesame",
        description = "Login and tokens: the native API, administration, forward auth, OAuth 2.0 / \
            OpenID Connect, and five existing login contracts. Errors of the native and admin \
            APIs are `application/problem+json` (RFC 9457); each contract answers in its own shape."
    ),
    paths(
        super::native::login,
        super::native::refresh,
        super::native::logout,
        super::native::me,
        super::native::update_me,
        super::native::change_password,
        super::native::sessions,
        super::native::end_session,
        super::admin::list_users,
        super::admin::create_user,
        super::admin::show_user,
        super::admin::update_user,
        super::admin::delete_user,
        super::admin::set_password,
        super::admin::unlock,
        super::admin::reset_quota,
        super::admin::user_sessions,
        super::admin::end_user_sessions,
        super::admin::end_session,
        super::admin::legacy_passwords,
        super::admin::list_roles,
        super::admin::show_role,
        super::admin::create_role,
        super::admin::update_role,
        super::admin::delete_role,
        super::admin::audit,
        super::authz::authz,
        aliases::authz_slash,
        aliases::authz_path,
        super::oidc::discovery,
        aliases::authorization_server_metadata,
        super::oidc::authorize_get,
        super::oidc::authorize_post,
        super::oidc::sign_in,
        super::oidc::confirm,
        super::oidc::token,
        super::oidc::userinfo_get,
        super::oidc::userinfo_post,
        super::oidc::introspect,
        super::oidc::revoke,
        super::oidc::logout_get,
        super::oidc::logout_post,
        super::contracts::ai_gateway::login,
        super::contracts::manager::login,
        super::contracts::users_actions::login,
        super::contracts::careyshop::login,
        aliases::careyshop_login,
        super::contracts::careyshop::refresh,
        aliases::careyshop_refresh,
        super::contracts::fungame::login,
        aliases::fungame_login,
        super::wellknown::jwks,
        super::wellknown::healthz,
        super::wellknown::readyz,
        super::metrics::metrics,
        openapi_json,
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "native", description = "Sign in, refresh, sign out; the caller's account and sessions"),
        (name = "admin", description = "Accounts, roles, sessions and the audit log, for bearers holding the `admin` permission"),
        (name = "forward-auth", description = "For reverse proxies (nginx `auth_request`, Traefik, Caddy): any method, any path below"),
        (name = "oauth", description = "OAuth 2.0 and OpenID Connect provider"),
        (name = "ai-gateway", description = "Contract: ai-gateway (seed 000)"),
        (name = "manager", description = "Contract: manager"),
        (name = "users-actions", description = "Contract: users-actions, MD5 of the password"),
        (name = "careyshop", description = "Contract: careyshop (seed 003), opaque tokens, parameters from the query, a form or JSON"),
        (name = "fungame", description = "Contract: fungame"),
        (name = "operations", description = "Health, readiness, metrics, keys and this description"),
    )
)]
struct Description;

struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        components.add_security_scheme(
            "client",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
    }
}

/// The description of a deployment with these faces, served at `server`.
pub fn description(
    server: &str,
    contracts: &ContractSettings,
    metrics: &MetricsSettings,
) -> utoipa::openapi::OpenApi {
    let mut openapi = Description::openapi();
    openapi.info.version = env!("CARGO_PKG_VERSION").to_owned();
    openapi.servers = Some(vec![utoipa::openapi::Server::new(server)]);
    let off: Vec<&str> = [
        ("ai-gateway", contracts.ai_gateway),
        ("manager", contracts.manager),
        ("users-actions", contracts.users_actions),
        ("careyshop", contracts.careyshop),
        ("fungame", contracts.fungame),
    ]
    .into_iter()
    .filter(|(_, on)| !on)
    .map(|(tag, _)| tag)
    .collect();
    openapi.paths.paths.retain(|path, item| {
        let tagged_off = [&item.get, &item.post, &item.put, &item.patch, &item.delete]
            .into_iter()
            .flatten()
            .any(|operation| {
                operation
                    .tags
                    .iter()
                    .flatten()
                    .any(|tag| off.contains(&tag.as_str()))
            });
        let metrics_elsewhere = path == "/metrics" && !metrics.on_the_api_listener();
        !tagged_off && !metrics_elsewhere
    });
    // One handler for several methods carries one operationId; OpenAPI
    // wants one per operation: the method is appended to all but the first.
    for item in openapi.paths.paths.values_mut() {
        let mut seen = std::collections::BTreeSet::new();
        for (method, operation) in [
            ("get", &mut item.get),
            ("post", &mut item.post),
            ("put", &mut item.put),
            ("patch", &mut item.patch),
            ("delete", &mut item.delete),
            ("head", &mut item.head),
            ("options", &mut item.options),
        ] {
            if let Some(id) = operation.as_mut().and_then(|o| o.operation_id.as_mut())
                && !seen.insert(id.clone())
            {
                id.push('_');
                id.push_str(method);
            }
        }
    }
    if let Some(tags) = &mut openapi.tags {
        tags.retain(|tag| !off.contains(&tag.name.as_str()));
    }
    openapi
}

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "This description (OpenAPI 3.1)", body = Object)))]
pub(super) async fn openapi_json(State(state): State<AppState>) -> Response {
    let body = state.openapi.get_or_init(|| {
        let openapi = description(state.core.issuer(), &state.contracts, &state.metrics);
        serde_json::to_vec(&openapi).unwrap_or_default().into()
    });
    let mut response = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.clone(),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Shapes of answers that faces build by hand (the contracts keep their
/// documents' field names and envelopes; OAuth its RFCs'), and the
/// alternate paths of routes that answer under two spellings.
pub(super) mod schemas {
    #![allow(dead_code)]

    use std::collections::BTreeMap;

    use utoipa::ToSchema;

    // ------------------------------------------------------------ health

    /// `/healthz`: the process answers.
    #[derive(ToSchema)]
    pub struct Health {
        /// `ok`.
        status: String,
    }

    /// `/readyz`: what answers and what does not.
    #[derive(ToSchema)]
    pub struct Readiness {
        /// `ready`, `degraded` (serving without Redis) or `unready`.
        status: String,
        /// The parts that fail and keep the node from serving: `database`,
        /// `shutdown`.
        failing: Vec<String>,
        /// The parts that fail while the node still serves: `redis`.
        degraded: Vec<String>,
        /// Each part: `ok`, or why not.
        checks: BTreeMap<String, String>,
    }

    /// A JSON Web Key Set (RFC 7517): the public keys that verify access
    /// and ID tokens, the current one and those retiring.
    #[derive(ToSchema)]
    pub struct Jwks {
        keys: Vec<BTreeMap<String, String>>,
    }

    // ------------------------------------------------------------ OAuth

    /// A token request (RFC 6749 §4.1.3, §4.3.2, §4.4.2, §6).
    #[derive(ToSchema)]
    pub struct TokenRequest {
        /// `authorization_code`, `refresh_token`, `password` or `client_credentials`.
        grant_type: String,
        code: Option<String>,
        redirect_uri: Option<String>,
        /// The PKCE verifier of the code's challenge.
        code_verifier: Option<String>,
        refresh_token: Option<String>,
        username: Option<String>,
        password: Option<String>,
        scope: Option<String>,
        /// A public client's id, or a confidential one's with `client_secret_post`.
        client_id: Option<String>,
        client_secret: Option<String>,
    }

    /// A token answer (RFC 6749 §5.1, OpenID Connect Core §3.1.3.3).
    #[derive(ToSchema)]
    pub struct TokenAnswer {
        access_token: String,
        /// `Bearer`.
        token_type: String,
        expires_in: i64,
        refresh_token: Option<String>,
        /// With the `openid` scope.
        id_token: Option<String>,
        scope: String,
    }

    /// An OAuth error (RFC 6749 §5.2; RFC 6750 §3.1 for bearer errors).
    #[derive(ToSchema)]
    pub struct OAuthError {
        /// `invalid_request`, `invalid_client`, `invalid_grant`, `invalid_token` …
        error: String,
        error_description: Option<String>,
    }

    /// Authorization request parameters (RFC 6749 §4.1.1, PKCE, OpenID
    /// Connect Core §3.1.2.1), in the query or an HTML form.
    #[derive(ToSchema)]
    pub struct AuthorizeRequest {
        client_id: Option<String>,
        redirect_uri: Option<String>,
        /// `code`.
        response_type: Option<String>,
        /// `query`.
        response_mode: Option<String>,
        scope: Option<String>,
        state: Option<String>,
        nonce: Option<String>,
        code_challenge: Option<String>,
        /// `S256`.
        code_challenge_method: Option<String>,
        /// `none` or `login`.
        prompt: Option<String>,
        login_hint: Option<String>,
        max_age: Option<String>,
    }

    /// The hosted sign-in form: the authorization request again, the
    /// credentials and the form's CSRF token (its cookie must match).
    #[derive(ToSchema)]
    pub struct SignInForm {
        client_id: Option<String>,
        redirect_uri: Option<String>,
        response_type: Option<String>,
        scope: Option<String>,
        state: Option<String>,
        nonce: Option<String>,
        code_challenge: Option<String>,
        code_challenge_method: Option<String>,
        /// Carried from the request: the sign-in must be this recent.
        max_age: Option<String>,
        /// Carried from the request: the client expects this user.
        id_token_hint: Option<String>,
        /// `consent` when the request asked for a confirmation.
        prompt: Option<String>,
        login: Option<String>,
        password: Option<String>,
        csrf: Option<String>,
    }

    /// The confirmation page's form: the authorization request again, the
    /// account shown, the button pressed and the form's CSRF token.
    #[derive(ToSchema)]
    pub struct ConfirmForm {
        client_id: Option<String>,
        redirect_uri: Option<String>,
        response_type: Option<String>,
        scope: Option<String>,
        state: Option<String>,
        nonce: Option<String>,
        code_challenge: Option<String>,
        code_challenge_method: Option<String>,
        /// Carried from the request: the sign-in must be this recent.
        max_age: Option<String>,
        /// Carried from the request: the client expects this user.
        id_token_hint: Option<String>,
        /// `consent`: the request asks for a confirmation.
        prompt: Option<String>,
        /// The account the page named (its id).
        account: Option<String>,
        /// `continue`, `switch` (sign in as someone else) or `cancel`.
        choice: Option<String>,
        csrf: Option<String>,
    }

    /// A token to introspect or revoke (RFC 7662, RFC 7009).
    #[derive(ToSchema)]
    pub struct TokenForm {
        token: String,
        /// `access_token` or `refresh_token`.
        token_type_hint: Option<String>,
        client_id: Option<String>,
        client_secret: Option<String>,
    }

    /// Introspection (RFC 7662 §2.2); `{"active": false}` for any token
    /// that is not live.
    #[derive(ToSchema)]
    pub struct Introspection {
        active: bool,
        scope: Option<String>,
        client_id: Option<String>,
        username: Option<String>,
        token_type: Option<String>,
        exp: Option<i64>,
        iat: Option<i64>,
        sub: Option<String>,
        aud: Option<String>,
        iss: Option<String>,
    }

    /// UserInfo claims (OpenID Connect Core §5.3), by scope.
    #[derive(ToSchema)]
    pub struct UserInfo {
        sub: String,
        preferred_username: Option<String>,
        name: Option<String>,
        picture: Option<String>,
        updated_at: Option<i64>,
        email: Option<String>,
        email_verified: Option<bool>,
        phone_number: Option<String>,
        phone_number_verified: Option<bool>,
    }

    /// A userinfo request by form (RFC 6750 §2.2).
    #[derive(ToSchema)]
    pub struct UserInfoForm {
        access_token: Option<String>,
    }

    /// RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0).
    #[derive(ToSchema)]
    pub struct LogoutRequest {
        id_token_hint: Option<String>,
        client_id: Option<String>,
        post_logout_redirect_uri: Option<String>,
        state: Option<String>,
        /// The confirmation form's CSRF token.
        csrf: Option<String>,
    }

    /// Discovery (OpenID Connect Discovery 1.0, RFC 8414).
    #[derive(ToSchema)]
    pub struct Discovery {
        issuer: String,
        authorization_endpoint: String,
        token_endpoint: String,
        userinfo_endpoint: String,
        jwks_uri: String,
        introspection_endpoint: String,
        revocation_endpoint: String,
        end_session_endpoint: String,
        scopes_supported: Vec<String>,
        response_types_supported: Vec<String>,
        grant_types_supported: Vec<String>,
        id_token_signing_alg_values_supported: Vec<String>,
        code_challenge_methods_supported: Vec<String>,
    }

    // ------------------------------------------------------------ contracts

    /// ai-gateway (seed 000) and manager: `{username, password}`.
    #[derive(ToSchema)]
    pub struct UsernamePassword {
        username: String,
        password: String,
    }

    /// ai-gateway's account.
    #[derive(ToSchema)]
    pub struct AiGatewayUser {
        id: String,
        username: String,
        role: String,
        status: String,
        created_at: String,
        updated_at: String,
        last_login: String,
        api_calls_count: i64,
        max_api_calls: i64,
    }

    /// ai-gateway's login answer.
    #[derive(ToSchema)]
    pub struct AiGatewayGrant {
        access_token: String,
        /// `bearer`.
        token_type: String,
        expires_in: i64,
        user: AiGatewayUser,
    }

    /// ai-gateway's errors, FastAPI-style.
    #[derive(ToSchema)]
    pub struct AiGatewayError {
        detail: String,
    }

    /// manager's account.
    #[derive(ToSchema)]
    pub struct ManagerUser {
        username: String,
        role: String,
        permissions: Vec<String>,
    }

    /// manager's login answer.
    #[derive(ToSchema)]
    pub struct ManagerGrant {
        token: String,
        /// Seconds.
        expire: i64,
        user: ManagerUser,
    }

    /// manager's errors.
    #[derive(ToSchema)]
    pub struct ManagerError {
        error: String,
    }

    /// users-actions: `{login, password}` with the MD5 hex of the password.
    #[derive(ToSchema)]
    pub struct UsersActionsLogin {
        /// Username, email or mobile.
        login: String,
        /// 32 hex digits: MD5 of the password.
        password: String,
    }

    /// users-actions's account (and the profile attributes it names).
    #[derive(ToSchema)]
    pub struct UsersActionsUser {
        id: i64,
        #[schema(rename = "userName")]
        user_name: String,
        #[schema(rename = "displayName")]
        display_name: String,
        email: String,
        mobile: String,
        #[schema(rename = "avatarUrl")]
        avatar_url: String,
        #[schema(rename = "countOfLogin")]
        count_of_login: i64,
        #[schema(rename = "isChecked")]
        is_checked: bool,
        #[schema(rename = "isLockedOut")]
        is_locked_out: bool,
    }

    /// users-actions's login answer.
    #[derive(ToSchema)]
    pub struct UsersActionsGrant {
        value: UsersActionsUser,
        #[schema(rename = "accessToken")]
        access_token: String,
    }

    /// users-actions's errors.
    #[derive(ToSchema)]
    pub struct CodeMessage {
        code: i64,
        message: String,
    }

    /// careyshop's parameters, from the query string, a form or JSON.
    #[derive(ToSchema)]
    pub struct CareyshopLogin {
        /// 4 to 20 characters.
        username: Option<String>,
        /// At least 6 characters.
        password: Option<String>,
        /// At most 50 characters.
        platform: Option<String>,
    }

    /// careyshop's refresh parameters.
    #[derive(ToSchema)]
    pub struct CareyshopRefresh {
        /// The 32-hex-digit refresh token.
        refresh: Option<String>,
    }

    /// careyshop's envelope; `status` equals the HTTP status, `data` only on success.
    #[derive(ToSchema)]
    pub struct CareyshopEnvelope {
        status: i64,
        message: String,
        data: Option<BTreeMap<String, serde_json::Value>>,
    }

    /// fungame: `{Username, Password}`.
    #[derive(ToSchema)]
    pub struct FungameLogin {
        #[schema(rename = "Username")]
        username: String,
        #[schema(rename = "Password")]
        password: String,
    }

    /// fungame's envelope.
    #[derive(ToSchema)]
    pub struct FungameEnvelope {
        #[schema(rename = "RequestType")]
        request_type: i64,
        #[schema(rename = "StatusCode")]
        status_code: i64,
        #[schema(rename = "Message")]
        message: String,
        /// `{bearerToken, openToken}` on success, `{}` otherwise.
        #[schema(rename = "Data")]
        data: BTreeMap<String, String>,
    }
}

/// Routes that answer under a second spelling (a trailing slash, a prefix
/// that a proxy may extend, a second well-known name): described as their
/// own paths, since they are.
mod aliases {
    #![allow(dead_code)]

    use super::schemas as S;
    use crate::http::error::{ProblemBody, Problems};

    #[utoipa::path(
        method(get, post, put, patch, delete, head, options), path = "/v1/authz/",
        tag = "forward-auth", operation_id = "authz_slash",
        security(("bearer" = [])),
        responses(
            (status = 200, description = "As `/v1/authz`"),
            (status = 401, description = "As `/v1/authz`", body = ProblemBody<'static>, content_type = "application/problem+json"),
            (status = 403, description = "As `/v1/authz`", body = ProblemBody<'static>, content_type = "application/problem+json"),
            Problems,
        )
    )]
    pub fn authz_slash() {}

    #[utoipa::path(
        method(get, post, put, patch, delete, head, options), path = "/v1/authz/{path}",
        tag = "forward-auth", operation_id = "authz_path",
        params(("path" = String, Path, description = "Any path (slashes too): the proxy may pass the original request's")),
        security(("bearer" = [])),
        responses(
            (status = 200, description = "As `/v1/authz`"),
            (status = 401, description = "As `/v1/authz`", body = ProblemBody<'static>, content_type = "application/problem+json"),
            (status = 403, description = "As `/v1/authz`", body = ProblemBody<'static>, content_type = "application/problem+json"),
            Problems,
        )
    )]
    pub fn authz_path() {}

    #[utoipa::path(get, path = "/.well-known/oauth-authorization-server", tag = "oauth",
        operation_id = "oauth_authorization_server",
        responses((status = 200, description = "RFC 8414 metadata (the OpenID Connect discovery document)", body = S::Discovery)))]
    pub fn authorization_server_metadata() {}

    #[utoipa::path(method(get, post), path = "/api/v1/user/method/login.user.user", tag = "careyshop",
        operation_id = "careyshop_login_no_slash",
        params(
            ("username" = Option<String>, Query), ("password" = Option<String>, Query),
            ("platform" = Option<String>, Query),
        ),
        request_body(description = "As with the trailing slash; optional",
            content((S::CareyshopLogin = "application/x-www-form-urlencoded"), (S::CareyshopLogin = "application/json"))),
        responses(
            (status = 200, description = "As with the trailing slash", body = S::CareyshopEnvelope),
            (status = "4XX", description = "Refused", body = S::CareyshopEnvelope),
            (status = "5XX", description = "Busy or internal", body = S::CareyshopEnvelope),
        ))]
    pub fn careyshop_login() {}

    #[utoipa::path(method(get, post), path = "/api/v1/user/method/refresh.token.user", tag = "careyshop",
        operation_id = "careyshop_refresh_no_slash",
        params(("refresh" = Option<String>, Query)),
        request_body(description = "As with the trailing slash; optional",
            content((S::CareyshopRefresh = "application/x-www-form-urlencoded"), (S::CareyshopRefresh = "application/json"))),
        responses(
            (status = 200, description = "As with the trailing slash", body = S::CareyshopEnvelope),
            (status = "4XX", description = "Refused", body = S::CareyshopEnvelope),
            (status = "5XX", description = "Busy or internal", body = S::CareyshopEnvelope),
        ))]
    pub fn careyshop_refresh() {}

    #[utoipa::path(post, path = "/user/login/", tag = "fungame", operation_id = "fungame_login_slash",
        request_body = S::FungameLogin,
        responses(
            (status = 200, description = "Signed in", body = S::FungameEnvelope),
            (status = 401, description = "Wrong credentials", body = S::FungameEnvelope),
            (status = 429, description = "Throttled (`Retry-After`)", body = S::FungameEnvelope),
            (status = "4XX", description = "Anything else: the document's one JSON string", body = String, content_type = "application/json"),
        ))]
    pub fn fungame_login() {}
}
