//! `sesame user …`: add, list, show, set-password, disable, enable, delete.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::app::open_core;
use crate::clock::rfc3339;
use crate::config::Config;
use crate::core::Core;
use crate::core::accounts::AccountSpec;
use crate::core::clock::SystemClock;
use crate::core::domain::{Email, Mobile, Password, Username};
use crate::core::roles::Actor;
use crate::store::Account;

/// Account commands.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account.
    Add(AddArgs),
    /// List accounts as a table (or JSON lines with --json).
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Instead: how many accounts still hold a password hash imported
        /// from another system, by format.
        #[arg(long, conflicts_with = "json")]
        legacy: bool,
    },
    /// Force a new password on accounts still holding an imported hash set
    /// longer ago than the given age (e.g. 180d): their hash stops matching
    /// and their sessions end.
    ExpireLegacy {
        /// Age: a number of days (180d), hours (12h) or seconds (60s).
        #[arg(long, value_name = "AGE", value_parser = parse_age)]
        older_than: i64,
    },
    /// Show one account.
    Show {
        /// Username.
        name: String,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set an account's password; ends all its sessions.
    SetPassword {
        /// Username.
        name: String,
        /// Read the password from one line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable an account; ends all its sessions.
    Disable {
        /// Username.
        name: String,
    },
    /// Unlock an account locked by brute-force protection.
    Unlock {
        /// Username.
        name: String,
    },
    /// Enable a disabled account.
    Enable {
        /// Username.
        name: String,
    },
    /// Delete an account and its sessions.
    Delete {
        /// Username.
        name: String,
    },
    /// Set the API-call quota (0: unlimited).
    SetQuota {
        /// Username.
        name: String,
        /// The new quota.
        max_api_calls: i64,
        /// After how long the count starts again from zero: none, day or
        /// month (UTC), or default (the deployment's `quotas.period`).
        #[arg(long, value_name = "PERIOD")]
        period: Option<String>,
    },
    /// Start an account's API-call count again from zero.
    ResetQuota {
        /// Username.
        name: String,
    },
    /// Give an account a role (see `sesame role list`).
    GrantRole {
        /// Username.
        name: String,
        /// Role name.
        role: String,
    },
    /// Take a role from an account; its next token no longer carries it,
    /// and `/v1/authz` and the admin API stop honouring it at once.
    RevokeRole {
        /// Username.
        name: String,
        /// Role name.
        role: String,
    },
    /// Set or remove profile attributes (the contracts' extra fields such as
    /// gender, birthday, nickname, head_pic, group_id).
    SetProfile {
        /// Username.
        name: String,
        /// Attributes to set, as KEY=VALUE.
        #[arg(value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Attributes to remove.
        #[arg(long = "unset", value_name = "KEY")]
        unset: Vec<String>,
    },
}

/// Options of `sesame user add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// Username (unique, case-insensitive).
    #[arg(long)]
    username: String,
    /// Email address (unique).
    #[arg(long)]
    email: Option<String>,
    /// Mobile number (unique).
    #[arg(long)]
    mobile: Option<String>,
    /// Display name.
    #[arg(long)]
    display_name: Option<String>,
    /// Role to grant; repeat for several [default: user].
    #[arg(long = "role", value_name = "ROLE")]
    roles: Vec<String>,
    /// API-call quota; 0 means unlimited.
    #[arg(long, default_value_t = 0)]
    max_api_calls: i64,
    /// Read the password from one line of standard input.
    #[arg(long)]
    password_stdin: bool,
}

pub async fn run(config: Config, command: UserCommand) -> anyhow::Result<()> {
    super::init_logging("warn");
    let core = open_core(&config, Arc::new(SystemClock)).await?;
    let result = execute(&core, command).await;
    // Operator actions are audited; written before the process exits.
    super::audited(&core, result).await
}

