//! Token signing keys: generation, persistence format and the JWKS document.
//!
//! A key is generated at first start for the configured algorithm and stored
//! through the [`KeyStore`](crate::store::KeyStore); `sesame keys rotate`
//! adds a newer one, which signs from then on. A key that no longer signs
//! stays loaded (and published) for verification until every token it
//! signed has expired (the access-token lifetime plus leeway after it was
//! replaced), so rotating logs nobody out. Only public parts are published.
//!
//! With a key-encryption key configured, private keys are sealed with
//! AES-256-GCM before they are stored (the key id is the associated data,
//! so a sealed key cannot be passed off as another).

use std::collections::HashMap;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::json;

use super::clock::UnixTime;
use super::error::{Error, Result};
use crate::store::SigningKey;

/// The JWS algorithms Sesame can sign with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlgorithm {
    /// Ed25519 (the default).
    EdDSA,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// RSA PKCS#1 v1.5 with SHA-256, 2048-bit keys.
    RS256,
    /// HMAC-SHA256 with a 256-bit secret; nothing is published in JWKS.
    HS256,
}

impl SigningAlgorithm {
    /// The JWS name.
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlgorithm::EdDSA => "EdDSA",
            SigningAlgorithm::ES256 => "ES256",
            SigningAlgorithm::RS256 => "RS256",
            SigningAlgorithm::HS256 => "HS256",
        }
    }

    /// Parses a JWS name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "EdDSA" => Some(SigningAlgorithm::EdDSA),
            "ES256" => Some(SigningAlgorithm::ES256),
            "RS256" => Some(SigningAlgorithm::RS256),
            "HS256" => Some(SigningAlgorithm::HS256),
            _ => None,
        }
    }

    fn jwt(self) -> Algorithm {
        match self {
            SigningAlgorithm::EdDSA => Algorithm::EdDSA,
            SigningAlgorithm::ES256 => Algorithm::ES256,
            SigningAlgorithm::RS256 => Algorithm::RS256,
            SigningAlgorithm::HS256 => Algorithm::HS256,
        }
    }
}

/// The marker in front of a sealed private key.
const SEALED: &[u8] = b"sesame-aes256gcm-v1:";

/// The key that seals private signing keys at rest: 32 bytes.
#[derive(Clone)]
pub struct KeyEncryptionKey([u8; 32]);

impl std::fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyEncryptionKey(<redacted>)")
    }
}

impl PartialEq for KeyEncryptionKey {
    fn eq(&self, other: &Self) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(&self.0, &other.0).is_ok()
    }
}

impl Eq for KeyEncryptionKey {}

impl KeyEncryptionKey {
    /// Reads 32 bytes written as 64 hex digits or as base64 (standard or
    /// URL-safe, padded or not); surrounding whitespace is ignored.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).ok()
        } else {
            let unpadded = text.trim_end_matches('=');
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(unpadded)
                .or_else(|_| URL_SAFE_NO_PAD.decode(unpadded))
                .ok()
        };
        match bytes.map(<[u8; 32]>::try_from) {
            Some(Ok(key)) => Ok(Self(key)),
            _ => Err("must be 32 bytes, as 64 hex digits or base64 \
                      (e.g. `openssl rand -hex 32`)"
                .into()),
        }
    }

    fn cipher(&self) -> Result<LessSafeKey> {
        UnboundKey::new(&AES_256_GCM, &self.0)
            .map(LessSafeKey::new)
            .map_err(|_| crypto_error("AES-256-GCM key"))
    }

    /// Seals a private key: marker, random nonce, ciphertext and tag.
    pub fn seal(&self, kid: &str, private: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| crypto_error("nonce"))?;
        let mut sealed = private.to_vec();
        self.cipher()?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(kid.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| crypto_error("sealing"))?;
        Ok([SEALED, &nonce[..], &sealed].concat())
    }

    fn open(&self, kid: &str, stored: &[u8]) -> Result<Vec<u8>> {
        self.open_as(kid, &format!("signing key {kid}"), stored)
    }

    /// Opens what [`Self::seal`] sealed under `aad`; `what` names it in
    /// errors.
    pub(crate) fn open_as(&self, aad: &str, what: &str, stored: &[u8]) -> Result<Vec<u8>> {
        let body = stored.get(SEALED.len()..).unwrap_or_default();
        if body.len() < NONCE_LEN {
            return Err(Error::Internal(format!("sealed {what} is truncated")));
        }
        let (nonce, sealed) = body.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| crypto_error("nonce"))?;
        let mut buffer = sealed.to_vec();
        let plain = self
            .cipher()?
            .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut buffer)
            .map_err(|_| {
                Error::Internal(format!(
                    "{what} does not open with the configured key-encryption key \
                     (was it changed?)"
                ))
            })?;
        Ok(plain.to_vec())
    }
}

