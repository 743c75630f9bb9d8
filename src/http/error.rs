//! The native API's error shape: `application/problem+json` (RFC 9457).
//!
//! [`Problem`] is built from a core [`Error`] in one place; faces with other
//! shapes do their own mapping. Internal faults are logged here with their
//! detail and answered with a generic body.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::core::Error;

/// An HTTP error ready to render.
#[derive(Debug, Clone)]
pub struct Problem {
    status: StatusCode,
    code: &'static str,
    detail: String,
    field: Option<&'static str>,
    retry_after: Option<u64>,
}

/// An error, as `application/problem+json` (RFC 9457).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Problem)]
pub struct ProblemBody<'a> {
    /// `urn:sesame:problem:` and the code.
    #[serde(rename = "type")]
    kind: String,
    /// The HTTP status's reason phrase.
    title: &'a str,
    status: u16,
    /// Stable, machine-readable: `invalid_credentials`, `throttled`, `busy` …
    code: &'a str,
    /// For a person; never a secret.
    detail: &'a str,
    /// The request field at fault, for invalid input.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

/// The error answers of the native and admin APIs, for the description:
/// the `code` tells them apart (`invalid_credentials`, `throttled` with
/// `Retry-After`, `busy`, `invalid_input` with `field` …).
#[derive(utoipa::IntoResponses)]
pub enum Problems {
    /// A refusal.
    #[response(
        status = "4XX",
        description = "Refused: the problem's `code` says why",
        content_type = "application/problem+json"
    )]
    Client(ProblemBody<'static>),
    /// A failure on Sesame's side.
    #[response(
        status = "5XX",
        description = "`busy` (503, with `Retry-After`) or an internal error",
        content_type = "application/problem+json"
    )]
    Server(ProblemBody<'static>),
}

impl Problem {
    /// A problem with a status, stable code and human-readable detail.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            field: None,
            retry_after: None,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }
}

/// The HTTP status for each core error.
pub fn status_of(error: &Error) -> StatusCode {
    match error {
        Error::InvalidCredentials
        | Error::Unauthenticated
        | Error::InvalidRefreshToken
        | Error::RefreshTokenReused => StatusCode::UNAUTHORIZED,
        Error::InvalidInput { .. } | Error::WeakPassword(_) => StatusCode::BAD_REQUEST,
        Error::Conflict(_) | Error::LastAdministrator => StatusCode::CONFLICT,
        Error::Forbidden | Error::ClientNotAccepted => StatusCode::FORBIDDEN,
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
        Error::QuotaExceeded | Error::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
        Error::Store(_) | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<Error> for Problem {
    fn from(error: Error) -> Self {
        let status = status_of(&error);
        if error.is_internal() {
            tracing::error!(%error, "internal error");
            return Problem::new(status, error.code(), "internal error; see the server log");
        }
        let mut problem = Problem::new(status, error.code(), error.to_string());
        match error {
            Error::InvalidInput { field, .. } | Error::Conflict(field) => {
                problem.field = Some(field)
            }
            Error::Busy { retry_after_secs } | Error::Throttled { retry_after_secs } => {
                problem.retry_after = Some(retry_after_secs)
            }
            _ => {}
        }
        problem
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = ProblemBody {
            kind: format!("urn:sesame:problem:{}", self.code),
            title: self.status.canonical_reason().unwrap_or("Error"),
            status: self.status.as_u16(),
            code: self.code,
            detail: &self.detail,
            field: self.field,
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = (self.status, json).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"sesame\""),
            );
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
