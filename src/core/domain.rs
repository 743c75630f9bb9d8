//! Parsed input: every string from outside becomes one of these types at the
//! boundary, and the constructors enforce the rules. The core never sees a raw
//! login, username or password.

use secrecy::{ExposeSecret, SecretString};
use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

use super::error::{Error, Result};

/// Longest accepted login identifier, in bytes (an email address is at most 254).
pub const MAX_LOGIN_BYTES: usize = 320;
/// Longest accepted password, in bytes; longer ones are refused before hashing.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Shortest password accepted when one is set (NIST SP 800-63B).
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest username, in characters after normalisation.
pub const MAX_USERNAME_CHARS: usize = 64;
/// Longest platform name.
pub const MAX_PLATFORM_CHARS: usize = 50;

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// Whether a character draws nothing or nothing reliable, so that a name
/// holding it can pass for another (`alice` and `alice` with a zero-width
/// space, in a header an upstream app trusts): format characters (zero-width
/// ones, bidirectional overrides, the soft hyphen), private-use and
/// unassigned code points, and the invisible letters and marks Unicode lists
/// as default-ignorable (Hangul fillers, variation selectors, the combining
/// grapheme joiner, Mongolian free variation selectors).
fn is_invisible(c: char) -> bool {
    matches!(
        c.general_category(),
        GeneralCategory::Format | GeneralCategory::PrivateUse | GeneralCategory::Unassigned
    ) || matches!(
        c,
        '\u{034F}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{2800}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FFA0}'
            | '\u{E0100}'..='\u{E01EF}'
    )
}

/// Whether a name holds a character it must not: a control or a space,
/// and for a `new` name (not one an account already has) an invisible one.
fn has_unfit_character(s: &str, new: bool) -> bool {
    s.chars()
        .any(|c| c.is_control() || c.is_whitespace() || (new && is_invisible(c)))
}

/// The comparison key for usernames and email addresses: NFKC with full case
/// folding, so that `ALICE`, `alice` and `ａｌｉｃｅ` are one account.
pub fn fold_key(s: &str) -> String {
    let nfkc: String = s.nfkc().collect();
    caseless::default_case_fold_str(&nfkc).nfkc().collect()
}

/// An account's username, as the user chose it (NFKC-normalised), with its folded key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username {
    display: String,
    key: String,
}

impl Username {
    /// Parses a username: 1 to 64 characters, no control characters, no
    /// whitespace, no invisible characters, no `@` (so a username can never
    /// look like an email).
    pub fn parse(raw: &str) -> Result<Self> {
        Self::parse_with(raw, true)
    }

    /// [`Self::parse`] for a name an account already has (an import moving
    /// accounts in): invisible characters, refused since a later rule, are
    /// let through so that no existing account is lost.
    pub fn parse_existing(raw: &str) -> Result<Self> {
        Self::parse_with(raw, false)
    }

    fn parse_with(raw: &str, new: bool) -> Result<Self> {
        let display: String = raw.nfkc().collect();
        let count = display.chars().count();
        if count == 0 {
            return Err(Error::invalid("username", "must not be empty"));
        }
        if count > MAX_USERNAME_CHARS {
            return Err(Error::invalid(
                "username",
                format!("must be at most {MAX_USERNAME_CHARS} characters"),
            ));
        }
        if has_unfit_character(&display, new) {
            return Err(Error::invalid(
                "username",
                "must not contain spaces, control or invisible characters",
            ));
        }
        if display.contains('@') {
            return Err(Error::invalid("username", "must not contain '@'"));
        }
        let key = fold_key(&display);
        Ok(Self { display, key })
    }

    /// The key an existing account is looked up by: as [`Self::parse`]
    /// folds it, but without the rules for new names, which accounts made
    /// before a rule was added need not meet.
    pub fn lookup_key(raw: &str) -> String {
        fold_key(raw)
    }

    /// The username as shown.
    pub fn as_str(&self) -> &str {
        &self.display
    }

    /// The case- and compatibility-folded key that must be unique.
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// An email address: one `@`, non-empty local part and domain, at most 254 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    display: String,
    key: String,
}

