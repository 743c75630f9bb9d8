//! The OpenID Connect / OAuth 2.0 face: authorization (with the hosted
//! sign-in page), token, userinfo, introspection, revocation, logout and
//! discovery. Wire formats only; every decision is `core::oidc`'s.

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use super::AppState;
use super::deadline::{Deadline, Overrun};
use super::extract::{Client, bearer_token, cookie_value};
use super::page::{self, Lang, Refusal, SignInForm};
use crate::core::Error;
use crate::core::clients::{ClientCredentials, redirect_uri_matches};
use crate::core::oidc::{
    Authorization, AuthorizeError, AuthorizeParams, BrowserSession, Continuation, OAuthError,
    PageError, TokenRequest, with_query,
};
use crate::store::AccountId;

/// The cookies of the hosted pages.
#[derive(Debug, Clone, Copy)]
enum Jar {
    /// The browser session (single sign-on).
    Session,
    /// The double-submit CSRF token of the hosted forms.
    Csrf,
}

impl Jar {
    /// Over HTTPS the names carry the `__Host-` prefix: a browser keeps such
    /// a cookie only if it was set `Secure`, by this host, for path `/`, so
    /// a sibling subdomain cannot plant one (cookie tossing). Over plain
    /// HTTP (development) the cookies are limited to `/oauth2/`.
    fn name(self, secure: bool) -> &'static str {
        match (self, secure) {
            (Jar::Session, false) => "sesame_session",
            (Jar::Session, true) => "__Host-sesame_session",
            (Jar::Csrf, false) => "sesame_csrf",
            (Jar::Csrf, true) => "__Host-sesame_csrf",
        }
    }

    fn attributes(state: &AppState) -> String {
        if secure(state) {
            "Path=/; HttpOnly; SameSite=Lax; Secure".into()
        } else {
            format!("Path={}/oauth2/; HttpOnly; SameSite=Lax", base_path(state))
        }
    }
}

/// The path of the issuer URL ("" or e.g. "/auth" behind a proxy that
/// serves Sesame under a prefix): the pages' own links start with it.
fn base_path(state: &AppState) -> String {
    url::Url::parse(state.core.issuer())
        .map(|url| url.path().trim_end_matches('/').to_owned())
        .unwrap_or_default()
}

/// The routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/.well-known/oauth-authorization-server", get(discovery))
        .route("/oauth2/authorize", get(authorize_get).post(authorize_post))
        .route("/oauth2/authorize/sign-in", post(sign_in))
        .route("/oauth2/authorize/continue", post(confirm))
        .route("/oauth2/token", post(token))
        .route("/oauth2/userinfo", get(userinfo_get).post(userinfo_post))
        .route("/oauth2/introspect", post(introspect))
        .route("/oauth2/revoke", post(revoke))
        .route("/oauth2/logout", get(logout_get).post(logout_post))
        .method_not_allowed_fallback(method_not_allowed)
}

/// Whether a path is one of the pages a person sees (which answer with
/// the error page), not an endpoint for programs (RFC 6749 JSON).
fn is_page(path: &str) -> bool {
    matches!(
        path,
        "/oauth2/authorize"
            | "/oauth2/authorize/sign-in"
            | "/oauth2/authorize/continue"
            | "/oauth2/logout"
    )
}

/// `http.request_timeout` for this face: the error page on the pages (in
/// the language of the request, noted before it runs), RFC 6749 errors
/// elsewhere.
pub fn deadline(after: std::time::Duration) -> Deadline<Option<Lang>> {
    Deadline::noting(
        after,
        |request| is_page(request.uri().path()).then(|| Lang::from_headers(request.headers())),
        |page, overrun| match (page, overrun) {
            (Some(lang), Overrun::Body) => {
                error_page(lang, StatusCode::REQUEST_TIMEOUT, &Refusal::TimedOut)
            }
            (Some(lang), Overrun::Answer) => unavailable_page(lang),
            (None, Overrun::Body) => oauth_error(OAuthError {
                status: StatusCode::REQUEST_TIMEOUT.as_u16(),
                ..OAuthError::new("invalid_request", "the request did not arrive in time")
            }),
            (None, Overrun::Answer) => oauth_error(Overrun::busy().into()),
        },
    )
}

/// Another method on a route: the hosted pages show their error page, the
/// endpoints for programs answer as RFC 6749 does.
async fn method_not_allowed(uri: axum::http::Uri, headers: HeaderMap) -> Response {
    if is_page(uri.path()) {
        let lang = Lang::from_headers(&headers);
        return error_page(lang, StatusCode::METHOD_NOT_ALLOWED, &Refusal::Method);
    }
    oauth_error(OAuthError {
        status: StatusCode::METHOD_NOT_ALLOWED.as_u16(),
        ..OAuthError::new("invalid_request", "this endpoint does not take that method")
    })
}

// ---------------------------------------------------------------- parameters

/// Form or query parameters; a parameter sent twice is an error, one sent
/// without a value is as if omitted (RFC 6749 §3.1, §3.2).
type Params = HashMap<String, String>;

fn parse_params(raw: &[u8]) -> Result<Params, Refusal> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_bytes(raw).map_err(|_| Refusal::Malformed)?;
    let mut params = Params::new();
    for (name, value) in pairs.into_iter().filter(|(_, value)| !value.is_empty()) {
        if params.contains_key(&name) {
            // Named only when the name is one a client would send: an
            // error description holds no other characters (RFC 6749
            // §5.2) and repeats no input of another kind.
            let plain = name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
            return Err(Refusal::Repeated(if plain {
                name
            } else {
                "(a name with other characters)".into()
            }));
        }
        params.insert(name, value);
    }
    Ok(params)
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

