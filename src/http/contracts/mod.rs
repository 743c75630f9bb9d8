//! The five existing login contracts, one thin face each (see
//! `../shared/docs/CONTRACTS.md`). A face reads its own request format, calls
//! the core's `login` or `refresh` with options taken from configuration,
//! and renders the result or the core's error in its own shape. Each can be
//! switched off; a switched-off route is a 404.

pub mod ai_gateway;
pub mod careyshop;
pub mod fungame;
pub mod manager;
pub mod users_actions;

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, header};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::macros::format_description;

use super::AppState;
use super::deadline::{Deadline, Overrun};
use super::extract::is_json;
use crate::core::ClientInfo;
use crate::core::clock::UnixTime;
use crate::core::domain::{LoginId, Md5Hex, Password};
use crate::core::login::{Credential, Grant, LoginAttempt, LoginOptions};
use crate::core::sessions::PlatformPolicy;
use crate::store::Account;

/// Which contracts are served, and the configuration they pass to the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractSettings {
    /// `POST /api/v1/login`.
    pub ai_gateway: bool,
    /// `POST /manager/login`.
    pub manager: bool,
    /// `POST /api/v1/users/actions/login`.
    pub users_actions: bool,
    /// `/api/v1/user/method/login.user.user/` and `refresh.token.user/`.
    pub careyshop: bool,
    /// `POST /user/login`.
    pub fungame: bool,
    /// The permission an account needs to sign in through the manager face.
    pub manager_permission: String,
    /// The session policy for careyshop logins (the contract: one per platform).
    pub careyshop_platform_policy: PlatformPolicy,
}

impl Default for ContractSettings {
    fn default() -> Self {
        Self {
            ai_gateway: true,
            manager: true,
            users_actions: true,
            careyshop: true,
            fungame: true,
            manager_permission: "admin".into(),
            careyshop_platform_policy: PlatformPolicy::Single,
        }
    }
}

/// The routes of the enabled contracts, each answering a request that runs
/// out of `timeout` in its own shape.
pub fn router(settings: &ContractSettings, timeout: Duration) -> Router<AppState> {
    let mut router = Router::new();
    if settings.ai_gateway {
        router = router.merge(
            ai_gateway::router()
                .layer(Deadline::new(timeout, |(), o| ai_gateway::render(o.into()))),
        );
    }
    if settings.manager {
        router = router.merge(
            manager::router().layer(Deadline::new(timeout, |(), o| manager::render(o.into()))),
        );
    }
    if settings.users_actions {
        router = router.merge(
            users_actions::router().layer(Deadline::new(timeout, |(), o| {
                users_actions::render(o.into())
            })),
        );
    }
    if settings.careyshop {
        router = router.merge(
            careyshop::router().layer(Deadline::new(timeout, |(), o| careyshop::render(o.into()))),
        );
    }
    if settings.fungame {
        router = router.merge(
            fungame::router().layer(Deadline::new(timeout, |(), o| fungame::render(o.into()))),
        );
    }
    router
}

/// Why a face could not read the fields it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldsError {
    /// Over the body limit.
    TooLarge,
    /// Not JSON, not an object, or not readable.
    Malformed,
    /// A field is missing or empty.
    Missing(&'static str),
    /// A field has the wrong JSON type.
    WrongType(&'static str),
    /// The body did not all arrive within `http.request_timeout`.
    TimedOut,
}

impl From<super::extract::BodyError> for FieldsError {
    fn from(error: super::extract::BodyError) -> Self {
        match error {
            super::extract::BodyError::TooLarge => FieldsError::TooLarge,
            super::extract::BodyError::Unreadable => FieldsError::Malformed,
        }
    }
}

/// Anything a contract face can fail with: its own parsing, or the core.
#[derive(Debug)]
pub enum Failure {
    /// The request could not be read into the face's fields.
    Fields(FieldsError),
    /// The core refused or failed.
    Core(crate::core::Error),
}

impl From<FieldsError> for Failure {
    fn from(error: FieldsError) -> Self {
        Failure::Fields(error)
    }
}

impl From<crate::core::Error> for Failure {
    fn from(error: crate::core::Error) -> Self {
        if error.is_internal() {
            tracing::error!(%error, "internal error");
        }
        Failure::Core(error)
    }
}

/// A request out of time: the client's slowness is a field error of the
/// face, Sesame's a busy core.
impl From<Overrun> for Failure {
    fn from(overrun: Overrun) -> Self {
        match overrun {
            Overrun::Body => Failure::Fields(FieldsError::TimedOut),
            Overrun::Answer => Failure::Core(Overrun::busy()),
        }
    }
}

impl From<super::extract::BodyError> for Failure {
    fn from(error: super::extract::BodyError) -> Self {
        Failure::Fields(error.into())
    }
}

/// Adds `Retry-After` when the core asked the client to wait.
pub fn with_retry_after(
    mut response: axum::response::Response,
    error: &crate::core::Error,
) -> axum::response::Response {
    if let crate::core::Error::Throttled { retry_after_secs }
    | crate::core::Error::Busy { retry_after_secs } = error
    {
        response.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(*retry_after_secs),
        );
    }
    response
}

