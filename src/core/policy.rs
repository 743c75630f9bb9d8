//! The password policy for new passwords (NIST SP 800-63B): at least 8
//! characters and at most 1024 bytes (see [`Password::new_password`]), any
//! Unicode, no composition rules, and not a commonly used or easily guessed
//! value. The list is the 30,000-entry password frequency list that ships in
//! the `zxcvbn` crate, matched also through case, l33t substitution and
//! reversal; the account's own username and email count as guessable too.

use super::domain::Password;
use super::error::{Error, Result};

/// Passwords longer than this are not run through the matcher (its cost
/// grows with length, and such passphrases are not list entries).
const MAX_CHECKED_CHARS: usize = 64;

/// Refuses a new password that is common or guessable in under a million
/// tries by zxcvbn's estimate (its lists, keyboard walks, repeats,
/// sequences, dates, and the account's own names).
pub fn check_not_common(password: &Password, context: &[&str]) -> Result<()> {
    let text = password.expose();
    if text.chars().count() > MAX_CHECKED_CHARS {
        return Ok(());
    }
    let entropy = zxcvbn::zxcvbn(text, context);
    // Score 0 or 1: under a million guesses, which covers every list entry
    // and its obvious variants (`password123`, `p@ssw0rd`, `alice1990`).
    if entropy.score() < zxcvbn::Score::Two {
        return Err(Error::WeakPassword(
            "this password is too common or too easy to guess; choose a longer or less predictable one".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(p: &str, context: &[&str]) -> bool {
        check_not_common(&Password::new_password(p).unwrap(), context).is_ok()
    }

    #[test]
    fn common_passwords_and_their_variants_are_refused() {
        for weak in [
            "password",
            "Password1",
            "password123",
            "12345678",
            "qwertyuiop",
            "p@ssw0rd",
            "drowssap",
            "aaaaaaaa",
            "iloveyou",
        ] {
            assert!(!check(weak, &[]), "{weak} accepted");
        }
        assert!(!check("alice1990", &["alice1990"]), "the username itself");
    }

    #[test]
    fn ordinary_good_passwords_and_any_unicode_pass() {
        for good in [
            "correct horse battery",
            "a whole new secret",
            "黄河远上白云间一片孤城",
            "tX9#mQ2!vL",
        ] {
            assert!(check(good, &[]), "{good} refused");
        }
    }
}
