//! Sesame: a self-hosted login and token service.
//!
//! The crate is layered so that each way in shares one set of rules:
//! `http` (the faces) calls `core` (accounts, passwords, sessions, tokens),
//! which talks to storage only through the `store` traits. `app` wires a
//! concrete store into the core and binds the HTTP server; `cli` is the
//! operator's command line. See `docs/ARCHITECTURE.md` for the map.

#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod connection;
pub mod core;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod notices;
pub mod redact;
pub mod store;
#[cfg(test)]
mod testing;
pub mod tls;
