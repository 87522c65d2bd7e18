//! Workspaces: which disk a job's sandbox gets, and what happens to it.
//!
//! A workspace is its ext4 disk image. Modes (mags-contract.md, Workspaces):
//! - ephemeral (no workspace): a fresh disk in the sandbox dir, discarded;
//! - local (`workspace_id`, not synced): the disk lives in
//!   `<data>/workspaces/<user>/<name>/disk.ext4` and is reused by the next
//!   job; the janitor removes it (and the workspace) after `cache_window` idle;
//! - persistent (`persistent` and not `no_sync`): the same cache, plus a
//!   snapshot into object storage ([`mags_workspace::Engine`]) at job end,
//!   stop, sync and before sleep; restored when the cache is gone or older
//!   than the stored version (another host, a wiped cache); a save
//!   becomes the current version only if the one its disk was made from
//!   still is ([`versions`]: the database's fenced compare-and-set);
//! - base (`base_workspace_id` only): a qcow2 overlay over a read-only raw
//!   image of the base's acknowledged version (`base-v<N>.raw`, made once),
//!   so any number of workers share it; the overlay is discarded;
//! - fork (both): a new workspace whose first stored version is the base's
//!   manifest (chunks shared, nothing copied) and whose first disk is an
//!   overlay over a hard link to the base image (so it starts as fast as an
//!   empty one, and ends as fast: the overlay stays the fork's disk; a
//!   synced fork is flattened to a temporary raw image for each snapshot).
//!   Overlays always read a hard link of the immutable base image, so
//!   dropping the base's cache never breaks them.
//!
//! [`executor::WsExecutor`] wraps the real executor: it prepares the disk
//! before a VM starts, places uploaded files, and saves the disk when the
//! VM syncs, sleeps or shuts down. One lease per job holds its workspace's
//! lock from prepare to the end of the final save, so the next job on the
//! workspace never sees a disk mid-save.

pub mod executor;
mod files;
mod manage;
mod ops;
#[cfg(test)]
mod tests;
mod versions;

pub use files::clean_name;
pub(crate) use files::place_files;
pub use versions::GC_GRACE;

use crate::executor::DiskSource;
use mags_store::{Fence, Job, Store, StoreError};
use mags_vm::DiskFormat;
use mags_workspace::{Blobs, Engine, Manifest, ObjectConfig, Objects};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OwnedMutexGuard;

/// Where workspace snapshots and uploads are stored, and how long disks
/// stay cached (`magsd serve` builds it from its flags).
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// The object store for snapshots and uploads.
    pub objects: ObjectConfig,
    /// How long an unused workspace disk stays cached on this host; a
    /// local (not synced) workspace is gone after that.
    pub cache_window: Duration,
    /// Stored versions kept per persistent workspace.
    pub versions: usize,
}

impl StorageConfig {
    /// Snapshots and uploads in `objects_dir`, the default cache window
    /// (10 minutes) and versions kept (5).
    pub fn local(objects_dir: PathBuf) -> StorageConfig {
        StorageConfig {
            objects: ObjectConfig::Local(objects_dir),
            cache_window: Duration::from_secs(600),
            versions: 5,
        }
    }
}

/// Why a workspace operation failed; messages are for the API's caller.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    #[error("workspace {0} not found")]
    NotFound(String),
    #[error("base workspace {0} not found (it has no stored version and no disk on this host)")]
    NoBase(String),
    #[error("workspace {name} is in use by job {job}; stop it first")]
    InUse { name: String, job: String },
    /// A save lost the race to make its version current: the workspace
    /// changed elsewhere (another host, a later job) since its disk was
    /// made. Nothing was stored; `current` is still current.
    #[error("workspace {name} changed elsewhere: this disk was made from version {base} but version {current} is current{}; nothing was stored", holder.as_ref().map(|h| format!(" (job {h} holds it)")).unwrap_or_default())]
    Conflict {
        name: String,
        /// The version the disk was made from (0: none).
        base: u64,
        current: u64,
        /// The live job holding the workspace, if it is not the saver.
        holder: Option<String>,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("workspace storage: {0}")]
    Storage(String),
    #[error("workspace disk: {0}")]
    Disk(String),
    #[error("workspaces are not available on this server")]
    Disabled,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl WsError {
    pub(crate) fn io(path: &Path, e: std::io::Error) -> WsError {
        WsError::Disk(format!("{}: {e}", path.display()))
    }
}

