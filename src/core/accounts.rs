//! Account management: creation, passwords, status and the caller's own profile.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::ClientInfo;
use super::Core;
use super::audit::{self, AuditEventExt};
use super::domain::{Email, Md5Hex, Mobile, Password, Username};
use super::error::{Error, Result};
use super::guard::account_key_of;
use super::login::Principal;
use super::policy::check_not_common;
use super::roles::Actor;
use crate::clock::UnixTime;
use crate::notices::Notice;
use crate::store::{
    ADMIN_PERMISSION, Account, AccountChange, AccountId, AccountStatus, ClientKind, Kept,
    NewAccount, PasswordVerifiers, ProfilePatch, QuotaPeriod,
};

/// The detail of the unlock a new password brings (its store write lifts
/// the lockout; the failure budgets are cleared as an unlock's are).
const BY_NEW_PASSWORD: &str = "by the new password";

/// The role every new account gets unless told otherwise.
pub const DEFAULT_ROLE: &str = "user";
/// The face name of operator actions (CLI, later the admin API) in the audit log.
pub const OPERATOR: &str = "operator";
/// The built-in administrator role.
pub const ADMIN_ROLE: &str = "administrator";
/// Longest display name, in characters.
const MAX_DISPLAY_NAME: usize = 128;
/// Longest avatar URL, in bytes.
const MAX_AVATAR_URL: usize = 2048;
/// Most profile attributes an account may hold.
pub(crate) const MAX_ATTRIBUTES: usize = 64;
/// Longest attribute value, in characters.
const MAX_ATTRIBUTE_VALUE: usize = 1024;

/// What an operator or the admin API asks for when creating an account.
#[derive(Debug, Clone)]
pub struct AccountSpec {
    /// Username.
    pub username: Username,
    /// Optional email.
    pub email: Option<Email>,
    /// Optional mobile.
    pub mobile: Option<Mobile>,
    /// Optional display name.
    pub display_name: Option<String>,
    /// Roles; empty means the default role.
    pub roles: Vec<String>,
    /// API-call quota; 0 means unlimited.
    pub max_api_calls: i64,
    /// The initial password (policy already applied by [`Password::new_password`]).
    pub password: Password,
}

/// A change the caller makes to their own profile, unvalidated.
#[derive(Debug, Clone, Default)]
pub struct ProfileChange {
    /// New display name.
    pub display_name: Option<String>,
    /// New avatar URL.
    pub avatar_url: Option<String>,
    /// Attributes to set, or to remove when `None`.
    pub attributes: BTreeMap<String, Option<String>>,
}

/// An API-call quota: 0 (unlimited) or more.
pub(crate) fn check_max_api_calls(max: i64) -> Result<()> {
    if max < 0 {
        return Err(Error::invalid(
            "max_api_calls",
            "must be 0 (unlimited) or more",
        ));
    }
    Ok(())
}

pub(crate) fn check_display_name(name: &str) -> Result<()> {
    if name.chars().count() > MAX_DISPLAY_NAME || name.chars().any(char::is_control) {
        return Err(Error::invalid(
            "display_name",
            format!("must be at most {MAX_DISPLAY_NAME} characters without control characters"),
        ));
    }
    Ok(())
}

pub(crate) fn check_avatar_url(url: &str) -> Result<()> {
    if url.len() > MAX_AVATAR_URL || url.chars().any(char::is_control) {
        return Err(Error::invalid(
            "avatar_url",
            format!("must be at most {MAX_AVATAR_URL} bytes without control characters"),
        ));
    }
    Ok(())
}

pub(crate) fn check_attribute_value(value: &str) -> Result<()> {
    if value.chars().count() > MAX_ATTRIBUTE_VALUE || value.chars().any(char::is_control) {
        return Err(Error::invalid(
            "profile",
            format!(
                "attribute values are at most {MAX_ATTRIBUTE_VALUE} characters without control characters"
            ),
        ));
    }
    Ok(())
}

pub(crate) fn check_attribute_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !valid {
        return Err(Error::invalid(
            "profile",
            "attribute names are 1 to 64 characters of A-Z, a-z, 0-9, '_', '-' and '.'",
        ));
    }
    Ok(())
}

