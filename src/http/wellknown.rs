//! Standard endpoints that do not belong to a face: JWKS and health.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::AppState;

/// The routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route("/healthz", get(healthz))
}

async fn jwks(State(state): State<AppState>) -> Response {
    let mut response = Json(&*state.core.jwks()).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

/// Liveness: the process answers. Readiness (the database) is `/readyz`'s job.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}
