//! Password hashes imported from other systems.
//!
//! `sesame import` accepts an account's existing hash in the format its old
//! system wrote ([`prepare`]); it is stored as a self-describing string in
//! the account's `password_hash` and checked at login on the hashing pool
//! ([`verify`]) by the crate made for that format. At the owner's first
//! successful login the core replaces it with Argon2id (the foreign hash is
//! overwritten in the same write) and audits `rehashed` with the format's
//! name ([`format_of`]). Every comparison of a computed hash with the stored
//! one is constant-time.
//!
//! Stored forms: PHC strings, bcrypt, Django, crypt(3), phpass and Drupal 7
//! hashes as the old system wrote them (each names its scheme); the formats
//! that do not (ASP.NET blobs and Membership, legacy digest templates) get a
//! `$sesame-…$` prefix of Sesame's own.

use aws_lc_rs::constant_time::verify_slices_are_equal;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};

/// Longest stored foreign hash (a template carries its expression).
pub const MAX_STORED_BYTES: usize = 4096;
/// Highest bcrypt cost accepted (each step doubles the work).
const MAX_BCRYPT_COST: u32 = 16;
/// Most PBKDF2 iterations accepted.
const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;
/// Highest scrypt log2(N) and r·p accepted, and the most memory one check
/// may take (128·N·r bytes) on a hashing thread: 64 MiB covers passlib's,
/// Django's and Firebase's defaults.
const MAX_SCRYPT_LOG_N: u8 = 20;
const MAX_SCRYPT_RP: u32 = 64;
const MAX_SCRYPT_BYTES: u64 = 64 << 20;

fn scrypt_memory_ok(log_n: u8, r: u32) -> bool {
    (128u64 << log_n).saturating_mul(u64::from(r)) <= MAX_SCRYPT_BYTES
}
/// Highest phpass / Drupal iteration exponent: 2^20 iterations, each over
/// the whole password (WordPress uses 2^8, Drupal 7 2^15). Drupal allows up
/// to 2^30, minutes of one hashing thread for a long password.
const MAX_PHPASS_LOG2: u32 = 20;
/// Most sha-crypt rounds (passlib's defaults are 535,000 and 656,000; the
/// format allows 999,999,999, each round over the whole password).
const MAX_SHA_CRYPT_ROUNDS: u32 = 1_000_000;
/// Longest password checked against a sha-crypt, phpass or Drupal 7 hash,
/// whose every round goes over the whole password: at the round bounds
/// above, a 1 KiB password would hold a hashing thread some fifteen times
/// longer than a usual one. A longer one matches nothing (Drupal 7 itself
/// refuses passwords over 512 bytes).
const MAX_PER_ROUND_PASSWORD_BYTES: usize = 256;

const MEMBERSHIP_SHA1: &str = "$sesame-aspnet-membership-sha1$";
const MEMBERSHIP_SHA256: &str = "$sesame-aspnet-membership-sha256$";
const ASPNET_IDENTITY: &str = "$sesame-aspnet-identity$";
const TEMPLATE: &str = "$sesame-template$";
const FIREBASE: &str = "$sesame-firebase-scrypt$";
/// What replaces an imported hash that was expired (`sesame user
/// expire-legacy`): no password matches it; the account needs a new one.
pub const EXPIRED: &str = "$sesame-expired$";

/// The format names of `password_hash_format`.
pub const FORMATS: [&str; 12] = [
    "phc",
    "bcrypt",
    "django",
    "crypt",
    "phpass",
    "drupal7",
    "aspnet-identity",
    "aspnet-membership-sha1",
    "aspnet-membership-sha256",
    "clear",
    "template",
    "firebase-scrypt",
];

/// What an imported hash becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    /// A stored form Sesame verifies (an Argon2 PHC string is native).
    Stored(String),
    /// A password in the clear, to be hashed with Argon2id before it is stored.
    Clear(String),
}

/// The hash parameters of a Firebase project (its console's "password hash
/// parameters"), given once per import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirebaseParams {
    /// `base64_signer_key`.
    pub signer_key: Vec<u8>,
    /// `base64_salt_separator`.
    pub salt_separator: Vec<u8>,
    /// `rounds` (scrypt's r).
    pub rounds: u32,
    /// `mem_cost` (scrypt's log2 N).
    pub mem_cost: u8,
}

impl FirebaseParams {
    /// Reads the four parameters as the Firebase console shows them.
    pub fn parse(
        signer_key: &str,
        salt_separator: &str,
        rounds: u32,
        mem_cost: u8,
    ) -> Result<Self, String> {
        let signer_key = STANDARD
            .decode(signer_key.trim())
            .map_err(|_| "the signer key is not base64")?;
        let salt_separator = STANDARD
            .decode(salt_separator.trim())
            .map_err(|_| "the salt separator is not base64")?;
        // At least 16 bytes, as every stored hash is checked for (a shorter
        // key would have every line refused, one by one, after the start).
        if signer_key.len() < 16 || signer_key.len() > 1024 {
            return Err("the signer key must be 16 to 1024 bytes".into());
        }
        if !(1..=8).contains(&rounds)
            || !(1..=MAX_SCRYPT_LOG_N).contains(&mem_cost)
            || !scrypt_memory_ok(mem_cost, rounds)
        {
            return Err(format!(
                "rounds must be 1 to 8 and mem_cost 1 to {MAX_SCRYPT_LOG_N}, at most 64 MiB"
            ));
        }
        Ok(Self {
            signer_key,
            salt_separator,
            rounds,
            mem_cost,
        })
    }
}

/// What one import line says about its password.
#[derive(Debug, Clone, Copy, Default)]
pub struct Given<'a> {
    /// `password_hash`.
    pub hash: &'a str,
    /// `password_hash_format`, when named.
    pub format: Option<&'a str>,
    /// `password_salt`, when separate.
    pub salt: Option<&'a str>,
    /// The account's username (templates may use it).
    pub username: &'a str,
}

