//! Signing-key rotation across nodes: `sesame keys rotate` stores a newer
//! key and tells every node (notice `KeysChanged`); each node reloads its
//! key ring then, every minute in any case, and at once when a token names
//! a key it does not know (a node that rotated signs before the others have
//! heard). Retired keys (every token they signed has expired) are dropped
//! from JWKS and deleted.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::audit::AuditEventExt;
use super::clock::UnixTime;
use super::error::{Error, Result};
use super::keys::{self, KeyRing, KeyState};
use super::roles::Actor;
use super::tokens::AccessClaims;
use super::{Core, CoreSettings};
use crate::notices::Notice;
use crate::store::Store;

/// How often each node reloads its keys without being told.
const RELOAD_EVERY: Duration = Duration::from_secs(60);
/// The same for a node that hears no notices (SQLite: the CLI that rotated
/// is another process and cannot tell it).
const RELOAD_EVERY_ALONE: Duration = Duration::from_secs(5);

/// A stored key as `sesame keys list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// Key id.
    pub kid: String,
    /// JWS algorithm.
    pub algorithm: String,
    /// Creation time.
    pub created_at: UnixTime,
    /// Signing, verifying until a time, or retired.
    pub state: KeyState,
    /// Whether the private key is sealed with the key-encryption key.
    pub encrypted: bool,
}

/// How long a replaced key keeps verifying: the longest a token it signed
/// (access or ID token) can still be accepted, counted from the last moment
/// a node may still sign with it (one that missed the notice reloads within
/// [`RELOAD_EVERY`]), so that no token expires early on another node.
fn retention(settings: &CoreSettings) -> i64 {
    settings.tokens.access_ttl + settings.tokens.leeway + RELOAD_EVERY.as_secs() as i64
}

/// [`load_key_ring`] at start: a key of the configured algorithm that was
/// replaced by one of another algorithm, and has retired since (the
/// algorithm changed, then changed back, perhaps because the newer key was
/// suspect or the older one was), is not put back to sign: a new key is
/// made. (Only at start: nodes of both settings reloading during a rolling
/// change would otherwise take turns making keys.)
pub(crate) async fn start_key_ring(
    store: &dyn Store,
    settings: &CoreSettings,
    now: UnixTime,
) -> Result<KeyRing> {
    let algorithm = settings.tokens.algorithm;
    let stored = store.signing_keys().await?;
    let newest_of_algorithm = stored
        .iter()
        .position(|k| k.algorithm == algorithm.as_str());
    if let Some(position) = newest_of_algorithm
        && let Some(replaced_by) = position.checked_sub(1).and_then(|i| stored.get(i))
        && replaced_by.created_at + retention(settings) <= now
    {
        let newest = stored.first().map_or(now, |k| k.created_at);
        let created = now.max(newest + 1);
        store
            .insert_signing_key(&keys::generate_sealed(
                algorithm,
                created,
                settings.key_encryption.as_ref(),
            )?)
            .await?;
    }
    load_key_ring(store, settings, now).await
}

/// The key ring of an operator's command: the keys in service, none
/// created (see [`super::Purpose::Command`]).
pub(crate) async fn command_key_ring(
    store: &dyn Store,
    settings: &CoreSettings,
    now: UnixTime,
) -> Result<KeyRing> {
    let stored = store.signing_keys().await?;
    KeyRing::load_verifying(
        &stored,
        settings.tokens.algorithm,
        settings.key_encryption.as_ref(),
        now,
        retention(settings),
    )
}

/// Loads the key ring from the store, creating the first key if there is
/// none of the configured algorithm.
pub(crate) async fn load_key_ring(
    store: &dyn Store,
    settings: &CoreSettings,
    now: UnixTime,
) -> Result<KeyRing> {
    let ring = command_key_ring(store, settings, now).await?;
    if ring.signing_key().is_some() {
        return Ok(ring);
    }
    let kek = settings.key_encryption.as_ref();
    store
        .insert_signing_key(&keys::generate_sealed(settings.tokens.algorithm, now, kek)?)
        .await?;
    let ring = command_key_ring(store, settings, now).await?;
    match ring.signing_key() {
        Some(_) => Ok(ring),
        None => Err(Error::Internal("signing key missing after creation".into())),
    }
}

impl Core {
    fn key_retention(&self) -> i64 {
        retention(&self.settings)
    }

    /// Reads the keys again and puts them in service; deletes those retired
    /// for as long again (a clear private key replaced by a sealed one is
    /// gone from the database an access lifetime after its last token's
    /// expiry, without another rotation).
    pub async fn reload_keys(&self) -> Result<()> {
        self.reload_ring().await?;
        // Long past retirement only: every node judges by its own settings
        // and clock, and during a rolling change of `tokens.access_ttl`
        // another node may still need a key this one has retired. Never by
        // an operator's command, whose settings need not be the servers'
        // at all (a file without `[tokens]`: the default lifetime).
        if self.purpose == super::Purpose::Command {
            return Ok(());
        }
        if let Err(error) = self.delete_retired_keys(2 * self.key_retention()).await {
            tracing::warn!(%error, "could not delete retired signing keys");
        }
        Ok(())
    }

