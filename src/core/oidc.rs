//! The OAuth 2.0 authorization server and OpenID Connect provider, over the
//! same accounts, password checks, sessions and audit log as every face.
//!
//! - A sign-in on the hosted page is a core login (face `oidc`) that opens a
//!   *browser session*: a Sesame session whose handle is a random cookie,
//!   stored only as a hash. It is the OpenID Connect session (`sid`).
//! - An authorization code (single use, 60 s, bound to client, redirect URI
//!   and PKCE challenge) is exchanged for a *client session*: a Sesame
//!   session of its own with refresh rotation and reuse detection, linked
//!   to the browser session (logging out there ends it too).
//! - Refresh tokens of a client are stored under the client's namespace
//!   ([`hash_token_in`]): another client or the native API cannot use them.
//! - Access tokens are the same JWTs as everywhere (RFC 9068), with
//!   `client_id` and `scope`; ID tokens are signed by the same keys.

use aws_lc_rs::constant_time::verify_slices_are_equal;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256, Sha512};

use super::audit::AuditEventExt;
use super::clock::UnixTime;
use super::domain::{LoginId, Password, Platform};
use super::error::Error;
use super::login::{Credential, LoginAttempt, LoginOptions};
use super::sessions::PlatformPolicy;
use super::tokens::{
    AccessTokens, hash_presented_in, hash_token, hash_token_in, is_opaque_token, new_refresh_token,
    random_urlsafe,
};
use super::{ClientInfo, Core, audit};
use crate::store::{
    Account, AuthorizationCode, NewRefreshToken, NewSession, OAuthClient, OAuthSession, Redemption,
    SessionId, TokenStyle,
};

/// Lifetime of an authorization code, seconds (RFC 6749 §4.1.2: short).
pub const CODE_TTL: i64 = 60;
/// Longest `state` or `nonce` accepted.
pub(crate) const MAX_PARAM_CHARS: usize = 512;
/// Codes one browser session may get by single sign-on on one node: 30 at
/// once, then one every 2 s (a person signing in to several applications
/// needs a few a minute).
pub const CODES_BY_SINGLE_SIGN_ON: crate::limits::Rule = crate::limits::Rule {
    burst: 30,
    interval: 2,
};

/// Face name in the audit log.
pub const FACE: &str = "oidc";

/// The platform of sessions opened for OAuth clients.
const OAUTH_PLATFORM: &str = "oauth";

/// What the browser-session cookie is hashed under (never a bearer token).
const BROWSER_NAMESPACE: &str = "sesame-browser:";

fn refresh_namespace(client_id: &str) -> String {
    format!("oauth:{client_id}:")
}

/// An error in the shape of RFC 6749 §5.2 (and RFC 7009 / 7662).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    /// HTTP status.
    pub status: u16,
    /// The `error` code.
    pub error: &'static str,
    /// `error_description`: for the developer, never a secret.
    pub description: String,
    /// Seconds to wait, when throttled or busy.
    pub retry_after: Option<u64>,
}

impl OAuthError {
    /// A 400 with `error`.
    pub fn new(error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status: 400,
            error,
            description: description.into(),
            retry_after: None,
        }
    }

    /// `invalid_client` (401; the face adds `WWW-Authenticate`).
    pub fn invalid_client() -> Self {
        Self {
            status: 401,
            ..Self::new("invalid_client", "client authentication failed")
        }
    }
}

impl From<Error> for OAuthError {
    fn from(error: Error) -> Self {
        match error {
            Error::InvalidCredentials => {
                OAuthError::new("invalid_grant", "invalid username or password")
            }
            Error::InvalidRefreshToken | Error::Unauthenticated => {
                OAuthError::new("invalid_grant", "invalid or expired grant")
            }
            Error::RefreshTokenReused => OAuthError::new(
                "invalid_grant",
                "refresh token reuse detected; the session has been ended",
            ),
            Error::InvalidInput { field, reason } => {
                OAuthError::new("invalid_request", format!("{field}: {reason}"))
            }
            Error::Throttled { retry_after_secs } => OAuthError {
                status: 429,
                retry_after: Some(retry_after_secs),
                ..OAuthError::new("temporarily_unavailable", "too many attempts, retry later")
            },
            Error::Busy { retry_after_secs } => OAuthError {
                status: 503,
                retry_after: Some(retry_after_secs),
                ..OAuthError::new("temporarily_unavailable", "server busy, retry later")
            },
            other => {
                tracing::error!(error = %other, "oauth request failed");
                OAuthError {
                    status: 503,
                    retry_after: Some(1),
                    ..OAuthError::new("temporarily_unavailable", "retry later")
                }
            }
        }
    }
}

type OAuthResult<T> = std::result::Result<T, OAuthError>;

/// The parameters of an authorization request, as sent.
#[derive(Debug, Clone, Default)]
pub struct AuthorizeParams {
    /// `client_id`.
    pub client_id: Option<String>,
    /// `redirect_uri`.
    pub redirect_uri: Option<String>,
    /// `response_type`.
    pub response_type: Option<String>,
    /// `response_mode`.
    pub response_mode: Option<String>,
    /// `scope`.
    pub scope: Option<String>,
    /// `state`.
    pub state: Option<String>,
    /// `nonce`.
    pub nonce: Option<String>,
    /// `code_challenge`.
    pub code_challenge: Option<String>,
    /// `code_challenge_method`.
    pub code_challenge_method: Option<String>,
    /// `prompt`.
    pub prompt: Option<String>,
    /// `login_hint`.
    pub login_hint: Option<String>,
    /// `max_age`.
    pub max_age: Option<String>,
    /// `id_token_hint`: whom the client expects to be signed in.
    pub id_token_hint: Option<String>,
    /// `request` (refused: request objects are not supported).
    pub request: Option<String>,
    /// `request_uri` (refused).
    pub request_uri: Option<String>,
}

/// A checked authorization request.
#[derive(Debug, Clone)]
pub struct Authorization {
    /// The client.
    pub client: OAuthClient,
    /// The registered redirect URI it named.
    pub redirect_uri: String,
    /// Scopes to grant, space-separated.
    pub scope: String,
    /// `state`, returned as given.
    pub state: Option<String>,
    /// `nonce`, put in the ID token.
    pub nonce: Option<String>,
    /// PKCE S256 challenge.
    pub code_challenge: String,
    /// `prompt=login`: sign in again even with a browser session.
    pub force_login: bool,
    /// `prompt=none`: never show the page.
    pub no_prompt: bool,
    /// A browser session's user confirms before a code goes to the client
    /// ([`Continuation::Confirm`]): `prompt=consent`, or a client another
    /// program can pass itself off as (see [`impersonable`]).
    pub confirm: bool,
    /// `login_hint`, to pre-fill the page.
    pub login_hint: Option<String>,
    /// `max_age`: a browser session older than this must sign in again.
    pub max_age: Option<i64>,
    /// The account an `id_token_hint` names: a browser session of another
    /// account is not used (OIDC Core §3.1.2.1).
    pub hinted_account: Option<crate::store::AccountId>,
    /// That `id_token_hint` as sent, carried by the sign-in form.
    pub id_token_hint: Option<String>,
}

