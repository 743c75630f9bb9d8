//! The OpenID Connect provider's top-level keys: `public_url` (the issuer)
//! and the key-encryption key that seals private signing keys at rest
//! (`key_encryption_key`, i.e. `SESAME_KEY_ENCRYPTION_KEY`, or
//! `key_encryption_key_file`).

use std::path::Path;

use crate::core::keys::KeyEncryptionKey;

/// Checks `public_url`: an absolute `http` or `https` URL without query or
/// fragment; returned as parsed (scheme and host in lower case, no default
/// port), without a trailing slash.
pub(super) fn public_url(raw: Option<&str>, problems: &mut Vec<String>) -> Option<String> {
    let raw = raw?.trim();
    // Not repeated: a query or user info may carry a secret.
    let refuse = |problems: &mut Vec<String>, why: &str| {
        problems.push(format!("public_url: {why}"));
        None
    };
    let Ok(url) = url::Url::parse(raw) else {
        return refuse(
            problems,
            "must be an absolute URL such as https://login.example.com",
        );
    };
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return refuse(problems, "must be an http or https URL with a host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return refuse(problems, "must not carry user info");
    }
    if url.query().is_some() || url.fragment().is_some() {
        return refuse(problems, "must not have a query or a fragment");
    }
    // As parsed (scheme and host in lower case): the issuer clients compare
    // byte for byte, and whether cookies are `Secure`, follow from it.
    Some(url.as_str().trim_end_matches('/').to_owned())
}

/// A warning when `public_url` is used in another form than written (an
/// upper-case scheme or host, a default port): the issuer is the form used,
/// and ID tokens issued under the form written before no longer match it.
pub(super) fn rewritten(written: Option<&str>, used: Option<&str>) -> Option<String> {
    let (written, used) = (written?.trim().trim_end_matches('/'), used?);
    (written != used).then(|| {
        format!(
            "public_url is used as {used}, as parsed (scheme and host in lower case, no \
             default port, the path normalised): that is the issuer, which clients may \
             compare byte for byte"
        )
    })
}

/// Reads the key-encryption key from the value or the file (not both).
pub(super) fn key_encryption_key(
    value: Option<&str>,
    file: Option<&Path>,
    problems: &mut Vec<String>,
) -> Option<KeyEncryptionKey> {
    let (text, key) = match (value, file) {
        (Some(_), Some(_)) => {
            problems
                .push("key_encryption_key and key_encryption_key_file: set one, not both".into());
            return None;
        }
        (Some(value), None) => (value.to_owned(), "key_encryption_key"),
        (None, Some(file)) => match std::fs::read_to_string(file) {
            Ok(text) => (text, "key_encryption_key_file"),
            Err(error) => {
                problems.push(format!(
                    "key_encryption_key_file = {}: cannot read it ({error})",
                    file.display()
                ));
                return None;
            }
        },
        (None, None) => return None,
    };
    match KeyEncryptionKey::parse(&text) {
        Ok(kek) => Some(kek),
        Err(why) => {
            // Never echo the value: it is a secret.
            problems.push(format!("{key}: {why}"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_urls_are_checked_and_trimmed() {
        let mut problems = Vec::new();
        assert_eq!(
            public_url(Some("https://login.example.com/"), &mut problems).as_deref(),
            Some("https://login.example.com")
        );
        assert_eq!(
            public_url(Some("http://127.0.0.1:8420/auth"), &mut problems).as_deref(),
            Some("http://127.0.0.1:8420/auth")
        );
        // As parsed: the issuer is canonical, and `Secure` cookies follow
        // from an upper-case `HTTPS://` too.
        assert_eq!(
            public_url(Some("HTTPS://Login.Example.com:443/"), &mut problems).as_deref(),
            Some("https://login.example.com")
        );
        let warning = rewritten(
            Some("HTTPS://Login.Example.com:443/"),
            Some("https://login.example.com"),
        );
        assert!(warning.is_some_and(|w| w.contains("https://login.example.com")));
        let same = rewritten(
            Some("https://login.example.com/"),
            Some("https://login.example.com"),
        );
        assert_eq!(same, None);
        assert!(problems.is_empty());
        for bad in [
            "login.example.com",
            "ftp://x",
            "https://x/?a=1",
            "https://x/#f",
            "https://user@x",
            "https://:hunter2@x",
        ] {
            assert!(public_url(Some(bad), &mut problems).is_none(), "{bad}");
        }
        assert_eq!(problems.len(), 6);
        assert!(problems.iter().all(|p| !p.contains("hunter2")));
    }

    #[test]
    fn a_bad_key_encryption_key_is_refused_without_echoing_it() {
        let mut problems = Vec::new();
        assert!(key_encryption_key(Some("hunter2-not-a-key"), None, &mut problems).is_none());
        assert!(!problems[0].contains("hunter2"));
        assert!(key_encryption_key(Some(&"0f".repeat(32)), None, &mut problems).is_some());
    }
}
