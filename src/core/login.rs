//! The four operations every face is built on: log in, refresh, log out and
//! authenticate a bearer token.

use std::sync::Arc;

use super::audit::{self, AuditEventExt};
use super::clock::UnixTime;
use super::domain::{LoginId, Md5Hex, Password, Platform};
use super::error::{Error, Result};
use super::guard::address_key;
use super::sessions::PlatformPolicy;
use super::tokens::{
    hash_presented_in, hash_token, hash_token_in, is_opaque_token, new_opaque_token,
    new_refresh_token, new_successor_salt, opaque_access_token, successor_token,
};
use super::{ClientInfo, Core};
use crate::limits::FailureLimiter;
use crate::store::{
    Account, AccountId, AccountStatus, AuditEvent, LoginRecord, NewRefreshToken, NewSession,
    PasswordVerifiers, SessionId, SuccessorHashes, TokenStyle,
};

/// What the client proves its identity with.
#[derive(Debug, Clone)]
pub enum Credential {
    /// The password itself.
    Password(Password),
    /// The hex MD5 of the password (the users-actions contract).
    Md5Hex(Md5Hex),
}

/// How a face wants the session it opens: set from configuration, applied by the core.
#[derive(Debug, Clone, Default)]
pub struct LoginOptions {
    /// Only accounts holding this permission may sign in (others get the
    /// same refusal as a wrong password).
    pub required_permission: Option<String>,
    /// Opaque tokens instead of JWTs.
    pub opaque_tokens: bool,
    /// Overrides the configured policy for the session's platform.
    pub platform_policy: Option<PlatformPolicy>,
    /// Stores the refresh token under this namespace (an OAuth client's).
    pub refresh_namespace: Option<String>,
    /// The caller is an application's server (the `password` grant), whose
    /// own address all its users share: unless a trusted proxy forwarded
    /// the user's (the server listed in `http.trusted_proxies`), the
    /// address never makes a client known, so it is neither recognised nor
    /// remembered (it would otherwise exempt every account signed in
    /// through it from the account budget and lockout).
    pub shared_address: bool,
}

/// A login attempt, already parsed by its face.
#[derive(Debug, Clone)]
pub struct LoginAttempt {
    /// Username, email or mobile.
    pub login: LoginId,
    /// Password or its MD5.
    pub credential: Credential,
    /// Device platform; the configured default when absent.
    pub platform: Option<Platform>,
    /// Transport details of the caller.
    pub client: ClientInfo,
    /// What the face asks of the session.
    pub options: LoginOptions,
    /// The face's name, for the audit log.
    pub face: &'static str,
}

impl LoginAttempt {
    /// Whether the client address is the user's, to be known by: not the
    /// shared address of an application's server (see
    /// [`LoginOptions::shared_address`]).
    pub(crate) fn address_is_the_users(&self) -> bool {
        !self.options.shared_address || self.client.forwarded
    }
}

/// What a successful login or refresh hands back.
#[derive(Clone)]
pub struct Grant {
    /// The account, as of the login.
    pub account: Account,
    /// The session.
    pub session_id: SessionId,
    /// The access token (a JWT, or 32 hex digits for opaque sessions).
    pub access_token: String,
    /// Seconds until the access token expires.
    pub access_expires_in: i64,
    /// The refresh token.
    pub refresh_token: String,
    /// Seconds until the refresh token (the session) expires.
    pub refresh_expires_in: i64,
    /// Unix time at which the access token expires.
    pub access_expires_at: UnixTime,
    /// Unix time at which the refresh token expires.
    pub refresh_expires_at: UnixTime,
    /// A device token newly issued to this client at login: presented later
    /// (header `Sesame-Device`), it lets the owner past throttling and lockout.
    pub device_token: Option<String>,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::redact::secret;
        f.debug_struct("Grant")
            .field("account", &self.account)
            .field("session_id", &self.session_id)
            .field("access_token", &secret(Some(&self.access_token)))
            .field("access_expires_in", &self.access_expires_in)
            .field("refresh_token", &secret(Some(&self.refresh_token)))
            .field("refresh_expires_in", &self.refresh_expires_in)
            .field("device_token", &secret(self.device_token.as_deref()))
            .finish_non_exhaustive()
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The account.
    pub account_id: i64,
    /// The session the token belongs to.
    pub session_id: SessionId,
    /// The OAuth client the token was issued to, if any (OAuth clients get
    /// JWTs with `client_id`; native and contract tokens have none).
    pub client_id: Option<String>,
}

