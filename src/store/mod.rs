//! Storage behind traits.
//!
//! The core reads and writes accounts, sessions, refresh tokens and signing
//! keys only through [`Store`]. Each backend (SQLite now, PostgreSQL next)
//! implements it, keeps its SQL to itself, and maps its own constraint
//! violations to [`StoreError::Conflict`]. Operations that must be atomic
//! (a single-session login, a refresh rotation) are one method each, so the
//! backend can use its own transactions and locks.

#[cfg(test)]
mod conformance;
pub mod metered;
pub mod postgres;
pub mod records;
pub mod sqlite;
pub mod transfer;

use async_trait::async_trait;

pub use records::*;
pub use transfer::TransferStore;

use crate::clock::UnixTime;

/// How to reach and run the database.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseSettings {
    /// `sqlite://PATH` or `postgres://…` (`postgresql://` too).
    pub url: String,
    /// Run pending migrations at start (otherwise `sesame migrate` does, and
    /// start refuses a database that is behind).
    pub auto_migrate: bool,
    /// Most connections one node keeps (PostgreSQL).
    pub pool_size: u32,
    /// Longest wait for a new connection, or for a free one from the pool.
    pub connect_timeout: std::time::Duration,
    /// Longest a statement may run before the server cancels it (PostgreSQL).
    pub statement_timeout: std::time::Duration,
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &crate::redact::url(&self.url))
            .field("auto_migrate", &self.auto_migrate)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

impl DatabaseSettings {
    /// Defaults for a URL.
    pub fn for_url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            auto_migrate: true,
            pool_size: 16,
            connect_timeout: std::time::Duration::from_secs(5),
            statement_timeout: std::time::Duration::from_secs(10),
        }
    }

    /// Whether the URL names a PostgreSQL server.
    pub fn is_postgres(&self) -> bool {
        self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")
    }
}

/// A storage failure. The core turns `Conflict` into a client error and
/// everything else into an internal one whose detail is only logged.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A unique field (`username`, `email`, `mobile`) is already held.
    #[error("{0} is already taken")]
    Conflict(&'static str),
    /// The database failed.
    #[error("database error: {0}")]
    Database(String),
    /// The database cannot be reached or is overloaded right now (connection
    /// refused or lost, no free connection, statement timed out): worth a retry.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A stored value could not be read back (a bug or a hand-edited row).
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    /// The change would lower the [`AdminStanding`] (leave no active
    /// administrator, or none at all); nothing was changed.
    #[error("the change would leave no active administrator")]
    LastAdministrator,
    /// The change would leave more than `most` entries in a bounded list
    /// (`field`); nothing was changed.
    #[error("{field}: at most {most}")]
    TooMany {
        /// The list.
        field: &'static str,
        /// Its bound.
        most: usize,
    },
    /// The database was never set up (opened with [`Migrate::Inspect`]):
    /// no file, or no schema in it.
    #[error("the database has no Sesame schema yet")]
    NoSchema,
}

/// Whether two lists hold the same roles, in any order.
pub(crate) fn same_roles(a: &[String], b: &[String]) -> bool {
    let set = |roles: &[String]| {
        roles
            .iter()
            .cloned()
            .collect::<std::collections::BTreeSet<String>>()
    };
    set(a) == set(b)
}

/// The permission of administrators: the admin API, the manager face.
pub const ADMIN_PERMISSION: &str = "admin";

/// The error of a database whose schema is behind while automatic migration is off.
/// What opening a store does about the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Migrate {
    /// Applies the pending migrations (a server, `sesame migrate`).
    Apply,
    /// Refuses a schema that is behind (`database.auto_migrate = false`).
    Check,
    /// Sets up a new database (no migration applied yet), and refuses one
    /// that is behind: an operator's command from a newer binary must not
    /// upgrade a database in service, where nodes of the earlier version
    /// would then refuse to restart.
    Setup,
    /// Changes nothing, not even a new database's schema (a dry run): a
    /// database never set up is [`StoreError::NoSchema`], and one whose
    /// schema is behind is refused.
    Inspect,
}

impl Migrate {
    /// Whether the migrations after `applied` are to be applied (else a
    /// schema behind is refused with [`behind`] or [`behind_for_commands`]).
    pub(crate) fn applies(self, applied: usize) -> bool {
        match self {
            Migrate::Apply => true,
            Migrate::Check | Migrate::Inspect => false,
            Migrate::Setup => applied == 0,
        }
    }

