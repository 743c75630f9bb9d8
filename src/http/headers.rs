//! Headers every answer carries, whichever face gives it: `nosniff`, no
//! referrer, nothing cached unless the handler said it may be (the JWKS,
//! discovery, this API's description), `Pragma: no-cache` beside `no-store`
//! for HTTP/1.0 caches (RFC 6749 §5.1), and JSON labelled UTF-8. One pass
//! over the response head, by [`super::observe`].

use axum::http::{HeaderMap, HeaderValue, header};

const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

/// The headers of the module's description, on one response.
pub fn harden(headers: &mut HeaderMap) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    let cache_control = headers.entry(header::CACHE_CONTROL).or_insert(NO_STORE);
    if cache_control.as_bytes().starts_with(b"no-store") {
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    }
    let labelled = match headers.get(header::CONTENT_TYPE).map(HeaderValue::as_bytes) {
        Some(b"application/json") => Some("application/json; charset=utf-8"),
        Some(b"application/problem+json") => Some("application/problem+json; charset=utf-8"),
        _ => None,
    };
    if let Some(labelled) = labelled {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(labelled));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_json_answer_is_hardened() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        harden(&mut headers);
        assert_eq!(headers["content-type"], "application/json; charset=utf-8");
        assert_eq!(headers["cache-control"], "no-store");
        assert_eq!(headers["pragma"], "no-cache");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["referrer-policy"], "no-referrer");
    }

    #[test]
    fn a_cacheable_document_keeps_its_caching_and_other_types_are_left_alone() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        );
        harden(&mut headers);
        assert_eq!(headers["content-type"], "text/html; charset=utf-8");
        assert_eq!(headers["cache-control"], "public, max-age=300");
        assert!(headers.get("pragma").is_none());
        assert_eq!(headers["x-content-type-options"], "nosniff");
    }
}
