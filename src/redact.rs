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
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split(':').next().unwrap_or_default() {
            "" => host.to_owned(),
            user => format!("{user}@{host}"),
        },
        None => authority.to_owned(),
    };
    format!("{scheme}://{host}/{path}")
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
    }
}
