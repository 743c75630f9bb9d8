//! `sesame openapi`: the OpenAPI 3.1 description of this deployment's
//! routes (as `GET /openapi.json` serves it), for client generators.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::config::Config;

/// Options of `sesame openapi`.
#[derive(Debug, Args)]
pub struct OpenapiArgs {
    /// Write to this file rather than to stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

pub fn run(config: &Config, args: &OpenapiArgs) -> anyhow::Result<()> {
    let server = config
        .public_url
        .clone()
        .unwrap_or_else(|| crate::app::reachable_url(config.listen, config.tls.is_some()));
    let description =
        crate::http::openapi::description(&server, &config.contracts, &config.metrics);
    let mut text = serde_json::to_string_pretty(&description)?;
    text.push('\n');
    match &args.output {
        Some(path) => std::fs::write(path, text)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => std::io::stdout().lock().write_all(text.as_bytes())?,
    }
    Ok(())
}
