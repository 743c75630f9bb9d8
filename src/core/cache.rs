//! The node's caches: accounts and live sessions, trusted only while this
//! node hears every other node's notices.
//!
//! A short-lived in-memory cache of accounts, so that authenticated reads
//! (`GET /v1/me`, a refresh's answer) do not query the database each time,
//! and the live-session cache (`sessions.rs`). Every write made through this
//! process forgets the entry at once; other nodes (and the CLI) publish a
//! notice that makes every node forget it within milliseconds. Where no
//! notice arrives (a process on SQLite, a lost subscription), entries still
//! expire after `sessions.cache_ttl`; and while a subscription is lost the
//! caches are not consulted at all.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use super::clock::UnixTime;
use super::quota::ApiCalls;
use super::sessions::LiveSessions;
use crate::notices::{Notice, NoticeEvent, NoticeSink};
use crate::store::{Account, AccountId};

/// Every cache of the node, and whether it may be trusted.
#[derive(Debug)]
pub struct Caches {
    /// Sessions known to be live.
    pub live: LiveSessions,
    /// Recently read accounts.
    pub accounts: AccountCache,
    /// API-call counters (their quotas are reloaded on an account notice).
    api_calls: Arc<ApiCalls>,
    /// False while notices may be missed: the caches are then bypassed.
    trusted: AtomicBool,
}

impl Caches {
    /// Empty caches keeping entries `ttl` seconds, untrusted until subscribed.
    pub fn new(ttl: i64, api_calls: Arc<ApiCalls>) -> Self {
        Self {
            live: LiveSessions::new(ttl),
            accounts: AccountCache::new(ttl),
            api_calls,
            trusted: AtomicBool::new(false),
        }
    }

    /// Whether cached answers may be used now.
    pub fn trusted(&self) -> bool {
        self.trusted.load(Ordering::Acquire)
    }

    /// Whether session `id` of `account_id` is known to be live.
    pub fn session_is_live(&self, id: &str, account_id: AccountId, now: UnixTime) -> bool {
        self.trusted() && self.live.lookup(id, account_id, now)
    }

    /// The cached account, if fresh and trusted.
    pub fn account(&self, id: AccountId, now: UnixTime) -> Option<Arc<Account>> {
        if !self.trusted() {
            return None;
        }
        self.accounts.get(id, now)
    }
}

impl NoticeSink for Caches {
    fn deliver(&self, event: NoticeEvent) {
        match event {
            NoticeEvent::Notice(Notice::SessionsEnded(ids)) => self.live.forget(&ids),
            NoticeEvent::Notice(Notice::AccountChanged(id)) => {
                self.accounts.forget(id);
                self.live.forget_account(id);
                self.api_calls.expire(id);
            }
            NoticeEvent::Lost => {
                if self.trusted.swap(false, Ordering::AcqRel) {
                    tracing::warn!("notices from other nodes may be missed: caches bypassed");
                }
            }
            NoticeEvent::Resumed => {
                self.live.clear();
                self.accounts.clear();
                self.api_calls.expire_all();
                if !self.trusted.swap(true, Ordering::AcqRel) {
                    tracing::info!("listening for notices from other nodes: caches in use");
                }
            }
        }
    }
}

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

    /// Drops everything.
    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.write() {
            entries.clear();
        }
    }
}
