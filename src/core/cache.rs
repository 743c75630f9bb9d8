//! A short-lived in-memory cache of accounts, so that authenticated reads
//! (`GET /v1/me`, a refresh's answer) do not query the database each time.
//!
//! Every account write made through this process forgets the entry at once;
//! writes made by another process (the CLI) show within the TTL, the same
//! `sessions.cache_ttl` that bounds the live-session cache.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::clock::UnixTime;
use crate::store::{Account, AccountId};

/// Past this many entries, expired ones are swept on insert.
const SWEEP_THRESHOLD: usize = 100_000;

/// Cached accounts with their expiry.
#[derive(Debug)]
pub struct AccountCache {
    entries: RwLock<HashMap<AccountId, (Arc<Account>, UnixTime)>>,
    ttl: i64,
}

impl AccountCache {
    /// An empty cache keeping entries `ttl` seconds (0: no caching).
    pub fn new(ttl: i64) -> Self {
        Self {
            entries: RwLock::new(HashMap::new()),
            ttl,
        }
    }

    /// The cached account, if fresh.
    pub fn get(&self, id: AccountId, now: UnixTime) -> Option<Arc<Account>> {
        let entries = self.entries.read().ok()?;
        let (account, until) = entries.get(&id)?;
        (now < *until).then(|| Arc::clone(account))
    }

    /// Caches an account read from the store.
    pub fn put(&self, account: Arc<Account>, now: UnixTime) {
        if self.ttl <= 0 {
            return;
        }
        if let Ok(mut entries) = self.entries.write() {
            if entries.len() >= SWEEP_THRESHOLD {
                entries.retain(|_, (_, until)| now < *until);
            }
            entries.insert(account.id, (account, now + self.ttl));
        }
    }

    /// Drops an account that was just changed.
    pub fn forget(&self, id: AccountId) {
        if let Ok(mut entries) = self.entries.write() {
            entries.remove(&id);
        }
    }
}
