//! CORS: which web pages may call a face of Sesame from a browser.
//!
//! Each face (native, admin, OAuth, contracts) allows the origins configured
//! for it, through one tower-http CORS layer that tells the faces apart by
//! path; without configuration there is no layer and answers carry no CORS
//! header at all. Around the layer, the answer to a request from an origin
//! that is not allowed (or from no browser at all) loses every
//! `Access-Control-*` header the layer added, so such a page learns
//! nothing, not even which methods exist.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::AppState;

/// The request headers a page may send besides the safelisted ones.
const ALLOWED_HEADERS: [HeaderName; 4] = [
    header::AUTHORIZATION,
    header::CONTENT_TYPE,
    HeaderName::from_static("sesame-device"),
    HeaderName::from_static("x-request-id"),
];

/// The answer headers a page may read besides the safelisted ones.
const EXPOSED_HEADERS: [HeaderName; 4] = [
    header::RETRY_AFTER,
    header::WWW_AUTHENTICATE,
    HeaderName::from_static("sesame-device"),
    HeaderName::from_static("x-request-id"),
];

/// Which origins a face allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// Any page (`*`); never with credentials.
    Any,
    /// These, each serialized as browsers send `Origin`.
    List(Vec<String>),
}

/// CORS per face: `None` where no page may call that face.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsSettings {
    /// `/v1/…` (and `/openapi.json`, `/healthz`, `/readyz`).
    pub native: Option<AllowedOrigins>,
    /// `/v1/admin/…`.
    pub admin: Option<AllowedOrigins>,
    /// `/oauth2/…`, `/.well-known/…`.
    pub oauth: Option<AllowedOrigins>,
    /// The five contracts' routes (every other path).
    pub contracts: Option<AllowedOrigins>,
    /// `Access-Control-Allow-Credentials: true` to allowed origins.
    pub credentials: bool,
    /// How long a browser may keep a preflight answer.
    pub max_age: Duration,
}

impl Default for CorsSettings {
    fn default() -> Self {
        Self {
            native: None,
            admin: None,
            oauth: None,
            contracts: None,
            credentials: false,
            max_age: Duration::from_secs(600),
        }
    }
}

impl CorsSettings {
    /// Whether some face allows some origin.
    pub fn is_on(&self) -> bool {
        self.native.is_some()
            || self.admin.is_some()
            || self.oauth.is_some()
            || self.contracts.is_some()
    }

    /// The origins allowed to call `path`'s face.
    fn face(&self, path: &str) -> Option<&AllowedOrigins> {
        if path == "/metrics" {
            None
        } else if path == "/v1/admin" || path.starts_with("/v1/admin/") {
            self.admin.as_ref()
        } else if path.starts_with("/v1/")
            || matches!(path, "/v1" | "/openapi.json" | "/healthz" | "/readyz")
        {
            self.native.as_ref()
        } else if path.starts_with("/oauth2/") || path.starts_with("/.well-known/") {
            self.oauth.as_ref()
        } else {
            self.contracts.as_ref()
        }
    }

    /// Whether a page of `origin` may call `path`.
    fn allows(&self, path: &str, origin: &HeaderValue) -> bool {
        match self.face(path) {
            None => false,
            Some(AllowedOrigins::Any) => true,
            Some(AllowedOrigins::List(list)) => list.iter().any(|allowed| allowed == origin),
        }
    }

    /// Wraps the whole router (after its fallbacks are set, so that a
    /// preflight is answered before method routing would refuse OPTIONS).
    pub fn apply(self, router: Router<AppState>) -> Router<AppState> {
        let rules = Arc::new(self);
        let predicate = {
            let rules = Arc::clone(&rules);
            move |origin: &HeaderValue, parts: &axum::http::request::Parts| {
                rules.allows(parts.uri.path(), origin)
            }
        };
        let layer = CorsLayer::new()
            .allow_origin(AllowOrigin::predicate(predicate))
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers(ALLOWED_HEADERS)
            .expose_headers(EXPOSED_HEADERS)
            .allow_credentials(rules.credentials)
            .max_age(rules.max_age);
        router
            .layer(layer)
            .layer(axum::middleware::from_fn_with_state(
                rules,
                only_for_allowed_origins,
            ))
    }
}

/// Removes the CORS headers from the answer to a request whose `Origin` is
/// absent or not allowed for its face (tower-http adds some regardless).
async fn only_for_allowed_origins(
    State(rules): State<Arc<CorsSettings>>,
    request: Request,
    next: Next,
) -> Response {
    let allowed = request
        .headers()
        .get(header::ORIGIN)
        .is_some_and(|origin| rules.allows(request.uri().path(), origin));
    let mut response = next.run(request).await;
    if !allowed {
        let cors: Vec<HeaderName> = response
            .headers()
            .keys()
            .filter(|name| name.as_str().starts_with("access-control-"))
            .cloned()
            .collect();
        for name in cors {
            response.headers_mut().remove(name);
        }
    }
    response
}
