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
use super::keys::{KeyEncryptionKey, is_sealed};
use super::tokens::hash_token;
use crate::limits::{Charge, Charged, FailureLimiter, LimitsError, Rule};
use crate::store::{Account, AccountId, ClientKind, Store};

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
    /// Leading bits of an IPv6 address that make one client for the
    /// address budget (one client holds a whole /64; 128: each address).
    pub ipv6_prefix: u8,
    /// Refresh budget per session on each node (burst 0: none): a client
    /// looping a refresh token would otherwise write a spent token and an
    /// audit event per turn, as fast as the node answers. Refusals come
    /// before the rotation is written, except for a token another node
    /// issued (see `login::rotate_in`).
    pub refresh_rule: Rule,
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
            ipv6_prefix: 64,
            refresh_rule: Rule {
                burst: 20,
                interval: 2,
            },
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

/// How a client is known to an account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Recognition {
    /// It presented a device token this account issued it.
    pub device: bool,
    /// Its address signed in to this account before.
    pub address: bool,
}

impl Recognition {
    /// Known either way: exempt from the account budget and the lockout.
    pub fn known(self) -> bool {
        self.device || self.address
    }
}

/// The limiter key of a client address.
pub(crate) fn address_key(client: &ClientInfo, ipv6_prefix: u8) -> Option<String> {
    client.ip.map(|ip| match ip {
        std::net::IpAddr::V4(ip) => format!("ip:{ip}"),
        std::net::IpAddr::V6(ip) => match embedded_ipv4(ip) {
            // An IPv4 client seen through IPv6 (mapped, or NAT64): itself.
            Some(v4) => format!("ip:{v4}"),
            // One IPv6 client holds a whole /64 (a home line, a cloud
            // instance) and may send each request from another address in it.
            None => {
                let bits = u32::from(ipv6_prefix.clamp(1, 128));
                let mask = u128::MAX << (128 - bits);
                let prefix = std::net::Ipv6Addr::from(u128::from(ip) & mask);
                format!("ip:{prefix}/{bits}")
            }
        },
    })
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`) or NAT64
/// (`64:ff9b::a.b.c.d`, RFC 6052) address: many IPv4 clients share such a
/// /64, each is one client.
fn embedded_ipv4(ip: std::net::Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let bits = u128::from(ip);
    (bits >> 32 == 0x0064_ff9b_0000_0000_0000_0000)
        .then(|| std::net::Ipv4Addr::from(u32::try_from(bits & 0xffff_ffff).unwrap_or_default()))
}

/// How login names that match no account are named in the limiter.
///
/// People type passwords into the login field, and with Redis the limiter's
/// keys are stored in another server, readable by whoever can read it. A
/// plain digest of the name could be tested there against guesses of
/// passwords and of who has no account; an HMAC under a secret held in the
/// database cannot be without that secret too. Every node must name a name
/// alike, or its budget would be one per node: the secret is the
/// deployment's, made once and stored (`Store::deployment_secret`).
#[derive(Clone)]
pub(crate) struct LimiterNames(aws_lc_rs::hmac::Key);

impl LimiterNames {
    /// The name of the secret in the store.
    const SECRET: &'static str = "limiter-names";
    /// What the sealed secret is bound to (AES-GCM's associated data), so
    /// that no other sealed value can be passed off as it.
    const SEALED_AS: &'static str = "deployment-secret:limiter-names";

    /// The deployment's, read from the store (made and stored by the first
    /// process to need it). With a key-encryption key it is made sealed, as
    /// signing keys are; a secret stored in the clear before one was
    /// configured is used as it is.
    pub(crate) async fn of_deployment(
        store: &dyn Store,
        kek: Option<&KeyEncryptionKey>,
        now: UnixTime,
    ) -> Result<Self> {
        let mut fresh = [0u8; 32];
        aws_lc_rs::rand::fill(&mut fresh)
            .map_err(|_| Error::Internal("no randomness for the limiter's secret".into()))?;
        let offered = match kek {
            Some(kek) => kek.seal(Self::SEALED_AS, &fresh)?,
            None => fresh.to_vec(),
        };
        let stored = store.deployment_secret(Self::SECRET, &offered, now).await?;
        let what = format!("the deployment secret {}", Self::SECRET);
        let secret = match (is_sealed(&stored), kek) {
            (false, _) => stored,
            (true, Some(kek)) => kek.open_as(Self::SEALED_AS, &what, &stored)?,
            (true, None) => {
                return Err(Error::Internal(format!(
                    "{what} is encrypted: configure the key-encryption key \
                     (SESAME_KEY_ENCRYPTION_KEY or key_encryption_key_file)"
                )));
            }
        };
        if secret.len() < 32 {
            return Err(Error::Internal(format!(
                "the deployment secret {} is {} bytes, fewer than 32",
                Self::SECRET,
                secret.len()
            )));
        }
        Ok(Self::with_secret(&secret))
    }

    /// A secret of this process alone, for a process that signs nobody in
    /// (an operator's command): names it keyed would match no other's.
    pub(crate) fn of_process() -> Result<Self> {
        let mut secret = [0u8; 32];
        aws_lc_rs::rand::fill(&mut secret)
            .map_err(|_| Error::Internal("no randomness for the limiter's secret".into()))?;
        Ok(Self::with_secret(&secret))
    }

    fn with_secret(secret: &[u8]) -> Self {
        Self(aws_lc_rs::hmac::Key::new(
            aws_lc_rs::hmac::HMAC_SHA256,
            secret,
        ))
    }

    /// The limiter key of an account, or of a login name that matches none.
    /// A name that is a mobile number counts in its compared form, as the
    /// lookup finds it: `138-8888-8888` and `13888888888` are one budget
    /// whether or not an account has that number, or throttling would tell.
    pub(crate) fn account_key(
        &self,
        account: Option<&Account>,
        login: &super::domain::LoginId,
    ) -> String {
        match account {
            Some(account) => account_key_of(account.id),
            None => {
                let tag = match login.as_mobile() {
                    Some(mobile) => aws_lc_rs::hmac::sign(&self.0, mobile.as_bytes()),
                    None => aws_lc_rs::hmac::sign(&self.0, login.key().as_bytes()),
                };
                format!("login:{}", hex::encode(&tag.as_ref()[..16]))
            }
        }
    }
}

/// The sign-in failure budget of an existing account.
pub(crate) fn account_key_of(id: AccountId) -> String {
    format!("account:{id}")
}

impl Core {
    /// Charges one attempt to the key's budget under the rule, or says (as
    /// an error) how many seconds it must wait.
    pub(crate) async fn charge_budget(
        &self,
        key: &str,
        rule: &Rule,
        now: UnixTime,
    ) -> Result<Charge> {
        match self.limiter.try_charge(key, rule, now).await? {
            Charged::Wait(wait) => Err(Error::Throttled {
                retry_after_secs: wait,
            }),
            Charged::Yes(charge) => Ok(charge),
        }
    }

    /// Charges one to a budget kept in this node's memory alone (a
    /// session's: its refreshes, its codes by single sign-on), or says (as
    /// an error) how many seconds it must wait.
    pub(crate) async fn charge_here(&self, key: &str, rule: &Rule, now: UnixTime) -> Result<()> {
        match self.session_budgets.try_charge(key, rule, now).await? {
            Charged::Wait(wait) => Err(Error::Throttled {
                retry_after_secs: wait,
            }),
            Charged::Yes(_) => Ok(()),
        }
    }

    /// Gives back an attempt charged by [`Self::charge_budget`] that was
    /// not a failure. A refund that fails leaves the attempt counted:
    /// logged, never an error of the login.
    pub(crate) async fn refund_budget(&self, key: &str, rule: &Rule, charge: Charge) {
        if let Err(error) = self.limiter.refund(key, rule, charge, self.now()).await {
            tracing::warn!(%error, "could not refund a failure budget");
        }
    }

    /// Seconds the key must wait under the rule, as an error (nothing charged).
    pub(crate) async fn check_budget(&self, key: &str, rule: &Rule, now: UnixTime) -> Result<()> {
        match self.limiter.blocked_for(key, rule, now).await? {
            Some(wait) => Err(Error::Throttled {
                retry_after_secs: wait,
            }),
            None => Ok(()),
        }
    }

    /// The account a login names, and how this client is known to it.
    pub(crate) async fn find_for_login(
        &self,
        attempt: &super::login::LoginAttempt,
    ) -> Result<(Option<Account>, Recognition)> {
        let device = attempt
            .client
            .device_token
            .as_ref()
            .map(|token| device_key(token));
        let address = attempt
            .client
            .ip
            .filter(|_| attempt.address_is_the_users())
            .map(|ip| ip.to_string());
        let found = self
            .store
            .find_account_for_login(
                attempt.login.key(),
                attempt.login.as_mobile().as_deref(),
                device.as_deref(),
                address.as_deref(),
            )
            .await?;
        Ok(match found {
            Some(found) => (
                Some(found.account),
                Recognition {
                    device: found.known_device,
                    address: !found.known_device && found.known_address,
                },
            ),
            None => (None, Recognition::default()),
        })
    }

    /// The clients to remember after a successful login: its address
    /// (unless `address` is false: not the user's) and its device token,
    /// with a new device token when the client presented no valid one
    /// (returned, to hand to the client).
    pub(crate) fn clients_to_remember(
        &self,
        client: &ClientInfo,
        recognised: Recognition,
        address: bool,
    ) -> (Vec<(ClientKind, String)>, Option<String>) {
        let mut clients = Vec::with_capacity(2);
        if let Some(ip) = client.ip.filter(|_| address) {
            clients.push((ClientKind::Address, ip.to_string()));
        }
        let presented = client.device_token.as_ref().filter(|_| recognised.device);
        let (token, issued) = match presented {
            Some(token) => (token.clone(), None),
            None => {
                let token = super::tokens::random_urlsafe(32);
                (token.clone(), Some(token))
            }
        };
        clients.push((ClientKind::Device, device_key(&token)));
        (clients, issued)
    }
}

/// How a device token is known to an account: its hash, hex (the token
/// itself is never stored).
pub(crate) fn device_key(token: &str) -> String {
    hex::encode(hash_token(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(ip: &str) -> Option<String> {
        key_with(ip, 64)
    }

    fn key_with(ip: &str, prefix: u8) -> Option<String> {
        address_key(
            &ClientInfo {
                ip: Some(ip.parse().unwrap()),
                ..ClientInfo::default()
            },
            prefix,
        )
    }

    /// A name that matches no account (often a password typed into the
    /// login field) is kept in the limiter only as a keyed digest, which
    /// another secret makes another: a reader of the limiter's keys cannot
    /// test a guess of the name. A mobile number in any of its written
    /// forms is one budget.
    #[test]
    fn unknown_names_are_kept_as_keyed_digests() {
        use super::super::domain::LoginId;
        let names = LimiterNames::with_secret(&[7; 32]);
        let key = |name: &str| names.account_key(None, &LoginId::parse(name).unwrap());
        let typed = key("hunter2-Secret");
        assert!(typed.starts_with("login:") && typed.len() == "login:".len() + 32);
        assert!(!typed.to_lowercase().contains("hunter2"), "{typed}");
        // Not the plain digest of the name (what an earlier Sesame stored).
        let plain = hash_token(LoginId::parse("hunter2-Secret").unwrap().key());
        assert_ne!(typed, format!("login:{}", hex::encode(&plain[..16])));
        assert_eq!(key("138-8888-8888"), key("13888888888"));
        assert_ne!(key("alice"), key("alicf"));
        // The same name under the same secret: the same budget, on any node.
        assert_eq!(
            key("alice"),
            LimiterNames::with_secret(&[7; 32])
                .account_key(None, &LoginId::parse("alice").unwrap())
        );
        // Under another deployment's secret: another key.
        let other = LimiterNames::with_secret(&[8; 32]);
        assert_ne!(
            key("alice"),
            other.account_key(None, &LoginId::parse("alice").unwrap())
        );
    }

    /// With a key-encryption key the secret is stored sealed, opens only
    /// with that key, and names a name as before on every start; one stored
    /// in the clear before a key was configured is used as it is.
    #[tokio::test]
    async fn the_deployment_secret_is_sealed_with_the_key_encryption_key() {
        use super::super::domain::LoginId;
        use crate::store::KeyStore;
        use crate::store::sqlite::SqliteStore;
        let name = LoginId::parse("nobody-here").unwrap();
        async fn open(dir: &std::path::Path) -> SqliteStore {
            SqliteStore::connect(&SqliteStore::url_for_data_dir(dir))
                .await
                .unwrap()
        }
        let kek = KeyEncryptionKey::parse(&"ab".repeat(32)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        let first = LimiterNames::of_deployment(&store, Some(&kek), 5)
            .await
            .unwrap();
        let stored = store
            .deployment_secret(LimiterNames::SECRET, &[0; 32], 5)
            .await
            .unwrap();
        assert!(is_sealed(&stored), "stored sealed");
        let again = LimiterNames::of_deployment(&store, Some(&kek), 6)
            .await
            .unwrap();
        assert_eq!(
            first.account_key(None, &name),
            again.account_key(None, &name)
        );
        let without = LimiterNames::of_deployment(&store, None, 6)
            .await
            .err()
            .unwrap();
        assert!(
            without.to_string().contains("SESAME_KEY_ENCRYPTION_KEY"),
            "{without}"
        );
        let other = KeyEncryptionKey::parse(&"cd".repeat(32)).unwrap();
        let other = LimiterNames::of_deployment(&store, Some(&other), 6)
            .await
            .err()
            .unwrap();
        assert!(other.to_string().contains("does not open"), "{other}");

        let clear = tempfile::tempdir().unwrap();
        let store = open(clear.path()).await;
        let before = LimiterNames::of_deployment(&store, None, 5).await.unwrap();
        let after = LimiterNames::of_deployment(&store, Some(&kek), 6)
            .await
            .unwrap();
        assert_eq!(
            before.account_key(None, &name),
            after.account_key(None, &name)
        );
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_64_bit_prefix() {
        assert_eq!(key_of("192.0.2.7").as_deref(), Some("ip:192.0.2.7"));
        assert_eq!(
            key_of("2001:db8:1:2:aaaa:bbbb:cccc:dddd").as_deref(),
            Some("ip:2001:db8:1:2::/64")
        );
        assert_eq!(key_of("2001:db8:1:2::1"), key_of("2001:db8:1:2:ffff::9"));
        assert_ne!(key_of("2001:db8:1:2::1"), key_of("2001:db8:1:3::1"));
        // IPv4 clients seen through IPv6 are each themselves.
        assert_eq!(
            key_of("::ffff:198.51.100.7").as_deref(),
            Some("ip:198.51.100.7")
        );
        assert_eq!(
            key_of("64:ff9b::198.51.100.8").as_deref(),
            Some("ip:198.51.100.8")
        );
        assert_eq!(address_key(&ClientInfo::default(), 64), None);
        // Another prefix length, for networks that hand out more or less.
        assert_eq!(
            key_with("2001:db8:1:2:aaaa::1", 128).as_deref(),
            Some("ip:2001:db8:1:2:aaaa::1/128")
        );
        assert_eq!(
            key_with("2001:db8:1:2:aaaa::1", 48).as_deref(),
            Some("ip:2001:db8:1::/48")
        );
    }
}
