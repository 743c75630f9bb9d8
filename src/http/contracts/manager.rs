//! The manager contract (seed 001): `POST /manager/login` with
//! `{username, password}`, for administrators only. Answers `token`,
//! `expire` and `user {username, role, permissions}`. Every refusal,
//! including a valid login of an account without the configured permission,
//! is the same 401 `{"error": "Invalid username or password"}`; 429 (with
//! `Retry-After`) when attempts are too frequent; 500 only for real faults.

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

const INVALID: &str = "Invalid username or password";

/// This face's name in the audit log.
const FACE: &str = "manager";

/// The route.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/manager/login", post(login))
        .method_not_allowed_fallback(method_not_allowed)
}

/// Another method on the route, in this face's `{"error": …}`.
async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(json!({ "error": "Method not allowed" })),
    )
        .into_response()
}

#[utoipa::path(post, path = "/manager/login", tag = "manager", operation_id = "manager_login",
    request_body = crate::http::openapi::schemas::UsernamePassword,
    responses(
        (status = 200, description = "Signed in (an account holding the configured permission)", body = crate::http::openapi::schemas::ManagerGrant),
        (status = "4XX", description = "Refused", body = crate::http::openapi::schemas::ManagerError),
        (status = "5XX", description = "Busy or internal", body = crate::http::openapi::schemas::ManagerError),
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
        options: LoginOptions {
            required_permission: Some(state.contracts.manager_permission.clone()),
            ..LoginOptions::default()
        },
    };
    let grant = json_login(state, client, request, shape).await?;
    let user = &grant.account;
    let body = json!({
        "token": grant.access_token,
        "expire": grant.access_expires_in,
        "user": {
            "username": user.username,
            "role": primary_role(user),
            "permissions": user.permissions,
        }
    });
    Ok(with_device_token(Json(body).into_response(), &grant))
}

pub(super) fn render(failure: Failure) -> Response {
    let (status, message) = match &failure {
        Failure::Fields(FieldsError::Missing(_) | FieldsError::WrongType(_)) => {
            (StatusCode::UNAUTHORIZED, INVALID)
        }
        Failure::Fields(FieldsError::Malformed) => {
            (StatusCode::BAD_REQUEST, "Invalid request body")
        }
        Failure::Fields(FieldsError::TooLarge) => {
            (StatusCode::PAYLOAD_TOO_LARGE, "Request body too large")
        }
        Failure::Fields(FieldsError::TimedOut) => (
            StatusCode::REQUEST_TIMEOUT,
            "Request body did not arrive in time",
        ),
        Failure::Core(Error::InvalidCredentials | Error::InvalidInput { .. }) => {
            (StatusCode::UNAUTHORIZED, INVALID)
        }
        Failure::Core(Error::Throttled { .. }) => {
            (StatusCode::TOO_MANY_REQUESTS, "Too many login attempts")
        }
        Failure::Core(Error::Busy { .. }) => {
            (StatusCode::SERVICE_UNAVAILABLE, "Server busy, retry later")
        }
        Failure::Core(_) => (StatusCode::INTERNAL_SERVER_ERROR, "Internal server error"),
    };
    let response = (status, Json(json!({ "error": message }))).into_response();
    match &failure {
        Failure::Core(error) => with_retry_after(response, error),
        Failure::Fields(_) => response,
    }
}
