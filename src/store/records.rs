//! The records exchanged between the core and the stores: plain data, no SQL.

use std::collections::BTreeMap;

use crate::clock::UnixTime;

/// An account's numeric id (the contracts show integer ids).
pub type AccountId = i64;

/// A session id: a UUID, also the handle a client can use to end the session.
pub type SessionId = String;

/// Where a page of an account's sessions ended: the last one's creation
/// time and id (sessions are listed in that order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionCursor {
    /// The last session's `created_at`.
    pub created_at: UnixTime,
    /// The last session's id.
    pub id: SessionId,
}

/// The SHA-256 of a token's text; tokens themselves are never stored.
pub type TokenHash = [u8; 32];

/// Whether an account may sign in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountStatus {
    /// Normal.
    Active,
    /// Switched off by an operator.
    Disabled,
    /// Locked by brute-force protection until unlocked.
    Locked,
}

impl AccountStatus {
    /// The stored and displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Disabled => "disabled",
            AccountStatus::Locked => "locked",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(AccountStatus::Active),
            "disabled" => Some(AccountStatus::Disabled),
            "locked" => Some(AccountStatus::Locked),
            _ => None,
        }
    }
}

/// The slow verifiers kept for an account's password.
#[derive(Clone)]
pub struct PasswordVerifiers {
    /// Argon2id PHC string over the (NFC) password.
    pub password_hash: String,
    /// Argon2id PHC string over the lowercase MD5 hex of the password, for the
    /// users-actions contract; absent until first written.
    pub md5_verifier: Option<String>,
}

impl std::fmt::Debug for PasswordVerifiers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordVerifiers(..)")
    }
}

/// An account as stored, with its roles, permissions and profile.
#[derive(Debug, Clone)]
pub struct Account {
    /// Numeric id.
    pub id: AccountId,
    /// Username as chosen.
    pub username: String,
    /// Email address, if any.
    pub email: Option<String>,
    /// Whether the email was verified.
    pub email_verified: bool,
    /// Mobile number, if any.
    pub mobile: Option<String>,
    /// Whether the mobile was verified.
    pub mobile_verified: bool,
    /// Display name (may be empty).
    pub display_name: String,
    /// Avatar URL (may be empty).
    pub avatar_url: String,
    /// Whether the account may sign in.
    pub status: AccountStatus,
    /// Password verifiers.
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
    /// Failures from unknown clients since the last success (drives lockout).
    pub consecutive_failures: i64,
    /// Authenticated API calls counted in the period starting at
    /// `api_calls_period` (as stored: the core shows the current period's).
    pub api_calls_count: i64,
    /// API-call quota; 0 means unlimited.
    pub max_api_calls: i64,
    /// The account's own quota period; `None`: the deployment's default.
    pub quota_period: Option<QuotaPeriod>,
    /// Start of the period `api_calls_count` belongs to.
    pub api_calls_period: UnixTime,
    /// Role names.
    pub roles: Vec<String>,
    /// Union of the roles' permissions, sorted.
    pub permissions: Vec<String>,
    /// Free key/value attributes (the contracts' extra profile fields).
    pub profile: BTreeMap<String, String>,
}

/// A new account to insert.
#[derive(Debug, Clone)]
pub struct NewAccount {
    /// Username as chosen.
    pub username: String,
    /// Folded username, unique.
    pub username_key: String,
    /// Email address.
    pub email: Option<String>,
    /// Folded email, unique.
    pub email_key: Option<String>,
    /// Mobile number, unique.
    pub mobile: Option<String>,
    /// Display name.
    pub display_name: String,
    /// Password verifiers.
    pub verifiers: PasswordVerifiers,
    /// Roles to grant (must exist).
    pub roles: Vec<String>,
    /// API-call quota; 0 means unlimited.
    pub max_api_calls: i64,
    /// The account's own quota period; `None`: the deployment's default.
    pub quota_period: Option<QuotaPeriod>,
    /// Profile attributes.
    pub profile: BTreeMap<String, String>,
    /// Creation time.
    pub created_at: UnixTime,
}

/// A change to the user-editable profile; `None` leaves a field alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfilePatch {
    /// New display name.
    pub display_name: Option<String>,
    /// New avatar URL.
    pub avatar_url: Option<String>,
    /// Attributes to set (`Some`) or remove (`None`).
    pub attributes: BTreeMap<String, Option<String>>,
}

/// How a session's tokens look on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStyle {
    /// JWT access tokens and 256-bit base64url refresh tokens.
    Jwt,
    /// 32-hex opaque access and refresh tokens (the careyshop contract).
    Opaque,
}

impl TokenStyle {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenStyle::Jwt => "jwt",
            TokenStyle::Opaque => "opaque",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "jwt" => Some(TokenStyle::Jwt),
            "opaque" => Some(TokenStyle::Opaque),
            _ => None,
        }
    }
}