/// Which sessions a logout ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogoutScope {
    /// The caller's session.
    ThisSession,
    /// Every session of the account.
    AllSessions,
}

/// Why a checked login is refused (all look the same to the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    None,
    UnknownAccount,
    WrongPassword,
    NoMd5Verifier,
    Disabled,
    Locked,
    MissingPermission,
}

impl Refusal {
    /// Whether it counts as a failed guess.
    fn is_failure(self) -> bool {
        matches!(
            self,
            Refusal::UnknownAccount | Refusal::WrongPassword | Refusal::NoMd5Verifier
        )
    }

    /// Its `sesame_logins_total` outcome: what an operator acts on, with
    /// the guesses (unknown account, wrong password) together.
    fn metric(self) -> &'static str {
        match self {
            Refusal::None => "success",
            Refusal::Disabled => "disabled",
            Refusal::Locked => "locked",
            Refusal::UnknownAccount
            | Refusal::WrongPassword
            | Refusal::NoMd5Verifier
            | Refusal::MissingPermission => "invalid_credentials",
        }
    }

    fn outcome(self) -> &'static str {
        match self {
            Refusal::None => "success",
            Refusal::UnknownAccount => "unknown_account",
            Refusal::WrongPassword => "wrong_password",
            Refusal::NoMd5Verifier => "no_md5_verifier",
            Refusal::Disabled => "disabled",
            Refusal::Locked => "locked",
            Refusal::MissingPermission => "missing_permission",
        }
    }
}

/// A refresh's outcome, as the audit log and the metrics name it.
pub(crate) fn refresh_outcome<T>(result: &Result<T>) -> &'static str {
    match result {
        Ok(_) => "success",
        Err(Error::RefreshTokenReused) => "reuse_detected",
        Err(Error::InvalidRefreshToken) => "invalid_token",
        Err(Error::Throttled { .. }) => "throttled",
        Err(_) => "error",
    }
}

/// Most refresh tokens remembered as issued when their session's refresh
/// budget had run out (`Core::note_if_spent`); ~100 bytes each.
const SPENT_CHAINS_KEPT: usize = 100_000;

/// The key of a session's refresh budget on this node.
fn refresh_key(session: &SessionId) -> String {
    format!("refresh:{session}")
}

/// A session's identity and lifetime, as a grant needs it.
pub(crate) struct SessionRef {
    pub(crate) id: SessionId,
    pub(crate) account_id: i64,
    style: TokenStyle,
    pub(crate) expires_at: UnixTime,
    /// A refresh's stored successor salt: an opaque session's access token
    /// is derived from it and the successor, so that retries in the grace
    /// window get the same one. `None` at a login (a random token).
    access_salt: Option<Vec<u8>>,
}

impl Core {
    /// Checks a login and credential and opens a session.
    ///
    /// In order: the client address's failure budget (before any hashing),
    /// the account's budget and lockout unless the client is known to the
    /// account, then the credential. Unknown account, wrong password, a
    /// disabled or locked account and a missing permission all fail with the
    /// same [`Error::InvalidCredentials`] after the same amount of hashing;
    /// the audit log tells them apart.
    pub async fn login(&self, attempt: LoginAttempt) -> Result<Grant> {
        let face = attempt.face;
        let result = self.check_login(attempt).await;
        let outcome = match &result {
            Ok(_) => "success",
            // Counted where the refusal's reason is known.
            Err(Error::InvalidCredentials) => return result,
            Err(Error::Throttled { .. }) => "throttled",
            Err(Error::Busy { .. }) => "busy",
            Err(_) => "error",
        };
        self.metrics.login(face, outcome);
        result
    }