    /// The refusal of a schema at `applied`, behind `latest`.
    pub(crate) fn behind(self, applied: usize, latest: usize) -> StoreError {
        match self {
            Migrate::Setup => StoreError::Database(format!(
                "the database schema is at version {applied} and this Sesame needs {latest}; \
                 an operator's command does not upgrade a database in service (servers of the \
                 earlier version would refuse to restart on it): run `sesame migrate`, or start \
                 a server of this version, first"
            )),
            Migrate::Inspect if applied == 0 => StoreError::NoSchema,
            Migrate::Inspect => StoreError::Database(format!(
                "the database schema is at version {applied} and this Sesame needs {latest}; \
                 this command changes nothing, so it cannot read it: run `sesame migrate` first"
            )),
            _ => behind(applied, latest),
        }
    }
}

pub(crate) fn behind(applied: usize, latest: usize) -> StoreError {
    StoreError::Database(format!(
        "the database schema is at version {applied} and this Sesame needs {latest}: \
         run `sesame migrate` (database.auto_migrate is off)"
    ))
}

/// Shorthand for store results.
pub type StoreResult<T> = Result<T, StoreError>;

/// Accounts, their roles and profile attributes.
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Inserts an account with its roles; `Conflict` names the taken field.
    async fn create_account(&self, account: NewAccount) -> StoreResult<Account>;
    /// Finds the account whose username key, email key or mobile matches,
    /// preferring a username match, then email, then mobile.
    async fn find_account_by_login(
        &self,
        key: &str,
        mobile: Option<&str>,
    ) -> StoreResult<Option<Account>>;
    /// [`AccountStore::find_account_by_login`], with whether the account
    /// knows this client: by the hash of its device token (`device`), and
    /// by its `address`. One query where the backend allows.
    async fn find_account_for_login(
        &self,
        key: &str,
        mobile: Option<&str>,
        device: Option<&str>,
        address: Option<&str>,
    ) -> StoreResult<Option<LoginCandidate>> {
        let Some(account) = self.find_account_by_login(key, mobile).await? else {
            return Ok(None);
        };
        let known_device = match device {
            Some(device) => {
                self.is_known_client(account.id, ClientKind::Device, device)
                    .await?
            }
            None => false,
        };
        let known_address = match address {
            Some(address) if !known_device => {
                self.is_known_client(account.id, ClientKind::Address, address)
                    .await?
            }
            _ => false,
        };
        Ok(Some(LoginCandidate {
            account,
            known_device,
            known_address,
        }))
    }
    /// Finds an account by its folded username key.
    async fn find_account_by_username(&self, username_key: &str) -> StoreResult<Option<Account>>;
    /// Reads an account by id.
    async fn get_account(&self, id: AccountId) -> StoreResult<Option<Account>>;
    /// Lists accounts in id order, `limit` at a time after `after_id`: a
    /// search without filters.
    async fn list_accounts(&self, after_id: AccountId, limit: u32) -> StoreResult<Vec<Account>> {
        self.search_accounts(&AccountQuery {
            after_id,
            limit,
            ..AccountQuery::default()
        })
        .await
    }
    /// Accounts matching `query`, in id order.
    async fn search_accounts(&self, query: &AccountQuery) -> StoreResult<Vec<Account>>;
    /// Applies every part of `change` in one transaction, or none of them
    /// (see [`AccountChange`] for what refuses one); a disabling revokes
    /// the account's live sessions in the same transaction (reason
    /// `disabled`). The sessions it ended, or `None`, with nothing written,
    /// if there is no such account.
    async fn change_account(
        &self,
        id: AccountId,
        change: &AccountChange,
        now: UnixTime,
    ) -> StoreResult<Option<Vec<SessionId>>>;
    /// Changes an account's email and/or mobile; `Conflict` names a field
    /// another account holds; `false` if there is no such account.
    async fn set_contact(
        &self,
        id: AccountId,
        change: &ContactChange,
        now: UnixTime,
    ) -> StoreResult<bool> {
        let change = AccountChange {
            contact: change.clone(),
            ..AccountChange::default()
        };
        Ok(self.change_account(id, &change, now).await?.is_some())
    }
    /// Sets an account's API-call count back to zero, in a period that
    /// starts `now` (so that calls counted before, flushed later, are dropped).
    async fn reset_api_calls(&self, id: AccountId, now: UnixTime) -> StoreResult<bool>;
    /// How many accounts hold `role`.
    async fn count_accounts_with_role(&self, role: &str) -> StoreResult<i64>;
    /// Accounts whose password hash is not Sesame's own Argon2 PHC string
    /// (imported from another system and not replaced yet): id, hash and
    /// when the password was last set, in id order after `after_id`.
    async fn foreign_hashes(
        &self,
        after_id: AccountId,
        limit: u32,
    ) -> StoreResult<Vec<(AccountId, String, UnixTime)>>;
    /// The names of all defined roles.
    async fn role_names(&self) -> StoreResult<Vec<String>>;
    /// Applies a profile change; `false` if there is no such account.
    async fn update_profile(
        &self,
        id: AccountId,
        patch: &ProfilePatch,
        now: UnixTime,
    ) -> StoreResult<bool> {
        let change = AccountChange {
            profile: Some(patch.clone()),
            ..AccountChange::default()
        };
        Ok(self.change_account(id, &change, now).await?.is_some())
    }
    /// Replaces the password verifiers. `changed` says whether the password
    /// itself changed (its time is then recorded; false for new verifiers
    /// of the same password: a parameter upgrade, an imported hash expired).
    /// With `replacing: Some(hash)` they are written only if the stored
    /// password hash is still `hash`, the one the caller checked or read: a
    /// password changed meanwhile, on any node, is never overwritten.
    /// Whether they were written.
    async fn set_password(
        &self,
        id: AccountId,
        verifiers: &PasswordVerifiers,
        changed: bool,
        replacing: Option<&str>,
        now: UnixTime,
    ) -> StoreResult<bool>;
    /// A new password that ends the account's sessions: the verifiers (as
    /// [`AccountStore::set_password`] with `changed`) and, in the same
    /// transaction, every live session of the account but `keep.session`
    /// revoked with `reason`, so that no failure can leave the new password
    /// with the old sessions; the known clients replaced by `keep`'s, the
    /// consecutive failures cleared and a lockout lifted. `None`, with
    /// nothing written, if the stored hash is no longer `replacing` (or
    /// there is no such account); else the sessions ended.
    async fn set_password_ending_sessions(
        &self,
        id: AccountId,
        verifiers: &PasswordVerifiers,
        replacing: Option<&str>,
        keep: &Kept,
        reason: &str,
        now: UnixTime,
    ) -> StoreResult<Option<Vec<SessionId>>>;
    /// Sets the account status; setting `Active` also clears the
    /// consecutive failures. `false` if there is no such account.
    async fn set_status(
        &self,
        id: AccountId,
        status: AccountStatus,
        now: UnixTime,
    ) -> StoreResult<bool> {
        let change = AccountChange {
            status: Some(status),
            ..AccountChange::default()
        };
        Ok(self.change_account(id, &change, now).await?.is_some())
    }
    /// Locks an active account (`locked`), or makes an account that is not
    /// disabled active again and clears its consecutive failures (`!locked`),
    /// in one conditional update: a change made since the caller read the
    /// account (an administrator disabling it, on any node) is never
    /// overwritten. Whether the account changed.
    async fn set_locked(&self, id: AccountId, locked: bool, now: UnixTime) -> StoreResult<bool>;
    /// Deletes an account and everything that hangs off it; false if absent.
    async fn delete_account(&self, id: AccountId) -> StoreResult<bool>;
    /// Records a failed login against a known account; `from_unknown_client`
    /// failures also count towards lockout. Returns the consecutive count.
    async fn record_login_failure(
        &self,
        id: AccountId,
        from_unknown_client: bool,
    ) -> StoreResult<i64>;
    /// Whether the account has seen this client sign in before.
    async fn is_known_client(
        &self,
        id: AccountId,
        kind: ClientKind,
        value: &str,
    ) -> StoreResult<bool>;

    /// The account's persisted API-call count and quota.
    async fn api_usage(&self, id: AccountId) -> StoreResult<Option<ApiUsage>>;
    /// Adds batched API-call counts `(account, calls, period start)`, in one
    /// transaction; a stored count of an earlier period starts over, and
    /// calls of an earlier period than the stored one are dropped. Returns
    /// the accounts' new totals (with their quotas): on a shared database these
    /// include every node's calls, which keeps a quota's overshoot bounded
    /// across the cluster.
    async fn add_api_calls(
        &self,
        counts: &[(AccountId, i64, UnixTime)],
    ) -> StoreResult<Vec<(AccountId, ApiUsage)>>;
    /// Sets the API-call quota (0: unlimited); `false` if there is no such
    /// account.
    async fn set_max_api_calls(&self, id: AccountId, max: i64, now: UnixTime) -> StoreResult<bool> {
        let change = AccountChange {
            max_api_calls: Some(max),
            ..AccountChange::default()
        };
        Ok(self.change_account(id, &change, now).await?.is_some())
    }
    /// Replaces an account's roles; `false` if there is no such account,
    /// `Conflict("roles")` if a role does not exist.
    async fn set_account_roles(
        &self,
        id: AccountId,
        roles: &[String],
        now: UnixTime,
    ) -> StoreResult<bool> {
        let change = AccountChange {
            roles: Some(roles.to_vec()),
            ..AccountChange::default()
        };
        Ok(self.change_account(id, &change, now).await?.is_some())
    }
    /// Sets an account's own quota period (`None`: the deployment's
    /// default); `false` if there is no such account.
    async fn set_quota_period(
        &self,
        id: AccountId,
        period: Option<QuotaPeriod>,
        now: UnixTime,
    ) -> StoreResult<bool> {
        let change = AccountChange {
            quota_period: Some(period),
            ..AccountChange::default()
        };
        Ok(self.change_account(id, &change, now).await?.is_some())
    }
}

