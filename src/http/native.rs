//! The native API under `/v1`: login, refresh, logout and the caller's own
//! account and sessions. Handlers parse, call the core, and render.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::{Problem, Problems};
use super::extract::{
    ApiJson, Authenticated, Client, PageQuery, Param, Uncounted, parse_json, query, read_body,
    with_device_token,
};
use super::views::{GrantView, SessionOut, UserView};
use crate::core::accounts::ProfileChange;
use crate::core::domain::{LoginId, Password, Platform};
use crate::core::login::{Credential, Grant, LoginAttempt, LoginOptions, LogoutScope};

/// The native routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/login", post(login))
        .route("/v1/refresh", post(refresh))
        .route("/v1/logout", post(logout))
        .route("/v1/me", get(me).patch(update_me))
        .route("/v1/me/password", post(change_password))
        .route("/v1/me/sessions", get(sessions))
        .route("/v1/me/sessions/{id}", delete(end_session))
}

/// Token responses must not be cached (RFC 6749 §5.1).
fn grant_response(grant: &Grant) -> Response {
    let mut response = Json(GrantView::from(grant)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    with_device_token(response, grant)
}

/// A login.
#[derive(Deserialize, ToSchema)]
pub(super) struct LoginBody {
    /// Username, email or mobile.
    login: String,
    password: String,
    /// The device platform (`web`, `iOS` …), for the one-session-per-platform rule.
    #[serde(default)]
    platform: Option<String>,
}

#[utoipa::path(
    post, path = "/v1/login", tag = "native", operation_id = "native_login",
    request_body = LoginBody,
    responses(
        (status = 200, description = "Signed in; `Sesame-Device` may carry a device token", body = GrantView<'static>),
        Problems,
    )
)]
pub(super) async fn login(
    State(state): State<AppState>,
    Client(client): Client,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Response, Problem> {
    let attempt = LoginAttempt {
        login: LoginId::parse(&body.login)?,
        credential: Credential::Password(Password::presented(&body.password)?),
        platform: body.platform.as_deref().map(Platform::parse).transpose()?,
        client,
        options: LoginOptions::default(),
        face: "native",
    };
    let grant = state.core.login(attempt).await?;
    Ok(grant_response(&grant))
}

/// A refresh-token exchange.
#[derive(Deserialize, ToSchema)]
pub(super) struct RefreshBody {
    refresh_token: String,
}

#[utoipa::path(
    post, path = "/v1/refresh", tag = "native", operation_id = "native_refresh",
    request_body = RefreshBody,
    responses(
        (status = 200, description = "A new access token and the refresh token's successor", body = GrantView<'static>),
        Problems,
    )
)]
pub(super) async fn refresh(
    State(state): State<AppState>,
    Client(client): Client,
    ApiJson(body): ApiJson<RefreshBody>,
) -> Result<Response, Problem> {
    let grant = state
        .core
        .refresh(&body.refresh_token, &client, "native")
        .await?;
    Ok(grant_response(&grant))
}

/// What to end; an empty body ends this session.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LogoutBody {
    /// End every session of the account, not only this one.
    #[serde(default)]
    all: bool,
}

/// The body is optional: an empty one ends this session.
#[utoipa::path(
    post, path = "/v1/logout", tag = "native", operation_id = "native_logout",
    request_body(content = Option<LogoutBody>, description = "Optional"),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Ended"),
        Problems,
    )
)]
pub(super) async fn logout(
    State(state): State<AppState>,
    Uncounted(principal): Uncounted,
    Client(client): Client,
    request: Request,
) -> Result<StatusCode, Problem> {
    let headers = request.headers().clone();
    let body = read_body(request, &state).await.map_err(Problem::from)?;
    let body: LogoutBody = if body.is_empty() {
        LogoutBody::default()
    } else {
        parse_json(&headers, &body)?
    };
    let scope = if body.all {
        LogoutScope::AllSessions
    } else {
        LogoutScope::ThisSession
    };
    state.core.logout(&principal, scope, &client).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get, path = "/v1/me", tag = "native",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's account", body = UserView<'static>),
        Problems,
    )
)]
pub(super) async fn me(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
) -> Result<Response, Problem> {
    let account = state.core.me(&principal).await?;
    Ok(Json(UserView::from(&account)).into_response())
}

/// Changes to the caller's profile; absent fields are kept.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ProfileBody {
    display_name: Option<String>,
    avatar_url: Option<String>,
    /// Free attributes; `null` removes one.
    #[serde(default)]
    profile: std::collections::BTreeMap<String, Option<String>>,
}

#[utoipa::path(
    patch, path = "/v1/me", tag = "native",
    request_body = ProfileBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The account as changed", body = UserView<'static>),
        Problems,
    )
)]
pub(super) async fn update_me(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    ApiJson(body): ApiJson<ProfileBody>,
) -> Result<Response, Problem> {
    let change = ProfileChange {
        display_name: body.display_name,
        avatar_url: body.avatar_url,
        attributes: body.profile,
    };
    let account = state.core.update_my_profile(&principal, change).await?;
    Ok(Json(UserView::from(&account)).into_response())
}

/// A password change.
#[derive(Deserialize, ToSchema)]
pub(super) struct PasswordBody {
    current_password: String,
    /// Must meet the password policy.
    new_password: String,
}

/// Changes the password and ends every other session of the account.
#[utoipa::path(
    post, path = "/v1/me/password", tag = "native",
    request_body = PasswordBody,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Changed"),
        Problems,
    )
)]
pub(super) async fn change_password(
    State(state): State<AppState>,
    Uncounted(principal): Uncounted,
    Client(client): Client,
    ApiJson(body): ApiJson<PasswordBody>,
) -> Result<StatusCode, Problem> {
    let current = Password::presented(&body.current_password).map_err(|_| {
        crate::core::Error::invalid("current_password", "is not the account's password")
    })?;
    let new = Password::new_password(&body.new_password)?;
    state
        .core
        .change_my_password(&principal, &current, &new, &client)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One page of the caller's live sessions.
#[derive(Serialize, ToSchema)]
pub(super) struct SessionList<'a> {
    sessions: Vec<SessionOut<'a>>,
    /// The next page's `cursor`; `null` after the last page.
    next_cursor: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/me/sessions", tag = "native",
    params(PageQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of the live sessions, oldest first; `current` marks the caller's; pass `next_cursor` as `cursor` for the next", body = SessionList<'static>),
        Problems,
    )
)]
pub(super) async fn sessions(
    State(state): State<AppState>,
    Uncounted(principal): Uncounted,
    uri: Uri,
) -> Result<Response, Problem> {
    let q: PageQuery = query(&uri)?;
    let page = state
        .core
        .my_sessions(&principal, q.cursor.as_deref(), q.limit()?)
        .await?;
    let sessions = SessionList {
        sessions: page.items.iter().map(SessionOut::from).collect(),
        next_cursor: page.next_cursor,
    };
    Ok(Json(sessions).into_response())
}

#[utoipa::path(
    delete, path = "/v1/me/sessions/{id}", tag = "native", operation_id = "end_my_session",
    params(("id" = String, Path, description = "A session id from `GET /v1/me/sessions`")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Ended"),
        Problems,
    )
)]
pub(super) async fn end_session(
    State(state): State<AppState>,
    Uncounted(principal): Uncounted,
    Client(client): Client,
    Param(id): Param,
) -> Result<StatusCode, Problem> {
    state.core.end_my_session(&principal, &id, &client).await?;
    Ok(StatusCode::NO_CONTENT)
}
