//! What the admin API does beyond the operations it shares with the CLI
//! (`accounts`, `roles`): searching accounts, changing several fields of
//! one at once, contacts, quota resets, other accounts' sessions. Every
//! change names its actor in the audit log.

use std::collections::BTreeMap;

use super::Core;
use super::accounts::{check_display_name, check_max_api_calls};
use super::domain::{Email, Mobile, Name, fold_key};
use super::error::{Error, Result};
use super::roles::Actor;
use super::sessions::SessionView;
use crate::store::{
    Account, AccountChange, AccountId, AccountQuery, AccountStatus, AuditEvent, AuditQuery,
    ContactChange, ProfilePatch, QuotaPeriod,
};

/// Most accounts (or audit events) in one page.
pub const MAX_PAGE: u32 = 200;
/// A page's size when the request names none.
pub const DEFAULT_PAGE: u32 = 50;

/// What `GET /v1/admin/users` asks for, as received.
#[derive(Debug, Clone, Default)]
pub struct AccountSearch {
    /// A prefix of the username, email or mobile, any case.
    pub q: Option<String>,
    /// `active`, `disabled` or `locked`.
    pub status: Option<String>,
    /// A role name.
    pub role: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1 to [`MAX_PAGE`].
    pub limit: Option<u32>,
}

/// What `GET /v1/admin/audit` asks for, times already read.
#[derive(Debug, Clone, Default)]
pub struct AuditSearch {
    /// A username, or an account id when no account has that username.
    pub user: Option<String>,
    /// Only this outcome.
    pub outcome: Option<String>,
    /// Only this face.
    pub face: Option<String>,
    /// At or after this time.
    pub since: Option<i64>,
    /// Before this time.
    pub until: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1 to [`MAX_PAGE`].
    pub limit: Option<u32>,
}

/// A page of results and the cursor of the next one.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The results.
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last one.
    pub next_cursor: Option<String>,
}

/// Changes to an account, each optional; validated together before any
/// is applied.
#[derive(Debug, Clone, Default)]
pub struct AccountPatch {
    /// `active` or `disabled`.
    pub status: Option<String>,
    /// The roles it holds, replacing the current ones.
    pub roles: Option<Vec<String>>,
    /// Email; `Some(None)` removes it.
    pub email: Option<Option<String>>,
    /// Mobile; `Some(None)` removes it.
    pub mobile: Option<Option<String>>,
    /// Display name.
    pub display_name: Option<String>,
    /// API-call quota (0: unlimited).
    pub max_api_calls: Option<i64>,
    /// Quota period: `none`, `day` or `month`; `Some(None)`: the default.
    pub quota_period: Option<Option<String>>,
    /// Profile attributes to set, or to remove when `None`.
    pub profile: Option<BTreeMap<String, Option<String>>>,
}

impl<T> Page<T> {
    /// A page from up to `limit + 1` results in cursor order: the one past
    /// `limit` only says that a next page exists.
    pub(crate) fn of(mut items: Vec<T>, limit: u32, cursor: impl Fn(&T) -> String) -> Self {
        let more = items.len() > limit as usize;
        items.truncate(limit as usize);
        let next_cursor = more.then(|| items.last().map(&cursor)).flatten();
        Page { items, next_cursor }
    }
}

/// A short filter value (an outcome, a face): at most 64 characters.
fn short(raw: Option<&str>, field: &'static str) -> Result<Option<String>> {
    match raw.filter(|r| !r.is_empty()) {
        Some(r) if r.len() > 64 || r.chars().any(char::is_control) => {
            Err(Error::invalid(field, "must be at most 64 characters"))
        }
        other => Ok(other.map(str::to_owned)),
    }
}

/// Reads a page size.
pub fn page_limit(limit: Option<u32>) -> Result<u32> {
    match limit.unwrap_or(DEFAULT_PAGE) {
        n @ 1..=MAX_PAGE => Ok(n),
        _ => Err(Error::invalid(
            "limit",
            format!("must be between 1 and {MAX_PAGE}"),
        )),
    }
}

/// Reads a cursor: the decimal id a previous page ended at.
pub fn cursor(raw: Option<&str>) -> Result<Option<i64>> {
    raw.filter(|c| !c.is_empty())
        .map(|c| {
            c.parse::<i64>()
                .ok()
                .filter(|id| *id > 0)
                .ok_or_else(|| Error::invalid("cursor", "not a cursor this API returned"))
        })
        .transpose()
}