/// Recognises and checks an imported hash; the error says why it is refused
/// and never repeats the hash.
pub fn prepare(
    given: Given<'_>,
    template: Option<&Template>,
    firebase: Option<&FirebaseParams>,
) -> Result<Prepared, String> {
    let hash = given.hash;
    if hash.len() > MAX_STORED_BYTES {
        return Err(format!(
            "password_hash: longer than {MAX_STORED_BYTES} bytes"
        ));
    }
    let format = match given.format {
        Some(format) => format,
        None => recognise(hash).ok_or(
            "password_hash: format not recognised from the value; name it with \
             password_hash_format",
        )?,
    };
    // An unknown name is never repeated (it may be anything, a secret
    // pasted into the wrong column).
    if format != "sesame" && !FORMATS.contains(&format) {
        return Err(format!(
            "password_hash_format: unknown; one of {}",
            FORMATS.join(", ")
        ));
    }
    if given.salt.is_some()
        && !matches!(
            format,
            "aspnet-membership-sha1" | "aspnet-membership-sha256" | "template" | "firebase-scrypt"
        )
    {
        return Err(format!("password_salt: not used by the {format} format"));
    }
    let stored = match format {
        // "sesame": a stored form of Sesame's own, from an export.
        "phc" | "bcrypt" | "django" | "crypt" | "phpass" | "drupal7" | "sesame" => {
            if recognise(hash) != Some(format) {
                return Err(format!("password_hash: not a {format} hash"));
            }
            // Argon2 (also Django's, a PHC string after "argon2") is checked
            // by the caller as Sesame's own format.
            if native_argon2(hash).is_some() {
                return Ok(Prepared::Stored(hash.to_owned()));
            }
            hash.to_owned()
        }
        "aspnet-identity" => {
            let blob = STANDARD
                .decode(hash.trim())
                .map_err(|_| "password_hash: not base64")?;
            identity_parts(&blob)?;
            format!("{ASPNET_IDENTITY}{}", STANDARD.encode(&blob))
        }
        "aspnet-membership-sha1" | "aspnet-membership-sha256" => {
            let salt = given
                .salt
                .ok_or("password_salt: the Membership formats need the passwordSalt column")?;
            let salt = STANDARD
                .decode(salt.trim())
                .map_err(|_| "password_salt: not base64")?;
            let digest = STANDARD
                .decode(hash.trim())
                .map_err(|_| "password_hash: not base64")?;
            let (prefix, len) = if format.ends_with("sha1") {
                (MEMBERSHIP_SHA1, 20)
            } else {
                (MEMBERSHIP_SHA256, 32)
            };
            if digest.len() != len {
                return Err(format!("password_hash: a {format} hash is {len} bytes"));
            }
            format!(
                "{prefix}{}${}",
                STANDARD.encode(&salt),
                STANDARD.encode(&digest)
            )
        }
        "clear" => {
            if hash.is_empty() {
                return Err("password_hash: an empty clear password".into());
            }
            return Ok(Prepared::Clear(hash.to_owned()));
        }
        "template" => {
            let template = template
                .ok_or("password_hash_format template: give the expression once with --template")?;
            let (digest, salt) = match given.salt {
                Some(salt) => (hash, salt),
                // osCommerce and friends keep "hash:salt" in one column.
                None if template.uses_salt() => hash.split_once(':').ok_or(
                    "password_salt: the template uses salt; give password_salt or hash:salt",
                )?,
                None => (hash, ""),
            };
            if digest.is_empty() {
                return Err("password_hash: empty".into());
            }
            format!(
                "{TEMPLATE}{}${}${}${}",
                URL_SAFE_NO_PAD.encode(template.source()),
                URL_SAFE_NO_PAD.encode(salt),
                URL_SAFE_NO_PAD.encode(given.username),
                URL_SAFE_NO_PAD.encode(digest)
            )
        }
        "firebase-scrypt" => {
            let params = firebase.ok_or(
                "password_hash_format firebase-scrypt: give the project's hash parameters once \
                 with --firebase-signer-key, --firebase-salt-separator, --firebase-rounds and \
                 --firebase-mem-cost",
            )?;
            let salt = given
                .salt
                .ok_or("password_salt: Firebase exports each user's salt beside the hash")?;
            let salt = STANDARD
                .decode(salt.trim())
                .map_err(|_| "password_salt: not base64")?;
            let hash = STANDARD
                .decode(hash.trim())
                .map_err(|_| "password_hash: not base64")?;
            format!(
                "{FIREBASE}{}${}${}${}${}${}",
                STANDARD.encode(&params.signer_key),
                STANDARD.encode(&params.salt_separator),
                params.rounds,
                params.mem_cost,
                STANDARD.encode(salt),
                STANDARD.encode(hash)
            )
        }
        _ => {
            return Err(format!(
                "password_hash_format: unknown; one of {}",
                FORMATS.join(", ")
            ));
        }
    };
    check_stored(&stored)?;
    Ok(Prepared::Stored(stored))
}

/// The Argon2 PHC string inside a stored value (Django prefixes its own
/// with `argon2`), verified natively by the hashing pool.
pub fn native_argon2(stored: &str) -> Option<&str> {
    let phc = stored.strip_prefix("argon2").unwrap_or(stored);
    phc.starts_with("$argon2").then_some(phc)
}

/// The format of a value, recognised from its own prefix.
fn recognise(hash: &str) -> Option<&'static str> {
    const PREFIXES: [(&str, &str); 19] = [
        ("$argon2id$", "phc"),
        ("$argon2i$", "phc"),
        ("$argon2d$", "phc"),
        ("$scrypt$", "phc"),
        ("$pbkdf2-sha256$", "phc"),
        ("$pbkdf2-sha512$", "phc"),
        ("$2a$", "bcrypt"),
        ("$2b$", "bcrypt"),
        ("$2y$", "bcrypt"),
        ("$2x$", "bcrypt"),
        ("pbkdf2_sha256$", "django"),
        ("pbkdf2_sha1$", "django"),
        ("bcrypt_sha256$", "django"),
        ("argon2$", "django"),
        ("scrypt$", "django"),
        ("$6$", "crypt"),
        ("$5$", "crypt"),
        ("$1$", "crypt"),
        ("$apr1$", "crypt"),
    ];
    if let Some((_, format)) = PREFIXES.iter().find(|(p, _)| hash.starts_with(p)) {
        return Some(format);
    }
    if hash.starts_with("$sesame-") {
        return Some("sesame");
    }
    match hash.get(..3) {
        Some("$P$" | "$H$") => Some("phpass"),
        Some("$S$") => Some("drupal7"),
        _ => None,
    }
}

/// The name of a stored foreign hash's format (`bcrypt`, `django
/// pbkdf2_sha256` …), or `None` for Sesame's own Argon2 PHC strings.
pub fn format_of(stored: &str) -> Option<&'static str> {
    Some(match stored {
        s if s.starts_with("$argon2") => return None,
        s if s.starts_with("$scrypt$") => "scrypt",
        s if s.starts_with("$pbkdf2-sha256$") => "pbkdf2-sha256",
        s if s.starts_with("$pbkdf2-sha512$") => "pbkdf2-sha512",
        s if s.starts_with("$2") => "bcrypt",
        s if s.starts_with("pbkdf2_sha256$") => "django pbkdf2_sha256",
        s if s.starts_with("pbkdf2_sha1$") => "django pbkdf2_sha1",
        s if s.starts_with("bcrypt_sha256$") => "django bcrypt_sha256",
        s if s.starts_with("argon2$") => "django argon2",
        s if s.starts_with("scrypt$") => "django scrypt",
        s if s.starts_with("$6$") => "sha512-crypt",
        s if s.starts_with("$5$") => "sha256-crypt",
        s if s.starts_with("$1$") => "md5-crypt",
        s if s.starts_with("$apr1$") => "apr1",
        s if s.starts_with("$P$") || s.starts_with("$H$") => "phpass",
        s if s.starts_with("$S$") => "drupal7",
        s if s.starts_with(ASPNET_IDENTITY) => "aspnet-identity",
        s if s.starts_with(MEMBERSHIP_SHA1) => "aspnet-membership-sha1",
        s if s.starts_with(MEMBERSHIP_SHA256) => "aspnet-membership-sha256",
        s if s.starts_with(TEMPLATE) => "template",
        s if s.starts_with(FIREBASE) => "firebase-scrypt",
        s if s.starts_with(EXPIRED) => "expired",
        _ => "unknown",
    })
}

/// Checks a stored form's shape and costs without a password: what an
/// import refuses rather than store.
fn check_stored(stored: &str) -> Result<(), String> {
    match verify_inner(b"", stored, true) {
        Ok(_) => Ok(()),
        Err(reason) => Err(format!("password_hash: {reason}")),
    }
}

/// Checks `password` against a stored foreign hash. `Err` means the stored
/// value is unusable (it cannot match anything).
pub fn verify(password: &[u8], stored: &str) -> Result<bool, String> {
    verify_inner(password, stored, false)
}

fn equal(a: &[u8], b: &[u8]) -> bool {
    verify_slices_are_equal(a, b).is_ok()
}

/// `check_only`: parse and bound the parameters, compute nothing.
fn verify_inner(password: &[u8], stored: &str, check_only: bool) -> Result<bool, String> {
    match format_of(stored) {
        Some("bcrypt") => bcrypt_verify(password, stored, check_only),
        Some("django bcrypt_sha256") => {
            let inner = stored.trim_start_matches("bcrypt_sha256$");
            let prehashed = hex::encode(Sha256::digest(password));
            bcrypt_verify(prehashed.as_bytes(), inner, check_only)
        }
        Some("scrypt") => phc_scrypt(password, stored, check_only),
        Some("pbkdf2-sha256" | "pbkdf2-sha512") => phc_pbkdf2(password, stored, check_only),
        Some("django pbkdf2_sha256" | "django pbkdf2_sha1") => {
            django_pbkdf2(password, stored, check_only)
        }
        Some("django scrypt") => django_scrypt(password, stored, check_only),
        Some("sha512-crypt" | "sha256-crypt" | "phpass" | "drupal7")
            if !check_only && password.len() > MAX_PER_ROUND_PASSWORD_BYTES =>
        {
            Ok(false)
        }
        Some("sha512-crypt" | "sha256-crypt") => sha_crypt(password, stored, check_only),
        Some("md5-crypt" | "apr1") => md5_crypt(password, stored, check_only),
        Some("phpass" | "drupal7") => phpass(password, stored, check_only),
        Some("aspnet-identity") => aspnet_identity(password, stored, check_only),
        Some("aspnet-membership-sha1" | "aspnet-membership-sha256") => {
            membership(password, stored, check_only)
        }
        Some("template") => template_verify(password, stored, check_only),
        Some("firebase-scrypt") => firebase_scrypt(password, stored, check_only),
        Some("expired") => Ok(false),
        _ => Err("not a hash format Sesame verifies".into()),
    }
}

