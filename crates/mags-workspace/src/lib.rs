//! The workspace storage engine: a workspace is its ext4 disk image, and a
//! persistent workspace is a series of versioned, content-addressed
//! snapshots of that image in object storage.
//!
//! - [`objects`]: the object store (a local directory by default, any S3
//!   endpoint by configuration) with durable writes.
//! - [`disk`]: reading a sparse disk image as fixed-size chunks (data
//!   extents only, via `SEEK_DATA`/`SEEK_HOLE`) and writing one back sparse.
//! - [`manifest`]: a version's manifest (size, chunk list) and where every
//!   object lives.
//! - [`engine`]: [`Engine`]: snapshot (incremental, staged under a new
//!   name), restore, fork, delete, garbage collection from a list of live
//!   versions; and [`engine::Blobs`] for uploaded files.
//!
//! Which version of a workspace is current is not kept here: the caller
//! records it (the control layer, in the database, with a compare-and-set
//! from the parent version), so this crate never replaces an object.
//! Durability rule: chunks first, then the version's manifest (a new
//! object), then the caller's record. A version is acknowledged only once
//! it is recorded; until then the previous one is current, its manifest
//! and chunks untouched, so a crash at any point leaves either the old or
//! the new version whole.

pub mod disk;
pub mod engine;
pub mod manifest;
pub mod objects;

pub use engine::{Blobs, Engine, GcReport, Live, RestoreReport, SnapshotReport, Staged};
pub use manifest::{ChunkRef, Manifest};
pub use objects::{ObjectConfig, Objects, S3Config};

/// Errors of the storage engine. Messages name what failed; the source
/// carries the detail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("object storage")]
    Store(#[from] object_store::Error),
    #[error("{path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("unreadable object {key}")]
    Decode {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("workspace {0} has no stored version")]
    NoVersion(String),
    #[error("workspace {0} already has stored versions")]
    Exists(String),
    #[error("larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("chunk {hash} is corrupt (content does not match its hash)")]
    Corrupt { hash: String },
    #[error("object {0} already exists (objects are never overwritten)")]
    Taken(String),
    #[error("invalid storage key {0:?}")]
    BadKey(String),
    #[error("object storage configuration: {0}")]
    Config(String),
    #[error("background task failed: {0}")]
    Task(String),
}

impl Error {
    pub(crate) fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    /// The message with every source, for logs and API errors.
    pub fn chain(&self) -> String {
        let mut s = self.to_string();
        let mut cur = std::error::Error::source(self);
        while let Some(e) = cur {
            s.push_str(": ");
            s.push_str(&e.to_string());
            cur = e.source();
        }
        s
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
