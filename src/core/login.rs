//! The four operations every face is built on: log in, refresh, log out and
//! authenticate a bearer token.

use super::clock::UnixTime;
use super::domain::{LoginId, Md5Hex, Password, Platform};
use super::error::{Error, Result};
use super::sessions::PlatformPolicy;
use super::tokens::{
    hash_token, is_opaque_token, new_opaque_token, new_refresh_token, new_successor_salt,
    successor_token,
};
use super::{ClientInfo, Core};
use crate::store::{Account, AccountStatus, NewRefreshToken, NewSession, SessionId, TokenStyle};

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
}

/// What a successful login or refresh hands back.
#[derive(Debug, Clone)]
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
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The account.
    pub account_id: i64,
    /// The session the token belongs to.
    pub session_id: SessionId,
}

/// Which sessions a logout ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogoutScope {
    /// The caller's session.
    ThisSession,
    /// Every session of the account.
    AllSessions,
}

/// A session's identity and lifetime, as a grant needs it.
struct SessionRef {
    id: SessionId,
    account_id: i64,
    style: TokenStyle,
    expires_at: UnixTime,
}

impl Core {
    /// Checks a login and credential and opens a session.
    ///
    /// Unknown account, wrong password, an account that may not sign in and
    /// one that lacks the required permission all fail with the same
    /// [`Error::InvalidCredentials`] after the same amount of hashing.
    pub async fn login(&self, attempt: LoginAttempt) -> Result<Grant> {
        let account = self
            .store
            .find_account_by_login(attempt.login.key(), attempt.login.as_mobile().as_deref())
            .await?;
        let secret = match &attempt.credential {
            Credential::Password(password) => password.expose(),
            Credential::Md5Hex(digest) => digest.expose(),
        };
        let verifier = account
            .as_ref()
            .and_then(|account| match &attempt.credential {
                Credential::Password(_) => Some(account.verifiers.password_hash.as_str()),
                Credential::Md5Hex(_) => account.verifiers.md5_verifier.as_deref(),
            });
        let (Some(account), Some(verifier)) = (account.as_ref(), verifier) else {
            self.hasher.verify_dummy(secret).await?;
            if let Some(account) = &account {
                self.store.record_login_failure(account.id).await?;
            }
            return Err(Error::InvalidCredentials);
        };
        if !self.hasher.verify_str(secret, verifier).await?.matches {
            self.store.record_login_failure(account.id).await?;
            return Err(Error::InvalidCredentials);
        }
        if account.status != AccountStatus::Active {
            return Err(Error::InvalidCredentials);
        }
        if let Some(permission) = &attempt.options.required_permission
            && !account.permissions.contains(permission)
        {
            return Err(Error::InvalidCredentials);
        }
        self.maintain_verifiers(account, &attempt.credential).await;
        let now = self.now();
        let ip = attempt.client.ip.map(|ip| ip.to_string());
        self.store
            .record_login_success(account.id, now, ip.as_deref())
            .await?;
        let platform = attempt
            .platform
            .unwrap_or_else(|| self.settings.sessions.default_platform.clone());
        self.open_session(account.id, &platform, &attempt.client, &attempt.options)
            .await
    }

