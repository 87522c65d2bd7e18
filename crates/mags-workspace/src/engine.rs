//! [`Engine`]: versioned, incremental snapshots of workspace disks, and
//! [`Blobs`]: uploaded files, streamed into the same object store.
//!
//! A snapshot hashes the disk's data chunks, uploads only chunks the
//! previous version does not have, then writes the new manifest and moves
//! `latest` to it (see the crate docs for why that order is crash-safe).
//! Old versions beyond `keep` are pruned after that; their chunks are
//! collected by [`Engine::gc`], which never deletes a chunk younger than its
//! grace period (a concurrent snapshot may be about to reference it).

use crate::disk::{self, HashedChunk};
use crate::manifest::{self, ChunkRef, LatestRef, Manifest};
use crate::objects::Objects;
use crate::{Error, Result};
use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, WriteMultipart};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::RwLock;

/// Transfers in flight at once.
const PARALLEL: usize = 8;

/// What a snapshot did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotReport {
    /// The acknowledged version (unchanged content keeps the previous one).
    pub version: u64,
    /// False when the disk matched the latest version and nothing was written.
    pub created: bool,
    pub size: u64,
    pub chunks: usize,
    pub uploaded_chunks: usize,
    pub uploaded_bytes: u64,
    pub ms: u64,
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    pub version: u64,
    pub size: u64,
    pub bytes: u64,
    pub ms: u64,
}

/// A stored workspace at a glance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceInfo {
    pub latest: Manifest,
    /// Stored versions, oldest first.
    pub versions: Vec<u64>,
}

/// The snapshot store; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    objects: Objects,
    /// Versions kept per workspace.
    keep: usize,
    chunk_size: u64,
    /// Snapshots take it shared, garbage collection exclusive.
    gc_lock: Arc<RwLock<()>>,
    /// One snapshot/restore/delete per workspace at a time.
    per_ws: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    /// Per workspace: chunk hashes of its last snapshot on this host.
    memos: Arc<Mutex<HashMap<String, Arc<disk::Memo>>>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn obj_path(key: &str) -> Result<ObjPath> {
    ObjPath::parse(key).map_err(|_| Error::BadKey(key.to_string()))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Task(e.to_string()))?
}

impl Engine {
    /// An engine over `objects` keeping `keep` versions per workspace.
    pub fn new(objects: Objects, keep: usize) -> Engine {
        Engine {
            objects,
            keep: keep.max(1),
            chunk_size: disk::CHUNK_SIZE,
            gc_lock: Arc::default(),
            per_ws: Arc::default(),
            memos: Arc::default(),
        }
    }

    /// Same, with another chunk size (tests).
    pub fn with_chunk_size(mut self, chunk_size: u64) -> Engine {
        self.chunk_size = chunk_size;
        self
    }

    pub fn objects(&self) -> &Objects {
        &self.objects
    }

