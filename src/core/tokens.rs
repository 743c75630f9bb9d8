//! Access tokens (JWTs) and refresh tokens.
//!
//! Access tokens are short-lived JWTs with header `typ: at+jwt` (RFC 9068);
//! verification takes the algorithm from the key named by `kid`, never from
//! the token, and checks expiry against the injected clock. Refresh tokens
//! are 256 random bits; only their SHA-256 is stored. A rotated token's
//! successor is derived from the token itself and a stored random salt, so a
//! retry within the grace window can be given the same successor although
//! the successor's text was never stored.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::clock::UnixTime;
use super::error::{Error, Result};
use super::keys::{KeyRing, SigningAlgorithm};
use crate::store::{TokenHash, TokenStyle};

/// The media type in the JWT header that marks a Sesame access token.
const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// Token lifetimes and claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSettings {
    /// Signing algorithm for new keys.
    pub algorithm: SigningAlgorithm,
    /// `iss` claim.
    pub issuer: String,
    /// `aud` claim.
    pub audience: String,
    /// Access-token lifetime, seconds.
    pub access_ttl: i64,
    /// Refresh lifetime (the session's absolute lifetime), seconds.
    pub refresh_ttl: i64,
    /// Window after a rotation in which the old refresh token yields the same successor.
    pub reuse_grace: i64,
    /// Clock skew tolerated on `exp` and `nbf`, seconds (at most 60).
    pub leeway: i64,
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            algorithm: SigningAlgorithm::EdDSA,
            issuer: "sesame".into(),
            audience: "sesame".into(),
            access_ttl: 3600,
            refresh_ttl: 30 * 24 * 3600,
            reuse_grace: 5,
            leeway: 30,
        }
    }
}

/// The claims of a Sesame access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    /// Issuer.
    pub iss: String,
    /// Account id, as a string.
    pub sub: String,
    /// Audience.
    pub aud: String,
    /// Expiry.
    pub exp: i64,
    /// Issue time.
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Token id.
    pub jti: String,
    /// Session id.
    pub sid: String,
    /// Role names.
    pub roles: Vec<String>,
    /// The permissions of those roles when the token was issued (a proxy or
    /// an app may read them; Sesame's own checks read live state).
    #[serde(default)]
    pub permissions: Vec<String>,
    /// The OAuth client the token was issued to (RFC 9068), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The scopes granted to that client, space-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// Past this many remembered verifications the memo is cleared.
const VERIFIED_MEMO_LIMIT: usize = 10_000;

/// Signs and verifies access tokens with a [`KeyRing`].
///
/// A signature check costs far more than the rest of an authenticated
/// request, and clients present the same token many times; so tokens whose
/// signature verified are remembered (by their exact text) with their
/// claims. Times are still checked on every use; a token that never
/// verified is never remembered.
pub struct AccessTokens {
    /// The ring in service and the generation of the reload that made it.
    ring: RwLock<(u64, Arc<KeyRing>)>,
    /// The last generation handed to a reload.
    ring_generations: AtomicU64,
    settings: TokenSettings,
    /// The OpenID Connect issuer URL, set once the server knows its address;
    /// tokens issued to OAuth clients carry it as `iss`.
    public_issuer: OnceLock<String>,
    verified: RwLock<HashMap<String, Arc<AccessClaims>>>,
}

impl AccessTokens {
    /// Wraps a loaded key ring.
    pub fn new(ring: KeyRing, settings: TokenSettings) -> Self {
        Self {
            ring: RwLock::new((0, Arc::new(ring))),
            ring_generations: AtomicU64::new(0),
            settings,
            public_issuer: OnceLock::new(),
            verified: RwLock::new(HashMap::new()),
        }
    }

    /// The key ring in use.
    pub fn ring(&self) -> Arc<KeyRing> {
        match self.ring.read() {
            Ok(ring) => Arc::clone(&ring.1),
            Err(poisoned) => Arc::clone(&poisoned.into_inner().1),
        }
    }

