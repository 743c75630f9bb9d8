//! Moving a deployment between backends: the file format of `sesame export`
//! and the rules of `sesame import`.
//!
//! The file is JSON lines (one UTF-8 JSON object per line, at most
//! [`MAX_LINE_BYTES`] each). The first line is the header
//! `{"format": "sesame-export", "version": 3, "exported_at": "<RFC 3339>"}`;
//! every other line is a record named by its `type`:
//!
//! - `role`: a role's description and permissions;
//! - `client`: an OAuth client's registration with its secret as a SHA-256
//!   hash (as stored), so that applications keep their credentials;
//! - `account`: the account with its id (kept, so that tokens' `sub` and
//!   sessions stay valid), its password verifiers as PHC strings, status,
//!   counters, quota, roles and profile;
//! - `session` (only with `--sessions`, only live ones): the session with
//!   its refresh-token chain as SHA-256 hashes and successor salts, so that
//!   rotation, reuse detection and the grace window carry on after the move;
//!   a session signed in to an OAuth client carries the client's grant.
//!
//! Times are Unix seconds. A record's unknown fields are refused (a typo
//! must not drop data silently); so is an unknown `type`. `password_hash`
//! holds a PHC string, or the hash of another system in its own format
//! (`password_hash_format` names it where the value does not, with
//! `password_salt` where the salt is kept apart; see `core::foreign`).
//!
//! Import applies the same rules as creating an account: usernames, emails
//! and mobiles are parsed by the domain types (so their unique keys are
//! derived exactly as at creation), roles must exist, verifiers must be
//! ones Sesame can check; roles and clients follow the rules of `sesame
//! role add` and `sesame client add`. Refusals never repeat a field value
//! other than the username, a role name, a client id, a grant, a scope or a
//! redirect URI (none of them personal or secret).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasher, Hash, RandomState};
use std::net::IpAddr;

use argon2::password_hash::PasswordHash;
use argon2::{Algorithm, Params, Version};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::Core;
use super::accounts::{DEFAULT_ROLE, OPERATOR};
use super::accounts::{
    MAX_ATTRIBUTES, check_attribute_name, check_attribute_value, check_avatar_url,
    check_display_name,
};
use super::audit::{self, AuditEventExt};
use super::clients::{DEFAULT_GRANTS, SCOPES, check_client};
use super::domain::{Email, Mobile, Platform, Username};
use super::error::{Error, Result};
use super::roles::{Actor, check_role};
use crate::store::transfer::{
    AccessHandle, AccountRecord, ImportRecord, MAX_ACCESS_TOKENS, RecordError, RecordResults,
    RefreshLink, SessionRecord,
};
use crate::store::{
    Account, AccountId, AccountStatus, OAuthClient, OAuthSession, PasswordVerifiers, QuotaPeriod,
    Role, RoleChange, StoreError, TokenStyle,
};

/// The header's `format`.
pub const FORMAT: &str = "sesame-export";
/// The format version this Sesame writes. It reads versions 1 and 2 too.
/// Version 1 session lines lack `username` and are refused (version 2
/// added it, so that a session never joins another account that has its
/// id); version 3 added `client` lines and the `client` of sessions.
pub const VERSION: u64 = 3;
/// Longest line, in bytes; a longer one is refused without being held whole.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;
/// Most refresh-token links exported per session: the live token and the
/// newest rotated ones. Keeps a session's line far below [`MAX_LINE_BYTES`];
/// an older rotated token presented after the move is simply unknown
/// (`invalid_refresh_token`) instead of ending the session.
pub const MAX_EXPORTED_CHAIN: u32 = 2048;

/// Longest stored verifier accepted, in bytes.
const MAX_HASH_BYTES: usize = 512;
/// Longest salt the hashing pool can decode, in bytes.
const MAX_SALT_BYTES: usize = 64;
// The same bounds as account creation and profile edits (core::accounts).
/// Longest user agent, as the HTTP layer keeps it.
const MAX_USER_AGENT_CHARS: usize = 256;
/// Longest successor salt accepted, in bytes (Sesame's are 32).
const MAX_SUCCESSOR_SALT_BYTES: usize = 64;
/// The latest time a line may carry: 9999-12-31T23:59:59Z. Later ones (up to
/// `i64::MAX`) would overflow the arithmetic on them (an expiry plus a
/// lifetime) and mean nothing anyway.
const LATEST_TIME: i64 = 253_402_300_799;
/// The largest count a line may carry: 2^53 − 1, which every JSON reader
/// holds exactly, and far from the 64-bit columns' end so that counting on
/// from it (a login, an API call) never overflows them.
const MOST_COUNT: i64 = (1 << 53) - 1;

/// The first line of a file.
#[derive(Debug, Serialize)]
struct Header<'a> {
    format: &'a str,
    version: u64,
    exported_at: String,
}

/// An `account` line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountLine {
    id: AccountId,
    username: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: bool,
    #[serde(default)]
    mobile: Option<String>,
    #[serde(default)]
    mobile_verified: bool,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    avatar_url: String,
    #[serde(default = "active")]
    status: String,
    password_hash: String,
    #[serde(default)]
    password_hash_format: Option<String>,
    #[serde(default)]
    password_salt: Option<String>,
    #[serde(default)]
    md5_verifier: Option<String>,
    #[serde(default)]
    password_changed_at: Option<i64>,
    created_at: i64,
    #[serde(default)]
    updated_at: Option<i64>,
    #[serde(default)]
    last_login_at: Option<i64>,
    #[serde(default)]
    last_login_ip: Option<String>,
    #[serde(default)]
    login_count: i64,
    #[serde(default)]
    failed_login_count: i64,
    #[serde(default)]
    api_calls_count: i64,
    #[serde(default)]
    max_api_calls: i64,
    #[serde(default)]
    quota_period: Option<String>,
    #[serde(default)]
    api_calls_period: i64,
    #[serde(default)]
    roles: Option<Vec<String>>,
    #[serde(default)]
    profile: BTreeMap<String, String>,
}

fn active() -> String {
    AccountStatus::Active.as_str().to_owned()
}

/// A `session` line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionLine {
    id: String,
    account_id: AccountId,
    /// The account's username, which the account at `account_id` must have
    /// (since version 2; absent from version 1 files).
    #[serde(default)]
    username: Option<String>,
    platform: String,
    #[serde(default)]
    user_agent: Option<String>,
    #[serde(default)]
    ip: Option<String>,
    token_style: String,
    created_at: i64,
    expires_at: i64,
    refresh_tokens: Vec<RefreshLine>,
    /// Its live opaque access tokens by hash (since version 3): a
    /// contract's, or the sign-in page's cookie.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    access_tokens: Vec<AccessLine>,
    /// For a session signed in to an OAuth client (since version 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client: Option<GrantLine>,
}

/// One of a session line's `access_tokens`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessLine {
    hash: String,
    expires_at: i64,
}

/// A session line's `client`: what an OAuth client was granted.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantLine {
    client_id: String,
    scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    browser_session: Option<String>,
    auth_time: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nonce: Option<String>,
}

/// A `role` line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleLine {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    permissions: Vec<String>,
}

/// A `client` line: an OAuth client's registration.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientLine {
    id: String,
    #[serde(default)]
    name: Option<String>,
    /// Hex SHA-256 of the secret; absent for a public client.
    #[serde(default)]
    secret_hash: Option<String>,
    #[serde(default)]
    redirect_uris: Vec<String>,
    #[serde(default)]
    post_logout_redirect_uris: Vec<String>,
    #[serde(default)]
    grants: Option<Vec<String>>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    created_at: i64,
}

/// One link of a session line's `refresh_tokens`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshLine {
    hash: String,
    issued_at: i64,
    #[serde(default)]
    rotated_at: Option<i64>,
    #[serde(default)]
    successor_salt: Option<String>,
}