    async fn ws_lock(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = self
            .per_ws
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.to_string())
            .or_default()
            .clone();
        m.lock_owned().await
    }

    /// The acknowledged version of `key`, if any.
    pub async fn latest(&self, key: &str) -> Result<Option<Manifest>> {
        manifest::check_key(key)?;
        let lk = manifest::latest_key(key);
        let Some(raw) = self.objects.get_opt(&lk).await? else {
            return Ok(None);
        };
        let r: LatestRef =
            serde_json::from_slice(&raw).map_err(|source| Error::Decode { key: lk, source })?;
        self.manifest(key, r.version).await.map(Some)
    }

    /// Version `version` of `key`.
    pub async fn manifest(&self, key: &str, version: u64) -> Result<Manifest> {
        let vk = manifest::version_key(key, version);
        let raw = self
            .objects
            .get_opt(&vk)
            .await?
            .ok_or_else(|| Error::NoVersion(format!("{key}@{version}")))?;
        serde_json::from_slice(&raw).map_err(|source| Error::Decode { key: vk, source })
    }

    /// Stored version numbers of `key`, oldest first.
    pub async fn versions(&self, key: &str) -> Result<Vec<u64>> {
        manifest::check_key(key)?;
        let prefix = obj_path(&manifest::versions_prefix(key))?;
        let mut v: Vec<u64> = self
            .objects
            .store
            .list(Some(&prefix))
            .map_ok(|m| manifest::parse_version_key(m.location.as_ref()))
            .try_collect::<Vec<_>>()
            .await?
            .into_iter()
            .flatten()
            .collect();
        v.sort_unstable();
        Ok(v)
    }

    /// Latest manifest and version list, or `None` if nothing is stored.
    pub async fn info(&self, key: &str) -> Result<Option<WorkspaceInfo>> {
        let Some(latest) = self.latest(key).await? else {
            return Ok(None);
        };
        let versions = self.versions(key).await?;
        Ok(Some(WorkspaceInfo { latest, versions }))
    }

    /// Stores the disk image at `disk` as the next version of `key`
    /// (incremental against the latest one). The disk must not change
    /// meanwhile (the VM is stopped, or its filesystem frozen).
    pub async fn snapshot(&self, key: &str, disk: &Path) -> Result<SnapshotReport> {
        manifest::check_key(key)?;
        let t0 = Instant::now();
        let _ws = self.ws_lock(key).await;
        let _gc = self.gc_lock.read().await;
        let parent = self.latest(key).await?;
        let chunk_size = parent.as_ref().map_or(self.chunk_size, |p| p.chunk_size);
        let path = disk.to_path_buf();
        let memo = self
            .memos
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
            .unwrap_or_default();
        let (size, chunks, memo) =
            blocking(move || disk::hash_disk_memo(&path, chunk_size, threads(), &memo)).await?;
        self.memos
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_string(), Arc::new(memo));
        let hashed_ms = t0.elapsed().as_millis() as u64;

        let new_refs: Vec<ChunkRef> = chunks
            .iter()
            .map(|c| ChunkRef {
                offset: c.offset,
                hash: c.hash.clone(),
            })
            .collect();
        if let Some(p) = &parent {
            if p.size == size && p.chunks == new_refs {
                return Ok(SnapshotReport {
                    version: p.version,
                    created: false,
                    size,
                    chunks: chunks.len(),
                    uploaded_chunks: 0,
                    uploaded_bytes: 0,
                    ms: t0.elapsed().as_millis() as u64,
                });
            }
        }
        // Chunks the parent references exist (it is acknowledged, so they
        // were durable before it was); everything else is uploaded. No
        // existence probe: a chunk found by one could be collected before
        // this version references it.
        let known: HashSet<&str> = parent
            .iter()
            .flat_map(|p| p.chunks.iter().map(|c| c.hash.as_str()))
            .collect();
        let mut seen = HashSet::new();
        let todo: Vec<HashedChunk> = chunks
            .iter()
            .filter(|c| !known.contains(c.hash.as_str()) && seen.insert(c.hash.clone()))
            .cloned()
            .collect();
        let uploaded_chunks = todo.len();
        let uploaded_bytes: u64 = todo.iter().map(|c| chunk_size.min(size - c.offset)).sum();
        stream::iter(todo)
            .map(|c| {
                let path = disk.to_path_buf();
                async move {
                    let len = chunk_size.min(size - c.offset);
                    let data = blocking(move || disk::read_chunk(&path, c.offset, len)).await?;
                    // The disk is quiet, but check anyway: a chunk must match its name.
                    if disk::sha256_hex(&data) != c.hash {
                        return Err(Error::Corrupt { hash: c.hash });
                    }
                    self.objects
                        .put_durable(&manifest::chunk_key(&c.hash), Bytes::from(data))
                        .await
                }
            })
            .buffer_unordered(PARALLEL)
            .try_collect::<Vec<()>>()
            .await?;

        let version = parent.as_ref().map_or(1, |p| p.version + 1);
        let m = Manifest {
            format: manifest::FORMAT,
            workspace: key.to_string(),
            version,
            size,
            chunk_size,
            created_ms: now_ms(),
            parent: parent
                .as_ref()
                .map(|p| format!("{}@{}", p.workspace, p.version)),
            chunks: new_refs,
        };
        self.commit(key, &m).await?;
        let ms = t0.elapsed().as_millis() as u64;
        tracing::info!(
            workspace = key,
            version,
            size,
            chunks = m.chunks.len(),
            uploaded_chunks,
            uploaded_bytes,
            hashed_ms,
            ms,
            "workspace snapshot stored"
        );
        drop(_gc);
        self.prune(key).await;
        Ok(SnapshotReport {
            version,
            created: true,
            size,
            chunks: m.chunks.len(),
            uploaded_chunks,
            uploaded_bytes,
            ms,
        })
    }

    /// Writes a manifest, then points `latest` at it.
    async fn commit(&self, key: &str, m: &Manifest) -> Result<()> {
        let body = serde_json::to_vec(m).map_err(|source| Error::Decode {
            key: key.to_string(),
            source,
        })?;
        self.objects
            .put_durable(&manifest::version_key(key, m.version), Bytes::from(body))
            .await?;
        let r = serde_json::to_vec(&LatestRef { version: m.version }).map_err(|source| {
            Error::Decode {
                key: key.to_string(),
                source,
            }
        })?;
        self.objects
            .put_durable(&manifest::latest_key(key), Bytes::from(r))
            .await
    }

    /// Deletes manifests beyond the newest `keep` (best effort).
    async fn prune(&self, key: &str) {
        let versions = match self.versions(key).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(workspace = key, error = %e.chain(), "cannot list versions to prune");
                return;
            }
        };
        let drop_n = versions.len().saturating_sub(self.keep);
        for v in &versions[..drop_n] {
            if let Err(e) = self.objects.delete(&manifest::version_key(key, *v)).await {
                tracing::warn!(workspace = key, version = v, error = %e.chain(), "cannot prune a version");
            }
        }
    }

    /// Writes version `m` of a workspace into a new sparse file at `dest`
    /// (via a temporary file renamed into place, so `dest` is whole or absent).
    pub async fn restore(&self, m: &Manifest, dest: &Path) -> Result<RestoreReport> {
        let t0 = Instant::now();
        let tmp = tmp_path(dest, "restore");
        let file = {
            let tmp = tmp.clone();
            let size = m.size;
            blocking(move || {
                if let Some(dir) = tmp.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
                }
                let f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
                f.set_len(size).map_err(|e| Error::io(&tmp, e))?;
                Ok(Arc::new(f))
            })
            .await?
        };
        let result = stream::iter(m.chunks.clone())
            .map(|c| {
                let file = file.clone();
                let tmp = tmp.clone();
                async move {
                    let key = manifest::chunk_key(&c.hash);
                    let data = self
                        .objects
                        .get_opt(&key)
                        .await?
                        .ok_or_else(|| Error::Corrupt {
                            hash: c.hash.clone(),
                        })?;
                    let n = data.len() as u64;
                    blocking(move || {
                        if disk::sha256_hex(&data) != c.hash {
                            return Err(Error::Corrupt { hash: c.hash });
                        }
                        disk::write_sparse_at(&file, c.offset, &data)
                            .map_err(|e| Error::io(&tmp, e))
                    })
                    .await?;
                    Ok::<u64, Error>(n)
                }
            })
            .buffer_unordered(PARALLEL)
            .try_fold(0u64, |acc, n| async move { Ok(acc + n) })
            .await;
        let bytes = match result {
            Ok(b) => b,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        let dest_owned = dest.to_path_buf();
        let tmp2 = tmp.clone();
        let done = blocking(move || {
            file.sync_all().map_err(|e| Error::io(&tmp2, e))?;
            std::fs::rename(&tmp2, &dest_owned).map_err(|e| Error::io(&dest_owned, e))
        })
        .await;
        if let Err(e) = done {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let ms = t0.elapsed().as_millis() as u64;
        tracing::info!(workspace = %m.workspace, version = m.version, bytes, ms, "workspace restored");
        Ok(RestoreReport {
            version: m.version,
            size: m.size,
            bytes,
            ms,
        })
    }

    /// Starts workspace `to` as a copy of `from`'s latest version: the new
    /// manifest references the same chunks, no data is copied. Fails if
    /// `to` already has versions.
    pub async fn fork(&self, from: &Manifest, to: &str) -> Result<Manifest> {
        manifest::check_key(to)?;
        let _ws = self.ws_lock(to).await;
        let _gc = self.gc_lock.read().await;
        if self.latest(to).await?.is_some() {
            return Err(Error::Exists(to.to_string()));
        }
        let m = Manifest {
            workspace: to.to_string(),
            version: 1,
            created_ms: now_ms(),
            parent: Some(format!("{}@{}", from.workspace, from.version)),
            ..from.clone()
        };
        self.commit(to, &m).await?;
        Ok(m)
    }

    /// Deletes every version of `key` (the ref first, so a crash midway
    /// leaves no half workspace visible), then collects unreferenced chunks.
    pub async fn delete(&self, key: &str) -> Result<usize> {
        manifest::check_key(key)?;
        {
            let _ws = self.ws_lock(key).await;
            self.objects.delete(&manifest::latest_key(key)).await?;
            let prefix = obj_path(&manifest::ws_prefix(key))?;
            let keys: Vec<ObjPath> = self
                .objects
                .store
                .list(Some(&prefix))
                .map_ok(|m| m.location)
                .try_collect()
                .await?;
            for k in keys {
                self.objects.delete(k.as_ref()).await?;
            }
        }
        self.gc(Duration::from_secs(600)).await
    }

    /// Deletes chunks no stored manifest references and that are older
    /// than `grace`; returns how many.
    pub async fn gc(&self, grace: Duration) -> Result<usize> {
        let _gc = self.gc_lock.write().await;
        let prefix = obj_path("ws")?;
        let manifests: Vec<ObjPath> = self
            .objects
            .store
            .list(Some(&prefix))
            .try_filter(|m| {
                futures::future::ready(manifest::parse_version_key(m.location.as_ref()).is_some())
            })
            .map_ok(|m| m.location)
            .try_collect()
            .await?;
        let mut referenced: HashSet<String> = HashSet::new();
        for k in manifests {
            let Some(raw) = self.objects.get_opt(k.as_ref()).await? else {
                continue;
            };
            let m: Manifest = serde_json::from_slice(&raw).map_err(|source| Error::Decode {
                key: k.to_string(),
                source,
            })?;
            referenced.extend(m.chunks.into_iter().map(|c| c.hash));
        }
        let cutoff = std::time::SystemTime::now()
            .checked_sub(grace)
            .unwrap_or(std::time::UNIX_EPOCH);
        let chunks = obj_path("chunks")?;
        let garbage: Vec<ObjPath> = self
            .objects
            .store
            .list(Some(&chunks))
            .try_filter(|m| {
                let hash = m.location.filename().unwrap_or_default();
                let old = std::time::SystemTime::from(m.last_modified) < cutoff;
                futures::future::ready(old && !referenced.contains(hash))
            })
            .map_ok(|m| m.location)
            .try_collect()
            .await?;
        for k in &garbage {
            self.objects.delete(k.as_ref()).await?;
        }
        if !garbage.is_empty() {
            tracing::info!(chunks = garbage.len(), "collected unreferenced chunks");
        }
        Ok(garbage.len())
    }
}

