//! Forward auth: may the bearer of a token reach a service behind the
//! operator's reverse proxy? Answered from live state (a role taken away
//! applies at the next request, not the next token) and, in the steady
//! state, from this node's memory only: the session and the account come
//! from the caches every change empties on every node, and the call is
//! counted in memory and flushed with the others.

use std::sync::Arc;

use super::audit::{self, AuditEventExt};
use super::domain::Name;
use super::error::{Error, Result};
use super::{ClientInfo, Core};
use crate::limits::Rule;
use crate::store::Account;

/// How many refused admin requests of one account the audit log records:
/// 30 at once, then one every 10 seconds (on every node together, with
/// Redis). The requests themselves are refused all the same.
pub const ADMIN_REFUSALS_AUDITED: Rule = Rule {
    burst: 30,
    interval: 10,
};

impl Core {
    /// The account behind `bearer` if its session is live, it was issued
    /// to no OAuth client or to one of `clients`
    /// ([`Error::ClientNotAccepted`] if not), it holds every permission in
    /// `required` ([`Error::Forbidden`] if not) and its quota admits one
    /// more call ([`Error::QuotaExceeded`]), which is counted.
    pub async fn authorize(
        &self,
        bearer: &str,
        required: &[Name],
        clients: &[String],
    ) -> Result<Arc<Account>> {
        let principal = self.identify(bearer).await?;
        if let Some(client) = &principal.client_id
            && !clients.contains(client)
        {
            return Err(Error::ClientNotAccepted);
        }
        self.authorize_principal(principal, required, true).await
    }

    /// [`Self::authorize`] for the admin API, which takes no token issued
    /// to an OAuth client (403 like a missing permission, and audited the
    /// same way): an application a user signed in to, or whoever steals its
    /// token, must not administer Sesame with the user's permissions. Its
    /// calls count against no quota: an administrator's own quota (set by
    /// itself or another) must not lock the administrators out.
    pub async fn authorize_admin(&self, bearer: &str, required: &[Name]) -> Result<Arc<Account>> {
        let principal = self.identify(bearer).await?;
        if principal.client_id.is_some() {
            return Err(Error::Forbidden);
        }
        self.authorize_principal(principal, required, false).await
    }

    async fn authorize_principal(
        &self,
        principal: super::login::Principal,
        required: &[Name],
        counted: bool,
    ) -> Result<Arc<Account>> {
        let account = self
            .cached_account(principal.account_id)
            .await
            .map_err(|e| match e {
                Error::NotFound(_) => Error::Unauthenticated,
                other => other,
            })?;
        let held = |name: &Name| account.permissions.iter().any(|p| p == name.as_str());
        if !required.iter().all(held) {
            return Err(Error::Forbidden);
        }
        if counted {
            self.api_calls.admit(account.id, self.now()).await?;
        }
        Ok(account)
    }

    /// Records that the bearer of `bearer` was refused an administrative
    /// request (`what`: method and path) for lack of the `admin` permission.
    /// Each account's refusals are recorded within a budget
    /// ([`ADMIN_REFUSALS_AUDITED`]): any signed-in user could otherwise
    /// write rows to the audit log as fast as it can send requests.
    pub async fn audit_admin_refusal(&self, bearer: &str, client: &ClientInfo, what: &str) {
        let entry = audit::event("admin_refused", "denied", "admin_api").client(client);
        let Ok(principal) = self.identify(bearer).await else {
            self.audit.record(entry.detail(what));
            return;
        };
        let mut detail = what.to_owned();
        if let Some(client_id) = &principal.client_id {
            detail = format!("{detail} with a token issued to OAuth client {client_id}");
        }
        let entry = match self.cached_account(principal.account_id).await {
            Ok(account) => entry.account(&account),
            Err(_) => entry,
        };
        let key = format!("admin-refused:{}", principal.account_id);
        self.audit_within(&key, &ADMIN_REFUSALS_AUDITED, entry.detail(detail))
            .await;
    }
}