/// Sessions and their refresh-token chains.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Records a successful login and opens its session, in one transaction:
    /// the account's login counters, time and address (and a reset of its
    /// consecutive failures), the clients to remember, and the session with
    /// its first refresh token. With `replace_platform`, every live session
    /// of the account on the same platform is revoked too; their ids are
    /// returned. `None`, with nothing written, when the account has been
    /// disabled or deleted since the caller read it: the check and the
    /// writes are one transaction, so a disabling either comes first and is
    /// seen, or comes after and revokes the new session.
    async fn record_login(
        &self,
        login: &LoginRecord,
        session: &NewSession,
        refresh: &NewRefreshToken,
        replace_platform: bool,
    ) -> StoreResult<Option<Vec<SessionId>>>;
    /// Reads a session (live or not) with its account's status.
    async fn get_session(&self, id: &SessionId) -> StoreResult<Option<Session>>;

    /// How many sessions are neither ended nor expired at `now`, of every
    /// account (the `sesame_live_sessions` gauge).
    async fn count_live_sessions(&self, now: UnixTime) -> StoreResult<i64>;
    /// The account's sessions that are neither revoked nor expired at `now`.
    async fn list_live_sessions(
        &self,
        account_id: AccountId,
        now: UnixTime,
    ) -> StoreResult<Vec<Session>>;
    /// One page of those: in order of creation (then id), the ones after
    /// `after`, at most `limit`.
    async fn page_live_sessions(
        &self,
        account_id: AccountId,
        now: UnixTime,
        after: Option<&SessionCursor>,
        limit: u32,
    ) -> StoreResult<Vec<Session>>;
    /// Revokes one session; false if it was absent or already revoked.
    async fn revoke_session(
        &self,
        id: &SessionId,
        now: UnixTime,
        reason: &str,
    ) -> StoreResult<bool>;
    /// Revokes every live session of an account except `keep`; returns their ids.
    async fn revoke_account_sessions(
        &self,
        account_id: AccountId,
        keep: Option<&SessionId>,
        now: UnixTime,
        reason: &str,
    ) -> StoreResult<Vec<SessionId>>;
    /// Finds a refresh token by the SHA-256 of its text.
    async fn find_refresh_token(&self, hash: &TokenHash) -> StoreResult<Option<RefreshToken>>;
    /// Finds a refresh token with its session, in one read.
    async fn find_refresh_token_with_session(
        &self,
        hash: &TokenHash,
    ) -> StoreResult<Option<(RefreshToken, Session)>>;
    /// Makes `hash` the session's one opaque access token, deleting any
    /// other (concurrent calls for one session leave exactly one; the same
    /// hash again is kept, its expiry renewed): whether another was
    /// deleted, or `None` for a session that no longer exists (which gets
    /// none).
    async fn replace_access_token(
        &self,
        session_id: &SessionId,
        hash: &TokenHash,
        expires_at: UnixTime,
    ) -> StoreResult<Option<bool>>;
    /// Finds an opaque access token by hash.
    async fn find_access_token(&self, hash: &TokenHash) -> StoreResult<Option<OpaqueAccessToken>>;
    /// Marks `old` rotated (only if it is not already) and inserts its
    /// successor, in one transaction; false if another request rotated it first.
    async fn rotate_refresh_token(
        &self,
        old: &TokenHash,
        successor_salt: &[u8],
        successor: &NewRefreshToken,
        now: UnixTime,
    ) -> StoreResult<bool>;
    /// Finds a refresh token with its session and, when the token is not
    /// rotated yet and the session is live at `now`, rotates it in the same
    /// step (as [`SessionStore::rotate_refresh_token`] would, with the
    /// successor hash of the session's token style). Returns the token as it
    /// was found, its session, and whether this call rotated it. One round
    /// trip where the backend allows; the default takes two.
    async fn find_and_rotate_refresh_token(
        &self,
        hash: &TokenHash,
        successor_salt: &[u8],
        successors: &SuccessorHashes,
        now: UnixTime,
    ) -> StoreResult<Option<(RefreshToken, Session, bool)>> {
        let Some((record, session)) = self.find_refresh_token_with_session(hash).await? else {
            return Ok(None);
        };
        let rotated = record.rotated_at.is_none()
            && session.is_live(now)
            && self
                .rotate_refresh_token(
                    hash,
                    successor_salt,
                    &NewRefreshToken {
                        hash: successors.for_style(session.token_style),
                        session_id: session.id.clone(),
                        issued_at: now,
                    },
                    now,
                )
                .await?;
        Ok(Some((record, session, rotated)))
    }
    /// Deletes at most `batch` rows of each kind housekeeping removes:
    /// sessions that ended (revoked or expired) before `ended_before`, with
    /// everything hanging off them; refresh tokens rotated before
    /// `spent_before`; opaque access tokens expired before `expired_before`.
    /// Idempotent, so several nodes may run it at once.
    async fn purge(&self, cutoffs: &PurgeCutoffs, batch: u32) -> StoreResult<Purged>;
}

