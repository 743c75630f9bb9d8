//! Roles and permissions: the roles there are, what each allows, and which
//! ones an account holds. One implementation for the CLI and the admin API.
//!
//! A role's permissions reach an account's next token (the `permissions`
//! claim) and, at once, everything that reads live state: `/v1/me`,
//! `/v1/authz`, the admin API's own permission check. Changes that would
//! leave no administrator are refused by the store, atomically.

use super::ClientInfo;
use super::Core;
use super::accounts::{ADMIN_ROLE, DEFAULT_ROLE};
use super::audit::{self, AuditEventExt};
use super::domain::Name;
use super::error::{Error, Result};
use crate::store::{Account, AccountChange, AccountId, AuditEvent, Role, RoleChange};

/// The roles every deployment has; they can be changed but not deleted.
pub const BUILT_IN_ROLES: [&str; 2] = [ADMIN_ROLE, DEFAULT_ROLE];
/// Longest role description, in characters.
const MAX_DESCRIPTION: usize = 256;
/// Most permissions one role may hold.
const MAX_PERMISSIONS: usize = 64;
/// Most roles one account may hold.
const MAX_ROLES: usize = 32;

/// Who makes an administrative change, for the audit log.
#[derive(Debug, Clone)]
pub enum Actor {
    /// An operator on the server's host (the CLI).
    Operator,
    /// An administrator through the admin API.
    Admin {
        /// The administrator's account.
        account_id: AccountId,
        /// Its username.
        username: String,
        /// Where the request came from.
        client: ClientInfo,
    },
}

impl Actor {
    /// An audit entry for `event` done by this actor (who is named in it).
    pub(crate) fn event(&self, event: &str) -> AuditEvent {
        match self {
            Actor::Operator => audit::event(event, "success", super::accounts::OPERATOR),
            Actor::Admin {
                account_id,
                username,
                client,
            } => {
                let mut entry = audit::event(event, "success", "admin_api").client(client);
                entry.account_id = Some(*account_id);
                entry.username = Some(username.clone());
                entry
            }
        }
    }
}

/// Checks a list of permission (or role) names, sorted and without repeats.
fn names(list: &[String], field: &'static str, most: usize) -> Result<Vec<String>> {
    if list.len() > most {
        return Err(Error::invalid(field, format!("at most {most} names")));
    }
    let mut names = list
        .iter()
        .map(|n| Name::parse(n, field).map(|n| n.as_str().to_owned()))
        .collect::<Result<Vec<_>>>()?;
    names.sort();
    names.dedup();
    Ok(names)
}

fn description(text: &str) -> Result<String> {
    if text.chars().count() > MAX_DESCRIPTION || text.chars().any(char::is_control) {
        return Err(Error::invalid(
            "description",
            format!("must be at most {MAX_DESCRIPTION} characters without control characters"),
        ));
    }
    Ok(text.to_owned())
}

/// A role as it would be defined: its name and permissions valid names,
/// the permissions sorted, each once; a bounded description.
pub(crate) fn check_role(
    name: &str,
    description_text: &str,
    permissions: &[String],
) -> Result<Role> {
    Ok(Role {
        name: Name::parse(name, "name")?.as_str().to_owned(),
        description: description(description_text)?,
        permissions: names(permissions, "permissions", MAX_PERMISSIONS)?,
    })
}

impl Core {
    /// Every role, by name.
    pub async fn roles(&self) -> Result<Vec<Role>> {
        Ok(self.store.list_roles().await?)
    }

    /// One role.
    pub async fn role(&self, name: &str) -> Result<Role> {
        self.roles()
            .await?
            .into_iter()
            .find(|r| r.name == name)
            .ok_or(Error::NotFound("role"))
    }

    /// Defines a role.
    pub async fn create_role(
        &self,
        name: &str,
        description_text: Option<&str>,
        permissions: &[String],
        actor: &Actor,
    ) -> Result<Role> {
        let role = check_role(name, description_text.unwrap_or(""), permissions)?;
        self.store.create_role(&role).await?;
        self.audit_role(actor, "role_created", &role);
        Ok(role)
    }

    /// Changes a role's description and/or permissions.
    pub async fn update_role(
        &self,
        name: &str,
        description_text: Option<&str>,
        permissions: Option<&[String]>,
        actor: &Actor,
    ) -> Result<Role> {
        let change = RoleChange {
            description: description_text.map(description).transpose()?,
            permissions: permissions
                .map(|p| names(p, "permissions", MAX_PERMISSIONS))
                .transpose()?,
            ..RoleChange::default()
        };
        self.change_role(name, &change, actor).await
    }

    /// Writes a checked change to a role, then tells every node and audits it.
    pub(super) async fn change_role(
        &self,
        name: &str,
        change: &RoleChange,
        actor: &Actor,
    ) -> Result<Role> {
        if !self.store.update_role(name, change).await? {
            return Err(Error::NotFound("role"));
        }
        let permissions_changed =
            change.permissions.is_some() || !change.grant.is_empty() || !change.revoke.is_empty();
        if permissions_changed {
            self.roles_changed().await;
        }
        match self.role(name).await {
            Ok(role) => {
                self.audit_role(actor, "role_updated", &role);
                Ok(role)
            }
            // Written, but not to be read back (deleted since by another
            // administrator, or the database failed): the change as asked
            // is what the audit log keeps.
            Err(error) => {
                self.audit.record(
                    actor
                        .event("role_updated")
                        .detail(format!("role {name}: {}", asked(change))),
                );
                Err(error)
            }
        }
    }

