//! What a stored version is, and where every object lives.
//!
//! ```text
//! ws/<workspace key>/v/<N, 20 digits>-<id>   Manifest (JSON)   written once, never changed
//! chunks/<h[0..2]>/<h>                       chunk bytes       h = SHA-256 of the bytes
//! files/<key>                                an uploaded file
//! ws/<workspace key>/latest                  {"version": N}    legacy: older releases' ref
//! ws/<workspace key>/v/<N, 20 digits>        Manifest (JSON)   legacy: older releases' name
//! ```
//! A workspace key is `<owner>/<name>` (letters, digits, `-_.`).
//!
//! Every manifest name is new (`<id>` is random), so two hosts storing
//! version N+1 of one workspace at once never write the same object: which
//! of them is version N+1 is decided outside the object store (the
//! database's compare-and-set), and the loser's manifest is garbage.
//! Older releases named manifests by number alone and moved `latest` in
//! place; both are still read (once, to record them in the database).

use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Format of manifests written by this code.
pub const FORMAT: u32 = 1;

/// One stored version of a workspace disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// The workspace key it belongs to.
    pub workspace: String,
    pub version: u64,
    /// Disk size in bytes.
    pub size: u64,
    pub chunk_size: u64,
    /// Unix milliseconds.
    pub created_ms: i64,
    /// Where the content came from: `"<key>@<version>"` of the previous
    /// version, or of the base a fork started from.
    #[serde(default)]
    pub parent: Option<String>,
    /// Non-zero chunks in offset order; everything else reads as zeros.
    pub chunks: Vec<ChunkRef>,
}

impl Manifest {
    /// Bytes of data (non-hole chunks) in this version.
    pub fn data_bytes(&self) -> u64 {
        self.chunks
            .iter()
            .map(|c| self.chunk_len(c.offset))
            .sum::<u64>()
    }

    /// Length of the chunk at `offset` (the last one may be short).
    pub fn chunk_len(&self, offset: u64) -> u64 {
        self.chunk_size.min(self.size.saturating_sub(offset))
    }
}

/// One chunk of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    #[serde(rename = "o")]
    pub offset: u64,
    /// SHA-256, hex.
    #[serde(rename = "h")]
    pub hash: String,
}

/// Body of `latest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatestRef {
    pub version: u64,
}

/// Checks a workspace key (`owner/name`, plain characters only).
pub fn check_key(key: &str) -> Result<()> {
    let parts: Vec<&str> = key.split('/').collect();
    let ok = parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && !p.starts_with('.')
                && p.len() <= 128
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        });
    if ok {
        Ok(())
    } else {
        Err(Error::BadKey(key.to_string()))
    }
}

/// Prefix of everything of workspace `key`.
pub fn ws_prefix(key: &str) -> String {
    format!("ws/{key}/")
}

pub fn latest_key(key: &str) -> String {
    format!("ws/{key}/latest")
}

pub fn versions_prefix(key: &str) -> String {
    format!("ws/{key}/v/")
}

/// The legacy (number only) manifest name of `version`.
pub fn version_key(key: &str, version: u64) -> String {
    format!("ws/{key}/v/{version:020}")
}

/// A fresh manifest name for `version`: no object has it yet.
pub fn new_version_key(key: &str, version: u64) -> String {
    format!("ws/{key}/v/{version:020}-{}", uuid::Uuid::new_v4().simple())
}

/// What a manifest object key says: its workspace, version number, and
/// whether it has the legacy name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionKey {
    pub workspace: String,
    pub version: u64,
    pub legacy: bool,
}

/// Reads a manifest object key; `None` if it is not one.
pub fn parse_manifest_key(object_key: &str) -> Option<VersionKey> {
    let rest = object_key.strip_prefix("ws/")?;
    let (head, last) = rest.rsplit_once('/')?;
    let workspace = head.strip_suffix("/v")?;
    let (number, legacy) = match last.split_once('-') {
        Some((n, id)) if !id.is_empty() => (n, false),
        Some(_) => return None,
        None => (last, true),
    };
    if number.len() != 20 || check_key(workspace).is_err() {
        return None;
    }
    Some(VersionKey {
        workspace: workspace.to_string(),
        version: number.parse().ok()?,
        legacy,
    })
}

/// The version number of a manifest object key, if it is one.
pub fn parse_version_key(object_key: &str) -> Option<u64> {
    parse_manifest_key(object_key).map(|k| k.version)
}

pub fn chunk_key(hash: &str) -> String {
    format!("chunks/{}/{hash}", &hash[..2.min(hash.len())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert!(check_key("u1/my-ws.2").is_ok());
        for bad in ["u1", "u1/../x", "u1/.x", "u1/a/b", "u1/a b", "/x"] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
        let k = version_key("u/w", 7);
        assert_eq!(k, "ws/u/w/v/00000000000000000007");
        assert_eq!(parse_version_key(&k), Some(7));
        assert_eq!(parse_version_key("ws/u/w/latest"), None);
        let n = new_version_key("u/w", 7);
        assert_ne!(n, new_version_key("u/w", 7), "every name is new");
        let parsed = parse_manifest_key(&n).expect("a manifest key");
        assert_eq!((parsed.workspace.as_str(), parsed.version), ("u/w", 7));
        assert!(!parsed.legacy);
        assert!(parse_manifest_key(&k).expect("legacy").legacy);
        assert_eq!(parse_manifest_key("ws/u/w/v/7"), None);
        assert_eq!(chunk_key("abcdef"), "chunks/ab/abcdef");
    }

    #[test]
    fn chunk_lengths() {
        let m = Manifest {
            format: FORMAT,
            workspace: "u/w".into(),
            version: 1,
            size: 10,
            chunk_size: 4,
            created_ms: 0,
            parent: None,
            chunks: vec![
                ChunkRef {
                    offset: 0,
                    hash: "a".into(),
                },
                ChunkRef {
                    offset: 8,
                    hash: "b".into(),
                },
            ],
        };
        assert_eq!(m.data_bytes(), 6);
    }
}