/// Whether a stored private key is sealed.
pub fn is_sealed(private: &[u8]) -> bool {
    private.starts_with(SEALED)
}

/// The private key of `key` in the clear: opened with `kek` if sealed.
fn private_of(key: &SigningKey, kek: Option<&KeyEncryptionKey>) -> Result<Vec<u8>> {
    if !is_sealed(&key.private_der) {
        return Ok(key.private_der.clone());
    }
    match kek {
        Some(kek) => kek.open(&key.kid, &key.private_der),
        None => Err(Error::Internal(format!(
            "signing key {} is encrypted: configure the key-encryption key \
             (SESAME_KEY_ENCRYPTION_KEY or key_encryption_key_file)",
            key.kid
        ))),
    }
}

/// Seconds a JWKS answer may be kept (`Cache-Control: max-age`).
pub const JWKS_MAX_AGE: i64 = 300;

/// Seconds a rotated key is published before it signs: a relying party's
/// cached JWKS has expired by then, and every node has reloaded its keys
/// (each minute) to publish it.
pub const PUBLISH_AHEAD: i64 = JWKS_MAX_AGE + 60;

/// Where a stored key stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Published (it verifies), and signs new tokens from this time.
    Next(UnixTime),
    /// Signs new tokens.
    Signing,
    /// Only verifies, until this time.
    VerifyingUntil(UnixTime),
    /// Every token it signed has expired: it is dropped.
    Retired,
}

/// When a key starts signing.
fn start(key: &SigningKey) -> UnixTime {
    key.signs_from.max(key.created_at)
}

/// The state of each stored key (newest first, as stored): the newest key
/// of `algorithm` whose time has come signs (failing that, when its keys
/// are all still to come, the oldest of them); newer ones of `algorithm`
/// are next; any other verifies until `retention` seconds after the next
/// newer key started signing.
pub fn key_states(
    stored: &[SigningKey],
    algorithm: SigningAlgorithm,
    now: UnixTime,
    retention: i64,
) -> Vec<KeyState> {
    let of_algorithm = |k: &SigningKey| k.algorithm == algorithm.as_str();
    let signing = stored
        .iter()
        .position(|k| of_algorithm(k) && start(k) <= now)
        .or_else(|| stored.iter().rposition(of_algorithm));
    stored
        .iter()
        .enumerate()
        .map(|(i, key)| {
            if Some(i) == signing {
                return KeyState::Signing;
            }
            if signing.is_some_and(|s| i < s) && of_algorithm(key) {
                return KeyState::Next(start(key));
            }
            match i.checked_sub(1).map(|newer| start(&stored[newer])) {
                None => KeyState::Signing,
                Some(replaced) if replaced + retention > now => {
                    KeyState::VerifyingUntil(replaced + retention)
                }
                Some(_) => KeyState::Retired,
            }
        })
        .collect()
}

fn crypto_error(what: &str) -> Error {
    Error::Internal(format!("key generation failed: {what}"))
}

