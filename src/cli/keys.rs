//! `sesame keys`: the token signing keys and their rotation.

use std::io::Write;
use std::sync::Arc;

use clap::Subcommand;

use crate::app::open_core;
use crate::config::Config;
use crate::core::clock::SystemClock;
use crate::core::key_rotation::KeyInfo;
use crate::core::keys::KeyState;
use crate::core::roles::Actor;
use crate::http::views::rfc3339;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List the signing keys and where each stands.
    List,
    /// Create a new signing key: every node publishes it at once and signs
    /// with it 6 minutes later (relying parties' cached JWKS have expired
    /// by then), no restart; earlier keys keep verifying until their tokens
    /// expired.
    Rotate {
        /// Sign with it at once (the current key is thought stolen):
        /// relying parties holding a cached JWKS refuse the new tokens
        /// until they fetch it again.
        #[arg(long)]
        now: bool,
    },
}

pub async fn run(config: Config, command: KeysCommand) -> anyhow::Result<()> {
    super::init_logging("warn");
    let core = open_core(&config, Arc::new(SystemClock)).await?;
    let result = match command {
        KeysCommand::List => {
            let keys = core.signing_keys().await?;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{:<18} {:<7} {:<22} {:<9} STATE",
                "KID", "ALG", "CREATED", "AT REST"
            )?;
            for key in &keys {
                writeln!(out, "{}", line(key))?;
            }
            if keys.is_empty() {
                eprintln!(
                    "no signing key yet: the first server start makes one (or `sesame keys rotate`)"
                );
            }
            Ok(())
        }
        KeysCommand::Rotate { now } => {
            let key = core.rotate_keys(&Actor::Operator, now).await?;
            println!("{}", line(&key));
            Ok(())
        }
    };
    super::audited(&core, result).await
}

fn line(key: &KeyInfo) -> String {
    let state = match key.state {
        KeyState::Next(from) => format!("published, signing from {}", rfc3339(from)),
        KeyState::Signing => "signing".to_owned(),
        KeyState::VerifyingUntil(until) => format!("verifying until {}", rfc3339(until)),
        KeyState::Retired => "retired (deleted after as long again)".to_owned(),
    };
    let at_rest = if key.encrypted { "encrypted" } else { "plain" };
    format!(
        "{:<18} {:<7} {:<22} {:<9} {state}",
        key.kid,
        key.algorithm,
        rfc3339(key.created_at),
        at_rest
    )
}
