//! `cors_origins` and `[cors]`: which web pages may call Sesame from a browser.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::check_range;
use crate::http::cors::{AllowedOrigins, CorsSettings};

/// A list of origins as written: a TOML array, or one string with the
/// origins separated by commas or spaces (`SESAME_CORS_ORIGINS=a,b`).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct OriginList(pub Vec<String>);

impl<'de> Deserialize<'de> for OriginList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        super::one_or_many(deserializer).map(Self)
    }
}

/// `[cors]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawCors {
    /// Let allowed pages send cookies and read the answers
    /// (`Access-Control-Allow-Credentials`); bearer tokens do not need it.
    pub allow_credentials: bool,
    /// How long a browser may keep a preflight's answer, seconds.
    pub max_age: u64,
    /// The native API's origins (`/v1/…`), replacing `cors_origins`.
    pub native: Option<OriginList>,
    /// The admin API's (`/v1/admin/…`).
    pub admin: Option<OriginList>,
    /// OAuth and OpenID Connect's (`/oauth/…`, `/.well-known/…`).
    pub oauth: Option<OriginList>,
    /// The five contracts' routes.
    pub contracts: Option<OriginList>,
}

impl Default for RawCors {
    fn default() -> Self {
        Self {
            allow_credentials: false,
            max_age: 600,
            native: None,
            admin: None,
            oauth: None,
            contracts: None,
        }
    }
}

impl RawCors {
    /// Checks `cors_origins` and the section, recording each problem, and
    /// builds each face's rules (none where no origin is allowed).
    pub(super) fn validate(
        &self,
        origins: &OriginList,
        problems: &mut Vec<String>,
    ) -> CorsSettings {
        let max_age = Duration::from_secs(check_range(
            problems,
            "cors.max_age",
            self.max_age,
            0,
            86_400,
        ));
        let face = |key: &str, list: &Option<OriginList>, problems: &mut Vec<String>| {
            let (key, list) = match list {
                Some(list) => (key, list),
                None => ("cors_origins", origins),
            };
            parse_origins(key, &list.0, self.allow_credentials, problems)
        };
        CorsSettings {
            native: face("cors.native", &self.native, problems),
            admin: face("cors.admin", &self.admin, problems),
            oauth: face("cors.oauth", &self.oauth, problems),
            contracts: face("cors.contracts", &self.contracts, problems),
            credentials: self.allow_credentials,
            max_age,
        }
    }
}

/// The origins of one list, each as a browser sends it in `Origin`
/// (`https://app.example.com`, `http://localhost:3000`); `*` for any page,
/// only without credentials. `None` when the list is empty.
fn parse_origins(
    key: &str,
    origins: &[String],
    credentials: bool,
    problems: &mut Vec<String>,
) -> Option<AllowedOrigins> {
    if origins.iter().any(|origin| origin == "*") {
        if origins.len() > 1 {
            problems.push(format!(
                "{key}: \"*\" allows every origin; list it alone or not at all"
            ));
        }
        if credentials {
            problems.push(format!(
                "{key} = \"*\" with cors.allow_credentials = true: any web page could act \
                 with a visitor's cookies; list the origins instead"
            ));
        }
        return Some(AllowedOrigins::Any);
    }
    let mut parsed = Vec::new();
    for origin in origins {
        match serialized_origin(origin) {
            Some(value) => parsed.push(value),
            None => problems.push(format!(
                "{key}: {origin:?} is not an origin; write a scheme, a host and an optional \
                 port, such as https://app.example.com or http://localhost:3000"
            )),
        }
    }
    parsed.dedup();
    (!parsed.is_empty()).then_some(AllowedOrigins::List(parsed))
}

