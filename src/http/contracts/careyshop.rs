//! The careyshop contract (seed 003): `GET`/`POST
//! /api/v1/user/method/login.user.user/` with `username` (4–20), `password`
//! (at least 6) and `platform` (at most 50) from the query string, a form or
//! JSON. Tokens are opaque: `token` and `refresh` are 32 lowercase hex
//! digits, stored only as hashes; the opaque token works as a bearer token
//! everywhere. One session per account and platform (configurable). The
//! refresh call the document links is `refresh.token.user/` with `refresh`;
//! it returns a new `token` block and the old token stops working.
//! Envelope: `{"status", "message", "data"}`, HTTP status equal to `status`.

use axum::body::Bytes;
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{
    Failure, FieldsError, attribute, datetime, int_attribute, merged_params, with_retry_after,
};
use crate::core::Error;
use crate::core::domain::{LoginId, Password, Platform};
use crate::core::login::{Credential, Grant, LoginAttempt, LoginOptions};
use crate::core::tokens::is_opaque_token;
use crate::http::AppState;
use crate::http::extract::{Client, read_body, with_device_token};
use crate::store::{Account, AccountStatus};

/// This face's name in the audit log.
const FACE: &str = "careyshop";

/// The routes, with and without the trailing slash.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/user/method/login.user.user/",
            get(login).post(login),
        )
        .route(
            "/api/v1/user/method/login.user.user",
            get(login).post(login),
        )
        .route(
            "/api/v1/user/method/refresh.token.user/",
            get(refresh).post(refresh),
        )
        .route(
            "/api/v1/user/method/refresh.token.user",
            get(refresh).post(refresh),
        )
        .method_not_allowed_fallback(method_not_allowed)
}

/// Another method on the routes, in this face's `{status, message}`.
async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(json!({ "status": 405, "message": "请求方式不被允许" })),
    )
        .into_response()
}

/// A refusal in the contract's words.
#[derive(Debug)]
enum Refusal {
    Invalid(&'static str),
    Failure(Failure),
}

impl<T: Into<Failure>> From<T> for Refusal {
    fn from(error: T) -> Self {
        Refusal::Failure(error.into())
    }
}

async fn params(
    state: &AppState,
    query: Option<String>,
    request: Request,
) -> Result<std::collections::HashMap<String, String>, Refusal> {
    let method: Method = request.method().clone();
    let headers: HeaderMap = request.headers().clone();
    let body: Bytes = if method == Method::GET {
        Bytes::new()
    } else {
        read_body(request, state).await?
    };
    Ok(merged_params(&method, query.as_deref(), &headers, &body).await?)
}

#[utoipa::path(method(get, post), path = "/api/v1/user/method/login.user.user/", tag = "careyshop", operation_id = "careyshop_login",
    params(
        ("username" = Option<String>, Query), ("password" = Option<String>, Query),
        ("platform" = Option<String>, Query),
    ),
    request_body(description = "The same fields as a form (urlencoded or multipart) or JSON (body wins over query); optional",
        content((crate::http::openapi::schemas::CareyshopLogin = "application/x-www-form-urlencoded"), (crate::http::openapi::schemas::CareyshopLogin = "multipart/form-data"), (crate::http::openapi::schemas::CareyshopLogin = "application/json"))),
    responses(
        (status = 200, description = "Signed in: `data` holds `user` and `token`", body = crate::http::openapi::schemas::CareyshopEnvelope),
        (status = "4XX", description = "Refused: `status` equals the HTTP status", body = crate::http::openapi::schemas::CareyshopEnvelope),
        (status = "5XX", description = "Busy or internal", body = crate::http::openapi::schemas::CareyshopEnvelope),
    ))]
pub(in crate::http) async fn login(
    State(state): State<AppState>,
    Client(client): Client,
    RawQuery(query): RawQuery,
    request: Request,
) -> Response {
    let result = async {
        let params = params(&state, query, request).await?;
        let field = |name: &str| params.get(name).map(String::as_str).unwrap_or("");
        let (username, password, platform) =
            (field("username"), field("password"), field("platform"));
        match username.chars().count() {
            0 => return Err(Refusal::Invalid("账号不能为空")),
            1..=3 | 21.. => return Err(Refusal::Invalid("账号长度必须在4到20个字符之间")),
            _ => {}
        }
        match password.chars().count() {
            0 => return Err(Refusal::Invalid("密码不能为空")),
            1..=5 => return Err(Refusal::Invalid("密码长度不能小于6个字符")),
            _ => {}
        }
        if platform.is_empty() {
            return Err(Refusal::Invalid("来源平台不能为空"));
        }
        let platform = Platform::parse(platform)
            .map_err(|_| Refusal::Invalid("来源平台长度不能超过50个字符"))?;
        let attempt = LoginAttempt {
            login: LoginId::parse(username).map_err(|_| Refusal::Invalid("账号格式不正确"))?,
            credential: Credential::Password(
                Password::presented(password)
                    .map_err(|_| Refusal::Invalid("密码长度不能超过1024个字节"))?,
            ),
            platform: Some(platform),
            client,
            options: LoginOptions {
                opaque_tokens: true,
                platform_policy: Some(state.contracts.careyshop_platform_policy),
                ..LoginOptions::default()
            },
            face: FACE,
        };
        let grant = state.core.login(attempt).await?;
        Ok((
            json!({ "user": user(&grant.account), "token": token(&grant) }),
            grant,
        ))
    }
    .await;
    match result {
        Ok((data, grant)) => with_device_token(respond(Ok(data)), &grant),
        Err(refusal) => respond(Err(refusal)),
    }
}

