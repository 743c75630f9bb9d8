//! Token signing keys: generation, persistence format and the JWKS document.
//!
//! A key is generated at first start for the configured algorithm and stored
//! through the [`KeyStore`](crate::store::KeyStore). Older keys stay loaded
//! for verification, so changing the algorithm (or adding a key) rotates
//! signing without logging anyone out. Only public parts are published.

use std::collections::HashMap;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
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

fn crypto_error(what: &str) -> Error {
    Error::Internal(format!("key generation failed: {what}"))
}

/// Generates a new key of `algorithm`, ready to store.
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
    pub encoding: EncodingKey,
    /// For verification.
    pub decoding: DecodingKey,
}

/// The loaded keys: the one that signs, every one that verifies, and the
/// JWKS document, rendered once.
pub struct KeyRing {
    signing: String,
    keys: HashMap<String, LoadedKey>,
    jwks: serde_json::Value,
}

impl KeyRing {
    /// Loads stored keys; the newest key of `algorithm` signs. Returns `None`
    /// when there is no key of that algorithm yet (the caller generates one).
    pub fn load(stored: &[SigningKey], algorithm: SigningAlgorithm) -> Result<Option<Self>> {
        let mut keys = HashMap::new();
        let mut published = Vec::new();
        let mut signing = None;
        for key in stored {
            let Some(alg) = SigningAlgorithm::parse(&key.algorithm) else {
                return Err(Error::Internal(format!(
                    "stored key {} has unknown algorithm",
                    key.kid
                )));
            };
            let loaded = load_key(key, alg)?;
            if !key.public_jwk.is_empty() {
                let jwk: serde_json::Value = serde_json::from_str(&key.public_jwk)
                    .map_err(|e| Error::Internal(format!("stored JWK {}: {e}", key.kid)))?;
                published.push(jwk);
            }
            // `stored` is newest first, so the first match is the newest.
            if alg == algorithm && signing.is_none() {
                signing = Some(key.kid.clone());
            }
            keys.insert(key.kid.clone(), loaded);
        }
        Ok(signing.map(|signing| Self {
            signing,
            keys,
            jwks: json!({ "keys": published }),
        }))
    }

    /// The key that signs new tokens.
    pub fn signing_key(&self) -> Option<&LoadedKey> {
        self.keys.get(&self.signing)
    }

    /// A verification key by id.
    pub fn key(&self, kid: &str) -> Option<&LoadedKey> {
        self.keys.get(kid)
    }

    /// The JWKS document (public keys only).
    pub fn jwks(&self) -> &serde_json::Value {
        &self.jwks
    }
}

fn load_key(key: &SigningKey, algorithm: SigningAlgorithm) -> Result<LoadedKey> {
    let bad =
        |e: jsonwebtoken::errors::Error| Error::Internal(format!("stored key {}: {e}", key.kid));
    let (encoding, decoding) = match algorithm {
        SigningAlgorithm::HS256 => (
            EncodingKey::from_secret(&key.private_der),
            DecodingKey::from_secret(&key.private_der),
        ),
        _ => {
            let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_str(&key.public_jwk)
                .map_err(|e| Error::Internal(format!("stored JWK {}: {e}", key.kid)))?;
            let decoding = DecodingKey::from_jwk(&jwk).map_err(bad)?;
            let encoding = match algorithm {
                SigningAlgorithm::EdDSA => EncodingKey::from_ed_der(&key.private_der),
                SigningAlgorithm::ES256 => EncodingKey::from_ec_der(&key.private_der),
                _ => EncodingKey::from_rsa_der(&key.private_der),
            };
            (encoding, decoding)
        }
    };
    Ok(LoadedKey {
        kid: key.kid.clone(),
        algorithm: algorithm.jwt(),
        encoding,
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
    fn der_walker_refuses_truncated_input() {
        assert!(pkcs8_inner_key(&[0x30, 0x05, 0x02]).is_none());
        assert!(der_element(&[0x04, 0x84, 0xff, 0xff, 0xff, 0xff]).is_none());
    }
}
