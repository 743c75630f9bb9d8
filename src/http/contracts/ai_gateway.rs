//! The ai-gateway contract (seed 000): `POST /api/v1/login` with
//! `{username, password}`; answers `access_token`, `token_type: "bearer"`,
//! `expires_in` and the `user` object with its API-call count and quota.
//! The document leaves failures open; this face answers FastAPI-style
//! `{"detail": "..."}`: 401 bad credentials, 422 malformed body, 429
//! throttled, 503 busy (both with `Retry-After`), 500 internal.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;

use super::{Failure, FieldsError, JsonLogin, json_login, primary_role, with_retry_after};
use crate::core::Error;
use crate::core::login::LoginOptions;
use crate::http::AppState;
use crate::http::extract::{Client, with_device_token};
use crate::http::views::rfc3339;

/// This face's name in the audit log.
const FACE: &str = "ai-gateway";

/// The route.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/login", post(login))
        .method_not_allowed_fallback(method_not_allowed)
}

/// Another method on the route, as FastAPI words it.
async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(json!({ "detail": "Method Not Allowed" })),
    )
        .into_response()
}

#[utoipa::path(post, path = "/api/v1/login", tag = "ai-gateway", operation_id = "ai_gateway_login",
    request_body = crate::http::openapi::schemas::UsernamePassword,
    responses(
        (status = 200, description = "Signed in", body = crate::http::openapi::schemas::AiGatewayGrant),
        (status = "4XX", description = "401 wrong credentials, 422 a malformed body, 429 throttled (`Retry-After`), 413 too large, 408 a body that did not arrive within `http.request_timeout`", body = crate::http::openapi::schemas::AiGatewayError),
        (status = "5XX", description = "503 busy or not answered within `http.request_timeout` (`Retry-After`), 500 internal", body = crate::http::openapi::schemas::AiGatewayError),
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
        login_field: "username",
        password_field: "password",
        md5: false,
        options: LoginOptions::default(),
    };
    let grant = json_login(state, client, request, shape).await?;
    let user = &grant.account;
    let body = json!({
        "access_token": grant.access_token,
        "token_type": "bearer",
        "expires_in": grant.access_expires_in,
        "user": {
            "id": user.id.to_string(),
            "username": user.username,
            "role": primary_role(user),
            "status": user.status.as_str(),
            "created_at": rfc3339(user.created_at),
            "updated_at": rfc3339(user.updated_at),
            "last_login": user.last_login_at.map(rfc3339).unwrap_or_default(),
            "api_calls_count": user.api_calls_count,
            "max_api_calls": user.max_api_calls,
        }
    });
    Ok(with_device_token(Json(body).into_response(), &grant))
}

pub(super) fn render(failure: Failure) -> Response {
    let (status, detail) = match &failure {
        Failure::Fields(FieldsError::TooLarge) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request body too large".to_owned(),
        ),
        Failure::Fields(FieldsError::TimedOut) => (
            StatusCode::REQUEST_TIMEOUT,
            "Request body did not arrive in time".to_owned(),
        ),
        Failure::Fields(FieldsError::Malformed) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "Request body must be a JSON object".to_owned(),
        ),
        Failure::Fields(FieldsError::Missing(field)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{field} is required"),
        ),
        Failure::Fields(FieldsError::WrongType(field)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{field} must be a string"),
        ),
        Failure::Core(error) => match error {
            Error::InvalidCredentials => (
                StatusCode::UNAUTHORIZED,
                "Incorrect username or password".to_owned(),
            ),
            Error::InvalidInput { .. } => (StatusCode::UNPROCESSABLE_ENTITY, error.to_string()),
            Error::Throttled { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "Too many login attempts".to_owned(),
            ),
            Error::Busy { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Server busy, retry later".to_owned(),
            ),
            _ => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal server error".to_owned(),
            ),
        },
    };
    let response = (status, Json(json!({ "detail": detail }))).into_response();
    match &failure {
        Failure::Core(error) => with_retry_after(response, error),
        Failure::Fields(_) => response,
    }
}