fn form_params(headers: &HeaderMap, body: &[u8]) -> Result<Params, OAuthError> {
    if !is_form(headers) {
        return Err(OAuthError::new(
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    parse_params(body).map_err(|refusal| OAuthError::new("invalid_request", refusal.text(Lang::En)))
}

/// Whether a body that could not be taken was too large (or else cut off).
fn too_large(rejection: &BytesRejection) -> bool {
    rejection.status() == StatusCode::PAYLOAD_TOO_LARGE
}

/// The body of an endpoint for programs (token, introspection, revocation,
/// userinfo): one too large or cut off is refused as RFC 6749 says, not in
/// axum's plain text.
pub(super) struct ApiBody(Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBody {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        Bytes::from_request(request, state)
            .await
            .map(ApiBody)
            .map_err(|rejection| {
                oauth_error(if too_large(&rejection) {
                    OAuthError {
                        status: StatusCode::PAYLOAD_TOO_LARGE.as_u16(),
                        ..OAuthError::new("invalid_request", "the request body is too large")
                    }
                } else {
                    OAuthError::new("invalid_request", "the request body could not be read")
                })
            })
    }
}

/// The body of a hosted page's form (authorize, sign-in, logout): one too
/// large or cut off gets the error page.
pub(super) struct PageBody(Bytes);

impl<S: Send + Sync> FromRequest<S> for PageBody {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        let lang = Lang::from_headers(request.headers());
        Bytes::from_request(request, state)
            .await
            .map(PageBody)
            .map_err(|rejection| {
                if too_large(&rejection) {
                    error_page(lang, StatusCode::PAYLOAD_TOO_LARGE, &Refusal::TooLarge)
                } else {
                    error_page(lang, StatusCode::BAD_REQUEST, &Refusal::Unreadable)
                }
            })
    }
}

/// A hosted page's form: refusals in the page's words.
fn page_form(headers: &HeaderMap, body: &[u8]) -> Result<Params, Refusal> {
    if !is_form(headers) {
        return Err(Refusal::NotForm);
    }
    parse_params(body)
}

fn authorize_params(params: &Params) -> AuthorizeParams {
    let get = |name: &str| params.get(name).cloned();
    AuthorizeParams {
        client_id: get("client_id"),
        redirect_uri: get("redirect_uri"),
        response_type: get("response_type"),
        response_mode: get("response_mode"),
        scope: get("scope"),
        state: get("state"),
        nonce: get("nonce"),
        code_challenge: get("code_challenge"),
        code_challenge_method: get("code_challenge_method"),
        prompt: get("prompt"),
        login_hint: get("login_hint"),
        max_age: get("max_age"),
        id_token_hint: get("id_token_hint"),
        request: get("request"),
        request_uri: get("request_uri"),
    }
}

// ---------------------------------------------------------------- responses

fn secure(state: &AppState) -> bool {
    state.core.issuer().starts_with("https://")
}

fn set_cookie(state: &AppState, jar: Jar, value: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{}={value}; {}",
        jar.name(secure(state)),
        Jar::attributes(state)
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn expired_cookie(state: &AppState, jar: Jar) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{}=; Max-Age=0; {}",
        jar.name(secure(state)),
        Jar::attributes(state)
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn read_cookie<'a>(state: &AppState, headers: &'a HeaderMap, jar: Jar) -> Option<&'a str> {
    cookie_value(headers, jar.name(secure(state)))
}

fn redirect(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, location);
    }
    // no-store and no-referrer come with every answer (`headers::harden`).
    response
}

/// The origin (or private-use scheme) a redirect URI leads to, for `form-action`.
fn origin(uri: &str) -> Option<String> {
    let url = url::Url::parse(uri).ok()?;
    match url.origin() {
        origin @ url::Origin::Tuple(..) => Some(origin.ascii_serialization()),
        url::Origin::Opaque(_) => Some(format!("{}:", url.scheme())),
    }
}

fn error_page(lang: Lang, status: StatusCode, refusal: &Refusal) -> Response {
    let t = page::text(lang);
    page::render(
        status,
        lang,
        t.error_title,
        &page::message_body(t.error_title, &refusal.text(lang)),
        &[],
    )
}

fn unavailable_page(lang: Lang) -> Response {
    let t = page::text(lang);
    let mut response = page::render(
        StatusCode::SERVICE_UNAVAILABLE,
        lang,
        t.error_title,
        &page::message_body(t.error_title, t.busy),
        &[],
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// RFC 6749 §5.1's `Cache-Control: no-store` and `Pragma: no-cache` come
/// with every answer (`headers::harden`, in the observe layer).
fn oauth_json(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn oauth_error(error: OAuthError) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = oauth_json(
        status,
        json!({ "error": error.error, "error_description": error.description }),
    );
    let headers = response.headers_mut();
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"sesame\""),
        );
    }
    if let Some(seconds) = error.retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

// ---------------------------------------------------------------- discovery

#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "oauth", operation_id = "openid_configuration",
    responses((status = 200, description = "OpenID Connect discovery", body = super::openapi::schemas::Discovery)))]
