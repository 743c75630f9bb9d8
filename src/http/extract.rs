//! Request extractors shared by the faces: a JSON body whose errors are
//! problems (and never echo a value back), the bearer-authenticated caller,
//! and the client's address and user agent.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::Problem;
use crate::core::ClientInfo;
use crate::core::login::Principal;

/// Longest user agent kept, in characters.
const MAX_USER_AGENT: usize = 256;

/// A JSON request body.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

/// Whether the request says its body is JSON (`application/json` or `+json`).
pub fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// Why a request body could not be read; each face renders it in its own shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Over the configured body limit.
    TooLarge,
    /// The connection failed while reading.
    Unreadable,
}

impl From<BodyError> for Problem {
    fn from(error: BodyError) -> Self {
        match error {
            BodyError::TooLarge => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is too large",
            ),
            BodyError::Unreadable => Problem::new(
                StatusCode::BAD_REQUEST,
                "unreadable_body",
                "the request body could not be read",
            ),
        }
    }
}

/// Reads a body within the configured size limit.
pub async fn read_body(request: Request, state: &AppState) -> Result<Bytes, BodyError> {
    Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                BodyError::TooLarge
            } else {
                BodyError::Unreadable
            }
        })
}

/// Parses a JSON body, checking its content type. Error details name the
/// field and the expected type but never repeat the value sent, which may be
/// a password.
pub fn parse_json<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, Problem> {
    if !is_json(headers) {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        ));
    }
    // Parse to a value first: a syntax error is a 400, and only an object is
    // accepted (serde would otherwise take `["login", "password"]` for a struct).
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!(
                "the body is not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })?;
    if !value.is_object() {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "the body must be a JSON object",
        ));
    }
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let message = inner.to_string();
        let reason = if let Some(field) = message.strip_prefix("missing field ") {
            let field = field.split(" at line").next().unwrap_or(field);
            format!("missing field {field}")
        } else if let Some(rest) = message.strip_prefix("unknown field ") {
            let field = rest.split(',').next().unwrap_or("");
            format!("unknown field {field}")
        } else if let Some((_, expected)) = message.split_once(", expected ") {
            let expected = expected.split(" at line").next().unwrap_or(expected);
            format!("{path}: wrong type or value, expected {expected}")
        } else {
            format!("{path}: invalid value")
        };
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", reason)
    })
}

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Problem> {
        let headers = request.headers().clone();
        if !is_json(&headers) {
            return parse_json(&headers, b"").map(ApiJson);
        }
        let body = read_body(request, state).await.map_err(Problem::from)?;
        parse_json(&headers, &body).map(ApiJson)
    }
}

/// The caller of an endpoint that needs a bearer token.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Principal);

/// The token of an `Authorization: Bearer` header, if well formed.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' '))
        .then_some(token)
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let token = bearer_token(&parts.headers).ok_or(crate::core::Error::Unauthenticated)?;
        Ok(Authenticated(state.core.authenticate(token).await?))
    }
}

/// The client's address and user agent.
#[derive(Debug, Clone)]
pub struct Client(pub ClientInfo);

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_canonical());
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| {
                ua.chars()
                    .filter(|c| !c.is_control())
                    .take(MAX_USER_AGENT)
                    .collect()
            });
        Ok(Client(ClientInfo { ip, user_agent }))
    }
}