/// Why an authorization request is refused on a page rather than at the
/// client's redirect URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageError {
    /// No `client_id`.
    MissingClient,
    /// No such client.
    UnknownClient,
    /// No `redirect_uri`, and the client has several.
    MissingRedirect,
    /// A `redirect_uri` the client did not register.
    UnregisteredRedirect,
    /// A `state` too long to send back.
    StateTooLong,
}

/// Why an authorization request is refused.
#[derive(Debug, Clone)]
pub enum AuthorizeError {
    /// No trustworthy redirect URI (unknown client, unregistered URI): an
    /// error page, never a redirect.
    Page(PageError),
    /// Told to the client at its redirect URI.
    Redirect {
        /// Where.
        redirect_uri: String,
        /// `state`.
        state: Option<String>,
        /// The error code.
        error: &'static str,
        /// Its description.
        description: String,
    },
    /// The server cannot answer now.
    Unavailable,
}

/// Where an authorization request goes next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Continuation {
    /// To the client, with a code.
    Redirect(String),
    /// To the sign-in page.
    SignIn,
    /// To a page where the signed-in user confirms that the code may go to
    /// the client (or signs in as someone else, or declines).
    Confirm {
        /// The account signed in, to be named on the page and sent back
        /// with the confirmation.
        account_id: crate::store::AccountId,
        /// Its username.
        username: String,
    },
}

impl Authorization {
    /// The client's answer when the user declines on the confirmation page.
    pub fn declined(&self) -> AuthorizeError {
        AuthorizeError::Redirect {
            redirect_uri: self.redirect_uri.clone(),
            state: self.state.clone(),
            error: "access_denied",
            description: "the user declined".into(),
        }
    }
}

/// Whether another program could start an authorization request in this
/// client's name and receive its code: a public client (no secret to
/// redeem the code with) whose redirect URI is a loopback address or a
/// private-use scheme, which any program on the user's machine can listen
/// on or claim. Only an `https` redirect URI of a public client is bound to
/// whoever holds its host. RFC 8252 §8.6: such requests are not answered
/// without the user, even after an earlier approval.
pub fn impersonable(client: &OAuthClient, redirect_uri: &str) -> bool {
    client.secret_hash.is_none()
        && url::Url::parse(redirect_uri).map_or(true, |url| url.scheme() != "https")
}

/// What a logout takes from its `id_token_hint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdTokenHint {
    /// The client the ID token was issued to.
    pub audience: String,
    /// Whose it is.
    pub account_id: i64,
}

/// A browser's signed-in session (the single sign-on session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserSession {
    /// The Sesame session, also the OpenID Connect `sid`.
    pub session_id: SessionId,
    /// Who is signed in.
    pub account_id: i64,
    /// When they signed in.
    pub auth_time: UnixTime,
}

/// A token request (RFC 6749 §4.1.3, §4.3.2, §4.4.2, §6), as sent.
#[derive(Clone, Default)]
pub struct TokenRequest {
    /// `grant_type`.
    pub grant_type: Option<String>,
    /// `code`.
    pub code: Option<String>,
    /// `redirect_uri`.
    pub redirect_uri: Option<String>,
    /// `code_verifier`.
    pub code_verifier: Option<String>,
    /// `refresh_token`.
    pub refresh_token: Option<String>,
    /// `username`.
    pub username: Option<String>,
    /// `password`.
    pub password: Option<String>,
    /// `scope`.
    pub scope: Option<String>,
}

impl std::fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::redact::secret;
        f.debug_struct("TokenRequest")
            .field("grant_type", &self.grant_type)
            .field("code", &secret(self.code.as_deref()))
            .field("redirect_uri", &self.redirect_uri)
            .field("code_verifier", &secret(self.code_verifier.as_deref()))
            .field("refresh_token", &secret(self.refresh_token.as_deref()))
            .field("username", &self.username)
            .field("password", &secret(self.password.as_deref()))
            .field("scope", &self.scope)
            .finish()
    }
}

/// A successful token response.
#[derive(Clone)]
pub struct TokenAnswer {
    /// The access token (a JWT).
    pub access_token: String,
    /// Its lifetime, seconds.
    pub expires_in: i64,
    /// A refresh token, when the client may refresh.
    pub refresh_token: Option<String>,
    /// An ID token, when `openid` was granted for a user.
    pub id_token: Option<String>,
    /// The granted scopes.
    pub scope: String,
}

impl std::fmt::Debug for TokenAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::redact::secret;
        f.debug_struct("TokenAnswer")
            .field("access_token", &secret(Some(&self.access_token)))
            .field("expires_in", &self.expires_in)
            .field("refresh_token", &secret(self.refresh_token.as_deref()))
            .field("id_token", &secret(self.id_token.as_deref()))
            .field("scope", &self.scope)
            .finish()
    }
}

/// The parts of `token`'s standing an introspection reports (RFC 7662).
pub type Introspection = Map<String, Value>;

fn required<'a>(value: &'a Option<String>, name: &str) -> OAuthResult<&'a str> {
    match value.as_deref() {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(OAuthError::new(
            "invalid_request",
            format!("{name} is required"),
        )),
    }
}

/// Splits a scope parameter; refuses what the client may not ask for.
fn scopes_within(requested: Option<&str>, allowed: &[String]) -> Result<Vec<String>, String> {
    let Some(requested) = requested.filter(|s| !s.trim().is_empty()) else {
        return Ok(allowed.to_vec());
    };
    let mut granted: Vec<String> = Vec::new();
    for scope in requested.split(' ').filter(|s| !s.is_empty()) {
        if !allowed.iter().any(|a| a == scope) {
            // The value is not repeated: error descriptions never echo input.
            return Err("a requested scope is not allowed for this client".to_owned());
        }
        if !granted.iter().any(|g| g == scope) {
            granted.push(scope.to_owned());
        }
    }
    Ok(granted)
}

fn has_scope(scope: &str, wanted: &str) -> bool {
    scope.split(' ').any(|s| s == wanted)
}

/// Whether a code is presented as it was issued: to its client, with its
/// redirect URI and a verifier of its PKCE challenge.
fn presented_as_issued(
    code: &AuthorizationCode,
    client: &OAuthClient,
    redirect_uri: &str,
    verifier: &str,
) -> OAuthResult<()> {
    if code.client_id != client.id || code.redirect_uri != redirect_uri {
        return Err(OAuthError::new(
            "invalid_grant",
            "the code was issued to another client or redirect_uri",
        ));
    }
    if !pkce_matches(verifier, &code.code_challenge) {
        return Err(OAuthError::new(
            "invalid_grant",
            "code_verifier does not match the code_challenge",
        ));
    }
    Ok(())
}

/// base64url(SHA-256(verifier)) == challenge, in constant time
/// (RFC 7636 §4.6); a verifier of the wrong shape never matches.
fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let shape_ok = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    shape_ok && verify_slices_are_equal(computed.as_bytes(), challenge.as_bytes()).is_ok()
}

/// `at_hash`: the left half of the access token's hash under the ID
/// token's algorithm (SHA-512 for Ed25519), base64url.
fn at_hash(access_token: &str, algorithm: jsonwebtoken::Algorithm) -> String {
    let digest: Vec<u8> = match algorithm {
        jsonwebtoken::Algorithm::EdDSA => Sha512::digest(access_token.as_bytes()).to_vec(),
        _ => Sha256::digest(access_token.as_bytes()).to_vec(),
    };
    URL_SAFE_NO_PAD.encode(&digest[..digest.len() / 2])
}