pub(super) async fn discovery(State(state): State<AppState>) -> Response {
    let mut response = axum::Json(state.core.discovery()).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

// ---------------------------------------------------------------- authorize

#[utoipa::path(get, path = "/oauth2/authorize", tag = "oauth",
    params(
        ("client_id" = Option<String>, Query), ("redirect_uri" = Option<String>, Query),
        ("response_type" = Option<String>, Query, description = "`code`"),
        ("response_mode" = Option<String>, Query), ("scope" = Option<String>, Query),
        ("state" = Option<String>, Query), ("nonce" = Option<String>, Query),
        ("code_challenge" = Option<String>, Query),
        ("code_challenge_method" = Option<String>, Query, description = "`S256`"),
        ("prompt" = Option<String>, Query, description = "`none` or `login`"),
        ("login_hint" = Option<String>, Query), ("max_age" = Option<String>, Query),
    ),
    responses(
        (status = 200, description = "The sign-in page, or the page where the signed-in user confirms the request (`prompt=consent`, or a public client on a loopback or private-use redirect URI)", content_type = "text/html", body = String),
        (status = 303, description = "Back to the client's `redirect_uri` with a `code` (or an `error`), `state` and `iss`"),
        (status = 400, description = "An error page (unknown client, unregistered redirect URI, malformed request): never a redirect", content_type = "text/html", body = String),
        (status = 503, description = "Busy; `Retry-After`", content_type = "text/html", body = String),
    ))]
pub(super) async fn authorize_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let lang = Lang::from_headers(&headers);
    match parse_params(query.unwrap_or_default().as_bytes()) {
        Ok(params) => authorize(&state, &headers, &params).await,
        Err(refusal) => error_page(lang, StatusCode::BAD_REQUEST, &refusal),
    }
}

#[utoipa::path(post, path = "/oauth2/authorize", tag = "oauth",
    request_body(content = super::openapi::schemas::AuthorizeRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The sign-in page, or the page where the signed-in user confirms the request (`prompt=consent`, or a public client on a loopback or private-use redirect URI)", content_type = "text/html", body = String),
        (status = 303, description = "Back to the client's `redirect_uri` with a `code` (or an `error`), `state` and `iss`"),
        (status = 400, description = "An error page (unknown client, unregistered redirect URI, malformed request): never a redirect", content_type = "text/html", body = String),
        (status = 503, description = "Busy; `Retry-After`", content_type = "text/html", body = String),
    ))]
pub(super) async fn authorize_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    PageBody(body): PageBody,
) -> Response {
    let lang = Lang::from_headers(&headers);
    match page_form(&headers, &body) {
        Ok(params) => authorize(&state, &headers, &params).await,
        Err(refusal) => error_page(lang, StatusCode::BAD_REQUEST, &refusal),
    }
}

fn refused(lang: Lang, state: &AppState, error: AuthorizeError) -> Response {
    match error {
        AuthorizeError::Page(error) => {
            let refusal = match error {
                PageError::MissingClient => Refusal::MissingClient,
                PageError::UnknownClient => Refusal::UnknownClient,
                PageError::MissingRedirect => Refusal::MissingRedirect,
                PageError::UnregisteredRedirect => Refusal::UnregisteredRedirect,
                PageError::StateTooLong => Refusal::StateTooLong,
            };
            error_page(lang, StatusCode::BAD_REQUEST, &refusal)
        }
        AuthorizeError::Unavailable => unavailable_page(lang),
        AuthorizeError::Redirect {
            redirect_uri,
            state: client_state,
            error,
            description,
        } => {
            let mut pairs = vec![
                ("error", error),
                ("error_description", description.as_str()),
            ];
            if let Some(client_state) = &client_state {
                pairs.push(("state", client_state));
            }
            pairs.push(("iss", state.core.issuer()));
            redirect(&with_query(&redirect_uri, &pairs))
        }
    }
}

async fn authorize(state: &AppState, headers: &HeaderMap, params: &Params) -> Response {
    let lang = Lang::from_headers(headers);
    let authorization = match state
        .core
        .check_authorization(&authorize_params(params))
        .await
    {
        Ok(authorization) => authorization,
        Err(error) => return refused(lang, state, error),
    };
    let browser = match browser_session(state, headers).await {
        Ok(browser) => browser,
        Err(error) => {
            tracing::error!(%error, "the authorization's browser session could not be read");
            return unavailable_page(lang);
        }
    };
    let continuation = state
        .core
        .continue_authorization(&authorization, browser, None)
        .await;
    continued(state, headers, &authorization, continuation)
}

/// The live browser session the request's cookie stands for.
async fn browser_session(
    state: &AppState,
    headers: &HeaderMap,
) -> crate::core::Result<Option<BrowserSession>> {
    match read_cookie(state, headers, Jar::Session) {
        Some(cookie) => state.core.browser_session(cookie).await,
        None => Ok(None),
    }
}

/// The answer to where a request goes next: the client, the sign-in page or
/// the confirmation page.
fn continued(
    state: &AppState,
    headers: &HeaderMap,
    authorization: &Authorization,
    continuation: Result<Continuation, AuthorizeError>,
) -> Response {
    match continuation {
        Ok(Continuation::Redirect(location)) => redirect(&location),
        Ok(Continuation::SignIn) => sign_in_page(
            state,
            headers,
            authorization,
            StatusCode::OK,
            authorization.login_hint.as_deref(),
            None,
        ),
        Ok(Continuation::Confirm {
            account_id,
            username,
        }) => confirm_page(state, headers, authorization, account_id, &username),
        Err(error) => refused(Lang::from_headers(headers), state, error),
    }
}

/// The CSRF token of a form: the one the browser holds, or a new one with
/// the cookie that sets it.
fn form_csrf(state: &AppState, headers: &HeaderMap) -> (String, Option<HeaderValue>) {
    match read_cookie(state, headers, Jar::Csrf).filter(|c| valid_csrf(c)) {
        Some(held) => (held.to_owned(), None),
        None => {
            let csrf = crate::core::tokens::random_urlsafe(32);
            let cookie = set_cookie(state, Jar::Csrf, &csrf);
            (csrf, Some(cookie))
        }
    }
}

