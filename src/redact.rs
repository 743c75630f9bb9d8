//! Values fit for messages and logs: URLs without their passwords, secrets
//! shown only as present or absent.

/// What a `Debug` shows of a secret: whether there is one, never its value.
pub fn secret(value: Option<&str>) -> &'static str {
    match value {
        Some(_) => "[redacted]",
        None => "None",
    }
}

/// A database or Redis URL fit for a message: a SQLite path as is; a server
/// URL without its password and query string (which may carry one too).
pub fn url(url: &str) -> String {
    if url.starts_with("sqlite:") {
        return url.to_owned();
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(not a URL)".to_owned();
    };
    // The user information ends at the last `@`: a password written
    // without percent-encoding may hold `/`, `?`, `#` or `@` itself. Only
    // the user name before its first `:` is kept, and only if it cannot be
    // part of a path or query (an `@` there is no user information).
    let (user, after) = match rest.rsplit_once('@') {
        Some((userinfo, after)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            let plain = !user.is_empty() && !user.contains(['/', '?', '#']);
            (plain.then_some(user), after)
        }
        None => (None, rest),
    };
    let after = after.split(['?', '#']).next().unwrap_or_default();
    let (host, path) = after.split_once('/').unwrap_or((after, ""));
    match user {
        Some(user) => format!("{scheme}://{user}@{host}/{path}"),
        None => format!("{scheme}://{host}/{path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::url;

    #[test]
    fn urls_lose_their_passwords_and_queries() {
        assert_eq!(
            url("sqlite:///var/lib/sesame/sesame.db"),
            "sqlite:///var/lib/sesame/sesame.db"
        );
        assert_eq!(
            url("postgres://sesame:hunter2@db:5432/sesame?sslmode=require&password=x"),
            "postgres://sesame@db:5432/sesame"
        );
        assert_eq!(url("postgres://db/sesame"), "postgres://db/sesame");
        assert_eq!(url("redis://:hunter2@cache:6379/0"), "redis://cache:6379/0");
        assert_eq!(
            url("rediss://default:hunter2@cache"),
            "rediss://default@cache/"
        );
        assert_eq!(url("nonsense"), "(not a URL)");
        // Passwords not percent-encoded, with the characters that end an
        // authority, a path or a query.
        for (raw, shown) in [
            (
                "postgres://sesame:Ab/cd+ef@db:5432/sesame",
                "postgres://sesame@db:5432/sesame",
            ),
            ("postgres://u:ab#cd@db/x", "postgres://u@db/x"),
            ("postgres://u:a?b@db/x", "postgres://u@db/x"),
            ("postgres://u:p@ss@db/x", "postgres://u@db/x"),
            ("redis://:a/b#c@cache:6379/0", "redis://cache:6379/0"),
            // An `@` in the query is no user information, and the query
            // before it is never shown.
            ("postgres://db/x?password=hunter2&u=a@b", "postgres://b/"),
        ] {
            assert_eq!(url(raw), shown, "{raw}");
            assert!(!url(raw).contains("hunter2") && !url(raw).contains("cd"));
        }
    }
}
