//! The four operations every face is built on: log in, refresh, log out and
//! authenticate a bearer token.

use super::clock::UnixTime;
use super::domain::{LoginId, Password, Platform};
use super::error::{Error, Result};
use super::sessions::PlatformPolicy;
use super::tokens::{hash_token, new_refresh_token, new_successor_salt, successor_token};
use super::{ClientInfo, Core};
use crate::store::{
    Account, AccountStatus, NewRefreshToken, NewSession, PasswordVerifiers, SessionId, TokenStyle,
};

/// A login attempt, already parsed by its face.
#[derive(Debug, Clone)]
pub struct LoginAttempt {
    /// Username, email or mobile.
    pub login: LoginId,
    /// The presented password.
    pub password: Password,
    /// Device platform; the configured default when absent.
    pub platform: Option<Platform>,
    /// Transport details of the caller.
    pub client: ClientInfo,
}

/// What a successful login or refresh hands back.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The account, as of the login.
    pub account: Account,
    /// The session.
    pub session_id: SessionId,
    /// The access token.
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
    /// Roles at token issue.
    pub roles: Vec<String>,
}

/// Which sessions a logout ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogoutScope {
    /// The caller's session.
    ThisSession,
    /// Every session of the account.
    AllSessions,
}

impl Core {
    /// Checks a login and password and opens a session.
    ///
    /// Unknown account, wrong password and an account that may not sign in
    /// all fail with the same [`Error::InvalidCredentials`] after the same
    /// amount of hashing.
    pub async fn login(&self, attempt: LoginAttempt) -> Result<Grant> {
        let account = self
            .store
            .find_account_by_login(attempt.login.key(), attempt.login.as_mobile().as_deref())
            .await?;
        let Some(account) = account else {
            self.hasher.verify_dummy(&attempt.password).await?;
            return Err(Error::InvalidCredentials);
        };
        let check = self
            .hasher
            .verify(&attempt.password, &account.verifiers.password_hash)
            .await?;
        if !check.matches {
            self.store.record_login_failure(account.id).await?;
            return Err(Error::InvalidCredentials);
        }
        if account.status != AccountStatus::Active {
            return Err(Error::InvalidCredentials);
        }
        if check.needs_rehash {
            self.upgrade_verifier(&account, &attempt.password).await;
        }
        let now = self.now();
        let ip = attempt.client.ip.map(|ip| ip.to_string());
        self.store
            .record_login_success(account.id, now, ip.as_deref())
            .await?;
        let platform = attempt
            .platform
            .unwrap_or_else(|| self.settings.sessions.default_platform.clone());
        self.open_session(account.id, &platform, &attempt.client)
            .await
    }

    /// Replaces a verifier made with outdated parameters. Best effort: when
    /// the pool is busy the upgrade simply waits for the next login.
    async fn upgrade_verifier(&self, account: &Account, password: &Password) {
        let Ok(password_hash) = self.hasher.hash(password.expose()).await else {
            return;
        };
        let verifiers = PasswordVerifiers {
            password_hash,
            md5_verifier: account.verifiers.md5_verifier.clone(),
        };
        if let Err(error) = self
            .store
            .set_password(account.id, &verifiers, false, self.now())
            .await
        {
            tracing::warn!(account_id = account.id, %error, "could not upgrade password verifier");
        }
    }

    async fn open_session(
        &self,
        account_id: i64,
        platform: &Platform,
        client: &ClientInfo,
    ) -> Result<Grant> {
        let now = self.now();
        let session = NewSession {
            id: uuid::Uuid::new_v4().to_string(),
            account_id,
            platform: platform.as_str().to_owned(),
            user_agent: client.user_agent.clone(),
            ip: client.ip.map(|ip| ip.to_string()),
            token_style: TokenStyle::Jwt,
            created_at: now,
            expires_at: now + self.settings.tokens.refresh_ttl,
        };
        let refresh_token = new_refresh_token();
        let refresh = NewRefreshToken {
            hash: hash_token(&refresh_token),
            session_id: session.id.clone(),
            issued_at: now,
        };
        let single = self.settings.sessions.policy(platform) == PlatformPolicy::Single;
        let replaced = self
            .store
            .create_session(&session, &refresh, single)
            .await?;
        self.live.forget(&replaced);
        self.grant(account_id, session.id, session.expires_at, refresh_token)
            .await
    }

    /// Builds the answer for a session: a fresh access token and the account.
    async fn grant(
        &self,
        account_id: i64,
        session_id: SessionId,
        session_end: UnixTime,
        refresh_token: String,
    ) -> Result<Grant> {
        let now = self.now();
        let account = self
            .store
            .get_account(account_id)
            .await?
            .ok_or(Error::InvalidCredentials)?;
        let access_token = self
            .tokens
            .issue(account.id, &session_id, &account.roles, now)?;
        let access_ttl = self.settings.tokens.access_ttl;
        Ok(Grant {
            account,
            session_id,
            access_token,
            access_expires_in: access_ttl,
            access_expires_at: now + access_ttl,
            refresh_token,
            refresh_expires_in: session_end - now,
            refresh_expires_at: session_end,
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
        if record.rotated_at.is_none() {
            let salt = new_successor_salt();
            let successor = successor_token(refresh_token, &salt);
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
                return self
                    .grant(
                        session.account_id,
                        session.id,
                        session.expires_at,
                        successor,
                    )
                    .await;
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
                let successor = successor_token(refresh_token, &salt);
                self.grant(
                    session.account_id,
                    session.id,
                    session.expires_at,
                    successor,
                )
                .await
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

    /// Checks a bearer token and that its session is live.
    pub async fn authenticate(&self, bearer: &str) -> Result<Principal> {
        let claims = self.tokens.verify(bearer, self.now())?;
        let account_id: i64 = claims.sub.parse().map_err(|_| Error::Unauthenticated)?;
        self.ensure_live(&claims.sid, account_id).await?;
        Ok(Principal {
            account_id,
            session_id: claims.sid,
            roles: claims.roles,
        })
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
