//! The users-actions contract (seed 002): `POST /api/v1/users/actions/login`
//! with `{account, password}` where `account` is a username, email or mobile
//! and `password` is the lowercase hex MD5 of the password. Sesame checks it
//! against a second Argon2id verifier over the MD5 (written whenever the
//! password is set), so neither the password nor its MD5 is stored.
//! Answers `{"value": User, "accessToken": JWT}`; the document's `password`,
//! `passwordSalt` and `passwordFormat` are deliberately never returned.
//! Errors are `{"code": <status>, "message": "..."}`: 400 missing or
//! malformed parameters, 401 bad credentials, 429/503 with `Retry-After`.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;

use super::{
    Failure, FieldsError, JsonLogin, attribute, datetime, int_attribute, json_login,
    with_retry_after,
};
use crate::core::Error;
use crate::core::login::LoginOptions;
use crate::http::AppState;
use crate::http::extract::{Client, with_device_token};
use crate::store::{Account, AccountStatus};

/// Profile strings of the document's `User`, filled from profile attributes.
const PROFILE_STRINGS: [&str; 13] = [
    "organization",
    "department",
    "position",
    "gender",
    "birthday",
    "education",
    "graduation",
    "address",
    "weiXin",
    "qq",
    "weiBo",
    "interests",
    "signature",
];

/// This face's name in the audit log.
const FACE: &str = "users-actions";

/// The route.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/users/actions/login", post(login))
        .method_not_allowed_fallback(method_not_allowed)
}

/// Another method on the route, in this face's `{code, message}`.
async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(json!({ "code": 405, "message": "请求方式不被允许" })),
    )
        .into_response()
}

#[utoipa::path(post, path = "/api/v1/users/actions/login", tag = "users-actions", operation_id = "users_actions_login",
    request_body = crate::http::openapi::schemas::UsersActionsLogin,
    responses(
        (status = 200, description = "Signed in", body = crate::http::openapi::schemas::UsersActionsGrant),
        (status = "4XX", description = "Refused", body = crate::http::openapi::schemas::CodeMessage),
        (status = "5XX", description = "Busy or internal", body = crate::http::openapi::schemas::CodeMessage),
    ))]
pub(in crate::http) async fn login(
    State(state): State<AppState>,
    Client(client): Client,
    request: Request,
) -> Response {
    match try_login(&state, client, request).await {
        Ok(response) => response,
        Err(failure) => render(failure),
    }
}

async fn try_login(
    state: &AppState,
    client: crate::core::ClientInfo,
    request: Request,
) -> Result<Response, Failure> {
    let shape = JsonLogin {
        face: FACE,
        login_field: "account",
        password_field: "password",
        md5: true,
        options: LoginOptions::default(),
    };
    let grant = json_login(state, client, request, shape).await?;
    let body = json!({ "value": user(&grant.account), "accessToken": grant.access_token });
    Ok(with_device_token(Json(body).into_response(), &grant))
}

fn user(a: &Account) -> serde_json::Value {
    let mut user = json!({
        "id": a.id,
        "userName": a.username,
        "createDate": datetime(Some(a.created_at)),
        "lastResetPasswordDate": datetime(Some(a.password_changed_at)),
        "lastActivityDate": datetime(a.last_login_at),
        "countOfLogin": a.login_count,
        "countOfFailedLogin": a.failed_login_count,
        "countOfWriting": int_attribute(a, "countOfWriting"),
        "isChecked": a.status == AccountStatus::Active,
        "isLockedOut": a.status == AccountStatus::Locked,
        "displayName": a.display_name,
        "email": a.email.as_deref().unwrap_or(""),
        "mobile": a.mobile.as_deref().unwrap_or(""),
        "avatarUrl": a.avatar_url,
    });
    for name in PROFILE_STRINGS {
        user[name] = json!(attribute(a, name));
    }
    user
}

pub(super) fn render(failure: Failure) -> Response {
    let (status, message) = match &failure {
        Failure::Fields(FieldsError::Missing(field)) => (
            StatusCode::BAD_REQUEST,
            format!("参数错误：{field} 不能为空"),
        ),
        Failure::Fields(FieldsError::WrongType(field)) => (
            StatusCode::BAD_REQUEST,
            format!("参数错误：{field} 必须是字符串"),
        ),
        Failure::Fields(FieldsError::Malformed) => (
            StatusCode::BAD_REQUEST,
            "参数错误：请求体必须是 JSON 对象".to_owned(),
        ),
        Failure::Fields(FieldsError::TooLarge) => {
            (StatusCode::PAYLOAD_TOO_LARGE, "请求体过大".to_owned())
        }
        Failure::Fields(FieldsError::TimedOut) => {
            (StatusCode::REQUEST_TIMEOUT, "请求超时".to_owned())
        }
        Failure::Core(Error::InvalidInput { field, .. }) if *field == "password" => (
            StatusCode::BAD_REQUEST,
            "参数错误：password 必须是 32 位 MD5 十六进制字符串".to_owned(),
        ),
        Failure::Core(Error::InvalidInput { .. }) => (
            StatusCode::BAD_REQUEST,
            "参数错误：account 格式不正确".to_owned(),
        ),
        Failure::Core(Error::InvalidCredentials) => {
            (StatusCode::UNAUTHORIZED, "账号或密码错误".to_owned())
        }
        Failure::Core(Error::Throttled { .. }) => (
            StatusCode::TOO_MANY_REQUESTS,
            "登录尝试过于频繁，请稍后再试".to_owned(),
        ),
        Failure::Core(Error::Busy { .. }) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "服务器繁忙，请稍后再试".to_owned(),
        ),
        Failure::Core(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "服务器内部错误".to_owned(),
        ),
    };
    let response = (
        status,
        Json(json!({ "code": status.as_u16(), "message": message })),
    )
        .into_response();
    match &failure {
        Failure::Core(error) => with_retry_after(response, error),
        Failure::Fields(_) => response,
    }
}