fn bcrypt_verify(password: &[u8], stored: &str, check_only: bool) -> Result<bool, String> {
    if stored.starts_with("$2x$") {
        return Err(
            "$2x$ is the bcrypt of a PHP bug (crypt_blowfish before 5.3.7) that hashed some \
             8-bit passwords wrongly; these cannot be verified safely, so reset those passwords"
                .into(),
        );
    }
    let parts: Vec<&str> = stored.splitn(4, '$').collect();
    let cost: u32 = parts
        .get(2)
        .and_then(|c| c.parse().ok())
        .ok_or("bcrypt: no cost")?;
    if !(4..=MAX_BCRYPT_COST).contains(&cost) {
        return Err(format!("bcrypt: cost must be 4 to {MAX_BCRYPT_COST}"));
    }
    let body_ok = parts.get(3).is_some_and(|body| {
        body.len() == 53
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'/'))
    });
    if !body_ok {
        return Err("bcrypt: salt and hash must be 53 characters of its alphabet".into());
    }
    if check_only {
        // No bcrypt at import: 100,000 accounts at cost 12 would take hours.
        return Ok(true);
    }
    // Truncating at 72 bytes, as every bcrypt that wrote these hashes did.
    // The crate's error can quote the hash: it is never passed on.
    bcrypt::verify(password, stored).map_err(|_| "bcrypt: unusable hash".to_owned())
}

/// Decodes base64 as the writers of these formats use it: standard or
/// passlib's adapted alphabet (`.` for `+`), padded or not.
fn b64(text: &str) -> Result<Vec<u8>, String> {
    let text = text.replace('.', "+");
    STANDARD_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| "not base64".to_owned())
}

fn phc_scrypt(password: &[u8], stored: &str, check_only: bool) -> Result<bool, String> {
    // $scrypt$ln=<log2 N>,r=<r>,p=<p>$<salt>$<hash>
    let parts: Vec<&str> = stored.split('$').collect();
    let [_, _, params, salt, hash] = parts[..] else {
        return Err("scrypt: expected $scrypt$ln=…,r=…,p=…$salt$hash".into());
    };
    let (mut log_n, mut r, mut p) = (None, None, None);
    for pair in params.split(',') {
        match pair.split_once('=') {
            Some(("ln", v)) => log_n = v.parse::<u8>().ok(),
            Some(("r", v)) => r = v.parse::<u32>().ok(),
            Some(("p", v)) => p = v.parse::<u32>().ok(),
            _ => return Err("scrypt: unknown parameter".into()),
        }
    }
    let (Some(log_n), Some(r), Some(p)) = (log_n, r, p) else {
        return Err("scrypt: ln, r and p are required".into());
    };
    let (salt, hash) = (b64(salt)?, b64(hash)?);
    scrypt_check(password, &salt, &hash, log_n, r, p, check_only)
}

fn scrypt_check(
    password: &[u8],
    salt: &[u8],
    expected: &[u8],
    log_n: u8,
    r: u32,
    p: u32,
    check_only: bool,
) -> Result<bool, String> {
    if log_n == 0
        || log_n > MAX_SCRYPT_LOG_N
        || r == 0
        || p == 0
        || r.saturating_mul(p) > MAX_SCRYPT_RP
        || !scrypt_memory_ok(log_n, r)
    {
        return Err(format!(
            "scrypt: parameters beyond what Sesame verifies (ln ≤ {MAX_SCRYPT_LOG_N}, r·p ≤ \
             {MAX_SCRYPT_RP}, at most 64 MiB)"
        ));
    }
    if !(10..=128).contains(&expected.len()) {
        return Err("scrypt: hash length must be 10 to 128 bytes".into());
    }
    let params =
        scrypt::Params::new(log_n, r, p, expected.len()).map_err(|e| format!("scrypt: {e}"))?;
    if check_only {
        return Ok(true);
    }
    let mut out = vec![0u8; expected.len()];
    scrypt::scrypt(password, salt, &params, &mut out).map_err(|e| format!("scrypt: {e}"))?;
    Ok(equal(&out, expected))
}

fn pbkdf2_check(
    digest: &str,
    password: &[u8],
    salt: &[u8],
    rounds: u32,
    expected: &[u8],
    check_only: bool,
) -> Result<bool, String> {
    if rounds == 0 || rounds > MAX_PBKDF2_ITERATIONS {
        return Err(format!(
            "pbkdf2: iterations must be 1 to {MAX_PBKDF2_ITERATIONS}"
        ));
    }
    if !(10..=128).contains(&expected.len()) {
        return Err("pbkdf2: hash length must be 10 to 128 bytes".into());
    }
    // Each block of output is the whole iteration count again: bounded
    // together (a 128-byte PBKDF2-SHA1 is 7 blocks).
    let block = match digest {
        "sha1" => 20,
        "sha256" => 32,
        _ => 64,
    };
    let blocks = expected.len().div_ceil(block) as u64;
    if u64::from(rounds) * blocks > u64::from(MAX_PBKDF2_ITERATIONS) {
        return Err(format!(
            "pbkdf2: iterations × output blocks must be at most {MAX_PBKDF2_ITERATIONS}"
        ));
    }
    if check_only {
        return Ok(true);
    }
    let mut out = vec![0u8; expected.len()];
    match digest {
        "sha1" => pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, rounds, &mut out),
        "sha256" => pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, rounds, &mut out),
        "sha512" => pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, rounds, &mut out),
        _ => return Err("pbkdf2: unknown digest".into()),
    }
    Ok(equal(&out, expected))
}

fn phc_pbkdf2(password: &[u8], stored: &str, check_only: bool) -> Result<bool, String> {
    // $pbkdf2-sha256$i=<rounds>[,l=<len>]$salt$hash (PHC), or passlib's
    // $pbkdf2-sha256$<rounds>$salt$hash.
    let parts: Vec<&str> = stored.split('$').collect();
    let [_, id, params, salt, hash] = parts[..] else {
        return Err("pbkdf2: expected $pbkdf2-…$rounds$salt$hash".into());
    };
    let digest = id.trim_start_matches("pbkdf2-");
    let rounds = match params.parse::<u32>() {
        Ok(rounds) => rounds,
        Err(_) => params
            .split(',')
            .find_map(|p| p.strip_prefix("i="))
            .and_then(|v| v.parse().ok())
            .ok_or("pbkdf2: no iteration count")?,
    };
    let (salt, hash) = (b64(salt)?, b64(hash)?);
    pbkdf2_check(digest, password, &salt, rounds, &hash, check_only)
}

fn django_pbkdf2(password: &[u8], stored: &str, check_only: bool) -> Result<bool, String> {
    // pbkdf2_sha256$<rounds>$<salt text>$<base64 hash>
    let parts: Vec<&str> = stored.split('$').collect();
    let [algorithm, rounds, salt, hash] = parts[..] else {
        return Err("django pbkdf2: expected algorithm$rounds$salt$hash".into());
    };
    let rounds: u32 = rounds.parse().map_err(|_| "django pbkdf2: bad rounds")?;
    let expected = STANDARD
        .decode(hash)
        .map_err(|_| "django pbkdf2: hash not base64")?;
    let digest = algorithm.trim_start_matches("pbkdf2_");
    pbkdf2_check(
        digest,
        password,
        salt.as_bytes(),
        rounds,
        &expected,
        check_only,
    )
}

