//! The admin API under `/v1/admin/`: accounts, roles, sessions and the
//! audit log, for bearers whose account holds the `admin` permission (read
//! live, so a revoked administrator is refused at the next request). A thin
//! face: every operation is the core's, shared with the CLI, and every
//! change is audited with the acting administrator and their address.

use std::collections::BTreeMap;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::error::{Problem, Problems};
use super::extract::{ApiJson, Client, PageQuery, Param, bearer_token, query};
use super::views::{AuditView, RoleView, SessionOut, UserView};
use crate::core::Error;
use crate::core::accounts::AccountSpec;
use crate::core::admin::{AccountPatch, AccountSearch, AuditSearch};
use crate::core::domain::{Email, Mobile, Name, Password, Username};
use crate::core::roles::Actor;
use crate::store::{ADMIN_PERMISSION, AccountId};

/// The admin routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/users", get(list_users).post(create_user))
        .route(
            "/v1/admin/users/{id}",
            get(show_user).patch(update_user).delete(delete_user),
        )
        .route("/v1/admin/users/{id}/password", post(set_password))
        .route("/v1/admin/users/{id}/unlock", post(unlock))
        .route("/v1/admin/users/{id}/reset-quota", post(reset_quota))
        .route(
            "/v1/admin/users/{id}/sessions",
            get(user_sessions).delete(end_user_sessions),
        )
        .route("/v1/admin/sessions/{id}", delete(end_session))
        .route("/v1/admin/roles", get(list_roles).post(create_role))
        .route(
            "/v1/admin/roles/{name}",
            get(show_role).patch(update_role).delete(delete_role),
        )
        .route("/v1/admin/audit", get(audit))
        .route("/v1/admin/legacy-passwords", get(legacy_passwords))
}

/// An administrator making a request: 401 without a live session, 403
/// without the `admin` permission or with a token issued to an OAuth client.
pub struct Admin(Actor);

impl FromRequestParts<AppState> for Admin {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let Ok(Client(client)) = Client::from_request_parts(parts, state).await;
        let token = bearer_token(&parts.headers).ok_or(Error::Unauthenticated)?;
        let admin = Name::parse(ADMIN_PERMISSION, "permission")?;
        let account = match state
            .core
            .authorize_admin(token, std::slice::from_ref(&admin))
            .await
        {
            Ok(account) => account,
            Err(Error::Forbidden) => {
                // A live session without the permission: worth an audit entry
                // (who tried what, from where). The path only: no query string.
                let path: String = parts.uri.path().chars().take(200).collect();
                let what = format!("{} {path}", parts.method);
                state.core.audit_admin_refusal(token, &client, &what).await;
                return Err(Error::Forbidden.into());
            }
            Err(error) => return Err(error.into()),
        };
        Ok(Admin(Actor::Admin {
            account_id: account.id,
            username: account.username.clone(),
            client,
        }))
    }
}

/// An account id from the path; anything else is an account that does not exist.
fn account_id(raw: &str) -> Result<AccountId, Error> {
    raw.parse::<AccountId>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or(Error::NotFound("account"))
}

/// A time in a query: RFC 3339 (`2026-12-01T10:00:00Z`) or Unix seconds.
fn time(raw: Option<&str>, field: &'static str) -> Result<Option<i64>, Error> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    if let Ok(seconds) = raw.parse::<i64>() {
        return Ok(Some(seconds));
    }
    time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
        .map(|t| Some(t.unix_timestamp()))
        .map_err(|_| {
            Error::invalid(
                field,
                "must be RFC 3339 (2026-12-01T10:00:00Z) or Unix seconds",
            )
        })
}

/// One page of accounts.
#[derive(Serialize, ToSchema)]
pub(super) struct UserPage<'a> {
    items: Vec<UserView<'a>>,
    /// The next page's `cursor`; `null` after the last page.
    next_cursor: Option<String>,
}

/// One page of an account's live sessions.
#[derive(Serialize, ToSchema)]
pub(super) struct SessionPage<'a> {
    items: Vec<SessionOut<'a>>,
    /// The next page's `cursor`; `null` after the last page.
    next_cursor: Option<String>,
}

/// Every role.
#[derive(Serialize, ToSchema)]
pub(super) struct RolePage<'a> {
    items: Vec<RoleView<'a>>,
}