#[utoipa::path(method(get, post), path = "/api/v1/user/method/refresh.token.user/", tag = "careyshop", operation_id = "careyshop_refresh",
    params(("refresh" = Option<String>, Query)),
    request_body(description = "The same field as a form or JSON; optional",
        content((crate::http::openapi::schemas::CareyshopRefresh = "application/x-www-form-urlencoded"), (crate::http::openapi::schemas::CareyshopRefresh = "application/json"))),
    responses(
        (status = 200, description = "A new `token` block; the old token stops working", body = crate::http::openapi::schemas::CareyshopEnvelope),
        (status = "4XX", description = "Refused: `status` equals the HTTP status", body = crate::http::openapi::schemas::CareyshopEnvelope),
        (status = "5XX", description = "Busy or internal", body = crate::http::openapi::schemas::CareyshopEnvelope),
    ))]
pub(in crate::http) async fn refresh(
    State(state): State<AppState>,
    Client(client): Client,
    RawQuery(query): RawQuery,
    request: Request,
) -> Response {
    let result = async {
        let params = params(&state, query, request).await?;
        let refresh = params.get("refresh").map(String::as_str).unwrap_or("");
        if refresh.is_empty() {
            return Err(Refusal::Invalid("刷新授权码不能为空"));
        }
        if !is_opaque_token(refresh) {
            return Err(Refusal::Failure(Failure::Core(Error::InvalidRefreshToken)));
        }
        let grant = state.core.refresh(refresh, &client, FACE).await?;
        Ok(json!({ "token": token(&grant) }))
    }
    .await;
    respond(result)
}

fn user(a: &Account) -> Value {
    json!({
        "user_id": a.id,
        "username": a.username,
        "mobile": a.mobile.as_deref().unwrap_or(""),
        "is_mobile": i32::from(a.mobile_verified),
        "email": a.email.as_deref().unwrap_or(""),
        "is_email": i32::from(a.email_verified),
        "nickname": if a.profile.contains_key("nickname") { attribute(a, "nickname") } else { &a.display_name },
        "head_pic": if a.profile.contains_key("head_pic") { attribute(a, "head_pic") } else { &a.avatar_url },
        "sex": int_attribute(a, "sex"),
        "birthday": attribute(a, "birthday"),
        "user_level_id": int_attribute(a, "user_level_id"),
        "user_address_id": int_attribute(a, "user_address_id"),
        "group_id": int_attribute(a, "group_id"),
        "last_login": datetime(a.last_login_at),
        "last_ip": a.last_login_ip.as_deref().unwrap_or(""),
        "status": i32::from(a.status == AccountStatus::Active),
        "create_time": datetime(Some(a.created_at)),
        "update_time": datetime(Some(a.updated_at)),
    })
}

fn token(grant: &Grant) -> Value {
    json!({
        "group_id": int_attribute(&grant.account, "group_id"),
        "token": grant.access_token,
        "token_expires": grant.access_expires_at,
        "refresh": grant.refresh_token,
        "refresh_expires": grant.refresh_expires_at,
    })
}

/// A failure outside a handler (`http.request_timeout`).
pub(super) fn render(failure: Failure) -> Response {
    respond(Err(Refusal::Failure(failure)))
}

fn respond(result: Result<Value, Refusal>) -> Response {
    let (status, message, error) = match result {
        Ok(data) => {
            return Json(json!({ "status": 200, "message": "success", "data": data }))
                .into_response();
        }
        Err(Refusal::Invalid(message)) => (StatusCode::BAD_REQUEST, message, None),
        Err(Refusal::Failure(failure)) => match failure {
            Failure::Fields(FieldsError::TooLarge) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "请求数据过大", None)
            }
            Failure::Fields(FieldsError::TimedOut) => {
                (StatusCode::REQUEST_TIMEOUT, "请求超时", None)
            }
            Failure::Fields(_) => (StatusCode::BAD_REQUEST, "请求数据格式错误", None),
            Failure::Core(error) => {
                let (status, message) = match &error {
                    Error::InvalidCredentials => (StatusCode::UNAUTHORIZED, "账号或密码错误"),
                    Error::InvalidRefreshToken | Error::RefreshTokenReused => {
                        (StatusCode::UNAUTHORIZED, "刷新授权码无效或已过期")
                    }
                    Error::InvalidInput { .. } => (StatusCode::BAD_REQUEST, "请求参数错误"),
                    Error::Throttled { .. } => (
                        StatusCode::TOO_MANY_REQUESTS,
                        "登录尝试过于频繁，请稍后再试",
                    ),
                    Error::Busy { .. } => {
                        (StatusCode::SERVICE_UNAVAILABLE, "服务器繁忙，请稍后再试")
                    }
                    _ => (StatusCode::INTERNAL_SERVER_ERROR, "服务器内部错误"),
                };
                (status, message, Some(error))
            }
        },
    };
    let response = (
        status,
        Json(json!({ "status": status.as_u16(), "message": message })),
    )
        .into_response();
    match error {
        Some(error) => with_retry_after(response, &error),
        None => response,
    }
}