/// Generates a new key of `algorithm`, ready to store: sealed with `kek`
/// when one is configured.
pub fn generate_sealed(
    algorithm: SigningAlgorithm,
    now: UnixTime,
    kek: Option<&KeyEncryptionKey>,
) -> Result<SigningKey> {
    let mut key = generate(algorithm, now)?;
    if let Some(kek) = kek {
        key.private_der = kek.seal(&key.kid, &key.private_der)?;
    }
    Ok(key)
}

/// Generates a new key of `algorithm`, in the clear.
pub fn generate(algorithm: SigningAlgorithm, now: UnixTime) -> Result<SigningKey> {
    let rng = SystemRandom::new();
    let mut kid_bytes = [0u8; 12];
    rng.fill(&mut kid_bytes).map_err(|_| crypto_error("kid"))?;
    let kid = URL_SAFE_NO_PAD.encode(kid_bytes);
    let (private_der, public) = match algorithm {
        SigningAlgorithm::EdDSA => {
            let pkcs8 =
                Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| crypto_error("Ed25519"))?;
            let pair =
                Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| crypto_error("Ed25519"))?;
            let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
            (
                pkcs8.as_ref().to_vec(),
                Some(json!({"kty": "OKP", "crv": "Ed25519", "x": x})),
            )
        }
        SigningAlgorithm::ES256 => {
            let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(alg, &rng).map_err(|_| crypto_error("P-256"))?;
            let pair =
                EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref()).map_err(|_| crypto_error("P-256"))?;
            // Uncompressed point: 0x04 || x (32 bytes) || y (32 bytes).
            let point = pair.public_key().as_ref();
            if point.len() != 65 {
                return Err(crypto_error("P-256 point"));
            }
            let (x, y) = (
                URL_SAFE_NO_PAD.encode(&point[1..33]),
                URL_SAFE_NO_PAD.encode(&point[33..]),
            );
            (
                pkcs8.as_ref().to_vec(),
                Some(json!({"kty": "EC", "crv": "P-256", "x": x, "y": y})),
            )
        }
        SigningAlgorithm::RS256 => {
            let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(|_| crypto_error("RSA"))?;
            let pkcs8 = pair.as_der().map_err(|_| crypto_error("RSA encoding"))?;
            let pkcs1 =
                pkcs8_inner_key(pkcs8.as_ref()).ok_or_else(|| crypto_error("RSA PKCS#8"))?;
            let public = pair.public_key();
            let n = URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero());
            let e = URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero());
            (pkcs1.to_vec(), Some(json!({"kty": "RSA", "n": n, "e": e})))
        }
        SigningAlgorithm::HS256 => {
            let mut secret = vec![0u8; 32];
            rng.fill(&mut secret)
                .map_err(|_| crypto_error("HS256 secret"))?;
            (secret, None)
        }
    };
    let public_jwk = match public {
        Some(mut jwk) => {
            jwk["kid"] = json!(kid);
            jwk["alg"] = json!(algorithm.as_str());
            jwk["use"] = json!("sig");
            jwk.to_string()
        }
        None => String::new(),
    };
    Ok(SigningKey {
        kid,
        algorithm: algorithm.as_str().to_owned(),
        private_der,
        public_jwk,
        created_at: now,
        signs_from: now,
    })
}

/// Returns the private key inside a PKCS#8 `PrivateKeyInfo` (RFC 5208):
/// `SEQUENCE { INTEGER version, SEQUENCE algorithm, OCTET STRING key }`.
/// jsonwebtoken signs RS256 with a PKCS#1 key, which is that octet string.
fn pkcs8_inner_key(der: &[u8]) -> Option<&[u8]> {
    let (tag, body, _) = der_element(der)?;
    if tag != 0x30 {
        return None;
    }
    let (version_tag, _, rest) = der_element(body)?;
    let (algorithm_tag, _, rest) = der_element(rest)?;
    let (key_tag, key, _) = der_element(rest)?;
    (version_tag == 0x02 && algorithm_tag == 0x30 && key_tag == 0x04).then_some(key)
}

