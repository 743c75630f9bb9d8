//! careyshop's parameter reader (query string, form or JSON body, merged
//! as PHP does), directly and through its login route.
#![no_main]

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, Request, header};
use libfuzzer_sys::fuzz_target;
use sesame::http::contracts::merged_params;
use sesame_fuzz::harness;

const TYPES: [&str; 4] = [
    "application/x-www-form-urlencoded",
    "application/json",
    "text/plain",
    "multipart/form-data; boundary=x",
];

fuzz_target!(|data: &[u8]| {
    // query 0xFF content-type-index body
    let mut parts = data.splitn(2, |b| *b == 0xFF);
    let query = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let rest = parts.next().unwrap_or_default();
    let (content_type, body) = match rest.split_first() {
        Some((pick, body)) => (TYPES[usize::from(*pick) % TYPES.len()], body),
        None => (TYPES[0], rest),
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let body = Bytes::copy_from_slice(body);
    for method in [Method::GET, Method::POST] {
        let _ = merged_params(&method, Some(&query), &headers, &body);
    }
    // Through the route: only a query that makes a valid URI.
    let uri = format!("/api/v1/user/method/login.user.user/?{query}");
    if let Ok(request) = Request::builder()
        .method(Method::POST)
        .uri(&uri)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
    {
        harness().send(request);
    }
});