/// `response` with the CSRF cookie its form needs, if the browser has none.
fn with_csrf_cookie(mut response: Response, cookie: Option<HeaderValue>) -> Response {
    if let Some(cookie) = cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// The hidden fields that carry a checked request through a page's form.
fn request_fields(authorization: &Authorization, csrf: String) -> Vec<(&'static str, String)> {
    let mut hidden: Vec<(&str, String)> = vec![
        ("csrf", csrf),
        ("client_id", authorization.client.id.clone()),
        ("redirect_uri", authorization.redirect_uri.clone()),
        ("response_type", "code".into()),
        ("scope", authorization.scope.clone()),
        ("code_challenge", authorization.code_challenge.clone()),
        ("code_challenge_method", "S256".into()),
    ];
    if let Some(client_state) = &authorization.state {
        hidden.push(("state", client_state.clone()));
    }
    if let Some(nonce) = &authorization.nonce {
        hidden.push(("nonce", nonce.clone()));
    }
    // Checked again after the sign-in: the client expects that user.
    if authorization.hinted_account.is_some()
        && let Some(hint) = &authorization.id_token_hint
    {
        hidden.push(("id_token_hint", hint.clone()));
    }
    // A confirmation is judged again by them when posted: still within
    // max_age, and still a request that asks (prompt=consent, which the
    // sign-in form's handler does not read).
    if let Some(age) = authorization.max_age {
        hidden.push(("max_age", age.to_string()));
    }
    if authorization.confirm {
        hidden.push(("prompt", "consent".into()));
    }
    hidden
}

/// The sign-in page for a checked request.
fn sign_in_page(
    state: &AppState,
    headers: &HeaderMap,
    authorization: &Authorization,
    status: StatusCode,
    login: Option<&str>,
    error: Option<&str>,
) -> Response {
    let lang = Lang::from_headers(headers);
    let (csrf, cookie) = form_csrf(state, headers);
    let hidden = request_fields(authorization, csrf);
    let body = page::sign_in_body(
        lang,
        &SignInForm {
            hidden: &hidden,
            client: &authorization.client.name,
            action: &format!("{}/oauth2/authorize/sign-in", base_path(state)),
            login,
            error,
        },
    );
    let targets: Vec<String> = origin(&authorization.redirect_uri).into_iter().collect();
    let response = page::render(status, lang, page::text(lang).title, &body, &targets);
    with_csrf_cookie(response, cookie)
}

/// The page where the signed-in user confirms the request
/// ([`Continuation::Confirm`]).
fn confirm_page(
    state: &AppState,
    headers: &HeaderMap,
    authorization: &Authorization,
    account_id: AccountId,
    username: &str,
) -> Response {
    let lang = Lang::from_headers(headers);
    let (csrf, cookie) = form_csrf(state, headers);
    let mut hidden = request_fields(authorization, csrf);
    hidden.push(("account", account_id.to_string()));
    let body = page::confirm_body(
        lang,
        &page::ConfirmForm {
            hidden: &hidden,
            client: &authorization.client.name,
            username,
            action: &format!("{}/oauth2/authorize/continue", base_path(state)),
        },
    );
    let targets: Vec<String> = origin(&authorization.redirect_uri).into_iter().collect();
    let text = page::text(lang);
    let response = page::render(StatusCode::OK, lang, text.confirm_title, &body, &targets);
    with_csrf_cookie(response, cookie)
}

fn valid_csrf(token: &str) -> bool {
    token.len() == 43
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

fn csrf_matches(state: &AppState, headers: &HeaderMap, params: &Params) -> bool {
    match (read_cookie(state, headers, Jar::Csrf), params.get("csrf")) {
        (Some(held), Some(sent)) if valid_csrf(held) => {
            aws_lc_rs::constant_time::verify_slices_are_equal(held.as_bytes(), sent.as_bytes())
                .is_ok()
        }
        _ => false,
    }
}

/// A page's form, and the authorization request it carries, checked
/// again; or the error page (or the client's error redirect) to answer.
async fn posted_request(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Params, Authorization), Response> {
    let lang = Lang::from_headers(headers);
    let params = page_form(headers, body)
        .map_err(|refusal| error_page(lang, StatusCode::BAD_REQUEST, &refusal))?;
    match state
        .core
        .check_authorization(&authorize_params(&params))
        .await
    {
        Ok(authorization) => Ok((params, authorization)),
        Err(error) => Err(refused(lang, state, error)),
    }
}

#[utoipa::path(post, path = "/oauth2/authorize/sign-in", tag = "oauth",
    request_body(content = super::openapi::schemas::SignInForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Signed in: back to the client with a `code`; sets the browser-session cookie"),
        (status = "4XX", description = "The page again with its message (wrong credentials, an expired form, throttled), or an error page", content_type = "text/html", body = String),
        (status = 503, description = "Busy; `Retry-After`", content_type = "text/html", body = String),
    ))]