    async fn check_login(&self, attempt: LoginAttempt) -> Result<Grant> {
        let now = self.now();
        let base = audit::event("login", "success", attempt.face).client(&attempt.client);
        let abuse = &self.settings.abuse;
        // The address's budget is checked first and charged only by a
        // failure: many people may sign in at once behind one address (an
        // office, a carrier's NAT). Attempts sent at once from one address
        // may so overshoot its budget by as many as are being checked.
        let address_key = address_key(&attempt.client, abuse.ipv6_prefix);
        if let Some(key) = &address_key
            && let Err(error) = self.check_budget(key, &abuse.address_rule, now).await
        {
            self.audit_cheap_refusal(
                base.clone()
                    .detail("address throttled")
                    .with_outcome("throttled"),
                &attempt.client,
            )
            .await;
            return Err(error);
        }
        let (account, recognised) = self.find_for_login(&attempt).await?;
        let known = recognised.known();
        let account_key = self
            .limiter_names
            .account_key(account.as_ref(), &attempt.login);
        let base = match &account {
            Some(account) => base.account(account),
            None => base,
        };
        // The account's budget, which guesses from unknown clients spend,
        // is charged before the password is checked and given back only if
        // the login goes through (or nothing was checked): checking first
        // and charging after the hash would let guesses sent at once (to
        // any node) all pass the check before the first of them is counted.
        let charge = if known {
            None
        } else {
            match self
                .charge_budget(&account_key, &abuse.account_rule, now)
                .await
            {
                Ok(charge) => Some(charge),
                Err(error) => {
                    self.audit_cheap_refusal(
                        base.detail("account throttled").with_outcome("throttled"),
                        &attempt.client,
                    )
                    .await;
                    return Err(error);
                }
            }
        };
        let checked = self
            .check_credential(account.as_ref(), &attempt, known)
            .await;
        // A refusal after a right password on a locked or disabled account
        // keeps its charges like a wrong guess: were it given back, the
        // next attempt's throttling would tell a right password from a
        // wrong one, lockout or not. (A missing permission hides nothing:
        // the same password signs in on a face that needs none.)
        if let Some(charge) = charge
            && matches!(
                checked,
                Ok(Refusal::None | Refusal::MissingPermission) | Err(_)
            )
        {
            self.refund_budget(&account_key, &abuse.account_rule, charge)
                .await;
        }
        match checked? {
            Refusal::None => {}
            refusal => {
                if refusal != Refusal::MissingPermission {
                    self.record_failure(
                        account.as_ref(),
                        address_key.as_deref(),
                        known,
                        refusal.is_failure(),
                        &base,
                    )
                    .await?;
                }
                self.audit.record(base.with_outcome(refusal.outcome()));
                self.metrics.login(attempt.face, refusal.metric());
                return Err(Error::InvalidCredentials);
            }
        }
        let Some(account) = account else {
            self.metrics.login(attempt.face, "invalid_credentials");
            return Err(Error::InvalidCredentials);
        };
        // Only if still locked: an administrator may have disabled the
        // account while the password was being checked.
        if account.status == AccountStatus::Locked
            && self.store.set_locked(account.id, false, now).await?
        {
            self.account_changed(account.id).await;
            self.audit.record(
                base.clone()
                    .with_event("unlock")
                    .detail("signed in from a known client"),
            );
        }
        let password_hash = self
            .maintain_verifiers(&account, &attempt.credential, &base)
            .await;
        let ip = attempt.client.ip.map(|ip| ip.to_string());
        let (clients, device_token) =
            self.clients_to_remember(&attempt.client, recognised, attempt.address_is_the_users());
        let record = LoginRecord {
            account_id: account.id,
            at: now,
            ip: ip.clone(),
            clients,
            keep: self.settings.abuse.known_clients_kept,
            password_hash: Some(password_hash),
        };
        // What the store will do, applied to the copy in hand: no re-read.
        let mut account = account;
        account.login_count += 1;
        account.last_login_at = Some(now);
        account.last_login_ip = ip;
        account.consecutive_failures = 0;
        account.status = AccountStatus::Active;
        self.caches.accounts.forget(account.id);
        let platform = attempt
            .platform
            .unwrap_or_else(|| self.settings.sessions.default_platform.clone());
        let Some(mut grant) = self
            .open_session(
                account,
                &record,
                &platform,
                &attempt.client,
                &attempt.options,
            )
            .await?
        else {
            // Disabled or deleted while the password was being checked.
            self.audit
                .record(base.with_outcome(Refusal::Disabled.outcome()));
            self.metrics.login(attempt.face, Refusal::Disabled.metric());
            return Err(Error::InvalidCredentials);
        };
        grant.device_token = device_token;
        self.audit
            .record(base.detail(format!("session {}", grant.session_id)));
        Ok(grant)
    }