async fn execute(core: &Core, command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Add(args) => add(core, args).await,
        UserCommand::List { legacy: true, .. } => {
            let counts = core.legacy_hashes().await?;
            if counts.is_empty() {
                println!("no account holds an imported password hash");
            }
            for (format, n) in counts {
                println!("{format:<28} {n}");
            }
            Ok(())
        }
        UserCommand::List { json, .. } => list(core, json).await,
        UserCommand::ExpireLegacy { older_than } => {
            let n = core.expire_legacy(older_than, &Actor::Operator).await?;
            println!(
                "{n} account(s) with an imported hash older than {older_than} s now need a new password"
            );
            Ok(())
        }
        UserCommand::Show { name, json } => show(core, &name, json).await,
        UserCommand::SetPassword {
            name,
            password_stdin,
        } => {
            let account = core.find_by_username(&name).await?;
            let password = read_new_password(password_stdin)?;
            core.reset_password(account.id, &password, &Actor::Operator)
                .await?;
            println!(
                "password of {} changed; its sessions were ended",
                account.username
            );
            Ok(())
        }
        UserCommand::Disable { name } => {
            let account = core.find_by_username(&name).await?;
            core.set_enabled(account.id, false, &Actor::Operator)
                .await?;
            println!("{} disabled; its sessions were ended", account.username);
            Ok(())
        }
        UserCommand::Unlock { name } => {
            let account = core.find_by_username(&name).await?;
            core.unlock(account.id, &Actor::Operator).await?;
            println!("{} unlocked", account.username);
            Ok(())
        }
        UserCommand::Enable { name } => {
            let account = core.find_by_username(&name).await?;
            core.set_enabled(account.id, true, &Actor::Operator).await?;
            println!("{} enabled", account.username);
            Ok(())
        }
        UserCommand::SetQuota {
            name,
            max_api_calls,
            period,
        } => {
            let account = core.find_by_username(&name).await?;
            let period = match period.as_deref() {
                None => None,
                Some("default") => Some(None),
                Some(name) => Some(Some(crate::core::admin::quota_period(name)?)),
            };
            core.set_quota(account.id, Some(max_api_calls), period, &Actor::Operator)
                .await?;
            println!("quota of {} set to {max_api_calls}", account.username);
            Ok(())
        }
        UserCommand::SetProfile { name, set, unset } => {
            let account = core.find_by_username(&name).await?;
            let mut attributes = std::collections::BTreeMap::new();
            for pair in set {
                let Some((key, value)) = pair.split_once('=') else {
                    bail!("{pair:?} is not KEY=VALUE");
                };
                attributes.insert(key.to_owned(), Some(value.to_owned()));
            }
            for key in unset {
                attributes.insert(key, None);
            }
            let account = core
                .set_profile_attributes(account.id, attributes, &Actor::Operator)
                .await?;
            println!("{}", serde_json::to_string(&account.profile)?);
            Ok(())
        }
        UserCommand::ResetQuota { name } => {
            let account = core.find_by_username(&name).await?;
            core.reset_quota(account.id, &Actor::Operator).await?;
            println!("API-call count of {} reset to 0", account.username);
            Ok(())
        }
        UserCommand::GrantRole { name, role } => {
            let account = core.find_by_username(&name).await?;
            let account = core.grant_role(account.id, &role, &Actor::Operator).await?;
            println!(
                "{} now holds roles {}",
                account.username,
                account.roles.join(",")
            );
            Ok(())
        }
        UserCommand::RevokeRole { name, role } => {
            let account = core.find_by_username(&name).await?;
            let account = core
                .revoke_role(account.id, &role, &Actor::Operator)
                .await?;
            println!(
                "{} now holds roles {}",
                account.username,
                account.roles.join(",")
            );
            Ok(())
        }
        UserCommand::Delete { name } => {
            let account = core.find_by_username(&name).await?;
            core.delete_account(account.id, &Actor::Operator).await?;
            println!("{} deleted", account.username);
            Ok(())
        }
    }
}

