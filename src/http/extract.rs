//! Request extractors shared by the faces: a JSON body whose errors are
//! problems (and never echo a value back), the bearer-authenticated caller,
//! and the client's address and user agent.

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, StatusCode, Uri, header};
use ipnet::IpNet;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::Problem;
use crate::core::login::Principal;
use crate::core::{ClientInfo, Error};

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
        let path = plain_name(&path);
        let inner = error.into_inner();
        let message = inner.to_string();
        let reason = if let Some(field) = message.strip_prefix("missing field ") {
            let field = field.split(" at line").next().unwrap_or(field);
            format!("missing field {field}")
        } else if let Some(rest) = message.strip_prefix("unknown field ") {
            let field = rest.split(',').next().unwrap_or("");
            format!("unknown field {}", plain_name(field))
        } else if let Some((_, expected)) = message.split_once(", expected ") {
            let expected = expected.split(" at line").next().unwrap_or(expected);
            format!("{path}: wrong type or value, expected {expected}")
        } else {
            format!("{path}: invalid value")
        };
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", reason)
    })
}

/// A field name or path the client sent, repeated in an error only when
/// it is short plain ASCII (letters, digits, `_`, `-`, `.`, `[`, `]`, and
/// the backquotes serde puts around a name), as a name would be; else a
/// stand-in. Map keys (profile attributes) and unknown fields are the
/// client's text: a name helps the developer who mistyped it, a long or
/// odd one is more likely something that was never meant as a name.
fn plain_name(name: &str) -> &str {
    let plain = name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.[]`".contains(&b));
    if plain { name } else { "(a field)" }
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

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim().trim_matches('"'))
        .filter(|value| !value.is_empty())
}

/// The caller of an endpoint of the account API: a bearer token of
/// Sesame's own login (not one issued to an OAuth client, see
/// [`crate::core::Core::authenticate_account`]).
#[derive(Debug, Clone)]
pub struct Authenticated(pub Principal);

/// [`Authenticated`] for the calls by which an owner takes an account back
/// (signing out, listing and ending sessions, changing the password):
/// neither counted against the API-call quota nor refused by it (see
/// [`crate::core::Core::identify_account`]).
#[derive(Debug, Clone)]
pub struct Uncounted(pub Principal);

impl FromRequestParts<AppState> for Uncounted {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let token = bearer_token(&parts.headers).ok_or(crate::core::Error::Unauthenticated)?;
        Ok(Uncounted(state.core.identify_account(token).await?))
    }
}

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
        Ok(Authenticated(state.core.authenticate_account(token).await?))
    }
}

/// The header a client presents its device token in (issued at login).
pub const DEVICE_HEADER: &str = "sesame-device";

/// The client's address, user agent and device token.
///
/// The address is the TCP peer's, unless the peer is a configured trusted
/// proxy: then it is the nearest address in `Forwarded` (or
/// `X-Forwarded-For`) that is not itself a trusted proxy. From anyone else
/// those headers are ignored, so forging them evades nothing.
#[derive(Debug, Clone)]
pub struct Client(pub ClientInfo);

impl FromRequestParts<AppState> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_canonical());
        let ip = peer.map(|peer| {
            client_address(
                peer,
                &parts.headers,
                &state.http.trusted_proxies,
                state.http.forwarded_header,
            )
        });
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
        let device_token = parts
            .headers
            .get(DEVICE_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|t| !t.is_empty() && t.len() <= 128)
            .map(str::to_owned);
        Ok(Client(ClientInfo {
            forwarded: ip.is_some() && ip != peer,
            ip,
            user_agent,
            device_token,
        }))
    }
}

/// Hands a newly issued device token to the client in the `Sesame-Device`
/// header (every face; the native API also puts it in the body).
pub fn with_device_token(
    mut response: axum::response::Response,
    grant: &crate::core::login::Grant,
) -> axum::response::Response {
    if let Some(token) = &grant.device_token
        && let Ok(value) = axum::http::HeaderValue::from_str(token)
    {
        response.headers_mut().insert(DEVICE_HEADER, value);
    }
    response
}

/// The header trusted proxies name the client in (`http.forwarded_header`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For` (nginx, Caddy, Traefik, HAProxy by default).
    XForwardedFor,
    /// `Forwarded` (RFC 7239).
    Forwarded,
}