/// The standard claims of `account` that `scope` grants (OIDC Core §5.4).
pub fn user_claims(account: &Account, scope: Option<&str>) -> Map<String, Value> {
    let allowed = |s: &str| scope.is_none_or(|scope| has_scope(scope, s));
    let mut claims = Map::new();
    claims.insert("sub".into(), json!(account.id.to_string()));
    if allowed("profile") {
        claims.insert("preferred_username".into(), json!(account.username));
        if !account.display_name.is_empty() {
            claims.insert("name".into(), json!(account.display_name));
        }
        if !account.avatar_url.is_empty() {
            claims.insert("picture".into(), json!(account.avatar_url));
        }
        claims.insert("updated_at".into(), json!(account.updated_at));
    }
    if allowed("email")
        && let Some(email) = &account.email
    {
        claims.insert("email".into(), json!(email));
        claims.insert("email_verified".into(), json!(account.email_verified));
    }
    if allowed("phone")
        && let Some(mobile) = &account.mobile
    {
        claims.insert("phone_number".into(), json!(mobile));
        claims.insert(
            "phone_number_verified".into(),
            json!(account.mobile_verified),
        );
    }
    claims
}

impl Core {
    /// The OpenID Connect issuer URL.
    pub fn issuer(&self) -> &str {
        self.tokens.public_issuer()
    }

    /// Sets the issuer URL once the server knows where it listens.
    pub fn set_issuer(&self, issuer: String) {
        self.tokens.set_public_issuer(issuer);
    }

    /// An ID token Sesame signed, expired or not, read as a logout's
    /// `id_token_hint`. A key this node has not loaded yet (another node
    /// made it) is loaded first. `Ok(None)` if it names a key no longer
    /// kept (retired since the token was issued): the hint is then as if
    /// absent, and the user is asked; `Err` if it is not such a token.
    pub async fn id_token_hint(&self, hint: &str) -> std::result::Result<Option<IdTokenHint>, ()> {
        let mut decoded = self.tokens.decode_id_token(hint);
        if decoded.is_err() && !self.tokens.knows_key_of(hint) {
            if self.reload_keys_for_unknown_kid().await {
                decoded = self.tokens.decode_id_token(hint);
            }
            if decoded.is_err() && !self.tokens.knows_key_of(hint) {
                return Ok(None);
            }
        }
        let claims = decoded.map_err(|_| ())?;
        let audience = claims["aud"].as_str().ok_or(())?.to_owned();
        let account_id = claims["sub"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or(())?;
        Ok(Some(IdTokenHint {
            audience,
            account_id,
        }))
    }

    /// The `aud` of an ID token whose signature cannot be checked any more
    /// (a key retired since): only to choose whose registered return
    /// addresses a logout may go to, after the user confirmed it.
    pub fn unverified_audience(&self, hint: &str) -> Option<String> {
        let payload = hint.split('.').nth(1)?;
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        claims["aud"]
            .as_str()
            .filter(|aud| super::clients::valid_client_id(aud))
            .map(str::to_owned)
    }

    /// The JWS algorithm ID tokens are signed with.
    pub fn id_token_algorithm(&self) -> &'static str {
        self.settings.tokens.algorithm.as_str()
    }