/// A record line as written, with its `type` first.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line<'a> {
    Role(&'a RoleLine),
    Client(&'a ClientLine),
    Account(&'a AccountLine),
    Session(&'a SessionLine),
}

impl ClientLine {
    fn from_client(c: &OAuthClient) -> Self {
        Self {
            id: c.id.clone(),
            name: Some(c.name.clone()),
            secret_hash: c.secret_hash.map(hex::encode),
            redirect_uris: c.redirect_uris.clone(),
            post_logout_redirect_uris: c.post_logout_redirect_uris.clone(),
            grants: Some(c.grants.clone()),
            scopes: Some(c.scopes.clone()),
            created_at: c.created_at,
        }
    }
}

impl AccountLine {
    fn from_account(a: &Account) -> Self {
        Self {
            id: a.id,
            username: a.username.clone(),
            email: a.email.clone(),
            email_verified: a.email_verified,
            mobile: a.mobile.clone(),
            mobile_verified: a.mobile_verified,
            display_name: a.display_name.clone(),
            avatar_url: a.avatar_url.clone(),
            status: a.status.as_str().to_owned(),
            password_hash: a.verifiers.password_hash.clone(),
            // A hash imported from elsewhere and not yet replaced keeps the
            // stored form, which names its own format (Django's
            // `argon2$argon2id$…` too: it is no PHC string as written).
            password_hash_format: a
                .verifiers
                .password_hash
                .starts_with("$argon2")
                .then(|| "phc".to_owned()),
            password_salt: None,
            md5_verifier: a.verifiers.md5_verifier.clone(),
            password_changed_at: Some(a.password_changed_at),
            created_at: a.created_at,
            updated_at: Some(a.updated_at),
            last_login_at: a.last_login_at,
            last_login_ip: a.last_login_ip.clone(),
            login_count: a.login_count,
            failed_login_count: a.failed_login_count,
            api_calls_count: a.api_calls_count,
            max_api_calls: a.max_api_calls,
            quota_period: a.quota_period.map(|p| p.as_str().to_owned()),
            api_calls_period: a.api_calls_period,
            roles: Some(a.roles.clone()),
            profile: a.profile.clone(),
        }
    }
}

impl SessionLine {
    fn from_record(s: &SessionRecord) -> Self {
        Self {
            id: s.id.clone(),
            account_id: s.account_id,
            username: Some(s.username.clone()),
            platform: s.platform.clone(),
            user_agent: s.user_agent.clone(),
            ip: s.ip.clone(),
            token_style: s.token_style.as_str().to_owned(),
            created_at: s.created_at,
            expires_at: s.expires_at,
            refresh_tokens: s
                .refresh_tokens
                .iter()
                .map(|link| RefreshLine {
                    hash: hex::encode(link.hash),
                    issued_at: link.issued_at,
                    rotated_at: link.rotated_at,
                    successor_salt: link.successor_salt.as_ref().map(hex::encode),
                })
                .collect(),
            access_tokens: s
                .access_tokens
                .iter()
                .map(|handle| AccessLine {
                    hash: hex::encode(handle.hash),
                    expires_at: handle.expires_at,
                })
                .collect(),
            client: s.client.as_ref().map(|grant| GrantLine {
                client_id: grant.client_id.clone(),
                scope: grant.scope.clone(),
                browser_session: grant.browser_session.clone(),
                auth_time: grant.auth_time,
                nonce: grant.nonce.clone(),
            }),
        }
    }
}

fn to_json(line: &impl Serialize) -> Result<String> {
    serde_json::to_string(line).map_err(|e| Error::Internal(format!("export serialisation: {e}")))
}

/// One page of an export: lines to write, and where the next page starts.
#[derive(Debug)]
pub struct ExportPage<K> {
    /// JSON lines, without their newlines.
    pub lines: Vec<String>,
    /// The key to continue after; `None` once everything was read.
    pub next: Option<K>,
}

/// Checks a file's first line: the format and a version this Sesame reads.
pub fn check_header(text: &str) -> std::result::Result<(), String> {
    // A byte-order mark, as some Windows editors write one.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let Ok(header) = serde_json::from_str::<Map<String, Value>>(text) else {
        return Err(format!(
            "the first line is not a {FORMAT} header (a JSON object with \"format\" and \"version\")"
        ));
    };
    if header.get("format").and_then(Value::as_str) != Some(FORMAT) {
        return Err(format!(
            "the first line does not name the format \"{FORMAT}\": not a Sesame export"
        ));
    }
    match header.get("version").and_then(Value::as_u64) {
        Some(1..=VERSION) => Ok(()),
        Some(version) if version > VERSION => Err(format!(
            "the file is format version {version}, written by a newer Sesame; this one reads versions 1 to {VERSION}"
        )),
        _ => Err(format!(
            "the header's \"version\" must be 1 to {VERSION} for this Sesame"
        )),
    }
}

/// The end of the refusal of a line that names a field twice.
const TWICE: &str = "appears twice";

/// A line's JSON object, each field once: one named twice (`"status":
/// "disabled", …, "status": "active"`) is refused, not read as its last
/// value, as a typo must not change an account silently.
struct UniqueKeys(Map<String, Value>);

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = UniqueKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut access: A,
            ) -> std::result::Result<UniqueKeys, A::Error> {
                let mut object = Map::new();
                while let Some(key) = access.next_key::<String>()? {
                    if object.contains_key(&key) {
                        let shown: String = key.chars().take(64).collect();
                        return Err(serde::de::Error::custom(format!(
                            "the field {shown:?} {TWICE}"
                        )));
                    }
                    let value: Value = access.next_value()?;
                    object.insert(key, value);
                }
                Ok(UniqueKeys(object))
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

/// Counts of an import (or of a dry run: what it would import).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportCounts {
    /// Roles made.
    pub roles: u64,
    /// Roles replaced by their line (`--on-conflict update`).
    pub roles_updated: u64,
    /// OAuth clients imported.
    pub clients: u64,
    /// Accounts imported.
    pub accounts: u64,
    /// Sessions imported.
    pub sessions: u64,
    /// Sessions skipped because they expired since the export.
    pub expired: u64,
    /// Lines refused.
    pub refused: u64,
    /// Lines skipped because their account (id or username), session or
    /// client is already there (`--on-conflict skip`; a client or session
    /// with `update` too).
    pub skipped: u64,
    /// Accounts replaced by their line (`--on-conflict update`).
    pub updated: u64,
}

/// How an import runs.
#[derive(Debug, Default)]
pub struct ImportOptions {
    /// Check everything, write nothing.
    pub dry_run: bool,
    /// The legacy digest template of lines whose format is `template`.
    pub template: Option<super::foreign::Template>,
    /// The Firebase project's hash parameters, for `firebase-scrypt` lines.
    pub firebase: Option<super::foreign::FirebaseParams>,
    /// What to do with a line whose account or session is already there.
    pub on_conflict: OnConflict,
}

/// What an import does with a line whose account (same id, or for `Skip`
/// same username) or session is already there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnConflict {
    /// Refuse the line.
    #[default]
    Fail,
    /// Count it as skipped.
    Skip,
    /// Replace the account with the line (sessions and clients already
    /// there are skipped).
    Update,
}

/// A refused line, and why; never carries a field value but the username.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 1-based line number (the header is line 1).
    pub line: u64,
    /// Why it was refused.
    pub reason: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// A line parsed and validated, waiting for its batch.
#[derive(Debug)]
pub struct Parsed {
    line: u64,
    /// `role NAME`, `client ID`, `account NAME` or `session`, for refusals.
    label: String,
    record: Record,
}

/// What a line holds. Nearly every line is `Stored`: boxing it to match
/// the few roles' size would cost an allocation a line for nothing.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Record {
    /// A role, written by the core (few, and changing one must reach every
    /// node's caches).
    Role(Role),
    /// A record the store writes in the batch's transaction.
    Stored(ImportRecord),
}

/// A line of a batch for the store.
struct Stored {
    line: u64,
    label: String,
    record: ImportRecord,
}

/// An import (or dry run) in progress: the rules' context and the counts.
#[derive(Debug)]
pub struct Import {
    dry_run: bool,
    roles: Vec<String>,
    /// The legacy digest template of lines whose format is `template`.
    template: Option<super::foreign::Template>,
    /// The Firebase project's hash parameters.
    firebase: Option<super::foreign::FirebaseParams>,
    /// Argon2id parameters for passwords imported in the clear.
    hashing: Params,
    /// Accounts imported, by the format of their password hash.
    by_format: BTreeMap<&'static str, u64>,
    /// What to do with a line whose account or session is already there.
    on_conflict: OnConflict,
    /// Dry run only: fingerprints of what was accepted so far, so that a
    /// later line colliding with an earlier one, or a session of an
    /// account earlier in the file, is judged as the real import would.
    seen: Option<Seen>,
    /// The accounts this import wrote (inserted or updated; in a dry run,
    /// would write): the only ones its sessions may join. About 16 bytes
    /// an account.
    written: HashSet<AccountId>,
    /// Those of them written disabled, whose sessions are refused.
    disabled: HashSet<AccountId>,
    /// The clients this import wrote (or would write), with their scopes:
    /// the only ones its sessions may be signed in to, within those scopes.
    clients_written: HashMap<String, OAuthClient>,
    /// Roles whose line was refused (defined here otherwise), with that
    /// line: account lines after it naming them are refused too, or they
    /// would get this deployment's permissions where the file meant others.
    /// (By line, not by batch, so that `--batch` changes nothing.)
    roles_refused: HashMap<String, u64>,
    /// Dry run only: the roles the import would make or replace.
    roles_in_file: HashMap<String, Role>,
    counts: ImportCounts,
}

/// What a line of a batch is, for its count.
enum Kind {
    /// An account, with the format of its password hash.
    Account(&'static str),
    Session,
    /// A client.
    Client(Box<OAuthClient>),
}

/// Fingerprints (64-bit keyed hashes) of accepted ids and unique keys: about
/// 16 bytes per key, so a dry run over a million accounts keeps tens of
/// megabytes. A false match (2^-64 per pair) would report a collision that
/// the real import would not.
#[derive(Debug, Default)]
struct Seen {
    hasher: RandomState,
    keys: HashSet<u64>,
}

/// What a fingerprint is of.
#[derive(Debug, Clone, Copy, Hash)]
enum Key {
    AccountId,
    Username,
    Email,
    Mobile,
    SessionId,
    TokenHash,
    AccessHash,
    /// An account id with its username.
    Owner,
    ClientId,
}

impl Seen {
    fn fingerprint(&self, key: Key, value: impl Hash) -> u64 {
        self.hasher.hash_one((key, value))
    }

    fn contains(&self, key: Key, value: impl Hash) -> bool {
        self.keys.contains(&self.fingerprint(key, value))
    }

    fn insert(&mut self, key: Key, value: impl Hash) {
        let fingerprint = self.fingerprint(key, value);
        self.keys.insert(fingerprint);
    }

    /// The dry run's verdict on an account: the first field (in the order
    /// the store checks them) taken in the database or earlier in the file.
    fn judge_account(
        &mut self,
        account: &AccountRecord,
        stored: std::result::Result<(), RecordError>,
    ) -> std::result::Result<(), RecordError> {
        const FIELDS: [&str; 4] = ["id", "username", "email", "mobile"];
        let in_file = [
            self.contains(Key::AccountId, account.id),
            self.contains(Key::Username, &account.username_key),
            account
                .email_key
                .as_ref()
                .is_some_and(|e| self.contains(Key::Email, e)),
            account
                .mobile
                .as_ref()
                .is_some_and(|m| self.contains(Key::Mobile, m)),
        ]
        .iter()
        .position(|taken| *taken);
        let in_store = match &stored {
            Err(RecordError::Taken(field)) => FIELDS.iter().position(|f| f == field),
            _ => None,
        };
        let first = match (in_file, in_store) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(index) = first {
            return Err(RecordError::Taken(FIELDS[index]));
        }
        stored?;
        self.insert(Key::AccountId, account.id);
        self.insert(Key::Owner, (account.id, &account.username));
        self.insert(Key::Username, &account.username_key);
        if let Some(email) = &account.email_key {
            self.insert(Key::Email, email);
        }
        if let Some(mobile) = &account.mobile {
            self.insert(Key::Mobile, mobile);
        }
        Ok(())
    }

    /// The dry run's verdict on a client: its id taken in the database or
    /// earlier in the file.
    fn judge_client(
        &mut self,
        client: &OAuthClient,
        stored: std::result::Result<(), RecordError>,
    ) -> std::result::Result<(), RecordError> {
        if self.contains(Key::ClientId, &client.id) {
            return Err(RecordError::Taken("client_id"));
        }
        stored?;
        self.insert(Key::ClientId, &client.id);
        Ok(())
    }

    /// Records an account line the dry run accepted as an update.
    fn accept_update(&mut self, account: &AccountRecord) {
        self.insert(Key::AccountId, account.id);
        self.insert(Key::Owner, (account.id, &account.username));
    }