impl Core {
    /// Hashes a new password into the verifiers stored for it: one over the
    /// password and one over its MD5 hex (for the users-actions contract), so
    /// neither the password nor its MD5 is ever stored.
    async fn verifiers_for(&self, password: &Password) -> Result<PasswordVerifiers> {
        Ok(PasswordVerifiers {
            password_hash: self.hasher.hash(password.expose()).await?,
            md5_verifier: Some(self.hasher.hash(Md5Hex::of(password).expose()).await?),
        })
    }

    /// An account with its live API-call count: of the current period,
    /// stored plus not yet flushed.
    pub(crate) async fn account_with_usage(&self, id: AccountId) -> Result<Account> {
        let mut account = Account::clone(&*self.cached_account(id).await?);
        account.api_calls_count = self.live_api_calls(&account, self.now());
        Ok(account)
    }

    /// The account's API-call count in the period containing `now`.
    pub(crate) fn live_api_calls(&self, account: &Account, now: UnixTime) -> i64 {
        self.api_calls.current(account.id, now).unwrap_or_else(|| {
            super::quota::stored_count(account, self.api_calls.default_period(), now)
        })
    }

    /// The account as it is now: from this node's cache, which every change
    /// on any node empties (see `core::cache`), or else from the store.
    pub(crate) async fn cached_account(&self, id: AccountId) -> Result<Arc<Account>> {
        let now = self.now();
        if let Some(account) = self.caches.account(id, now) {
            return Ok(account);
        }
        let seen = self.caches.accounts.generation.now();
        let account = Arc::new(self.account(id).await?);
        self.caches.accounts.put(Arc::clone(&account), now, seen);
        Ok(account)
    }

    /// Sets an account's API-call quota (0: unlimited) and/or its own quota
    /// period (`Some(None)`: the deployment's default), together; applies at
    /// once here. The count of the period containing now is what its quota
    /// limits.
    pub async fn set_quota(
        &self,
        id: AccountId,
        max: Option<i64>,
        period: Option<Option<QuotaPeriod>>,
        actor: &Actor,
    ) -> Result<()> {
        if let Some(max) = max {
            check_max_api_calls(max)?;
        }
        let account = self.account(id).await?;
        let change = AccountChange {
            max_api_calls: max,
            quota_period: period,
            ..AccountChange::default()
        };
        self.change_account(&account, &change, actor).await
    }

