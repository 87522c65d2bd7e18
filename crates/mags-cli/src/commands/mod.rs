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

/// Prints `value` as pretty JSON.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
