//! `sesame audit list`: read the audit log.

use std::io::Write;
use std::sync::Arc;

use clap::Subcommand;

use crate::app::open_core;
use crate::clock::rfc3339;
use crate::config::Config;
use crate::core::clock::SystemClock;

/// Audit-log commands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Show the newest events first.
    List {
        /// Only events by or about this account (its own, and changes made to it).
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        /// How many events.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(config: Config, command: AuditCommand) -> anyhow::Result<()> {
    super::init_logging("warn");
    let core = open_core(&config, Arc::new(SystemClock)).await?;
    let AuditCommand::List { user, limit, json } = command;
    let account_id = match user {
        Some(name) => Some(core.find_by_username(&name).await?.id),
        None => None,
    };
    let events = core
        .audit_events(&crate::store::AuditQuery {
            account_id,
            limit,
            ..Default::default()
        })
        .await?;
    let mut out = std::io::stdout().lock();
    if !json {
        writeln!(
            out,
            "{:<20} {:<16} {:<20} {:<13} {:<16} {:<39} DETAIL",
            "TIME", "EVENT", "OUTCOME", "FACE", "ACCOUNT", "ADDRESS"
        )?;
    }
    for e in &events {
        if json {
            let line = serde_json::to_string(&crate::http::views::AuditView::from(e))?;
            writeln!(out, "{line}")?;
        } else {
            let account = match (&e.username, e.account_id) {
                (Some(name), _) => name.clone(),
                (None, Some(id)) => format!("#{id}"),
                (None, None) => "-".into(),
            };
            writeln!(
                out,
                "{:<20} {:<16} {:<20} {:<13} {:<16} {:<39} {}",
                rfc3339(e.at),
                e.event,
                e.outcome,
                e.face,
                account,
                e.ip.as_deref().unwrap_or("-"),
                e.detail.as_deref().unwrap_or("")
            )?;
        }
    }
    Ok(())
}