fn django_scrypt(password: &[u8], stored: &str, check_only: bool) -> Result<bool, String> {
    // scrypt$<N>$<salt text>$<r>$<p>$<base64 hash> (Django 4.0+)
    let parts: Vec<&str> = stored.split('$').collect();
    let [_, n, salt, r, p, hash] = parts[..] else {
        return Err("django scrypt: expected scrypt$N$salt$r$p$hash".into());
    };
    let n: u64 = n.parse().map_err(|_| "django scrypt: bad N")?;
    if !n.is_power_of_two() || n < 2 {
        return Err("django scrypt: N must be a power of two".into());
    }
    let log_n = u8::try_from(n.trailing_zeros()).map_err(|_| "django scrypt: bad N")?;
    let r: u32 = r.parse().map_err(|_| "django scrypt: bad r")?;
    let p: u32 = p.parse().map_err(|_| "django scrypt: bad p")?;
    let expected = STANDARD
        .decode(hash)
        .map_err(|_| "django scrypt: hash not base64")?;
    scrypt_check(
        password,
        salt.as_bytes(),
        &expected,
        log_n,
        r,
        p,
        check_only,
    )
}

fn sha_crypt(password: &[u8], stored: &str, check_only: bool) -> Result<bool, String> {
    // $6$[rounds=N$]salt$hash: salt of at most 16 characters, hash of 86
    // (SHA-512) or 43 (SHA-256) crypt characters; 5000 rounds when unsaid.
    let six = stored.starts_with("$6$");
    let fields: Vec<&str> = stored.split('$').skip(2).collect();
    let (rounds, fields) = match fields.first().and_then(|f| f.strip_prefix("rounds=")) {
        Some(rounds) => (
            rounds.parse::<u32>().map_err(|_| "sha-crypt: bad rounds")?,
            &fields[1..],
        ),
        None => (5000, &fields[..]),
    };
    let hash_len = if six { 86 } else { 43 };
    let [salt, hash] = fields else {
        return Err("sha-crypt: expected $id$[rounds=N$]salt$hash".into());
    };
    if salt.len() > 16 || hash.len() != hash_len || !hash.bytes().all(|b| ITOA64.contains(&b)) {
        return Err("sha-crypt: expected $id$[rounds=N$]salt$hash".into());
    }
    if !(1000..=MAX_SHA_CRYPT_ROUNDS).contains(&rounds) {
        return Err(format!(
            "sha-crypt: rounds must be 1000 to {MAX_SHA_CRYPT_ROUNDS}"
        ));
    }
    if check_only {
        return Ok(true);
    }
    let computed = if six {
        let params = sha_crypt::Sha512Params::new(rounds as usize)
            .map_err(|e| format!("sha-crypt: {e:?}"))?;
        sha_crypt::sha512_crypt_b64(password, salt.as_bytes(), &params)
    } else {
        let params = sha_crypt::Sha256Params::new(rounds as usize)
            .map_err(|e| format!("sha-crypt: {e:?}"))?;
        sha_crypt::sha256_crypt_b64(password, salt.as_bytes(), &params)
    }
    .map_err(|e| format!("sha-crypt: {e:?}"))?;
    Ok(equal(computed.as_bytes(), hash.as_bytes()))
}

/// The crypt(3) alphabet for 6-bit groups.
const ITOA64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// MD5-crypt (`$1$`, and Apache's `$apr1$`, the same with another magic),
/// as Poul-Henning Kamp defined it, over the `md-5` crate.
fn md5_crypt(password: &[u8], stored: &str, check_only: bool) -> Result<bool, String> {
    let magic = if stored.starts_with("$apr1$") {
        "$apr1$"
    } else {
        "$1$"
    };
    let rest = &stored[magic.len()..];
    let (salt, hash) = rest
        .split_once('$')
        .ok_or("md5-crypt: expected magic salt$hash")?;
    if salt.len() > 8 || hash.len() != 22 || !hash.bytes().all(|b| ITOA64.contains(&b)) {
        return Err("md5-crypt: salt of at most 8 and hash of 22 characters".into());
    }
    if check_only {
        return Ok(true);
    }
    let salt = salt.as_bytes();
    let mut alternate = Md5::new();
    alternate.update(password);
    alternate.update(salt);
    alternate.update(password);
    let alternate = alternate.finalize();
    let mut ctx = Md5::new();
    ctx.update(password);
    ctx.update(magic.as_bytes());
    ctx.update(salt);
    let mut left = password.len();
    while left > 0 {
        let n = left.min(16);
        ctx.update(&alternate[..n]);
        left -= n;
    }
    let mut bits = password.len();
    while bits > 0 {
        if bits & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..password.len().min(1)]);
        }
        bits >>= 1;
    }
    let mut digest = ctx.finalize();
    for round in 0..1000 {
        let mut next = Md5::new();
        if round % 2 == 1 {
            next.update(password);
        } else {
            next.update(digest);
        }
        if round % 3 != 0 {
            next.update(salt);
        }
        if round % 7 != 0 {
            next.update(password);
        }
        if round % 2 == 1 {
            next.update(digest);
        } else {
            next.update(password);
        }
        digest = next.finalize();
    }
    let mut out = Vec::with_capacity(22);
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        let v = (u32::from(digest[a]) << 16) | (u32::from(digest[b]) << 8) | u32::from(digest[c]);
        for i in 0..4 {
            out.push(ITOA64[((v >> (6 * i)) & 0x3f) as usize]);
        }
    }
    let v = u32::from(digest[11]);
    for i in 0..2 {
        out.push(ITOA64[((v >> (6 * i)) & 0x3f) as usize]);
    }
    Ok(equal(&out, hash.as_bytes()))
}

/// phpass's encoding of `count` bytes into 6-bit groups (little-endian).
fn phpass_encode(input: &[u8], count: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < count {
        let mut value = u32::from(input[i]);
        i += 1;
        out.push(ITOA64[(value & 0x3f) as usize]);
        if i < count {
            value |= u32::from(input[i]) << 8;
        }
        out.push(ITOA64[((value >> 6) & 0x3f) as usize]);
        if i >= count {
            break;
        }
        i += 1;
        if i < count {
            value |= u32::from(input[i]) << 16;
        }
        out.push(ITOA64[((value >> 12) & 0x3f) as usize]);
        if i >= count {
            break;
        }
        i += 1;
        out.push(ITOA64[((value >> 18) & 0x3f) as usize]);
    }
    out
}

/// phpass portable hashes (`$P$` WordPress, `$H$` phpBB: MD5) and Drupal 7
/// (`$S$`: the same construction over SHA-512, cut to 55 characters).
fn phpass(password: &[u8], stored: &str, check_only: bool) -> Result<bool, String> {
    let bytes = stored.as_bytes();
    let drupal = stored.starts_with("$S$");
    let expected_len = if drupal { 55 } else { 34 };
    if bytes.len() != expected_len {
        return Err(format!(
            "phpass: a hash of this kind is {expected_len} characters"
        ));
    }
    let log2 = ITOA64
        .iter()
        .position(|&c| c == bytes[3])
        .ok_or("phpass: bad iteration character")? as u32;
    if !(7..=MAX_PHPASS_LOG2).contains(&log2) {
        return Err(format!(
            "phpass: iteration exponent must be 7 to {MAX_PHPASS_LOG2}"
        ));
    }
    let salt = &bytes[4..12];
    if check_only {
        return Ok(true);
    }
    let count = 1u64 << log2;
    let encoded = if drupal {
        let mut hash = Sha512::new()
            .chain_update(salt)
            .chain_update(password)
            .finalize();
        for _ in 0..count {
            hash = Sha512::new()
                .chain_update(hash)
                .chain_update(password)
                .finalize();
        }
        phpass_encode(&hash, 64)
    } else {
        let mut hash = Md5::new()
            .chain_update(salt)
            .chain_update(password)
            .finalize();
        for _ in 0..count {
            hash = Md5::new()
                .chain_update(hash)
                .chain_update(password)
                .finalize();
        }
        phpass_encode(&hash, 16)
    };
    let computed = &encoded[..expected_len - 12];
    Ok(equal(computed, &bytes[12..]))
}

/// What an ASP.NET Identity blob holds.
struct IdentityHash<'a> {
    prf: &'static str,
    rounds: u32,
    salt: &'a [u8],
    subkey: &'a [u8],
}

