//! `sesame role`: the roles there are and what each allows.

use std::io::Write;
use std::sync::Arc;

use clap::Subcommand;
use serde_json::json;

use crate::app::open_core;
use crate::config::Config;
use crate::core::Core;
use crate::core::clock::SystemClock;
use crate::core::roles::Actor;
use crate::store::Role;

#[derive(Debug, Subcommand)]
pub enum RoleCommand {
    /// List roles with their permissions (or JSON lines with --json).
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Define a role.
    Add {
        /// Role name: a-z, 0-9, '_', '.', ':', '-', starting with a letter.
        name: String,
        /// What it is for.
        #[arg(long)]
        description: Option<String>,
        /// A permission it grants; repeat for several.
        #[arg(long = "permission", value_name = "PERMISSION")]
        permissions: Vec<String>,
    },
    /// Delete a role (not a built-in one); its holders lose it.
    Remove {
        /// Role name.
        name: String,
    },
    /// Grant a role a permission.
    Grant {
        /// Role name.
        name: String,
        /// Permission name.
        permission: String,
    },
    /// Take a permission from a role.
    Revoke {
        /// Role name.
        name: String,
        /// Permission name.
        permission: String,
    },
}

pub async fn run(config: Config, command: RoleCommand) -> anyhow::Result<()> {
    super::init_logging("warn");
    let core = open_core(&config, Arc::new(SystemClock)).await?;
    let result = execute(&core, command).await;
    // Operator actions are audited; written before the process exits.
    super::audited(&core, result).await
}

async fn execute(core: &Core, command: RoleCommand) -> anyhow::Result<()> {
    let operator = Actor::Operator;
    match command {
        RoleCommand::List { json } => {
            let roles = core.roles().await?;
            let mut out = std::io::stdout().lock();
            if json {
                for role in &roles {
                    writeln!(out, "{}", role_json(role))?;
                }
            } else {
                writeln!(out, "{:<24} {:<40} DESCRIPTION", "ROLE", "PERMISSIONS")?;
                for role in &roles {
                    writeln!(
                        out,
                        "{:<24} {:<40} {}",
                        role.name,
                        role.permissions.join(","),
                        role.description
                    )?;
                }
            }
        }
        RoleCommand::Add {
            name,
            description,
            permissions,
        } => {
            let role = core
                .create_role(&name, description.as_deref(), &permissions, &operator)
                .await?;
            println!(
                "created role {} ({})",
                role.name,
                role.permissions.join(",")
            );
        }
        RoleCommand::Remove { name } => {
            core.delete_role(&name, &operator).await?;
            println!("removed role {name}");
        }
        RoleCommand::Grant { name, permission } => {
            let role = core.grant_permission(&name, &permission, &operator).await?;
            println!("role {} grants {}", role.name, role.permissions.join(","));
        }
        RoleCommand::Revoke { name, permission } => {
            let role = core
                .revoke_permission(&name, &permission, &operator)
                .await?;
            println!("role {} grants {}", role.name, role.permissions.join(","));
        }
    }
    Ok(())
}

fn role_json(role: &Role) -> serde_json::Value {
    json!({
        "name": role.name,
        "description": role.description,
        "permissions": role.permissions,
    })
}
