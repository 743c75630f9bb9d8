//! Session policy and the live-session check.
//!
//! Every authenticated request must know its session is still live (not
//! logged out, revoked or replaced). Asking the database each time would put
//! a read on every call, so positive answers are cached in memory for a short
//! time and dropped at once when this process ends a session. Changes made by
//! another process (the CLI) reach a running server within `cache_ttl`.

use std::collections::HashMap;
use std::sync::RwLock;

use super::admin::{Page, page_limit};
use super::audit::{self, AuditEventExt};
use super::cache::Forgot;
use super::clock::UnixTime;
use super::domain::Platform;
use super::error::{Error, Result};
use super::{ClientInfo, Core, login::Principal};
use crate::notices::{self, Notice};
use crate::store::{AccountId, Session, SessionCursor, SessionId};

/// Whether an account may hold several sessions on one platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlatformPolicy {
    /// Any number of sessions (the default).
    Multiple,
    /// A new login ends the previous session on the same platform.
    Single,
}

/// Session settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSettings {
    /// Platform of a login that names none.
    pub default_platform: Platform,
    /// Per-platform policies; platforms not listed use `default_policy`.
    pub policies: HashMap<String, PlatformPolicy>,
    /// Policy for unlisted platforms.
    pub default_policy: PlatformPolicy,
    /// How long a positive live-session check is trusted, seconds (0: always ask the store).
    pub cache_ttl: i64,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            default_platform: Platform::web(),
            policies: HashMap::new(),
            default_policy: PlatformPolicy::Multiple,
            cache_ttl: 2,
        }
    }
}

impl SessionSettings {
    /// The policy for a platform.
    pub fn policy(&self, platform: &Platform) -> PlatformPolicy {
        self.policies
            .get(platform.as_str())
            .copied()
            .unwrap_or(self.default_policy)
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    account_id: i64,
    trusted_until: UnixTime,
}

/// The cached sessions, and which are each account's (an account's notice
/// forgets its sessions without a scan of every session).
#[derive(Debug, Default)]
struct Entries {
    by_id: HashMap<SessionId, Entry>,
    by_account: HashMap<i64, Vec<SessionId>>,
}

impl Entries {
    fn get(&self, id: &str) -> Option<&Entry> {
        self.by_id.get(id)
    }

    fn len(&self) -> usize {
        self.by_id.len()
    }

    fn insert(&mut self, id: SessionId, entry: Entry) {
        let account_id = entry.account_id;
        if let Some(previous) = self.by_id.insert(id.clone(), entry) {
            if previous.account_id == account_id {
                return;
            }
            self.unlink(previous.account_id, &id);
        }
        self.by_account.entry(account_id).or_default().push(id);
    }

    fn remove(&mut self, id: &str) {
        if let Some(entry) = self.by_id.remove(id) {
            self.unlink(entry.account_id, id);
        }
    }

    fn unlink(&mut self, account_id: i64, id: &str) {
        if let Some(ids) = self.by_account.get_mut(&account_id) {
            ids.retain(|other| other != id);
            if ids.is_empty() {
                self.by_account.remove(&account_id);
            }
        }
    }

    fn remove_account(&mut self, account_id: i64) {
        for id in self.by_account.remove(&account_id).unwrap_or_default() {
            self.by_id.remove(&id);
        }
    }

    fn retain_trusted(&mut self, now: UnixTime) {
        self.by_id.retain(|_, e| now < e.trusted_until);
        let by_id = &self.by_id;
        self.by_account.retain(|_, ids| {
            ids.retain(|id| by_id.contains_key(id));
            !ids.is_empty()
        });
    }

    fn clear(&mut self) {
        self.by_id.clear();
        self.by_account.clear();
    }
}

/// The in-memory cache of sessions known to be live.
#[derive(Debug)]
pub struct LiveSessions {
    entries: RwLock<Entries>,
    ttl: i64,
    sweeps: super::cache::Sweeps,
    /// Forgets so far (see `core::cache`).
    pub generation: super::cache::Generation,
}

impl LiveSessions {
    /// An empty cache trusting answers for `ttl` seconds.
    pub fn new(ttl: i64) -> Self {
        Self {
            entries: RwLock::new(Entries::default()),
            ttl,
            sweeps: super::cache::Sweeps::default(),
            generation: super::cache::Generation::default(),
        }
    }

