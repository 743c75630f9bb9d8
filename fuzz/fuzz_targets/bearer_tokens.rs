//! Any bearer token on the routes that read one: as given, and built as a
//! JWT from three fuzzed parts (header, claims, signature), so that the
//! header and claims parsers see arbitrary JSON.
#![no_main]

use axum::body::Body;
use axum::http::Request;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use sesame_fuzz::harness;

const ROUTES: [(&str, &str); 4] = [
    ("GET", "/v1/me"),
    ("GET", "/v1/authz"),
    ("GET", "/oauth2/userinfo"),
    ("GET", "/v1/admin/users"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let token = if pick & 1 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        let mut parts = rest.splitn(3, |b| *b == 0xFF);
        let mut segment = || URL_SAFE_NO_PAD.encode(parts.next().unwrap_or_default());
        format!("{}.{}.{}", segment(), segment(), segment())
    };
    let (method, path) = ROUTES[usize::from(pick >> 1) % ROUTES.len()];
    let harness = harness();
    for authorization in [format!("Bearer {token}"), token.clone()] {
        if let Ok(request) = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", authorization)
            .body(Body::empty())
        {
            harness.send(request);
        }
    }
    // The forward-auth cookie carries a token too.
    if let Ok(request) = Request::builder()
        .uri("/v1/authz")
        .header("cookie", format!("sesame_token={token}"))
        .body(Body::empty())
    {
        harness.send(request);
    }
});
