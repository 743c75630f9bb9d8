//! The end-to-end suite of `main.rs`, on PostgreSQL with Redis (failure budgets and notices through Redis).
//! The backend is chosen by this binary's name (`helpers::backend`).

include!("main.rs");

mod cluster;
mod outage;
mod with_redis;
