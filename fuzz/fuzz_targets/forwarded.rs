//! The client address behind trusted proxies: any `Forwarded` and
//! `X-Forwarded-For` values, from a trusted peer and from an untrusted one.
#![no_main]

use std::net::IpAddr;

use axum::http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use sesame::http::extract::{ForwardedHeader, client_address};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |b| *b == 0xFF);
    let mut headers = HeaderMap::new();
    for name in ["forwarded", "x-forwarded-for"] {
        if let Ok(value) = HeaderValue::from_bytes(parts.next().unwrap_or_default()) {
            headers.append(name, value);
        }
    }
    if let Some(more) = parts.next()
        && let Ok(value) = HeaderValue::from_bytes(more)
    {
        headers.append("forwarded", value);
    }
    let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
    for peer in ["10.1.2.3", "::1", "192.0.2.1"] {
        let peer: IpAddr = peer.parse().unwrap();
        for which in [ForwardedHeader::XForwardedFor, ForwardedHeader::Forwarded] {
            let address = client_address(peer, &headers, &trusted, which);
            if !trusted.iter().any(|net| net.contains(&peer)) {
                assert_eq!(address, peer, "an untrusted peer's headers are never read");
            }
        }
    }
});