fn tmp_path(dest: &Path, what: &str) -> PathBuf {
    let name = dest
        .file_name()
        .map_or_else(Default::default, |n| n.to_string_lossy().to_string());
    dest.with_file_name(format!(".{name}.{what}-{}.tmp", std::process::id()))
}

/// Uploaded files in the object store, under `files/`.
#[derive(Clone, Debug)]
pub struct Blobs {
    objects: Objects,
}

impl Blobs {
    pub fn new(objects: Objects) -> Blobs {
        Blobs { objects }
    }

    fn key(id: &str) -> Result<String> {
        let ok = !id.is_empty()
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
        if ok {
            Ok(format!("files/{id}"))
        } else {
            Err(Error::BadKey(id.to_string()))
        }
    }

    /// Streams `body` into blob `id`, refusing more than `limit` bytes: the
    /// upload is aborted and nothing is kept. Returns (bytes, SHA-256 hex).
    pub async fn put_stream<S, E>(&self, id: &str, mut body: S, limit: u64) -> Result<(u64, String)>
    where
        S: futures::Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::error::Error + Send + Sync + 'static,
    {
        let key = Self::key(id)?;
        let upload = self.objects.store.put_multipart(&obj_path(&key)?).await?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, 8 << 20);
        let mut hasher = Sha256::new();
        let mut n: u64 = 0;
        let failure = loop {
            match body.next().await {
                None => break None,
                Some(Err(e)) => {
                    break Some(Error::Io {
                        path: key.clone(),
                        source: std::io::Error::other(e),
                    })
                }
                Some(Ok(b)) => {
                    n += b.len() as u64;
                    if n > limit {
                        break Some(Error::TooLarge { limit });
                    }
                    hasher.update(&b);
                    if let Err(e) = w.wait_for_capacity(PARALLEL).await {
                        break Some(e.into());
                    }
                    w.write(&b);
                }
            }
        };
        if let Some(e) = failure {
            if let Err(a) = w.abort().await {
                tracing::warn!(error = %a, "cannot abort an upload");
            }
            return Err(e);
        }
        w.finish().await?;
        self.objects.make_durable(&key).await?;
        Ok((n, hex::encode(hasher.finalize())))
    }

    /// The bytes of blob `id`, as a stream.
    pub async fn get_stream(
        &self,
        id: &str,
    ) -> Result<futures::stream::BoxStream<'static, Result<Bytes>>> {
        let key = Self::key(id)?;
        let r = self.objects.store.get(&obj_path(&key)?).await?;
        Ok(r.into_stream().map_err(Error::from).boxed())
    }

    pub async fn delete(&self, id: &str) -> Result<()> {
        self.objects.delete(&Self::key(id)?).await
    }
}

/// Object keys under `prefix` (tests and diagnostics).
pub async fn list_keys(objects: &Objects, prefix: &str) -> Result<Vec<String>> {
    let p = obj_path(prefix)?;
    Ok(objects
        .store
        .list(Some(&p))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await?)
}

/// Whether the store has no object at all under `prefix`.
pub async fn is_empty(store: &dyn ObjectStore, prefix: &str) -> Result<bool> {
    let p = obj_path(prefix)?;
    Ok(store.list(Some(&p)).next().await.is_none())
}