    /// The dry run's verdict on a session, in the order the store checks:
    /// session id taken, a refresh token hash taken, account missing (unless
    /// it is earlier in the file).
    fn judge_session(
        &mut self,
        session: &SessionRecord,
        stored: std::result::Result<(), RecordError>,
    ) -> std::result::Result<(), RecordError> {
        const FIELDS: [&str; 3] = ["session id", "refresh token hash", "access token hash"];
        let in_file = if self.contains(Key::SessionId, &session.id) {
            Some(0)
        } else if session
            .refresh_tokens
            .iter()
            .any(|link| self.contains(Key::TokenHash, link.hash))
        {
            Some(1)
        } else if session
            .access_tokens
            .iter()
            .any(|handle| self.contains(Key::AccessHash, handle.hash))
        {
            Some(2)
        } else {
            None
        };
        // An account earlier in the file (new, or an update) is judged as
        // the import will have written it.
        let stored = match stored {
            Ok(()) | Err(RecordError::NoAccount | RecordError::NotTheAccount)
                if self.contains(Key::Owner, (session.account_id, &session.username)) =>
            {
                Ok(())
            }
            Ok(()) | Err(RecordError::NoAccount)
                if self.contains(Key::AccountId, session.account_id) =>
            {
                Err(RecordError::NotTheAccount)
            }
            other => other,
        };
        let in_store = match &stored {
            Err(RecordError::Taken(field)) => FIELDS.iter().position(|f| f == field),
            _ => None,
        };
        let first = match (in_file, in_store) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(index) = first {
            return Err(RecordError::Taken(FIELDS[index]));
        }
        stored?;
        self.insert(Key::SessionId, &session.id);
        for link in &session.refresh_tokens {
            self.insert(Key::TokenHash, link.hash);
        }
        for handle in &session.access_tokens {
            self.insert(Key::AccessHash, handle.hash);
        }
        Ok(())
    }
}

impl Import {
    /// Whether this is a dry run.
    pub fn is_dry_run(&self) -> bool {
        self.dry_run
    }

    /// The counts so far.
    pub fn counts(&self) -> ImportCounts {
        self.counts
    }

    /// Accounts imported (or that would be) by password hash format.
    pub fn by_format(&self) -> &BTreeMap<&'static str, u64> {
        &self.by_format
    }

    /// Counts a line refused before parsing (too long, not UTF-8) and
    /// returns its refusal.
    pub fn refuse(&mut self, line: u64, reason: impl Into<String>) -> Refusal {
        self.counts.refused += 1;
        Refusal {
            line,
            reason: reason.into(),
        }
    }

    /// Parses and validates one line (not the header). `Ok(None)` for a
    /// blank line; a refusal is counted.
    pub fn parse(&mut self, line: u64, text: &str) -> std::result::Result<Option<Parsed>, Refusal> {
        if text.trim().is_empty() {
            return Ok(None);
        }
        let (label, record) = match self.parse_record(text) {
            Ok(parsed) => parsed,
            Err(reason) => {
                // A role line refused for its contents still says which
                // role the file means otherwise than this deployment may:
                // the accounts after it naming that role are refused too.
                if let Ok(Value::Object(object)) = serde_json::from_str::<Value>(text)
                    && object.get("type").and_then(Value::as_str) == Some("role")
                    && let Some(name) = object.get("name").and_then(Value::as_str)
                    // Only a name a role can have (and an account name):
                    // kept for the whole run, so not any string of the file.
                    && super::domain::Name::parse(name, "name").is_ok()
                {
                    self.roles_refused.entry(name.to_owned()).or_insert(line);
                }
                return Err(self.refuse(line, reason));
            }
        };
        // Account lines after it may name it: it will be there when their
        // batch is written (roles go first), or it is there already.
        if let Record::Role(role) = &record
            && !self.roles.contains(&role.name)
        {
            self.roles.push(role.name.clone());
        }
        Ok(Some(Parsed {
            line,
            label,
            record,
        }))
    }

    fn parse_record(&self, text: &str) -> std::result::Result<(String, Record), String> {
        let UniqueKeys(mut object) = serde_json::from_str(text).map_err(|e| {
            if e.is_data() {
                let message = e.to_string();
                match message.split_once(" at line ") {
                    Some((twice, _)) if twice.ends_with(TWICE) => twice.to_owned(),
                    _ => "not a JSON object".to_owned(),
                }
            } else {
                format!("malformed JSON (column {})", e.column())
            }
        })?;
        let kind = match object.remove("type") {
            Some(Value::String(kind)) => kind,
            Some(_) => return Err("\"type\" must be a string".into()),
            None => return Err("missing field `type`".into()),
        };
        match kind.as_str() {
            "account" => {
                let label = match object.get("username").and_then(Value::as_str) {
                    Some(name) => format!("account {}", shown_username(name)),
                    None => "account".to_owned(),
                };
                let parsed: AccountLine =
                    from_object(object).map_err(|e| format!("{label}: {e}"))?;
                let record = self.account(parsed).map_err(|e| format!("{label}: {e}"))?;
                let label = format!("account {}", record.username);
                Ok((
                    label,
                    Record::Stored(ImportRecord::Account(Box::new(record))),
                ))
            }
            "session" => {
                let parsed: SessionLine =
                    from_object(object).map_err(|e| format!("session: {e}"))?;
                let record = session(parsed).map_err(|e| format!("session: {e}"))?;
                Ok((
                    "session".to_owned(),
                    Record::Stored(ImportRecord::Session(record)),
                ))
            }
            "client" => {
                let label = match object.get("id").and_then(Value::as_str) {
                    Some(id) if super::clients::valid_client_id(id) => format!("client {id}"),
                    _ => "client".to_owned(),
                };
                let parsed: ClientLine =
                    from_object(object).map_err(|e| format!("{label}: {e}"))?;
                let record = client(parsed).map_err(|e| format!("{label}: {e}"))?;
                Ok((label, Record::Stored(ImportRecord::Client(record))))
            }
            "role" => {
                let label = match object.get("name").and_then(Value::as_str) {
                    Some(name) => format!("role {}", shown_username(name)),
                    None => "role".to_owned(),
                };
                let parsed: RoleLine = from_object(object).map_err(|e| format!("{label}: {e}"))?;
                let role = check_role(&parsed.name, &parsed.description, &parsed.permissions)
                    .map_err(|e| match e {
                        Error::InvalidInput { field, reason } => {
                            format!("{label}: {field}: {reason}")
                        }
                        other => format!("{label}: {other}"),
                    })?;
                Ok((format!("role {}", role.name), Record::Role(role)))
            }
            _ => Err("unknown record type (known: role, client, account, session)".into()),
        }
    }

    /// The stored form of a line's password: an Argon2 PHC string as it is,
    /// a foreign hash in the form Sesame verifies until the owner's next
    /// login, a clear password hashed with Argon2id now.
    fn password_hash(
        &self,
        a: &AccountLine,
        username: &str,
    ) -> std::result::Result<String, String> {
        let prepared = super::foreign::prepare(
            super::foreign::Given {
                hash: &a.password_hash,
                format: a.password_hash_format.as_deref(),
                salt: a.password_salt.as_deref(),
                username,
            },
            self.template.as_ref(),
            self.firebase.as_ref(),
        )?;
        match prepared {
            super::foreign::Prepared::Stored(stored) => {
                if let Some(phc) = super::foreign::native_argon2(&stored) {
                    check_phc("password_hash", phc)?;
                }
                Ok(stored)
            }
            super::foreign::Prepared::Clear(password) => {
                use argon2::PasswordHasher as _;
                // As a sign-in presents it (Unicode NFC, at most 1024
                // bytes), or the owner could never match it.
                let password = super::domain::Password::presented(&password).map_err(|_| {
                    format!(
                        "password_hash: a clear password must be 1 to {} bytes",
                        super::domain::MAX_PASSWORD_BYTES
                    )
                })?;
                let password = password.expose();
                let salt = argon2::password_hash::SaltString::generate(
                    &mut argon2::password_hash::rand_core::OsRng,
                );
                argon2::Argon2::new(Algorithm::Argon2id, Version::V0x13, self.hashing.clone())
                    .hash_password(password.as_bytes(), &salt)
                    .map(|hash| hash.to_string())
                    .map_err(|_| "password_hash: could not hash the clear password".to_owned())
            }
        }
    }

    /// Validates an account line as account creation would.
    fn account(&self, a: AccountLine) -> std::result::Result<AccountRecord, String> {
        // Bounded like counts: an id near the end of the range would leave
        // no id for the accounts created after it (and JSON readers lose
        // precision past 2^53).
        if !(1..=MOST_COUNT).contains(&a.id) {
            return Err(format!("id: must be from 1 to {MOST_COUNT}"));
        }
        // Names accounts already have: a later rule for new names (no
        // invisible characters) must not lose an account on its way in.
        let username = Username::parse_existing(&a.username).map_err(|e| e.to_string())?;
        let email = a
            .email
            .as_deref()
            .map(Email::parse_existing)
            .transpose()
            .map_err(|e| e.to_string())?;
        let mobile = a
            .mobile
            .as_deref()
            .map(Mobile::parse)
            .transpose()
            .map_err(|e| e.to_string())?;
        // The same rules as creating and editing an account.
        check_display_name(&a.display_name).map_err(|e| e.to_string())?;
        check_avatar_url(&a.avatar_url).map_err(|e| e.to_string())?;
        let status = AccountStatus::parse(&a.status)
            .ok_or("status: must be \"active\", \"disabled\" or \"locked\"")?;
        let password_hash = self.password_hash(&a, username.as_str())?;
        if let Some(md5) = &a.md5_verifier {
            check_phc("md5_verifier", md5)?;
        }
        for (field, time) in [
            ("created_at", Some(a.created_at)),
            ("password_changed_at", a.password_changed_at),
            ("updated_at", a.updated_at),
            ("last_login_at", a.last_login_at),
        ] {
            if time.is_some_and(|t| !(0..=LATEST_TIME).contains(&t)) {
                return Err(format!(
                    "{field}: must be Unix seconds, from 0 to {LATEST_TIME} (the year 9999)"
                ));
            }
        }
        let last_login_ip = a
            .last_login_ip
            .as_deref()
            .map(|ip| ip.parse::<IpAddr>().map(|ip| ip.to_string()))
            .transpose()
            .map_err(|_| "last_login_ip: must be an IP address")?;
        for (field, count) in [
            ("login_count", a.login_count),
            ("failed_login_count", a.failed_login_count),
            ("api_calls_count", a.api_calls_count),
            ("max_api_calls", a.max_api_calls),
        ] {
            if !(0..=MOST_COUNT).contains(&count) {
                return Err(format!("{field}: must be from 0 to {MOST_COUNT}"));
            }
        }
        let quota_period = a
            .quota_period
            .as_deref()
            .map(|p| {
                QuotaPeriod::parse(p).ok_or("quota_period: must be \"none\", \"day\" or \"month\"")
            })
            .transpose()?;
        if !(0..=LATEST_TIME).contains(&a.api_calls_period) {
            return Err(
                "api_calls_period: must be Unix seconds, from 0 to 253402300799 (the year 9999)"
                    .into(),
            );
        }
        let mut roles = a.roles.unwrap_or_else(|| vec![DEFAULT_ROLE.to_owned()]);
        if roles.iter().any(|role| !self.roles.contains(role)) {
            return Err(format!(
                "roles: names a role this deployment does not define (known roles: {})",
                self.roles.join(", ")
            ));
        }
        roles.sort();
        roles.dedup();
        check_profile(&a.profile)?;
        Ok(AccountRecord {
            id: a.id,
            username: username.as_str().to_owned(),
            username_key: username.key().to_owned(),
            email: email.as_ref().map(|e| e.as_str().to_owned()),
            email_key: email.as_ref().map(|e| e.key().to_owned()),
            email_verified: a.email_verified,
            mobile: mobile.as_ref().map(|m| m.as_str().to_owned()),
            mobile_verified: a.mobile_verified,
            display_name: a.display_name,
            avatar_url: a.avatar_url,
            status,
            verifiers: PasswordVerifiers {
                password_hash,
                md5_verifier: a.md5_verifier,
            },
            password_changed_at: a.password_changed_at.unwrap_or(a.created_at),
            created_at: a.created_at,
            updated_at: a.updated_at.unwrap_or(a.created_at),
            last_login_at: a.last_login_at,
            last_login_ip,
            login_count: a.login_count,
            failed_login_count: a.failed_login_count,
            api_calls_count: a.api_calls_count,
            max_api_calls: a.max_api_calls,
            quota_period,
            api_calls_period: a.api_calls_period,
            roles,
            profile: a.profile,
        })
    }
}

