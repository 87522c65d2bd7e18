//! A workspace's versions across hosts: the database says which stored
//! version is current ([`mags_store::Head`]); a save stages its version in
//! object storage under a new name ([`mags_workspace::Engine::stage`]) and
//! makes it current with one compare-and-set from the version its disk
//! was made from, fenced by who may write the workspace
//! ([`mags_store::Fence`]). A lost race changes nothing anyone can see
//! (its manifest and chunks are garbage) and is a [`WsError::Conflict`].
//!
//! Workspaces an older release stored have a `latest` ref and no recorded
//! version: the ref is read once and recorded. Garbage collection keeps
//! what the database lists as live ([`Workspaces::collect_garbage`]).

use super::{Inner, Workspaces, WsError};
use mags_store::{Advance, Fence, Head, VersionRow};
use mags_workspace::{GcReport, Live, Manifest, Staged};
use std::path::Path;
use std::time::Duration;

/// How long an unreferenced object is spared: longer than any snapshot
/// takes to be recorded after it wrote its first chunk.
pub const GC_GRACE: Duration = Duration::from_secs(600);

fn key_of(user_id: &str, name: &str) -> String {
    format!("{user_id}/{name}")
}

impl Inner {
    /// The current version of workspace `name`, recording an older
    /// release's `latest` ref first if the database has none. An
    /// unreachable object store is an error only when `required`.
    pub(crate) async fn head(
        &self,
        user_id: &str,
        name: &str,
        required: bool,
    ) -> Result<Option<Manifest>, WsError> {
        let key = key_of(user_id, name);
        let read = async {
            let row = match self.store.workspace_head(user_id, name).await? {
                Head::At(row) => row,
                Head::Empty => return Ok(None),
                Head::Unrecorded => match self.record_legacy(user_id, name).await? {
                    Some(row) => row,
                    None => return Ok(None),
                },
            };
            Ok(Some(self.engine.manifest_at(&row.manifest).await?))
        };
        match read.await {
            Ok(m) => Ok(m),
            Err(WsError::Storage(e)) if !required => {
                tracing::warn!(workspace = %key, error = %e, "cannot read the stored version");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Records what an older release stored of `name` (its `latest` ref
    /// and the manifests it kept); returns the current version's row.
    async fn record_legacy(
        &self,
        user_id: &str,
        name: &str,
    ) -> Result<Option<VersionRow>, WsError> {
        let key = key_of(user_id, name);
        let latest = self.engine.legacy_latest(&key).await?;
        let mut kept = Vec::new();
        if let Some(l) = &latest {
            for (k, object) in self.engine.stored(&key).await? {
                if !k.legacy || k.version > l.version {
                    continue;
                }
                let m = self.engine.manifest_at(&object).await?;
                kept.push(row_of(&object, &m));
            }
        }
        let current = latest.as_ref().map(|m| m.version);
        if self
            .store
            .record_workspace_versions(user_id, name, &kept, current)
            .await?
        {
            if let Some(v) = current {
                tracing::info!(workspace = %key, version = v, kept = kept.len(), "recorded an older release's workspace versions");
            }
        }
        match self.store.workspace_head(user_id, name).await? {
            Head::At(row) => Ok(Some(row)),
            Head::Empty => Ok(None),
            // No record to write to (a base known only by its objects):
            // read-only, as the older release left it.
            Head::Unrecorded => Ok(kept.into_iter().find(|r| Some(r.version) == current)),
        }
    }

    /// Stores the disk image at `disk` as the version after `base` (the
    /// version it was made from; `None`: none) and makes it current, if
    /// `base` is still current and `fence` holds. Returns the current
    /// version (`base` itself when nothing changed).
    pub(crate) async fn commit_disk(
        &self,
        user_id: &str,
        name: &str,
        disk: &Path,
        base: Option<u64>,
        fence: Fence<'_>,
    ) -> Result<u64, WsError> {
        let key = key_of(user_id, name);
        let head = self.head(user_id, name, true).await?;
        let current = head.as_ref().map_or(0, |m| m.version);
        let base = base.unwrap_or(0);
        if current != base {
            return Err(self.conflict(name, base, current, None));
        }
        let Some(staged) = self.engine.stage(&key, disk, head.as_ref()).await? else {
            return Ok(base);
        };
        self.record(user_id, name, base, staged, fence).await
    }

    /// Makes the fork `name`'s first version a copy of `from` (chunks
    /// shared), if `name` has no version yet and `fence` holds.
    pub(crate) async fn commit_fork(
        &self,
        user_id: &str,
        name: &str,
        from: &Manifest,
        fence: Fence<'_>,
    ) -> Result<u64, WsError> {
        if let Some(m) = self.head(user_id, name, true).await? {
            return Err(self.conflict(name, 0, m.version, None));
        }
        let staged = self.engine.fork(from, &key_of(user_id, name)).await?;
        self.record(user_id, name, 0, staged, fence).await
    }

    /// The compare-and-set: `staged` becomes current if `parent` still is.
    async fn record(
        &self,
        user_id: &str,
        name: &str,
        parent: u64,
        staged: Staged,
        fence: Fence<'_>,
    ) -> Result<u64, WsError> {
        let row = row_of(&staged.object, &staged.manifest);
        match self
            .store
            .advance_workspace_version(user_id, name, fence, parent, &row, self.keep)
            .await?
        {
            Advance::Won { pruned } => {
                let objects: Vec<String> = pruned.into_iter().map(|v| v.manifest).collect();
                self.engine.prune(&objects).await;
                tracing::info!(workspace = %key_of(user_id, name), version = row.version, manifest = %row.manifest, "workspace version stored");
                Ok(row.version)
            }
            Advance::Lost { current, holder } => {
                let holder = holder.filter(|h| !matches!(fence, Fence::Job(j) if j == h));
                Err(self.conflict(name, parent, current, holder))
            }
        }
    }

    fn conflict(&self, name: &str, base: u64, current: u64, holder: Option<String>) -> WsError {
        WsError::Conflict {
            name: name.to_string(),
            base,
            current,
            holder,
        }
    }

    /// Deletes stored objects no live version needs (see
    /// [`Workspaces::collect_garbage`]).
    pub(crate) async fn collect_garbage(&self, grace: Duration) -> Result<GcReport, WsError> {
        let live = self.store.live_workspace_versions().await?;
        let live = Live {
            manifests: live.manifests.into_iter().collect(),
            workspaces: live.workspaces.into_iter().collect(),
        };
        Ok(self.engine.gc(&live, grace).await?)
    }
}

fn row_of(object: &str, m: &Manifest) -> VersionRow {
    VersionRow {
        version: m.version,
        manifest: object.to_string(),
        size: m.size,
        created_at: m.created_ms,
    }
}

impl Workspaces {
    /// Deletes the object store's manifests and chunks that no version the
    /// database lists as live needs, once older than `grace` (an object
    /// younger than that may belong to a snapshot not recorded yet).
    /// Safe on any host at any time; one host of a cluster is enough to
    /// run it (the cluster leader, every `cluster::GC_EVERY`, and a
    /// workspace's deletion).
    pub async fn collect_garbage(&self, grace: Duration) -> Result<GcReport, WsError> {
        self.inner()?.collect_garbage(grace).await
    }
}