/// How a JSON contract names its fields and what it asks of the core.
pub struct JsonLogin {
    /// The face's name, for the audit log.
    pub face: &'static str,
    /// The field holding the username, email or mobile.
    pub login_field: &'static str,
    /// The field holding the password (or its MD5).
    pub password_field: &'static str,
    /// Whether the password field carries the MD5 hex of the password.
    pub md5: bool,
    /// Options taken from configuration.
    pub options: LoginOptions,
}

/// Reads a JSON login request in a contract's field names and runs the
/// core login; the face renders the grant or the failure.
pub async fn json_login(
    state: &AppState,
    client: ClientInfo,
    request: axum::extract::Request,
    shape: JsonLogin,
) -> Result<Grant, Failure> {
    let headers = request.headers().clone();
    let body = super::extract::read_body(request, state).await?;
    let fields = json_object(&headers, &body)?;
    let login = LoginId::parse(string_field(&fields, shape.login_field)?)?;
    let secret = string_field(&fields, shape.password_field)?;
    let credential = if shape.md5 {
        Credential::Md5Hex(Md5Hex::parse(secret)?)
    } else {
        Credential::Password(Password::presented(secret)?)
    };
    let attempt = LoginAttempt {
        login,
        credential,
        platform: None,
        client,
        options: shape.options,
        face: shape.face,
    };
    Ok(state.core.login(attempt).await?)
}

/// A JSON object body.
pub fn json_object(headers: &HeaderMap, body: &[u8]) -> Result<Map<String, Value>, FieldsError> {
    if !is_json(headers) {
        return Err(FieldsError::Malformed);
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(FieldsError::Malformed),
    }
}

/// A required, non-empty string field of a JSON object.
pub fn string_field<'a>(
    map: &'a Map<String, Value>,
    name: &'static str,
) -> Result<&'a str, FieldsError> {
    match map.get(name) {
        None | Some(Value::Null) => Err(FieldsError::Missing(name)),
        Some(Value::String(s)) if s.is_empty() => Err(FieldsError::Missing(name)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(FieldsError::WrongType(name)),
    }
}