    /// Verifies the credential (or spends the same time on a dummy) and says
    /// whether and why the login is refused.
    async fn check_credential(
        &self,
        account: Option<&Account>,
        attempt: &LoginAttempt,
        known: bool,
    ) -> Result<Refusal> {
        let secret = match &attempt.credential {
            Credential::Password(password) => password.expose(),
            Credential::Md5Hex(digest) => digest.expose(),
        };
        let verifier = account.and_then(|account| match &attempt.credential {
            Credential::Password(_) => Some(account.verifiers.password_hash.as_str()),
            Credential::Md5Hex(_) => account.verifiers.md5_verifier.as_deref(),
        });
        let Some(account) = account else {
            self.verify_dummy(&attempt.credential, secret).await?;
            return Ok(Refusal::UnknownAccount);
        };
        let Some(verifier) = verifier else {
            self.verify_dummy(&attempt.credential, secret).await?;
            return Ok(Refusal::NoMd5Verifier);
        };
        let checked = match &attempt.credential {
            Credential::Password(password) => self.hasher.verify(password, verifier).await?,
            Credential::Md5Hex(_) => self.hasher.verify_str(secret, verifier).await?,
        };
        if !checked.matches {
            return Ok(Refusal::WrongPassword);
        }
        Ok(match account.status {
            AccountStatus::Disabled => Refusal::Disabled,
            AccountStatus::Locked if !known => Refusal::Locked,
            _ => match &attempt.options.required_permission {
                Some(permission) if !account.permissions.contains(permission) => {
                    Refusal::MissingPermission
                }
                _ => Refusal::None,
            },
        })
    }