impl From<mags_workspace::Error> for WsError {
    fn from(e: mags_workspace::Error) -> Self {
        WsError::Storage(e.chain())
    }
}

/// The workspace manager; cheap to clone. `Disabled` in router tests.
#[derive(Clone)]
pub struct Workspaces {
    inner: Option<Arc<Inner>>,
}

pub(crate) struct Inner {
    store: Store,
    pub(crate) engine: Engine,
    pub(crate) blobs: Blobs,
    /// `<data>/workspaces`
    root: PathBuf,
    /// `<data>/overlays`: base-only overlays, one per job.
    overlays: PathBuf,
    cache_window: Duration,
    /// Stored versions kept per workspace.
    keep: usize,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    leases: Mutex<HashMap<String, Arc<Lease>>>,
}

/// What a job holds of a workspace from prepare to its final save.
pub struct Lease {
    pub job_id: String,
    user_id: String,
    /// The job's own workspace, if it has one.
    ws: Option<WsLease>,
    /// A base-only job's overlay (discarded at the end).
    scratch: Option<PathBuf>,
    /// The base image the overlay reads from (kept while leased).
    base_image: Option<PathBuf>,
    pub disk: DiskSource,
    /// Set once [`Inner::finish`] ran: it runs once per lease.
    finished: std::sync::atomic::AtomicBool,
}

struct WsLease {
    name: String,
    dir: PathBuf,
    /// Snapshot into object storage.
    sync: bool,
    /// Saves need the workspace free of live jobs (a maintenance lease,
    /// whose job is never claimed), not held by this lease's job.
    idle: bool,
    guard: Mutex<Option<OwnedMutexGuard<()>>>,
}

impl WsLease {
    /// Who may make this lease's saves current.
    fn fence<'a>(&self, job_id: &'a str) -> Fence<'a> {
        if self.idle {
            Fence::Idle
        } else {
            Fence::Job(job_id)
        }
    }
    fn disk(&self) -> PathBuf {
        self.dir.join("disk.ext4")
    }
    fn overlay(&self) -> PathBuf {
        self.dir.join("overlay.qcow2")
    }
    fn backing(&self) -> PathBuf {
        self.dir.join("backing.raw")
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `cache.json`: which stored version the cached disk started from, and
/// whether it may hold changes not stored yet (set while a job of a synced
/// workspace has it, cleared by its final save): such a disk is the only
/// copy of those changes, so the janitor stores it before dropping it.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct CacheMeta {
    version: Option<u64>,
    #[serde(default)]
    unsaved: bool,
}