impl ForwardedHeader {
    /// From its configured name.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw.to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Some(Self::XForwardedFor),
            "forwarded" => Some(Self::Forwarded),
            _ => None,
        }
    }

    /// Its name, as configured.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::XForwardedFor => "x-forwarded-for",
            Self::Forwarded => "forwarded",
        }
    }
}

/// Resolves the client address behind trusted proxies, from the one header
/// they set: a proxy passes on the other unchanged, so a client could
/// write any address there.
pub fn client_address(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &[IpNet],
    which: ForwardedHeader,
) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let chain = forwarded_chain(headers, which);
    if chain.is_empty() {
        warn_if_the_other_header_came(headers, which);
    }
    for hop in chain.iter().rev() {
        match hop {
            Some(ip) if is_trusted(ip) => continue,
            Some(ip) => return *ip,
            None => break,
        }
    }
    peer
}

/// A trusted proxy that sends the other header but not the configured one
/// is most likely set up for the other (after an upgrade, say): every
/// client then looks like the proxy, and shares its failure budgets.
/// Said at most once an hour, process-wide.
fn warn_if_the_other_header_came(headers: &HeaderMap, which: ForwardedHeader) {
    static LAST_WARNING: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let other = match which {
        ForwardedHeader::XForwardedFor => ForwardedHeader::Forwarded,
        ForwardedHeader::Forwarded => ForwardedHeader::XForwardedFor,
    };
    if !headers.contains_key(other.as_str()) {
        return;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let last = LAST_WARNING.load(std::sync::atomic::Ordering::Relaxed);
    if (last == 0 || now.saturating_sub(last) >= 3600)
        && LAST_WARNING
            .compare_exchange(
                last,
                now.max(1),
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
            )
            .is_ok()
    {
        tracing::warn!(
            configured = which.as_str(),
            sent = other.as_str(),
            "a trusted proxy sent no {} header but a {} one: its clients all count as the \
             proxy's address; if the proxy sets {}, set http.forwarded_header = \"{}\"",
            which.as_str(),
            other.as_str(),
            other.as_str(),
            other.as_str(),
        );
    }
}

/// The `for` addresses of `Forwarded` (RFC 7239) or of `X-Forwarded-For`,
/// client first; `None` for an entry that is not an address.
fn forwarded_chain(headers: &HeaderMap, which: ForwardedHeader) -> Vec<Option<IpAddr>> {
    // Read lossily: a byte that is not visible ASCII spoils only its own
    // entry. (Skipping the whole value would skip the address the proxy
    // appended after a client's junk, and take the proxy for the client.)
    let values = |name| {
        headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()))
            .collect::<Vec<_>>()
    };
    if which == ForwardedHeader::Forwarded {
        return values(header::FORWARDED)
            .iter()
            .flat_map(|v| v.split(','))
            .map(|element| {
                element.split(';').find_map(|pair| {
                    let (key, value) = pair.trim().split_once('=')?;
                    key.eq_ignore_ascii_case("for").then(|| parse_node(value))?
                })
            })
            .collect();
    }
    values(HeaderName::from_static("x-forwarded-for"))
        .iter()
        .flat_map(|v| v.split(','))
        .map(parse_node)
        .collect()
}

/// An address from `192.0.2.1`, `"[2001:db8::1]:4711"` or `192.0.2.1:80`.
fn parse_node(raw: &str) -> Option<IpAddr> {
    let node = raw.trim().trim_matches('"');
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = node.strip_prefix('[') {
        return rest
            .split(']')
            .next()?
            .parse::<IpAddr>()
            .ok()
            .map(|ip| ip.to_canonical());
    }
    node.rsplit_once(':')?
        .0
        .parse::<std::net::Ipv4Addr>()
        .ok()
        .map(IpAddr::V4)
}

/// The one path parameter of a route, as text; one that does not decode,
/// or holds a control character (no name or id does; PostgreSQL would
/// refuse a NUL with an error), names nothing that exists (404, as a
/// problem).
pub struct Param(pub String);

impl FromRequestParts<AppState> for Param {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .ok()
            .filter(|Path(value)| !value.chars().any(char::is_control))
            .map(|Path(value)| Param(value))
            .ok_or_else(|| Problem::from(crate::core::Error::NotFound("resource")))
    }
}

