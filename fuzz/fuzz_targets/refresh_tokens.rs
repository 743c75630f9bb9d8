//! Any refresh token, opaque or JWT-shaped, on every route that takes one:
//! the native refresh, careyshop's refresh and the OAuth token endpoint.
#![no_main]

use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;
use sesame_fuzz::harness;

fuzz_target!(|data: &[u8]| {
    let token = String::from_utf8_lossy(data).into_owned();
    let harness = harness();
    let json = format!(
        r#"{{"refresh_token": {}}}"#,
        serde_json_string(&token)
    );
    harness.send_json("POST", "/v1/refresh", None, json.as_bytes());
    let form = format!("refresh={}", urlencode(&token));
    if let Ok(request) = Request::builder()
        .method("POST")
        .uri("/api/v1/user/method/refresh.token.user/")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(form))
    {
        harness.send(request);
    }
    let form = format!(
        "grant_type=refresh_token&client_id=nobody&refresh_token={}",
        urlencode(&token)
    );
    if let Ok(request) = Request::builder()
        .method("POST")
        .uri("/oauth2/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(form))
    {
        harness.send(request);
    }
    // A real token's neighbours: the fuzzed bytes appended to it.
    let near = format!("{}{token}", harness.refresh);
    let json = format!(r#"{{"refresh_token": {}}}"#, serde_json_string(&near));
    harness.send_json("POST", "/v1/refresh", None, json.as_bytes());
});

fn serde_json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}
