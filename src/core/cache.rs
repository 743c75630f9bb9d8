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
//!
//! A read from the store may race with a notice: read live, the session is
//! revoked on another node, the notice forgets it here (nothing to forget
//! yet), and only then is the stale read cached, to be trusted for a whole
//! `cache_ttl`. So each cache counts its forgets ([`Generation`]) and keeps
//! what the latest ones were about: a caller notes the count before
//! reading the store, and its answer is cached only if nothing it is about
//! was forgotten meanwhile. (Any forget at all would do, but then every
//! opaque-token refresh or profile edit anywhere in the cluster, each a
//! notice, would keep every node's reads of everyone else out of its
//! caches.)

/// What a forget was about; an answer about none of these is cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forgot {
    /// A session, by a digest of its id (a collision only leaves an answer
    /// uncached).
    Session(u64),
    /// An account.
    Account(AccountId),
    /// Everything.
    All,
}

impl Forgot {
    /// The forget of session `id`.
    pub(crate) fn session(id: &str) -> Self {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        Self::Session(BuildHasherDefault::<DefaultHasher>::default().hash_one(id))
    }
}

/// Forgets remembered with what they were about; older ones count as
/// forgets of everything.
const RECENT_FORGETS: usize = 4096;
/// More sessions than this forgotten at once are remembered as everything.
const MOST_KEYS_A_FORGET: usize = 64;

/// How many times a cache has forgotten something, and what the latest
/// forgets were about; see the module's text.
#[derive(Debug, Default)]
pub struct Generation {
    count: AtomicU64,
    recent: std::sync::Mutex<Recent>,
}

#[derive(Debug, Default)]
struct Recent {
    /// (the count the forget made, what it was about), oldest first.
    forgets: std::collections::VecDeque<(u64, Forgot)>,
    /// The newest count some of whose keys are no longer in `forgets`.
    dropped_through: u64,
}

impl Generation {
    /// The count now, to pass back to the cache's `put` after a store read.
    pub fn now(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    /// Counts a forget of `about` (called under the cache's write lock).
    pub(crate) fn bump(&self, about: &[Forgot]) {
        let mut recent = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = self.count.fetch_add(1, Ordering::AcqRel) + 1;
        let about = if about.len() > MOST_KEYS_A_FORGET {
            &[Forgot::All][..]
        } else {
            about
        };
        for what in about {
            if recent.forgets.len() == RECENT_FORGETS
                && let Some((dropped, _)) = recent.forgets.pop_front()
            {
                recent.dropped_through = dropped;
            }
            recent.forgets.push_back((count, *what));
        }
    }

    /// Whether nothing `about` was forgotten since `seen` (checked under the
    /// cache's write lock, so no forget slips in between the check and the
    /// insert).
    pub(crate) fn unchanged_for(&self, seen: u64, about: &[Forgot]) -> bool {
        if self.now() == seen {
            return true;
        }
        let recent = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Forgets since `seen` no longer all remembered: assume the worst.
        if recent.dropped_through > seen {
            return false;
        }
        !recent
            .forgets
            .iter()
            .rev()
            .take_while(|(count, _)| *count > seen)
            .any(|(_, what)| *what == Forgot::All || about.contains(what))
    }
}

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::clock::UnixTime;
use super::quota::ApiCalls;
use super::sessions::LiveSessions;
use crate::limits::FailureLimiter;
use crate::notices::{Notice, NoticeEvent, NoticeSink};
use crate::store::{Account, AccountId, OpaqueAccessToken, SessionId, TokenHash};

/// Every cache of the node, and whether it may be trusted.
pub struct Caches {
    /// Sessions known to be live.
    pub live: LiveSessions,
    /// Recently read accounts.
    pub accounts: AccountCache,
    /// Recently found opaque access tokens.
    pub opaque: OpaqueTokens,
    /// API-call counters (their quotas are reloaded on an account notice).
    api_calls: Arc<ApiCalls>,
    /// The failure budgets, whose per-node counts an unlock elsewhere ends.
    limiter: Arc<dyn FailureLimiter>,
    /// False while notices may be missed: the caches are then bypassed.
    trusted: AtomicBool,
    /// Woken when the signing keys changed (or notices may have been
    /// missed): the key reloader reads them again.
    pub keys_changed: tokio::sync::Notify,
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caches")
            .field("live", &self.live)
            .field("accounts", &self.accounts)
            .field("opaque", &self.opaque)
            .field("trusted", &self.trusted)
            .finish_non_exhaustive()
    }
}