/// A login session on one device.
#[derive(Debug, Clone)]
pub struct Session {
    /// Session id (UUID).
    pub id: SessionId,
    /// Owner.
    pub account_id: AccountId,
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
    /// Last refresh.
    pub last_used_at: UnixTime,
    /// Absolute end of the session (the refresh lifetime; rotation does not extend it).
    pub expires_at: UnixTime,
    /// When it was ended, if it was.
    pub revoked_at: Option<UnixTime>,
    /// Whether the owning account may use its sessions: not disabled. A
    /// lockout refuses sign-ins from unknown clients only; the owner's
    /// sessions go on (failures from elsewhere must not sign them out).
    pub account_active: bool,
}

impl Session {
    /// Whether the session can still be used at `now`.
    pub fn is_live(&self, now: UnixTime) -> bool {
        self.revoked_at.is_none() && self.account_active && now < self.expires_at
    }
}

/// What a new password leaves of an account: one session (the one that
/// changed it) and the clients it is known by afterwards (that session's
/// device token and address); nothing for an operator's reset.
#[derive(Debug, Clone, Default)]
pub struct Kept {
    /// The session not ended.
    pub session: Option<SessionId>,
    /// The one device token (its hash, hex) still known.
    pub device: Option<String>,
    /// The one address still known.
    pub address: Option<String>,
}

/// The bookkeeping of a successful login, stored with its new session.
#[derive(Clone)]
pub struct LoginRecord {
    /// The account.
    pub account_id: AccountId,
    /// When.
    pub at: UnixTime,
    /// Client address.
    pub ip: Option<String>,
    /// Clients to remember as known to the account.
    pub clients: Vec<(ClientKind, String)>,
    /// How many of each kind to keep.
    pub keep: u32,
    /// The password hash the login was checked against: if the account's
    /// is another by now (a password change or reset, on any node, while
    /// this one was hashing), the login opens no session.
    pub password_hash: Option<String>,
}

impl std::fmt::Debug for LoginRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRecord")
            .field("account_id", &self.account_id)
            .field("at", &self.at)
            .field("ip", &self.ip)
            .field("keep", &self.keep)
            .field(
                "password_hash",
                &crate::redact::secret(self.password_hash.as_deref()),
            )
            .finish_non_exhaustive()
    }
}

impl LoginRecord {
    /// The client of a kind this login came from, if it is to be remembered.
    pub fn client(&self, wanted: ClientKind) -> Option<&str> {
        self.clients
            .iter()
            .find(|(kind, _)| *kind == wanted)
            .map(|(_, value)| value.as_str())
    }
}

/// A session to create.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// Session id (UUID).
    pub id: SessionId,
    /// Owner.
    pub account_id: AccountId,
    /// Device platform.
    pub platform: String,
    /// User agent.
    pub user_agent: Option<String>,
    /// Client address.
    pub ip: Option<String>,
    /// Token style.
    pub token_style: TokenStyle,
    /// Login time.
    pub created_at: UnixTime,
    /// Absolute end.
    pub expires_at: UnixTime,
}

/// A stored refresh token (by hash).
#[derive(Debug, Clone)]
pub struct RefreshToken {
    /// SHA-256 of the token text.
    pub hash: TokenHash,
    /// Its session.
    pub session_id: SessionId,
    /// Issue time.
    pub issued_at: UnixTime,
    /// When it was exchanged for a successor, if it was.
    pub rotated_at: Option<UnixTime>,
    /// Random salt from which the successor was derived, so a retry within the
    /// grace window can be handed the same successor without storing it.
    pub successor_salt: Option<Vec<u8>>,
}

/// A refresh token to insert.
#[derive(Debug, Clone)]
pub struct NewRefreshToken {
    /// SHA-256 of the token text.
    pub hash: TokenHash,
    /// Its session.
    pub session_id: SessionId,
    /// Issue time.
    pub issued_at: UnixTime,
}

/// How a client is recognised as having signed in to an account before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// By its address.
    Address,
    /// By a device token Sesame issued it (stored as a SHA-256 hex).
    Device,
}

impl ClientKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientKind::Address => "ip",
            ClientKind::Device => "device",
        }
    }
}

/// One audit-log entry. Never carries a password or token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Row id (0 before it is stored).
    pub id: i64,
    /// When.
    pub at: UnixTime,
    /// What happened: `login`, `refresh`, `logout`, `lockout`, `unlock`, …
    pub event: String,
    /// How it ended: `success`, `wrong_password`, `unknown_account`, …
    pub outcome: String,
    /// Which way in: `native`, a contract name, or `cli`.
    pub face: String,
    /// The account, when known.
    pub account_id: Option<AccountId>,
    /// Its username, when known.
    pub username: Option<String>,
    /// The account an operator's or administrator's change was made to.
    pub target_id: Option<AccountId>,
    /// Client address.
    pub ip: Option<String>,
    /// Client user agent.
    pub user_agent: Option<String>,
    /// Anything else worth knowing (a session id, a new quota).
    pub detail: Option<String>,
}