    /// Checks an authorization request: client and redirect URI first
    /// (failures there are shown, never redirected), then the rest.
    pub async fn check_authorization(
        &self,
        params: &AuthorizeParams,
    ) -> Result<Authorization, AuthorizeError> {
        let Some(client_id) = params.client_id.as_deref().filter(|id| !id.is_empty()) else {
            return Err(AuthorizeError::Page(PageError::MissingClient));
        };
        if !super::clients::valid_client_id(client_id) {
            return Err(AuthorizeError::Page(PageError::UnknownClient));
        }
        let client = match self.store.get_client(client_id).await {
            Ok(Some(client)) if client.id == client_id => client,
            Ok(_) => return Err(AuthorizeError::Page(PageError::UnknownClient)),
            Err(error) => {
                tracing::error!(%error, "authorization request: store failed");
                return Err(AuthorizeError::Unavailable);
            }
        };
        let redirect_uri = match params.redirect_uri.as_deref() {
            Some(uri)
                if client
                    .redirect_uris
                    .iter()
                    .any(|r| super::clients::redirect_uri_matches(r, uri)) =>
            {
                uri.to_owned()
            }
            Some(_) => {
                return Err(AuthorizeError::Page(PageError::UnregisteredRedirect));
            }
            None if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
            None => return Err(AuthorizeError::Page(PageError::MissingRedirect)),
        };
        let state = params.state.clone();
        let refuse = |error: &'static str, description: &str| AuthorizeError::Redirect {
            redirect_uri: redirect_uri.clone(),
            state: state.clone(),
            error,
            description: description.to_owned(),
        };
        if state
            .as_deref()
            .is_some_and(|s| s.chars().count() > MAX_PARAM_CHARS)
        {
            return Err(AuthorizeError::Page(PageError::StateTooLong));
        }
        // VSCHAR only (RFC 6749 Appendix A.5): the sign-in form carries it
        // in a hidden field, and a browser posts a line break or a NUL
        // there changed, so the client would get back another state.
        if state
            .as_deref()
            .is_some_and(|s| !s.bytes().all(|b| (0x20..=0x7e).contains(&b)))
        {
            return Err(refuse(
                "invalid_request",
                "state: only printable ASCII characters",
            ));
        }
        if params.request.is_some() {
            return Err(refuse(
                "request_not_supported",
                "request objects are not supported",
            ));
        }
        if params.request_uri.is_some() {
            return Err(refuse(
                "request_uri_not_supported",
                "request_uri is not supported",
            ));
        }
        match params.response_type.as_deref() {
            Some("code") => {}
            None | Some("") => return Err(refuse("invalid_request", "response_type is required")),
            Some(_) => {
                return Err(refuse(
                    "unsupported_response_type",
                    "only response_type=code is supported",
                ));
            }
        }
        if params
            .response_mode
            .as_deref()
            .is_some_and(|mode| mode != "query")
        {
            return Err(refuse(
                "invalid_request",
                "only response_mode=query is supported",
            ));
        }
        if !client.grants.iter().any(|g| g == "authorization_code") {
            return Err(refuse(
                "unauthorized_client",
                "this client may not use the authorization code flow",
            ));
        }
        let Some(challenge) = params.code_challenge.as_deref().filter(|c| !c.is_empty()) else {
            return Err(refuse(
                "invalid_request",
                "code_challenge is required (PKCE with S256)",
            ));
        };
        if params.code_challenge_method.as_deref() != Some("S256") {
            return Err(refuse(
                "invalid_request",
                "code_challenge_method must be S256",
            ));
        }
        let challenge_ok = challenge.len() == 43
            && challenge
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
        if !challenge_ok {
            return Err(refuse(
                "invalid_request",
                "code_challenge must be a base64url SHA-256 (43 characters)",
            ));
        }
        let scope = scopes_within(params.scope.as_deref(), &client.scopes)
            .map_err(|reason| refuse("invalid_scope", &reason))?
            .join(" ");
        let nonce = params.nonce.clone().filter(|n| !n.is_empty());
        if nonce
            .as_deref()
            .is_some_and(|n| n.chars().count() > MAX_PARAM_CHARS)
        {
            return Err(refuse("invalid_request", "nonce is too long"));
        }
        // It is stored with the code and put in the ID token: printable text.
        if nonce
            .as_deref()
            .is_some_and(|n| n.chars().any(char::is_control))
        {
            return Err(refuse(
                "invalid_request",
                "nonce must not contain control characters",
            ));
        }
        let prompts: Vec<&str> = params
            .prompt
            .as_deref()
            .unwrap_or_default()
            .split(' ')
            .filter(|p| !p.is_empty())
            .collect();
        let no_prompt = prompts.contains(&"none");
        if no_prompt && prompts.len() > 1 {
            return Err(refuse(
                "invalid_request",
                "prompt=none cannot be combined with other values",
            ));
        }
        if prompts
            .iter()
            .any(|p| !matches!(*p, "none" | "login" | "consent" | "select_account"))
        {
            return Err(refuse("invalid_request", "prompt has an unsupported value"));
        }
        let max_age = match params.max_age.as_deref() {
            None | Some("") => None,
            Some(raw) => match raw.parse::<i64>() {
                Ok(age) if age >= 0 => Some(age),
                _ => {
                    return Err(refuse(
                        "invalid_request",
                        "max_age must be a whole number of seconds",
                    ));
                }
            },
        };
        // A hint signed by a key retired since counts as none, but for a
        // silent request, which must not answer for whoever is signed in
        // when the client expects someone it can no longer say.
        let hinted_account = match params.id_token_hint.as_deref() {
            None | Some("") => None,
            Some(raw) => match self.id_token_hint(raw).await {
                Ok(Some(hint)) => Some(hint.account_id),
                Ok(None) if no_prompt => {
                    return Err(refuse(
                        "login_required",
                        "the id_token_hint can no longer be checked",
                    ));
                }
                Ok(None) => None,
                Err(()) => {
                    return Err(refuse(
                        "invalid_request",
                        "id_token_hint is not an ID token this server issued",
                    ));
                }
            },
        };
        let confirm = prompts.contains(&"consent") || impersonable(&client, &redirect_uri);
        Ok(Authorization {
            client,
            redirect_uri,
            scope,
            state,
            nonce,
            hinted_account,
            id_token_hint: hinted_account.and(params.id_token_hint.clone()),
            code_challenge: challenge.to_owned(),
            // max_age=0 asks for a fresh sign-in, like prompt=login
            // (OIDC Core §3.1.2.1); seconds are too coarse to tell otherwise.
            // select_account shows the form too, where another account can
            // sign in. consent asks a signed-in user to confirm, as does a
            // client another program could pass itself off as.
            force_login: prompts.contains(&"login")
                || prompts.contains(&"select_account")
                || max_age == Some(0),
            no_prompt,
            confirm,
            login_hint: params
                .login_hint
                .clone()
                .filter(|h| !h.is_empty() && h.chars().count() <= 320),
            max_age,
        })
    }

    /// The browser session a cookie stands for, if it is live.
    pub async fn browser_session(
        &self,
        cookie: &str,
    ) -> crate::core::Result<Option<BrowserSession>> {
        Ok(self
            .find_browser_session(cookie)
            .await?
            .and_then(|(browser, live)| live.then_some(browser)))
    }

    /// The browser session a cookie stands for, live or not (ended, or
    /// expired), and whether it is live.
    async fn find_browser_session(
        &self,
        cookie: &str,
    ) -> crate::core::Result<Option<(BrowserSession, bool)>> {
        let Some(hash) = hash_presented_in(BROWSER_NAMESPACE, cookie) else {
            return Ok(None);
        };
        let now = self.now();
        let Some(handle) = self.store.find_access_token(&hash).await? else {
            return Ok(None);
        };
        let Some(session) = self.store.get_session(&handle.session_id).await? else {
            return Ok(None);
        };
        let live = session.is_live(now) && now < handle.expires_at;
        Ok(Some((
            BrowserSession {
                session_id: session.id,
                account_id: session.account_id,
                auth_time: session.created_at,
            },
            live,
        )))
    }

    /// Signs in on the hosted page: the same core login as every face, then
    /// a browser session. Returns the cookie value and the session.
    ///
    /// The browser's earlier session (`previous`, its cookie), which the new
    /// cookie replaces, does not stay behind where no logout can reach it:
    /// signed in again as the same account (`prompt=login`, `max_age`),
    /// its client sessions move to the new one and it ends; as another
    /// account, it ends with its client sessions.
    pub async fn sign_in_browser(
        &self,
        login: &str,
        password: &str,
        client: ClientInfo,
        previous: Option<&str>,
    ) -> crate::core::Result<(String, BrowserSession)> {
        // A malformed login or password is refused like a wrong one: the
        // page must not tell what exists.
        let (Ok(login), Ok(password)) = (LoginId::parse(login), Password::presented(password))
        else {
            return Err(Error::InvalidCredentials);
        };
        let grant = self
            .login(LoginAttempt {
                login,
                credential: Credential::Password(password),
                platform: Some(Platform::web()),
                client,
                options: LoginOptions {
                    platform_policy: Some(PlatformPolicy::Multiple),
                    ..LoginOptions::default()
                },
                face: FACE,
            })
            .await?;
        let cookie = random_urlsafe(32);
        self.store
            .replace_access_token(
                &grant.session_id,
                &hash_token_in(BROWSER_NAMESPACE, &cookie),
                grant.refresh_expires_at,
            )
            .await?
            // Gone meanwhile (its account deleted): no browser session.
            .ok_or(Error::Unauthenticated)?;
        let session = BrowserSession {
            session_id: grant.session_id,
            account_id: grant.account.id,
            auth_time: self.now(),
        };
        if let Some(previous) = previous
            && let Err(error) = self.replace_browser_session(previous, &session).await
        {
            // The sign-in stands; the earlier session stays as it was.
            tracing::warn!(%error, "could not end the browser's earlier session");
        }
        Ok((cookie, session))
    }

    /// See [`Core::sign_in_browser`].
    async fn replace_browser_session(
        &self,
        previous: &str,
        new: &BrowserSession,
    ) -> crate::core::Result<()> {
        let Some((old, live)) = self.find_browser_session(previous).await? else {
            return Ok(());
        };
        if old.session_id == new.session_id {
            return Ok(());
        }
        // Ended already, its client sessions end too (below): one left
        // live by an ending cut short must not outlive it.
        if live && old.account_id == new.account_id {
            self.store
                .move_browser_children(&old.session_id, &new.session_id)
                .await?;
        }
        self.end_session_and_its_clients(&old.session_id, "signed_in_again")
            .await?;
        Ok(())
    }

    /// What a checked authorization request leads to in a browser that has
    /// (or has not) a browser session: a code at once (single sign-on), the
    /// page where the user confirms it ([`Authorization::confirm`]), the
    /// client's `login_required` or `consent_required` (`prompt=none`), or
    /// the sign-in page.
    ///
    /// `confirmed` is the account whose user confirmed on the page
    /// ([`Continuation::Confirm`]): the code goes only if that account is
    /// still the one signed in; another is asked again.
    pub async fn continue_authorization(
        &self,
        authorization: &Authorization,
        browser: Option<BrowserSession>,
        confirmed: Option<crate::store::AccountId>,
    ) -> Result<Continuation, AuthorizeError> {
        let now = self.now();
        let usable = browser.filter(|b| {
            !authorization.force_login
                && authorization
                    .max_age
                    .is_none_or(|age| now - b.auth_time <= age)
                && authorization
                    .hinted_account
                    .is_none_or(|account| account == b.account_id)
        });
        if let Some(browser) = usable {
            if authorization.confirm && confirmed != Some(browser.account_id) {
                if authorization.no_prompt {
                    return Err(AuthorizeError::Redirect {
                        redirect_uri: authorization.redirect_uri.clone(),
                        state: authorization.state.clone(),
                        error: "consent_required",
                        description: "the user must confirm a sign-in to this client".into(),
                    });
                }
                return match self.cached_account(browser.account_id).await {
                    Ok(account) => Ok(Continuation::Confirm {
                        account_id: account.id,
                        username: account.username.clone(),
                    }),
                    // Deleted meanwhile: whoever is there signs in.
                    Err(Error::NotFound(_)) => Ok(Continuation::SignIn),
                    Err(error) => {
                        tracing::error!(%error, "authorization: the signed-in account could not be read");
                        Err(AuthorizeError::Unavailable)
                    }
                };
            }
            // Each code redeemed opens a session with no password checked:
            // a signed-in browser asking again and again is bounded.
            let key = format!("codes:{}", browser.session_id);
            if self
                .charge_here(&key, &CODES_BY_SINGLE_SIGN_ON, now)
                .await
                .is_err()
            {
                return Err(AuthorizeError::Redirect {
                    redirect_uri: authorization.redirect_uri.clone(),
                    state: authorization.state.clone(),
                    error: "temporarily_unavailable",
                    description: "too many authorization requests in this browser session; \
                                  retry in a few seconds"
                        .into(),
                });
            }
            return self
                .issue_code(authorization, &browser)
                .await
                .map(Continuation::Redirect)
                .map_err(|_| AuthorizeError::Unavailable);
        }
        if authorization.no_prompt {
            return Err(AuthorizeError::Redirect {
                redirect_uri: authorization.redirect_uri.clone(),
                state: authorization.state.clone(),
                error: "login_required",
                description: "the user is not signed in".into(),
            });
        }
        Ok(Continuation::SignIn)
    }

    /// After a sign-in on the page: a code for the request, or, when its
    /// `id_token_hint` named another account than the one that signed in,
    /// the client's `login_required` (OIDC Core §3.1.2.1: the client asked
    /// for that user, and must not get another's code and ID token).
    pub async fn conclude_sign_in(
        &self,
        authorization: &Authorization,
        browser: &BrowserSession,
    ) -> Result<String, AuthorizeError> {
        if authorization
            .hinted_account
            .is_some_and(|account| account != browser.account_id)
        {
            return Err(AuthorizeError::Redirect {
                redirect_uri: authorization.redirect_uri.clone(),
                state: authorization.state.clone(),
                error: "login_required",
                description: "another account signed in than the id_token_hint names".into(),
            });
        }
        self.issue_code(authorization, browser)
            .await
            .map_err(|_| AuthorizeError::Unavailable)
    }

    /// Issues a code for a checked request in a browser session; returns
    /// the URL to send the browser to.
    pub async fn issue_code(
        &self,
        authorization: &Authorization,
        browser: &BrowserSession,
    ) -> crate::core::Result<String> {
        let now = self.now();
        let code = random_urlsafe(32);
        self.store
            .insert_code(
                &AuthorizationCode {
                    hash: hash_token(&code),
                    client_id: authorization.client.id.clone(),
                    redirect_uri: authorization.redirect_uri.clone(),
                    code_challenge: authorization.code_challenge.clone(),
                    account_id: browser.account_id,
                    browser_session: browser.session_id.clone(),
                    scope: authorization.scope.clone(),
                    nonce: authorization.nonce.clone(),
                    auth_time: browser.auth_time,
                    expires_at: now + CODE_TTL,
                },
                now,
            )
            .await?;
        let mut pairs = vec![("code", code.as_str())];
        if let Some(state) = &authorization.state {
            pairs.push(("state", state));
        }
        pairs.push(("iss", self.issuer()));
        Ok(with_query(&authorization.redirect_uri, &pairs))
    }

    /// RP-initiated logout: ends the browser session of `cookie` (and what
    /// it gave clients). Without the user's confirmation (`confirmed`, a
    /// form posted with its CSRF token) only on an ID token of that same
    /// account: a link elsewhere, even one carrying somebody's ID token,
    /// signs no one out. Answers whether it is done (`false`: ask first).
    /// Nothing but the cookie's session is ended: a hint alone, which its
    /// client and whoever it reached hold, ends no session.
    pub async fn logout_browser(
        &self,
        cookie: Option<&str>,
        hint: Option<&IdTokenHint>,
        confirmed: bool,
    ) -> crate::core::Result<bool> {
        let browser = match cookie {
            Some(cookie) => self.find_browser_session(cookie).await?,
            None => None,
        };
        let Some((browser, live)) = browser else {
            return Ok(true);
        };
        if !live {
            // Ended already: signed out. A client session it gave that is
            // still live (an ending cut short after its first step, whose
            // user now tries again) ends now, as it should have then.
            self.end_session_and_its_clients(&browser.session_id, "logout")
                .await?;
            return Ok(true);
        }
        if !confirmed && hint.is_none_or(|hint| hint.account_id != browser.account_id) {
            return Ok(false);
        }
        self.end_session_and_its_clients(&browser.session_id, "logout")
            .await?;
        let mut entry = audit::event("logout", "success", FACE);
        entry.account_id = Some(browser.account_id);
        self.audit.record(entry.detail("browser session"));
        Ok(true)
    }

    /// The token endpoint, for an authenticated client.
    pub async fn token(
        &self,
        client: &OAuthClient,
        request: &TokenRequest,
        info: &ClientInfo,
    ) -> OAuthResult<TokenAnswer> {
        let grant_type = required(&request.grant_type, "grant_type")?;
        if !super::clients::GRANTS.contains(&grant_type) {
            return Err(OAuthError::new(
                "unsupported_grant_type",
                "this grant_type is not supported",
            ));
        }
        if !client.grants.iter().any(|g| g == grant_type)
            || (grant_type == "password" && client.secret_hash.is_none())
        {
            return Err(OAuthError::new(
                "unauthorized_client",
                format!("this client may not use the {grant_type} grant"),
            ));
        }
        let answer = match grant_type {
            "authorization_code" => self.exchange_code(client, request, info).await,
            "refresh_token" => self.refresh_for(client, request).await,
            "password" => self.password_grant(client, request, info).await,
            _ => self.client_credentials(client, request),
        };
        let mut entry = audit::event("oauth_token", "success", FACE)
            .client(info)
            .detail(format!("client {} grant {grant_type}", client.id));
        if let Err(error) = &answer {
            entry = entry.with_outcome(error.error);
        }
        match (grant_type, answer.is_ok()) {
            // A password grant is audited by the login itself.
            ("password", _) => {}
            (_, true) => self.audit.record(entry),
            (_, false) => self.audit_cheap_refusal(entry, info).await,
        }
        answer
    }

    async fn exchange_code(
        &self,
        client: &OAuthClient,
        request: &TokenRequest,
        info: &ClientInfo,
    ) -> OAuthResult<TokenAnswer> {
        let code = required(&request.code, "code")?;
        let verifier = required(&request.code_verifier, "code_verifier")?;
        // Required when the authorization request named it (RFC 6749
        // §4.1.3); it may be left out only where that request could leave
        // it out too: the client has exactly one.
        let redirect_uri = match request.redirect_uri.as_deref() {
            Some(uri) if !uri.is_empty() => uri,
            _ if client.redirect_uris.len() == 1 => client.redirect_uris[0].as_str(),
            _ => {
                return Err(OAuthError::new(
                    "invalid_request",
                    "redirect_uri is required",
                ));
            }
        };
        let now = self.now();
        let hash = hash_token(code);
        let found = self
            .store
            .find_code(&hash, now)
            .await
            .map_err(Error::from)?;
        // The client's session ends no later than the browser session it
        // comes from (a code redeemed on its last day would otherwise give
        // a session a whole refresh lifetime beyond the sign-in).
        let mut expires_at = now + self.settings.tokens.refresh_ttl;
        if let Some(found) = &found {
            presented_as_issued(found, client, redirect_uri, verifier)?;
            let browser = self
                .store
                .get_session(&found.browser_session)
                .await
                .map_err(Error::from)?;
            if let Some(browser) = browser {
                expires_at = expires_at.min(browser.expires_at);
            }
        }
        let refresh_token = new_refresh_token(TokenStyle::Jwt);
        let session = NewSession {
            id: uuid::Uuid::new_v4().to_string(),
            account_id: found.as_ref().map_or(0, |c| c.account_id),
            platform: OAUTH_PLATFORM.to_owned(),
            user_agent: info.user_agent.clone(),
            ip: info.ip.map(|ip| ip.to_string()),
            token_style: TokenStyle::Jwt,
            created_at: now,
            expires_at,
        };
        let refresh = NewRefreshToken {
            hash: hash_token_in(&refresh_namespace(&client.id), &refresh_token),
            session_id: session.id.clone(),
            issued_at: now,
        };
        let redemption = self
            .store
            .redeem_code(&hash, &session, &refresh, now)
            .await
            .map_err(Error::from)?;
        let code = match (redemption, found) {
            (Redemption::Redeemed, Some(code)) => code,
            (Redemption::Replayed { opened, code }, _) => {
                // A code used twice was stolen, or the first answer was:
                // the tokens it gave are revoked (RFC 6749 §4.1.2). Only
                // when presented as its first use was (its client, its
                // redirect URI, a verifier of its challenge): anyone who
                // merely saw a spent code (a public client needs no secret,
                // and its id is in the same URL) must not end that session.
                // The same answers as for an unspent code.
                presented_as_issued(&code, client, redirect_uri, verifier)?;
                // Acted on and recorded once, when it ends the session: a
                // replay repeated in a loop (each a few cheap queries) must
                // not write an event, a revocation and a notice to every
                // node each time. Later ones are refusals like any other.
                let ended = match &opened {
                    Some(opened) => self
                        .store
                        .revoke_session(opened, now, "code_replay")
                        .await
                        .map_err(Error::from)?,
                    None => false,
                };
                let entry = audit::event("oauth_code_replay", "session_revoked", FACE)
                    .client(info)
                    .detail(format!("client {}", client.id));
                match opened.filter(|_| ended) {
                    Some(opened) => {
                        tracing::warn!(session_id = %opened, "authorization code replayed; session ended");
                        self.sessions_ended(std::slice::from_ref(&opened)).await;
                        self.audit.record(entry);
                    }
                    None => {
                        self.audit_cheap_refusal(entry.with_outcome("refused"), info)
                            .await;
                    }
                }
                return Err(OAuthError::new(
                    "invalid_grant",
                    "the code was already used",
                ));
            }
            _ => {
                return Err(OAuthError::new(
                    "invalid_grant",
                    "the code is invalid or expired",
                ));
            }
        };
        // The store opened the session only for an account that may sign in
        // and a browser session still live, under lock: nothing to re-check.
        let account = self.account_with_usage(code.account_id).await?;
        let grants_refresh = client.grants.iter().any(|g| g == "refresh_token");
        self.client_tokens(
            client,
            &account,
            &session.id,
            &code.scope,
            Some((&code.browser_session, code.auth_time, code.nonce.as_deref())),
            grants_refresh.then_some(refresh_token),
        )
    }

    async fn refresh_for(
        &self,
        client: &OAuthClient,
        request: &TokenRequest,
    ) -> OAuthResult<TokenAnswer> {
        let token = required(&request.refresh_token, "refresh_token")?;
        let namespace = refresh_namespace(&client.id);
        // What the session was granted, before rotating: a narrower scope
        // may be asked for, never a wider one (RFC 6749 §6).
        let found = match hash_presented_in(&namespace, token) {
            Some(hash) => self
                .store
                .find_refresh_token(&hash)
                .await
                .map_err(Error::from)?,
            None => None,
        };
        let granted = match found {
            Some(record) => self
                .store
                .get_oauth_session(&record.session_id)
                .await
                .map_err(Error::from)?,
            None => None,
        };
        let Some(granted) = granted.filter(|g| g.client_id == client.id) else {
            self.metrics.refresh("invalid_token");
            return Err(OAuthError::new(
                "invalid_grant",
                "invalid or expired refresh token",
            ));
        };
        let allowed: Vec<String> = granted.scope.split(' ').map(str::to_owned).collect();
        let scope = scopes_within(request.scope.as_deref(), &allowed)
            .map_err(|reason| OAuthError::new("invalid_scope", reason))?
            .join(" ");
        let rotated = self.rotate_in(&namespace, token).await;
        self.metrics
            .refresh(super::login::refresh_outcome(&rotated));
        let (session, successor) = rotated?;
        let account = self.account_with_usage(session.account_id).await?;
        let sid = granted.browser_session.as_deref().unwrap_or(&session.id);
        self.client_tokens(
            client,
            &account,
            &session.id,
            &scope,
            Some((sid, granted.auth_time, None)),
            Some(successor),
        )
    }

    async fn password_grant(
        &self,
        client: &OAuthClient,
        request: &TokenRequest,
        info: &ClientInfo,
    ) -> OAuthResult<TokenAnswer> {
        let username = required(&request.username, "username")?;
        let password = required(&request.password, "password")?;
        let scope = scopes_within(request.scope.as_deref(), &client.scopes)
            .map_err(|reason| OAuthError::new("invalid_scope", reason))?
            .join(" ");
        let (Ok(login), Ok(password)) = (LoginId::parse(username), Password::presented(password))
        else {
            return Err(Error::InvalidCredentials.into());
        };
        let grant = self
            .login(LoginAttempt {
                login,
                credential: Credential::Password(password),
                platform: Platform::parse(OAUTH_PLATFORM).ok(),
                client: info.clone(),
                options: LoginOptions {
                    platform_policy: Some(PlatformPolicy::Multiple),
                    refresh_namespace: Some(refresh_namespace(&client.id)),
                    shared_address: true,
                    ..LoginOptions::default()
                },
                face: FACE,
            })
            .await?;
        let now = self.now();
        let link = OAuthSession {
            session_id: grant.session_id.clone(),
            client_id: client.id.clone(),
            scope: scope.clone(),
            browser_session: None,
            auth_time: now,
            nonce: None,
        };
        if let Err(error) = self.store.insert_oauth_session(&link).await {
            let _ = self
                .store
                .revoke_session(&grant.session_id, now, "error")
                .await;
            return Err(Error::from(error).into());
        }
        let grants_refresh = client.grants.iter().any(|g| g == "refresh_token");
        self.client_tokens(
            client,
            &grant.account,
            &grant.session_id,
            &scope,
            Some((&grant.session_id, now, None)),
            grants_refresh.then_some(grant.refresh_token),
        )
    }

    fn client_credentials(
        &self,
        client: &OAuthClient,
        request: &TokenRequest,
    ) -> OAuthResult<TokenAnswer> {
        let allowed: Vec<String> = client
            .scopes
            .iter()
            .filter(|s| *s != "openid")
            .cloned()
            .collect();
        let scope = match request.scope.as_deref() {
            None | Some("") => String::new(),
            requested => scopes_within(requested, &allowed)
                .map_err(|reason| OAuthError::new("invalid_scope", reason))?
                .join(" "),
        };
        let now = self.now();
        let claims = self
            .tokens
            .client_claims(client.id.clone(), "", &client.id, &scope, now);
        Ok(TokenAnswer {
            access_token: self.tokens.issue_claims(&claims)?,
            expires_in: self.settings.tokens.access_ttl,
            refresh_token: None,
            id_token: None,
            scope,
        })
    }

    /// An access token (and an ID token when `openid` was granted) for a
    /// client session. `oidc` is (sid, auth_time, nonce).
    fn client_tokens(
        &self,
        client: &OAuthClient,
        account: &Account,
        session_id: &str,
        scope: &str,
        oidc: Option<(&str, UnixTime, Option<&str>)>,
        refresh_token: Option<String>,
    ) -> OAuthResult<TokenAnswer> {
        let now = self.now();
        let mut claims =
            self.tokens
                .client_claims(account.id.to_string(), session_id, &client.id, scope, now);
        claims.roles = account.roles.clone();
        claims.permissions = account.permissions.clone();
        let access_token = self.tokens.issue_claims(&claims)?;
        let id_token = match oidc {
            Some((sid, auth_time, nonce)) if has_scope(scope, "openid") => {
                Some(self.id_token(client, account, scope, sid, auth_time, nonce, &access_token)?)
            }
            _ => None,
        };
        Ok(TokenAnswer {
            access_token,
            expires_in: self.settings.tokens.access_ttl,
            refresh_token,
            id_token,
            scope: scope.to_owned(),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn id_token(
        &self,
        client: &OAuthClient,
        account: &Account,
        scope: &str,
        sid: &str,
        auth_time: UnixTime,
        nonce: Option<&str>,
        access_token: &str,
    ) -> crate::core::Result<String> {
        let now = self.now();
        let ring = self.tokens.ring();
        let algorithm = ring
            .signing_key_at(now)
            .map(|k| k.algorithm)
            .ok_or_else(|| Error::Internal("no signing key".into()))?;
        let mut claims = user_claims(account, Some(scope));
        claims.insert("iss".into(), json!(self.issuer()));
        claims.insert("aud".into(), json!(client.id));
        claims.insert("azp".into(), json!(client.id));
        claims.insert("iat".into(), json!(now));
        claims.insert("exp".into(), json!(now + self.settings.tokens.access_ttl));
        claims.insert("auth_time".into(), json!(auth_time));
        claims.insert("sid".into(), json!(sid));
        claims.insert("at_hash".into(), json!(at_hash(access_token, algorithm)));
        if let Some(nonce) = nonce {
            claims.insert("nonce".into(), json!(nonce));
        }
        let (token, _) = AccessTokens::sign_with(&ring, "JWT", &Value::Object(claims), now)?;
        Ok(token)
    }

    /// UserInfo (OIDC Core §5.3): the claims the token's scope grants.
    pub async fn userinfo(&self, bearer: &str) -> crate::core::Result<Map<String, Value>> {
        let scope = if is_opaque_token(bearer) {
            None
        } else {
            let claims = self.verify_access(bearer, self.now()).await?;
            if claims.sid.is_empty() {
                // A client_credentials token speaks for no user.
                return Err(Error::Unauthenticated);
            }
            claims.scope.clone()
        };
        let principal = self.authenticate(bearer).await?;
        if scope.as_deref().is_some_and(|s| !has_scope(s, "openid")) {
            return Err(Error::Forbidden);
        }
        let account = self.account_with_usage(principal.account_id).await?;
        Ok(user_claims(&account, scope.as_deref()))
    }

    /// Token introspection (RFC 7662) for an authenticated client: access
    /// tokens (JWT or opaque), and refresh tokens of this client or of the
    /// native API. Anything else is `{"active": false}`.
    pub async fn introspect(
        &self,
        client: &OAuthClient,
        token: &str,
    ) -> crate::core::Result<Introspection> {
        // Only a client that can prove who it is may learn about tokens.
        if client.secret_hash.is_none() {
            return Err(Error::Forbidden);
        }
        let inactive = || {
            let mut map = Map::new();
            map.insert("active".into(), json!(false));
            map
        };
        if token.is_empty() || token.len() > 4096 {
            return Ok(inactive());
        }
        let now = self.now();
        let mut answer = Map::new();
        if token.contains('.') {
            let Ok(claims) = self.verify_access(token, now).await else {
                return Ok(inactive());
            };
            if claims.sid.is_empty() {
                // A client's own token (client_credentials) lives as long
                // as the client does.
                let client_id = claims.client_id.as_deref().unwrap_or_default();
                if self.store.get_client(client_id).await?.is_none() {
                    return Ok(inactive());
                }
            } else {
                let Ok(sub) = claims.sub.parse::<i64>() else {
                    return Ok(inactive());
                };
                // Not live: inactive. Cannot tell (the store is away): an
                // error, never a live token called inactive.
                if !self.is_live(&claims.sid, sub).await? {
                    return Ok(inactive());
                }
                if let Ok(account) = self.account_with_usage(sub).await {
                    answer.insert("username".into(), json!(account.username));
                }
            }
            answer.insert("active".into(), json!(true));
            answer.insert("token_type".into(), json!("Bearer"));
            answer.insert("sub".into(), json!(claims.sub));
            answer.insert("aud".into(), json!(claims.aud));
            answer.insert("iss".into(), json!(claims.iss));
            answer.insert("exp".into(), json!(claims.exp));
            answer.insert("iat".into(), json!(claims.iat));
            answer.insert("nbf".into(), json!(claims.nbf));
            answer.insert("jti".into(), json!(claims.jti));
            if !claims.sid.is_empty() {
                answer.insert("sid".into(), json!(claims.sid));
            }
            if let Some(client_id) = &claims.client_id {
                answer.insert("client_id".into(), json!(client_id));
            }
            if let Some(scope) = &claims.scope {
                answer.insert("scope".into(), json!(scope));
            }
            return Ok(answer);
        }
        if is_opaque_token(token)
            && let Some(found) = self.store.find_access_token(&hash_token(token)).await?
            && now < found.expires_at
            && self.is_live(&found.session_id, found.account_id).await?
        {
            answer.insert("active".into(), json!(true));
            answer.insert("token_type".into(), json!("Bearer"));
            answer.insert("sub".into(), json!(found.account_id.to_string()));
            answer.insert("exp".into(), json!(found.expires_at));
            answer.insert("sid".into(), json!(found.session_id));
            return Ok(answer);
        }
        for namespace in [refresh_namespace(&client.id), String::new()] {
            let Some(hash) = hash_presented_in(&namespace, token) else {
                break;
            };
            let Some((record, session)) = self.store.find_refresh_token_with_session(&hash).await?
            else {
                continue;
            };
            if record.rotated_at.is_some() || !session.is_live(now) {
                return Ok(inactive());
            }
            answer.insert("active".into(), json!(true));
            answer.insert("token_type".into(), json!("refresh_token"));
            answer.insert("sub".into(), json!(session.account_id.to_string()));
            answer.insert("exp".into(), json!(session.expires_at));
            answer.insert("iat".into(), json!(record.issued_at));
            answer.insert("sid".into(), json!(session.id));
            if let Some(granted) = self.store.get_oauth_session(&session.id).await? {
                answer.insert("client_id".into(), json!(granted.client_id));
                answer.insert("scope".into(), json!(granted.scope));
            }
            return Ok(answer);
        }
        Ok(inactive())
    }

    /// Token revocation (RFC 7009): a refresh token of this client, or an
    /// access token issued to it, ends its session. Anything else is
    /// ignored (the answer is the same).
    pub async fn revoke_token(
        &self,
        client: &OAuthClient,
        token: &str,
        info: &ClientInfo,
    ) -> crate::core::Result<()> {
        if token.is_empty() || token.len() > 4096 {
            return Ok(());
        }
        let now = self.now();
        let session = if token.contains('.') {
            // An expired token needs no revoking.
            match self.verify_access(token, now).await {
                Ok(claims)
                    if claims.client_id.as_deref() == Some(client.id.as_str())
                        && !claims.sid.is_empty() =>
                {
                    Some(claims.sid.clone())
                }
                _ => None,
            }
        } else if let Some(hash) = hash_presented_in(&refresh_namespace(&client.id), token) {
            self.store
                .find_refresh_token(&hash)
                .await?
                .map(|record| record.session_id)
        } else {
            None
        };
        let Some(session) = session else {
            return Ok(());
        };
        if self.store.revoke_session(&session, now, "revoked").await? {
            self.sessions_ended(std::slice::from_ref(&session)).await;
            self.audit.record(
                audit::event("oauth_revoke", "success", FACE)
                    .client(info)
                    .detail(format!("client {} session {session}", client.id)),
            );
        }
        Ok(())
    }

    /// The discovery document (OIDC Discovery 1.0 and RFC 8414).
    pub fn discovery(&self) -> Value {
        let issuer = self.issuer().trim_end_matches('/');
        json!({
            "issuer": self.issuer(),
            "authorization_endpoint": format!("{issuer}/oauth2/authorize"),
            "token_endpoint": format!("{issuer}/oauth2/token"),
            "userinfo_endpoint": format!("{issuer}/oauth2/userinfo"),
            "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
            "introspection_endpoint": format!("{issuer}/oauth2/introspect"),
            "revocation_endpoint": format!("{issuer}/oauth2/revoke"),
            "end_session_endpoint": format!("{issuer}/oauth2/logout"),
            "scopes_supported": super::clients::SCOPES,
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": super::clients::GRANTS,
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [self.id_token_algorithm()],
            "token_endpoint_auth_methods_supported":
                ["client_secret_basic", "client_secret_post", "none"],
            "introspection_endpoint_auth_methods_supported":
                ["client_secret_basic", "client_secret_post"],
            "revocation_endpoint_auth_methods_supported":
                ["client_secret_basic", "client_secret_post", "none"],
            "code_challenge_methods_supported": ["S256"],
            "prompt_values_supported": ["none", "login", "consent", "select_account"],
            "claims_supported": [
                "iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "at_hash", "sid", "azp",
                "preferred_username", "name", "picture", "updated_at",
                "email", "email_verified", "phone_number", "phone_number_verified"
            ],
            "claims_parameter_supported": false,
            "request_parameter_supported": false,
            "request_uri_parameter_supported": false,
            "authorization_response_iss_parameter_supported": true,
            "ui_locales_supported": ["en", "zh-CN"],
        })
    }
}

/// `base` with `pairs` appended to its query, keeping what it had.
pub fn with_query(base: &str, pairs: &[(&str, &str)]) -> String {
    match url::Url::parse(base) {
        Ok(mut url) => {
            url.query_pairs_mut().extend_pairs(pairs);
            url.into()
        }
        // Registered URIs were parsed at registration; this is unreachable
        // in practice, and the redirect then carries no parameters.
        Err(_) => base.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests and answers may end up in a `{:?}` (a log line, a panic
    /// message): their secrets never do.
    #[test]
    fn debug_output_shows_no_secret() {
        let request = TokenRequest {
            grant_type: Some("password".into()),
            code: Some("secret-code".into()),
            code_verifier: Some("secret-verifier".into()),
            refresh_token: Some("secret-refresh".into()),
            username: Some("ann".into()),
            password: Some("secret-password".into()),
            ..TokenRequest::default()
        };
        let answer = TokenAnswer {
            access_token: "secret-access".into(),
            expires_in: 60,
            refresh_token: Some("secret-refresh".into()),
            id_token: Some("secret-id".into()),
            scope: "openid".into(),
        };
        let credentials = crate::core::clients::ClientCredentials::Secret {
            id: "web".into(),
            secret: "secret-client".into(),
        };
        let shown = format!("{request:?} {answer:?} {credentials:?}");
        assert!(!shown.contains("secret-"), "{shown}");
        assert!(shown.contains("ann") && shown.contains("web"), "{shown}");
    }

    #[test]
    fn pkce_s256_matches_rfc_7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(pkce_matches(verifier, challenge));
        assert!(!pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXx",
            challenge
        ));
        assert!(!pkce_matches("short", challenge));
    }

    #[test]
    fn scopes_are_limited_to_what_the_client_may_ask() {
        let allowed: Vec<String> = ["openid", "email"].map(String::from).to_vec();
        assert_eq!(scopes_within(None, &allowed).unwrap(), allowed);
        assert_eq!(
            scopes_within(Some("email  email"), &allowed).unwrap(),
            ["email"]
        );
        assert!(scopes_within(Some("openid phone"), &allowed).is_err());
    }

    #[test]
    fn query_parameters_are_appended_and_encoded() {
        assert_eq!(
            with_query(
                "https://app.example/cb?x=1",
                &[("code", "a b"), ("state", "&")]
            ),
            "https://app.example/cb?x=1&code=a+b&state=%26"
        );
    }
}
