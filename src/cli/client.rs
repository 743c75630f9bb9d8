//! `sesame client`: the OAuth 2.0 / OpenID Connect clients (applications)
//! allowed to sign users in through Sesame.

use std::io::{BufRead, Write};
use std::sync::Arc;

use anyhow::Context;
use clap::Subcommand;
use serde_json::json;

use crate::app::open_core;
use crate::config::Config;
use crate::core::Core;
use crate::core::clients::ClientSpec;
use crate::core::clock::SystemClock;
use crate::core::roles::Actor;
use crate::http::views::rfc3339;
use crate::store::OAuthClient;

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Register a client. A confidential client's secret is generated and
    /// printed once (or read from stdin with --secret-stdin); only its hash
    /// is stored.
    Add {
        /// The client_id: 1 to 64 of A-Z a-z 0-9 . _ -
        name: String,
        /// Read the secret (at least 32 characters) from stdin.
        #[arg(long, conflicts_with = "public")]
        secret_stdin: bool,
        /// A public client (browser or native app): no secret, PKCE only.
        #[arg(long)]
        public: bool,
        /// A redirect URI, matched exactly; repeat for several.
        #[arg(long = "redirect-uri", value_name = "URI")]
        redirect_uris: Vec<String>,
        /// Where RP-initiated logout may return to; repeat for several.
        #[arg(long = "post-logout-redirect-uri", value_name = "URI")]
        post_logout_redirect_uris: Vec<String>,
        /// A grant: authorization_code, refresh_token, password,
        /// client_credentials [default: authorization_code and refresh_token].
        #[arg(long = "grant", value_name = "GRANT")]
        grants: Vec<String>,
        /// A scope the client may ask for: openid, profile, email, phone
        /// [default: all].
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
    },
    /// List clients (or JSON lines with --json).
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Show one client as JSON.
    Show {
        /// The client_id.
        name: String,
    },
    /// Remove a client: its refresh tokens stop working at once.
    Remove {
        /// The client_id.
        name: String,
    },
    /// Replace a confidential client's secret: a new random one is printed
    /// once, or read from stdin with --secret-stdin.
    SetSecret {
        /// The client_id.
        name: String,
        /// Read the secret from stdin.
        #[arg(long)]
        secret_stdin: bool,
    },
}

pub async fn run(config: Config, command: ClientCommand) -> anyhow::Result<()> {
    super::init_logging("warn");
    let core = open_core(&config, Arc::new(SystemClock)).await?;
    let result = execute(&core, command).await;
    // Operator actions are audited; written before the process exits.
    super::audited(&core, result).await
}

fn read_secret() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the secret from stdin")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

async fn execute(core: &Core, command: ClientCommand) -> anyhow::Result<()> {
    let operator = Actor::Operator;
    match command {
        ClientCommand::Add {
            name,
            secret_stdin,
            public,
            redirect_uris,
            post_logout_redirect_uris,
            grants,
            scopes,
        } => {
            let secret = if secret_stdin {
                Some(read_secret()?)
            } else {
                None
            };
            let (client, generated) = core
                .register_client(
                    ClientSpec {
                        id: name,
                        public,
                        secret,
                        redirect_uris,
                        post_logout_redirect_uris,
                        grants,
                        scopes,
                    },
                    &operator,
                )
                .await?;
            println!("client_id: {}", client.id);
            if let Some(secret) = generated {
                println!("client_secret: {secret}");
                eprintln!("(the secret is shown only now; Sesame keeps only its hash)");
            }
        }
        ClientCommand::List { json } => {
            let clients = core.clients().await?;
            let mut out = std::io::stdout().lock();
            if json {
                for client in &clients {
                    writeln!(out, "{}", client_json(client))?;
                }
            } else {
                writeln!(
                    out,
                    "{:<24} {:<12} {:<44} REDIRECT URIS",
                    "CLIENT", "TYPE", "GRANTS"
                )?;
                for client in &clients {
                    writeln!(
                        out,
                        "{:<24} {:<12} {:<44} {}",
                        client.id,
                        kind(client),
                        client.grants.join(","),
                        client.redirect_uris.join(" ")
                    )?;
                }
            }
        }
        ClientCommand::Show { name } => {
            let client = core.client(&name).await?;
            println!("{:#}", client_json(&client));
        }
        ClientCommand::Remove { name } => {
            core.remove_client(&name, &operator).await?;
            println!("removed client {name}");
        }
        ClientCommand::SetSecret { name, secret_stdin } => {
            let given = if secret_stdin {
                Some(read_secret()?)
            } else {
                None
            };
            let printed = given.is_none();
            let secret = core.set_client_secret(&name, given, &operator).await?;
            if printed {
                println!("client_secret: {secret}");
                eprintln!("(the secret is shown only now; Sesame keeps only its hash)");
            } else {
                println!("secret of {name} replaced");
            }
        }
    }
    Ok(())
}

fn kind(client: &OAuthClient) -> &'static str {
    if client.secret_hash.is_some() {
        "confidential"
    } else {
        "public"
    }
}

fn client_json(client: &OAuthClient) -> serde_json::Value {
    json!({
        "client_id": client.id,
        "type": kind(client),
        "redirect_uris": client.redirect_uris,
        "post_logout_redirect_uris": client.post_logout_redirect_uris,
        "grants": client.grants,
        "scopes": client.scopes,
        "created_at": rfc3339(client.created_at),
    })
}