pub(super) async fn sign_in(
    State(state): State<AppState>,
    Client(info): Client,
    headers: HeaderMap,
    PageBody(body): PageBody,
) -> Response {
    let lang = Lang::from_headers(&headers);
    let t = page::text(lang);
    let (params, authorization) = match posted_request(&state, &headers, &body).await {
        Ok(posted) => posted,
        Err(refused) => return refused,
    };
    let login = params.get("login").map(String::as_str).unwrap_or_default();
    if !csrf_matches(&state, &headers, &params) {
        return sign_in_page(
            &state,
            &headers,
            &authorization,
            StatusCode::BAD_REQUEST,
            Some(login),
            Some(t.expired_form),
        );
    }
    let password = params
        .get("password")
        .map(String::as_str)
        .unwrap_or_default();
    let previous = read_cookie(&state, &headers, Jar::Session);
    let (status, message, retry) = match state
        .core
        .sign_in_browser(login, password, info, previous)
        .await
    {
        Ok((cookie_value, browser)) => {
            let mut response = match state.core.conclude_sign_in(&authorization, &browser).await {
                Ok(location) => redirect(&location),
                Err(error) => refused(lang, &state, error),
            };
            // Signed in, whatever the client is told.
            response.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(&state, Jar::Session, &cookie_value),
            );
            return response;
        }
        Err(Error::InvalidCredentials) => (StatusCode::UNAUTHORIZED, t.invalid, None),
        Err(Error::Throttled { retry_after_secs }) => (
            StatusCode::TOO_MANY_REQUESTS,
            t.throttled,
            Some(retry_after_secs),
        ),
        Err(Error::Busy { retry_after_secs }) => (
            StatusCode::SERVICE_UNAVAILABLE,
            t.busy,
            Some(retry_after_secs),
        ),
        Err(error) => {
            tracing::error!(%error, "hosted sign-in failed");
            (StatusCode::SERVICE_UNAVAILABLE, t.busy, Some(1))
        }
    };
    let mut response = sign_in_page(
        &state,
        &headers,
        &authorization,
        status,
        Some(login),
        Some(message),
    );
    if let Some(seconds) = retry {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

#[utoipa::path(post, path = "/oauth2/authorize/continue", tag = "oauth",
    request_body(content = super::openapi::schemas::ConfirmForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Back to the client: with a `code` (`choice=continue`, the account shown still signed in), `error=access_denied` (`cancel`), or another error of the request (`invalid_scope`, `temporarily_unavailable`, …)"),
        (status = 200, description = "The sign-in page (`switch`, or the browser session ended), or the confirmation page again (an expired form, another account signed in meanwhile)", content_type = "text/html", body = String),
        (status = "4XX", description = "An error page (unknown client, unregistered redirect URI, malformed form, no choice, a body too large or too slow): never a redirect", content_type = "text/html", body = String),
        (status = 503, description = "Busy; `Retry-After`", content_type = "text/html", body = String),
    ))]
pub(super) async fn confirm(
    State(state): State<AppState>,
    headers: HeaderMap,
    PageBody(body): PageBody,
) -> Response {
    let lang = Lang::from_headers(&headers);
    let (params, authorization) = match posted_request(&state, &headers, &body).await {
        Ok(posted) => posted,
        Err(refused) => return refused,
    };
    let choice = params.get("choice").map(String::as_str);
    if !matches!(choice, Some("continue" | "switch" | "cancel")) {
        return error_page(lang, StatusCode::BAD_REQUEST, &Refusal::NoChoice);
    }
    // A form posted from elsewhere (or expired) decides nothing, whichever
    // button it names: the request goes where it would have gone, and the
    // form carries prompt=consent, so that asks again.
    let confirmed = if csrf_matches(&state, &headers, &params) {
        params
            .get("account")
            .and_then(|id| id.parse::<AccountId>().ok())
    } else {
        None
    };
    match (choice, confirmed) {
        (Some("switch"), Some(_)) => {
            return sign_in_page(&state, &headers, &authorization, StatusCode::OK, None, None);
        }
        (Some("cancel"), Some(_)) => {
            return refused(lang, &state, authorization.declined());
        }
        _ => {}
    }
    let browser = match browser_session(&state, &headers).await {
        Ok(browser) => browser,
        Err(error) => {
            tracing::error!(%error, "the confirmation's browser session could not be read");
            return unavailable_page(lang);
        }
    };
    let continuation = state
        .core
        .continue_authorization(&authorization, browser, confirmed)
        .await;
    continued(&state, &headers, &authorization, continuation)
}

// ---------------------------------------------------------------- token

/// Decodes one `application/x-www-form-urlencoded` component (RFC 6749
/// §2.3.1 encodes the Basic credentials so).
fn form_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The client's credentials: `client_secret_basic`, `client_secret_post`,
/// or a public client's `client_id`. Using two methods at once is refused.
fn client_credentials(
    headers: &HeaderMap,
    params: &Params,
) -> Result<ClientCredentials, OAuthError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"));
    if let Some((_, encoded)) = basic {
        let decoded = STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(OAuthError::invalid_client)?;
        let (id, secret) = decoded
            .split_once(':')
            .ok_or_else(OAuthError::invalid_client)?;
        let (Some(id), Some(secret)) = (form_decode(id), form_decode(secret)) else {
            return Err(OAuthError::invalid_client());
        };
        if params.contains_key("client_secret")
            || params.get("client_id").is_some_and(|given| *given != id)
        {
            return Err(OAuthError::new(
                "invalid_request",
                "use one client authentication method",
            ));
        }
        // `id:` is a client without a secret naming itself (as some
        // libraries do for a public client), as `client_id` alone would.
        if secret.is_empty() {
            return Ok(ClientCredentials::Public { id });
        }
        return Ok(ClientCredentials::Secret { id, secret });
    }
    match (params.get("client_id"), params.get("client_secret")) {
        (Some(id), Some(secret)) => Ok(ClientCredentials::Secret {
            id: id.clone(),
            secret: secret.clone(),
        }),
        (Some(id), None) => Ok(ClientCredentials::Public { id: id.clone() }),
        _ => Err(OAuthError::invalid_client()),
    }
}

async fn authenticated_client(
    state: &AppState,
    headers: &HeaderMap,
    params: &Params,
) -> Result<crate::store::OAuthClient, OAuthError> {
    let credentials = client_credentials(headers, params)?;
    match state.core.authenticate_client(&credentials).await {
        Ok(Some(client)) => Ok(client),
        Ok(None) => Err(OAuthError::invalid_client()),
        Err(error) => Err(error.into()),
    }
}

