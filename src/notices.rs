//! Notices between nodes: "these sessions ended", "this account changed".
//!
//! Each node answers authenticated requests from in-memory caches (live
//! sessions, accounts), so that the hot path stays off the database. When
//! one node ends a session or changes an account, the others must drop what
//! they cached: the node publishes a [`Notice`] and every node's subscriber
//! hands it to its [`NoticeSink`]. Backends: none (one process, SQLite),
//! PostgreSQL `LISTEN/NOTIFY` (`store::postgres::notify`), Redis pub/sub
//! (`limits::redis`).
//!
//! A subscriber that loses its connection says so ([`NoticeEvent::Lost`]):
//! the node then trusts no cached answer until it has resubscribed
//! ([`NoticeEvent::Resumed`]), because notices sent in between are gone.

use std::sync::Weak;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Something other nodes must forget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Notice {
    /// These sessions ended (logout, revocation, reuse detection, replacement),
    /// or their opaque access token was replaced: forget what is cached
    /// about them (a live one is read again from the store).
    #[serde(rename = "s")]
    SessionsEnded(Vec<String>),
    /// This account changed (status, password, roles, quota, profile, deletion).
    #[serde(rename = "a")]
    AccountChanged(i64),
    /// A role's permissions changed, or a role was deleted: every cached
    /// account may hold stale permissions.
    #[serde(rename = "r")]
    RolesChanged,
    /// The signing keys changed (`sesame keys rotate`): reload them.
    #[serde(rename = "k")]
    KeysChanged,
    /// An operator unlocked this account: forget the failures each node
    /// counted for it on its own (without Redis, or while Redis was away).
    /// Nodes of a version before this notice ignore it.
    #[serde(rename = "u")]
    AccountUnlocked(i64),
}

/// What a subscriber hands to its sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoticeEvent {
    /// A notice from another node (or this one).
    Notice(Notice),
    /// The subscription was lost: notices may be missed from now on.
    Lost,
    /// (Re)subscribed: notices arrive again; anything cached before may be stale.
    Resumed,
}

/// Receives notices; implemented by the core's caches.
pub trait NoticeSink: Send + Sync {
    /// Handles one event; must not block.
    fn deliver(&self, event: NoticeEvent);
}

/// A notice backend could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("notices unavailable: {0}")]
pub struct NoticeError(pub String);

/// Publishes notices to every node and delivers theirs.
#[async_trait]
pub trait Notices: Send + Sync {
    /// Sends a notice to every node, this one included.
    async fn publish(&self, notice: &Notice) -> Result<(), NoticeError>;
    /// Starts delivering events to `sink` in the background, for as long as
    /// the sink lives. The first event is `Resumed` once subscribed (or
    /// `Lost` if the backend cannot be reached; it keeps retrying).
    fn subscribe(&self, sink: Weak<dyn NoticeSink>);
    /// Whether notices travel between nodes at all (false for one process).
    fn is_shared(&self) -> bool;
}

/// One process on its own (SQLite): nothing to tell anyone.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalOnly;

#[async_trait]
impl Notices for LocalOnly {
    async fn publish(&self, _notice: &Notice) -> Result<(), NoticeError> {
        Ok(())
    }

    fn subscribe(&self, sink: Weak<dyn NoticeSink>) {
        if let Some(sink) = sink.upgrade() {
            sink.deliver(NoticeEvent::Resumed);
        }
    }

    fn is_shared(&self) -> bool {
        false
    }
}

/// Session ids per notice, so that a message stays far below PostgreSQL's
/// 8000-byte `NOTIFY` payload limit (a UUID is 36 bytes).
pub const SESSIONS_PER_NOTICE: usize = 100;

/// Splits a list of ended sessions into notices of bounded size.
pub fn sessions_ended(ids: &[String]) -> Vec<Notice> {
    ids.chunks(SESSIONS_PER_NOTICE)
        .map(|chunk| Notice::SessionsEnded(chunk.to_vec()))
        .collect()
}

/// The wire form of a notice: compact JSON.
pub fn encode(notice: &Notice) -> String {
    serde_json::to_string(notice).unwrap_or_default()
}

/// Parses the wire form; `None` for anything else (logged by the caller).
pub fn decode(text: &str) -> Option<Notice> {
    serde_json::from_str(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_round_trip_and_stay_small() {
        let ids: Vec<String> = (0..250)
            .map(|i| format!("{i:08}-0000-4000-8000-000000000000"))
            .collect();
        let notices = sessions_ended(&ids);
        assert_eq!(notices.len(), 3);
        for notice in &notices {
            let text = encode(notice);
            assert!(text.len() < 8000, "{} bytes", text.len());
            assert_eq!(decode(&text).as_ref(), Some(notice));
        }
        let account = Notice::AccountChanged(42);
        assert_eq!(encode(&account), r#"{"a":42}"#);
        assert_eq!(decode(r#"{"a":42}"#), Some(account));
        assert_eq!(decode("garbage"), None);
    }
}
