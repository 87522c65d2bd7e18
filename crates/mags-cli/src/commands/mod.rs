//! The commands, grouped: [`run`], [`jobs`] (status, logs, list),
//! [`sandbox`] (new, exec, stop, sync, set), [`shell`] (ssh, exec -it), [`auth`] (login, logout,
//! whoami), [`doctor`], [`workspace`] (list, delete, resize), [`url`]
//! (public URLs and aliases), [`browser`] (browser sessions), [`tokens`]
//! (the caller's API tokens).

pub mod auth;
pub mod browser;
pub mod claude;
pub mod cron;
pub mod doctor;
pub mod jobs;
pub mod mcp;
pub mod run;
pub mod sandbox;
pub mod shell;
pub mod tokens;
pub mod url;
pub mod workspace;

use crate::config::{self, Source};
use crate::local::LocalDir;
use anyhow::Context as _;
use mags_client::Client;

/// A client for the configured server, or for the local one (started if
/// needed).
pub async fn connect() -> anyhow::Result<(Client, Source)> {
    match config::configured()? {
        Some((url, token, source)) => {
            let token = token.context("no API token: run `mags login` or set MAGS_API_TOKEN")?;
            Ok((Client::new(&url, &token)?, source))
        }
        None => {
            let (url, token) = LocalDir::new(&config::mags_home()?).ensure_server().await?;
            Ok((Client::new(&url, &token)?, Source::LocalServer))
        }
    }
}

/// What a sandbox may reach, as `mags run` and `mags new` take it. The
/// server's policy always applies; these only narrow it.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EgressFlags {
    /// The sandbox reaches nothing outside itself (no internet, no
    /// registries), whatever the server allows.
    #[arg(long)]
    pub no_internet: bool,
    /// Reach only these destinations: a hostname (also its subdomains) or a
    /// CIDR (repeatable; the server's denials still hold).
    #[arg(
        long = "egress-allow",
        value_name = "HOST|CIDR",
        conflicts_with = "no_internet"
    )]
    pub allow: Vec<String>,
    /// Never reach this hostname or CIDR (repeatable).
    #[arg(long = "egress-deny", value_name = "HOST|CIDR")]
    pub deny: Vec<String>,
}

impl EgressFlags {
    /// Puts these rules in a job request.
    pub fn apply(self, req: &mut mags_api::CreateJobRequest) {
        req.no_internet = self.no_internet;
        req.egress_allow = self.allow;
        req.egress_deny = self.deny;
    }
}

/// Prints `value` as pretty JSON.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