/// Reads ASP.NET Identity's blob.
fn identity_parts(blob: &[u8]) -> Result<IdentityHash<'_>, String> {
    match blob.first() {
        // V2: 0x00, 16-byte salt, 32-byte subkey; PBKDF2-HMAC-SHA1, 1000 rounds.
        Some(0) if blob.len() == 49 => Ok(IdentityHash {
            prf: "sha1",
            rounds: 1000,
            salt: &blob[1..17],
            subkey: &blob[17..],
        }),
        // V3: 0x01, prf, iterations and salt length (big-endian u32), salt, subkey.
        Some(1) if blob.len() >= 13 => {
            let word = |at: usize| {
                u32::from_be_bytes([blob[at], blob[at + 1], blob[at + 2], blob[at + 3]])
            };
            let prf = match word(1) {
                0 => "sha1",
                1 => "sha256",
                2 => "sha512",
                _ => return Err("aspnet-identity: unknown PRF".into()),
            };
            let salt_len = word(9) as usize;
            if salt_len < 8 || blob.len() < 13 + salt_len + 16 {
                return Err("aspnet-identity: salt or subkey too short".into());
            }
            Ok(IdentityHash {
                prf,
                rounds: word(5),
                salt: &blob[13..13 + salt_len],
                subkey: &blob[13 + salt_len..],
            })
        }
        _ => Err("aspnet-identity: not a V2 or V3 password hash".into()),
    }
}

fn aspnet_identity(password: &[u8], stored: &str, check_only: bool) -> Result<bool, String> {
    let blob = STANDARD
        .decode(&stored[ASPNET_IDENTITY.len()..])
        .map_err(|_| "aspnet-identity: not base64")?;
    let hash = identity_parts(&blob)?;
    pbkdf2_check(
        hash.prf,
        password,
        hash.salt,
        hash.rounds,
        hash.subkey,
        check_only,
    )
}

/// ASP.NET Membership `Hashed`: the digest of the salt's bytes followed by
/// the password in UTF-16LE.
fn membership(password: &[u8], stored: &str, check_only: bool) -> Result<bool, String> {
    let sha1 = stored.starts_with(MEMBERSHIP_SHA1);
    let rest = stored
        .strip_prefix(if sha1 {
            MEMBERSHIP_SHA1
        } else {
            MEMBERSHIP_SHA256
        })
        .unwrap_or_default();
    let (salt, hash) = rest.split_once('$').ok_or("membership: salt$hash")?;
    let salt = STANDARD
        .decode(salt)
        .map_err(|_| "membership: salt not base64")?;
    let expected = STANDARD
        .decode(hash)
        .map_err(|_| "membership: hash not base64")?;
    if check_only {
        return Ok(true);
    }
    let Ok(text) = std::str::from_utf8(password) else {
        return Ok(false);
    };
    let utf16: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let computed = if sha1 {
        Sha1::new()
            .chain_update(&salt)
            .chain_update(&utf16)
            .finalize()
            .to_vec()
    } else {
        Sha256::new()
            .chain_update(&salt)
            .chain_update(&utf16)
            .finalize()
            .to_vec()
    };
    Ok(equal(&computed, &expected))
}

/// Firebase Authentication's modified scrypt: scrypt of the password with
/// the user's salt followed by the project's separator (N = 2^mem_cost,
/// r = rounds, p = 1, 64 bytes); its first 32 bytes key AES-256-CTR (zero
/// IV), which encrypts the project's signer key; that is the user's hash.
fn firebase_scrypt(password: &[u8], stored: &str, check_only: bool) -> Result<bool, String> {
    use aws_lc_rs::cipher::{AES_256, EncryptingKey, EncryptionContext, UnboundCipherKey};
    use aws_lc_rs::iv::FixedLength;
    let parts: Vec<&str> = stored[FIREBASE.len()..].split('$').collect();
    let [signer, separator, rounds, mem_cost, salt, hash] = parts[..] else {
        return Err("firebase-scrypt: malformed".into());
    };
    let decode = |part: &str| {
        STANDARD
            .decode(part)
            .map_err(|_| "firebase-scrypt: malformed".to_owned())
    };
    let (signer, separator, salt, expected) = (
        decode(signer)?,
        decode(separator)?,
        decode(salt)?,
        decode(hash)?,
    );
    let rounds: u32 = rounds.parse().map_err(|_| "firebase-scrypt: bad rounds")?;
    let mem_cost: u8 = mem_cost
        .parse()
        .map_err(|_| "firebase-scrypt: bad mem_cost")?;
    if !(1..=8).contains(&rounds)
        || !(1..=MAX_SCRYPT_LOG_N).contains(&mem_cost)
        || !scrypt_memory_ok(mem_cost, rounds)
    {
        return Err("firebase-scrypt: parameters beyond what Sesame verifies".into());
    }
    if expected.len() != signer.len() {
        return Err("firebase-scrypt: the hash is not as long as the signer key".into());
    }
    // An empty key would make an empty hash match every password.
    if signer.len() < 16 {
        return Err("firebase-scrypt: the signer key is shorter than 16 bytes".into());
    }
    if check_only {
        return Ok(true);
    }
    let params =
        scrypt::Params::new(mem_cost, rounds, 1, 64).map_err(|e| format!("scrypt: {e}"))?;
    let mut derived = [0u8; 64];
    let salted = [salt.as_slice(), separator.as_slice()].concat();
    scrypt::scrypt(password, &salted, &params, &mut derived).map_err(|e| format!("scrypt: {e}"))?;
    let key =
        UnboundCipherKey::new(&AES_256, &derived[..32]).map_err(|_| "firebase-scrypt: key")?;
    let cipher = EncryptingKey::ctr(key).map_err(|_| "firebase-scrypt: key")?;
    let mut computed = signer;
    cipher
        .less_safe_encrypt(
            &mut computed,
            EncryptionContext::Iv128(FixedLength::from([0u8; 16])),
        )
        .map_err(|_| "firebase-scrypt: encryption")?;
    Ok(equal(&computed, &expected))
}

fn template_verify(password: &[u8], stored: &str, check_only: bool) -> Result<bool, String> {
    let parts: Vec<&str> = stored[TEMPLATE.len()..].split('$').collect();
    let [source, salt, username, expected] = parts[..] else {
        return Err("template: malformed".into());
    };
    let decode = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| "template: malformed".to_owned())
    };
    let source = String::from_utf8(decode(source)?).map_err(|_| "template: malformed")?;
    let template = Template::parse(&source, &[]).map_err(|e| format!("template: {e}"))?;
    let (salt, username, expected) = (decode(salt)?, decode(username)?, decode(expected)?);
    // The bounds the template's size was judged by (`longest_value`).
    if salt.len() > MAX_STORED_BYTES || username.len() > super::domain::MAX_LOGIN_BYTES {
        return Err("template: salt or username too long".into());
    }
    if expected.is_empty() {
        return Err("template: empty digest".into());
    }
    if check_only {
        return Ok(true);
    }
    let computed = template.eval(password, &salt, &username);
    // Hex digests compare in any case, as the systems that stored them did.
    let expected = if expected.iter().all(u8::is_ascii_hexdigit) {
        expected.to_ascii_lowercase()
    } else {
        expected
    };
    let computed = if computed.iter().all(u8::is_ascii_hexdigit)
        && expected.iter().all(u8::is_ascii_hexdigit)
    {
        computed.to_ascii_lowercase()
    } else {
        computed
    };
    Ok(equal(&computed, &expected))
}

// ------------------------------------------------------------------ accounts