/// A client's form request: its parameters and the client, authenticated.
async fn client_request(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Params, crate::store::OAuthClient), OAuthError> {
    let params = form_params(headers, body)?;
    let client = authenticated_client(state, headers, &params).await?;
    Ok((params, client))
}

#[utoipa::path(post, path = "/oauth2/token", tag = "oauth",
    request_body(content = super::openapi::schemas::TokenRequest, content_type = "application/x-www-form-urlencoded"),
    security((), ("client" = [])),
    responses(
        (status = 200, description = "Tokens", body = super::openapi::schemas::TokenAnswer),
        (status = "4XX", description = "RFC 6749 §5.2 (`invalid_client` is 401 with `WWW-Authenticate`)", body = super::openapi::schemas::OAuthError),
        (status = "5XX", description = "`temporarily_unavailable` (503, `Retry-After`) or `server_error`", body = super::openapi::schemas::OAuthError),
    ))]
pub(super) async fn token(
    State(state): State<AppState>,
    Client(info): Client,
    headers: HeaderMap,
    ApiBody(body): ApiBody,
) -> Response {
    let (params, client) = match client_request(&state, &headers, &body).await {
        Ok(request) => request,
        Err(error) => return oauth_error(error),
    };
    let get = |name: &str| params.get(name).cloned();
    let request = TokenRequest {
        grant_type: get("grant_type"),
        code: get("code"),
        redirect_uri: get("redirect_uri"),
        code_verifier: get("code_verifier"),
        refresh_token: get("refresh_token"),
        username: get("username"),
        password: get("password"),
        scope: get("scope"),
    };
    match state.core.token(&client, &request, &info).await {
        Ok(answer) => {
            let mut body = Map::new();
            body.insert("access_token".into(), json!(answer.access_token));
            body.insert("token_type".into(), json!("Bearer"));
            body.insert("expires_in".into(), json!(answer.expires_in));
            if let Some(refresh) = answer.refresh_token {
                body.insert("refresh_token".into(), json!(refresh));
            }
            if let Some(id_token) = answer.id_token {
                body.insert("id_token".into(), json!(id_token));
            }
            if !answer.scope.is_empty() {
                body.insert("scope".into(), json!(answer.scope));
            }
            oauth_json(StatusCode::OK, Value::Object(body))
        }
        Err(error) => oauth_error(error),
    }
}

// ---------------------------------------------------------------- userinfo

fn bearer_error(status: StatusCode, error: &'static str) -> Response {
    let mut response = oauth_json(status, json!({ "error": error }));
    if let Ok(value) = HeaderValue::from_str(&format!("Bearer error=\"{error}\"")) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

async fn userinfo_for(state: &AppState, token: Option<&str>) -> Response {
    let Some(token) = token else {
        let mut response = oauth_json(
            StatusCode::UNAUTHORIZED,
            json!({ "error": "invalid_token" }),
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"sesame\""),
        );
        return response;
    };
    match state.core.userinfo(token).await {
        Ok(claims) => oauth_json(StatusCode::OK, Value::Object(claims)),
        Err(Error::Forbidden) => bearer_error(StatusCode::FORBIDDEN, "insufficient_scope"),
        Err(Error::QuotaExceeded) => bearer_error(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded"),
        Err(error) if error.is_internal() => {
            tracing::error!(%error, "userinfo failed");
            oauth_error(error.into())
        }
        // Busy (the pool, the store away): the token may well be good, so
        // the client is told to retry, not to throw it away.
        Err(error @ Error::Busy { .. }) => oauth_error(error.into()),
        Err(_) => bearer_error(StatusCode::UNAUTHORIZED, "invalid_token"),
    }
}

#[utoipa::path(get, path = "/oauth2/userinfo", tag = "oauth",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Claims by the token's scopes", body = super::openapi::schemas::UserInfo),
        (status = "4XX", description = "`invalid_token` (401), `insufficient_scope` (403), `quota_exceeded` (429), with `WWW-Authenticate`", body = super::openapi::schemas::OAuthError),
        (status = "5XX", description = "Busy or internal", body = super::openapi::schemas::OAuthError),
    ))]
pub(super) async fn userinfo_get(State(state): State<AppState>, headers: HeaderMap) -> Response {
    userinfo_for(&state, bearer_token(&headers)).await
}

#[utoipa::path(post, path = "/oauth2/userinfo", tag = "oauth",
    request_body(content = Option<super::openapi::schemas::UserInfoForm>, content_type = "application/x-www-form-urlencoded"),
    security(("bearer" = []), ()),
    responses(
        (status = 200, description = "Claims by the token's scopes", body = super::openapi::schemas::UserInfo),
        (status = "4XX", description = "`invalid_token` (401), `insufficient_scope` (403), `quota_exceeded` (429), with `WWW-Authenticate`", body = super::openapi::schemas::OAuthError),
        (status = "5XX", description = "Busy or internal", body = super::openapi::schemas::OAuthError),
    ))]
pub(super) async fn userinfo_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiBody(body): ApiBody,
) -> Response {
    if let Some(token) = bearer_token(&headers) {
        return userinfo_for(&state, Some(token)).await;
    }
    // RFC 6750 §2.2: the token in a form body.
    match form_params(&headers, &body) {
        Ok(params) => userinfo_for(&state, params.get("access_token").map(String::as_str)).await,
        Err(_) => userinfo_for(&state, None).await,
    }
}

// ---------------------------------------------------------------- introspect, revoke