/// Splits one DER element into (tag, contents, rest).
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first & 0x80 == 0 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (len_bytes, rest) = rest.split_at(count);
        (
            len_bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b)),
            rest,
        )
    };
    if rest.len() < len {
        return None;
    }
    let (body, rest) = rest.split_at(len);
    Some((tag, body, rest))
}

/// A key ready to sign or verify.
pub struct LoadedKey {
    /// Key id.
    pub kid: String,
    /// Its one algorithm: tokens naming another are refused.
    pub algorithm: Algorithm,
    /// For signing.
    pub signer: Signer,
    /// For verification.
    pub decoding: DecodingKey,
}

/// A private key, parsed once when it is loaded.
///
/// Parsing one costs about as much as a signature: an Ed25519 seed is
/// expanded by a scalar multiplication, an RSA key is checked. Signing
/// through `jsonwebtoken::encode` parses the key anew for every token.
pub enum Signer {
    /// HS256 (boxed: the key holds its precomputed pad states).
    Hmac(Box<hmac::Key>),
    /// EdDSA (Ed25519).
    Ed25519(Ed25519KeyPair),
    /// ES256: fixed-length `r || s`, as JWS wants it.
    Ecdsa(EcdsaKeyPair),
    /// RS256.
    Rsa(RsaKeyPair),
}

impl Signer {
    fn parse(algorithm: SigningAlgorithm, private: &[u8]) -> Option<Self> {
        Some(match algorithm {
            SigningAlgorithm::HS256 => {
                Self::Hmac(Box::new(hmac::Key::new(hmac::HMAC_SHA256, private)))
            }
            SigningAlgorithm::EdDSA => Self::Ed25519(Ed25519KeyPair::from_pkcs8(private).ok()?),
            SigningAlgorithm::ES256 => Self::Ecdsa(
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, private)
                    .ok()?,
            ),
            SigningAlgorithm::RS256 => Self::Rsa(RsaKeyPair::from_der(private).ok()?),
        })
    }

    /// The JWS signature of `message` (the encoded header and claims).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        let failed = || Error::Internal("signing failed".into());
        Ok(match self {
            Self::Hmac(key) => hmac::sign(key, message).as_ref().to_vec(),
            Self::Ed25519(pair) => pair.sign(message).as_ref().to_vec(),
            Self::Ecdsa(pair) => pair
                .sign(&SystemRandom::new(), message)
                .map_err(|_| failed())?
                .as_ref()
                .to_vec(),
            Self::Rsa(pair) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    message,
                    &mut signature,
                )
                .map_err(|_| failed())?;
                signature
            }
        })
    }
}

/// The loaded keys: the one that signs, every one that verifies, and the
/// JWKS document, rendered once.
pub struct KeyRing {
    /// `None` in an operator's command that found no key of its algorithm
    /// ([`KeyRing::load_verifying`]): it signs nothing.
    signing: Option<String>,
    /// The key that signs next, and from when (published already): the
    /// ring turns to it then, without waiting for its next load.
    next: Option<(String, UnixTime)>,
    keys: HashMap<String, LoadedKey>,
    jwks: std::sync::Arc<serde_json::Value>,
}

impl KeyRing {
    /// Loads stored keys; the newest key of `algorithm` signs. Returns `None`
    /// when there is no key of that algorithm yet (the caller generates one).
    pub fn load(stored: &[SigningKey], algorithm: SigningAlgorithm) -> Result<Option<Self>> {
        // Every key's time has come, none has retired.
        Self::load_current(stored, algorithm, None, i64::MAX / 4, i64::MAX / 2)
    }

    /// Loads the keys that are not retired at `now` (see [`key_states`]),
    /// opening sealed ones with `kek`.
    pub fn load_current(
        stored: &[SigningKey],
        algorithm: SigningAlgorithm,
        kek: Option<&KeyEncryptionKey>,
        now: UnixTime,
        retention: i64,
    ) -> Result<Option<Self>> {
        let ring = Self::load_verifying(stored, algorithm, kek, now, retention)?;
        Ok(ring.signing.is_some().then_some(ring))
    }