impl super::Core {
    /// How many accounts still hold an imported hash, by format (`expired`:
    /// those whose hash was expired and who need a new password).
    pub async fn legacy_hashes(
        &self,
    ) -> super::Result<std::collections::BTreeMap<&'static str, u64>> {
        let mut counts = std::collections::BTreeMap::new();
        let mut after = 0;
        loop {
            let page = self.store.foreign_hashes(after, 1000).await?;
            let Some(&(last, _, _)) = page.last() else {
                return Ok(counts);
            };
            for (_, hash, _) in &page {
                *counts
                    .entry(format_of(hash).unwrap_or("unknown"))
                    .or_default() += 1;
            }
            after = last;
        }
    }

    /// Forces a new password on every account still holding an imported
    /// hash set more than `older_than` seconds ago: the hash (and the MD5
    /// verifier) are replaced by a value no password matches, and the
    /// account's sessions end. Returns how many accounts.
    pub async fn expire_legacy(
        &self,
        older_than: i64,
        actor: &super::roles::Actor,
    ) -> super::Result<u64> {
        let now = self.now();
        let cutoff = now.saturating_sub(older_than);
        let mut expired = 0;
        let mut after = 0;
        loop {
            let page = self.store.foreign_hashes(after, 1000).await?;
            let Some(&(last, _, _)) = page.last() else {
                return Ok(expired);
            };
            for (id, hash, set_at) in page {
                let format = format_of(&hash).unwrap_or("unknown");
                if format == "expired" || set_at >= cutoff {
                    continue;
                }
                let verifiers = crate::store::PasswordVerifiers {
                    password_hash: format!("{EXPIRED}{}", format.replace(' ', "-")),
                    md5_verifier: None,
                };
                // Not if the hash changed since the page was read (its
                // owner signed in and it was upgraded, or a new password).
                if !self
                    .store
                    .set_password(id, &verifiers, false, Some(&hash), now)
                    .await?
                {
                    continue;
                }
                self.account_changed(id).await;
                self.end_account_sessions(id, None, "password_expired")
                    .await?;
                if let Ok(account) = self.account(id).await {
                    self.audit_change(
                        actor,
                        "legacy_expired",
                        &account,
                        Some(format!(
                            "imported {format} hash expired; a new password is needed"
                        )),
                    );
                }
                expired += 1;
            }
            after = last;
        }
    }
}

// ------------------------------------------------------------------ templates

/// A legacy digest template: an expression over `password`, `salt`,
/// `username`, string literals and named constants, with `+` for
/// concatenation and the functions `md5`, `sha1`, `sha256`, `sha512` and
/// `hmac_sha256(key, msg)` (lower-case hex, as PHP's), their `_raw`
/// variants (the bytes), `hex`, `base64`, `upper` and `lower`. For example
/// `md5(sha1(password) + "Carey_Shop#")` or `md5(salt + password)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    root: Node,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Password,
    Salt,
    Username,
    Literal(Vec<u8>),
    Concat(Vec<Node>),
    Call(Function, Vec<Node>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Function {
    Md5,
    Sha1,
    Sha256,
    Sha512,
    HmacSha256,
    Md5Raw,
    Sha1Raw,
    Sha256Raw,
    Sha512Raw,
    HmacSha256Raw,
    Hex,
    Base64,
    Upper,
    Lower,
}

impl Function {
    fn parse(name: &str) -> Option<(Self, usize)> {
        Some(match name {
            "md5" => (Function::Md5, 1),
            "sha1" => (Function::Sha1, 1),
            "sha256" => (Function::Sha256, 1),
            "sha512" => (Function::Sha512, 1),
            "hmac_sha256" => (Function::HmacSha256, 2),
            "md5_raw" => (Function::Md5Raw, 1),
            "sha1_raw" => (Function::Sha1Raw, 1),
            "sha256_raw" => (Function::Sha256Raw, 1),
            "sha512_raw" => (Function::Sha512Raw, 1),
            "hmac_sha256_raw" => (Function::HmacSha256Raw, 2),
            "hex" => (Function::Hex, 1),
            "base64" => (Function::Base64, 1),
            "upper" => (Function::Upper, 1),
            "lower" => (Function::Lower, 1),
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Function::Md5 => "md5",
            Function::Sha1 => "sha1",
            Function::Sha256 => "sha256",
            Function::Sha512 => "sha512",
            Function::HmacSha256 => "hmac_sha256",
            Function::Md5Raw => "md5_raw",
            Function::Sha1Raw => "sha1_raw",
            Function::Sha256Raw => "sha256_raw",
            Function::Sha512Raw => "sha512_raw",
            Function::HmacSha256Raw => "hmac_sha256_raw",
            Function::Hex => "hex",
            Function::Base64 => "base64",
            Function::Upper => "upper",
            Function::Lower => "lower",
        }
    }

    fn apply(self, args: &[Vec<u8>]) -> Vec<u8> {
        let raw = match self {
            Function::Md5 | Function::Md5Raw => Md5::digest(&args[0]).to_vec(),
            Function::Sha1 | Function::Sha1Raw => Sha1::digest(&args[0]).to_vec(),
            Function::Sha256 | Function::Sha256Raw => Sha256::digest(&args[0]).to_vec(),
            Function::Sha512 | Function::Sha512Raw => Sha512::digest(&args[0]).to_vec(),
            Function::HmacSha256 | Function::HmacSha256Raw => {
                // HMAC takes a key of any length: this never fails.
                match <Hmac<Sha256> as Mac>::new_from_slice(&args[0]) {
                    Ok(mut mac) => {
                        mac.update(&args[1]);
                        mac.finalize().into_bytes().to_vec()
                    }
                    Err(_) => Vec::new(),
                }
            }
            Function::Hex => return hex::encode(&args[0]).into_bytes(),
            Function::Base64 => return STANDARD.encode(&args[0]).into_bytes(),
            Function::Upper => return args[0].to_ascii_uppercase(),
            Function::Lower => return args[0].to_ascii_lowercase(),
        };
        match self {
            Function::Md5
            | Function::Sha1
            | Function::Sha256
            | Function::Sha512
            | Function::HmacSha256 => hex::encode(raw).into_bytes(),
            _ => raw,
        }
    }
}

/// A template that does not parse: what is wrong and where (1-based character).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// Character position of the mistake.
    pub position: usize,
    /// What was expected.
    pub message: String,
}

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at character {}: {}", self.position, self.message)
    }
}

struct Parser<'a> {
    chars: Vec<char>,
    at: usize,
    constants: &'a [(String, String)],
}

const MAX_TEMPLATE_CHARS: usize = 1000;
const MAX_DEPTH: usize = 32;
/// Largest value a template may compute, in bytes, for the longest password,
/// salt and username. Nesting doubles a value at each level (`hex(hex(…))`,
/// `upper(x + x)`), so without a bound 32 levels would ask for terabytes at
/// a sign-in.
const MAX_TEMPLATE_OUTPUT: u64 = 64 * 1024;

impl Parser<'_> {
    fn error<T>(&self, message: impl Into<String>) -> Result<T, TemplateError> {
        Err(TemplateError {
            position: self.at + 1,
            message: message.into(),
        })
    }

    fn skip_spaces(&mut self) {
        while self.chars.get(self.at).is_some_and(|c| c.is_whitespace()) {
            self.at += 1;
        }
    }

    fn expression(&mut self, depth: usize) -> Result<Node, TemplateError> {
        if depth > MAX_DEPTH {
            return self.error("nested too deeply");
        }
        let mut terms = vec![self.term(depth)?];
        loop {
            self.skip_spaces();
            if self.chars.get(self.at) == Some(&'+') {
                self.at += 1;
                terms.push(self.term(depth)?);
            } else {
                break;
            }
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Node::Concat(terms)
        })
    }

    fn term(&mut self, depth: usize) -> Result<Node, TemplateError> {
        self.skip_spaces();
        match self.chars.get(self.at) {
            Some('"') | Some('\'') => self.literal(),
            Some(c) if c.is_ascii_alphabetic() || *c == '_' => {
                let start = self.at;
                while self
                    .chars
                    .get(self.at)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
                {
                    self.at += 1;
                }
                let name: String = self.chars[start..self.at].iter().collect();
                self.skip_spaces();
                if self.chars.get(self.at) == Some(&'(') {
                    let Some((function, arity)) = Function::parse(&name) else {
                        self.at = start;
                        return self.error(format!("unknown function {name:?}"));
                    };
                    self.at += 1;
                    let mut args = vec![self.expression(depth + 1)?];
                    loop {
                        self.skip_spaces();
                        match self.chars.get(self.at) {
                            Some(',') => {
                                self.at += 1;
                                args.push(self.expression(depth + 1)?);
                            }
                            Some(')') => {
                                self.at += 1;
                                break;
                            }
                            _ => return self.error("expected ',' or ')'"),
                        }
                    }
                    if args.len() != arity {
                        self.at = start;
                        return self.error(format!("{name} takes {arity} argument(s)"));
                    }
                    return Ok(Node::Call(function, args));
                }
                match name.as_str() {
                    "password" => Ok(Node::Password),
                    "salt" => Ok(Node::Salt),
                    "username" => Ok(Node::Username),
                    other => match self.constants.iter().find(|(n, _)| n == other) {
                        Some((_, value)) => Ok(Node::Literal(value.as_bytes().to_vec())),
                        None => {
                            self.at = start;
                            self.error(format!(
                                "unknown name {other:?} (password, salt, username or a --template-const)"
                            ))
                        }
                    },
                }
            }
            Some(_) => self.error("expected a string, a name or a function call"),
            None => self.error("the expression ends too early"),
        }
    }

    fn literal(&mut self) -> Result<Node, TemplateError> {
        let quote = self.chars[self.at];
        self.at += 1;
        let mut text = String::new();
        loop {
            match self.chars.get(self.at) {
                None => return self.error("unterminated string"),
                Some(c) if *c == quote => {
                    self.at += 1;
                    return Ok(Node::Literal(text.into_bytes()));
                }
                Some('\\') => {
                    self.at += 1;
                    match self.chars.get(self.at) {
                        Some(c @ ('\\' | '"' | '\'')) => text.push(*c),
                        _ => return self.error("only \\\\, \\\" and \\' are escapes"),
                    }
                    self.at += 1;
                }
                Some(c) => {
                    text.push(*c);
                    self.at += 1;
                }
            }
        }
    }
}

