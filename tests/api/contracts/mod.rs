//! The five login contracts, tested from their documents.

mod ai_gateway;
mod careyshop;
mod fungame;
mod manager;
mod shared;
mod users_actions;

use reqwest::Response;
use serde_json::Value;

/// Status and JSON body of a response.
pub async fn status_json(response: Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.expect("json body"))
}

/// Whether a string is RFC 3339 in UTC with `Z`.
pub fn is_rfc3339_utc(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| s.len() == 20 && s.ends_with('Z') && s.as_bytes()[10] == b'T')
}

/// Whether a string is `YYYY-MM-DD HH:MM:SS`.
pub fn is_contract_datetime(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| s.len() == 19 && s.as_bytes()[10] == b' ' && s.as_bytes()[4] == b'-')
}

/// Whether a string looks like a compact JWS.
pub fn is_jwt(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| s.split('.').count() == 3 && s.starts_with("eyJ"))
}