/// Parameters from the query string, a form body or a JSON body, as PHP
/// frameworks merge them: body values win over query values; JSON numbers
/// and booleans are taken as their text.
pub async fn merged_params(
    method: &Method,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<HashMap<String, String>, FieldsError> {
    let mut params: HashMap<String, String> = match query {
        Some(query) => serde_urlencoded::from_str(query).map_err(|_| FieldsError::Malformed)?,
        None => HashMap::new(),
    };
    if method == Method::GET || body.is_empty() {
        return Ok(params);
    }
    if is_json(headers) {
        for (key, value) in json_object(headers, body)? {
            let text = match value {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => continue,
            };
            params.insert(key, text);
        }
    } else if let Some(boundary) = multipart_boundary(headers) {
        params.extend(multipart_fields(boundary, body.clone()).await?);
    } else {
        let form: Vec<(String, String)> =
            serde_urlencoded::from_bytes(body).map_err(|_| FieldsError::Malformed)?;
        params.extend(form);
    }
    Ok(params)
}

/// The boundary of a `multipart/form-data` body (what a browser's
/// `FormData` sends), if it is one.
fn multipart_boundary(headers: &HeaderMap) -> Option<String> {
    let content_type = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    content_type
        .trim_start()
        .get(..19)
        .is_some_and(|kind| kind.eq_ignore_ascii_case("multipart/form-data"))
        .then(|| multer::parse_boundary(content_type).ok())
        .flatten()
}

/// The text fields of a `multipart/form-data` body, files left out. The
/// body is whole and already bounded by `http.body_limit`.
async fn multipart_fields(
    boundary: String,
    body: Bytes,
) -> Result<Vec<(String, String)>, FieldsError> {
    let chunks = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(body)]);
    let mut multipart = multer::Multipart::new(chunks, boundary);
    let mut fields = Vec::new();
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|_| FieldsError::Malformed)?
    {
        let Some(name) = field.name().map(str::to_owned) else {
            continue;
        };
        if field.file_name().is_some() {
            continue;
        }
        let text = field.text().await.map_err(|_| FieldsError::Malformed)?;
        fields.push((name, text));
    }
    Ok(fields)
}

/// `YYYY-MM-DD HH:MM:SS` in UTC, as the contracts' PHP and .NET systems show
/// times; an empty string for no time.
pub fn datetime(t: Option<UnixTime>) -> String {
    let format = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    t.and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

/// A profile attribute, or `""` when absent.
pub fn attribute<'a>(account: &'a Account, name: &str) -> &'a str {
    account.profile.get(name).map_or("", String::as_str)
}

/// A numeric profile attribute, or 0 when absent or not a number.
pub fn int_attribute(account: &Account, name: &str) -> i64 {
    account
        .profile
        .get(name)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The one role name a contract shows: `administrator` if held, else the first.
pub fn primary_role(account: &Account) -> &str {
    if account
        .roles
        .iter()
        .any(|r| r == crate::core::accounts::ADMIN_ROLE)
    {
        return crate::core::accounts::ADMIN_ROLE;
    }
    account
        .roles
        .first()
        .map_or(crate::core::accounts::DEFAULT_ROLE, String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_have_the_contract_shape() {
        assert_eq!(datetime(Some(1_529_251_323)), "2018-06-17 16:02:03");
        assert_eq!(datetime(None), "");
    }

    #[tokio::test]
    async fn params_merge_query_form_json_and_multipart() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-type",
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        let body = Bytes::from_static(b"username=dnyz529&password=111111");
        let params = merged_params(
            &Method::POST,
            Some("platform=iOS&username=q"),
            &headers,
            &body,
        )
        .await
        .unwrap();
        assert_eq!(params["username"], "dnyz529");
        assert_eq!(params["platform"], "iOS");
        headers.insert("content-type", "application/json".parse().unwrap());
        let body = Bytes::from_static(br#"{"username":"dnyz529","password":111111}"#);
        let params = merged_params(&Method::POST, None, &headers, &body)
            .await
            .unwrap();
        assert_eq!(params["password"], "111111");

        headers.insert(
            "content-type",
            "multipart/form-data; boundary=----x7".parse().unwrap(),
        );
        let body = Bytes::from_static(
            b"------x7\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\ndnyz529\r\n\
              ------x7\r\nContent-Disposition: form-data; name=\"avatar\"; filename=\"a.png\"\r\n\
              Content-Type: image/png\r\n\r\n\x89PNG\r\n\
              ------x7\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\n\xe5\xaf\x86 1\r\n\
              ------x7--\r\n",
        );
        let params = merged_params(&Method::POST, Some("platform=iOS"), &headers, &body)
            .await
            .unwrap();
        assert_eq!(params["username"], "dnyz529");
        assert_eq!(params["password"], "密 1");
        assert_eq!(params["platform"], "iOS");
        assert!(!params.contains_key("avatar"), "files are no fields");
        let truncated = Bytes::from_static(b"------x7\r\nContent-Disposition: form-data; name=");
        assert!(matches!(
            merged_params(&Method::POST, None, &headers, &truncated).await,
            Err(FieldsError::Malformed)
        ));
    }
}