impl Caches {
    /// Empty caches keeping entries `ttl` seconds, untrusted until subscribed.
    pub fn new(ttl: i64, api_calls: Arc<ApiCalls>, limiter: Arc<dyn FailureLimiter>) -> Self {
        Self {
            live: LiveSessions::new(ttl),
            accounts: AccountCache::new(ttl),
            opaque: OpaqueTokens::new(ttl),
            api_calls,
            limiter,
            trusted: AtomicBool::new(false),
            keys_changed: tokio::sync::Notify::new(),
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

    /// The cached opaque token with this hash, if fresh, unexpired and trusted.
    pub fn opaque_token(&self, hash: &TokenHash, now: UnixTime) -> Option<OpaqueAccessToken> {
        if !self.trusted() {
            return None;
        }
        self.opaque.get(hash, now)
    }

    /// Forgets whatever is cached about these sessions: they ended, or their
    /// opaque access token was replaced.
    pub fn forget_sessions(&self, ids: &[SessionId]) {
        self.live.forget(ids);
        self.opaque.forget_sessions(ids);
    }
}

impl NoticeSink for Caches {
    fn deliver(&self, event: NoticeEvent) {
        match event {
            NoticeEvent::Notice(Notice::SessionsEnded(ids)) => self.forget_sessions(&ids),
            NoticeEvent::Notice(Notice::AccountChanged(id)) => {
                self.accounts.forget(id);
                self.live.forget_account(id);
                self.api_calls.expire(id);
            }
            NoticeEvent::Notice(Notice::RolesChanged) => self.accounts.clear(),
            NoticeEvent::Notice(Notice::KeysChanged) => self.keys_changed.notify_one(),
            NoticeEvent::Notice(Notice::AccountUnlocked(id)) => {
                for key in super::accounts::unlocked_budgets(id) {
                    self.limiter.forget_here(&key);
                }
            }
            NoticeEvent::Lost => {
                if self.trusted.swap(false, Ordering::AcqRel) {
                    tracing::warn!("notices from other nodes may be missed: caches bypassed");
                }
            }
            NoticeEvent::Resumed => {
                self.live.clear();
                self.accounts.clear();
                self.opaque.clear();
                self.api_calls.expire_all();
                self.keys_changed.notify_one();
                if !self.trusted.swap(true, Ordering::AcqRel) {
                    tracing::info!("listening for notices from other nodes: caches in use");
                }
            }
        }
    }
}

/// Past this many entries, expired ones are swept on insert.
const SWEEP_THRESHOLD: usize = 100_000;

/// When a cache last swept out its expired entries. A cache past
/// [`SWEEP_THRESHOLD`] sweeps at most once a second: full of entries still
/// fresh, it would otherwise scan all of them, under its write lock, at
/// every insert. Entries live at most `sessions.cache_ttl`, so memory stays
/// bounded by the insert rate times that.
#[derive(Debug, Default)]
pub(crate) struct Sweeps(AtomicI64);

impl Sweeps {
    /// Whether a cache of `len` entries should sweep at `now` (and, if so,
    /// that it does now).
    pub(crate) fn due(&self, len: usize, now: UnixTime) -> bool {
        len >= SWEEP_THRESHOLD && self.0.swap(now, Ordering::AcqRel) < now
    }
}

/// Cached accounts with their expiry.
#[derive(Debug)]
pub struct AccountCache {
    entries: RwLock<HashMap<AccountId, (Arc<Account>, UnixTime)>>,
    ttl: i64,
    sweeps: Sweeps,
    /// Forgets so far.
    pub generation: Generation,
}

impl AccountCache {
    /// An empty cache keeping entries `ttl` seconds (0: no caching).
    pub fn new(ttl: i64) -> Self {
        Self {
            entries: RwLock::new(HashMap::new()),
            ttl,
            sweeps: Sweeps::default(),
            generation: Generation::default(),
        }
    }

    /// The cached account, if fresh.
    pub fn get(&self, id: AccountId, now: UnixTime) -> Option<Arc<Account>> {
        let entries = self.entries.read().ok()?;
        let (account, until) = entries.get(&id)?;
        (now < *until).then(|| Arc::clone(account))
    }

    /// Caches an account read from the store, unless something was
    /// forgotten since `seen` ([`Generation::now`] before the read).
    pub fn put(&self, account: Arc<Account>, now: UnixTime, seen: u64) {
        if self.ttl <= 0 {
            return;
        }
        if let Ok(mut entries) = self.entries.write() {
            if !self
                .generation
                .unchanged_for(seen, &[Forgot::Account(account.id)])
            {
                return;
            }
            if self.sweeps.due(entries.len(), now) {
                entries.retain(|_, (_, until)| now < *until);
            }
            entries.insert(account.id, (account, now + self.ttl));
        }
    }

    /// Drops an account that was just changed.
    pub fn forget(&self, id: AccountId) {
        if let Ok(mut entries) = self.entries.write() {
            entries.remove(&id);
            self.generation.bump(&[Forgot::Account(id)]);
        }
    }

    /// Drops everything.
    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.write() {
            entries.clear();
            self.generation.bump(&[Forgot::All]);
        }
    }
}

/// Opaque access tokens found in the store, by hash, with the time each
/// entry is kept until; indexed by session too (a session has one opaque
/// token at a time), so that a notice forgets a session's token at once.
#[derive(Debug)]
pub struct OpaqueTokens {
    entries: RwLock<OpaqueEntries>,
    ttl: i64,
    sweeps: Sweeps,
    /// Forgets so far.
    pub generation: Generation,
}

#[derive(Debug, Default)]
struct OpaqueEntries {
    by_hash: HashMap<TokenHash, (OpaqueAccessToken, UnixTime)>,
    by_session: HashMap<SessionId, TokenHash>,
}

impl OpaqueTokens {
    /// An empty cache keeping entries `ttl` seconds (0: no caching).
    pub fn new(ttl: i64) -> Self {
        Self {
            entries: RwLock::new(OpaqueEntries::default()),
            ttl,
            sweeps: Sweeps::default(),
            generation: Generation::default(),
        }
    }

