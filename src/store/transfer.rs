//! Moving a deployment between backends (`sesame export`, `sesame import`).
//!
//! Export reads in keyset pages, so a deployment of any size is read with
//! bounded memory. Import writes one batch of records per transaction, each
//! record inside its own savepoint: a record the database refuses (a taken
//! username, a session whose account is missing) is rolled back and
//! reported alone, and the rest of the batch commits. The rules of what may
//! be imported live in the core (`core::transfer`); a store only writes and
//! reports what its constraints refuse.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::{
    Account, AccountId, AccountStatus, OAuthClient, OAuthSession, PasswordVerifiers, SessionId,
    StoreError, StoreResult, TokenHash, TokenStyle,
};
use crate::clock::UnixTime;

/// An account to import, validated by the core, with its id kept (so that
/// tokens' `sub` and sessions stay valid) and its unique keys derived.
#[derive(Debug, Clone)]
pub struct AccountRecord {
    /// Numeric id, kept from the source deployment.
    pub id: AccountId,
    /// Username as chosen.
    pub username: String,
    /// Folded username, unique.
    pub username_key: String,
    /// Email address.
    pub email: Option<String>,
    /// Folded email, unique.
    pub email_key: Option<String>,
    /// Whether the email was verified.
    pub email_verified: bool,
    /// Mobile number, unique.
    pub mobile: Option<String>,
    /// Whether the mobile was verified.
    pub mobile_verified: bool,
    /// Display name (may be empty).
    pub display_name: String,
    /// Avatar URL (may be empty).
    pub avatar_url: String,
    /// Whether the account may sign in.
    pub status: AccountStatus,
    /// Password verifiers, stored as they are.
    pub verifiers: PasswordVerifiers,
    /// When the password was last set.
    pub password_changed_at: UnixTime,
    /// Creation time.
    pub created_at: UnixTime,
    /// Last change to the account.
    pub updated_at: UnixTime,
    /// Last successful login.
    pub last_login_at: Option<UnixTime>,
    /// Address of the last successful login.
    pub last_login_ip: Option<String>,
    /// Successful logins.
    pub login_count: i64,
    /// Failed logins.
    pub failed_login_count: i64,
    /// Authenticated API calls counted so far.
    pub api_calls_count: i64,
    /// API-call quota; 0 means unlimited.
    pub max_api_calls: i64,
    /// The account's own quota period; `None`: the deployment's default.
    pub quota_period: Option<super::QuotaPeriod>,
    /// Start of the period `api_calls_count` belongs to.
    pub api_calls_period: UnixTime,
    /// Role names (each must exist).
    pub roles: Vec<String>,
    /// Free key/value attributes.
    pub profile: BTreeMap<String, String>,
}

/// One link of a session's refresh-token chain, by hash only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshLink {
    /// SHA-256 of the token text.
    pub hash: TokenHash,
    /// Issue time.
    pub issued_at: UnixTime,
    /// When it was exchanged for a successor, if it was.
    pub rotated_at: Option<UnixTime>,
    /// The salt its successor was derived from (for the reuse grace window).
    pub successor_salt: Option<Vec<u8>>,
}

/// Most live opaque access tokens exported per session (the newest).
pub const MAX_ACCESS_TOKENS: u32 = 64;

/// A live opaque access token of a session, by hash only: a contract's
/// opaque access token, or the sign-in page's cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessHandle {
    /// SHA-256 of the token text (in its namespace).
    pub hash: TokenHash,
    /// When it stops working.
    pub expires_at: UnixTime,
}

/// A live session with its refresh-token chain, as exported and imported.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    /// Session id (UUID).
    pub id: SessionId,
    /// Owner.
    pub account_id: AccountId,
    /// The owner's username, as written: the account at `account_id` must
    /// have it, so that a session never joins another account that happens
    /// to have the same id in the database it is imported into.
    pub username: String,
    /// Device platform.
    pub platform: String,
    /// User agent at login.
    pub user_agent: Option<String>,
    /// Client address at login.
    pub ip: Option<String>,
    /// Token style.
    pub token_style: TokenStyle,
    /// Login time.
    pub created_at: UnixTime,
    /// Absolute end of the session.
    pub expires_at: UnixTime,
    /// The chain, oldest first: rotated tokens (for reuse detection and the
    /// grace window) and the one live token.
    pub refresh_tokens: Vec<RefreshLink>,
    /// Its live opaque access tokens (none for JWT sessions but the
    /// sign-in page's).
    pub access_tokens: Vec<AccessHandle>,
    /// For a session signed in to an OAuth client: what the client was
    /// granted (its `session_id` is this session's).
    pub client: Option<OAuthSession>,
}

/// One record of an import batch.
#[derive(Debug, Clone)]
pub enum ImportRecord {
    /// An account with its roles and profile.
    Account(Box<AccountRecord>),
    /// A session with its refresh-token chain; its account must exist.
    Session(SessionRecord),
    /// An OAuth client's registration, its secret by hash only.
    Client(OAuthClient),
}