#[utoipa::path(post, path = "/oauth2/introspect", tag = "oauth",
    request_body(content = super::openapi::schemas::TokenForm, content_type = "application/x-www-form-urlencoded"),
    security(("client" = []), ()),
    responses(
        (status = 200, description = "RFC 7662; `active: false` for anything not live", body = super::openapi::schemas::Introspection),
        (status = "4XX", description = "`invalid_client` (401) or `invalid_request` (400)", body = super::openapi::schemas::OAuthError),
        (status = "5XX", description = "Busy or internal", body = super::openapi::schemas::OAuthError),
    ))]
pub(super) async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiBody(body): ApiBody,
) -> Response {
    let (params, client) = match client_request(&state, &headers, &body).await {
        Ok(request) => request,
        Err(error) => return oauth_error(error),
    };
    let Some(token) = params.get("token") else {
        return oauth_error(OAuthError::new("invalid_request", "token is required"));
    };
    match state.core.introspect(&client, token).await {
        Ok(answer) => oauth_json(StatusCode::OK, Value::Object(answer)),
        Err(Error::Forbidden) => oauth_error(OAuthError::invalid_client()),
        Err(error) => oauth_error(error.into()),
    }
}

#[utoipa::path(post, path = "/oauth2/revoke", tag = "oauth",
    request_body(content = super::openapi::schemas::TokenForm, content_type = "application/x-www-form-urlencoded"),
    security(("client" = []), ()),
    responses(
        (status = 200, description = "Revoked, or was not a live token of this client (RFC 7009 §2.2)", body = Object),
        (status = "4XX", description = "`invalid_client` (401) or `invalid_request` (400)", body = super::openapi::schemas::OAuthError),
        (status = "5XX", description = "Busy or internal", body = super::openapi::schemas::OAuthError),
    ))]
pub(super) async fn revoke(
    State(state): State<AppState>,
    Client(info): Client,
    headers: HeaderMap,
    ApiBody(body): ApiBody,
) -> Response {
    let (params, client) = match client_request(&state, &headers, &body).await {
        Ok(request) => request,
        Err(error) => return oauth_error(error),
    };
    let Some(token) = params.get("token") else {
        return oauth_error(OAuthError::new("invalid_request", "token is required"));
    };
    match state.core.revoke_token(&client, token, &info).await {
        Ok(()) => oauth_json(StatusCode::OK, json!({})),
        Err(error) => oauth_error(error.into()),
    }
}

// ---------------------------------------------------------------- logout

/// Where RP-initiated logout may send the browser afterwards: a
/// `post_logout_redirect_uri` registered by the client named by the
/// `id_token_hint` (or `client_id`). `Err(None)`: the store did not answer.
async fn logout_target(
    state: &AppState,
    params: &Params,
    hint_audience: Option<&str>,
) -> Result<Option<String>, Option<Refusal>> {
    let Some(uri) = params.get("post_logout_redirect_uri") else {
        return Ok(None);
    };
    let refuse = |refusal: Refusal| Err(Some(refusal));
    let client_id = match (hint_audience, params.get("client_id")) {
        (Some(aud), Some(given)) if aud != given => return refuse(Refusal::ClientMismatch),
        (Some(aud), _) => aud.to_owned(),
        (None, Some(given)) => given.clone(),
        (None, None) => return refuse(Refusal::LogoutTargetWithoutClient),
    };
    match state.core.client(&client_id).await {
        Ok(client)
            if client
                .post_logout_redirect_uris
                .iter()
                .any(|registered| redirect_uri_matches(registered, uri)) =>
        {
            let mut pairs = Vec::new();
            if let Some(client_state) = params.get("state") {
                pairs.push(("state", client_state.as_str()));
            }
            Ok(Some(with_query(uri, &pairs)))
        }
        Ok(_) | Err(Error::NotFound(_)) => refuse(Refusal::UnregisteredLogoutTarget),
        Err(_) => Err(None),
    }
}

#[utoipa::path(get, path = "/oauth2/logout", tag = "oauth",
    params(
        ("id_token_hint" = Option<String>, Query), ("client_id" = Option<String>, Query),
        ("post_logout_redirect_uri" = Option<String>, Query), ("state" = Option<String>, Query),
    ),
    responses(
        (status = 200, description = "A confirmation form (no `id_token_hint`), or the signed-out page", content_type = "text/html", body = String),
        (status = 303, description = "Signed out: to `post_logout_redirect_uri` with `state`"),
        (status = "4XX", description = "An error page", content_type = "text/html", body = String),
        (status = "5XX", description = "An error page", content_type = "text/html", body = String),
    ))]
pub(super) async fn logout_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let lang = Lang::from_headers(&headers);
    match parse_params(query.unwrap_or_default().as_bytes()) {
        Ok(params) => logout(&state, &headers, &params, false).await,
        Err(refusal) => error_page(lang, StatusCode::BAD_REQUEST, &refusal),
    }
}

#[utoipa::path(post, path = "/oauth2/logout", tag = "oauth",
    request_body(content = super::openapi::schemas::LogoutRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The signed-out page, or the confirmation form again", content_type = "text/html", body = String),
        (status = 303, description = "Signed out: to `post_logout_redirect_uri` with `state`; or, posted without the session cookie (from another site), to the same request as a GET"),
        (status = "4XX", description = "An error page", content_type = "text/html", body = String),
        (status = "5XX", description = "An error page", content_type = "text/html", body = String),
    ))]