    /// A generation for a reload about to read the keys: take it before the
    /// read, and hand it back with the ring to [`Self::replace_ring`].
    pub fn next_ring_generation(&self) -> u64 {
        self.ring_generations.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Puts a reloaded key ring in service (after a key rotation), unless a
    /// reload that started later has put its own in service already: reloads
    /// run concurrently (a notice, the minute's timer, an unknown key id),
    /// and one that read the keys earlier may finish last.
    pub fn replace_ring(&self, ring: KeyRing, generation: u64) {
        let mut slot = match self.ring.write() {
            Ok(slot) => slot,
            Err(poisoned) => poisoned.into_inner(),
        };
        if generation > slot.0 {
            *slot = (generation, Arc::new(ring));
        }
    }

    /// The JWKS document.
    pub fn jwks(&self) -> Arc<serde_json::Value> {
        self.ring().jwks()
    }

    /// Sets the OpenID Connect issuer URL (once; later calls are ignored).
    pub fn set_public_issuer(&self, issuer: String) {
        let _ = self.public_issuer.set(issuer);
    }

    /// The OpenID Connect issuer URL.
    pub fn public_issuer(&self) -> &str {
        self.public_issuer
            .get()
            .map_or(self.settings.issuer.as_str(), String::as_str)
    }

    /// The settings tokens are issued with.
    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    /// Signs `claims` with the current signing key under header `typ`;
    /// returns the token and the JWS algorithm used.
    pub fn sign(
        &self,
        typ: &str,
        claims: &impl Serialize,
        now: UnixTime,
    ) -> Result<(String, jsonwebtoken::Algorithm)> {
        Self::sign_with(&self.ring(), typ, claims, now)
    }

    /// Signs with the signing key of `ring` (a snapshot the caller holds,
    /// so that what it computed from the key matches the signature).
    pub fn sign_with(
        ring: &KeyRing,
        typ: &str,
        claims: &impl Serialize,
        now: UnixTime,
    ) -> Result<(String, jsonwebtoken::Algorithm)> {
        let key = ring
            .signing_key_at(now)
            .ok_or_else(|| Error::Internal("no signing key".into()))?;
        let mut header = Header::new(key.algorithm);
        header.kid = Some(key.kid.clone());
        header.typ = Some(typ.into());
        // JWS compact serialization (RFC 7515, section 7.1), signed with the
        // key parsed at load.
        let mut token = encoded_part(&header)?;
        token.push('.');
        token.push_str(&encoded_part(claims)?);
        let signature = key.signer.sign(token.as_bytes())?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        Ok((token, key.algorithm))
    }

    /// Checks the signature of an ID token Sesame signed (`typ: JWT`, so no
    /// access token) and returns its claims; times are not checked. For
    /// `id_token_hint`.
    pub fn decode_id_token(&self, token: &str) -> Result<serde_json::Value> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Error::Unauthenticated)?;
        if header.typ.as_deref() != Some("JWT") {
            return Err(Error::Unauthenticated);
        }
        let ring = self.ring();
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| ring.key(kid))
            .ok_or(Error::Unauthenticated)?;
        let mut validation = Validation::new(key.algorithm);
        validation.set_issuer(&[self.public_issuer()]);
        validation.validate_aud = false;
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.set_required_spec_claims(&["iss", "sub"]);
        jsonwebtoken::decode::<serde_json::Value>(token, &key.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|_| Error::Unauthenticated)
    }

    /// Issues a token for `sub` in session `sid`; returns it with its lifetime.
    pub fn issue(
        &self,
        sub: i64,
        sid: &str,
        roles: &[String],
        permissions: &[String],
        now: UnixTime,
    ) -> Result<String> {
        self.issue_claims(&AccessClaims {
            iss: self.settings.issuer.clone(),
            sub: sub.to_string(),
            aud: self.settings.audience.clone(),
            exp: now + self.settings.access_ttl,
            iat: now,
            nbf: now,
            jti: uuid::Uuid::new_v4().to_string(),
            sid: sid.to_owned(),
            roles: roles.to_vec(),
            permissions: permissions.to_vec(),
            client_id: None,
            scope: None,
        })
    }

    /// Claims for a token issued to an OAuth client: `iss` is the public
    /// issuer, `client_id` and `scope` say what the client was granted.
    pub fn client_claims(
        &self,
        sub: String,
        sid: &str,
        client_id: &str,
        scope: &str,
        now: UnixTime,
    ) -> AccessClaims {
        AccessClaims {
            iss: self.public_issuer().to_owned(),
            sub,
            aud: self.settings.audience.clone(),
            exp: now + self.settings.access_ttl,
            iat: now,
            nbf: now,
            jti: uuid::Uuid::new_v4().to_string(),
            sid: sid.to_owned(),
            roles: Vec::new(),
            permissions: Vec::new(),
            client_id: Some(client_id.to_owned()),
            // An empty scope is no scope (RFC 6749 §3.3 has no empty one).
            scope: (!scope.is_empty()).then(|| scope.to_owned()),
        }
    }

    /// Signs access-token claims.
    pub fn issue_claims(&self, claims: &AccessClaims) -> Result<String> {
        self.sign(ACCESS_TOKEN_TYP, claims, claims.iat)
            .map(|(token, _)| token)
    }

    /// Whether the key a token names (`kid`) is loaded; true for anything
    /// that is not a JWT with a `kid`, which no reload would help.
    pub fn knows_key_of(&self, token: &str) -> bool {
        match jsonwebtoken::decode_header(token).ok().and_then(|h| h.kid) {
            Some(kid) => self.ring().key(&kid).is_some(),
            None => true,
        }
    }

    /// Verifies a token's signature, type, issuer, audience and times.
    pub fn verify(&self, token: &str, now: UnixTime) -> Result<Arc<AccessClaims>> {
        let remembered = self
            .verified
            .read()
            .ok()
            .and_then(|memo| memo.get(token).cloned());
        let claims = match remembered {
            Some(claims) => claims,
            None => {
                let claims = Arc::new(self.verify_signature(token)?);
                if let Ok(mut memo) = self.verified.write() {
                    if memo.len() >= VERIFIED_MEMO_LIMIT {
                        memo.clear();
                    }
                    memo.insert(token.to_owned(), Arc::clone(&claims));
                }
                claims
            }
        };
        let leeway = self.settings.leeway;
        if now >= claims.exp + leeway || now + leeway < claims.nbf {
            return Err(Error::Unauthenticated);
        }
        Ok(claims)
    }

    /// Checks signature, type, issuer and audience (not times).
    fn verify_signature(&self, token: &str) -> Result<AccessClaims> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Error::Unauthenticated)?;
        if header.typ.as_deref() != Some(ACCESS_TOKEN_TYP) {
            return Err(Error::Unauthenticated);
        }
        let ring = self.ring();
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| ring.key(kid))
            .ok_or(Error::Unauthenticated)?;
        // The key fixes the algorithm; a token claiming another one (or `none`) fails here.
        let mut validation = Validation::new(key.algorithm);
        validation.set_issuer(&[self.settings.issuer.as_str(), self.public_issuer()]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        // Times are checked by the caller against the injected clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|_| Error::Unauthenticated)
    }
}