/// `scheme://host[:port]` as browsers serialize it, or `None` for anything
/// else (a path, a query, credentials, `null`, a scheme other than HTTP(S)).
fn serialized_origin(text: &str) -> Option<String> {
    let url = url::Url::parse(text).ok()?;
    let plain = matches!(url.scheme(), "http" | "https")
        && url.host().is_some()
        && url.username().is_empty()
        && url.password().is_none()
        && url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none()
        && !text.ends_with('?')
        && !text.ends_with('#');
    plain.then(|| url.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    use figment::Figment;
    use figment::providers::{Format, Serialized, Toml};

    use super::*;
    use crate::config::RawConfig;

    fn validate(origins: &[&str], credentials: bool) -> Result<CorsSettings, String> {
        let mut raw = RawConfig {
            cors_origins: OriginList(origins.iter().map(|o| o.to_string()).collect()),
            ..RawConfig::default()
        };
        raw.cors.allow_credentials = credentials;
        raw.validate()
            .map(|config| config.http.cors)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn no_origin_is_allowed_by_default() {
        let cors = validate(&[], false).unwrap();
        assert!(cors.native.is_none() && cors.admin.is_none());
        assert!(cors.oauth.is_none() && cors.contracts.is_none());
    }

    #[test]
    fn origins_are_kept_as_browsers_send_them() {
        let cors = validate(
            &[
                "https://App.Example.com/",
                "http://localhost:3000",
                "https://[::1]:8443",
            ],
            false,
        )
        .unwrap();
        let Some(AllowedOrigins::List(list)) = cors.admin else {
            panic!("a list")
        };
        assert_eq!(
            list,
            [
                "https://app.example.com",
                "http://localhost:3000",
                "https://[::1]:8443"
            ]
        );
    }

    #[test]
    fn what_is_not_an_origin_is_refused() {
        for bad in [
            "app.example.com",
            "https://app.example.com/path",
            "https://app.example.com?x",
            "https://user@app.example.com",
            "null",
            "file:///tmp/page.html",
            "ftp://example.com",
        ] {
            let error = validate(&[bad], false).unwrap_err();
            assert!(error.contains("is not an origin"), "{bad}: {error}");
        }
    }

    #[test]
    fn any_origin_is_alone_and_without_credentials() {
        assert!(matches!(
            validate(&["*"], false).unwrap().native.unwrap(),
            AllowedOrigins::Any
        ));
        assert!(
            validate(&["*"], true)
                .unwrap_err()
                .contains("allow_credentials")
        );
        assert!(
            validate(&["*", "https://a.example"], false)
                .unwrap_err()
                .contains("alone")
        );
    }

    /// README: Calling Sesame from a browser.
    #[test]
    fn the_readme_example_allows_what_it_says() {
        let readme = include_str!("../../README.md");
        let section = &readme[readme.find("## Calling Sesame from a browser").unwrap()..];
        let start = section.find("```toml\n").unwrap() + "```toml\n".len();
        let end = start + section[start..].find("```").unwrap();
        let raw: RawConfig = Figment::from(Serialized::defaults(RawConfig::default()))
            .merge(Toml::string(&section[start..end]))
            .extract()
            .unwrap();
        let cors = raw.validate().unwrap().http.cors;
        let app = "https://app.example.com".to_owned();
        let both = AllowedOrigins::List(vec![app.clone(), "http://localhost:3000".into()]);
        assert_eq!(cors.native, Some(both.clone()));
        assert_eq!(cors.contracts, Some(both));
        assert_eq!(cors.admin, None);
        assert_eq!(cors.oauth, Some(AllowedOrigins::List(vec![app])));
    }

    #[test]
    fn a_face_can_have_its_own_origins_or_none() {
        let raw: RawConfig = Figment::from(Serialized::defaults(RawConfig::default()))
            .merge(Toml::string(
                "cors_origins = \"https://a.example, https://b.example\"\n\
                 [cors]\nadmin = []\noauth = [\"https://c.example\"]\n",
            ))
            .extract()
            .unwrap();
        let cors = raw.validate().unwrap().http.cors;
        assert!(cors.admin.is_none(), "an empty list closes the face");
        let list = |face: Option<AllowedOrigins>| match face.unwrap() {
            AllowedOrigins::List(list) => list,
            AllowedOrigins::Any => panic!("a list"),
        };
        assert_eq!(
            list(cors.native),
            ["https://a.example", "https://b.example"]
        );
        assert_eq!(list(cors.oauth), ["https://c.example"]);
    }
}