pub(super) async fn logout_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    PageBody(body): PageBody,
) -> Response {
    let lang = Lang::from_headers(&headers);
    match page_form(&headers, &body) {
        // A form posted from another site comes without the session
        // cookie (SameSite=Lax): answered as such, it would end nothing
        // and still send the user on as signed out. The same request as a
        // GET, a top-level navigation, carries the cookie.
        Ok(params) if read_cookie(&state, &headers, Jar::Session).is_none() => {
            // Only what a logout request carries (RP-Initiated Logout §2).
            let logout_parameters = [
                "id_token_hint",
                "logout_hint",
                "client_id",
                "post_logout_redirect_uri",
                "state",
                "ui_locales",
            ];
            let mut pairs: Vec<(&str, &str)> = params
                .iter()
                .filter(|(name, _)| logout_parameters.contains(&name.as_str()))
                .map(|(name, value)| (name.as_str(), value.as_str()))
                .collect();
            pairs.sort_unstable();
            redirect(&with_query(
                &format!("{}/oauth2/logout", state.core.issuer()),
                &pairs,
            ))
        }
        Ok(params) => {
            let confirmed = csrf_matches(&state, &headers, &params);
            logout(&state, &headers, &params, confirmed).await
        }
        Err(refusal) => error_page(lang, StatusCode::BAD_REQUEST, &refusal),
    }
}

/// Ends the browser session. With a valid `id_token_hint` of the signed-in
/// account (or a confirmed form) at once; otherwise the user is asked
/// first, so that a link on another site cannot sign anyone out.
async fn logout(
    state: &AppState,
    headers: &HeaderMap,
    params: &Params,
    confirmed: bool,
) -> Response {
    let lang = Lang::from_headers(headers);
    let t = page::text(lang);
    // A hint signed by a key retired since is no hint (the user is asked),
    // but still names the client whose return addresses may be used.
    let (hint, unverified) = match params.get("id_token_hint") {
        Some(raw) => match state.core.id_token_hint(raw).await {
            Ok(Some(hint)) => (Some(hint), None),
            Ok(None) => (None, state.core.unverified_audience(raw)),
            Err(()) => return error_page(lang, StatusCode::BAD_REQUEST, &Refusal::BadHint),
        },
        None => (None, None),
    };
    let audience = hint
        .as_ref()
        .map(|h| h.audience.as_str())
        .or(unverified.as_deref());
    let target = match logout_target(state, params, audience).await {
        Ok(target) => target,
        Err(Some(refusal)) => return error_page(lang, StatusCode::BAD_REQUEST, &refusal),
        Err(None) => return unavailable_page(lang),
    };
    let session = read_cookie(state, headers, Jar::Session);
    match state
        .core
        .logout_browser(session, hint.as_ref(), confirmed)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            return logout_confirmation(state, headers, params, audience, target.as_deref());
        }
        Err(error) => {
            tracing::error!(%error, "logout failed");
            return unavailable_page(lang);
        }
    }
    let mut response = match target {
        Some(target) => redirect(&target),
        None => page::render(
            StatusCode::OK,
            lang,
            t.sign_out_title,
            &page::message_body(t.sign_out_title, t.signed_out),
            &[],
        ),
    };
    response
        .headers_mut()
        .append(header::SET_COOKIE, expired_cookie(state, Jar::Session));
    response
}

fn logout_confirmation(
    state: &AppState,
    headers: &HeaderMap,
    params: &Params,
    hint_audience: Option<&str>,
    target: Option<&str>,
) -> Response {
    let lang = Lang::from_headers(headers);
    let t = page::text(lang);
    let (csrf, cookie) = form_csrf(state, headers);
    let mut form = format!(
        "<h1>{}</h1><p class=\"note\">{}</p><form method=\"post\" action=\"{}/oauth2/logout\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        page::escape(t.sign_out_title),
        page::escape(t.sign_out_question),
        page::escape(&base_path(state)),
        page::escape(&csrf),
    );
    // The hint's client, so that the confirmed form (which does not carry
    // the hint) names where its return address is registered.
    let client_id = params
        .get("client_id")
        .map(String::as_str)
        .or(hint_audience);
    for (name, value) in [
        (
            "post_logout_redirect_uri",
            params.get("post_logout_redirect_uri").map(String::as_str),
        ),
        ("client_id", client_id),
        ("state", params.get("state").map(String::as_str)),
    ] {
        if let Some(value) = value {
            form.push_str(&format!(
                "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
                page::escape(value)
            ));
        }
    }
    form.push_str(&format!(
        "<button type=\"submit\" autofocus>{}</button></form>",
        page::escape(t.sign_out_button)
    ));
    let targets: Vec<String> = target.and_then(origin).into_iter().collect();
    let response = page::render(StatusCode::OK, lang, t.sign_out_title, &form, &targets);
    with_csrf_cookie(response, cookie)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameters_are_refused_and_empty_ones_omitted() {
        assert!(parse_params(b"a=1&b=2").is_ok());
        let params = parse_params(b"a=&b=2&b=&c").unwrap();
        assert_eq!(params.len(), 1, "{params:?}");
        assert_eq!(params["b"], "2");
        assert_eq!(
            parse_params(b"a=1&a=2").unwrap_err(),
            Refusal::Repeated("a".into())
        );
        // A name a client would not send is not repeated back: an error
        // description keeps to RFC 6749 §5.2's characters.
        let refusal = parse_params(b"%22%5C%E2%80%A8x=1&%22%5C%E2%80%A8x=2").unwrap_err();
        let text = refusal.text(Lang::En);
        assert!(
            text.bytes()
                .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E)),
            "{text}"
        );
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        assert_eq!(form_decode("a%3Ab+c").as_deref(), Some("a:b c"));
        assert_eq!(form_decode("bad%2"), None);
        assert_eq!(form_decode("%zz"), None);
    }

    #[test]
    fn form_action_origins() {
        assert_eq!(
            origin("https://app.example:8443/cb?x=1").as_deref(),
            Some("https://app.example:8443")
        );
        assert_eq!(
            origin("com.example.app:/cb").as_deref(),
            Some("com.example.app:")
        );
    }
}