/// Reads a quota period name.
pub fn quota_period(raw: &str) -> Result<QuotaPeriod> {
    QuotaPeriod::parse(raw).ok_or_else(|| {
        Error::invalid(
            "quota_period",
            "must be \"none\", \"day\" or \"month\" (null: the deployment's default)",
        )
    })
}

fn status(raw: &str) -> Result<AccountStatus> {
    match raw {
        "active" => Ok(AccountStatus::Active),
        "disabled" => Ok(AccountStatus::Disabled),
        "locked" => Ok(AccountStatus::Locked),
        _ => Err(Error::invalid(
            "status",
            "must be \"active\", \"disabled\" or \"locked\"",
        )),
    }
}

impl Core {
    /// A page of accounts matching a search, in id order: a page never
    /// repeats or skips an account, even while accounts are being added.
    pub async fn search_accounts(&self, search: &AccountSearch) -> Result<Page<Account>> {
        let limit = page_limit(search.limit)?;
        let prefix = search
            .q
            .as_deref()
            .filter(|q| !q.is_empty())
            .map(|q| {
                if q.chars().count() > 254 || q.chars().any(char::is_control) {
                    return Err(Error::invalid(
                        "q",
                        "must be at most 254 characters without control characters",
                    ));
                }
                Ok(fold_key(q))
            })
            .transpose()?;
        let query = AccountQuery {
            prefix,
            status: search.status.as_deref().map(status).transpose()?,
            role: search
                .role
                .as_deref()
                .map(|r| Name::parse(r, "role").map(|n| n.as_str().to_owned()))
                .transpose()?,
            after_id: cursor(search.cursor.as_deref())?.unwrap_or(0),
            // One more than asked: whether a next page exists.
            limit: limit + 1,
        };
        let mut page = Page::of(self.store.search_accounts(&query).await?, limit, |a| {
            a.id.to_string()
        });
        let now = self.now();
        for account in &mut page.items {
            account.api_calls_count = self.live_api_calls(account, now);
        }
        Ok(page)
    }

    /// A page of the audit log matching a search, newest first.
    pub async fn audit_page(&self, search: &AuditSearch) -> Result<Page<AuditEvent>> {
        let limit = page_limit(search.limit)?;
        let account_id = match search.user.as_deref().filter(|u| !u.is_empty()) {
            None => None,
            // A username first (usernames may be all digits: "42" is
            // whoever is called 42), else an id; neither has no events.
            Some(user) => match self.find_by_username(user).await {
                Ok(account) => Some(account.id),
                Err(Error::NotFound(_) | Error::InvalidInput { .. }) => {
                    match user.parse::<AccountId>() {
                        Ok(id) => Some(id),
                        Err(_) => {
                            return Ok(Page {
                                items: Vec::new(),
                                next_cursor: None,
                            });
                        }
                    }
                }
                Err(error) => return Err(error),
            },
        };
        let events = self
            .audit_events(&AuditQuery {
                account_id,
                outcome: short(search.outcome.as_deref(), "outcome")?,
                face: short(search.face.as_deref(), "face")?,
                since: search.since,
                until: search.until,
                before_id: cursor(search.cursor.as_deref())?,
                limit: limit + 1,
            })
            .await?;
        Ok(Page::of(events, limit, |e| e.id.to_string()))
    }