    /// The token, if cached, fresh and not expired.
    pub fn get(&self, hash: &TokenHash, now: UnixTime) -> Option<OpaqueAccessToken> {
        let entries = self.entries.read().ok()?;
        let (token, until) = entries.by_hash.get(hash)?;
        (now < *until && now < token.expires_at).then(|| token.clone())
    }

    /// Caches a token read from the store (replacing its session's previous
    /// one), unless something was forgotten since `seen`.
    pub fn put(&self, hash: TokenHash, token: OpaqueAccessToken, now: UnixTime, seen: u64) {
        if self.ttl <= 0 {
            return;
        }
        if let Ok(mut entries) = self.entries.write() {
            if !self
                .generation
                .unchanged_for(seen, &[Forgot::session(&token.session_id)])
            {
                return;
            }
            if self.sweeps.due(entries.by_hash.len(), now) {
                entries.by_hash.retain(|_, (_, until)| now < *until);
                let OpaqueEntries {
                    by_hash,
                    by_session,
                } = &mut *entries;
                by_session.retain(|_, hash| by_hash.contains_key(hash));
            }
            if let Some(previous) = entries.by_session.insert(token.session_id.clone(), hash) {
                entries.by_hash.remove(&previous);
            }
            entries.by_hash.insert(hash, (token, now + self.ttl));
        }
    }

    /// Forgets the tokens of these sessions.
    pub fn forget_sessions(&self, ids: &[SessionId]) {
        if let Ok(mut entries) = self.entries.write() {
            for id in ids {
                if let Some(hash) = entries.by_session.remove(id) {
                    entries.by_hash.remove(&hash);
                }
            }
            let about: Vec<Forgot> = ids.iter().map(|id| Forgot::session(id)).collect();
            self.generation.bump(&about);
        }
    }