    pub(crate) fn lookup(&self, id: &str, account_id: i64, now: UnixTime) -> bool {
        let Ok(entries) = self.entries.read() else {
            return false;
        };
        entries
            .get(id)
            .is_some_and(|e| e.account_id == account_id && now < e.trusted_until)
    }

    /// Trusts a session read live from the store, unless something was
    /// forgotten since `seen`.
    fn remember(&self, session: &Session, now: UnixTime, seen: u64) {
        if self.ttl <= 0 {
            return;
        }
        let Ok(mut entries) = self.entries.write() else {
            return;
        };
        let about = [
            Forgot::session(&session.id),
            Forgot::Account(session.account_id),
        ];
        if !self.generation.unchanged_for(seen, &about) {
            return;
        }
        if self.sweeps.due(entries.len(), now) {
            entries.retain_trusted(now);
        }
        let trusted_until = (now + self.ttl).min(session.expires_at);
        entries.insert(
            session.id.clone(),
            Entry {
                account_id: session.account_id,
                trusted_until,
            },
        );
    }

    /// Drops sessions that ended.
    pub fn forget<'a>(&self, ids: impl IntoIterator<Item = &'a SessionId>) {
        if let Ok(mut entries) = self.entries.write() {
            let mut about = Vec::new();
            for id in ids {
                entries.remove(id);
                about.push(Forgot::session(id));
            }
            self.generation.bump(&about);
        }
    }