    /// Applies several changes to an account, after checking them all.
    pub async fn update_account(
        &self,
        id: AccountId,
        patch: AccountPatch,
        actor: &Actor,
    ) -> Result<Account> {
        let account = self.account(id).await?;
        let enabled = match patch.status.as_deref() {
            None => None,
            Some("active") => Some(true),
            Some("disabled") => Some(false),
            Some(_) => {
                return Err(Error::invalid(
                    "status",
                    "must be \"active\" or \"disabled\" (a locked account is unlocked with /unlock)",
                ));
            }
        };
        let email = patch
            .email
            .as_ref()
            .map(|e| e.as_deref().map(Email::parse).transpose())
            .transpose()?;
        let mobile = patch
            .mobile
            .as_ref()
            .map(|m| m.as_deref().map(Mobile::parse).transpose())
            .transpose()?;
        if let Some(name) = &patch.display_name {
            check_display_name(name)?;
        }
        if let Some(max) = patch.max_api_calls {
            check_max_api_calls(max)?;
        }
        if let Some(attributes) = &patch.profile {
            self.check_profile_change(&account.profile, attributes)?;
        }
        let quota_period = patch
            .quota_period
            .as_ref()
            .map(|p| p.as_deref().map(quota_period).transpose())
            .transpose()?;

        let roles = match &patch.roles {
            Some(roles) => Some(self.known_role_names(roles).await?),
            None => None,
        };
        // Contacts another account holds: refused before anything is written
        // (only a race can still refuse them at the write).
        if email.is_some() || mobile.is_some() {
            for (field, holder) in [
                (
                    "email",
                    match &email {
                        Some(Some(e)) => self.store.find_account_by_login(e.key(), None).await?,
                        _ => None,
                    },
                ),
                (
                    "mobile",
                    match &mobile {
                        Some(Some(m)) => {
                            self.store
                                .find_account_by_login("", Some(m.as_str()))
                                .await?
                        }
                        _ => None,
                    },
                ),
            ] {
                if holder.is_some_and(|holder| holder.id != id) {
                    return Err(Error::Conflict(field));
                }
            }
        }

        // Everything is checked but what only the write can check (the
        // last-administrator rule, and a race for a contact or a role):
        // one transaction, so a refusal leaves nothing half-done.
        let change = AccountChange {
            status: enabled.map(|enabled| {
                if enabled {
                    AccountStatus::Active
                } else {
                    AccountStatus::Disabled
                }
            }),
            roles,
            roles_were: None,
            contact: ContactChange {
                email: email.map(|e| e.map(|e| (e.as_str().to_owned(), e.key().to_owned()))),
                mobile: mobile.map(|m| m.map(|m| m.as_str().to_owned())),
            },
            profile: (patch.display_name.is_some() || patch.profile.is_some()).then(|| {
                ProfilePatch {
                    display_name: patch.display_name.clone(),
                    avatar_url: None,
                    attributes: patch.profile.clone().unwrap_or_default(),
                }
            }),
            max_api_calls: patch.max_api_calls,
            quota_period,
        };
        self.change_account(&account, &change, actor).await?;
        self.account_with_usage(id).await
    }

    /// Creates an account with profile attributes, all checked first.
    pub async fn create_account_with_profile(
        &self,
        spec: super::accounts::AccountSpec,
        profile: BTreeMap<String, String>,
        period: Option<&str>,
        actor: &Actor,
    ) -> Result<Account> {
        let attributes: BTreeMap<String, Option<String>> = profile
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect();
        self.check_profile_change(&BTreeMap::new(), &attributes)?;
        let period = period.map(quota_period).transpose()?;
        let account = self
            .create_account_with(spec, profile, period, actor)
            .await?;
        self.account_with_usage(account.id).await
    }

    /// Sets an account's API-call count back to zero.
    pub async fn reset_quota(&self, id: AccountId, actor: &Actor) -> Result<()> {
        let account = self.account(id).await?;
        // This node's pending calls are from before the reset: written first,
        // so that they are not lost to the count being reset. Other nodes'
        // pending calls, flushed after the reset, belong to the old count and
        // are dropped (the store starts a new period at `now`).
        self.api_calls.flush().await?;
        let now = self.now();
        if !self.store.reset_api_calls(id, now).await? {
            return Err(Error::NotFound("account"));
        }
        self.api_calls.reset(id, now);
        self.account_changed(id).await;
        self.audit_change(actor, "quota_reset", &account, None);
        Ok(())
    }

    /// An account's live sessions.
    pub async fn account_sessions(
        &self,
        id: AccountId,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<SessionView>> {
        self.account(id).await?;
        self.sessions_of(id, None, cursor, limit).await
    }

    /// Ends any session; `NotFound` if it is not live.
    pub async fn end_session(&self, id: &str, actor: &Actor) -> Result<()> {
        if !super::sessions::is_session_id(id) {
            return Err(Error::NotFound("session"));
        }
        let id = id.to_owned();
        let session = match self.store.get_session(&id).await? {
            Some(session) if session.is_live(self.now()) => session,
            _ => return Err(Error::NotFound("session")),
        };
        self.end_session_and_its_clients(&id, "revoked").await?;
        let account = self.account(session.account_id).await?;
        self.audit_change(
            actor,
            "session_revoked",
            &account,
            Some(format!("session {id}")),
        );
        Ok(())
    }

    /// Ends every session of an account.
    pub async fn end_all_sessions(&self, id: AccountId, actor: &Actor) -> Result<()> {
        let account = self.account(id).await?;
        self.end_account_sessions(id, None, "revoked").await?;
        self.audit_change(actor, "sessions_revoked", &account, None);
        Ok(())
    }
}