/// An opaque access token (by hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpaqueAccessToken {
    /// Its session.
    pub session_id: SessionId,
    /// The session's account.
    pub account_id: AccountId,
    /// Expiry.
    pub expires_at: UnixTime,
}

/// An account's API-call usage as persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiUsage {
    /// Calls counted in the period starting at `period_start`.
    pub count: i64,
    /// Quota; 0 means unlimited.
    pub max: i64,
    /// The account's own period; `None`: the deployment's default.
    pub period: Option<QuotaPeriod>,
    /// Start of the period `count` belongs to.
    pub period_start: UnixTime,
}

/// After how long an account's API-call count starts again from zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QuotaPeriod {
    /// Never: the quota is for the account's lifetime.
    #[default]
    None,
    /// Every day at midnight UTC.
    Day,
    /// On the first of every month at midnight UTC.
    Month,
}

impl QuotaPeriod {
    /// The stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaPeriod::None => "none",
            QuotaPeriod::Day => "day",
            QuotaPeriod::Month => "month",
        }
    }

    /// Reads a name written by [`QuotaPeriod::as_str`].
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "none" => Some(QuotaPeriod::None),
            "day" => Some(QuotaPeriod::Day),
            "month" => Some(QuotaPeriod::Month),
            _ => None,
        }
    }

    /// The start of the period containing `now` (0 for `None`: one period).
    pub fn start(self, now: UnixTime) -> UnixTime {
        match self {
            QuotaPeriod::None => 0,
            QuotaPeriod::Day => crate::clock::day_start(now),
            QuotaPeriod::Month => crate::clock::month_start(now),
        }
    }
}

/// A token signing key.
#[derive(Clone)]
pub struct SigningKey {
    /// Key id, published in JWKS and in each token's header.
    pub kid: String,
    /// JWS algorithm name (`EdDSA`, `ES256`, `RS256`, `HS256`).
    pub algorithm: String,
    /// Private key: PKCS#8 DER for EdDSA/ES256, PKCS#1 DER for RS256, the secret for HS256.
    pub private_der: Vec<u8>,
    /// Public JWK as JSON (empty for HS256, which has no public part).
    pub public_jwk: String,
    /// Creation time.
    pub created_at: UnixTime,
    /// When it starts signing (it is published from its creation): the
    /// newest key of the configured algorithm whose time has come signs.
    pub signs_from: UnixTime,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// What housekeeping deletes: everything that ended before these times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgeCutoffs {
    /// Sessions revoked or expired before this.
    pub ended_before: UnixTime,
    /// Refresh tokens rotated before this.
    pub spent_before: UnixTime,
    /// Opaque access tokens expired before this.
    pub expired_before: UnixTime,
}

/// How many rows one purge batch deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Ended sessions (their tokens went with them).
    pub sessions: u64,
    /// Rotated refresh tokens of live sessions.
    pub refresh_tokens: u64,
    /// Expired opaque access tokens.
    pub access_tokens: u64,
}

/// The hash of a refresh token's successor in each token style (the
/// successor's text depends on the session's style, which the store knows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SuccessorHashes {
    /// For JWT sessions.
    pub jwt: TokenHash,
    /// For opaque (careyshop) sessions.
    pub opaque: TokenHash,
}

impl SuccessorHashes {
    /// The hash for a session of `style`.
    pub fn for_style(&self, style: TokenStyle) -> TokenHash {
        match style {
            TokenStyle::Jwt => self.jwt,
            TokenStyle::Opaque => self.opaque,
        }
    }
}

/// The account a login names, and whether it knows the client.
#[derive(Debug, Clone)]
pub struct LoginCandidate {
    /// The account.
    pub account: Account,
    /// The client presented a device token this account was issued.
    pub known_device: bool,
    /// The client's address signed in to this account before (only
    /// looked at when the device is not known).
    pub known_address: bool,
}

/// A role: a named set of permissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    /// Name (see `core::domain::Name`).
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Its permissions, sorted.
    pub permissions: Vec<String>,
}

/// A change to a role; `None` leaves a part as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleChange {
    /// New description.
    pub description: Option<String>,
    /// New permissions (replacing the old ones).
    pub permissions: Option<Vec<String>>,
    /// Permissions to add, after a replacement: in the same transaction,
    /// so that two changes at once (a grant and a revocation, on any
    /// nodes) never undo each other.
    pub grant: Vec<String>,
    /// Permissions to take away, likewise.
    pub revoke: Vec<String>,
    /// The most permissions the role may hold once changed: more refuses
    /// the change ([`StoreError::TooMany`](super::StoreError::TooMany)),
    /// counted inside its transaction, so that grants at once on any
    /// nodes cannot together pass it.
    pub permissions_at_most: Option<usize>,
}

