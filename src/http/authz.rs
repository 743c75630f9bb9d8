//! Forward auth for reverse proxies: nginx `auth_request`, Traefik
//! `forwardAuth`, Caddy `forward_auth`. The proxy asks `/v1/authz` (any
//! method; any path below it, so that it may pass the original one) before
//! each request to a protected service; 200 lets the request through with
//! `X-Sesame-*` headers describing the caller, 401 and 403 refuse it.
//!
//! Only headers of our own making carry `X-Sesame-*` names: a client's are
//! never read (a required permission comes from the proxy's configuration,
//! which overrides whatever the client sent under that name).

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;

use super::AppState;
use super::error::Problem;
use super::extract::{bearer_token, cookie_value};
use crate::core::Error;
use crate::core::domain::Name;
use crate::store::Account;

/// The username of the caller.
pub const USER: HeaderName = HeaderName::from_static("x-sesame-user");
/// The account id of the caller.
pub const USER_ID: HeaderName = HeaderName::from_static("x-sesame-user-id");
/// The caller's roles, comma-separated.
pub const ROLES: HeaderName = HeaderName::from_static("x-sesame-roles");
/// The caller's permissions, comma-separated.
pub const PERMISSIONS: HeaderName = HeaderName::from_static("x-sesame-permissions");
/// Why an authenticated caller was refused: `permission`, `quota` or
/// `client` (a token of an OAuth client not in `forward_auth.clients`).
pub const REASON: HeaderName = HeaderName::from_static("x-sesame-reason");
/// Permissions the proxy requires for this request, comma-separated.
pub const REQUIRE: HeaderName = HeaderName::from_static("x-sesame-require-permission");

/// `[forward_auth]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardAuthSettings {
    /// A cookie holding the access token, read when there is no
    /// `Authorization` header; `None`: only the header is read.
    pub cookie: Option<String>,
    /// The OAuth clients whose tokens are taken (no other client's).
    pub clients: Vec<String>,
}

/// The forward-auth routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/authz", any(authz))
        .route("/v1/authz/", any(authz))
        .route("/v1/authz/{*path}", any(authz))
}

#[utoipa::path(
    method(get, post, put, patch, delete, head, options), path = "/v1/authz", tag = "forward-auth",
    params(("X-Sesame-Require-Permission" = Option<String>, Header, description = "Permissions the proxy requires, comma-separated")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Allowed: `X-Sesame-User`, `-User-Id`, `-Roles`, `-Permissions` describe the caller"),
        (status = 401, description = "No live session (`WWW-Authenticate`)", body = super::error::ProblemBody<'static>, content_type = "application/problem+json"),
        (status = 403, description = "Refused: `X-Sesame-Reason` is `permission`, `quota` or `client` (a token of an OAuth client not in `forward_auth.clients`)", body = super::error::ProblemBody<'static>, content_type = "application/problem+json"),
        super::error::Problems,
    )
)]
pub(super) async fn authz(State(state): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    let required = match required_permissions(&uri, &headers) {
        Ok(required) => required,
        // A query that names no possible permission may come from the
        // client (a proxy passing the original URI on): no one holds it,
        // and a 403 is an answer every proxy passes on (nginx turns a 400
        // from its auth request into a 500).
        Err(Refusal::Unholdable) => {
            return refused(
                "permission",
                "the request requires a permission that cannot exist",
            );
        }
        Err(Refusal::Invalid(error)) => return Problem::from(error).into_response(),
    };
    let cookie = state.http.forward_auth.cookie.as_deref();
    let Some(token) =
        bearer_token(&headers).or_else(|| cookie.and_then(|c| cookie_value(&headers, c)))
    else {
        return Problem::from(Error::Unauthenticated).into_response();
    };
    let clients = &state.http.forward_auth.clients;
    match state.core.authorize(token, &required, clients).await {
        Ok(account) => allowed(&account),
        Err(Error::Forbidden) => {
            refused("permission", "a permission this request needs is missing")
        }
        Err(Error::ClientNotAccepted) => refused(
            "client",
            "tokens issued to this OAuth client are not taken here (forward_auth.clients)",
        ),
        Err(Error::QuotaExceeded) => refused("quota", "the account has used its API-call quota"),
        Err(error) => Problem::from(error).into_response(),
    }
}

