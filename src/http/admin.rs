//! The admin API under `/v1/admin/`: accounts, roles, sessions and the
//! audit log, for bearers whose account holds the `admin` permission (read
//! live, so a revoked administrator is refused at the next request). A thin
//! face: every operation is the core's, shared with the CLI, and every
//! change is audited with the acting administrator and their address.

use std::collections::BTreeMap;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::AppState;
use super::error::Problem;
use super::extract::{ApiJson, Client, bearer_token};
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
/// without the `admin` permission.
pub struct Admin(Actor);

impl FromRequestParts<AppState> for Admin {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let Ok(Client(client)) = Client::from_request_parts(parts, state).await;
        let token = bearer_token(&parts.headers).ok_or(Error::Unauthenticated)?;
        let admin = Name::parse(ADMIN_PERMISSION, "permission")?;
        let account = match state
            .core
            .authorize(token, std::slice::from_ref(&admin))
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

/// The one path parameter of a route, as text; one that does not decode
/// names nothing that exists (404, as a problem).
struct Param(String);

impl FromRequestParts<AppState> for Param {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| Param(value))
            .map_err(|_| Problem::from(Error::NotFound("resource")))
    }
}

/// An account id from the path; anything else is an account that does not exist.
fn account_id(raw: &str) -> Result<AccountId, Error> {
    raw.parse::<AccountId>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or(Error::NotFound("account"))
}

/// The query string as `T`; a malformed one is a 400 naming it.
fn query<T: DeserializeOwned + Default>(uri: &Uri) -> Result<T, Error> {
    match uri.query() {
        None | Some("") => Ok(T::default()),
        Some(query) => serde_urlencoded::from_str(query).map_err(|e| {
            Error::invalid(
                "query",
                format!("not a valid query string for this route: {e}"),
            )
        }),
    }
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

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersQuery {
    q: Option<String>,
    status: Option<String>,
    role: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

async fn list_users(
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
    let items: Vec<UserView> = page.items.iter().map(UserView::from).collect();
    Ok(Json(json!({"items": items, "next_cursor": page.next_cursor})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
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

async fn create_user(
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

async fn show_user(
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserChange {
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

async fn update_user(
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

async fn delete_user(
    State(state): State<AppState>,
    Admin(actor): Admin,
    Param(id): Param,
) -> Result<Response, Problem> {
    state.core.delete_account(account_id(&id)?, &actor).await?;
    Ok(no_content())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPassword {
    password: String,
}

async fn set_password(
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

async fn unlock(
    State(state): State<AppState>,
    Admin(actor): Admin,
    Param(id): Param,
) -> Result<Response, Problem> {
    state.core.unlock(account_id(&id)?, &actor).await?;
    Ok(no_content())
}

async fn reset_quota(
    State(state): State<AppState>,
    Admin(actor): Admin,
    Param(id): Param,
) -> Result<Response, Problem> {
    state.core.reset_quota(account_id(&id)?, &actor).await?;
    Ok(no_content())
}

async fn user_sessions(
    State(state): State<AppState>,
    _admin: Admin,
    Param(id): Param,
) -> Result<Response, Problem> {
    let sessions = state.core.account_sessions(account_id(&id)?).await?;
    let items: Vec<SessionOut> = sessions.iter().map(SessionOut::from).collect();
    Ok(Json(json!({ "items": items })).into_response())
}

async fn end_user_sessions(
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

async fn end_session(
    State(state): State<AppState>,
    Admin(actor): Admin,
    Param(id): Param,
) -> Result<Response, Problem> {
    state.core.end_session(&id, &actor).await?;
    Ok(no_content())
}

/// How many accounts still hold a password hash imported from another system.
async fn legacy_passwords(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Response, Problem> {
    let counts = state.core.legacy_hashes().await?;
    let total: u64 = counts.values().sum();
    Ok(Json(json!({ "by_format": counts, "total": total })).into_response())
}

async fn list_roles(State(state): State<AppState>, _admin: Admin) -> Result<Response, Problem> {
    let roles = state.core.roles().await?;
    let items: Vec<RoleView> = roles.iter().map(RoleView::from).collect();
    Ok(Json(json!({ "items": items })).into_response())
}

async fn show_role(
    State(state): State<AppState>,
    _admin: Admin,
    Param(name): Param,
) -> Result<Response, Problem> {
    let role = state.core.role(&name).await?;
    Ok(Json(RoleView::from(&role)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRole {
    name: String,
    description: Option<String>,
    permissions: Vec<String>,
}

async fn create_role(
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleUpdate {
    description: Option<String>,
    permissions: Option<Vec<String>>,
}

async fn update_role(
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

async fn delete_role(
    State(state): State<AppState>,
    Admin(actor): Admin,
    Param(name): Param,
) -> Result<Response, Problem> {
    state.core.delete_role(&name, &actor).await?;
    Ok(no_content())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    user: Option<String>,
    outcome: Option<String>,
    face: Option<String>,
    since: Option<String>,
    until: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

async fn audit(
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
    let items: Vec<AuditView> = page.items.iter().map(AuditView::from).collect();
    Ok(Json(json!({"items": items, "next_cursor": page.next_cursor})).into_response())
}
