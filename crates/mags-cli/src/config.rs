//! Where `mags` finds its server and token.
//!
//! Precedence: `MAGS_API_URL` and `MAGS_API_TOKEN` (or `MAGS_TOKEN`) over
//! `~/.mags/config.json`. With no API URL anywhere, `mags` uses a local
//! server it starts itself ([`crate::local`]). `MAGS_HOME` relocates
//! `~/.mags` (for tests).

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// `~/.mags` (or `$MAGS_HOME`).
pub fn mags_home() -> anyhow::Result<PathBuf> {
    if let Some(h) = std::env::var_os("MAGS_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(h));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("HOME is not set (or set MAGS_HOME)")?;
    Ok(Path::new(&home).join(".mags"))
}

/// The contents of `~/.mags/config.json`. Unknown keys are kept.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ConfigFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_token: Option<String>,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

impl ConfigFile {
    fn path() -> anyhow::Result<PathBuf> {
        Ok(mags_home()?.join("config.json"))
    }

    /// Reads the config file (empty if there is none).
    pub fn load() -> anyhow::Result<ConfigFile> {
        let path = Self::path()?;
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not valid JSON", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ConfigFile::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes the config file with mode 0600 (its directory 0700).
    pub fn save(&self) -> anyhow::Result<PathBuf> {
        let path = Self::path()?;
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let tmp = path.with_extension("json.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        let json = serde_json::to_vec_pretty(self)?;
        f.write_all(&json)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }
}

/// Where a setting came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Env,
    ConfigFile,
    LocalServer,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Env => "environment",
            Source::ConfigFile => "~/.mags/config.json",
            Source::LocalServer => "local server",
        })
    }
}

/// The configured remote server, if any: `(url, token, source of url)`.
/// `None` means local mode.
pub fn configured() -> anyhow::Result<Option<(String, Option<String>, Source)>> {
    let file = ConfigFile::load()?;
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let token = env("MAGS_API_TOKEN")
        .or_else(|| env("MAGS_TOKEN"))
        .or(file.api_token.clone());
    if let Some(url) = env("MAGS_API_URL") {
        return Ok(Some((url, token, Source::Env)));
    }
    Ok(file
        .api_url
        .filter(|u| !u.trim().is_empty())
        .map(|url| (url, token, Source::ConfigFile)))
}