    /// Drops everything.
    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.write() {
            entries.by_hash.clear();
            entries.by_session.clear();
            self.generation.bump(&[Forgot::All]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(session: &str, expires_at: UnixTime) -> OpaqueAccessToken {
        OpaqueAccessToken {
            session_id: session.into(),
            account_id: 7,
            expires_at,
        }
    }

    #[test]
    fn a_full_cache_sweeps_at_most_once_a_second() {
        let sweeps = Sweeps::default();
        assert!(!sweeps.due(SWEEP_THRESHOLD - 1, 100), "not full");
        assert!(sweeps.due(SWEEP_THRESHOLD, 100));
        assert!(
            !sweeps.due(SWEEP_THRESHOLD + 5, 100),
            "again within the second"
        );
        assert!(sweeps.due(SWEEP_THRESHOLD, 101));

        // A cache full of fresh entries keeps them, and still sweeps out
        // the expired ones once a second.
        let cache = OpaqueTokens::new(10);
        let hash = |n: usize| {
            let mut hash = [0_u8; 32];
            hash[..8].copy_from_slice(&n.to_le_bytes());
            hash
        };
        for n in 0..SWEEP_THRESHOLD {
            cache.put(
                hash(n),
                token(&n.to_string(), 1_000),
                100,
                cache.generation.now(),
            );
        }
        cache.put(
            hash(usize::MAX),
            token("a", 1_000),
            105,
            cache.generation.now(),
        );
        assert!(cache.get(&hash(0), 105).is_some(), "fresh entries stay");
        cache.put(
            hash(usize::MAX - 1),
            token("b", 1_000),
            111,
            cache.generation.now(),
        );
        assert!(cache.get(&hash(0), 111).is_none());
        let entries = cache.entries.read().unwrap();
        assert_eq!((entries.by_hash.len(), entries.by_session.len()), (2, 2));
    }

    #[test]
    fn an_opaque_token_is_kept_until_its_entry_or_itself_expires() {
        let cache = OpaqueTokens::new(60);
        cache.put([1; 32], token("s", 1_000), 100, cache.generation.now());
        assert_eq!(cache.get(&[1; 32], 159), Some(token("s", 1_000)));
        assert_eq!(cache.get(&[1; 32], 160), None, "entry past the ttl");
        cache.put([2; 32], token("t", 130), 100, cache.generation.now());
        assert_eq!(cache.get(&[2; 32], 129).map(|t| t.expires_at), Some(130));
        assert_eq!(cache.get(&[2; 32], 130), None, "token expired");
    }

    #[test]
    fn a_session_has_one_cached_token_and_a_notice_forgets_it() {
        let cache = OpaqueTokens::new(60);
        cache.put([1; 32], token("s", 1_000), 100, cache.generation.now());
        cache.put([2; 32], token("s", 1_000), 100, cache.generation.now());
        assert_eq!(
            cache.get(&[1; 32], 101),
            None,
            "replaced by the session's new token"
        );
        assert!(cache.get(&[2; 32], 101).is_some());
        cache.put([3; 32], token("u", 1_000), 100, cache.generation.now());
        cache.forget_sessions(&["s".to_owned()]);
        assert_eq!(cache.get(&[2; 32], 101), None);
        assert!(cache.get(&[3; 32], 101).is_some(), "other sessions stay");
    }

    /// A store read that a notice overtook is not cached: the notice's
    /// forget came before the answer it should have removed.
    #[test]
    fn a_read_overtaken_by_a_notice_is_not_cached() {
        let opaque = OpaqueTokens::new(60);
        let seen = opaque.generation.now();
        opaque.forget_sessions(&["s".to_owned()]);
        opaque.put([1; 32], token("s", 1_000), 100, seen);
        assert_eq!(opaque.get(&[1; 32], 101), None);
        opaque.put([1; 32], token("s", 1_000), 100, opaque.generation.now());
        assert!(opaque.get(&[1; 32], 101).is_some(), "a read after it is");

        // A forget of what the read is about counts, a clear too; a
        // forget of something else does not.
        let accounts = AccountCache::new(60);
        let about_7 = [Forgot::Account(7)];
        let seen = accounts.generation.now();
        accounts.forget(8);
        assert!(accounts.generation.unchanged_for(seen, &about_7));
        accounts.forget(7);
        assert!(!accounts.generation.unchanged_for(seen, &about_7));
        let seen = accounts.generation.now();
        accounts.clear();
        assert!(!accounts.generation.unchanged_for(seen, &about_7));
        let seen_after = accounts.generation.now();
        assert!(accounts.generation.unchanged_for(seen_after, &about_7));

        // Another session's token replaced (an opaque refresh elsewhere):
        // this one's read is still cached.
        let seen = opaque.generation.now();
        opaque.forget_sessions(&["other".to_owned()]);
        opaque.put([2; 32], token("t", 1_000), 100, seen);
        assert!(opaque.get(&[2; 32], 101).is_some());
    }

    /// Past the forgets it remembers, a read is about everything: once
    /// they overflow, a read that began before is not cached.
    #[test]
    fn forgets_too_many_to_remember_count_as_everything() {
        let accounts = AccountCache::new(60);
        let seen = accounts.generation.now();
        accounts.forget(1);
        for id in 0..RECENT_FORGETS as i64 {
            accounts.forget(1000 + id);
        }
        assert!(
            !accounts
                .generation
                .unchanged_for(seen, &[Forgot::Account(7)])
        );
        let seen = accounts.generation.now();
        accounts.forget(8);
        assert!(
            accounts
                .generation
                .unchanged_for(seen, &[Forgot::Account(7)])
        );
        // Many sessions at once count as everything.
        let many: Vec<SessionId> = (0..=MOST_KEYS_A_FORGET).map(|i| i.to_string()).collect();
        let opaque = OpaqueTokens::new(60);
        let seen = opaque.generation.now();
        opaque.forget_sessions(&many);
        assert!(
            !opaque
                .generation
                .unchanged_for(seen, &[Forgot::session("unrelated")])
        );
    }
}