    /// Records a role as it now is.
    pub(super) fn audit_role(&self, actor: &Actor, event: &str, role: &Role) {
        self.audit.record(actor.event(event).detail(format!(
            "role {}: {}",
            role.name,
            role.permissions.join(",")
        )));
    }

    /// Grants a role one more permission.
    pub async fn grant_permission(
        &self,
        role: &str,
        permission: &str,
        actor: &Actor,
    ) -> Result<Role> {
        let mut permissions = self.role(role).await?.permissions;
        let permission = Name::parse(permission, "permission")?.as_str().to_owned();
        permissions.push(permission.clone());
        // The list's bounds, as for a replacement.
        names(&permissions, "permissions", MAX_PERMISSIONS)?;
        let change = RoleChange {
            grant: vec![permission],
            permissions_at_most: Some(MAX_PERMISSIONS),
            ..RoleChange::default()
        };
        self.change_role(role, &change, actor).await
    }

    /// Takes a permission from a role.
    pub async fn revoke_permission(
        &self,
        role: &str,
        permission: &str,
        actor: &Actor,
    ) -> Result<Role> {
        if !self
            .role(role)
            .await?
            .permissions
            .iter()
            .any(|p| p == permission)
        {
            return Err(Error::NotFound("permission"));
        }
        let change = RoleChange {
            revoke: vec![permission.to_owned()],
            ..RoleChange::default()
        };
        self.change_role(role, &change, actor).await
    }

    /// Deletes a role that is not built in; its holders lose it.
    pub async fn delete_role(&self, name: &str, actor: &Actor) -> Result<()> {
        if BUILT_IN_ROLES.contains(&name) {
            return Err(Error::invalid("name", "a built-in role cannot be deleted"));
        }
        if !self.store.delete_role(name).await? {
            return Err(Error::NotFound("role"));
        }
        self.roles_changed().await;
        self.audit
            .record(actor.event("role_deleted").detail(format!("role {name}")));
        Ok(())
    }

    /// Role names as given to an account: well-formed, at most 32, each
    /// once, and every one a role that exists.
    pub(super) async fn known_role_names(&self, roles: &[String]) -> Result<Vec<String>> {
        let roles = names(roles, "roles", MAX_ROLES)?;
        let known = self.store.role_names().await?;
        if let Some(unknown) = roles.iter().find(|r| !known.contains(r)) {
            return Err(Error::invalid(
                "roles",
                format!(
                    "there is no role {unknown:?}; the roles are {}",
                    known.join(", ")
                ),
            ));
        }
        Ok(roles)
    }

    /// Replaces the roles an account holds.
    pub async fn set_account_roles(
        &self,
        id: AccountId,
        roles: &[String],
        actor: &Actor,
    ) -> Result<Account> {
        let roles = self.known_role_names(roles).await?;
        let before = self.account(id).await?;
        let change = AccountChange {
            roles: Some(roles),
            ..AccountChange::default()
        };
        self.change_account(&before, &change, actor).await?;
        self.account(id).await
    }

    /// Gives an account one more role.
    pub async fn grant_role(&self, id: AccountId, role: &str, actor: &Actor) -> Result<Account> {
        self.edit_account_roles(id, actor, |roles| {
            roles.push(role.to_owned());
            Ok(())
        })
        .await
    }

    /// Takes a role from an account.
    pub async fn revoke_role(&self, id: AccountId, role: &str, actor: &Actor) -> Result<Account> {
        self.edit_account_roles(id, actor, |roles| {
            let before = roles.len();
            roles.retain(|r| r != role);
            if roles.len() == before {
                return Err(Error::invalid(
                    "role",
                    format!("the account does not hold {role:?}"),
                ));
            }
            Ok(())
        })
        .await
    }

    /// Changes an account's roles by `edit` of the roles it holds, written
    /// only if it still holds them (a concurrent change, on any node, is
    /// never undone by this one: read again and edited again).
    async fn edit_account_roles(
        &self,
        id: AccountId,
        actor: &Actor,
        edit: impl Fn(&mut Vec<String>) -> Result<()>,
    ) -> Result<Account> {
        for _ in 0..3 {
            let before = self.account(id).await?;
            let mut roles = before.roles.clone();
            edit(&mut roles)?;
            let change = AccountChange {
                roles: Some(self.known_role_names(&roles).await?),
                roles_were: Some(before.roles.clone()),
                ..AccountChange::default()
            };
            match self.change_account(&before, &change, actor).await {
                Err(Error::Conflict("roles_were")) => continue,
                result => result?,
            }
            return self.account(id).await;
        }
        // Changed under it three times running: a retry will do.
        Err(Error::Busy {
            retry_after_secs: 1,
        })
    }
}

/// A role change as asked: its new permissions, or what it grants (`+`)
/// and takes away (`-`).
fn asked(change: &RoleChange) -> String {
    let mut parts: Vec<String> = change.permissions.iter().map(|p| p.join(",")).collect();
    parts.extend(change.grant.iter().map(|p| format!("+{p}")));
    parts.extend(change.revoke.iter().map(|p| format!("-{p}")));
    parts.join(",")
}