    /// Writes `change` to `account` in one transaction (all of it, or
    /// nothing when a part is refused; a disabling ends the account's
    /// sessions in it), then does what each part calls for: every node's
    /// cached account and the ended sessions dropped, the quota counters
    /// told, and an audit entry for each part.
    pub(crate) async fn change_account(
        &self,
        account: &Account,
        change: &AccountChange,
        actor: &Actor,
    ) -> Result<()> {
        let id = account.id;
        let Some(ended) = self.store.change_account(id, change, self.now()).await? else {
            return Err(Error::NotFound("account"));
        };
        // Made active from locked: an unlock. Told by the status read
        // before the write, which a lockout committed meanwhile (on any
        // node) outdates; the store lifts that one too, so the budgets go
        // whenever the account is made active.
        let unlocked =
            account.status == AccountStatus::Locked && change.status == Some(AccountStatus::Active);
        // Recorded first: the rest waits on other servers (notices, Redis).
        let audit = |event: &str, detail: Option<String>| {
            self.audit_change(actor, event, account, detail);
        };
        match change.status {
            Some(AccountStatus::Disabled) => audit("account_disabled", None),
            Some(AccountStatus::Active) if unlocked => audit("unlock", None),
            Some(AccountStatus::Active) => audit("account_enabled", None),
            Some(AccountStatus::Locked) | None => {}
        }
        if let Some(roles) = &change.roles {
            audit(
                "roles_changed",
                Some(format!(
                    "roles {} (were {})",
                    roles.join(","),
                    account.roles.join(",")
                )),
            );
        }
        let contact: Vec<&str> = [
            change.contact.email.is_some().then_some("email"),
            change.contact.mobile.is_some().then_some("mobile"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !contact.is_empty() {
            audit("contact_changed", Some(contact.join(",")));
        }
        if let Some(profile) = &change.profile {
            let mut parts: Vec<String> = [
                profile
                    .display_name
                    .is_some()
                    .then(|| "display_name".to_owned()),
                profile
                    .avatar_url
                    .is_some()
                    .then(|| "avatar_url".to_owned()),
            ]
            .into_iter()
            .flatten()
            .collect();
            if !profile.attributes.is_empty() {
                let keys: Vec<&str> = profile.attributes.keys().map(String::as_str).collect();
                parts.push(format!("attributes {}", keys.join(",")));
            }
            audit("profile_set", Some(parts.join(", ")));
        }
        if let Some(max) = change.max_api_calls {
            audit("quota_set", Some(format!("max_api_calls {max}")));
        }
        if let Some(period) = change.quota_period {
            let shown = period.map_or("default", QuotaPeriod::as_str);
            audit("quota_period_set", Some(format!("period {shown}")));
        }
        self.account_changed(id).await;
        self.sessions_ended(&ended).await;
        if let Some(max) = change.max_api_calls {
            self.api_calls.set_max(id, max);
        }
        if let Some(period) = change.quota_period {
            self.api_calls.set_period(id, period);
        }
        if change.status == Some(AccountStatus::Active) {
            self.forget_failure_budgets(id).await;
        }
        Ok(())
    }

    /// Sets or removes profile attributes of any account (operator action).
    pub async fn set_profile_attributes(
        &self,
        id: AccountId,
        attributes: BTreeMap<String, Option<String>>,
        actor: &Actor,
    ) -> Result<Account> {
        let principal = Principal {
            account_id: id,
            session_id: String::new(),
            client_id: None,
        };
        let change = ProfileChange {
            attributes,
            ..ProfileChange::default()
        };
        let keys: Vec<String> = change.attributes.keys().cloned().collect();
        let account = self.update_profile(&principal, change).await?;
        self.audit_change(
            actor,
            "profile_set",
            &account,
            Some(format!("attributes {}", keys.join(","))),
        );
        Ok(account)
    }

    /// Creates an account.
    pub async fn create_account(&self, spec: AccountSpec, actor: &Actor) -> Result<Account> {
        self.create_account_with(spec, BTreeMap::new(), None, actor)
            .await
    }

    /// Creates an account with profile attributes (checked by the caller)
    /// and its own quota period, in one write.
    pub(crate) async fn create_account_with(
        &self,
        spec: AccountSpec,
        profile: BTreeMap<String, String>,
        quota_period: Option<QuotaPeriod>,
        actor: &Actor,
    ) -> Result<Account> {
        let roles = if spec.roles.is_empty() {
            vec![DEFAULT_ROLE.to_owned()]
        } else {
            self.known_role_names(&spec.roles).await?
        };
        check_max_api_calls(spec.max_api_calls)?;
        let display_name = spec.display_name.unwrap_or_default();
        check_display_name(&display_name)?;
        let context: Vec<&str> = [
            Some(spec.username.as_str()),
            spec.email.as_ref().map(|e| e.as_str()),
        ]
        .into_iter()
        .flatten()
        .collect();
        self.check_password_policy(&spec.password, &context)?;
        let verifiers = self.verifiers_for(&spec.password).await?;
        let new = NewAccount {
            username: spec.username.as_str().to_owned(),
            username_key: spec.username.key().to_owned(),
            email: spec.email.as_ref().map(|e| e.as_str().to_owned()),
            email_key: spec.email.as_ref().map(|e| e.key().to_owned()),
            mobile: spec.mobile.as_ref().map(|m| m.as_str().to_owned()),
            display_name,
            verifiers,
            roles,
            max_api_calls: spec.max_api_calls,
            quota_period,
            profile,
            created_at: self.now(),
        };
        let account = self.store.create_account(new).await?;
        self.audit_change(
            actor,
            "account_created",
            &account,
            Some(format!("roles {}", account.roles.join(","))),
        );
        if !account.profile.is_empty() {
            let keys: Vec<&str> = account.profile.keys().map(String::as_str).collect();
            let detail = format!("attributes {}", keys.join(","));
            self.audit_change(actor, "profile_set", &account, Some(detail));
        }
        if let Some(period) = account.quota_period {
            let detail = format!("period {}", period.as_str());
            self.audit_change(actor, "quota_period_set", &account, Some(detail));
        }
        Ok(account)
    }

    /// Applies the common-password check when it is configured on.
    fn check_password_policy(&self, password: &Password, context: &[&str]) -> Result<()> {
        if self.settings.abuse.refuse_common_passwords {
            check_not_common(password, context)?;
        }
        Ok(())
    }

    /// Records an administrative change to an account: an operator's entry
    /// names the account; an administrator's names the administrator (and
    /// the address), with the account in the detail.
    pub(crate) fn audit_change(
        &self,
        actor: &Actor,
        event: &str,
        account: &Account,
        detail: Option<String>,
    ) {
        let mut entry = match actor {
            Actor::Operator => {
                let mut entry = actor.event(event).account(account);
                entry.detail = detail;
                entry
            }
            Actor::Admin { .. } => {
                let target = format!("account {} ({})", account.id, account.username);
                actor.event(event).detail(match detail {
                    Some(detail) => format!("{target}: {detail}"),
                    None => target,
                })
            }
        };
        entry.target_id = Some(account.id);
        self.audit.record(entry);
    }

    /// Unlocks an account locked by brute-force protection and clears its
    /// failure budget.
    pub async fn unlock(&self, id: AccountId, actor: &Actor) -> Result<()> {
        let account = self.account(id).await?;
        if account.status == AccountStatus::Disabled {
            return Err(Error::invalid(
                "status",
                "the account is disabled, not locked; enable it instead",
            ));
        }
        // Only if not disabled meanwhile (by another administrator, on any
        // node): an unlock must never enable an account.
        if !self.store.set_locked(id, false, self.now()).await? {
            return Err(match self.store.get_account(id).await? {
                None => Error::NotFound("account"),
                Some(_) => Error::invalid(
                    "status",
                    "the account is disabled, not locked; enable it instead",
                ),
            });
        }
        self.audit_change(actor, "unlock", &account, None);
        self.account_changed(id).await;
        self.forget_failure_budgets(id).await;
        Ok(())
    }

    /// After an unlock: the shared failure budgets are cleared; what other
    /// nodes counted on their own (no Redis, or Redis away) they forget on
    /// a notice. A budget that cannot be cleared (Redis away) refills by
    /// itself: the unlock stands, and throttling fails open.
    pub(crate) async fn forget_failure_budgets(&self, id: AccountId) {
        for key in unlocked_budgets(id) {
            if let Err(error) = self.limiter.clear(&key).await {
                tracing::warn!(account = id, %error, "unlocked, but a failure budget was not cleared");
            }
        }
        self.publish(&Notice::AccountUnlocked(id)).await;
    }

    /// Finds an account by username (folded). A name with a control
    /// character is nobody's (usernames cannot hold one), and is not sent
    /// to the database (PostgreSQL refuses a NUL in text).
    pub async fn find_by_username(&self, username: &str) -> Result<Account> {
        if username.chars().any(char::is_control) {
            return Err(Error::NotFound("account"));
        }
        self.store
            .find_account_by_username(&Username::lookup_key(username))
            .await?
            .ok_or(Error::NotFound("account"))
    }

    /// Reads an account by id.
    pub async fn account(&self, id: AccountId) -> Result<Account> {
        self.store
            .get_account(id)
            .await?
            .ok_or(Error::NotFound("account"))
    }

    /// Lists accounts in id order.
    pub async fn list_accounts(&self, after_id: AccountId, limit: u32) -> Result<Vec<Account>> {
        Ok(self.store.list_accounts(after_id, limit).await?)
    }

    /// Sets a new password for an account (operator action) and ends all its sessions.
    pub async fn reset_password(
        &self,
        id: AccountId,
        password: &Password,
        actor: &Actor,
    ) -> Result<()> {
        let account = self.account(id).await?;
        self.check_password_policy(password, &password_context(&account))?;
        let verifiers = self.verifiers_for(password).await?;
        // Every session ends and every client is forgotten: a reset is how
        // an account is taken back from whoever holds it.
        let Some(ended) = self
            .store
            .set_password_ending_sessions(
                id,
                &verifiers,
                None,
                &Kept::default(),
                "password_reset",
                self.now(),
            )
            .await?
        else {
            return Err(Error::NotFound("account"));
        };
        self.audit_change(actor, "password_reset", &account, None);
        self.account_changed(id).await;
        self.sessions_ended(&ended).await;
        if account.status == AccountStatus::Locked {
            self.audit_change(actor, "unlock", &account, Some(BY_NEW_PASSWORD.into()));
        }
        // Whatever the status read before the write said: the store lifts a
        // lock found at the write, and guesses of the old password count
        // for nothing now.
        self.forget_failure_budgets(id).await;
        Ok(())
    }

    /// Enables or disables an account; disabling ends all its sessions.
    pub async fn set_enabled(&self, id: AccountId, enabled: bool, actor: &Actor) -> Result<()> {
        let status = if enabled {
            AccountStatus::Active
        } else {
            AccountStatus::Disabled
        };
        let account = self.account(id).await?;
        let change = AccountChange {
            status: Some(status),
            ..AccountChange::default()
        };
        self.change_account(&account, &change, actor).await
    }

    /// Deletes an account with its sessions.
    pub async fn delete_account(&self, id: AccountId, actor: &Actor) -> Result<()> {
        let account = self.account(id).await?;
        // Its live sessions, to announce once they are gone: the delete may
        // yet be refused (the last administrator), and must then end nothing.
        let live: Vec<_> = self
            .store
            .list_live_sessions(id, self.now())
            .await?
            .into_iter()
            .map(|s| s.id)
            .collect();
        let deleted = self.store.delete_account(id).await?;
        // Announced once committed, so no node can cache them again afterwards.
        self.sessions_ended(&live).await;
        self.account_changed(id).await;
        if !deleted {
            return Err(Error::NotFound("account"));
        }
        self.audit_change(actor, "account_deleted", &account, None);
        Ok(())
    }

    /// Whether any account holds the `admin` permission, through the
    /// built-in administrator role or any other.
    pub async fn has_administrator(&self) -> Result<bool> {
        for role in self.store.list_roles().await? {
            if role.permissions.iter().any(|p| p == ADMIN_PERMISSION)
                && self.store.count_accounts_with_role(&role.name).await? > 0
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The caller's account.
    pub async fn me(&self, principal: &Principal) -> Result<Account> {
        self.account_with_usage(principal.account_id)
            .await
            .map_err(|e| match e {
                Error::NotFound(_) => Error::Unauthenticated,
                other => other,
            })
    }

    /// Changes the caller's display name, avatar and profile attributes;
    /// those of `profile.protected` only an administrator or operator sets.
    pub async fn update_my_profile(
        &self,
        principal: &Principal,
        change: ProfileChange,
    ) -> Result<Account> {
        // Applications may read these as authority (a group, a level).
        if let Some(name) = change
            .attributes
            .keys()
            .find(|name| self.settings.protected_profile.binary_search(name).is_ok())
        {
            return Err(Error::invalid(
                "profile",
                format!("{name} is set by an administrator"),
            ));
        }
        self.update_profile(principal, change).await
    }

    /// Changes an account's display name, avatar and profile attributes.
    async fn update_profile(
        &self,
        principal: &Principal,
        change: ProfileChange,
    ) -> Result<Account> {
        if let Some(name) = &change.display_name {
            check_display_name(name)?;
        }
        if let Some(url) = &change.avatar_url {
            check_avatar_url(url)?;
        }
        let current = self.me(principal).await?;
        self.check_profile_change(&current.profile, &change.attributes)?;
        let patch = ProfilePatch {
            display_name: change.display_name,
            avatar_url: change.avatar_url,
            attributes: change.attributes,
        };
        self.store
            .update_profile(principal.account_id, &patch, self.now())
            .await?;
        self.account_changed(principal.account_id).await;
        self.me(principal).await
    }

    /// Checks attribute changes to `account`: names, values, and how many
    /// attributes it would hold.
    pub(crate) fn check_profile_change(
        &self,
        current: &BTreeMap<String, String>,
        attributes: &BTreeMap<String, Option<String>>,
    ) -> Result<()> {
        let mut resulting = current
            .keys()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>();
        for (name, value) in attributes {
            check_attribute_name(name)?;
            match value {
                Some(v) => {
                    check_attribute_value(v)?;
                    resulting.insert(name.clone())
                }
                None => resulting.remove(name),
            };
        }
        if resulting.len() > MAX_ATTRIBUTES {
            return Err(Error::invalid(
                "profile",
                format!("at most {MAX_ATTRIBUTES} attributes"),
            ));
        }
        Ok(())
    }

    /// Changes the caller's password after checking the current one, and ends
    /// every other session of the account.
    pub async fn change_my_password(
        &self,
        principal: &Principal,
        current: &Password,
        new: &Password,
        client: &ClientInfo,
    ) -> Result<()> {
        // From the store, not the node's cache: the hash checked here is the
        // one the change is conditional on, and another node may have
        // upgraded it (at a login) without telling this one.
        let account = self
            .store
            .get_account(principal.account_id)
            .await?
            .ok_or(Error::Unauthenticated)?;
        let entry = audit::event("password_change", "success", "native")
            .account(&account)
            .client(client);
        // The new password is judged first: a refusal of it must not tell
        // that the current one was right.
        self.check_password_policy(new, &password_context(&account))?;
        // A wrong current password is a guess like a login's, by whoever
        // holds the token: it spends a budget of the account's own, under
        // the account rule, charged before the hash. Not the logins' one:
        // strangers' failed logins must not keep the owner from changing
        // the password.
        let budget = password_change_key(account.id);
        let rule = &self.settings.abuse.account_rule;
        let charge = match self.charge_budget(&budget, rule, self.now()).await {
            Ok(charge) => charge,
            Err(error) => {
                self.audit_cheap_refusal(entry.with_outcome("throttled"), client)
                    .await;
                return Err(error);
            }
        };
        let checked = self
            .hasher
            .verify(current, &account.verifiers.password_hash)
            .await;
        if !checked.as_ref().is_ok_and(|checked| !checked.matches) {
            self.refund_budget(&budget, rule, charge).await;
        }
        if !checked?.matches {
            self.audit
                .record(entry.with_outcome("wrong_current_password"));
            return Err(Error::invalid(
                "current_password",
                "is not the account's password",
            ));
        }
        let verifiers = self.verifiers_for(new).await?;
        // Only over the password just checked: if it was reset meanwhile (an
        // administrator, on any node), the one checked is no longer the
        // account's password.
        let replacing = Some(account.verifiers.password_hash.as_str());
        // The session making the change goes on, and its client is the one
        // the account still knows (its device token if the account knew
        // it, its address): whoever else signed in with the old password,
        // a thief perhaps, is a stranger to the account's budget and
        // lockout from now on, and the owner is not.
        let device = match &client.device_token {
            Some(token) => {
                let key = super::guard::device_key(token);
                self.store
                    .is_known_client(account.id, ClientKind::Device, &key)
                    .await?
                    .then_some(key)
            }
            None => None,
        };
        let keep = Kept {
            session: Some(principal.session_id.clone()),
            device,
            address: client.ip.map(|ip| ip.to_string()),
        };
        let Some(ended) = self
            .store
            .set_password_ending_sessions(
                account.id,
                &verifiers,
                replacing,
                &keep,
                "password_changed",
                self.now(),
            )
            .await?
        else {
            self.account_changed(account.id).await;
            self.audit
                .record(entry.with_outcome("wrong_current_password"));
            return Err(Error::invalid(
                "current_password",
                "is not the account's password",
            ));
        };
        self.audit.record(entry);
        self.account_changed(account.id).await;
        self.sessions_ended(&ended).await;
        if account.status == AccountStatus::Locked {
            let mut unlock = audit::event("unlock", "success", "native")
                .account(&account)
                .client(client)
                .detail(BY_NEW_PASSWORD);
            unlock.target_id = Some(account.id);
            self.audit.record(unlock);
        }
        // As after a reset: whatever the status read said.
        self.forget_failure_budgets(account.id).await;
        Ok(())
    }
}

/// The limiter key of an account's password changes.
/// The failure budgets an unlock clears: the account's sign-in budget and
/// its password-change budget.
pub(super) fn unlocked_budgets(id: AccountId) -> [String; 2] {
    [account_key_of(id), password_change_key(id)]
}

fn password_change_key(id: AccountId) -> String {
    format!("password-change:{id}")
}

/// The account's own names, which a password must not simply be.
fn password_context(account: &Account) -> Vec<&str> {
    std::iter::once(account.username.as_str())
        .chain(account.email.as_deref())
        .collect()
}