    /// [`KeyRing::load_current`], also when no key of `algorithm` exists
    /// (then nothing signs): for the operator's commands, which sign no
    /// token and must not make a key the servers would publish.
    pub fn load_verifying(
        stored: &[SigningKey],
        algorithm: SigningAlgorithm,
        kek: Option<&KeyEncryptionKey>,
        now: UnixTime,
        retention: i64,
    ) -> Result<Self> {
        let mut keys = HashMap::new();
        let mut published = Vec::new();
        let mut signing = None;
        let mut next: Option<(String, UnixTime)> = None;
        let states = key_states(stored, algorithm, now, retention);
        for (key, state) in stored.iter().zip(states) {
            if state == KeyState::Retired {
                continue;
            }
            let Some(alg) = SigningAlgorithm::parse(&key.algorithm) else {
                return Err(Error::Internal(format!(
                    "stored key {} has unknown algorithm",
                    key.kid
                )));
            };
            let loaded = load_key(key, &private_of(key, kek)?, alg)?;
            if !key.public_jwk.is_empty() {
                let jwk: serde_json::Value = serde_json::from_str(&key.public_jwk)
                    .map_err(|e| Error::Internal(format!("stored JWK {}: {e}", key.kid)))?;
                published.push(jwk);
            }
            match state {
                KeyState::Signing if alg == algorithm => signing = Some(key.kid.clone()),
                // The first to come, of those to come.
                KeyState::Next(from) if next.as_ref().is_none_or(|(_, first)| from <= *first) => {
                    next = Some((key.kid.clone(), from));
                }
                _ => {}
            }
            keys.insert(key.kid.clone(), loaded);
        }
        Ok(Self {
            signing,
            next,
            keys,
            jwks: std::sync::Arc::new(json!({ "keys": published })),
        })
    }

    /// The key that signed new tokens when the ring was loaded.
    pub fn signing_key(&self) -> Option<&LoadedKey> {
        self.keys.get(self.signing.as_ref()?)
    }

    /// The key that signs new tokens at `now`: the next one once its time
    /// has come.
    pub fn signing_key_at(&self, now: UnixTime) -> Option<&LoadedKey> {
        match &self.next {
            Some((kid, from)) if now >= *from && self.signing.is_some() => self.keys.get(kid),
            _ => self.signing_key(),
        }
    }

    /// A verification key by id.
    pub fn key(&self, kid: &str) -> Option<&LoadedKey> {
        self.keys.get(kid)
    }

    /// The JWKS document (public keys only).
    pub fn jwks(&self) -> std::sync::Arc<serde_json::Value> {
        std::sync::Arc::clone(&self.jwks)
    }
}