/// The longest value `node` or any expression inside it can have, as
/// (its own, the largest inside or its own): the longest password a login
/// takes, the longest stored hash as the salt, the longest login as the
/// username. Saturates instead of overflowing.
fn longest_value(node: &Node) -> (u64, u64) {
    let len = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    let leaf = |n: u64| (n, n);
    match node {
        Node::Password => leaf(len(super::domain::MAX_PASSWORD_BYTES)),
        Node::Salt => leaf(len(MAX_STORED_BYTES)),
        Node::Username => leaf(len(super::domain::MAX_LOGIN_BYTES)),
        Node::Literal(bytes) => leaf(len(bytes.len())),
        Node::Concat(parts) => {
            let (own, inside) = parts
                .iter()
                .map(longest_value)
                .fold((0u64, 0u64), |(own, inside), (part, largest)| {
                    (own.saturating_add(part), inside.max(largest))
                });
            (own, inside.max(own))
        }
        Node::Call(function, args) => {
            let values: Vec<(u64, u64)> = args.iter().map(longest_value).collect();
            let inside = values.iter().map(|v| v.1).max().unwrap_or(0);
            let arg = values.first().map_or(0, |v| v.0);
            let own = match function {
                Function::Md5Raw => 16,
                Function::Sha1Raw => 20,
                Function::Sha256Raw | Function::HmacSha256Raw => 32,
                Function::Sha512Raw => 64,
                Function::Md5 => 32,
                Function::Sha1 => 40,
                Function::Sha256 | Function::HmacSha256 => 64,
                Function::Sha512 => 128,
                Function::Hex => arg.saturating_mul(2),
                Function::Base64 => arg.div_ceil(3).saturating_mul(4),
                Function::Upper | Function::Lower => arg,
            };
            (own, inside.max(own))
        }
    }
}

/// Whether `node` reads the variable `variable` anywhere.
fn reads(node: &Node, variable: &Node) -> bool {
    match node {
        Node::Concat(parts) | Node::Call(_, parts) => parts.iter().any(|p| reads(p, variable)),
        other => other == variable,
    }
}

impl Template {
    /// Parses an expression; `constants` are its named constants.
    pub fn parse(source: &str, constants: &[(String, String)]) -> Result<Self, TemplateError> {
        if source.chars().count() > MAX_TEMPLATE_CHARS {
            return Err(TemplateError {
                position: MAX_TEMPLATE_CHARS,
                message: format!("longer than {MAX_TEMPLATE_CHARS} characters"),
            });
        }
        let mut parser = Parser {
            chars: source.chars().collect(),
            at: 0,
            constants,
        };
        let root = parser.expression(0)?;
        parser.skip_spaces();
        if parser.at < parser.chars.len() {
            return parser.error("unexpected text after the expression");
        }
        if !reads(&root, &Node::Password) {
            return Err(TemplateError {
                position: 1,
                message: "it never reads password, so every password would match".into(),
            });
        }
        let (_, longest) = longest_value(&root);
        if longest > MAX_TEMPLATE_OUTPUT {
            return Err(TemplateError {
                position: 1,
                message: format!(
                    "its value could reach {longest} bytes for a long password (at most \
                     {MAX_TEMPLATE_OUTPUT})"
                ),
            });
        }
        Ok(Self { root })
    }

    /// The expression with its constants written in (stored with each hash).
    pub fn source(&self) -> String {
        fn render(node: &Node, out: &mut String) {
            match node {
                Node::Password => out.push_str("password"),
                Node::Salt => out.push_str("salt"),
                Node::Username => out.push_str("username"),
                Node::Literal(bytes) => {
                    out.push('"');
                    for c in String::from_utf8_lossy(bytes).chars() {
                        if c == '"' || c == '\\' {
                            out.push('\\');
                        }
                        out.push(c);
                    }
                    out.push('"');
                }
                Node::Concat(parts) => {
                    for (i, part) in parts.iter().enumerate() {
                        if i > 0 {
                            out.push_str(" + ");
                        }
                        render(part, out);
                    }
                }
                Node::Call(function, args) => {
                    out.push_str(function.name());
                    out.push('(');
                    for (i, arg) in args.iter().enumerate() {
                        if i > 0 {
                            out.push_str(", ");
                        }
                        render(arg, out);
                    }
                    out.push(')');
                }
            }
        }
        let mut out = String::new();
        render(&self.root, &mut out);
        out
    }

    /// Whether the expression reads `salt`.
    pub fn uses_salt(&self) -> bool {
        reads(&self.root, &Node::Salt)
    }