/// One page of audit events.
#[derive(Serialize, ToSchema)]
pub(super) struct AuditPage<'a> {
    items: Vec<AuditView<'a>>,
    /// The next page's `cursor`; `null` after the last page.
    next_cursor: Option<String>,
}

/// Accounts still holding a password hash imported from another system.
#[derive(Serialize, ToSchema)]
pub(super) struct LegacyPasswords {
    /// Accounts per format (`bcrypt`, `firebase-scrypt` …).
    by_format: BTreeMap<&'static str, u64>,
    total: u64,
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct UsersQuery {
    q: Option<String>,
    status: Option<String>,
    role: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

#[utoipa::path(
    get, path = "/v1/admin/users", tag = "admin",
    params(UsersQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of accounts, by id; pass `next_cursor` as `cursor` for the next", body = UserPage<'static>),
        Problems,
    )
)]
pub(super) async fn list_users(
    State(state): State<AppState>,
    _admin: Admin,
    uri: Uri,
) -> Result<Response, Problem> {
    let q: UsersQuery = query(&uri)?;
    let page = state
        .core
        .search_accounts(&AccountSearch {
            q: q.q,
            status: q.status,
            role: q.role,
            cursor: q.cursor,
            limit: q.limit,
        })
        .await?;
    Ok(Json(UserPage {
        items: page.items.iter().map(UserView::from).collect(),
        next_cursor: page.next_cursor,
    })
    .into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewUser {
    username: String,
    password: String,
    email: Option<String>,
    mobile: Option<String>,
    display_name: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    max_api_calls: i64,
    quota_period: Option<String>,
    #[serde(default)]
    profile: BTreeMap<String, String>,
}

#[utoipa::path(
    post, path = "/v1/admin/users", tag = "admin",
    request_body = NewUser,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created; `Location` names it", body = UserView<'static>),
        Problems,
    )
)]
pub(super) async fn create_user(
    State(state): State<AppState>,
    Admin(actor): Admin,
    ApiJson(body): ApiJson<NewUser>,
) -> Result<Response, Problem> {
    let spec = AccountSpec {
        username: Username::parse(&body.username)?,
        email: body.email.as_deref().map(Email::parse).transpose()?,
        mobile: body.mobile.as_deref().map(Mobile::parse).transpose()?,
        display_name: body.display_name,
        roles: body.roles,
        max_api_calls: body.max_api_calls,
        password: Password::new_password(&body.password)?,
    };
    let account = state
        .core
        .create_account_with_profile(spec, body.profile, body.quota_period.as_deref(), &actor)
        .await?;
    let mut response = (StatusCode::CREATED, Json(UserView::from(&account))).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/admin/users/{}", account.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

#[utoipa::path(
    get, path = "/v1/admin/users/{id}", tag = "admin",
    params(("id" = String, Path, description = "The account's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The account", body = UserView<'static>),
        Problems,
    )
)]
pub(super) async fn show_user(
    State(state): State<AppState>,
    _admin: Admin,
    Param(id): Param,
) -> Result<Response, Problem> {
    let account = state.core.account_with_usage(account_id(&id)?).await?;
    Ok(Json(UserView::from(&account)).into_response())
}

/// `null` for a field that may be removed, distinct from leaving it out.
fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UserChange {
    status: Option<String>,
    roles: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    email: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    mobile: Option<Option<String>>,
    display_name: Option<String>,
    max_api_calls: Option<i64>,
    #[serde(default, deserialize_with = "nullable")]
    quota_period: Option<Option<String>>,
    profile: Option<BTreeMap<String, Option<String>>>,
}

#[utoipa::path(
    patch, path = "/v1/admin/users/{id}", tag = "admin",
    params(("id" = String, Path, description = "The account's id")),
    request_body = UserChange,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The account as changed", body = UserView<'static>),
        Problems,
    )
)]
pub(super) async fn update_user(
    State(state): State<AppState>,
    Admin(actor): Admin,
    Param(id): Param,
    ApiJson(body): ApiJson<UserChange>,
) -> Result<Response, Problem> {
    let patch = AccountPatch {
        status: body.status,
        roles: body.roles,
        email: body.email,
        mobile: body.mobile,
        display_name: body.display_name,
        max_api_calls: body.max_api_calls,
        quota_period: body.quota_period,
        profile: body.profile,
    };
    let account = state
        .core
        .update_account(account_id(&id)?, patch, &actor)
        .await?;
    Ok(Json(UserView::from(&account)).into_response())
}