    /// Reads the keys again and puts them in service, nothing more (for a
    /// request that names a key this node lacks).
    async fn reload_ring(&self) -> Result<()> {
        let generation = self.tokens.next_ring_generation();
        let ring = load_key_ring(&*self.store, &self.settings, self.now()).await?;
        self.tokens.replace_ring(ring, generation);
        self.keys_loaded_at
            .store(self.now(), std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Deletes every stored key retired by `retention` (see
    /// [`keys::key_states`]); returns how many.
    async fn delete_retired_keys(&self, retention: i64) -> Result<usize> {
        let stored = self.store.signing_keys().await?;
        let states = keys::key_states(
            &stored,
            self.settings.tokens.algorithm,
            self.now(),
            retention,
        );
        let retired: Vec<String> = stored
            .into_iter()
            .zip(states)
            .filter(|(_, state)| *state == KeyState::Retired)
            .map(|(key, _)| key.kid)
            .collect();
        for kid in &retired {
            self.store.delete_signing_key(kid).await?;
        }
        Ok(retired.len())
    }

    /// Reloads the keys when a token names an unknown key, at most once a
    /// second (random key ids cannot make a node hammer its database).
    pub(crate) async fn reload_keys_for_unknown_kid(&self) -> bool {
        let now = self.now();
        let last = self.keys_loaded_at.load(Ordering::Acquire);
        if now <= last
            || self
                .keys_loaded_at
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return false;
        }
        match self.reload_ring().await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, "could not reload signing keys");
                false
            }
        }
    }

    /// Every stored key and where it stands.
    pub async fn signing_keys(&self) -> Result<Vec<KeyInfo>> {
        let stored = self.store.signing_keys().await?;
        let states = keys::key_states(
            &stored,
            self.settings.tokens.algorithm,
            self.now(),
            self.key_retention(),
        );
        Ok(stored
            .iter()
            .zip(states)
            .map(|(key, state)| KeyInfo {
                kid: key.kid.clone(),
                algorithm: key.algorithm.clone(),
                created_at: key.created_at,
                state,
                encrypted: keys::is_sealed(&key.private_der),
            })
            .collect())
    }

    /// Creates a new signing key of the configured algorithm, published at
    /// once and signing (on every node) `keys::PUBLISH_AHEAD` seconds
    /// later, or at once if `at_once` (a key thought stolen: relying
    /// parties with a cached JWKS refuse the new tokens until they fetch
    /// it again); deletes keys that are retired. Returns the new key.
    pub async fn rotate_keys(&self, actor: &Actor, at_once: bool) -> Result<KeyInfo> {
        let kek = self.settings.key_encryption.as_ref();
        // The newest key signs: a rotation within the second the current
        // key was made must still come out newer.
        let newest = self
            .store
            .signing_keys()
            .await?
            .first()
            .map(|k| k.created_at);
        let created = newest.map_or(self.now(), |newest| self.now().max(newest + 1));
        let mut key = keys::generate_sealed(self.settings.tokens.algorithm, created, kek)?;
        if !at_once {
            key.signs_from = created + keys::PUBLISH_AHEAD;
        }
        self.store.insert_signing_key(&key).await?;
        // Long past retirement only, as the nodes' reloads do; never from
        // the CLI (see `reload_keys`).
        let retired = if self.purpose == super::Purpose::Serve {
            self.delete_retired_keys(2 * self.key_retention()).await?
        } else {
            0
        };
        self.reload_keys().await?;
        self.publish(&Notice::KeysChanged).await;
        self.audit
            .record(actor.event("keys_rotated").detail(format!(
                "new key {}, signing {}; {} retired key(s) deleted",
                key.kid,
                if at_once {
                    "at once".to_owned()
                } else {
                    format!("in {} s", keys::PUBLISH_AHEAD)
                },
                retired
            )));
        self.signing_keys()
            .await?
            .into_iter()
            .find(|k| k.kid == key.kid)
            .ok_or_else(|| Error::Internal("new key missing after rotation".into()))
    }

    /// Reloads the keys when told (a notice) and every minute.
    pub fn spawn_key_reloader(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let every = if self.notices.is_shared() {
            RELOAD_EVERY
        } else {
            RELOAD_EVERY_ALONE
        };
        tokio::spawn(async move {
            loop {
                let Some(core) = weak.upgrade() else { return };
                let caches = Arc::clone(&core.caches);
                drop(core);
                let _ = tokio::time::timeout(every, caches.keys_changed.notified()).await;
                let Some(core) = weak.upgrade() else { return };
                if let Err(error) = core.reload_keys().await {
                    tracing::warn!(%error, "could not reload signing keys");
                }
            }
        });
    }
}

impl Core {
    /// Verifies an access token; a token naming a key this node has not
    /// loaded yet makes it reload its keys once and try again.
    pub(crate) async fn verify_access(
        &self,
        token: &str,
        now: UnixTime,
    ) -> Result<Arc<AccessClaims>> {
        match self.tokens.verify(token, now) {
            Err(Error::Unauthenticated)
                if !self.tokens.knows_key_of(token) && self.reload_keys_for_unknown_kid().await =>
            {
                self.tokens.verify(token, now)
            }
            result => result,
        }
    }
}