/// Which audit events to list: newest first, all filters combined.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only events by or about this account (its own, and changes made to
    /// it).
    pub account_id: Option<AccountId>,
    /// Only this outcome.
    pub outcome: Option<String>,
    /// Only this face.
    pub face: Option<String>,
    /// At or after this time.
    pub since: Option<UnixTime>,
    /// Before this time.
    pub until: Option<UnixTime>,
    /// Only events older than this one (keyset pagination).
    pub before_id: Option<i64>,
    /// At most this many.
    pub limit: u32,
}

/// Which accounts to list: in id order, all filters combined.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountQuery {
    /// A prefix of the username key, the email key or the mobile (already
    /// folded as those keys are).
    pub prefix: Option<String>,
    /// Only accounts with this status.
    pub status: Option<AccountStatus>,
    /// Only holders of this role.
    pub role: Option<String>,
    /// Only accounts after this id (keyset pagination).
    pub after_id: AccountId,
    /// At most this many.
    pub limit: u32,
}

/// Changes to one account, written in one transaction: all of them or,
/// when one is refused, none. `None` leaves a part as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountChange {
    /// A new status. Refused (`LastAdministrator`), with everything else,
    /// if the change as a whole leaves no administrator.
    pub status: Option<AccountStatus>,
    /// The roles the account is to hold instead of its own (`Conflict`
    /// naming `roles` if one does not exist; the same rule as the status).
    pub roles: Option<Vec<String>>,
    /// With `roles`: applied only if the account holds exactly these roles
    /// (in any order) when written, as a grant or a revocation computed
    /// from them must be; otherwise `Conflict("roles_were")`, and nothing
    /// changes.
    pub roles_were: Option<Vec<String>>,
    /// New contacts (`Conflict` names a field another account holds).
    pub contact: ContactChange,
    /// A profile change.
    pub profile: Option<ProfilePatch>,
    /// A new API-call quota (0: unlimited).
    pub max_api_calls: Option<i64>,
    /// A new quota period (`Some(None)`: the deployment's default).
    pub quota_period: Option<Option<QuotaPeriod>>,
}

/// New contact fields; `None` leaves one as it is, `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContactChange {
    /// Email and its unique key.
    pub email: Option<Option<(String, String)>>,
    /// Mobile.
    pub mobile: Option<Option<String>>,
}

/// A registered OAuth 2.0 / OpenID Connect client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthClient {
    /// The `client_id`.
    pub id: String,
    /// A human name.
    pub name: String,
    /// SHA-256 of the secret; `None` for a public client.
    pub secret_hash: Option<TokenHash>,
    /// Exact redirect URIs allowed in authorization requests.
    pub redirect_uris: Vec<String>,
    /// Exact URIs allowed after RP-initiated logout.
    pub post_logout_redirect_uris: Vec<String>,
    /// Grant types the client may use.
    pub grants: Vec<String>,
    /// Scopes the client may ask for.
    pub scopes: Vec<String>,
    /// Registration time.
    pub created_at: UnixTime,
}

/// An authorization code (by hash) and what it was issued for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationCode {
    /// SHA-256 of the code.
    pub hash: TokenHash,
    /// The client it was issued to.
    pub client_id: String,
    /// The redirect URI of the request.
    pub redirect_uri: String,
    /// The PKCE S256 challenge.
    pub code_challenge: String,
    /// Who signed in.
    pub account_id: AccountId,
    /// The browser session (single sign-on) it was issued in.
    pub browser_session: SessionId,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// The request's `nonce`, for the ID token.
    pub nonce: Option<String>,
    /// When the user last authenticated.
    pub auth_time: UnixTime,
    /// End of its life.
    pub expires_at: UnixTime,
}

/// What a session opened for a client was granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthSession {
    /// The session.
    pub session_id: SessionId,
    /// The client.
    pub client_id: String,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// The browser session it came from (ending that ends this).
    pub browser_session: Option<SessionId>,
    /// When the user authenticated.
    pub auth_time: UnixTime,
    /// The authorization request's `nonce`.
    pub nonce: Option<String>,
}

/// The outcome of exchanging an authorization code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redemption {
    /// First use: the session was opened.
    Redeemed,
    /// The code was spent before: the session its first use opened, and the
    /// code (whose client, redirect URI and PKCE challenge a replay must
    /// match to end that session).
    Replayed {
        /// The session the first use opened.
        opened: Option<SessionId>,
        /// The spent code.
        code: Box<AuthorizationCode>,
    },
    /// Unknown or expired.
    Invalid,
}