fn load_key(key: &SigningKey, private: &[u8], algorithm: SigningAlgorithm) -> Result<LoadedKey> {
    let bad =
        |e: jsonwebtoken::errors::Error| Error::Internal(format!("stored key {}: {e}", key.kid));
    let decoding = match algorithm {
        SigningAlgorithm::HS256 => DecodingKey::from_secret(private),
        _ => {
            let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_str(&key.public_jwk)
                .map_err(|e| Error::Internal(format!("stored JWK {}: {e}", key.kid)))?;
            DecodingKey::from_jwk(&jwk).map_err(bad)?
        }
    };
    let signer = Signer::parse(algorithm, private).ok_or_else(|| {
        Error::Internal(format!(
            "stored key {}: not a valid {} private key",
            key.kid,
            algorithm.as_str()
        ))
    })?;
    Ok(LoadedKey {
        kid: key.kid.clone(),
        algorithm: algorithm.jwt(),
        signer,
        decoding,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_algorithm_generates_a_loadable_key() {
        for alg in [
            SigningAlgorithm::EdDSA,
            SigningAlgorithm::ES256,
            SigningAlgorithm::RS256,
            SigningAlgorithm::HS256,
        ] {
            let key = generate(alg, 1).unwrap();
            let ring = KeyRing::load(std::slice::from_ref(&key), alg)
                .unwrap()
                .unwrap();
            assert_eq!(ring.signing_key().unwrap().kid, key.kid);
            let published = ring.jwks()["keys"].as_array().unwrap().len();
            assert_eq!(published, usize::from(alg != SigningAlgorithm::HS256));
        }
    }

    #[test]
    fn sealed_keys_open_only_with_their_kek_and_kid() {
        let kek = KeyEncryptionKey::parse(&"ab".repeat(32)).unwrap();
        let other = KeyEncryptionKey::parse(&URL_SAFE_NO_PAD.encode([7u8; 32])).unwrap();
        assert!(KeyEncryptionKey::parse("too short").is_err());
        let key = generate_sealed(SigningAlgorithm::EdDSA, 1, Some(&kek)).unwrap();
        assert!(is_sealed(&key.private_der));
        let load = |k: Option<&KeyEncryptionKey>, key: &SigningKey| {
            KeyRing::load_current(std::slice::from_ref(key), SigningAlgorithm::EdDSA, k, 1, 60)
        };
        assert!(load(Some(&kek), &key).unwrap().is_some());
        assert!(load(None, &key).is_err());
        assert!(load(Some(&other), &key).is_err());
        let mut renamed = key.clone();
        renamed.kid = "another".into();
        assert!(
            load(Some(&kek), &renamed).is_err(),
            "the kid is bound to the sealed key"
        );
    }

    #[test]
    fn replaced_keys_verify_for_the_retention_then_retire() {
        let alg = SigningAlgorithm::EdDSA;
        // Newest first, as the store lists them.
        let keys = [generate(alg, 200).unwrap(), generate(alg, 100).unwrap()];
        assert_eq!(
            key_states(&keys, alg, 250, 60),
            [KeyState::Signing, KeyState::VerifyingUntil(260)]
        );
        assert_eq!(
            key_states(&keys, alg, 260, 60),
            [KeyState::Signing, KeyState::Retired]
        );
        let ring = KeyRing::load_current(&keys, alg, None, 260, 60)
            .unwrap()
            .unwrap();
        assert!(ring.key(&keys[1].kid).is_none());
        assert_eq!(ring.jwks()["keys"].as_array().unwrap().len(), 1);
    }

    /// A rotated key is published first and signs from its time; the key
    /// it replaces verifies for the retention from then, not from the
    /// rotation. A ring loaded before that time turns to it by itself.
    #[test]
    fn a_key_published_ahead_signs_from_its_time() {
        let alg = SigningAlgorithm::EdDSA;
        let mut next = generate(alg, 200).unwrap();
        next.signs_from = 200 + PUBLISH_AHEAD;
        let keys = [next, generate(alg, 100).unwrap()];
        let from = 200 + PUBLISH_AHEAD;
        assert_eq!(
            key_states(&keys, alg, 250, 60),
            [KeyState::Next(from), KeyState::Signing]
        );
        assert_eq!(
            key_states(&keys, alg, from, 60),
            [KeyState::Signing, KeyState::VerifyingUntil(from + 60)]
        );
        let ring = KeyRing::load_current(&keys, alg, None, 250, 60)
            .unwrap()
            .unwrap();
        assert_eq!(
            ring.jwks()["keys"].as_array().unwrap().len(),
            2,
            "both published"
        );
        assert_eq!(ring.signing_key_at(from - 1).unwrap().kid, keys[1].kid);
        assert_eq!(ring.signing_key_at(from).unwrap().kid, keys[0].kid);
        // Only keys still to come: the oldest of them signs (nothing else can).
        let only = [keys[0].clone()];
        assert_eq!(key_states(&only, alg, 250, 60), [KeyState::Signing]);
    }

    #[test]
    fn der_walker_refuses_truncated_input() {
        assert!(pkcs8_inner_key(&[0x30, 0x05, 0x02]).is_none());
        assert!(der_element(&[0x04, 0x84, 0xff, 0xff, 0xff, 0xff]).is_none());
    }
}
