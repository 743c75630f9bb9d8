//! Brute-force protection settings and the checks the login path makes.
//!
//! Two failure budgets, both in the shared [`FailureLimiter`]: one per client
//! address, checked before any hashing (so an attacker's address stays
//! throttled even when it then guesses right), and one per account (or per
//! login name when there is no such account, so throttling cannot tell the
//! two apart). Clients that signed in to the account before, by address or
//! by a device token Sesame issued them, skip the account budget and the
//! lockout: failures from elsewhere cannot lock the owner out.

use super::ClientInfo;
use super::Core;
use super::clock::UnixTime;
use super::error::{Error, Result};
use super::tokens::hash_token;
use crate::limits::{LimitsError, Rule};
use crate::store::{Account, ClientKind};

/// Brute-force protection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbuseSettings {
    /// Failure budget per client address.
    pub address_rule: Rule,
    /// Failure budget per account (or unknown login name).
    pub account_rule: Rule,
    /// Consecutive failures from unknown clients that lock the account for
    /// unknown clients until an operator unlocks it or its owner signs in
    /// from a known client.
    pub lockout_threshold: i64,
    /// Known addresses and device tokens remembered per account.
    pub known_clients_kept: u32,
    /// Days audit events are kept.
    pub audit_retention_days: i64,
    /// Refuse new passwords found in the common-password list.
    pub refuse_common_passwords: bool,
}

impl Default for AbuseSettings {
    fn default() -> Self {
        Self {
            address_rule: Rule {
                burst: 20,
                interval: 30,
            },
            account_rule: Rule {
                burst: 5,
                interval: 60,
            },
            lockout_threshold: 50,
            known_clients_kept: 20,
            audit_retention_days: 90,
            refuse_common_passwords: true,
        }
    }
}

impl From<LimitsError> for Error {
    fn from(error: LimitsError) -> Self {
        Error::Internal(error.to_string())
    }
}

/// The limiter key of a client address.
pub(crate) fn address_key(client: &ClientInfo) -> Option<String> {
    client.ip.map(|ip| format!("ip:{ip}"))
}

/// The limiter key of an account, or of a login name that matches none.
pub(crate) fn account_key(account: Option<&Account>, login_key: &str) -> String {
    match account {
        Some(account) => format!("account:{}", account.id),
        None => format!("login:{login_key}"),
    }
}

impl Core {
    /// Seconds the key must wait under the rule, as an error.
    pub(crate) async fn check_budget(&self, key: &str, rule: &Rule, now: UnixTime) -> Result<()> {
        match self.limiter.blocked_for(key, rule, now).await? {
            Some(wait) => Err(Error::Throttled {
                retry_after_secs: wait,
            }),
            None => Ok(()),
        }
    }

    /// Whether this client signed in to the account before.
    pub(crate) async fn is_known_client(
        &self,
        account: &Account,
        client: &ClientInfo,
    ) -> Result<bool> {
        if let Some(token) = &client.device_token {
            let hash = hex::encode(hash_token(token));
            if self
                .store
                .is_known_client(account.id, ClientKind::Device, &hash)
                .await?
            {
                return Ok(true);
            }
        }
        match client.ip {
            Some(ip) => Ok(self
                .store
                .is_known_client(account.id, ClientKind::Address, &ip.to_string())
                .await?),
            None => Ok(false),
        }
    }

    /// Remembers the client of a successful login; returns a new device
    /// token when the client did not present a valid one.
    pub(crate) async fn remember_client(
        &self,
        account: &Account,
        client: &ClientInfo,
        known_device: bool,
    ) -> Result<Option<String>> {
        let now = self.now();
        let keep = self.settings.abuse.known_clients_kept;
        if let Some(ip) = client.ip {
            self.store
                .remember_client(account.id, ClientKind::Address, &ip.to_string(), now, keep)
                .await?;
        }
        if known_device && let Some(token) = &client.device_token {
            let hash = hex::encode(hash_token(token));
            self.store
                .remember_client(account.id, ClientKind::Device, &hash, now, keep)
                .await?;
            return Ok(None);
        }
        let token = super::tokens::random_urlsafe(32);
        let hash = hex::encode(hash_token(&token));
        self.store
            .remember_client(account.id, ClientKind::Device, &hash, now, keep)
            .await?;
        Ok(Some(token))
    }
}
