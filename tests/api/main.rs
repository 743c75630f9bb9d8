// End-to-end tests: each starts the real application on a free port with a
// fresh database and talks HTTP to it (or runs the real binary).

mod abuse;
mod admin;
mod authz;
mod bad_input;
mod cli;
mod contracts;
mod cors;
mod helpers;
mod housekeeping;
mod https;
mod login;
mod me;
mod metrics;
mod migration;
mod oidc;
mod openapi;
mod refresh;
mod schemathesis;
mod security_headers;
mod sessions;
mod third_party;
mod transfer;