/// The SHA-256 under which a token is stored.
pub fn hash_token(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// The SHA-256 under which a token of a namespace is stored: refresh tokens
/// issued to an OAuth client are stored under the client's namespace, so
/// they are refused anywhere else (another client, the native API).
///
/// For tokens Sesame issues. A token presented by a client goes through
/// [`hash_presented_in`]: every namespace but the native API's empty one
/// ends in `:`, so were any text accepted, `oauth:web:T` presented to the
/// native API would hash as client `web`'s token `T`.
pub fn hash_token_in(namespace: &str, token: &str) -> TokenHash {
    let mut hasher = Sha256::new();
    hasher.update(namespace.as_bytes());
    hasher.update(token.as_bytes());
    hasher.finalize().into()
}

/// [`hash_token_in`] for a token a client presents, `None` unless it could
/// be one Sesame issued: 1 to 128 characters of the base64url alphabet
/// (opaque tokens are hex, a subset). No such token contains the `:` that
/// ends a namespace, so none reaches into another namespace.
pub fn hash_presented_in(namespace: &str, token: &str) -> Option<TokenHash> {
    let issuable = (1..=128).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
    issuable.then(|| hash_token_in(namespace, token))
}

/// A fresh refresh token in the session's style: 256 random bits as
/// base64url, or 128 bits as 32 lowercase hex digits for opaque sessions.
pub fn new_refresh_token(style: TokenStyle) -> String {
    let mut bytes = [0u8; 32];
    fill_random(&mut bytes);
    render(&bytes, style)
}

/// A fresh opaque access token: 128 random bits as 32 lowercase hex digits.
pub fn new_opaque_token() -> String {
    let mut bytes = [0u8; 16];
    fill_random(&mut bytes);
    hex::encode(bytes)
}

/// Whether a bearer token has the shape of an opaque access token.
pub fn is_opaque_token(token: &str) -> bool {
    token.len() == 32
        && token
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn render(bytes: &[u8; 32], style: TokenStyle) -> String {
    match style {
        TokenStyle::Jwt => URL_SAFE_NO_PAD.encode(bytes),
        TokenStyle::Opaque => hex::encode(&bytes[..16]),
    }
}

/// Fresh random salt for deriving a successor token.
pub fn new_successor_salt() -> [u8; 32] {
    let mut salt = [0u8; 32];
    fill_random(&mut salt);
    salt
}

/// The successor of `token` under `salt`: SHA-256(token || salt). Someone who
/// can read the database knows the salt and the token's hash but not the
/// token, so cannot compute the successor.
pub fn successor_token(token: &str, salt: &[u8], style: TokenStyle) -> String {
    let mut hasher = Sha256::new();
    hasher.update(token.as_bytes());
    hasher.update(salt);
    render(&hasher.finalize().into(), style)
}

/// The opaque access token a refresh hands out with `successor`: derived
/// from it and the refresh's stored random `salt`, so that retries of one
/// refresh in the grace window, which get the same successor, get the same
/// access token too instead of revoking each other's. A reader of the
/// database lacks the successor; a reader of a log holding a refresh token
/// (a URL) lacks the salt.
pub fn opaque_access_token(successor: &str, salt: &[u8]) -> String {
    let mut seed = salt.to_vec();
    seed.extend_from_slice(b"sesame opaque access token");
    successor_token(successor, &seed, TokenStyle::Opaque)
}

/// `bytes` random bytes as base64url, for secrets such as a generated password.
pub fn random_urlsafe(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    fill_random(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

fn fill_random(buf: &mut [u8]) {
    use argon2::password_hash::rand_core::{OsRng, RngCore};
    OsRng.fill_bytes(buf);
}

/// One base64url-encoded JSON part of a JWS.
fn encoded_part(value: &impl Serialize) -> Result<String> {
    serde_json::to_vec(value)
        .map(|json| URL_SAFE_NO_PAD.encode(json))
        .map_err(|e| Error::Internal(format!("signing: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::keys::generate;

    fn tokens(alg: SigningAlgorithm) -> AccessTokens {
        let key = generate(alg, 0).unwrap();
        let ring = KeyRing::load(&[key], alg).unwrap().unwrap();
        AccessTokens::new(
            ring,
            TokenSettings {
                algorithm: alg,
                ..TokenSettings::default()
            },
        )
    }

    /// A reload that read the keys earlier but finishes last leaves the
    /// later reload's ring in service.
    #[test]
    fn an_earlier_reload_finishing_last_changes_nothing() {
        let alg = SigningAlgorithm::EdDSA;
        let tokens = tokens(alg);
        let ring_of = |created| {
            let key = generate(alg, created).unwrap();
            let kid = key.kid.clone();
            (KeyRing::load(&[key], alg).unwrap().unwrap(), kid)
        };
        let earlier = tokens.next_ring_generation();
        let later = tokens.next_ring_generation();
        let (newer_ring, newer_kid) = ring_of(2);
        let (older_ring, _) = ring_of(1);
        tokens.replace_ring(newer_ring, later);
        tokens.replace_ring(older_ring, earlier);
        assert_eq!(tokens.ring().signing_key().unwrap().kid, newer_kid);
        let (next_ring, next_kid) = ring_of(3);
        tokens.replace_ring(next_ring, tokens.next_ring_generation());
        assert_eq!(tokens.ring().signing_key().unwrap().kid, next_kid);
    }

    /// Signing with the key parsed once gives what `jsonwebtoken` gives
    /// (byte for byte where the algorithm is deterministic), and its
    /// verifier accepts it.
    #[test]
    fn tokens_match_what_jsonwebtoken_signs() {
        use jsonwebtoken::EncodingKey;
        let claims = serde_json::json!({"sub": "42", "name": "Zoë", "exp": 4_000_000_000_u64});
        for alg in [
            SigningAlgorithm::EdDSA,
            SigningAlgorithm::ES256,
            SigningAlgorithm::RS256,
            SigningAlgorithm::HS256,
        ] {
            let key = generate(alg, 0).unwrap();
            let ring = KeyRing::load(std::slice::from_ref(&key), alg)
                .unwrap()
                .unwrap();
            let (token, jws_alg) = AccessTokens::sign_with(&ring, "at+jwt", &claims, 0).unwrap();
            assert_eq!(jws_alg, ring.signing_key().unwrap().algorithm);
            let loaded = ring.signing_key().unwrap();
            let mut validation = Validation::new(jws_alg);
            validation.validate_aud = false;
            let decoded =
                jsonwebtoken::decode::<serde_json::Value>(&token, &loaded.decoding, &validation)
                    .unwrap();
            assert_eq!(decoded.claims, claims, "{alg:?}");
            assert_eq!(decoded.header.kid.as_deref(), Some(key.kid.as_str()));
            assert_eq!(decoded.header.typ.as_deref(), Some("at+jwt"));
            let encoding = match alg {
                SigningAlgorithm::EdDSA => EncodingKey::from_ed_der(&key.private_der),
                SigningAlgorithm::RS256 => EncodingKey::from_rsa_der(&key.private_der),
                SigningAlgorithm::HS256 => EncodingKey::from_secret(&key.private_der),
                // Randomised signatures: verified above, not compared.
                SigningAlgorithm::ES256 => continue,
            };
            let mut header = Header::new(jws_alg);
            header.kid = Some(key.kid.clone());
            header.typ = Some("at+jwt".into());
            let expected = jsonwebtoken::encode(&header, &claims, &encoding).unwrap();
            assert_eq!(token, expected, "{alg:?}");
        }
    }

    #[test]
    fn issued_tokens_verify_until_expiry_plus_leeway() {
        for alg in [
            SigningAlgorithm::EdDSA,
            SigningAlgorithm::ES256,
            SigningAlgorithm::RS256,
            SigningAlgorithm::HS256,
        ] {
            let t = tokens(alg);
            let jwt = t
                .issue(7, "sid-1", &["user".into()], &["read".into()], 1_000)
                .unwrap();
            let claims = t.verify(&jwt, 1_000).unwrap();
            assert_eq!((claims.sub.as_str(), claims.sid.as_str()), ("7", "sid-1"));
            assert_eq!(claims.permissions, ["read"]);
            assert!(t.verify(&jwt, 1_000 + 3600 + 29).is_ok());
            assert!(t.verify(&jwt, 1_000 + 3600 + 30).is_err());
            assert!(
                t.verify(&jwt, 1_000 - 31).is_err(),
                "nbf not enforced for {alg:?}"
            );
        }
    }

    #[test]
    fn tokens_from_another_key_or_tampered_are_refused() {
        let a = tokens(SigningAlgorithm::EdDSA);
        let b = tokens(SigningAlgorithm::EdDSA);
        let jwt = a.issue(1, "s", &[], &[], 0).unwrap();
        assert!(b.verify(&jwt, 0).is_err());
        let mut parts: Vec<&str> = jwt.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(br#"{"iss":"sesame","sub":"2","aud":"sesame","exp":99999,"iat":0,"nbf":0,"jti":"x","sid":"s","roles":["administrator"]}"#);
        parts[1] = &forged;
        assert!(a.verify(&parts.join("."), 0).is_err());
    }

    #[test]
    fn alg_none_and_refresh_tokens_are_not_access_tokens() {
        let t = tokens(SigningAlgorithm::EdDSA);
        let jwt = t.issue(1, "s", &[], &[], 0).unwrap();
        let kid = jsonwebtoken::decode_header(&jwt).unwrap().kid.unwrap();
        let header =
            URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","typ":"at+jwt","kid":"{kid}"}}"#));
        let body = jwt.split('.').nth(1).unwrap();
        assert!(t.verify(&format!("{header}.{body}."), 0).is_err());
        assert!(t.verify(&new_refresh_token(TokenStyle::Jwt), 0).is_err());
    }

    #[test]
    fn a_presented_token_never_reaches_into_another_namespace() {
        for style in [TokenStyle::Jwt, TokenStyle::Opaque] {
            let token = new_refresh_token(style);
            assert_eq!(
                hash_presented_in("oauth:web:", &token),
                Some(hash_token_in("oauth:web:", &token))
            );
            let disguised = format!("oauth:web:{token}");
            assert_eq!(
                hash_token_in("", &disguised),
                hash_token_in("oauth:web:", &token),
                "what the check is for"
            );
            assert_eq!(hash_presented_in("", &disguised), None);
        }
        for refused in ["", "a b", "a/b", "a+b", "a=", "é", &"a".repeat(129)] {
            assert_eq!(hash_presented_in("", refused), None, "{refused:?}");
        }
    }

    #[test]
    fn successors_are_deterministic_per_salt_and_unrelated_across_salts() {
        let token = new_refresh_token(TokenStyle::Jwt);
        let salt = new_successor_salt();
        let style = TokenStyle::Jwt;
        assert_eq!(
            successor_token(&token, &salt, style),
            successor_token(&token, &salt, style)
        );
        assert_ne!(
            successor_token(&token, &salt, style),
            successor_token(&token, &new_successor_salt(), style)
        );
        assert_eq!(token.len(), 43);
        let opaque = successor_token(&token, &salt, TokenStyle::Opaque);
        assert!(
            is_opaque_token(&opaque) && is_opaque_token(&new_refresh_token(TokenStyle::Opaque))
        );
        assert!(is_opaque_token(&new_opaque_token()) && !is_opaque_token(&token));
        let access = opaque_access_token(&token, &[1; 32]);
        assert!(is_opaque_token(&access));
        assert_ne!(
            access,
            opaque_access_token(&token, &[2; 32]),
            "the salt matters"
        );
    }
}
