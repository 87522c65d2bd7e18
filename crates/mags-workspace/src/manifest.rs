//! What a stored version is, and where every object lives.
//!
//! ```text
//! ws/<workspace key>/latest             {"version": N}       the acknowledged version
//! ws/<workspace key>/v/<N, 20 digits>   Manifest (JSON)      written once, never changed
//! chunks/<h[0..2]>/<h>                  chunk bytes          h = SHA-256 of the bytes
//! files/<key>                           an uploaded file
//! ```
//! A workspace key is `<owner>/<name>` (letters, digits, `-_.`).

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

pub fn version_key(key: &str, version: u64) -> String {
    format!("ws/{key}/v/{version:020}")
}

/// The version number of a manifest object key, if it is one.
pub fn parse_version_key(object_key: &str) -> Option<u64> {
    let (head, last) = object_key.rsplit_once('/')?;
    if !head.ends_with("/v") {
        return None;
    }
    last.parse().ok()
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
