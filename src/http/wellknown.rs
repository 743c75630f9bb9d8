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
        .route("/readyz", get(readyz))
}

#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "operations",
    responses((status = 200, description = "The public signing keys", body = super::openapi::schemas::Jwks)))]
pub(super) async fn jwks(State(state): State<AppState>) -> Response {
    let mut response = Json(&*state.core.jwks()).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

// A rotated key is published for longer than this answer is kept.
const _: () = assert!(crate::core::keys::JWKS_MAX_AGE == 300);

/// Readiness: the database answers within a second, and the server is not
/// stopping. 503 names what fails. Redis (when configured) is checked too,
/// but a node without it still serves (per-node budgets, no cached checks):
/// it is reported `degraded` with a 200, so that an outage of Redis does not
/// take every node out of its load balancer at once.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready, or `degraded` (Redis does not answer; `degraded` names it)", body = super::openapi::schemas::Readiness),
        (status = 503, description = "Not ready: `failing` names the database or `shutdown`", body = super::openapi::schemas::Readiness),
    ))]
pub(super) async fn readyz(State(state): State<AppState>) -> Response {
    let checks = state
        .core
        .readiness(std::time::Duration::from_secs(1))
        .await;
    let (degraded, failing): (Vec<&str>, Vec<&str>) = checks
        .iter()
        .filter(|(_, result)| result.is_err())
        .map(|(name, _)| *name)
        .partition(|name| *name == "redis");
    let detail: serde_json::Map<String, serde_json::Value> = checks
        .iter()
        .map(|(name, result)| {
            (
                (*name).to_owned(),
                match result {
                    Ok(()) => json!("ok"),
                    Err(why) => json!(why),
                },
            )
        })
        .collect();
    let status = if failing.is_empty() {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    let mut response = (
        status,
        Json(json!({
            "status": match (failing.is_empty(), degraded.is_empty()) {
                (false, _) => "unready",
                (true, false) => "degraded",
                (true, true) => "ready",
            },
            "failing": failing,
            "degraded": degraded,
            "checks": detail,
        })),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Liveness: the process answers. Readiness (the database) is `/readyz`'s job.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process answers", body = super::openapi::schemas::Health)))]
pub(super) async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}