impl Email {
    /// Parses an email address. Sesame does not send mail, so the check is
    /// structural only; uniqueness is on the folded form.
    pub fn parse(raw: &str) -> Result<Self> {
        Self::parse_with(raw, true)
    }

    /// [`Self::parse`] for an address an account already has (see
    /// [`Username::parse_existing`]).
    pub fn parse_existing(raw: &str) -> Result<Self> {
        Self::parse_with(raw, false)
    }

    fn parse_with(raw: &str, new: bool) -> Result<Self> {
        let display: String = raw.trim().nfc().collect();
        let valid_shape = match display.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
            }
            None => false,
        };
        if !valid_shape || display.len() > 254 || has_unfit_character(&display, new) {
            return Err(Error::invalid(
                "email",
                "must be an email address such as name@example.com",
            ));
        }
        let key = fold_key(&display);
        Ok(Self { display, key })
    }

    /// The address as given.
    pub fn as_str(&self) -> &str {
        &self.display
    }

    /// The folded key that must be unique.
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// A mobile number: an optional leading `+` and 5 to 20 digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mobile(String);

impl Mobile {
    /// Parses a mobile number; spaces and dashes between digits are dropped.
    pub fn parse(raw: &str) -> Result<Self> {
        let trimmed = raw.trim();
        let (plus, digits) = match trimmed.strip_prefix('+') {
            Some(rest) => ("+", rest),
            None => ("", trimmed),
        };
        let digits: String = digits.chars().filter(|c| *c != ' ' && *c != '-').collect();
        if !(5..=20).contains(&digits.len()) || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(Error::invalid(
                "mobile",
                "must be 5 to 20 digits, optionally starting with +",
            ));
        }
        Ok(Self(format!("{plus}{digits}")))
    }

    /// The normalised number.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a client typed to identify the account: a username, email or mobile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginId {
    key: String,
}

impl LoginId {
    /// Parses a login: non-empty, at most 320 bytes, no control characters.
    /// The error never echoes the login back.
    pub fn parse(raw: &str) -> Result<Self> {
        if raw.is_empty() {
            return Err(Error::invalid("login", "must not be empty"));
        }
        if raw.len() > MAX_LOGIN_BYTES {
            return Err(Error::invalid(
                "login",
                format!("must be at most {MAX_LOGIN_BYTES} bytes"),
            ));
        }
        if has_control(raw) {
            return Err(Error::invalid(
                "login",
                "must not contain control characters",
            ));
        }
        Ok(Self {
            key: fold_key(raw.trim()),
        })
    }

    /// The folded form, compared against username and email keys.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The form compared against mobile numbers (folding leaves digits and `+` alone).
    pub fn as_mobile(&self) -> Option<String> {
        Mobile::parse(&self.key).ok().map(|m| m.0)
    }
}

/// A password as presented at login: bounded in size, normalised to NFC,
/// and never printed (its `Debug` is redacted). As typed, when that is not
/// NFC, it is kept too: hashes imported from other systems were made from
/// the bytes typed.
#[derive(Debug, Clone)]
pub struct Password(SecretString, Option<SecretString>);

impl Password {
    /// Accepts any presented password up to 1024 bytes. No minimum here: the
    /// policy applies when a password is set, not when one is checked.
    pub fn presented(raw: &str) -> Result<Self> {
        if raw.is_empty() {
            return Err(Error::invalid("password", "must not be empty"));
        }
        if raw.len() > MAX_PASSWORD_BYTES {
            return Err(Error::invalid(
                "password",
                format!("must be at most {MAX_PASSWORD_BYTES} bytes"),
            ));
        }
        let normalised: String = raw.nfc().collect();
        let typed = (normalised != raw).then(|| SecretString::from(raw));
        Ok(Self(SecretString::from(normalised), typed))
    }

    /// Accepts a new password under the policy: at least 8 characters, at most
    /// 1024 bytes, any Unicode including spaces, no composition rules.
    pub fn new_password(raw: &str) -> Result<Self> {
        if raw.len() > MAX_PASSWORD_BYTES {
            return Err(Error::WeakPassword(format!(
                "password must be at most {MAX_PASSWORD_BYTES} bytes"
            )));
        }
        // A new password is kept in NFC only: Sesame's hashes are made of it.
        let password = Self(SecretString::from(raw.nfc().collect::<String>()), None);
        if password.expose().chars().count() < MIN_PASSWORD_CHARS {
            return Err(Error::WeakPassword(format!(
                "password must be at least {MIN_PASSWORD_CHARS} characters"
            )));
        }
        Ok(password)
    }