/// The account fields a CSV column can name; any other column is a profile
/// attribute (`nickname`, `gender`, `birthday`, `head_pic`, `group_id` …).
const CSV_INTEGERS: [&str; 10] = [
    "id",
    "created_at",
    "updated_at",
    "password_changed_at",
    "last_login_at",
    "login_count",
    "failed_login_count",
    "api_calls_count",
    "max_api_calls",
    "api_calls_period",
];
const CSV_BOOLEANS: [&str; 2] = ["email_verified", "mobile_verified"];
const CSV_TEXTS: [&str; 12] = [
    "username",
    "email",
    "mobile",
    "display_name",
    "avatar_url",
    "status",
    "password_hash",
    "password_hash_format",
    "password_salt",
    "md5_verifier",
    "last_login_ip",
    "quota_period",
];

/// Turns one CSV row into an account line of the import format: columns
/// named like account fields fill them (`roles` separated by commas or
/// spaces), every other column becomes a profile attribute; empty cells
/// are absent. Errors name the column, never its value.
pub fn csv_account(headers: &[String], row: &[String]) -> std::result::Result<String, String> {
    if headers.len() != row.len() {
        return Err(format!(
            "{} fields where the header names {}",
            row.len(),
            headers.len()
        ));
    }
    let mut line = Map::new();
    line.insert("type".into(), Value::from("account"));
    let mut profile = Map::new();
    for (name, cell) in headers.iter().zip(row) {
        let name = name.trim();
        if cell.is_empty() || name == "type" {
            continue;
        }
        let value = if CSV_INTEGERS.contains(&name) {
            Value::from(
                cell.trim()
                    .parse::<i64>()
                    .map_err(|_| format!("{name}: not a whole number"))?,
            )
        } else if CSV_BOOLEANS.contains(&name) {
            Value::from(match cell.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "t" => true,
                "false" | "0" | "no" | "f" => false,
                _ => return Err(format!("{name}: not true or false")),
            })
        } else if CSV_TEXTS.contains(&name) {
            Value::from(cell.as_str())
        } else if name == "roles" {
            Value::from(
                cell.split([',', ' '])
                    .filter(|r| !r.is_empty())
                    .collect::<Vec<_>>(),
            )
        } else {
            profile.insert(name.to_owned(), Value::from(cell.as_str()));
            continue;
        };
        line.insert(name.to_owned(), value);
    }
    if !profile.is_empty() {
        line.insert("profile".into(), Value::Object(profile));
    }
    Ok(Value::Object(line).to_string())
}