    /// Charges a refused login to the address (the account's budget was
    /// charged before the check); for a wrong guess (`guess`), also counts
    /// it against the account and locks the account when its unknown-client
    /// failures reach the threshold.
    async fn record_failure(
        &self,
        account: Option<&Account>,
        address_key: Option<&str>,
        known: bool,
        guess: bool,
        base: &AuditEvent,
    ) -> Result<()> {
        let now = self.now();
        let abuse = &self.settings.abuse;
        if let Some(key) = address_key {
            self.limiter
                .record_failure(key, &abuse.address_rule, now)
                .await?;
        }
        let Some(account) = account.filter(|_| guess) else {
            return Ok(());
        };
        let write = FailureWrite {
            store: Arc::clone(&self.store),
            caches: Arc::clone(&self.caches),
            notices: Arc::clone(&self.notices),
            audit: Arc::clone(&self.audit),
            account_id: account.id,
            active: account.status == AccountStatus::Active,
            known,
            threshold: abuse.lockout_threshold,
            now,
            base: base.clone(),
        };
        // Written after the answer: a wrong password on an existing
        // account must take no longer than one on an unknown name, which
        // writes nothing (a commit is a millisecond an attacker could
        // average out). Past `FAILURE_WRITES_DETACHED` at once, written
        // before the answer, so that a flood cannot pile up tasks.
        match Arc::clone(&self.failure_writes).try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(async move {
                    let _permit = permit;
                    if let Err(error) = write.run().await {
                        tracing::warn!(%error, "could not count a failed login against its account");
                    }
                });
                Ok(())
            }
            Err(_) => write.run().await,
        }
    }

    /// Waits until every failed login answered so far is counted against
    /// its account (tests; a stop).
    pub async fn failures_counted(&self) {
        let _all = self
            .failure_writes
            .acquire_many(FAILURE_WRITES_DETACHED as u32)
            .await;
    }

    /// After a successful login, replaces verifiers made with outdated
    /// parameters and writes a missing MD5 verifier, as far as the presented
    /// credential allows. Best effort: a busy pool or a failed write just
    /// leaves it for the next login. Answers the password hash the account
    /// should now have, which the login's record is conditional on.
    async fn maintain_verifiers(
        &self,
        account: &Account,
        credential: &Credential,
        base: &AuditEvent,
    ) -> String {
        let current = &account.verifiers;
        let md5_stale = current
            .md5_verifier
            .as_deref()
            .is_none_or(|v| !self.hasher.is_current(v));
        let mut next = current.clone();
        match credential {
            Credential::Password(password) => {
                if !self.hasher.is_current(&current.password_hash) {
                    match self.hasher.hash(password.expose()).await {
                        Ok(hash) => next.password_hash = hash,
                        Err(_) => return current.password_hash.clone(),
                    }
                }
                if md5_stale {
                    match self.hasher.hash(Md5Hex::of(password).expose()).await {
                        Ok(hash) => next.md5_verifier = Some(hash),
                        Err(_) => return current.password_hash.clone(),
                    }
                }
            }
            Credential::Md5Hex(digest) => {
                if md5_stale {
                    match self.hasher.hash(digest.expose()).await {
                        Ok(hash) => next.md5_verifier = Some(hash),
                        Err(_) => return current.password_hash.clone(),
                    }
                }
            }
        }
        if next.password_hash == current.password_hash && next.md5_verifier == current.md5_verifier
        {
            return current.password_hash.clone();
        }
        // Only over the hash just checked: never over a password changed
        // while this one was being checked.
        let stored = match self
            .store
            .set_password(
                account.id,
                &next,
                false,
                Some(current.password_hash.as_str()),
                self.now(),
            )
            .await
        {
            // Another hash is stored by now: another login of the same
            // password upgraded it first, or the password was changed,
            // reset or expired. Only if the credential checks against the
            // stored hash too is that the hash to record against; otherwise
            // the one checked stays expected, and the login is refused.
            Ok(false) => match self.store.get_account(account.id).await {
                Ok(Some(stored)) if self.still_matches(credential, &stored.verifiers).await => {
                    stored.verifiers.password_hash
                }
                _ => current.password_hash.clone(),
            },
            // An imported hash is gone, overwritten in the same write.
            Ok(true) => {
                if next.password_hash != current.password_hash
                    && let Some(format) = super::foreign::format_of(&current.password_hash)
                {
                    self.audit.record(
                        base.clone()
                            .with_event("rehashed")
                            .detail(format!("imported {format} hash replaced by argon2id")),
                    );
                }
                next.password_hash
            }
            Err(error) => {
                tracing::warn!(account_id = account.id, %error, "could not update password verifiers");
                current.password_hash.clone()
            }
        };
        self.caches.accounts.forget(account.id);
        stored
    }

    /// Whether the credential checks against these verifiers (one more
    /// hash; a busy pool or an error counts as no).
    async fn still_matches(&self, credential: &Credential, verifiers: &PasswordVerifiers) -> bool {
        let checked = match credential {
            Credential::Password(password) => {
                self.hasher.verify(password, &verifiers.password_hash).await
            }
            Credential::Md5Hex(digest) => match &verifiers.md5_verifier {
                Some(verifier) => self.hasher.verify_str(digest.expose(), verifier).await,
                None => return false,
            },
        };
        checked.is_ok_and(|checked| checked.matches)
    }

    /// The time a check of this credential takes, against no account.
    async fn verify_dummy(&self, credential: &Credential, secret: &str) -> Result<()> {
        match credential {
            Credential::Password(password) => self.hasher.verify_dummy_password(password).await,
            Credential::Md5Hex(_) => self.hasher.verify_dummy(secret).await,
        }
    }

    /// Records the login and opens its session (one store transaction);
    /// `None` if the account was disabled or deleted since it was read.
    async fn open_session(
        &self,
        account: Account,
        login: &LoginRecord,
        platform: &Platform,
        client: &ClientInfo,
        options: &LoginOptions,
    ) -> Result<Option<Grant>> {
        let now = self.now();
        let style = if options.opaque_tokens {
            TokenStyle::Opaque
        } else {
            TokenStyle::Jwt
        };
        let session = NewSession {
            id: uuid::Uuid::new_v4().to_string(),
            account_id: account.id,
            platform: platform.as_str().to_owned(),
            user_agent: client.user_agent.clone(),
            ip: client.ip.map(|ip| ip.to_string()),
            token_style: style,
            created_at: now,
            expires_at: now + self.settings.tokens.refresh_ttl,
        };
        let refresh_token = new_refresh_token(style);
        let refresh = NewRefreshToken {
            hash: hash_token_in(
                options.refresh_namespace.as_deref().unwrap_or_default(),
                &refresh_token,
            ),
            session_id: session.id.clone(),
            issued_at: now,
        };
        let policy = options
            .platform_policy
            .unwrap_or_else(|| self.settings.sessions.policy(platform));
        let Some(replaced) = self
            .store
            .record_login(login, &session, &refresh, policy == PlatformPolicy::Single)
            .await?
        else {
            return Ok(None);
        };
        self.sessions_replaced(&replaced).await;
        let session = SessionRef {
            id: session.id,
            account_id: account.id,
            style,
            expires_at: session.expires_at,
            access_salt: None,
        };
        self.grant(session, refresh_token, Some(account))
            .await
            .map(Some)
    }

    /// Builds the answer for a session: a fresh access token and the account.
    /// For an opaque session the new access token replaces the previous one.
    /// `account` is the account as of this moment when the caller has it
    /// (a login); otherwise it is read (through the cache).
    async fn grant(
        &self,
        session: SessionRef,
        refresh_token: String,
        account: Option<Account>,
    ) -> Result<Grant> {
        let now = self.now();
        let account = match account {
            Some(mut account) => {
                account.api_calls_count = self.live_api_calls(&account, now);
                account
            }
            None => self.account_with_usage(session.account_id).await?,
        };
        let access_ttl = self.settings.tokens.access_ttl;
        let access_token = match session.style {
            TokenStyle::Jwt => self.tokens.issue(
                account.id,
                &session.id,
                &account.roles,
                &account.permissions,
                now,
            )?,
            TokenStyle::Opaque => {
                let token = match &session.access_salt {
                    Some(salt) => opaque_access_token(&refresh_token, salt),
                    None => new_opaque_token(),
                };
                let replaced = self
                    .store
                    .replace_access_token(&session.id, &hash_token(&token), now + access_ttl)
                    .await?
                    // Gone meanwhile (its account deleted): no token.
                    .ok_or(Error::Unauthenticated)?;
                if replaced {
                    // The session's previous token stops working: every node
                    // forgets what it cached about the session.
                    self.sessions_ended(std::slice::from_ref(&session.id)).await;
                }
                token
            }
        };
        Ok(Grant {
            account,
            session_id: session.id,
            access_token,
            access_expires_in: access_ttl,
            access_expires_at: now + access_ttl,
            refresh_token,
            refresh_expires_in: session.expires_at - now,
            refresh_expires_at: session.expires_at,
            device_token: None,
        })
    }

    /// Exchanges a refresh token for a new access token and a new refresh
    /// token. A token presented again after its rotation ends the session,
    /// unless it comes within the grace window, when it gets the same successor.
    pub async fn refresh(
        &self,
        refresh_token: &str,
        client: &ClientInfo,
        face: &'static str,
    ) -> Result<Grant> {
        let entry = audit::event("refresh", "success", face).client(client);
        let result = self.rotate(refresh_token).await;
        let outcome = refresh_outcome(&result);
        self.metrics.refresh(outcome);
        match &result {
            Ok(grant) => self.audit.record(
                entry
                    .account(&grant.account)
                    .detail(format!("session {}", grant.session_id)),
            ),
            Err(Error::InvalidRefreshToken | Error::Throttled { .. }) => {
                self.audit_cheap_refusal(entry.with_outcome(outcome), client)
                    .await;
            }
            Err(_) => self.audit.record(entry.with_outcome(outcome)),
        }
        result
    }

    async fn rotate(&self, refresh_token: &str) -> Result<Grant> {
        let (session, successor) = self.rotate_in("", refresh_token).await?;
        self.grant(session, successor, None).await
    }

    /// Rotates a refresh token stored under `namespace` (see
    /// [`hash_token_in`]); returns its session and the successor token.
    pub(crate) async fn rotate_in(
        &self,
        namespace: &str,
        refresh_token: &str,
    ) -> Result<(SessionRef, String)> {
        let Some(hash) = hash_presented_in(namespace, refresh_token) else {
            return Err(Error::InvalidRefreshToken);
        };
        let now = self.now();
        self.refresh_not_spent(&hash, now).await?;
        // The successor's text depends on the session's token style, which
        // only the store knows: derive both, let the store pick.
        let salt = new_successor_salt();
        let successors = [TokenStyle::Jwt, TokenStyle::Opaque]
            .map(|style| successor_token(refresh_token, &salt, style));
        let hashes = SuccessorHashes {
            jwt: hash_token_in(namespace, &successors[0]),
            opaque: hash_token_in(namespace, &successors[1]),
        };
        let Some((_, session, rotated)) = self
            .store
            .find_and_rotate_refresh_token(&hash, &salt, &hashes, now)
            .await?
        else {
            return Err(Error::InvalidRefreshToken);
        };
        if !session.is_live(now) {
            return Err(Error::InvalidRefreshToken);
        }
        let style = session.token_style;
        let mut session_ref = SessionRef {
            id: session.id.clone(),
            account_id: session.account_id,
            style,
            expires_at: session.expires_at,
            access_salt: None,
        };
        if rotated {
            // Refused here only when the token came from another node (this
            // one refuses its own before writing, above): the rotation
            // stands, and the client's retry after the wait, within the
            // grace window, collects its successor below without another
            // write.
            self.spend_refresh(&session.id, now).await?;
            let (successor, successor_hash) = match style {
                TokenStyle::Jwt => (&successors[0], hashes.jwt),
                TokenStyle::Opaque => (&successors[1], hashes.opaque),
            };
            self.note_if_spent(successor_hash, &session.id, now).await;
            session_ref.access_salt = Some(salt.to_vec());
            return Ok((session_ref, successor.clone()));
        }
        // Already rotated, by an earlier request or a concurrent one just now.
        let record = self
            .store
            .find_refresh_token(&hash)
            .await?
            .ok_or(Error::InvalidRefreshToken)?;
        match (record.rotated_at, record.successor_salt) {
            (Some(rotated_at), Some(salt))
                if now - rotated_at <= self.settings.tokens.reuse_grace =>
            {
                self.spend_refresh(&session.id, now).await?;
                let successor = successor_token(refresh_token, &salt, style);
                session_ref.access_salt = Some(salt);
                Ok((session_ref, successor))
            }
            _ => {
                tracing::warn!(session_id = %session.id, "refresh token reuse detected; session ended");
                let mut entry = audit::event("refresh_reuse", "session_revoked", "core")
                    .detail(format!("session {}", session.id));
                entry.account_id = Some(session.account_id);
                self.audit.record(entry);
                self.store
                    .revoke_session(&session.id, now, "refresh_reuse")
                    .await?;
                self.sessions_ended(std::slice::from_ref(&session.id)).await;
                Err(Error::RefreshTokenReused)
            }
        }
    }

    /// Charges one refresh to the session's budget on this node
    /// (`abuse.refresh_rule`), or says how long to wait. Per node, in
    /// memory: a refresh on PostgreSQL and Redis is then not one round trip
    /// more, and what the budget bounds, the writes a looping client causes,
    /// is bounded all the same (a cluster of N nodes writes at most N times
    /// one node's share).
    async fn spend_refresh(&self, session: &SessionId, now: UnixTime) -> Result<()> {
        let rule = &self.settings.abuse.refresh_rule;
        if rule.burst == 0 {
            return Ok(());
        }
        self.charge_here(&refresh_key(session), rule, now).await
    }

    /// Refuses a refresh token this node issued as its session's refresh
    /// budget ran out, while it lasts: nothing is written, and the token
    /// stays good for when it has come back.
    async fn refresh_not_spent(&self, hash: &crate::store::TokenHash, now: UnixTime) -> Result<()> {
        let session = match self.spent_chains.lock() {
            Ok(chains) => chains.get(hash).cloned(),
            Err(_) => None,
        };
        let Some(session) = session else {
            return Ok(());
        };
        let rule = &self.settings.abuse.refresh_rule;
        let key = refresh_key(&session);
        if let Some(wait) = self.session_budgets.blocked_for(&key, rule, now).await? {
            return Err(Error::Throttled {
                retry_after_secs: wait,
            });
        }
        if let Ok(mut chains) = self.spent_chains.lock() {
            chains.remove(hash);
        }
        Ok(())
    }

    /// Remembers `successor` if its session's refresh budget has run out
    /// (its next rotation would be refused): see [`Self::refresh_not_spent`].
    async fn note_if_spent(
        &self,
        successor: crate::store::TokenHash,
        session: &SessionId,
        now: UnixTime,
    ) {
        let rule = &self.settings.abuse.refresh_rule;
        if rule.burst == 0 {
            return;
        }
        let key = refresh_key(session);
        if !matches!(
            self.session_budgets.blocked_for(&key, rule, now).await,
            Ok(Some(_))
        ) {
            return;
        }
        if let Ok(mut chains) = self.spent_chains.lock() {
            // Tokens never presented again stay until this bound, then go
            // all at once (theirs is then refused after its write, as a
            // token from another node is).
            if chains.len() >= SPENT_CHAINS_KEPT {
                chains.clear();
            }
            chains.insert(successor, session.clone());
        }
    }

    /// Checks a bearer token (JWT or opaque) and that its session is live,
    /// then counts the call against the account's API-call quota.
    pub async fn authenticate(&self, bearer: &str) -> Result<Principal> {
        let principal = self.identify(bearer).await?;
        self.api_calls
            .admit(principal.account_id, self.now())
            .await?;
        Ok(principal)
    }

    /// [`Self::authenticate`] for the account API (`/v1/me`, its sessions,
    /// password and profile, `/v1/logout`), which takes no token issued to
    /// an OAuth client: such a token carries the scope the user granted
    /// the client (`/oauth2/userinfo` answers within it), while the
    /// account API shows and changes everything, including the user's
    /// other sessions. A client ends its own session by revoking its token.
    pub async fn authenticate_account(&self, bearer: &str) -> Result<Principal> {
        let principal = self.identify_account(bearer).await?;
        self.api_calls
            .admit(principal.account_id, self.now())
            .await?;
        Ok(principal)
    }

    /// [`Self::authenticate_account`] without the quota, for the calls by
    /// which an owner takes an account back (signing out, listing and
    /// ending sessions, changing the password): whoever spent the quota, a
    /// thief holding a token or the owner, must not keep the owner from
    /// ending sessions. Not counted, so they cannot be used to spend it
    /// either.
    pub async fn identify_account(&self, bearer: &str) -> Result<Principal> {
        let principal = self.identify(bearer).await?;
        if principal.client_id.is_some() {
            return Err(Error::ClientNotAccepted);
        }
        Ok(principal)
    }

    /// Checks a bearer token (JWT or opaque) and that its session is live;
    /// counts nothing.
    pub(crate) async fn identify(&self, bearer: &str) -> Result<Principal> {
        let now = self.now();
        let principal = if is_opaque_token(bearer) {
            let hash = hash_token(bearer);
            let token = match self.caches.opaque_token(&hash, now) {
                Some(token) => token,
                None => {
                    let seen = self.caches.opaque.generation.now();
                    let token = self
                        .store
                        .find_access_token(&hash)
                        .await?
                        .filter(|t| now < t.expires_at)
                        .ok_or(Error::Unauthenticated)?;
                    self.caches.opaque.put(hash, token.clone(), now, seen);
                    token
                }
            };
            Principal {
                account_id: token.account_id,
                session_id: token.session_id,
                client_id: None,
            }
        } else {
            let claims = self.verify_access(bearer, now).await?;
            Principal {
                account_id: claims.sub.parse().map_err(|_| Error::Unauthenticated)?,
                session_id: claims.sid.clone(),
                client_id: claims.client_id.clone(),
            }
        };
        self.ensure_live(&principal.session_id, principal.account_id)
            .await?;
        Ok(principal)
    }

    /// Ends the caller's session, or all of the account's sessions.
    pub async fn logout(
        &self,
        principal: &Principal,
        scope: LogoutScope,
        client: &ClientInfo,
    ) -> Result<()> {
        let mut entry = audit::event("logout", "success", "native").client(client);
        entry.account_id = Some(principal.account_id);
        self.audit.record(match scope {
            LogoutScope::ThisSession => entry.detail(format!("session {}", principal.session_id)),
            LogoutScope::AllSessions => entry.detail("all sessions"),
        });
        match scope {
            LogoutScope::ThisSession => {
                self.end_session_and_its_clients(&principal.session_id, "logout")
                    .await?;
                Ok(())
            }
            LogoutScope::AllSessions => {
                self.end_account_sessions(principal.account_id, None, "logout")
                    .await
            }
        }
    }
}