    /// The normalised password, for hashing only.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// The password as typed, when that is not [`Self::expose`]'s NFC form
    /// (decomposed accents, as some keyboards type them): for checking
    /// against hashes another system made of the bytes typed.
    pub fn expose_as_typed(&self) -> Option<&str> {
        self.1.as_ref().map(|typed| typed.expose_secret())
    }
}

/// A password as the users-actions contract sends it: the lowercase hex MD5
/// of the real password. Treated as a secret like any password.
#[derive(Debug, Clone)]
pub struct Md5Hex(SecretString);

impl Md5Hex {
    /// Accepts exactly 32 hexadecimal digits (either case; kept lowercase).
    pub fn parse(raw: &str) -> Result<Self> {
        if raw.len() != 32 || !raw.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::invalid(
                "password",
                "must be the 32-character hex MD5 of the password",
            ));
        }
        Ok(Self(SecretString::from(raw.to_ascii_lowercase())))
    }

    /// The MD5 hex of a (normalised) password, as a users-actions client would send it.
    pub fn of(password: &Password) -> Self {
        use md5::{Digest, Md5};
        Self(SecretString::from(hex::encode(Md5::digest(
            password.expose().as_bytes(),
        ))))
    }

    /// The digest, for hashing only.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

/// The device platform a session belongs to (`web`, `iOS`, `Android` …).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform(String);