/// The audit log.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends events, in one transaction.
    async fn insert_audit_events(&self, events: &[AuditEvent]) -> StoreResult<()>;
    /// The newest events first, optionally of one account.
    async fn list_audit_events(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEvent>>;
    /// Deletes at most `batch` events older than `before`; returns how
    /// many. Safe to run on many nodes at once (rows another node is
    /// deleting are skipped).
    async fn purge_audit_events(&self, before: UnixTime, batch: u32) -> StoreResult<u64>;
}

/// Token signing keys.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Every stored key, newest first.
    async fn signing_keys(&self) -> StoreResult<Vec<SigningKey>>;
    /// Stores a new key.
    async fn insert_signing_key(&self, key: &SigningKey) -> StoreResult<()>;
    /// Deletes a key (retired: every token it signed has expired); false if there was none.
    async fn delete_signing_key(&self, kid: &str) -> StoreResult<bool>;
    /// The deployment's secret `name`, which every node reads from here:
    /// the one stored, else `fresh`, stored now (made at `now`). Of nodes
    /// asking at once on a new database, the first to store wins and all
    /// get its value. A secret that exists is only read.
    async fn deployment_secret(
        &self,
        name: &str,
        fresh: &[u8],
        now: UnixTime,
    ) -> StoreResult<Vec<u8>>;
}