fn read_meta(dir: &Path) -> CacheMeta {
    std::fs::read(dir.join("cache.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn write_meta(dir: &Path, version: Option<u64>) -> Result<(), WsError> {
    write_cache_meta(
        dir,
        &CacheMeta {
            version,
            unsaved: false,
        },
    )
}

/// Marks the cached disk in `dir` as holding changes not stored yet (or not).
fn mark_unsaved(dir: &Path, unsaved: bool) -> Result<(), WsError> {
    let meta = CacheMeta {
        unsaved,
        ..read_meta(dir)
    };
    write_cache_meta(dir, &meta)
}

fn write_cache_meta(dir: &Path, meta: &CacheMeta) -> Result<(), WsError> {
    let body = serde_json::to_vec(meta).map_err(|e| WsError::Disk(e.to_string()))?;
    crate::files::write_atomic(&dir.join("cache.json"), &body, 0o600)
        .map_err(|e| WsError::Disk(e.to_string()))
}

impl Workspaces {
    /// No storage: job workspaces are ignored, the routes answer 503.
    pub fn disabled() -> Workspaces {
        Workspaces { inner: None }
    }

    /// A manager keeping disks under `data_dir` and snapshots and uploads
    /// in the object store `config` names; starts the cache janitor.
    pub fn start(
        store: Store,
        data_dir: &Path,
        config: &StorageConfig,
    ) -> Result<Workspaces, WsError> {
        let inner = Inner::new(store, data_dir, config)?;
        let weak = Arc::downgrade(&inner);
        let first = inner.clone();
        tokio::spawn(async move { first.remove_stale_overlays().await });
        tokio::spawn(async move {
            let every =
                (inner_window(&weak) / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
            loop {
                tokio::time::sleep(every).await;
                let Some(inner) = weak.upgrade() else { return };
                if let Err(e) = inner.expire_caches().await {
                    tracing::warn!(error = %e, "workspace cache janitor failed");
                }
            }
        });
        Ok(Workspaces { inner: Some(inner) })
    }

    pub(crate) fn inner(&self) -> Result<&Arc<Inner>, WsError> {
        self.inner.as_ref().ok_or(WsError::Disabled)
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }
}

fn inner_window(weak: &std::sync::Weak<Inner>) -> Duration {
    weak.upgrade()
        .map_or(Duration::from_secs(60), |i| i.cache_window)
}

impl Inner {
    /// The manager's state, with no background task (tests drive it).
    fn new(store: Store, data_dir: &Path, config: &StorageConfig) -> Result<Arc<Inner>, WsError> {
        let objects = Objects::open(&config.objects)?;
        tracing::info!(store = ?objects, "workspace storage");
        Ok(Arc::new(Inner {
            store,
            engine: Engine::new(objects.clone()),
            blobs: Blobs::new(objects),
            root: data_dir.join("workspaces"),
            overlays: data_dir.join("overlays"),
            cache_window: config.cache_window,
            keep: config.versions.max(1),
            locks: Mutex::default(),
            leases: Mutex::default(),
        }))
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    fn ws_dir(&self, user_id: &str, name: &str) -> PathBuf {
        self.root.join(user_id).join(name)
    }

    async fn lock_ws(&self, user_id: &str, name: &str) -> OwnedMutexGuard<()> {
        let m = lock(&self.locks)
            .entry(format!("{user_id}/{name}"))
            .or_default()
            .clone();
        m.lock_owned().await
    }

    fn try_lock_ws(&self, user_id: &str, name: &str) -> Option<OwnedMutexGuard<()>> {
        let m = lock(&self.locks)
            .entry(format!("{user_id}/{name}"))
            .or_default()
            .clone();
        m.try_lock_owned().ok()
    }

    /// The lease of job `job_id`, if this process holds one.
    pub(crate) fn lease(&self, job_id: &str) -> Option<Arc<Lease>> {
        lock(&self.leases).get(job_id).cloned()
    }

    /// A read-only raw image of base workspace `name` for overlays: its
    /// acknowledged stored version, or (never synced) a copy of its disk.
    async fn base_image(
        &self,
        user_id: &str,
        name: &str,
    ) -> Result<(PathBuf, Option<Manifest>), WsError> {
        let dir = self.ws_dir(user_id, name);
        // Not the workspace's own lock: a live job holds that for its whole
        // life, and readers of the base must not wait for it.
        let _guard = self.lock_ws(user_id, &format!("{name}#base")).await;
        if let Some(m) = self.head(user_id, name, false).await? {
            let path = dir.join(format!("base-v{}.raw", m.version));
            if !path.exists() {
                self.engine.restore(&m, &path).await?;
                ops::make_read_only(&path);
            }
            return Ok((path, Some(m)));
        }
        let disk = dir.join("disk.ext4");
        let meta = std::fs::metadata(&disk).map_err(|_| WsError::NoBase(name.to_string()))?;
        let stamp = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let path = dir.join(format!("base-local-{stamp}-{}.raw", meta.len()));
        if !path.exists() {
            ops::sparse_copy(&disk, &path).await?;
            ops::make_read_only(&path);
        }
        Ok((path, None))
    }

    /// Gets the disk ready for `job` and leases it; `None` for a job with
    /// neither a workspace nor a base (a fresh disk).
    pub(crate) async fn prepare(&self, job: &Job) -> Result<Option<Arc<Lease>>, WsError> {
        let want = u64::from(job.disk_gb) << 30;
        let lease = match (&job.workspace_id, &job.base_workspace_id) {
            (None, None) => return Ok(None),
            (None, Some(base)) => {
                let (image, _) = self.base_image(&job.user_id, base).await?;
                let bytes = ops::image_bytes(&image)?.max(want);
                std::fs::create_dir_all(&self.overlays)
                    .map_err(|e| WsError::io(&self.overlays, e))?;
                let overlay = self.overlays.join(format!("{}.qcow2", job.id));
                let backing = self.overlays.join(format!("{}.raw", job.id));
                ops::link_or_copy(&image, &backing).await?;
                ops::create_overlay(&backing, &overlay, bytes).await?;
                Lease {
                    job_id: job.id.clone(),
                    user_id: job.user_id.clone(),
                    ws: None,
                    scratch: Some(overlay.clone()),
                    base_image: Some(image),
                    disk: DiskSource::Existing {
                        path: overlay,
                        format: DiskFormat::Qcow2,
                        bytes,
                    },
                    finished: Default::default(),
                }
            }
            (Some(name), base) => {
                self.prepare_ws(job, name, base.as_deref(), want, false)
                    .await?
            }
        };
        let lease = Arc::new(lease);
        lock(&self.leases).insert(job.id.clone(), lease.clone());
        Ok(Some(lease))
    }

    /// Gets the disk of workspace `name` ready for a maintenance job (one
    /// never claimed, run while no job holds the workspace) and leases it.
    pub(crate) async fn prepare_maintenance(
        &self,
        job: &Job,
        name: &str,
    ) -> Result<Arc<Lease>, WsError> {
        let want = u64::from(job.disk_gb) << 30;
        let lease = Arc::new(self.prepare_ws(job, name, None, want, true).await?);
        lock(&self.leases).insert(job.id.clone(), lease.clone());
        Ok(lease)
    }

    async fn prepare_ws(
        &self,
        job: &Job,
        name: &str,
        base: Option<&str>,
        want: u64,
        idle: bool,
    ) -> Result<Lease, WsError> {
        let guard = self.lock_ws(&job.user_id, name).await;
        let row = self.store.workspace(&job.user_id, name).await?;
        let stored = row.as_ref().is_some_and(|r| r.persistent);
        // A persistent workspace stays synced: any job on it (a one-shot
        // run, a cron run) saves its changes, unless it opted out.
        let sync = (job.persistent || stored) && !job.no_sync;
        let dir = self.ws_dir(&job.user_id, name);
        std::fs::create_dir_all(&dir).map_err(|e| WsError::io(&dir, e))?;
        let ws = WsLease {
            name: name.to_string(),
            dir: dir.clone(),
            sync,
            idle,
            guard: Mutex::new(None),
        };
        let stored_required = sync || stored;
        let latest = self.head(&job.user_id, name, stored_required).await?;
        let cached = read_meta(&dir).version;
        let disk = ws.disk();
        let mut base_image = None;
        let fresh_enough = latest
            .as_ref()
            .is_none_or(|m| cached.is_some_and(|c| c >= m.version));
        let source = if ws.overlay().exists() && fresh_enough {
            // A fork's disk: its overlay over its own link to the base image.
            let mut bytes = ops::image_bytes(&ws.overlay())?;
            if want > bytes {
                ops::grow_qcow2(&ws.overlay(), want).await?;
                bytes = want;
            }
            Some((ws.overlay(), bytes))
        } else if disk.exists() && fresh_enough {
            None
        } else if let Some(m) = &latest {
            let _ = std::fs::remove_file(ws.overlay());
            let _ = std::fs::remove_file(ws.backing());
            self.engine.restore(m, &disk).await?;
            write_meta(&dir, Some(m.version))?;
            None
        } else if let Some(b) = base {
            let (image, manifest) = self.base_image(&job.user_id, b).await?;
            let version = match (&manifest, sync) {
                // Stored: the fork's first version is the base's, chunks shared.
                (Some(m), true) => Some(
                    self.commit_fork(&job.user_id, name, m, ws.fence(&job.id))
                        .await?,
                ),
                _ => None,
            };
            write_meta(&dir, version)?;
            let bytes = ops::image_bytes(&image)?.max(want);
            // A hard link: the fork keeps its base even if the base's cache goes.
            ops::link_or_copy(&image, &ws.backing()).await?;
            ops::create_overlay(&ws.backing(), &ws.overlay(), bytes).await?;
            base_image = Some(image);
            Some((ws.overlay(), bytes))
        } else {
            mags_vm::disk::create_disk(&disk, want)
                .await
                .map_err(|e| WsError::Disk(e.to_string()))?;
            write_meta(&dir, None)?;
            None
        };
        let disk = match source {
            Some((path, bytes)) => DiskSource::Existing {
                path,
                format: DiskFormat::Qcow2,
                bytes,
            },
            None => {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&disk)
                    .map_err(|e| WsError::io(&disk, e))?;
                let mut bytes = f.metadata().map_err(|e| WsError::io(&disk, e))?.len();
                if want > bytes {
                    // The guest grows its filesystem when it mounts the disk.
                    f.set_len(want).map_err(|e| WsError::io(&disk, e))?;
                    bytes = want;
                }
                DiskSource::Existing {
                    path: disk,
                    format: DiskFormat::Raw,
                    bytes,
                }
            }
        };
        let bytes = match &disk {
            DiskSource::Existing { bytes, .. } => *bytes,
            DiskSource::Fresh => want,
        };
        if sync {
            mark_unsaved(&dir, true)?;
        }
        self.store
            .touch_workspace(&job.user_id, name, bytes, sync)
            .await?;
        *lock(&ws.guard) = Some(guard);
        Ok(Lease {
            job_id: job.id.clone(),
            user_id: job.user_id.clone(),
            ws: Some(ws),
            scratch: None,
            base_image,
            disk,
            finished: Default::default(),
        })
    }

    /// Leases the disk of a job whose VM already exists (woken after a
    /// restart): nothing is created, the paths are the job's.
    pub(crate) async fn relet(&self, job: &Job) -> Option<Arc<Lease>> {
        if let Some(l) = self.lease(&job.id) {
            return Some(l);
        }
        let lease = match (&job.workspace_id, &job.base_workspace_id) {
            (None, None) => return None,
            (None, Some(_)) => Lease {
                job_id: job.id.clone(),
                user_id: job.user_id.clone(),
                ws: None,
                scratch: Some(self.overlays.join(format!("{}.qcow2", job.id))),
                base_image: None,
                disk: DiskSource::Fresh,
                finished: Default::default(),
            },
            (Some(name), _) => {
                let guard = self.lock_ws(&job.user_id, name).await;
                Lease {
                    job_id: job.id.clone(),
                    user_id: job.user_id.clone(),
                    ws: Some(WsLease {
                        name: name.clone(),
                        dir: self.ws_dir(&job.user_id, name),
                        sync: job.persistent && !job.no_sync,
                        idle: false,
                        guard: Mutex::new(Some(guard)),
                    }),
                    scratch: None,
                    base_image: None,
                    disk: DiskSource::Fresh,
                    finished: Default::default(),
                }
            }
        };
        let lease = Arc::new(lease);
        lock(&self.leases).insert(job.id.clone(), lease.clone());
        Some(lease)
    }

    /// A VM has the leased disk again (woken): until its final save the
    /// cache may hold changes not stored yet.
    pub(crate) fn reopened(&self, lease: &Lease) {
        if let Some(ws) = lease.ws.as_ref().filter(|w| w.sync) {
            if let Err(e) = mark_unsaved(&ws.dir, true) {
                tracing::warn!(workspace = %ws.name, error = %e, "cannot mark the cache unsaved");
            }
        }
    }

    /// Stores the workspace's current disk as a new version (if it is
    /// synced). `live`: a VM has the disk open (its filesystem frozen).
    pub(crate) async fn save(&self, lease: &Lease, live: bool) -> Result<Option<u64>, WsError> {
        let Some(ws) = &lease.ws else { return Ok(None) };
        if !ws.sync {
            return Ok(None);
        }
        let version = self
            .snapshot_cache(
                &lease.user_id,
                &ws.name,
                &ws.dir,
                &lease.job_id,
                live,
                ws.fence(&lease.job_id),
            )
            .await?;
        // A VM still running may change the disk after this.
        write_cache_meta(
            &ws.dir,
            &CacheMeta {
                version: Some(version),
                unsaved: live,
            },
        )?;
        Ok(Some(version))
    }

    /// Stores the cached disk in `dir` (a fork's overlay flattened first)
    /// as the version after the one it was made from (`cache.json`), if
    /// that is still current and `fence` holds ([`WsError::Conflict`] if
    /// not). Returns the current version.
    async fn snapshot_cache(
        &self,
        user_id: &str,
        name: &str,
        dir: &Path,
        tag: &str,
        live: bool,
        fence: Fence<'_>,
    ) -> Result<u64, WsError> {
        let base = read_meta(dir).version;
        let overlay = dir.join("overlay.qcow2");
        if overlay.exists() {
            let flat = dir.join(format!(".snapshot-{tag}.raw"));
            ops::flatten(&overlay, &flat, live).await?;
            let r = self.commit_disk(user_id, name, &flat, base, fence).await;
            let _ = std::fs::remove_file(&flat);
            r
        } else {
            let disk = dir.join("disk.ext4");
            self.commit_disk(user_id, name, &disk, base, fence).await
        }
    }

    /// The job is over (its VM is gone): saves the workspace's disk (a
    /// fork's overlay stays its disk), discards a base overlay, and frees
    /// the workspace for the next job.
    pub(crate) async fn finish(&self, lease: &Lease) -> Result<(), WsError> {
        if lease
            .finished
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return Ok(());
        }
        let result = async {
            if let Some(ws) = &lease.ws {
                self.save(lease, false).await?;
                let disk = if ws.overlay().exists() {
                    ws.overlay()
                } else {
                    ws.disk()
                };
                let bytes = ops::image_bytes(&disk).unwrap_or(0);
                self.store
                    .touch_workspace(&lease.user_id, &ws.name, bytes, ws.sync)
                    .await?;
            }
            Ok::<(), WsError>(())
        }
        .await;
        if let Some(p) = &lease.scratch {
            let _ = std::fs::remove_file(p);
            let _ = std::fs::remove_file(p.with_extension("raw"));
        }
        if let Some(ws) = &lease.ws {
            lock(&ws.guard).take();
        }
        lock(&self.leases).remove(&lease.job_id);
        result
    }

    /// Removes base overlays (and their base links) of jobs that are no
    /// longer live: what a crashed server left behind.
    async fn remove_stale_overlays(&self) {
        let Ok(entries) = std::fs::read_dir(&self.overlays) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Some(job_id) = path.file_stem().map(|s| s.to_string_lossy().to_string()) else {
                continue;
            };
            let live = match self.store.job(&job_id).await {
                Ok(Some(j)) => !j.status.is_final(),
                Ok(None) => false,
                Err(_) => true, // unsure: keep it
            };
            if !live {
                tracing::info!(job = %job_id, "removing a base overlay left by an ended job");
                let _ = std::fs::remove_file(&path);
            }
        }
    }

    /// Removes disks idle longer than the cache window; a local workspace
    /// goes with its disk. Skips anything a job holds or uses as a base.
    async fn expire_caches(&self) -> Result<(), WsError> {
        let now = mags_store::clock::now_ms();
        let window = i64::try_from(self.cache_window.as_millis()).unwrap_or(i64::MAX);
        let in_use: Vec<PathBuf> = lock(&self.leases)
            .values()
            .filter_map(|l| {
                l.base_image
                    .as_ref()
                    .and_then(|p| p.parent().map(Path::to_path_buf))
            })
            .collect();
        for row in self.store.all_workspaces().await? {
            if row.live_job_id.is_some() || now - row.last_used_at < window {
                continue;
            }
            let dir = self.ws_dir(&row.user_id, &row.name);
            if in_use.contains(&dir) {
                continue;
            }
            let Some(_guard) = self.try_lock_ws(&row.user_id, &row.name) else {
                continue;
            };
            if row.persistent && dir.exists() && read_meta(&dir).unsaved {
                // Its last save failed, or its job ended with the server:
                // store it first (retried at every tick until it works),
                // unless the workspace moved on elsewhere (a newer version,
                // or a live job on another host): then this disk is stale
                // and storing it would undo that, so it is dropped.
                let stored = self
                    .snapshot_cache(&row.user_id, &row.name, &dir, "janitor", false, Fence::Idle)
                    .await;
                match stored {
                    Ok(version) => {
                        write_meta(&dir, Some(version))?;
                        tracing::info!(workspace = %row.name, version, "stored a workspace's unsaved changes");
                    }
                    Err(WsError::Conflict {
                        base,
                        current,
                        holder,
                        ..
                    }) => {
                        tracing::warn!(
                            user = %row.user_id,
                            workspace = %row.name,
                            cached_version = base,
                            current_version = current,
                            holder = holder.as_deref().unwrap_or("none"),
                            unsaved_writes_discarded = true,
                            "a cached workspace disk is stale (the workspace changed elsewhere): \
                             not stored; dropping it and the unsaved writes it held"
                        );
                        let _ = std::fs::remove_dir_all(&dir);
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(workspace = %row.name, error = %e, "cannot store a workspace's unsaved changes; its cached disk is kept");
                        continue;
                    }
                }
            }
            if row.persistent {
                if dir.exists() {
                    tracing::info!(workspace = %row.name, "dropping an idle workspace's cached disk (it is stored)");
                    let _ = std::fs::remove_dir_all(&dir);
                }
            } else if self.store.delete_workspace(&row.user_id, &row.name).await? {
                tracing::info!(workspace = %row.name, "local workspace expired");
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        Ok(())
    }
}
