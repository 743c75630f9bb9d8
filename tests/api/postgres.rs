//! The end-to-end suite of `main.rs`, on PostgreSQL (notices through LISTEN/NOTIFY, failure budgets per node).
//! The backend is chosen by this binary's name (`helpers::backend`).

include!("main.rs");

mod cluster;
mod outage;