/// The query string as `T`; a malformed one is a 400 naming it.
pub fn query<T: DeserializeOwned + Default>(uri: &Uri) -> Result<T, Error> {
    match uri.query() {
        None | Some("") => Ok(T::default()),
        Some(query) => serde_urlencoded::from_str(query).map_err(|e| {
            Error::invalid(
                "query",
                format!("not a valid query string for this route: {e}"),
            )
        }),
    }
}

/// `cursor` and `limit` of a paged list. Other parameters are ignored, as
/// they were before these lists had pages (a cache-buster, say).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// A previous page's `next_cursor`; none for the first page.
    pub cursor: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    limit: Option<String>,
}

impl PageQuery {
    /// The page size asked for, if any; anything but a whole number is a
    /// 400 naming `limit` (its range is the core's to check).
    pub fn limit(&self) -> Result<Option<u32>, Error> {
        self.limit
            .as_deref()
            .map(|raw| {
                raw.parse::<u32>()
                    .map_err(|_| Error::invalid("limit", "must be a whole number from 1 to 200"))
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        use ForwardedHeader::{Forwarded, XForwardedFor};
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: IpAddr = "10.1.2.3".parse().unwrap();
        let outsider: IpAddr = "203.0.113.9".parse().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let h = headers(&[("x-forwarded-for", "198.51.100.7, 10.9.9.9")]);
        assert_eq!(
            client_address(peer, &h, &trusted, XForwardedFor),
            ip("198.51.100.7")
        );
        assert_eq!(
            client_address(outsider, &h, &trusted, XForwardedFor),
            outsider,
            "forged by a non-proxy"
        );
        let spoofed = headers(&[("x-forwarded-for", "1.1.1.1, 198.51.100.7")]);
        assert_eq!(
            client_address(peer, &spoofed, &trusted, XForwardedFor),
            ip("198.51.100.7")
        );
        let rfc = headers(&[(
            "forwarded",
            "for=192.0.2.60;proto=http, for=\"[2001:db8::1]:4711\"",
        )]);
        assert_eq!(
            client_address(peer, &rfc, &trusted, Forwarded),
            ip("2001:db8::1")
        );
        let mapped = headers(&[("forwarded", "for=\"[::ffff:198.51.100.7]:4711\"")]);
        assert_eq!(
            client_address(peer, &mapped, &trusted, Forwarded),
            ip("198.51.100.7"),
            "an IPv4 client written as IPv6 is the IPv4 client"
        );
        // A proxy that sets X-Forwarded-For passes on a Forwarded the client
        // wrote: it is never read then (and the other way round).
        let both = headers(&[
            ("forwarded", "for=192.0.2.1"),
            ("x-forwarded-for", "198.51.100.7"),
        ]);
        assert_eq!(
            client_address(peer, &both, &trusted, XForwardedFor),
            ip("198.51.100.7")
        );
        assert_eq!(
            client_address(peer, &both, &trusted, Forwarded),
            ip("192.0.2.1")
        );
        assert_eq!(client_address(peer, &rfc, &trusted, XForwardedFor), peer);
        let garbage = headers(&[("x-forwarded-for", "not-an-ip")]);
        assert_eq!(
            client_address(peer, &garbage, &trusted, XForwardedFor),
            peer
        );
        assert_eq!(
            client_address(peer, &HeaderMap::new(), &trusted, Forwarded),
            peer
        );
        // A client's byte that is not ASCII, with the proxy's address after
        // it: that address, not the proxy's.
        for which in [XForwardedFor, Forwarded] {
            let (written, appended) = match which {
                XForwardedFor => (&b"\xff"[..], "198.51.100.7"),
                Forwarded => (&b"for=\"\xff\""[..], "for=198.51.100.7"),
            };
            let mut value = written.to_vec();
            value.extend_from_slice(format!(", {appended}").as_bytes());
            let mut junk = HeaderMap::new();
            junk.insert(
                which.as_str(),
                axum::http::HeaderValue::from_bytes(&value).unwrap(),
            );
            assert_eq!(
                client_address(peer, &junk, &trusted, which),
                ip("198.51.100.7"),
                "{}",
                which.as_str()
            );
        }
    }
}
