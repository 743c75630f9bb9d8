//! How the native API shows accounts, sessions and grants.

use serde::Serialize;
use utoipa::ToSchema;

pub use crate::clock::rfc3339;
use crate::core::login::Grant;
use crate::core::sessions::SessionView;
use crate::store::{Account, AuditEvent, Role};

/// An account as the native API shows it. Never any credential material.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView<'a> {
    id: String,
    username: &'a str,
    email: Option<&'a str>,
    email_verified: bool,
    mobile: Option<&'a str>,
    mobile_verified: bool,
    display_name: &'a str,
    avatar_url: &'a str,
    status: &'static str,
    roles: &'a [String],
    permissions: &'a [String],
    profile: &'a std::collections::BTreeMap<String, String>,
    created_at: String,
    updated_at: String,
    last_login_at: Option<String>,
    last_login_ip: Option<&'a str>,
    login_count: i64,
    failed_login_count: i64,
    api_calls_count: i64,
    /// 0 means unlimited.
    max_api_calls: i64,
    /// The account's own period; `null`: the deployment's default.
    quota_period: Option<&'static str>,
}

impl<'a> From<&'a Account> for UserView<'a> {
    fn from(a: &'a Account) -> Self {
        Self {
            id: a.id.to_string(),
            username: &a.username,
            email: a.email.as_deref(),
            email_verified: a.email_verified,
            mobile: a.mobile.as_deref(),
            mobile_verified: a.mobile_verified,
            display_name: &a.display_name,
            avatar_url: &a.avatar_url,
            status: a.status.as_str(),
            roles: &a.roles,
            permissions: &a.permissions,
            profile: &a.profile,
            created_at: rfc3339(a.created_at),
            updated_at: rfc3339(a.updated_at),
            last_login_at: a.last_login_at.map(rfc3339),
            last_login_ip: a.last_login_ip.as_deref(),
            login_count: a.login_count,
            failed_login_count: a.failed_login_count,
            api_calls_count: a.api_calls_count,
            max_api_calls: a.max_api_calls,
            quota_period: a.quota_period.map(|p| p.as_str()),
        }
    }
}

/// The answer to a login or refresh (no `Debug`: it holds the tokens).
#[derive(Serialize, ToSchema)]
pub struct GrantView<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: i64,
    refresh_token: &'a str,
    refresh_expires_in: i64,
    session_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_token: Option<&'a str>,
    user: UserView<'a>,
}

impl<'a> From<&'a Grant> for GrantView<'a> {
    fn from(g: &'a Grant) -> Self {
        Self {
            access_token: &g.access_token,
            token_type: "Bearer",
            expires_in: g.access_expires_in,
            refresh_token: &g.refresh_token,
            refresh_expires_in: g.refresh_expires_in,
            session_id: &g.session_id,
            device_token: g.device_token.as_deref(),
            user: UserView::from(&g.account),
        }
    }
}

/// A session as its owner sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionOut<'a> {
    id: &'a str,
    platform: &'a str,
    user_agent: Option<&'a str>,
    ip: Option<&'a str>,
    created_at: String,
    last_used_at: String,
    expires_at: String,
    current: bool,
}

impl<'a> From<&'a SessionView> for SessionOut<'a> {
    fn from(s: &'a SessionView) -> Self {
        Self {
            id: &s.id,
            platform: &s.platform,
            user_agent: s.user_agent.as_deref(),
            ip: s.ip.as_deref(),
            created_at: rfc3339(s.created_at),
            last_used_at: rfc3339(s.last_used_at),
            expires_at: rfc3339(s.expires_at),
            current: s.current,
        }
    }
}

/// An audit event as the admin API and `sesame audit list --json` show it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView<'a> {
    id: i64,
    at: String,
    event: &'a str,
    outcome: &'a str,
    face: &'a str,
    account_id: Option<i64>,
    username: Option<&'a str>,
    /// The account an operator's or administrator's change was made to.
    target_id: Option<i64>,
    ip: Option<&'a str>,
    user_agent: Option<&'a str>,
    detail: Option<&'a str>,
}

impl<'a> From<&'a AuditEvent> for AuditView<'a> {
    fn from(e: &'a AuditEvent) -> Self {
        Self {
            id: e.id,
            at: rfc3339(e.at),
            event: &e.event,
            outcome: &e.outcome,
            face: &e.face,
            account_id: e.account_id,
            username: e.username.as_deref(),
            target_id: e.target_id,
            ip: e.ip.as_deref(),
            user_agent: e.user_agent.as_deref(),
            detail: e.detail.as_deref(),
        }
    }
}

/// A role as the admin API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoleView<'a> {
    name: &'a str,
    description: &'a str,
    permissions: &'a [String],
    built_in: bool,
}

impl<'a> From<&'a Role> for RoleView<'a> {
    fn from(r: &'a Role) -> Self {
        Self {
            name: &r.name,
            description: &r.description,
            permissions: &r.permissions,
            built_in: crate::core::roles::BUILT_IN_ROLES.contains(&r.name.as_str()),
        }
    }
}