impl Platform {
    /// Parses a platform name: 1 to 50 characters, no control characters.
    /// Compared exactly (`iOS` and `ios` are two platforms).
    pub fn parse(raw: &str) -> Result<Self> {
        let count = raw.chars().count();
        if count == 0 || count > MAX_PLATFORM_CHARS || has_control(raw) {
            return Err(Error::invalid(
                "platform",
                format!("must be 1 to {MAX_PLATFORM_CHARS} characters without control characters"),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The platform of a browser, the default.
    pub fn web() -> Self {
        Self("web".to_owned())
    }

    /// The platform name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The name of a permission or a role: 1 to 64 characters of lower-case
/// ASCII letters, digits and `_ . : -`, starting with a letter. So narrow
/// because names travel in token claims and in comma-separated headers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

/// Longest permission or role name.
const MAX_NAME_CHARS: usize = 64;

impl Name {
    /// Parses a name; `field` names the request field in the error.
    pub fn parse(raw: &str, field: &'static str) -> Result<Self> {
        let valid = (1..=MAX_NAME_CHARS).contains(&raw.len())
            && raw.starts_with(|c: char| c.is_ascii_lowercase())
            && raw.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | ':' | '-')
            });
        if !valid {
            return Err(Error::invalid(
                field,
                format!(
                    "must be 1 to {MAX_NAME_CHARS} characters of a-z, 0-9, '_', '.', ':' and '-', \
                     starting with a letter"
                ),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_narrow_enough_for_headers_and_claims() {
        for good in ["admin", "read", "billing:write", "a", "x-1.y_2"] {
            assert_eq!(Name::parse(good, "permission").unwrap().as_str(), good);
        }
        let long = "a".repeat(65);
        for bad in ["", "Admin", "1st", "-x", "a b", "a,b", "é", long.as_str()] {
            let error = Name::parse(bad, "permission").unwrap_err();
            assert!(
                matches!(
                    error,
                    Error::InvalidInput {
                        field: "permission",
                        ..
                    }
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn usernames_fold_case_and_compatibility_forms() {
        let a = Username::parse("ALICE").unwrap();
        let b = Username::parse("alice").unwrap();
        let c = Username::parse("ａｌｉｃｅ").unwrap();
        assert_eq!(a.key(), b.key());
        assert_eq!(b.key(), c.key());
        assert_eq!(a.as_str(), "ALICE");
        assert_eq!(
            Username::parse("Straße").unwrap().key(),
            Username::parse("STRASSE").unwrap().key()
        );
    }

    #[test]
    fn usernames_refuse_bad_shapes() {
        for bad in ["", "a b", "a\0b", "a@b", &"x".repeat(65)] {
            assert!(Username::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    /// Names that would show as another: each is refused, with the reason.
    #[test]
    fn usernames_and_emails_refuse_invisible_characters() {
        for invisible in [
            '\u{200B}',  // zero-width space
            '\u{200D}',  // zero-width joiner
            '\u{202E}',  // right-to-left override
            '\u{2066}',  // left-to-right isolate
            '\u{00AD}',  // soft hyphen
            '\u{FEFF}',  // byte order mark
            '\u{E000}',  // private use
            '\u{0378}',  // unassigned
            '\u{3164}',  // Hangul filler
            '\u{FE0F}',  // variation selector
            '\u{034F}',  // combining grapheme joiner
            '\u{E0101}', // variation selector supplement
            '\u{2800}',  // Braille blank
        ] {
            let name = format!("ali{invisible}ce");
            match Username::parse(&name) {
                Err(Error::InvalidInput { field, reason }) => {
                    assert_eq!(field, "username");
                    assert!(reason.contains("invisible"), "{reason}");
                }
                other => panic!("{name:?}: {other:?}"),
            }
            assert!(Email::parse(&format!("{name}@example.com")).is_err());
            // An account named so before the rule is still found, and
            // moved by an import.
            assert_ne!(Username::lookup_key(&name), Username::lookup_key("alice"));
            assert!(Username::parse_existing(&name).is_ok());
            assert!(Email::parse_existing(&format!("{name}@example.com")).is_ok());
        }
        for fine in ["Zoë", "李雷", "o'brien", "ǅemal", "ﬁ", "עברית", "नमस्ते"]
        {
            assert!(Username::parse(fine).is_ok(), "{fine:?} refused");
        }
        assert_eq!(
            Username::lookup_key("ALICE"),
            Username::parse("alice").unwrap().key()
        );
    }

    #[test]
    fn login_refuses_control_characters_and_size() {
        assert!(LoginId::parse("al\0ice").is_err());
        assert!(LoginId::parse("al\nice").is_err());
        assert!(LoginId::parse(&"a".repeat(321)).is_err());
        assert_eq!(LoginId::parse("Alice").unwrap().key(), "alice");
    }

    #[test]
    fn password_policy_counts_characters_and_bytes() {
        assert!(Password::new_password("short").is_err());
        assert!(Password::new_password("日本語のパスワード").is_ok());
        assert!(Password::new_password("with spaces ok").is_ok());
        assert!(Password::new_password(&"x".repeat(1025)).is_err());
        assert!(Password::presented(&"x".repeat(1025)).is_err());
        assert!(Password::presented("").is_err());
    }

    #[test]
    fn passwords_are_nfc_normalised_and_redacted() {
        let decomposed = Password::presented("cafe\u{301}").unwrap();
        let composed = Password::presented("caf\u{e9}").unwrap();
        assert_eq!(decomposed.expose(), composed.expose());
        assert!(!format!("{decomposed:?}").contains("caf"));
    }

    #[test]
    fn md5_hex_is_checked_and_matches_the_usual_digest() {
        assert!(Md5Hex::parse("7d683abba984a7804078471700c39fb").is_err());
        assert!(Md5Hex::parse("7d683abba984a7804078471700c39fbz").is_err());
        let upper = Md5Hex::parse("7D683ABBA984A7804078471700C39FB9").unwrap();
        assert_eq!(upper.expose(), "7d683abba984a7804078471700c39fb9");
        let of = Md5Hex::of(&Password::presented("password").unwrap());
        assert_eq!(of.expose(), "5f4dcc3b5aa765d61d8327deb882cf99");
    }

    #[test]
    fn mobile_and_email_shapes() {
        assert_eq!(
            Mobile::parse("+86 138-8888-8888").unwrap().as_str(),
            "+8613888888888"
        );
        assert!(Mobile::parse("12ab5").is_err());
        assert!(Email::parse("a@b.co").is_ok());
        assert!(Email::parse("ab.co").is_err());
        assert_eq!(Email::parse("A@B.co").unwrap().key(), "a@b.co");
    }
}