/// A username fit for a refusal: no control characters, at most 64 characters.
fn shown_username(name: &str) -> String {
    name.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// Deserialises a record's fields, turning serde's message into one that
/// names the field but never repeats a value.
fn from_object<T: serde::de::DeserializeOwned>(
    object: Map<String, Value>,
) -> std::result::Result<T, String> {
    serde_path_to_error::deserialize(Value::Object(object)).map_err(|error| {
        let path: String = error
            .path()
            .to_string()
            .chars()
            .filter(|c| !c.is_control())
            .take(64)
            .collect();
        let message = error.inner().to_string();
        let what = if let Some(rest) = message.strip_prefix("unknown field `") {
            let field: String = rest
                .split('`')
                .next()
                .unwrap_or_default()
                .chars()
                .filter(|c| !c.is_control())
                .take(64)
                .collect();
            return format!("unknown field `{field}`");
        } else if message.starts_with("missing field") {
            return message.split(" at ").next().unwrap_or(&message).to_owned();
        } else if message.starts_with("invalid type") {
            "wrong type"
        } else if message.starts_with("invalid length") {
            "wrong length"
        } else {
            "invalid value"
        };
        let expected = message
            .rsplit_once(", expected ")
            .map(|(_, expected)| format!(", expected {expected}"))
            .unwrap_or_default();
        format!("{path}: {what}{expected}")
    })
}

fn check_text(field: &str, value: &str, max_chars: usize) -> std::result::Result<(), String> {
    if value.chars().count() > max_chars || value.chars().any(char::is_control) {
        return Err(format!(
            "{field}: must be at most {max_chars} characters without control characters"
        ));
    }
    Ok(())
}

fn check_profile(profile: &BTreeMap<String, String>) -> std::result::Result<(), String> {
    if profile.len() > MAX_ATTRIBUTES {
        return Err(format!("profile: at most {MAX_ATTRIBUTES} attributes"));
    }
    for (name, value) in profile {
        check_attribute_name(name).map_err(|e| e.to_string())?;
        check_attribute_value(value).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Checks that a stored verifier is a PHC string Sesame can verify: an
/// Argon2 variant with its salt, hash and sane parameters. Other algorithms
/// parse as PHC but are refused until Sesame can verify them.
fn check_phc(field: &str, value: &str) -> std::result::Result<(), String> {
    if value.len() > MAX_HASH_BYTES {
        return Err(format!("{field}: longer than {MAX_HASH_BYTES} bytes"));
    }
    let Ok(phc) = PasswordHash::new(value) else {
        return Err(format!("{field}: not a PHC string ($algorithm$…)"));
    };
    if Algorithm::try_from(phc.algorithm).is_err() {
        return Err(format!(
            "{field}: a PHC string, but not Argon2 (argon2id, argon2i or argon2d)"
        ));
    }
    let (Some(salt), Some(_)) = (phc.salt, phc.hash) else {
        return Err(format!("{field}: the PHC string lacks its salt or hash"));
    };
    let mut salt_buf = [0u8; MAX_SALT_BYTES];
    match salt.decode_b64(&mut salt_buf) {
        Err(_) => {
            return Err(format!(
                "{field}: the salt is not base64 of at most {MAX_SALT_BYTES} bytes"
            ));
        }
        Ok(salt) if salt.len() < super::passwords::MIN_SALT_BYTES => {
            return Err(format!(
                "{field}: a salt of {} bytes; Argon2 takes at least {}",
                salt.len(),
                super::passwords::MIN_SALT_BYTES
            ));
        }
        Ok(_) => {}
    }
    let params =
        Params::try_from(&phc).map_err(|_| format!("{field}: invalid Argon2 parameters"))?;
    super::passwords::check_stored_cost(&params).map_err(|reason| format!("{field}: {reason}"))?;
    if let Some(version) = phc.version {
        Version::try_from(version).map_err(|_| format!("{field}: unknown Argon2 version"))?;
    }
    Ok(())
}

/// Validates a session line.
fn session(s: SessionLine) -> std::result::Result<SessionRecord, String> {
    if uuid::Uuid::try_parse(&s.id).is_err() {
        return Err("id: must be a UUID".into());
    }
    if !(1..=MOST_COUNT).contains(&s.account_id) {
        return Err(format!("account_id: must be from 1 to {MOST_COUNT}"));
    }
    let Some(username) = s.username else {
        return Err(
            "username: required (format version 2): a session joins only the account with its \
             username; export the sessions again with this Sesame"
                .into(),
        );
    };
    // As account lines write it, so that the two compare.
    let username = Username::parse_existing(&username)
        .map_err(|e| e.to_string())?
        .as_str()
        .to_owned();
    let platform = Platform::parse(&s.platform).map_err(|e| e.to_string())?;
    if let Some(agent) = &s.user_agent {
        check_text("user_agent", agent, MAX_USER_AGENT_CHARS)?;
    }
    let ip =
        s.ip.as_deref()
            .map(|ip| ip.parse::<IpAddr>().map(|ip| ip.to_string()))
            .transpose()
            .map_err(|_| "ip: must be an IP address")?;
    let token_style =
        TokenStyle::parse(&s.token_style).ok_or("token_style: must be \"jwt\" or \"opaque\"")?;
    if s.created_at < 0 || s.expires_at < s.created_at || s.expires_at > LATEST_TIME {
        return Err("expires_at: must not be before created_at (Unix seconds)".into());
    }
    if s.refresh_tokens.is_empty() {
        return Err("refresh_tokens: must hold at least the live token".into());
    }
    // As long as an export writes at most: a batch's memory stays bounded.
    if s.refresh_tokens.len() > MAX_EXPORTED_CHAIN as usize {
        return Err(format!(
            "refresh_tokens: at most {MAX_EXPORTED_CHAIN} links (the newest, as an export writes)"
        ));
    }
    // Each hash once: the import refuses a hash already taken, even by
    // its own line (which a dry run must say too).
    let mut hashes: Vec<String> = s
        .refresh_tokens
        .iter()
        .map(|l| l.hash.to_ascii_lowercase())
        .collect();
    hashes.sort_unstable();
    if hashes.windows(2).any(|pair| pair[0] == pair[1]) {
        return Err("refresh_tokens: a hash is given twice".into());
    }
    let refresh_tokens = s
        .refresh_tokens
        .into_iter()
        .enumerate()
        .map(|(index, link)| refresh_link(link).map_err(|e| format!("refresh_tokens[{index}].{e}")))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    if s.access_tokens.len() > MAX_ACCESS_TOKENS as usize {
        return Err(format!(
            "access_tokens: at most {MAX_ACCESS_TOKENS} (the newest, as an export writes)"
        ));
    }
    let access_tokens = s
        .access_tokens
        .into_iter()
        .enumerate()
        .map(|(index, line)| {
            let mut hash = [0u8; 32];
            hex::decode_to_slice(&line.hash, &mut hash).map_err(|_| {
                format!("access_tokens[{index}].hash: must be the 64 hex digits of a SHA-256")
            })?;
            if !(0..=LATEST_TIME).contains(&line.expires_at) {
                return Err(format!(
                    "access_tokens[{index}].expires_at: must be Unix seconds"
                ));
            }
            Ok(AccessHandle {
                hash,
                expires_at: line.expires_at,
            })
        })
        .collect::<std::result::Result<Vec<_>, String>>()?;
    let mut distinct: Vec<&[u8; 32]> = access_tokens.iter().map(|a| &a.hash).collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() != access_tokens.len() {
        return Err("access_tokens: a hash is given twice".into());
    }
    let client = s
        .client
        .map(|grant| client_grant(&s.id, grant).map_err(|e| format!("client.{e}")))
        .transpose()?;
    Ok(SessionRecord {
        id: s.id,
        account_id: s.account_id,
        username,
        platform: platform.as_str().to_owned(),
        user_agent: s.user_agent,
        ip,
        token_style,
        created_at: s.created_at,
        expires_at: s.expires_at,
        refresh_tokens,
        access_tokens,
        client,
    })
}

/// Validates a session line's `client`: a client id, the scopes Sesame
/// knows (each once, space-separated), the browser session it came from
/// (a session id), the time of sign-in and the authorization request's
/// nonce, bounded as the authorization endpoint bounds them.
fn client_grant(session_id: &str, grant: GrantLine) -> std::result::Result<OAuthSession, String> {
    if !super::clients::valid_client_id(&grant.client_id) {
        return Err("client_id: 1 to 64 of A-Z a-z 0-9 . _ -, not only digits".into());
    }
    let scopes: Vec<&str> = grant.scope.split(' ').filter(|s| !s.is_empty()).collect();
    if scopes.is_empty() {
        return Err("scope: at least one (what the client was granted)".into());
    }
    if let Some(unknown) = scopes.iter().find(|s| !SCOPES.contains(s)) {
        return Err(format!(
            "scope: unknown {unknown:?}; each one of {}",
            SCOPES.join(", ")
        ));
    }
    if scopes.iter().collect::<HashSet<_>>().len() != scopes.len() {
        return Err("scope: a scope is given twice".into());
    }
    if let Some(browser) = &grant.browser_session
        && uuid::Uuid::try_parse(browser).is_err()
    {
        return Err("browser_session: must be a session id (UUID)".into());
    }
    if !(0..=LATEST_TIME).contains(&grant.auth_time) {
        return Err("auth_time: must be Unix seconds".into());
    }
    if let Some(nonce) = &grant.nonce {
        check_text("nonce", nonce, super::oidc::MAX_PARAM_CHARS)?;
    }
    Ok(OAuthSession {
        session_id: session_id.to_owned(),
        client_id: grant.client_id,
        scope: scopes.join(" "),
        browser_session: grant.browser_session,
        auth_time: grant.auth_time,
        nonce: grant.nonce.filter(|n| !n.is_empty()),
    })
}

/// Validates a `client` line by the rules of `sesame client add`.
fn client(c: ClientLine) -> std::result::Result<OAuthClient, String> {
    let secret_hash = c
        .secret_hash
        .map(|hex| {
            let mut hash = [0u8; 32];
            hex::decode_to_slice(&hex, &mut hash)
                .map(|()| hash)
                .map_err(|_| "secret_hash: must be the 64 hex digits of a SHA-256".to_owned())
        })
        .transpose()?;
    let name = c.name.unwrap_or_else(|| c.id.clone());
    check_text("name", &name, 200)?;
    if !(0..=LATEST_TIME).contains(&c.created_at) {
        return Err("created_at: must be Unix seconds".into());
    }
    let client = OAuthClient {
        name,
        secret_hash,
        redirect_uris: c.redirect_uris,
        post_logout_redirect_uris: c.post_logout_redirect_uris,
        grants: c
            .grants
            .unwrap_or_else(|| DEFAULT_GRANTS.map(String::from).to_vec()),
        scopes: c
            .scopes
            .unwrap_or_else(|| SCOPES.map(String::from).to_vec()),
        created_at: c.created_at,
        id: c.id,
    };
    match check_client(&client) {
        Ok(()) => Ok(client),
        Err(Error::InvalidInput { field, reason }) => Err(format!("{field}: {reason}")),
        Err(other) => Err(other.to_string()),
    }
}

fn refresh_link(link: RefreshLine) -> std::result::Result<RefreshLink, String> {
    let mut hash = [0u8; 32];
    hex::decode_to_slice(&link.hash, &mut hash)
        .map_err(|_| "hash: must be the 64 hex digits of a SHA-256")?;
    if !(0..=LATEST_TIME).contains(&link.issued_at)
        || link
            .rotated_at
            .is_some_and(|r| r < link.issued_at || r > LATEST_TIME)
    {
        return Err("rotated_at: must not be before issued_at (Unix seconds)".into());
    }
    let successor_salt = link
        .successor_salt
        .as_deref()
        .map(hex::decode)
        .transpose()
        .ok()
        .flatten()
        .filter(|salt| !salt.is_empty() && salt.len() <= MAX_SUCCESSOR_SALT_BYTES);
    if link.successor_salt.is_some() && successor_salt.is_none() {
        return Err(format!(
            "successor_salt: must be hex of 1 to {MAX_SUCCESSOR_SALT_BYTES} bytes"
        ));
    }
    Ok(RefreshLink {
        hash,
        issued_at: link.issued_at,
        rotated_at: link.rotated_at,
        successor_salt,
    })
}

impl Core {
    /// The header line of an export written now.
    pub fn export_header(&self) -> Result<String> {
        let exported_at = OffsetDateTime::from_unix_timestamp(self.now())
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_default();
        to_json(&Header {
            format: FORMAT,
            version: VERSION,
            exported_at,
        })
    }

    /// The account lines after `after_id`, `limit` at a time.
    pub async fn export_accounts(
        &self,
        after_id: AccountId,
        limit: u32,
    ) -> Result<ExportPage<AccountId>> {
        let accounts = self.store.export_accounts(after_id, limit).await?;
        let lines = accounts
            .iter()
            .map(|a| to_json(&Line::Account(&AccountLine::from_account(a))))
            .collect::<Result<Vec<_>>>()?;
        Ok(ExportPage {
            lines,
            next: accounts.last().map(|a| a.id),
        })
    }

    /// The lines of live sessions after `after_id`, `limit` at a time, each
    /// with its refresh-token chain and live opaque access tokens (hashes
    /// only): those signed in to OAuth clients with `of_clients`, the others
    /// without. A session left without any refresh token could not be
    /// refreshed after the move and is left out.
    pub async fn export_sessions(
        &self,
        after_id: &str,
        limit: u32,
        of_clients: bool,
    ) -> Result<ExportPage<String>> {
        let sessions = self
            .store
            .export_sessions(after_id, limit, self.now(), MAX_EXPORTED_CHAIN, of_clients)
            .await?;
        let lines = sessions
            .iter()
            .filter(|s| !s.refresh_tokens.is_empty())
            .map(|s| to_json(&Line::Session(&SessionLine::from_record(s))))
            .collect::<Result<Vec<_>>>()?;
        Ok(ExportPage {
            lines,
            next: sessions.last().map(|s| s.id.clone()),
        })
    }

    /// The lines of every role (the built-in ones too, which may have been
    /// changed).
    pub async fn export_roles(&self) -> Result<Vec<String>> {
        self.store
            .list_roles()
            .await?
            .into_iter()
            .map(|role| {
                to_json(&Line::Role(&RoleLine {
                    name: role.name,
                    description: role.description,
                    permissions: role.permissions,
                }))
            })
            .collect()
    }

    /// The lines of every OAuth client (a deployment has few), their
    /// secrets as the stored hashes.
    pub async fn export_clients(&self) -> Result<Vec<String>> {
        self.store
            .list_clients()
            .await?
            .iter()
            .map(|c| to_json(&Line::Client(&ClientLine::from_client(c))))
            .collect()
    }

    /// Records a finished export in the audit log.
    pub fn export_finished(&self, roles: u64, clients: u64, accounts: u64, sessions: u64) {
        self.audit
            .record(audit::event("export", "success", OPERATOR).detail(format!(
                "{roles} roles, {clients} clients, {accounts} accounts, {sessions} sessions"
            )));
    }

    /// Starts an import, or with `dry_run` a check that writes nothing.
    pub async fn start_import(&self, options: ImportOptions) -> Result<Import> {
        Ok(Import {
            dry_run: options.dry_run,
            template: options.template,
            firebase: options.firebase,
            hashing: self.settings.hashing.params()?,
            by_format: BTreeMap::new(),
            on_conflict: options.on_conflict,
            roles: self.store.role_names().await?,
            seen: options.dry_run.then(Seen::default),
            written: HashSet::new(),
            disabled: HashSet::new(),
            clients_written: HashMap::new(),
            roles_refused: HashMap::new(),
            roles_in_file: HashMap::new(),
            counts: ImportCounts::default(),
        })
    }

    /// Imports a batch of parsed lines in one transaction (a dry run checks
    /// them against the database instead) and returns the refused ones.
    /// Sessions that expired since the export are skipped.
    ///
    /// Inserts send no notice: an import only inserts rows whose ids and
    /// keys were absent, and no node caches what does not exist (an account
    /// or session that was deleted was announced when it was; clients are
    /// not cached), so no cache anywhere can hold a stale entry for what is
    /// imported. Replacements (`--on-conflict update`) of an account or a
    /// role are announced as the admin API announces them.
    pub async fn import_batch(
        &self,
        import: &mut Import,
        batch: Vec<Parsed>,
    ) -> Result<Vec<Refusal>> {
        // Roles first, which accounts name; then clients and accounts: a
        // session checks that its account has the username it names, which
        // an account line of the same batch may insert or (with
        // --on-conflict update) write over another's, and that its client
        // was written by this import.
        let (mut roles, mut others, mut sessions) = (Vec::new(), Vec::new(), Vec::new());
        for Parsed {
            line,
            label,
            record,
        } in batch
        {
            match record {
                Record::Role(role) => roles.push((line, label, role)),
                Record::Stored(record) => {
                    let stored = Stored {
                        line,
                        label,
                        record,
                    };
                    if matches!(stored.record, ImportRecord::Session(_)) {
                        sessions.push(stored);
                    } else {
                        others.push(stored);
                    }
                }
            }
        }
        let mut refusals = self.import_roles(import, roles).await?;
        refusals.extend(self.import_records(import, others).await?);
        refusals.extend(self.import_records(import, sessions).await?);
        refusals.sort_by_key(|refusal| refusal.line);
        Ok(refusals)
    }

    /// Role lines: a role missing here is made; one defined here as the
    /// line has it needs nothing; one defined otherwise is refused (it may
    /// hold other permissions on purpose), kept (`skip`), or replaced
    /// (`update`, which every node's caches hear of).
    async fn import_roles(
        &self,
        import: &mut Import,
        roles: Vec<(u64, String, Role)>,
    ) -> Result<Vec<Refusal>> {
        let mut refusals = Vec::new();
        for (line, label, role) in roles {
            let here = match import.roles_in_file.get(&role.name) {
                // A dry run writes nothing: an earlier line of the file
                // stands for what the import will have made.
                Some(earlier) => Some(earlier.clone()),
                None => self
                    .store
                    .list_roles()
                    .await?
                    .into_iter()
                    .find(|r| r.name == role.name),
            };
            match here {
                Some(here) if here == role => {}
                None => {
                    if import.dry_run {
                        import.roles_in_file.insert(role.name.clone(), role);
                    } else {
                        match self.store.create_role(&role).await {
                            Ok(()) => self.audit_role(&Actor::Operator, "role_created", &role),
                            // Made meanwhile by someone else: judged again
                            // next time; refused now.
                            Err(StoreError::Conflict(_)) => {
                                import.counts.refused += 1;
                                refusals.push(Refusal {
                                    line,
                                    reason: format!("{label}: was defined meanwhile; run again"),
                                });
                                continue;
                            }
                            Err(other) => return Err(other.into()),
                        }
                    }
                    import.counts.roles += 1;
                }
                Some(_) => match import.on_conflict {
                    OnConflict::Fail => {
                        import.roles_refused.insert(role.name.clone(), line);
                        import.counts.refused += 1;
                        refusals.push(Refusal {
                            line,
                            reason: format!(
                                "{label}: defined here with another description or other \
                                 permissions (--on-conflict update replaces it, skip keeps it)"
                            ),
                        });
                    }
                    OnConflict::Skip => import.counts.skipped += 1,
                    OnConflict::Update => {
                        if import.dry_run {
                            import.roles_in_file.insert(role.name.clone(), role);
                        } else {
                            let change = RoleChange {
                                description: Some(role.description.clone()),
                                permissions: Some(role.permissions.clone()),
                                ..RoleChange::default()
                            };
                            let refused = match self
                                .change_role(&role.name, &change, &Actor::Operator)
                                .await
                            {
                                Ok(_) => None,
                                Err(Error::LastAdministrator) => Some(
                                    "replacing it would leave no administrator who can sign in",
                                ),
                                Err(Error::NotFound(_)) => Some("was deleted meanwhile; run again"),
                                Err(other) => return Err(other),
                            };
                            if let Some(reason) = refused {
                                import.roles_refused.insert(role.name.clone(), line);
                                import.counts.refused += 1;
                                refusals.push(Refusal {
                                    line,
                                    reason: format!("{label}: {reason}"),
                                });
                                continue;
                            }
                        }
                        import.counts.roles_updated += 1;
                    }
                },
            }
        }
        Ok(refusals)
    }

    async fn import_records(
        &self,
        import: &mut Import,
        batch: Vec<Stored>,
    ) -> Result<Vec<Refusal>> {
        let now = self.now();
        let mut lines = Vec::with_capacity(batch.len());
        let mut records = Vec::with_capacity(batch.len());
        // With --on-conflict update, a copy of each account, for those
        // whose id turns out to be taken.
        let mut copies: Vec<Option<AccountRecord>> = Vec::new();
        // Sessions refused before the database sees them.
        let mut refusals = Vec::new();
        for mut parsed in batch {
            if let ImportRecord::Account(account) = &parsed.record
                && let Some(role) = account.roles.iter().find(|role| {
                    import
                        .roles_refused
                        .get(*role)
                        .is_some_and(|refused_at| *refused_at < parsed.line)
                })
            {
                import.counts.refused += 1;
                refusals.push(Refusal {
                    line: parsed.line,
                    reason: format!(
                        "{}: roles: the line defining {role} was refused, so its permissions \
                         here may not be the file's",
                        parsed.label
                    ),
                });
                continue;
            }
            if let ImportRecord::Session(session) = &mut parsed.record {
                if session.expires_at <= now {
                    import.counts.expired += 1;
                    continue;
                }
                // Only an account this import wrote: one whose line was
                // refused or skipped (its id taken by someone, perhaps of
                // the same username), or that is not in the file, would
                // otherwise take a token the file chose (a password hash
                // proves nothing: an expired one is public, an old export
                // holds them all). Run again under --on-conflict skip, a
                // session already there with its account is skipped.
                // The same for its client: another application may have
                // its id here.
                let unwritten = if !import.written.contains(&session.account_id) {
                    Some(RecordError::NotWritten)
                } else if import.disabled.contains(&session.account_id) {
                    Some(RecordError::AccountDisabled)
                } else if let Some(grant) = &session.client {
                    match import.clients_written.get(&grant.client_id) {
                        None => Some(RecordError::ClientNotWritten),
                        // As the authorization endpoint bounds a grant.
                        Some(client)
                            if grant
                                .scope
                                .split(' ')
                                .any(|s| !client.scopes.iter().any(|c| c == s)) =>
                        {
                            import.counts.refused += 1;
                            refusals.push(Refusal {
                                line: parsed.line,
                                reason: format!(
                                    "{}: client.scope: beyond the scopes of client {}",
                                    parsed.label, grant.client_id
                                ),
                            });
                            continue;
                        }
                        Some(_) => None,
                    }
                } else {
                    None
                };
                if let Some(refusal) = unwritten {
                    let there = match (import.on_conflict, &refusal) {
                        (OnConflict::Skip, _) => true,
                        // An account is always written by update; its
                        // client may have been there.
                        (OnConflict::Update, RecordError::ClientNotWritten) => true,
                        _ => false,
                    } && self
                        .store
                        .get_session(&session.id)
                        .await?
                        .is_some_and(|stored| stored.account_id == session.account_id);
                    if there {
                        import.counts.skipped += 1;
                    } else {
                        import.counts.refused += 1;
                        refusals.push(Refusal {
                            line: parsed.line,
                            reason: format!("{}: {refusal}", parsed.label),
                        });
                    }
                    continue;
                }
                // No imported session outlives one opened now, and no
                // access token its session.
                session.expires_at = session
                    .expires_at
                    .min(now.saturating_add(self.settings.tokens.refresh_ttl));
                let end = session.expires_at;
                session
                    .access_tokens
                    .retain(|handle| handle.expires_at > now);
                for handle in &mut session.access_tokens {
                    handle.expires_at = handle.expires_at.min(end);
                }
            }
            let kind = match &parsed.record {
                ImportRecord::Account(account) => Kind::Account(
                    super::foreign::format_of(&account.verifiers.password_hash).unwrap_or("argon2"),
                ),
                ImportRecord::Session(_) => Kind::Session,
                ImportRecord::Client(client) => Kind::Client(Box::new(client.clone())),
            };
            lines.push((parsed.line, parsed.label, kind));
            if import.on_conflict == OnConflict::Update {
                copies.push(match &parsed.record {
                    ImportRecord::Account(account) => Some(AccountRecord::clone(account)),
                    ImportRecord::Session(_) | ImportRecord::Client(_) => None,
                });
            }
            records.push(parsed.record);
        }
        if records.is_empty() {
            return Ok(refusals);
        }
        let account_ids: Vec<Option<(AccountId, bool)>> = records
            .iter()
            .map(|record| match record {
                ImportRecord::Account(account) => {
                    Some((account.id, account.status == AccountStatus::Disabled))
                }
                ImportRecord::Session(_) | ImportRecord::Client(_) => None,
            })
            .collect();
        let results: RecordResults = match &mut import.seen {
            Some(seen) => {
                let stored = self.store.check_batch(&records).await?;
                records
                    .iter()
                    .zip(stored)
                    .map(|(record, stored)| match record {
                        ImportRecord::Account(account) => seen.judge_account(account, stored),
                        ImportRecord::Session(session) => seen.judge_session(session, stored),
                        ImportRecord::Client(client) => seen.judge_client(client, stored),
                    })
                    .collect()
            }
            None => self.store.import_batch(records).await?,
        };
        // Accounts whose id is there already: updated (or, in a dry run,
        // checked as an update would be).
        let mut updated = vec![false; results.len()];
        let mut results = results;
        let to_update: Vec<(usize, AccountRecord)> = results
            .iter()
            .enumerate()
            .filter(|(_, result)| matches!(result, Err(RecordError::Taken("id"))))
            .filter_map(|(i, _)| copies.get_mut(i).and_then(Option::take).map(|c| (i, c)))
            .collect();
        if !to_update.is_empty() {
            let accounts: Vec<AccountRecord> = to_update.iter().map(|(_, a)| a.clone()).collect();
            // A line giving an id another username is another person, who
            // must not inherit the previous owner's sessions: the store ends
            // them in the update's transaction.
            let outcomes = if import.seen.is_some() {
                self.store.check_updates(&accounts).await?
            } else {
                let (outcomes, effects) = self.store.update_accounts(&accounts, now).await?;
                self.sessions_ended(&effects.ended).await;
                // As a reset or an unlock would: guesses counted against
                // the password replaced (or the lock lifted) count no more.
                for id in effects.fresh_budgets {
                    self.forget_failure_budgets(id).await;
                }
                outcomes
            };
            for ((i, account), outcome) in to_update.into_iter().zip(outcomes) {
                if outcome.is_ok() {
                    updated[i] = true;
                    match &mut import.seen {
                        // Its sessions later in the file are judged against
                        // the line's username, as the import will.
                        Some(seen) => seen.accept_update(&account),
                        // Nodes may hold the old account in their caches.
                        None => {
                            self.account_changed(account.id).await;
                            // Each replacement, as the admin API records
                            // each change: who became what, from which line.
                            let mut entry = audit::event("account_replaced", "success", OPERATOR)
                                .detail(format!(
                                    "by the import's line {}: status {}, roles {}",
                                    lines[i].0,
                                    account.status.as_str(),
                                    account.roles.join(",")
                                ));
                            entry.account_id = Some(account.id);
                            entry.username = Some(account.username.clone());
                            entry.target_id = Some(account.id);
                            self.audit.record(entry);
                        }
                    }
                }
                results[i] = outcome;
            }
        }
        for ((((line, label, kind), result), updated), account_id) in
            lines.into_iter().zip(results).zip(updated).zip(account_ids)
        {
            match (result, kind) {
                (Ok(()), Kind::Account(format)) => {
                    if let Some((id, disabled)) = account_id {
                        import.written.insert(id);
                        if disabled {
                            import.disabled.insert(id);
                        } else {
                            import.disabled.remove(&id);
                        }
                    }
                    if updated {
                        import.counts.updated += 1;
                    } else {
                        import.counts.accounts += 1;
                    }
                    *import.by_format.entry(format).or_default() += 1;
                }
                (Ok(()), Kind::Session) => import.counts.sessions += 1,
                (Ok(()), Kind::Client(client)) => {
                    if !import.dry_run {
                        self.audit.record(
                            audit::event("client_added", "success", OPERATOR)
                                .detail(format!("client {} (import)", client.id)),
                        );
                    }
                    import.counts.clients += 1;
                    import.clients_written.insert(client.id.clone(), *client);
                }
                // Registered here exactly as the line has it (an import run
                // again): the same application, whose sessions in the file
                // may join it. Any other client of that id is another
                // application, left as it is; its line is refused, and the
                // sessions of the file's client with it.
                (Err(RecordError::Taken("client_id")), Kind::Client(client)) => {
                    let same = match import.clients_written.get(&client.id) {
                        // An earlier line of the file (a dry run has not
                        // written it).
                        Some(earlier) => earlier == &*client,
                        None => self.store.get_client(&client.id).await?.as_ref() == Some(&*client),
                    };
                    if same && import.on_conflict != OnConflict::Fail {
                        import.counts.skipped += 1;
                        import.clients_written.insert(client.id.clone(), *client);
                    } else {
                        import.counts.refused += 1;
                        let reason = if same {
                            "client_id is already taken, by this client as the line has it \
                             (--on-conflict skip accepts it)"
                        } else {
                            "client_id is already taken by a client registered otherwise \
                             (remove it first to import this one)"
                        };
                        refusals.push(Refusal {
                            line,
                            reason: format!("{label}: {reason}"),
                        });
                    }
                }
                (Err(RecordError::Taken(field)), _)
                    if match import.on_conflict {
                        OnConflict::Fail => false,
                        OnConflict::Skip => matches!(field, "id" | "username" | "session id"),
                        // Accounts are replaced; a session cannot be.
                        OnConflict::Update => field == "session id",
                    } =>
                {
                    import.counts.skipped += 1;
                }
                (Err(error), _) => {
                    if let RecordError::Store(error) = &error {
                        tracing::warn!(line, %error, "the database refused an imported line");
                    }
                    import.counts.refused += 1;
                    refusals.push(Refusal {
                        line,
                        reason: format!("{label}: {error}"),
                    });
                }
            }
        }
        Ok(refusals)
    }

    /// Records a finished import in the audit log (a dry run records nothing).
    pub fn import_finished(&self, import: &Import) {
        if import.dry_run {
            return;
        }
        let c = import.counts;
        self.audit
            .record(audit::event("import", "success", OPERATOR).detail(format!(
                "{} roles ({} replaced), {} clients, {} accounts ({} replaced), {} sessions, \
                 {} lines refused",
                c.roles, c.roles_updated, c.clients, c.accounts, c.updated, c.sessions, c.refused
            )));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn import() -> Import {
        Import {
            dry_run: true,
            template: None,
            firebase: None,
            hashing: Params::new(256, 1, 1, None).unwrap(),
            by_format: BTreeMap::new(),
            on_conflict: OnConflict::Fail,
            roles: vec!["administrator".into(), "user".into()],
            seen: Some(Seen::default()),
            written: HashSet::new(),
            disabled: HashSet::new(),
            clients_written: HashMap::new(),
            roles_refused: HashMap::new(),
            roles_in_file: HashMap::new(),
            counts: ImportCounts::default(),
        }
    }

    const HASH: &str = "$argon2id$v=19$m=256,t=1,p=1$c2FsdHNhbHRzYWx0$\
        YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY";

    fn account(extra: &str) -> String {
        format!(
            r#"{{"type": "account", "id": 7, "username": "Alice", "email": "Alice@Example.com",
               "password_hash": "{HASH}", "created_at": 1700000000{extra}}}"#
        )
        .replace('\n', " ")
    }

    #[test]
    fn an_account_line_derives_its_keys_as_creation_does() {
        let mut import = import();
        let parsed = import.parse(2, &account("")).unwrap().unwrap();
        let Record::Stored(ImportRecord::Account(record)) = parsed.record else {
            panic!("not an account");
        };
        assert_eq!(record.username_key, Username::parse("ALICE").unwrap().key());
        assert_eq!(record.email_key.as_deref(), Some("alice@example.com"));
        assert_eq!(record.roles, vec!["user"]);
        assert_eq!(record.updated_at, 1_700_000_000);
        assert_eq!(parsed.label, "account Alice");
    }

    #[test]
    fn clear_passwords_are_hashed_as_a_sign_in_presents_them() {
        use argon2::PasswordVerifier as _;
        let mut import = import();
        // "é" decomposed (NFD), as some systems store it; a sign-in presents
        // it composed (NFC).
        let line = format!(
            r#"{{"type": "account", "id": 8, "username": "eve", "password_hash": "caf{}", "password_hash_format": "clear", "created_at": 1700000000}}"#,
            "e\u{301}"
        );
        let parsed = import.parse(2, &line).unwrap().unwrap();
        let Record::Stored(ImportRecord::Account(record)) = parsed.record else {
            panic!("not an account");
        };
        let hash = PasswordHash::new(&record.verifiers.password_hash).unwrap();
        assert!(
            argon2::Argon2::default()
                .verify_password("caf\u{e9}".as_bytes(), &hash)
                .is_ok()
        );
        let too_long = format!(
            r#"{{"type": "account", "id": 9, "username": "zed", "password_hash": "{}", "password_hash_format": "clear", "created_at": 1700000000}}"#,
            "x".repeat(1025)
        );
        let refused = import.parse(3, &too_long).unwrap_err();
        assert!(refused.reason.contains("1 to 1024 bytes"), "{refused}");
    }

    #[test]
    fn refusals_name_the_field_but_never_repeat_a_value() {
        let mut import = import();
        let cases = [
            (
                account(r#", "pasword": "hunter2hunter2""#),
                "unknown field `pasword`",
            ),
            (
                account(r#", "login_count": "hunter2hunter2""#),
                "login_count: wrong type",
            ),
            (
                account(r#", "password_hash_format": "hunter2hunter2""#),
                "password_hash_format: unknown",
            ),
            (
                account(r#", "roles": ["hunter2hunter2"]"#),
                "roles: names a role",
            ),
            (
                account(r#", "status": "hunter2hunter2""#),
                "status: must be",
            ),
            (
                account(r#", "last_login_ip": "hunter2hunter2""#),
                "last_login_ip",
            ),
            (
                r#"{"type": "hunter2hunter2"}"#.to_owned(),
                "unknown record type",
            ),
            (
                r#"{"type": "account", "id": 3,"#.to_owned(),
                "malformed JSON",
            ),
            (r#"["hunter2hunter2"]"#.to_owned(), "not a JSON object"),
            // Numbers that would overflow what is done with them.
            (
                account(r#", "login_count": 9223372036854775807"#),
                "login_count: must be from 0 to 9007199254740991",
            ),
            (
                account(r#", "api_calls_count": 9007199254740992"#),
                "api_calls_count: must be from 0",
            ),
            (
                account(r#", "last_login_at": 9223372036854775807"#),
                "last_login_at: must be Unix seconds, from 0",
            ),
        ];
        for (line, expected) in cases {
            let refusal = import.parse(5, &line).unwrap_err();
            assert!(refusal.reason.contains(expected), "{refusal} for {line}");
            assert!(!refusal.reason.contains("hunter2"), "{refusal}");
            assert!(!refusal.reason.contains("argon2id$"), "{refusal}");
        }
        assert_eq!(import.counts().refused, 12);
    }

    #[test]
    fn sesames_own_verifiers_are_argon2_phc_strings() {
        assert!(check_phc("password_hash", HASH).is_ok());
        let pbkdf2 =
            "$pbkdf2-sha256$i=100000$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let refused = check_phc("md5_verifier", pbkdf2).unwrap_err();
        assert!(refused.contains("not Argon2"), "{refused}");
        // Parameters that would hold a hashing thread for good, or nearly.
        for (params, reason) in [
            ("m=65536,t=4294967295,p=1", "more work"),
            ("m=1048576,t=9,p=1", "more work"),
            ("m=2097152,t=1,p=1", "more than 1048576 KiB"),
            ("m=65536,t=2,p=65", "more than 64 lanes"),
        ] {
            let hash = format!(
                "$argon2id$v=19${params}$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
            );
            let refused = check_phc("password_hash", &hash).unwrap_err();
            assert!(refused.contains(reason), "{refused} for {params}");
        }
        let bcrypt = "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW";
        assert!(
            check_phc("password_hash", bcrypt)
                .unwrap_err()
                .contains("not a PHC string")
        );
    }

    #[test]
    fn csv_rows_become_account_lines() {
        let headers: Vec<String> = [
            "id",
            "username",
            "password_hash",
            "created_at",
            "email_verified",
            "roles",
            "nickname",
            "gender",
        ]
        .map(String::from)
        .to_vec();
        let row: Vec<String> = [
            "7",
            "alice",
            HASH,
            "1700000000",
            "yes",
            "user, administrator",
            "Al",
            "",
        ]
        .map(String::from)
        .to_vec();
        let line: Value = serde_json::from_str(&csv_account(&headers, &row).unwrap()).unwrap();
        assert_eq!(line["id"], 7);
        assert_eq!(line["email_verified"], true);
        assert_eq!(line["roles"], serde_json::json!(["user", "administrator"]));
        assert_eq!(line["profile"], serde_json::json!({"nickname": "Al"}));
        let mut import = import();
        assert!(
            import
                .parse(2, &csv_account(&headers, &row).unwrap())
                .is_ok()
        );
        let mut bad = row.clone();
        bad[0] = "seven-secret".into();
        let refused = csv_account(&headers, &bad).unwrap_err();
        assert!(
            refused.starts_with("id:") && !refused.contains("seven"),
            "{refused}"
        );
        assert!(csv_account(&headers, &row[..3]).is_err());
    }

    #[test]
    fn a_dry_run_sees_collisions_within_the_file() {
        let mut import = import();
        let first = import.parse(2, &account("")).unwrap().unwrap();
        let again = import
            .parse(
                3,
                &account("")
                    .replace("\"id\": 7", "\"id\": 8")
                    .replace("Alice@", "bob@"),
            )
            .unwrap()
            .unwrap();
        let seen = import.seen.as_mut().unwrap();
        let (Record::Stored(ImportRecord::Account(a)), Record::Stored(ImportRecord::Account(b))) =
            (&first.record, &again.record)
        else {
            panic!("not accounts");
        };
        assert!(seen.judge_account(a, Ok(())).is_ok());
        let taken = seen.judge_account(b, Ok(())).unwrap_err();
        assert!(matches!(taken, RecordError::Taken("username")), "{taken}");
    }

    /// A dry run judges a session by the username its account will have
    /// once the file is imported, updates included.
    #[test]
    fn a_dry_run_judges_sessions_by_the_username_the_import_writes() {
        let mut import = import();
        let parsed = import.parse(2, &account("")).unwrap().unwrap();
        let Record::Stored(ImportRecord::Account(alice)) = parsed.record else {
            panic!("not an account");
        };
        let mut session = |username: &str| {
            let line = format!(
                r#"{{"type": "session", "id": "5f0c2a52-6a3b-4d5e-9f10-2b3c4d5e6f70", "account_id": 7,
                    "username": "{username}", "platform": "web", "token_style": "jwt",
                    "created_at": 1700000000, "expires_at": 1900000000,
                    "refresh_tokens": [{{"hash": "{}", "issued_at": 1700000000}}]}}"#,
                "ab".repeat(32)
            )
            .replace('\n', " ");
            match import.parse(3, &line).unwrap().unwrap().record {
                Record::Stored(ImportRecord::Session(session)) => session,
                _ => panic!("not a session"),
            }
        };
        let (hers, his) = (session("Alice"), session("bob"));
        // Alice's line replaces bob, who had id 7 in the database.
        let mut seen = Seen::default();
        seen.accept_update(&alice);
        assert!(
            seen.judge_session(&hers, Err(RecordError::NotTheAccount))
                .is_ok()
        );
        let mut seen = Seen::default();
        seen.accept_update(&alice);
        assert!(matches!(
            seen.judge_session(&his, Ok(())),
            Err(RecordError::NotTheAccount)
        ));
        // Without a line for id 7, the database decides.
        let mut seen = Seen::default();
        assert!(seen.judge_session(&his, Ok(())).is_ok());
    }

    /// A session line's chain: each hash once, and no longer than an
    /// export writes.
    #[test]
    fn a_chain_is_bounded_and_names_each_hash_once() {
        let mut import = import();
        let line = |links: &[String]| {
            let links: Vec<String> = links
                .iter()
                .map(|hash| format!(r#"{{"hash": "{hash}", "issued_at": 1700000000}}"#))
                .collect();
            format!(
                r#"{{"type": "session", "id": "5f0c2a52-6a3b-4d5e-9f10-2b3c4d5e6f70", "account_id": 7, "username": "Alice", "platform": "web", "token_style": "jwt", "created_at": 1700000000, "expires_at": 1900000000, "refresh_tokens": [{}]}}"#,
                links.join(",")
            )
        };
        let twice = [("ab".repeat(32)), ("AB".repeat(32))];
        let refused = import.parse(2, &line(&twice)).unwrap_err();
        assert!(refused.reason.contains("given twice"), "{refused}");
        let long: Vec<String> = (0..=MAX_EXPORTED_CHAIN)
            .map(|i| format!("{i:064x}"))
            .collect();
        let refused = import.parse(3, &line(&long)).unwrap_err();
        assert!(refused.reason.contains("at most 2048"), "{refused}");
        assert!(import.parse(4, &line(&long[1..])).unwrap().is_some());
    }

    #[test]
    fn headers_name_the_format_and_a_readable_version() {
        assert!(check_header(r#"{"format": "sesame-export", "version": 1}"#).is_ok());
        assert!(check_header(r#"{"format": "sesame-export", "version": 2}"#).is_ok());
        assert!(check_header(r#"{"format": "sesame-export", "version": 3}"#).is_ok());
        assert!(
            check_header(r#"{"format": "sesame-export", "version": 4}"#)
                .unwrap_err()
                .contains("newer Sesame")
        );
        assert!(check_header(r#"{"format": "sesame-export", "version": 0}"#).is_err());
        assert!(check_header(r#"{"type": "account"}"#).is_err());
        assert!(check_header("nonsense").is_err());
        assert!(
            check_header("\u{feff}{\"format\": \"sesame-export\", \"version\": 2}").is_ok(),
            "a byte-order mark"
        );
    }

    /// Client lines follow the rules of `sesame client add`, and a session's
    /// grant is bounded as the authorization endpoint bounds it.
    #[test]
    fn clients_and_grants_are_checked_as_registration_checks_them() {
        let mut import = import();
        let secret = "ab".repeat(32);
        let client = |extra: &str| {
            format!(
                r#"{{"type": "client", "id": "shop", "secret_hash": "{secret}", "redirect_uris": ["https://shop.example/cb"], "created_at": 1700000000{extra}}}"#
            )
        };
        let Some(Parsed {
            record: Record::Stored(ImportRecord::Client(shop)),
            label,
            ..
        }) = import.parse(2, &client("")).unwrap()
        else {
            panic!("not a client");
        };
        assert_eq!(label, "client shop");
        assert_eq!(shop.name, "shop");
        assert_eq!(shop.grants, ["authorization_code", "refresh_token"]);
        assert_eq!(shop.scopes, SCOPES);
        assert_eq!(shop.secret_hash, Some([0xab; 32]));
        assert_eq!(shop.redirect_uris, ["https://shop.example/cb"]);
        for (extra, reason) in [
            (
                r#", "grants": ["password", "password"]"#,
                "grant: a value is given twice",
            ),
            (r#", "grants": ["implicit"]"#, "grant: unknown"),
            (r#", "scopes": []"#, "scope: at least one"),
            (
                r#", "post_logout_redirect_uris": ["http://shop.example/"]"#,
                "post_logout_redirect_uri: ",
            ),
            (r#", "secret": "x""#, "unknown field `secret`"),
        ] {
            let refusal = import.parse(2, &client(extra)).unwrap_err();
            assert!(refusal.reason.contains(reason), "{extra}: {refusal}");
            assert!(refusal.reason.starts_with("client shop: "), "{refusal}");
        }
        let negative = r#"{"type": "client", "id": "spa", "grants": ["password"], "secret_hash": null, "created_at": -1}"#;
        assert!(
            import
                .parse(2, negative)
                .unwrap_err()
                .reason
                .contains("created_at: must be Unix seconds")
        );
        let nowhere = r#"{"type": "client", "id": "spa", "created_at": 1}"#;
        assert!(
            import
                .parse(2, nowhere)
                .unwrap_err()
                .reason
                .contains("needs at least one redirect URI")
        );
        let public =
            r#"{"type": "client", "id": "spa", "grants": ["client_credentials"], "created_at": 1}"#;
        assert!(
            import
                .parse(2, public)
                .unwrap_err()
                .reason
                .contains("a public client cannot use client_credentials")
        );
        let refusal = import
            .parse(2, r#"{"type": "client", "id": "a b", "created_at": 1}"#)
            .unwrap_err();
        assert!(
            refusal.reason.starts_with("client: client_id: "),
            "{refusal}"
        );

        let session = |grant: &str| {
            format!(
                r#"{{"type": "session", "id": "5f0c2a52-6a3b-4d5e-9f10-2b3c4d5e6f70", "account_id": 7, "username": "bob", "platform": "oauth", "token_style": "jwt", "created_at": 1700000000, "expires_at": 1900000000, "refresh_tokens": [{{"hash": "{secret}", "issued_at": 1700000000}}], "client": {grant}}}"#
            )
        };
        let Some(Parsed {
            record: Record::Stored(ImportRecord::Session(granted)),
            ..
        }) = import
            .parse(
                3,
                &session(
                    r#"{"client_id": "shop", "scope": "openid  email", "auth_time": 1700000000, "nonce": "n-0S6", "browser_session": "0a4f1c6e-1111-4222-8333-944455566677"}"#,
                ),
            )
            .unwrap()
        else {
            panic!("not a session");
        };
        let grant = granted.client.expect("the grant");
        assert_eq!(grant.session_id, granted.id, "the grant is the session's");
        assert_eq!(grant.scope, "openid email");
        assert_eq!(grant.nonce.as_deref(), Some("n-0S6"));
        for (grant, reason) in [
            (
                r#"{"client_id": "shop", "scope": "openid admin", "auth_time": 1}"#,
                "client.scope: unknown",
            ),
            (
                r#"{"client_id": "shop", "scope": "openid openid", "auth_time": 1}"#,
                "client.scope: a scope is given twice",
            ),
            (
                r#"{"client_id": "", "scope": "openid", "auth_time": 1}"#,
                "client.client_id: ",
            ),
            (
                r#"{"client_id": "shop", "scope": "openid", "auth_time": 1, "browser_session": "web"}"#,
                "client.browser_session: must be a session id",
            ),
            (
                r#"{"client_id": "shop", "scope": "openid", "auth_time": -5}"#,
                "client.auth_time: ",
            ),
            (
                r#"{"client_id": "shop", "scope": "openid", "auth_time": 1, "nonce": "a\nb"}"#,
                "client.nonce: ",
            ),
            (
                r#"{"client_id": "shop", "scope": "", "auth_time": 1}"#,
                "client.scope: at least one",
            ),
            (
                r#"{"client_id": "shop", "scope": "openid"}"#,
                "missing field `auth_time`",
            ),
        ] {
            let refusal = import.parse(3, &session(grant)).unwrap_err();
            assert!(refusal.reason.contains(reason), "{grant}: {refusal}");
        }
    }

    /// A field named twice on a line is refused: its last value must not
    /// win silently (an account imported active that a typo meant
    /// disabled).
    #[test]
    fn a_field_named_twice_is_refused() {
        let mut import = import();
        let refused = import
            .parse(
                2,
                r#"{"type": "account", "id": 7, "username": "ann", "status": "disabled", "created_at": 1700000000, "status": "active"}"#,
            )
            .unwrap_err();
        assert_eq!(refused.line, 2);
        assert_eq!(refused.reason, r#"the field "status" appears twice"#);
        let refused = import
            .parse(3, r#"{"type": "account", "type": "session"}"#)
            .unwrap_err();
        assert!(refused.reason.contains("appears twice"), "{refused}");
        let refused = import.parse(4, "[1, 2]").unwrap_err();
        assert_eq!(refused.reason, "not a JSON object");
    }
}