/// Why the store refused one record of a batch.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// A unique field is already held: `id`, `username`, `email`, `mobile`,
    /// `session id`, `refresh token hash` or `client_id`.
    #[error("{0} is already taken")]
    Taken(&'static str),
    /// The session's account is not in the database.
    #[error("account_id names no account in the database")]
    NoAccount,
    /// The account at the session's `account_id` has another username.
    #[error("account_id names an account with another username")]
    NotTheAccount,
    /// No account has the id of an update.
    #[error("no account with this id to update")]
    NotThere,
    /// The session's account line was not written by this import (refused,
    /// skipped, or not in the file): a session never joins an account its
    /// own import did not write.
    #[error("account_id names no account this import wrote")]
    NotWritten,
    /// The session's account line is disabled: disabling an account ends
    /// its sessions, so none is imported live.
    #[error("account_id names a disabled account, which has no live session")]
    AccountDisabled,
    /// The session's client line was not written by this import: a
    /// session never joins a client its own import did not write (another
    /// application may have that id here).
    #[error("client.client_id names no client this import wrote")]
    ClientNotWritten,
    /// The database refused the record for another reason.
    #[error("the database refused it: {0}")]
    Store(StoreError),
}

impl From<StoreError> for RecordError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict(field) => RecordError::Taken(field),
            other => RecordError::Store(other),
        }
    }
}

/// The outcome of each record of a batch, in order.
pub type RecordResults = Vec<Result<(), RecordError>>;

/// Whether replacing an account (its username, password hash and when the
/// password was set, as they were) with `account` ends its sessions: a new
/// username (another person's account now), another password (as a reset
/// ends them) or a disabling (as disabling ends them). A hash is another
/// password unless it is what Sesame replaced at a sign-in: an Argon2id
/// stored where the line holds another system's hash, with the same
/// `password_changed_at` (a sign-in keeps it), so that an import run again
/// over the same file ends nobody's sessions.
pub(crate) fn ends_sessions(
    account: &AccountRecord,
    username: &str,
    password_hash: &str,
    password_changed_at: UnixTime,
) -> bool {
    let is_argon2 = |hash: &str| hash.starts_with("$argon2");
    let rehashed = is_argon2(password_hash)
        && !is_argon2(&account.verifiers.password_hash)
        && account.password_changed_at == password_changed_at;
    account.username != username
        || (account.verifiers.password_hash != password_hash && !rehashed)
        || account.status == AccountStatus::Disabled
}

/// Whether replacing an account whose status was `status` with `account`
/// makes the guesses counted against it moot, so that its failure budgets
/// are cleared, as a reset, a disabling or an unlock clears them: its
/// sessions end ([`ends_sessions`]), or the line lifts a lock.
pub(crate) fn clears_budgets(account: &AccountRecord, ends_sessions: bool, status: &str) -> bool {
    ends_sessions
        || (status == AccountStatus::Locked.as_str() && account.status == AccountStatus::Active)
}

/// What [`TransferStore::update_accounts`] did beyond the accounts' rows.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UpdateEffects {
    /// The live sessions it ended.
    pub ended: Vec<SessionId>,
    /// The accounts whose failure budgets are to be cleared
    /// ([`clears_budgets`]).
    pub fresh_budgets: Vec<AccountId>,
}

/// Reading a whole deployment out and writing one in.
#[async_trait]
pub trait TransferStore: Send + Sync {
    /// Accounts in id order, `limit` at a time after `after_id`, with their
    /// verifiers, counters, roles and profile.
    async fn export_accounts(&self, after_id: AccountId, limit: u32) -> StoreResult<Vec<Account>>;
    /// Sessions neither revoked nor expired at `now`, in id order, `limit`
    /// at a time after `after_id`, each with the newest `max_chain` links of
    /// its refresh-token chain (always including the live one), oldest
    /// first, its live opaque access tokens, and for a session of an OAuth
    /// client, its grant. Only the sessions of OAuth clients with
    /// `of_clients`, only the others without (an export writes the others
    /// first: a client's session names the browser session it came from).
    async fn export_sessions(
        &self,
        after_id: &str,
        limit: u32,
        now: UnixTime,
        max_chain: u32,
        of_clients: bool,
    ) -> StoreResult<Vec<SessionRecord>>;
    /// Writes the records in one transaction, each in its own savepoint: a
    /// refused record is rolled back alone. Returns one result per record;
    /// an error of the whole batch (the commit failed) is the outer error,
    /// and then nothing of the batch was written.
    async fn import_batch(&self, records: Vec<ImportRecord>) -> StoreResult<RecordResults>;
    /// What [`TransferStore::import_batch`] would answer for each record
    /// against the database as it is, without writing: whether an id or
    /// unique field is taken (a client's id too), whether a session's
    /// account exists. Records of
    /// the same batch are not checked against each other.
    async fn check_batch(&self, records: &[ImportRecord]) -> StoreResult<RecordResults>;
    /// Replaces accounts that are already there (same id) with the records,
    /// roles and profile included, in one transaction with a savepoint per
    /// record: a username, email or mobile held by another account refuses
    /// the record, and so does a change that would leave no administrator.
    /// A record that gives its id another username is another person: the
    /// account's live sessions end in the same transaction (after its row
    /// is locked, so that no login slips in between), and are answered
    /// with the accounts whose failure budgets no longer apply.
    async fn update_accounts(
        &self,
        records: &[AccountRecord],
        now: UnixTime,
    ) -> StoreResult<(RecordResults, UpdateEffects)>;
    /// What [`TransferStore::update_accounts`] would answer, without writing.
    async fn check_updates(&self, records: &[AccountRecord]) -> StoreResult<RecordResults>;
}