async fn add(core: &Core, args: AddArgs) -> anyhow::Result<()> {
    let username = Username::parse(&args.username)?;
    let email = args.email.as_deref().map(Email::parse).transpose()?;
    let mobile = args.mobile.as_deref().map(Mobile::parse).transpose()?;
    let password = read_new_password(args.password_stdin)?;
    let spec = AccountSpec {
        username,
        email,
        mobile,
        display_name: args.display_name,
        roles: args.roles,
        max_api_calls: args.max_api_calls,
        password,
    };
    let account = core.create_account(spec, &Actor::Operator).await?;
    println!(
        "created {} (id {}, roles {})",
        account.username,
        account.id,
        account.roles.join(",")
    );
    Ok(())
}

/// "180d", "12h", "60s" as seconds.
fn parse_age(text: &str) -> Result<i64, String> {
    let (number, scale) = match text.as_bytes().last() {
        Some(b'd') => (&text[..text.len() - 1], 86_400),
        Some(b'h') => (&text[..text.len() - 1], 3600),
        Some(b's') => (&text[..text.len() - 1], 1),
        _ => return Err("a number followed by d, h or s (e.g. 180d)".into()),
    };
    number
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| "a number followed by d, h or s (e.g. 180d)".into())
}

/// Reads a new password from one stdin line or from two no-echo prompts,
/// and applies the password policy.
fn read_new_password(from_stdin: bool) -> anyhow::Result<Password> {
    let raw = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from stdin")?;
        let line = line.strip_suffix('\n').unwrap_or(&line);
        line.strip_suffix('\r').unwrap_or(line).to_owned()
    } else {
        if !std::io::stdin().is_terminal() {
            bail!("no terminal to prompt for a password; pass it on stdin with --password-stdin");
        }
        let first = rpassword::prompt_password("Password: ").context("cannot read the password")?;
        let second =
            rpassword::prompt_password("Repeat password: ").context("cannot read the password")?;
        if first != second {
            bail!("the two passwords differ");
        }
        first
    };
    Ok(Password::new_password(&raw)?)
}

fn account_json(a: &Account) -> serde_json::Value {
    json!({
        "id": a.id,
        "username": a.username,
        "email": a.email,
        "mobile": a.mobile,
        "display_name": a.display_name,
        "status": a.status.as_str(),
        "roles": a.roles,
        "permissions": a.permissions,
        "profile": a.profile,
        "max_api_calls": a.max_api_calls,
        "api_calls_count": a.api_calls_count,
        "login_count": a.login_count,
        "failed_login_count": a.failed_login_count,
        "created_at": rfc3339(a.created_at),
        "last_login_at": a.last_login_at.map(rfc3339),
    })
}

async fn list(core: &Core, as_json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if !as_json {
        writeln!(
            out,
            "{:<6} {:<24} {:<28} {:<16} {:<9} {:<20} {:>9}",
            "ID", "USERNAME", "EMAIL", "MOBILE", "STATUS", "ROLES", "MAX_CALLS"
        )?;
    }
    let mut after = 0;
    loop {
        let page = core.list_accounts(after, 500).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for a in &page {
            if as_json {
                writeln!(out, "{}", account_json(a))?;
            } else {
                writeln!(
                    out,
                    "{:<6} {:<24} {:<28} {:<16} {:<9} {:<20} {:>9}",
                    a.id,
                    a.username,
                    a.email.as_deref().unwrap_or("-"),
                    a.mobile.as_deref().unwrap_or("-"),
                    a.status.as_str(),
                    a.roles.join(","),
                    a.max_api_calls
                )?;
            }
        }
    }
    Ok(())
}

async fn show(core: &Core, name: &str, as_json: bool) -> anyhow::Result<()> {
    let account = core.find_by_username(name).await?;
    let value = account_json(&account);
    if as_json {
        println!("{value}");
        return Ok(());
    }
    if let Some(fields) = value.as_object() {
        for (key, value) in fields {
            let shown = match value {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => "-".into(),
                other => other.to_string(),
            };
            println!("{key:<19} {shown}");
        }
    }
    Ok(())
}
