//! The one error type of the core.
//!
//! Every face maps [`Error`] to its own wire shape in a single function; the
//! [`Error::code`] strings are stable and part of the native API. Variants
//! that stand for a refused login deliberately carry no detail: unknown
//! account, wrong password and disabled account must look the same.

use crate::store::StoreError;

/// What can go wrong in a core operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The login or password is wrong, or the account cannot sign in.
    #[error("invalid login or password")]
    InvalidCredentials,
    /// A field of the request is not acceptable; the message says which and why.
    #[error("{field}: {reason}")]
    InvalidInput {
        /// The request field at fault.
        field: &'static str,
        /// Why it was refused, safe to show to the client.
        reason: String,
    },
    /// A new password does not meet the password policy.
    #[error("{0}")]
    WeakPassword(String),
    /// The username, email or mobile is already held by another account.
    #[error("{0} is already taken")]
    Conflict(&'static str),
    /// No bearer token, or one that is malformed, expired, or for an ended session.
    #[error("missing, invalid or expired access token")]
    Unauthenticated,
    /// The refresh token is unknown, expired, or its session has ended.
    #[error("invalid or expired refresh token")]
    InvalidRefreshToken,
    /// An already-rotated refresh token was presented again; its session was ended.
    #[error("refresh token reuse detected; the session has been ended")]
    RefreshTokenReused,
    /// The caller is authenticated but may not do this.
    #[error("not allowed")]
    Forbidden,
    /// The token was issued to an OAuth client this route does not take
    /// tokens of (forward auth: `forward_auth.clients`).
    #[error("tokens issued to this client are not taken here")]
    ClientNotAccepted,
    /// The change would leave no active account holding the `admin`
    /// permission (disabling, deleting or demoting the last administrator).
    #[error(
        "this would leave no active administrator; make another account an administrator first"
    )]
    LastAdministrator,
    /// The named thing does not exist (or is not the caller's).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The account has used its API-call quota; an operator must raise it.
    #[error("API-call quota exhausted")]
    QuotaExceeded,
    /// Too many failed attempts; the client should retry after the given seconds.
    #[error("too many attempts, retry later")]
    Throttled {
        /// Seconds until an attempt may succeed.
        retry_after_secs: u64,
    },
    /// The password hashing pool is full, or the database cannot be reached
    /// right now; the client should retry after the given seconds.
    #[error("server busy, retry later")]
    Busy {
        /// Suggested wait before retrying.
        retry_after_secs: u64,
    },
    /// A storage failure; details are logged, never shown.
    #[error("storage failure: {0}")]
    Store(StoreError),
    /// Any other internal failure; details are logged, never shown.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// A stable machine-readable code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidCredentials => "invalid_credentials",
            Error::InvalidInput { .. } => "invalid_input",
            Error::WeakPassword(_) => "weak_password",
            Error::Conflict(_) => "conflict",
            Error::Unauthenticated => "unauthenticated",
            Error::InvalidRefreshToken => "invalid_refresh_token",
            Error::RefreshTokenReused => "refresh_token_reused",
            Error::Forbidden | Error::ClientNotAccepted => "forbidden",
            Error::LastAdministrator => "last_administrator",
            Error::NotFound(_) => "not_found",
            Error::Busy { .. } => "busy",
            Error::QuotaExceeded => "quota_exceeded",
            Error::Throttled { .. } => "throttled",
            Error::Store(_) | Error::Internal(_) => "internal",
        }
    }

    /// A shorthand for [`Error::InvalidInput`].
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            field,
            reason: reason.into(),
        }
    }

    /// Whether this is a fault of the server rather than of the request.
    pub fn is_internal(&self) -> bool {
        matches!(self, Error::Store(_) | Error::Internal(_))
    }
}

impl From<StoreError> for Error {
    /// A unique-field conflict is the client's problem; anything else is ours.
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict(field) => Error::Conflict(field),
            StoreError::LastAdministrator => Error::LastAdministrator,
            StoreError::TooMany { field, most } => {
                Error::invalid(field, format!("at most {most} names"))
            }
            StoreError::Unavailable(reason) => {
                tracing::warn!(%reason, "database unavailable; answering 503");
                Error::Busy {
                    retry_after_secs: 1,
                }
            }
            other => Error::Store(other),
        }
    }
}

/// The result type of core operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