/// How well a deployment is administered, as the stores count it: 2 when
/// an active account holds the `admin` permission, 1 when only locked ones
/// do, 0 when none (not disabled) does. (Documentation: the stores compute
/// it in SQL as an integer.)
pub type AdminStanding = i64;

/// Roles (named sets of permissions) and who holds them.
///
/// Every change here, and `change_account` and `delete_account`, keeps one
/// invariant: it may not lower the deployment's [`AdminStanding`] (an
/// active account holding the `admin` permission, else a locked one, else
/// none), or it is refused with [`StoreError::LastAdministrator`] and
/// nothing is written. So with one active administrator left, the others
/// locked (failed guesses lock an account, and a lockout may not fail a
/// login), that one cannot demote, disable or delete itself; with only
/// locked ones, the last is still kept.
/// The check and the change are one transaction, serialized with every
/// other such change (SQLite: the one writer; PostgreSQL: an advisory
/// transaction lock), so two administrators disabling each other at once
/// cannot both succeed.
#[async_trait]
pub trait RoleStore: Send + Sync {
    /// Every role with its permissions, by name.
    async fn list_roles(&self) -> StoreResult<Vec<Role>>;
    /// Creates a role; `Conflict("name")` if the name is taken.
    async fn create_role(&self, role: &Role) -> StoreResult<()>;
    /// Changes a role's description and/or permissions; `false` if there is
    /// no such role.
    async fn update_role(&self, name: &str, change: &RoleChange) -> StoreResult<bool>;
    /// Deletes a role, which its holders lose; `false` if there is no such role.
    async fn delete_role(&self, name: &str) -> StoreResult<bool>;
}