#[utoipa::path(
    delete, path = "/v1/admin/users/{id}", tag = "admin",
    params(("id" = String, Path, description = "The account's id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted, with its sessions"),
        Problems,
    )
)]
pub(super) async fn delete_user(
    State(state): State<AppState>,
    Admin(actor): Admin,
    Param(id): Param,
) -> Result<Response, Problem> {
    state.core.delete_account(account_id(&id)?, &actor).await?;
    Ok(no_content())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewPassword {
    password: String,
}

#[utoipa::path(
    post, path = "/v1/admin/users/{id}/password", tag = "admin",
    params(("id" = String, Path, description = "The account's id")),
    request_body = NewPassword,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Set; the account's sessions are ended"),
        Problems,
    )
)]
pub(super) async fn set_password(
    State(state): State<AppState>,
    Admin(actor): Admin,
    Param(id): Param,
    ApiJson(body): ApiJson<NewPassword>,
) -> Result<Response, Problem> {
    let password = Password::new_password(&body.password)?;
    state
        .core
        .reset_password(account_id(&id)?, &password, &actor)
        .await?;
    Ok(no_content())
}

#[utoipa::path(
    post, path = "/v1/admin/users/{id}/unlock", tag = "admin",
    params(("id" = String, Path, description = "The account's id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Unlocked, failure budgets cleared"),
        Problems,
    )
)]
pub(super) async fn unlock(
    State(state): State<AppState>,
    Admin(actor): Admin,
    Param(id): Param,
) -> Result<Response, Problem> {
    state.core.unlock(account_id(&id)?, &actor).await?;
    Ok(no_content())
}

#[utoipa::path(
    post, path = "/v1/admin/users/{id}/reset-quota", tag = "admin",
    params(("id" = String, Path, description = "The account's id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "The API-call count starts again from 0"),
        Problems,
    )
)]
pub(super) async fn reset_quota(
    State(state): State<AppState>,
    Admin(actor): Admin,
    Param(id): Param,
) -> Result<Response, Problem> {
    state.core.reset_quota(account_id(&id)?, &actor).await?;
    Ok(no_content())
}

#[utoipa::path(
    get, path = "/v1/admin/users/{id}/sessions", tag = "admin",
    params(("id" = String, Path, description = "The account's id"), PageQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of the account's live sessions, oldest first; pass `next_cursor` as `cursor` for the next", body = SessionPage<'static>),
        Problems,
    )
)]
pub(super) async fn user_sessions(
    State(state): State<AppState>,
    _admin: Admin,
    Param(id): Param,
    uri: Uri,
) -> Result<Response, Problem> {
    let q: PageQuery = query(&uri)?;
    let page = state
        .core
        .account_sessions(account_id(&id)?, q.cursor.as_deref(), q.limit()?)
        .await?;
    Ok(Json(SessionPage {
        items: page.items.iter().map(SessionOut::from).collect(),
        next_cursor: page.next_cursor,
    })
    .into_response())
}

#[utoipa::path(
    delete, path = "/v1/admin/users/{id}/sessions", tag = "admin",
    params(("id" = String, Path, description = "The account's id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Every session of the account ended"),
        Problems,
    )
)]
pub(super) async fn end_user_sessions(
    State(state): State<AppState>,
    Admin(actor): Admin,
    Param(id): Param,
) -> Result<Response, Problem> {
    state
        .core
        .end_all_sessions(account_id(&id)?, &actor)
        .await?;
    Ok(no_content())
}

#[utoipa::path(
    delete, path = "/v1/admin/sessions/{id}", tag = "admin", operation_id = "admin_end_session",
    params(("id" = String, Path, description = "A session id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Ended"),
        Problems,
    )
)]
pub(super) async fn end_session(
    State(state): State<AppState>,
    Admin(actor): Admin,
    Param(id): Param,
) -> Result<Response, Problem> {
    state.core.end_session(&id, &actor).await?;
    Ok(no_content())
}