    /// The expression's value.
    pub fn eval(&self, password: &[u8], salt: &[u8], username: &[u8]) -> Vec<u8> {
        fn eval(node: &Node, password: &[u8], salt: &[u8], username: &[u8]) -> Vec<u8> {
            match node {
                Node::Password => password.to_vec(),
                Node::Salt => salt.to_vec(),
                Node::Username => username.to_vec(),
                Node::Literal(bytes) => bytes.clone(),
                Node::Concat(parts) => parts
                    .iter()
                    .flat_map(|p| eval(p, password, salt, username))
                    .collect(),
                Node::Call(function, args) => {
                    let args: Vec<Vec<u8>> = args
                        .iter()
                        .map(|a| eval(a, password, salt, username))
                        .collect();
                    function.apply(&args)
                }
            }
        }
        eval(&self.root, password, salt, username)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_evaluate_and_point_at_mistakes() {
        let careyshop = Template::parse(r#"md5(sha1(password) + "Carey_Shop#")"#, &[]).unwrap();
        let expected = hex::encode(Md5::digest(
            format!("{}Carey_Shop#", hex::encode(Sha1::digest(b"secret"))).as_bytes(),
        ));
        assert_eq!(careyshop.eval(b"secret", b"", b""), expected.as_bytes());
        assert!(!careyshop.uses_salt());
        let with_const = Template::parse(
            "md5(password + PEPPER)",
            &[("PEPPER".into(), "p\"q".into())],
        )
        .unwrap();
        assert_eq!(with_const.source(), r#"md5(password + "p\"q")"#);
        assert_eq!(
            Template::parse(&with_const.source(), &[]).unwrap(),
            with_const
        );
        let error = Template::parse("md5(password + )", &[]).unwrap_err();
        assert_eq!(error.position, 16);
        assert_eq!(
            Template::parse("md6(password)", &[]).unwrap_err().position,
            1
        );
        assert!(Template::parse("hmac_sha256(password)", &[]).is_err());
        assert!(
            Template::parse("md5(\"open", &[])
                .unwrap_err()
                .message
                .contains("unterminated")
        );
        assert!(Template::parse(&"md5(".repeat(40), &[]).is_err());
        // Each level doubles the value: bounded however deep the nesting.
        let nested =
            |levels: usize| format!("{}password{}", "hex(".repeat(levels), ")".repeat(levels));
        assert!(Template::parse(&nested(5), &[]).is_ok());
        let error = Template::parse(&nested(30), &[]).unwrap_err();
        assert!(error.message.contains("could reach"), "{error}");
        assert!(Template::parse("upper(salt + salt + salt + password)", &[]).is_ok());
        assert!(Template::parse(&format!("md5({})", nested(30)), &[]).is_err());
    }

    #[test]
    fn stored_hashes_that_would_hold_a_hashing_thread_are_refused() {
        let phpass_at = |exponent: usize| {
            let c = char::from(ITOA64[exponent]);
            format!("$P${c}abcdefgh{}", "a".repeat(22))
        };
        assert_eq!(phpass(b"x", &phpass_at(20), true), Ok(true));
        let refused = phpass(b"x", &phpass_at(21), true).unwrap_err();
        assert!(refused.contains("7 to 20"), "{refused}");
        let sha512 = |rounds: u32| format!("$6$rounds={rounds}$saltsalt${}", "a".repeat(86));
        assert_eq!(sha_crypt(b"x", &sha512(1_000_000), true), Ok(true));
        let refused = sha_crypt(b"x", &sha512(1_000_001), true).unwrap_err();
        assert!(refused.contains("1000 to 1000000"), "{refused}");
        // PBKDF2: each output block repeats the iterations.
        let sha1 = |rounds: u32, len: usize| {
            format!(
                "pbkdf2_sha1${rounds}$salt${}",
                STANDARD.encode(vec![0u8; len])
            )
        };
        assert_eq!(django_pbkdf2(b"x", &sha1(10_000_000, 20), true), Ok(true));
        let refused = django_pbkdf2(b"x", &sha1(10_000_000, 128), true).unwrap_err();
        assert!(refused.contains("output blocks"), "{refused}");
        assert_eq!(django_pbkdf2(b"x", &sha1(1_000_000, 128), true), Ok(true));
        // A template's salt as long as the value bound was judged by.
        let stored = |salt: &[u8]| {
            format!(
                "{TEMPLATE}{}${}${}${}",
                URL_SAFE_NO_PAD.encode("hex(hex(salt)) + password"),
                URL_SAFE_NO_PAD.encode(salt),
                URL_SAFE_NO_PAD.encode("u"),
                URL_SAFE_NO_PAD.encode("00")
            )
        };
        assert_eq!(template_verify(b"x", &stored(&[1; 4096]), true), Ok(true));
        assert!(template_verify(b"x", &stored(&vec![1; 1 << 20]), true).is_err());
    }

    #[test]
    fn formats_are_recognised_from_their_prefix() {
        for (hash, format) in [
            ("$2y$10$abc", Some("bcrypt")),
            ("pbkdf2_sha256$260000$s$h", Some("django")),
            ("$P$Babcdefgh", Some("phpass")),
            ("$S$Dabc", Some("drupal7")),
            ("$apr1$abc$def", Some("crypt")),
            ("5f4dcc3b5aa765d61d8327deb882cf99", None),
        ] {
            assert_eq!(recognise(hash), format, "{hash}");
        }
        let refused = prepare(
            Given {
                hash: "$2x$10$abcdefghijklmnopqrstuu5s2v8.iXieOjg/.AySBTTZIIVFJeBui",
                ..Given::default()
            },
            None,
            None,
        )
        .unwrap_err();
        assert!(refused.contains("PHP bug"), "{refused}");
        let refused = prepare(
            Given {
                hash: "abc",
                format: Some("hunter2-secret"),
                salt: Some("x"),
                ..Given::default()
            },
            None,
            None,
        )
        .unwrap_err();
        assert!(
            refused.contains("unknown") && !refused.contains("hunter2"),
            "{refused}"
        );
    }

    #[test]
    fn firebase_scrypt_matches_the_vector_firebase_publishes() {
        // The example of Firebase's own scrypt reference (firebase/scrypt).
        let params = FirebaseParams::parse(
            "jxspr8Ki0RYycVU8zykbdLGjFQ3McFUH0uiiTvC8pVMXAn210wjLNmdZJzxUECKbm0QsEmYUSDzZvpjeJ9WmXA==",
            "Bw==",
            8,
            14,
        )
        .unwrap();
        let given = Given {
            hash: "lSrfV15cpx95/sZS2W9c9Kp6i/LVgQNDNC/qzrCnh1SAyZvqmZqAjTdn3aoItz+VHjoZilo78198JAdRuid5lQ==",
            format: Some("firebase-scrypt"),
            salt: Some("42xEC+ixf3L2lw=="),
            username: "user1",
        };
        let Prepared::Stored(stored) = prepare(given, None, Some(&params)).unwrap() else {
            panic!("stored");
        };
        assert_eq!(verify(b"user1password", &stored), Ok(true));
        assert_eq!(verify(b"user1passwore", &stored), Ok(false));
        // A key shorter than every stored hash is checked for is refused
        // at once, not line by line.
        assert!(
            FirebaseParams::parse("c2hvcnQga2V5", "Bw==", 8, 14)
                .unwrap_err()
                .contains("16 to 1024 bytes")
        );
        assert!(
            prepare(given, None, None)
                .unwrap_err()
                .contains("--firebase-signer-key")
        );
    }

    /// Stored forms of Sesame's own that a file could carry, crafted to
    /// match every password, are refused at import (and never match).
    #[test]
    fn no_stored_form_matches_every_password() {
        for crafted in [
            "$sesame-firebase-scrypt$$$1$1$$".to_owned(),
            format!(
                "{TEMPLATE}{}${}${}$",
                URL_SAFE_NO_PAD.encode("salt"),
                URL_SAFE_NO_PAD.encode(""),
                URL_SAFE_NO_PAD.encode("u"),
            ),
            format!(
                "{TEMPLATE}{}${}${}$",
                URL_SAFE_NO_PAD.encode("md5(password)"),
                URL_SAFE_NO_PAD.encode(""),
                URL_SAFE_NO_PAD.encode("u"),
            ),
        ] {
            let given = Given {
                hash: &crafted,
                ..Given::default()
            };
            assert!(prepare(given, None, None).is_err(), "{crafted}");
            assert_ne!(verify(b"anything", &crafted), Ok(true), "{crafted}");
        }
        // Formats whose every round reads the whole password take none
        // over 256 bytes (it would hold a hashing thread for seconds).
        // Hashes of 256 and 257 'a's (Python's crypt, glibc): the longer
        // one matches nothing, though it is its password.
        let of_256 = "$6$rounds=1000$saltsalt$dNOHOYavRbwe/gbWoDfkHJumaM92sEE4XJW2plAlGgP5u\
            rmzQgo6Rt9V2tzTppOz0lTUbn8dzDpMSuYQLVHI21";
        let of_257 = "$6$rounds=1000$saltsalt$qkqivdr4kZV8pwF41ZHoic.acCFec/Gc59.s1bGAPLbd\
            h2MlREKepfqEyumxHBwAEGJRpumozqbDwH9mfdfON1";
        assert_eq!(verify(&[b'a'; 256], of_256), Ok(true));
        assert_eq!(verify(&[b'a'; 257], of_257), Ok(false));
        assert_eq!(verify(&[b'a'; 257], "$S$Dabcdefgh"), Ok(false));
        let refused = Template::parse("md5(salt + \"pepper\")", &[]).unwrap_err();
        assert!(
            refused.message.contains("never reads password"),
            "{refused:?}"
        );
    }

    #[test]
    fn md5_crypt_and_phpass_match_known_vectors() {
        // Vectors published with the algorithms' reference implementations.
        assert_eq!(
            md5_crypt(b"password", "$1$3azHgidD$SrJPt7B.9rekpmwJwtON31", false),
            Ok(true)
        );
        assert_eq!(
            md5_crypt(b"passwort", "$1$3azHgidD$SrJPt7B.9rekpmwJwtON31", false),
            Ok(false)
        );
        assert_eq!(
            phpass(b"test12345", "$P$9IQRaTwmfeRo7ud9Fh4E2PdI0S3r.L0", false),
            Ok(true)
        );
        assert_eq!(
            phpass(b"test1234", "$P$9IQRaTwmfeRo7ud9Fh4E2PdI0S3r.L0", false),
            Ok(false)
        );
    }
}