/// Failed logins counted against their accounts after the answer, at most
/// this many at once.
pub(crate) const FAILURE_WRITES_DETACHED: usize = 64;

/// One wrong password's count against its account, and the lockout it may
/// bring: what [`Core::record_failure`] leaves for after the answer.
struct FailureWrite {
    store: Arc<dyn crate::store::Store>,
    caches: Arc<super::cache::Caches>,
    notices: Arc<dyn crate::notices::Notices>,
    audit: Arc<super::audit::AuditLog>,
    account_id: AccountId,
    /// The account was active when read (a lockout never overrides a
    /// disabling, nor locks twice).
    active: bool,
    known: bool,
    threshold: i64,
    now: UnixTime,
    base: AuditEvent,
}

impl FailureWrite {
    async fn run(self) -> Result<()> {
        let consecutive = self
            .store
            .record_login_failure(self.account_id, !self.known)
            .await?;
        self.caches.accounts.forget(self.account_id);
        // Only if still active: never over an administrator's disabling.
        if !self.known
            && consecutive >= self.threshold
            && self.active
            && self
                .store
                .set_locked(self.account_id, true, self.now)
                .await?
        {
            self.caches.accounts.forget(self.account_id);
            if let Err(error) = self
                .notices
                .publish(&crate::notices::Notice::AccountChanged(self.account_id))
                .await
            {
                tracing::warn!(%error, "could not tell the other nodes; they catch up within sessions.cache_ttl");
            }
            self.audit
                .record(self.base.with_event("lockout").detail(format!(
                    "{consecutive} consecutive failures from unknown clients"
                )));
        }
        Ok(())
    }
}