    /// Drops every session of an account.
    pub fn forget_account(&self, account_id: i64) {
        if let Ok(mut entries) = self.entries.write() {
            entries.remove_account(account_id);
            self.generation.bump(&[Forgot::Account(account_id)]);
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

/// A session as shown to its owner.
#[derive(Debug, Clone)]
pub struct SessionView {
    /// Session id.
    pub id: String,
    /// Platform.
    pub platform: String,
    /// User agent at login.
    pub user_agent: Option<String>,
    /// Address at login.
    pub ip: Option<String>,
    /// Login time.
    pub created_at: UnixTime,
    /// Last refresh.
    pub last_used_at: UnixTime,
    /// Absolute end.
    pub expires_at: UnixTime,
    /// Whether this is the session making the request.
    pub current: bool,
}

impl Core {
    /// Fails with `Unauthenticated` unless session `id` of `account_id` is live.
    pub(crate) async fn ensure_live(&self, id: &str, account_id: i64) -> Result<()> {
        if self.is_live(id, account_id).await? {
            Ok(())
        } else {
            Err(Error::Unauthenticated)
        }
    }

    /// Whether session `id` of `account_id` is live; an error only when
    /// that cannot be told (the store is unavailable).
    pub(crate) async fn is_live(&self, id: &str, account_id: i64) -> Result<bool> {
        let now = self.now();
        if self.caches.session_is_live(id, account_id, now) {
            return Ok(true);
        }
        let seen = self.caches.live.generation.now();
        match self.store.get_session(&id.to_owned()).await? {
            Some(session) if session.account_id == account_id && session.is_live(now) => {
                self.caches.live.remember(&session, now, seen);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// A page of the caller's live sessions, oldest first.
    pub async fn my_sessions(
        &self,
        principal: &Principal,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<SessionView>> {
        self.sessions_of(
            principal.account_id,
            Some(&principal.session_id),
            cursor,
            limit,
        )
        .await
    }

    /// A page of an account's live sessions, oldest first, from where
    /// `cursor` (a previous page's `next_cursor`) says; `current` marks
    /// the caller's own.
    pub(crate) async fn sessions_of(
        &self,
        account_id: AccountId,
        current: Option<&SessionId>,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<SessionView>> {
        let limit = page_limit(limit)?;
        let after = cursor
            .filter(|c| !c.is_empty())
            .map(session_cursor)
            .transpose()?;
        let sessions = self
            .store
            // One more than asked: whether a next page exists.
            .page_live_sessions(account_id, self.now(), after.as_ref(), limit + 1)
            .await?;
        let sessions = sessions
            .into_iter()
            .map(|s| SessionView {
                current: Some(&s.id) == current,
                id: s.id,
                platform: s.platform,
                user_agent: s.user_agent,
                ip: s.ip,
                created_at: s.created_at,
                last_used_at: s.last_used_at,
                expires_at: s.expires_at,
            })
            .collect();
        Ok(Page::of(sessions, limit, |s: &SessionView| {
            format!("{}.{}", s.created_at, s.id)
        }))
    }

    /// Ends one of the caller's sessions; `NotFound` if it is not theirs or not live.
    pub async fn end_my_session(
        &self,
        principal: &Principal,
        id: &str,
        client: &ClientInfo,
    ) -> Result<()> {
        if !is_session_id(id) {
            return Err(Error::NotFound("session"));
        }
        let id = id.to_owned();
        match self.store.get_session(&id).await? {
            Some(session)
                if session.account_id == principal.account_id && session.is_live(self.now()) =>
            {
                self.end_session_and_its_clients(&id, "revoked").await?;
                let mut entry = audit::event("session_revoked", "success", "native")
                    .client(client)
                    .detail(format!("session {id}"));
                entry.account_id = Some(principal.account_id);
                self.audit.record(entry);
                Ok(())
            }
            _ => Err(Error::NotFound("session")),
        }
    }

    /// Ends every session of an account except `keep`, here and in the store.
    pub(crate) async fn end_account_sessions(
        &self,
        account_id: i64,
        keep: Option<&SessionId>,
        reason: &str,
    ) -> Result<()> {
        let ended = self
            .store
            .revoke_account_sessions(account_id, keep, self.now(), reason)
            .await?;
        self.sessions_ended(&ended).await;
        Ok(())
    }

    /// Forgets sessions that just ended, here and (by a notice) on every node.
    pub(crate) async fn sessions_ended(&self, ids: &[SessionId]) {
        if ids.is_empty() {
            return;
        }
        self.caches.forget_sessions(ids);
        for notice in notices::sessions_ended(ids) {
            self.publish(&notice).await;
        }
    }

    /// Ends a session and, if it is a browser session, the sessions opened
    /// for OAuth clients from it; tells every node. Returns whether the
    /// session itself was live.
    pub(crate) async fn end_session_and_its_clients(
        &self,
        id: &SessionId,
        reason: &str,
    ) -> Result<bool> {
        let now = self.now();
        let mut ended = Vec::new();
        // The browser session first: a code redeemed from now on is refused
        // (the store checks its browser session in the redeeming
        // transaction), and one redeemed before is among those listed next.
        let revoked = self.store.revoke_session(id, now, reason).await?;
        if revoked {
            ended.push(id.clone());
        }
        let children = self
            .end_clients_of(std::slice::from_ref(id), now, reason, &mut ended)
            .await;
        // What ended is announced even if a later step failed.
        self.sessions_ended(&ended).await;
        children?;
        Ok(revoked)
    }

    /// Ends the live sessions opened for OAuth clients from the browser
    /// sessions `browsers` (none if they are not browser sessions), adding
    /// them to `ended`.
    async fn end_clients_of(
        &self,
        browsers: &[SessionId],
        now: UnixTime,
        reason: &str,
        ended: &mut Vec<SessionId>,
    ) -> Result<()> {
        for browser in browsers {
            for child in self.store.sessions_from_browser(browser).await? {
                if self.store.revoke_session(&child, now, reason).await? {
                    ended.push(child);
                }
            }
        }
        Ok(())
    }

    /// After a login on a `single` platform: the sessions it replaced are
    /// ended on every node, and so are the sessions OAuth clients opened
    /// from a replaced browser session (sign-in pages share the `web`
    /// platform), as its logout would end them.
    pub(crate) async fn sessions_replaced(&self, replaced: &[SessionId]) {
        if replaced.is_empty() {
            return;
        }
        let mut ended = replaced.to_vec();
        let children = self
            .end_clients_of(replaced, self.now(), "replaced", &mut ended)
            .await;
        self.sessions_ended(&ended).await;
        if let Err(error) = children {
            tracing::warn!(
                %error,
                "a login replaced a browser session, but the sessions of OAuth clients \
                 opened from it could not all be ended (they end with their refresh lifetime \
                 or a logout)"
            );
        }
    }

    /// Forgets an account that just changed, here and on every node.
    pub(crate) async fn account_changed(&self, id: AccountId) {
        self.caches.accounts.forget(id);
        self.publish(&Notice::AccountChanged(id)).await;
    }

    /// Forgets every cached account, here and on every node (a role's
    /// permissions changed).
    pub(crate) async fn roles_changed(&self) {
        self.caches.accounts.clear();
        self.publish(&Notice::RolesChanged).await;
    }

    /// Publishes a notice; a failure leaves the other nodes to notice within
    /// `sessions.cache_ttl` (their entries expire), so it is only logged:
    /// once every [`UNSENT_WARN_EVERY`] at most, with the count since, so
    /// that an outage of Redis does not log every logout.
    pub(crate) async fn publish(&self, notice: &Notice) {
        let Err(error) = self.notices.publish(notice).await else {
            return;
        };
        self.metrics.notice_unsent();
        // The notices not sent since the last warning, when one is due.
        let unsent = {
            let mut state = self
                .unsent_notices
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            state.1 += 1;
            if state.0.is_none_or(|at| at.elapsed() >= UNSENT_WARN_EVERY) {
                let unsent = state.1;
                *state = (Some(std::time::Instant::now()), 0);
                Some(unsent)
            } else {
                None
            }
        };
        if let Some(unsent) = unsent {
            tracing::warn!(
                %error,
                unsent,
                "could not tell the other nodes; they catch up within sessions.cache_ttl"
            );
        }
    }
}

/// Shortest gap between two warnings about notices that could not be sent.
const UNSENT_WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether `id` can name a session (every session id is a UUID): anything
/// else is no session, and never reaches the database (PostgreSQL refuses a
/// NUL in text with an error, not with "no such row").
pub(crate) fn is_session_id(id: &str) -> bool {
    uuid::Uuid::try_parse(id).is_ok()
}

/// Reads a cursor of a session list: the creation time and the id of the
/// session a previous page ended at (`1764600000.<uuid>`).
fn session_cursor(raw: &str) -> Result<SessionCursor> {
    raw.split_once('.')
        .and_then(|(created_at, id)| {
            let created_at = created_at.parse::<UnixTime>().ok()?;
            (created_at >= 0 && is_session_id(id)).then(|| SessionCursor {
                created_at,
                id: id.to_owned(),
            })
        })
        .ok_or_else(|| Error::invalid("cursor", "not a cursor this API returned"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TokenStyle;

    fn session(id: &str, account_id: AccountId) -> Session {
        Session {
            id: id.to_owned(),
            account_id,
            platform: "web".into(),
            user_agent: None,
            ip: None,
            token_style: TokenStyle::Jwt,
            created_at: 0,
            last_used_at: 0,
            expires_at: 10_000,
            revoked_at: None,
            account_active: true,
        }
    }

    /// An account's notice forgets its sessions, and only its (found by
    /// the account's index, not a scan); sweeps keep the index in step.
    #[test]
    fn an_account_is_forgotten_by_its_index() {
        let live = LiveSessions::new(60);
        for (id, account) in [("a1", 1), ("a2", 1), ("b1", 2)] {
            live.remember(&session(id, account), 100, live.generation.now());
        }
        assert!(live.lookup("a1", 1, 101) && live.lookup("b1", 2, 101));
        live.forget_account(1);
        assert!(!live.lookup("a1", 1, 101) && !live.lookup("a2", 1, 101));
        assert!(live.lookup("b1", 2, 101));
        live.forget([&"b1".to_owned()]);
        assert!(!live.lookup("b1", 2, 101));
        let entries = live.entries.read().unwrap();
        assert!(entries.by_id.is_empty() && entries.by_account.is_empty());
        drop(entries);
        live.remember(&session("c1", 3), 100, live.generation.now());
        live.entries.write().unwrap().retain_trusted(1_000);
        let entries = live.entries.read().unwrap();
        assert!(entries.by_id.is_empty() && entries.by_account.is_empty());
    }
}