/// Why the required permissions could not be read.
#[derive(Debug)]
enum Refusal {
    /// The query names something no permission can be (or does not decode).
    Unholdable,
    /// The proxy's header is malformed: its configuration is wrong.
    Invalid(Error),
}

/// Every permission named by the `permission` query parameters and the
/// `X-Sesame-Require-Permission` headers (each may list several, comma-separated).
fn required_permissions(uri: &Uri, headers: &HeaderMap) -> Result<Vec<Name>, Refusal> {
    fn add(names: &mut Vec<Name>, list: &str) -> Result<(), Error> {
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            names.push(Name::parse(name, "permission")?);
        }
        Ok(())
    }
    let mut names = Vec::new();
    if let Some(query) = uri.query() {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(query).map_err(|_| Refusal::Unholdable)?;
        for (_, value) in pairs.iter().filter(|(key, _)| key == "permission") {
            add(&mut names, value).map_err(|_| Refusal::Unholdable)?;
        }
    }
    for value in headers.get_all(&REQUIRE) {
        let value = value.to_str().map_err(|_| {
            Refusal::Invalid(Error::invalid("permission", "the header is not ASCII"))
        })?;
        add(&mut names, value).map_err(Refusal::Invalid)?;
    }
    Ok(names)
}

fn allowed(account: &Account) -> Response {
    let mut response = StatusCode::OK.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // A username is any Unicode without controls: sent as its UTF-8 bytes.
    if let Ok(user) = HeaderValue::from_bytes(account.username.as_bytes()) {
        headers.insert(USER, user);
    }
    headers.insert(USER_ID, HeaderValue::from(account.id));
    // Role and permission names are narrow ASCII (core::domain::Name).
    for (name, list) in [(ROLES, &account.roles), (PERMISSIONS, &account.permissions)] {
        if let Ok(value) = HeaderValue::from_str(&list.join(",")) {
            headers.insert(name, value);
        }
    }
    response
}

fn refused(reason: &'static str, detail: &str) -> Response {
    let mut response = Problem::new(StatusCode::FORBIDDEN, "forbidden", detail).into_response();
    response
        .headers_mut()
        .insert(REASON, HeaderValue::from_static(reason));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn the_named_cookie_is_found_among_others() {
        let map = headers(&[("cookie", "a=1; sesame=tok.en; b=2"), ("cookie", "c=3")]);
        assert_eq!(cookie_value(&map, "sesame"), Some("tok.en"));
        assert_eq!(cookie_value(&map, "c"), Some("3"));
        assert_eq!(cookie_value(&map, "sesam"), None);
        assert_eq!(
            cookie_value(&headers(&[("cookie", "sesame=")]), "sesame"),
            None
        );
    }

    #[test]
    fn permissions_come_from_the_query_and_the_header() {
        let uri: Uri = "/v1/authz/app?permission=read,write&x=1&permission=billing%3Aview"
            .parse()
            .unwrap();
        let map = headers(&[("x-sesame-require-permission", "admin, audit")]);
        let names: Vec<String> = required_permissions(&uri, &map)
            .unwrap()
            .iter()
            .map(|n| n.as_str().to_owned())
            .collect();
        assert_eq!(names, ["read", "write", "billing:view", "admin", "audit"]);
        let bad: Uri = "/v1/authz?permission=Read".parse().unwrap();
        assert!(matches!(
            required_permissions(&bad, &HeaderMap::new()),
            Err(Refusal::Unholdable)
        ));
        let bad = headers(&[("x-sesame-require-permission", "Read")]);
        assert!(matches!(
            required_permissions(&uri, &bad),
            Err(Refusal::Invalid(Error::InvalidInput {
                field: "permission",
                ..
            }))
        ));
    }
}
