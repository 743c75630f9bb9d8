//! The fungame contract (seed 004): `POST /user/login` (and `/user/login/`)
//! with `{Username, Password}`. Answers the `PayloadModel` envelope with
//! `RequestType` 13 and the HTTP status as `StatusCode`: 200 `登录成功！` with
//! `bearerToken` (a JWT) and `openToken` (the session id, which can end the
//! session through `DELETE /v1/me/sessions/{id}`); 401 `用户名或密码不正确。`
//! with `Data: {}`. For a malformed request the document's example body is
//! the bare JSON string `"服务器暂时无法处理登录请求。"` with 400, and the
//! document wins over CONTRACTS.md's envelope there. The document maps
//! server faults to that same 400, so a busy hashing pool answers it too
//! (with `Retry-After`).

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{Failure, JsonLogin, json_login, with_retry_after};
use crate::core::Error;
use crate::core::login::LoginOptions;
use crate::http::AppState;
use crate::http::extract::{Client, with_device_token};

const REQUEST_TYPE_LOGIN: i64 = 13;
const SUCCESS: &str = "登录成功！";
const WRONG: &str = "用户名或密码不正确。";
const UNAVAILABLE: &str = "服务器暂时无法处理登录请求。";

/// This face's name in the audit log.
const FACE: &str = "fungame";

/// The routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/user/login", post(login))
        .route("/user/login/", post(login))
        .method_not_allowed_fallback(method_not_allowed)
}

/// Another method on the route, as this face words its errors: a bare
/// JSON string.
async fn method_not_allowed() -> Response {
    (StatusCode::METHOD_NOT_ALLOWED, Json("请求方式不被允许。")).into_response()
}

fn envelope(status: StatusCode, message: &str, data: Value) -> Response {
    let body = json!({
        "RequestType": REQUEST_TYPE_LOGIN,
        "StatusCode": status.as_u16(),
        "Message": message,
        "Data": data,
    });
    (status, Json(body)).into_response()
}

#[utoipa::path(post, path = "/user/login", tag = "fungame", operation_id = "fungame_login",
    request_body = crate::http::openapi::schemas::FungameLogin,
    responses(
        (status = 200, description = "Signed in", body = crate::http::openapi::schemas::FungameEnvelope),
        (status = 401, description = "Wrong credentials", body = crate::http::openapi::schemas::FungameEnvelope),
        (status = 429, description = "Throttled (`Retry-After`)", body = crate::http::openapi::schemas::FungameEnvelope),
        (status = "4XX", description = "Anything else: the document's one JSON string", body = String, content_type = "application/json"),
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
        login_field: "Username",
        password_field: "Password",
        md5: false,
        options: LoginOptions::default(),
    };
    let grant = json_login(state, client, request, shape).await?;
    let data = json!({ "bearerToken": grant.access_token, "openToken": grant.session_id });
    Ok(with_device_token(
        envelope(StatusCode::OK, SUCCESS, data),
        &grant,
    ))
}

pub(super) fn render(failure: Failure) -> Response {
    match failure {
        Failure::Core(Error::InvalidCredentials) => {
            envelope(StatusCode::UNAUTHORIZED, WRONG, json!({}))
        }
        Failure::Core(error @ Error::Throttled { .. }) => {
            let response = envelope(
                StatusCode::TOO_MANY_REQUESTS,
                "登录尝试过于频繁，请稍后再试。",
                json!({}),
            );
            with_retry_after(response, &error)
        }
        Failure::Core(error) => with_retry_after(
            (StatusCode::BAD_REQUEST, Json(UNAVAILABLE)).into_response(),
            &error,
        ),
        Failure::Fields(_) => (StatusCode::BAD_REQUEST, Json(UNAVAILABLE)).into_response(),
    }
}