/// OAuth 2.0 clients, authorization codes and the sessions opened for clients.
#[async_trait]
pub trait OAuthStore: Send + Sync {
    /// Every registered client, by id.
    async fn list_clients(&self) -> StoreResult<Vec<OAuthClient>>;
    /// One client.
    async fn get_client(&self, id: &str) -> StoreResult<Option<OAuthClient>>;
    /// Registers a client; [`StoreError::Conflict`] (`client_id`) if the id is taken.
    async fn create_client(&self, client: &OAuthClient) -> StoreResult<()>;
    /// Removes a client; false if there was none.
    async fn delete_client(&self, id: &str) -> StoreResult<bool>;
    /// Replaces a client's secret hash; false if there is no such client.
    async fn set_client_secret(
        &self,
        id: &str,
        secret_hash: Option<&TokenHash>,
    ) -> StoreResult<bool>;
    /// Stores a new code (and forgets codes that expired a day ago).
    async fn insert_code(&self, code: &AuthorizationCode, now: UnixTime) -> StoreResult<()>;
    /// A code that is neither spent nor expired.
    async fn find_code(
        &self,
        hash: &TokenHash,
        now: UnixTime,
    ) -> StoreResult<Option<AuthorizationCode>>;
    /// Spends a code and opens its session in one transaction: the session
    /// (for the code's account), its first refresh token and what it was
    /// granted. A code spent before is not spent again; the answer names the
    /// session its first use opened.
    async fn redeem_code(
        &self,
        hash: &TokenHash,
        session: &NewSession,
        refresh: &NewRefreshToken,
        now: UnixTime,
    ) -> StoreResult<Redemption>;
    /// Records what a session (opened by a login) was granted to a client.
    async fn insert_oauth_session(&self, grant: &OAuthSession) -> StoreResult<()>;
    /// What a session was granted, if it was opened for a client.
    async fn get_oauth_session(&self, session_id: &SessionId) -> StoreResult<Option<OAuthSession>>;
    /// Live sessions opened for clients from a browser session.
    async fn sessions_from_browser(
        &self,
        browser_session: &SessionId,
    ) -> StoreResult<Vec<SessionId>>;
    /// Live sessions opened for a client.
    async fn sessions_of_client(&self, client_id: &str) -> StoreResult<Vec<SessionId>>;
    /// Hands the sessions opened from browser session `from` to browser
    /// session `to` (the same account signed in again in that browser), so
    /// that a logout there ends them too.
    async fn move_browser_children(&self, from: &SessionId, to: &SessionId) -> StoreResult<()>;
}

/// Everything Sesame persists.
pub trait Store:
    AccountStore + SessionStore + KeyStore + AuditStore + TransferStore + RoleStore + OAuthStore
{
    /// The PostgreSQL store behind this one, if it is one (for `LISTEN/NOTIFY`).
    fn postgres(&self) -> Option<&postgres::PostgresStore> {
        None
    }

    /// Gives the store the core's clock, by which refresh-token rotations
    /// are dated when they are written (a rotation queued behind a stall
    /// would otherwise be dated before it happened).
    fn set_clock(&self, clock: std::sync::Arc<dyn crate::clock::Clock>);
}

impl Store for sqlite::SqliteStore {
    fn set_clock(&self, clock: std::sync::Arc<dyn crate::clock::Clock>) {
        sqlite::SqliteStore::set_clock(self, clock);
    }
}

impl Store for postgres::PostgresStore {
    fn postgres(&self) -> Option<&postgres::PostgresStore> {
        Some(self)
    }

    fn set_clock(&self, clock: std::sync::Arc<dyn crate::clock::Clock>) {
        postgres::PostgresStore::set_clock(self, clock);
    }
}