/// How many accounts still hold a password hash imported from another system.
#[utoipa::path(
    get, path = "/v1/admin/legacy-passwords", tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Accounts still holding an imported hash, by format", body = LegacyPasswords),
        Problems,
    )
)]
pub(super) async fn legacy_passwords(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Response, Problem> {
    let counts = state.core.legacy_hashes().await?;
    let total: u64 = counts.values().sum();
    Ok(Json(LegacyPasswords {
        by_format: counts,
        total,
    })
    .into_response())
}

#[utoipa::path(
    get, path = "/v1/admin/roles", tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every role", body = RolePage<'static>),
        Problems,
    )
)]
pub(super) async fn list_roles(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Response, Problem> {
    let roles = state.core.roles().await?;
    Ok(Json(RolePage {
        items: roles.iter().map(RoleView::from).collect(),
    })
    .into_response())
}

#[utoipa::path(
    get, path = "/v1/admin/roles/{name}", tag = "admin",
    params(("name" = String, Path, description = "The role's name")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The role", body = RoleView<'static>),
        Problems,
    )
)]
pub(super) async fn show_role(
    State(state): State<AppState>,
    _admin: Admin,
    Param(name): Param,
) -> Result<Response, Problem> {
    let role = state.core.role(&name).await?;
    Ok(Json(RoleView::from(&role)).into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewRole {
    name: String,
    description: Option<String>,
    permissions: Vec<String>,
}

#[utoipa::path(
    post, path = "/v1/admin/roles", tag = "admin",
    request_body = NewRole,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = RoleView<'static>),
        Problems,
    )
)]
pub(super) async fn create_role(
    State(state): State<AppState>,
    Admin(actor): Admin,
    ApiJson(body): ApiJson<NewRole>,
) -> Result<Response, Problem> {
    let role = state
        .core
        .create_role(
            &body.name,
            body.description.as_deref(),
            &body.permissions,
            &actor,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(RoleView::from(&role))).into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RoleUpdate {
    description: Option<String>,
    permissions: Option<Vec<String>>,
}

#[utoipa::path(
    patch, path = "/v1/admin/roles/{name}", tag = "admin",
    params(("name" = String, Path, description = "The role's name")),
    request_body = RoleUpdate,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The role as changed", body = RoleView<'static>),
        Problems,
    )
)]
pub(super) async fn update_role(
    State(state): State<AppState>,
    Admin(actor): Admin,
    Param(name): Param,
    ApiJson(body): ApiJson<RoleUpdate>,
) -> Result<Response, Problem> {
    let role = state
        .core
        .update_role(
            &name,
            body.description.as_deref(),
            body.permissions.as_deref(),
            &actor,
        )
        .await?;
    Ok(Json(RoleView::from(&role)).into_response())
}

#[utoipa::path(
    delete, path = "/v1/admin/roles/{name}", tag = "admin",
    params(("name" = String, Path, description = "The role's name")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted (not a built-in role)"),
        Problems,
    )
)]
pub(super) async fn delete_role(
    State(state): State<AppState>,
    Admin(actor): Admin,
    Param(name): Param,
) -> Result<Response, Problem> {
    state.core.delete_role(&name, &actor).await?;
    Ok(no_content())
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditParams {
    user: Option<String>,
    outcome: Option<String>,
    face: Option<String>,
    since: Option<String>,
    until: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

#[utoipa::path(
    get, path = "/v1/admin/audit", tag = "admin",
    params(AuditParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of events, newest first", body = AuditPage<'static>),
        Problems,
    )
)]
pub(super) async fn audit(
    State(state): State<AppState>,
    _admin: Admin,
    uri: Uri,
) -> Result<Response, Problem> {
    let q: AuditParams = query(&uri)?;
    let page = state
        .core
        .audit_page(&AuditSearch {
            user: q.user,
            outcome: q.outcome,
            face: q.face,
            since: time(q.since.as_deref(), "since")?,
            until: time(q.until.as_deref(), "until")?,
            cursor: q.cursor,
            limit: q.limit,
        })
        .await?;
    Ok(Json(AuditPage {
        items: page.items.iter().map(AuditView::from).collect(),
        next_cursor: page.next_cursor,
    })
    .into_response())
}