    /// After a successful login, replaces verifiers made with outdated
    /// parameters and writes a missing MD5 verifier, as far as the presented
    /// credential allows. Best effort: a busy pool or a failed write just
    /// leaves it for the next login.
    async fn maintain_verifiers(&self, account: &Account, credential: &Credential) {
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
                        Err(_) => return,
                    }
                }
                if md5_stale {
                    match self.hasher.hash(Md5Hex::of(password).expose()).await {
                        Ok(hash) => next.md5_verifier = Some(hash),
                        Err(_) => return,
                    }
                }
            }
            Credential::Md5Hex(digest) => {
                if md5_stale {
                    match self.hasher.hash(digest.expose()).await {
                        Ok(hash) => next.md5_verifier = Some(hash),
                        Err(_) => return,
                    }
                }
            }
        }
        if next.password_hash == current.password_hash && next.md5_verifier == current.md5_verifier
        {
            return;
        }
        if let Err(error) = self
            .store
            .set_password(account.id, &next, false, self.now())
            .await
        {
            tracing::warn!(account_id = account.id, %error, "could not update password verifiers");
        }
    }

    async fn open_session(
        &self,
        account_id: i64,
        platform: &Platform,
        client: &ClientInfo,
        options: &LoginOptions,
    ) -> Result<Grant> {
        let now = self.now();
        let style = if options.opaque_tokens {
            TokenStyle::Opaque
        } else {
            TokenStyle::Jwt
        };
        let session = NewSession {
            id: uuid::Uuid::new_v4().to_string(),
            account_id,
            platform: platform.as_str().to_owned(),
            user_agent: client.user_agent.clone(),
            ip: client.ip.map(|ip| ip.to_string()),
            token_style: style,
            created_at: now,
            expires_at: now + self.settings.tokens.refresh_ttl,
        };
        let refresh_token = new_refresh_token(style);
        let refresh = NewRefreshToken {
            hash: hash_token(&refresh_token),
            session_id: session.id.clone(),
            issued_at: now,
        };
        let policy = options
            .platform_policy
            .unwrap_or_else(|| self.settings.sessions.policy(platform));
        let replaced = self
            .store
            .create_session(&session, &refresh, policy == PlatformPolicy::Single)
            .await?;
        self.live.forget(&replaced);
        let session = SessionRef {
            id: session.id,
            account_id,
            style,
            expires_at: session.expires_at,
        };
        self.grant(session, refresh_token).await
    }

    /// Builds the answer for a session: a fresh access token and the account.
    /// For an opaque session the new access token replaces the previous one.
    async fn grant(&self, session: SessionRef, refresh_token: String) -> Result<Grant> {
        let now = self.now();
        let account = self.account_with_usage(session.account_id).await?;
        let access_ttl = self.settings.tokens.access_ttl;
        let access_token = match session.style {
            TokenStyle::Jwt => self
                .tokens
                .issue(account.id, &session.id, &account.roles, now)?,
            TokenStyle::Opaque => {
                let token = new_opaque_token();
                self.store
                    .replace_access_token(&session.id, &hash_token(&token), now + access_ttl)
                    .await?;
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
        })
    }

    /// Exchanges a refresh token for a new access token and a new refresh
    /// token. A token presented again after its rotation ends the session,
    /// unless it comes within the grace window, when it gets the same successor.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Grant> {
        if refresh_token.is_empty() || refresh_token.len() > 128 {
            return Err(Error::InvalidRefreshToken);
        }
        let now = self.now();
        let hash = hash_token(refresh_token);
        let Some(record) = self.store.find_refresh_token(&hash).await? else {
            return Err(Error::InvalidRefreshToken);
        };
        let session = self
            .store
            .get_session(&record.session_id)
            .await?
            .filter(|s| s.is_live(now))
            .ok_or(Error::InvalidRefreshToken)?;
        let style = session.token_style;
        let session_ref = SessionRef {
            id: session.id.clone(),
            account_id: session.account_id,
            style,
            expires_at: session.expires_at,
        };
        if record.rotated_at.is_none() {
            let salt = new_successor_salt();
            let successor = successor_token(refresh_token, &salt, style);
            let new = NewRefreshToken {
                hash: hash_token(&successor),
                session_id: session.id.clone(),
                issued_at: now,
            };
            if self
                .store
                .rotate_refresh_token(&hash, &salt, &new, now)
                .await?
            {
                return self.grant(session_ref, successor).await;
            }
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
                let successor = successor_token(refresh_token, &salt, style);
                self.grant(session_ref, successor).await
            }
            _ => {
                tracing::warn!(session_id = %session.id, "refresh token reuse detected; session ended");
                self.store
                    .revoke_session(&session.id, now, "refresh_reuse")
                    .await?;
                self.live.forget([&session.id]);
                Err(Error::RefreshTokenReused)
            }
        }
    }

    /// Checks a bearer token (JWT or opaque) and that its session is live,
    /// then counts the call against the account's API-call quota.
    pub async fn authenticate(&self, bearer: &str) -> Result<Principal> {
        let now = self.now();
        let principal = if is_opaque_token(bearer) {
            let token = self
                .store
                .find_access_token(&hash_token(bearer))
                .await?
                .filter(|t| now < t.expires_at)
                .ok_or(Error::Unauthenticated)?;
            Principal {
                account_id: token.account_id,
                session_id: token.session_id,
            }
        } else {
            let claims = self.tokens.verify(bearer, now)?;
            Principal {
                account_id: claims.sub.parse().map_err(|_| Error::Unauthenticated)?,
                session_id: claims.sid,
            }
        };
        self.ensure_live(&principal.session_id, principal.account_id)
            .await?;
        self.api_calls.admit(principal.account_id, now).await?;
        Ok(principal)
    }

    /// Ends the caller's session, or all of the account's sessions.
    pub async fn logout(&self, principal: &Principal, scope: LogoutScope) -> Result<()> {
        match scope {
            LogoutScope::ThisSession => {
                self.store
                    .revoke_session(&principal.session_id, self.now(), "logout")
                    .await?;
                self.live.forget([&principal.session_id]);
                Ok(())
            }
            LogoutScope::AllSessions => {
                self.end_account_sessions(principal.account_id, None, "logout")
                    .await
            }
        }
    }
}
