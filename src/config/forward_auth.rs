//! `[forward_auth]`: how `/v1/authz` finds the token when a reverse proxy asks.

use serde::{Deserialize, Serialize};

use crate::http::authz::ForwardAuthSettings;

/// Longest cookie name.
const MAX_COOKIE_NAME: usize = 64;

/// `[forward_auth]` as written.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawForwardAuth {
    /// A cookie holding the access token, read when a request has no
    /// `Authorization` header; absent: only the header is read.
    pub cookie: Option<String>,
    /// OAuth clients whose access tokens forward auth takes (an SPA that
    /// calls its API behind the proxy); tokens of every other client are
    /// refused, so that an application a user signed in to cannot reach
    /// the services behind the proxy with the user's permissions.
    #[serde(deserialize_with = "super::one_or_many")]
    pub clients: Vec<String>,
}

impl RawForwardAuth {
    /// Checks the section, recording each problem, and builds its settings.
    pub(super) fn validate(&self, problems: &mut Vec<String>) -> ForwardAuthSettings {
        if let Some(name) = &self.cookie {
            // A cookie name is an RFC 9110 token.
            let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
            if name.is_empty() || name.len() > MAX_COOKIE_NAME || !name.chars().all(token) {
                problems.push(format!(
                    "forward_auth.cookie = {name:?}: must be a cookie name, 1 to {MAX_COOKIE_NAME} \
                     letters, digits or !#$%&'*+-.^_`|~"
                ));
            }
        }
        for client in &self.clients {
            if !crate::core::clients::valid_client_id(client) {
                problems.push(
                    "forward_auth.clients: each must be a client id (letters, digits, - _ .)"
                        .into(),
                );
            }
        }
        ForwardAuthSettings {
            cookie: self.cookie.clone(),
            clients: self.clients.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::RawConfig;

    #[test]
    fn the_cookie_is_off_by_default_and_must_be_a_cookie_name() {
        let config = RawConfig::default().validate().unwrap();
        assert_eq!(config.http.forward_auth.cookie, None);
        let mut raw = RawConfig::default();
        raw.forward_auth.cookie = Some("sesame_token".into());
        let config = raw.validate().unwrap();
        assert_eq!(
            config.http.forward_auth.cookie.as_deref(),
            Some("sesame_token")
        );
        assert!(
            config.http.forward_auth.clients.is_empty(),
            "no client's tokens"
        );
        for bad in ["a b", "a:b", ""] {
            let mut raw = RawConfig::default();
            raw.forward_auth.clients = vec!["web".into(), bad.into()];
            let message = raw.validate().unwrap_err().to_string();
            assert!(
                message.contains("forward_auth.clients"),
                "{bad:?}: {message}"
            );
        }
        for bad in ["", "a b", "a;b", "a=b", "é"] {
            let mut raw = RawConfig::default();
            raw.forward_auth.cookie = Some(bad.into());
            let message = raw.validate().unwrap_err().to_string();
            assert!(
                message.contains("forward_auth.cookie"),
                "{bad:?}: {message}"
            );
        }
    }
}
