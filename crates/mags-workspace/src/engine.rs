//! [`Engine`]: versioned, incremental snapshots of workspace disks, and
//! [`Blobs`]: uploaded files, streamed into the same object store.
//!
//! A snapshot ([`Engine::stage`]) hashes the disk's data chunks, uploads
//! only chunks its parent version does not have, then writes the new
//! manifest under a name no object has yet: nothing in the store is ever
//! replaced. The staged version becomes current only when its caller
//! records it (the control layer's compare-and-set in the database); one
//! that loses is never referenced, and [`Engine::gc`] collects it.
//! Garbage collection works from the caller's list of live manifests
//! ([`Live`]) and never deletes an object younger than its grace period
//! (a concurrent snapshot may be about to reference it).

use crate::disk::{self, HashedChunk};
use crate::manifest::{self, ChunkRef, LatestRef, Manifest, VersionKey};
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

/// A version written to object storage but not current yet: its caller
/// makes it current (or, having lost the race, leaves it to GC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    /// The manifest's object key (new: no other version has it).
    pub object: String,
    pub manifest: Manifest,
    pub report: SnapshotReport,
}

/// What garbage collection keeps: the manifests of every live version,
/// and which workspaces that list covers. A legacy manifest (an older
/// release's name) of a workspace the list does not cover is kept, and
/// so are its chunks: its versions have not been recorded yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Live {
    /// Manifest object keys.
    pub manifests: HashSet<String>,
    /// Workspace keys whose versions are all in `manifests`.
    pub workspaces: HashSet<String>,
}

/// What a garbage collection deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcReport {
    pub chunks: usize,
    pub manifests: usize,
}

/// The snapshot store; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    objects: Objects,
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
    /// An engine over `objects` (how many versions are kept is the
    /// caller's record's business).
    pub fn new(objects: Objects) -> Engine {
        Engine {
            objects,
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

    /// The version an older release's `latest` ref names, if any (read
    /// once per workspace, to record it in the database).
    pub async fn legacy_latest(&self, key: &str) -> Result<Option<Manifest>> {
        manifest::check_key(key)?;
        let lk = manifest::latest_key(key);
        let Some(raw) = self.objects.get_opt(&lk).await? else {
            return Ok(None);
        };
        let r: LatestRef =
            serde_json::from_slice(&raw).map_err(|source| Error::Decode { key: lk, source })?;
        let vk = manifest::version_key(key, r.version);
        self.manifest_at(&vk).await.map(Some)
    }

    /// The manifest stored at object key `object`.
    pub async fn manifest_at(&self, object: &str) -> Result<Manifest> {
        let raw = self
            .objects
            .get_opt(object)
            .await?
            .ok_or_else(|| Error::NoVersion(object.to_string()))?;
        serde_json::from_slice(&raw).map_err(|source| Error::Decode {
            key: object.to_string(),
            source,
        })
    }

    /// Every manifest object of `key` (current, kept, or a lost race's),
    /// with its object key, by version.
    pub async fn stored(&self, key: &str) -> Result<Vec<(VersionKey, String)>> {
        manifest::check_key(key)?;
        let prefix = obj_path(&manifest::versions_prefix(key))?;
        let mut v: Vec<(VersionKey, String)> = self
            .objects
            .store
            .list(Some(&prefix))
            .map_ok(|m| m.location.to_string())
            .try_collect::<Vec<_>>()
            .await?
            .into_iter()
            .filter_map(|k| manifest::parse_manifest_key(&k).map(|v| (v, k)))
            .collect();
        v.sort_by(|a, b| (a.0.version, &a.1).cmp(&(b.0.version, &b.1)));
        Ok(v)
    }

    /// The highest-numbered manifest of `key`, for readers without the
    /// database (diagnostics, tests): only the database knows which
    /// version is current, and a lost race's manifest can share a number
    /// until it is collected.
    pub async fn newest_stored(&self, key: &str) -> Result<Option<Manifest>> {
        match self.stored(key).await?.pop() {
            Some((_, object)) => self.manifest_at(&object).await.map(Some),
            None => Ok(None),
        }
    }

    /// Writes the disk image at `disk` to object storage as the version of
    /// `key` after `parent` (incremental against it), under a new manifest
    /// name; `None` if the disk matches `parent` (nothing written). The
    /// disk must not change meanwhile (the VM is stopped, or its
    /// filesystem frozen). The version is not current until the caller
    /// records it.
    pub async fn stage(
        &self,
        key: &str,
        disk: &Path,
        parent: Option<&Manifest>,
    ) -> Result<Option<Staged>> {
        manifest::check_key(key)?;
        let t0 = Instant::now();
        let _ws = self.ws_lock(key).await;
        let _gc = self.gc_lock.read().await;
        let chunk_size = parent.map_or(self.chunk_size, |p| p.chunk_size);
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
        if let Some(p) = parent {
            if p.size == size && p.chunks == new_refs {
                return Ok(None);
            }
        }
        // Chunks the parent references exist (it is live, so they were
        // durable before it was); everything else is uploaded, even a
        // chunk some other version already stored: its bytes are the same
        // (the name is their hash), and the fresh write is what keeps GC,
        // which spares objects younger than its grace period, from
        // collecting it before this version is recorded. No existence
        // probe: a chunk found by one could be collected meanwhile.
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

        let version = parent.map_or(1, |p| p.version + 1);
        let m = Manifest {
            format: manifest::FORMAT,
            workspace: key.to_string(),
            version,
            size,
            chunk_size,
            created_ms: now_ms(),
            parent: parent.map(|p| format!("{}@{}", p.workspace, p.version)),
            chunks: new_refs,
        };
        let object = self.write_manifest(key, &m).await?;
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
            "workspace snapshot written"
        );
        Ok(Some(Staged {
            object,
            report: SnapshotReport {
                version,
                created: true,
                size,
                chunks: m.chunks.len(),
                uploaded_chunks,
                uploaded_bytes,
                ms,
            },
            manifest: m,
        }))
    }

    /// Writes a manifest under a new name; returns the name.
    async fn write_manifest(&self, key: &str, m: &Manifest) -> Result<String> {
        let body = serde_json::to_vec(m).map_err(|source| Error::Decode {
            key: key.to_string(),
            source,
        })?;
        let object = manifest::new_version_key(key, m.version);
        self.objects.put_new(&object, Bytes::from(body)).await?;
        Ok(object)
    }

    /// Deletes manifests of versions no longer kept (best effort: what is
    /// left is collected by [`Engine::gc`]).
    pub async fn prune(&self, objects: &[String]) {
        for k in objects {
            if let Err(e) = self.objects.delete(k).await {
                tracing::warn!(manifest = %k, error = %e.chain(), "cannot prune a version");
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

    /// Stages version 1 of workspace `to` as a copy of `from`: the new
    /// manifest references the same chunks, no data is copied. The caller
    /// records it, which fails if `to` already has a version.
    pub async fn fork(&self, from: &Manifest, to: &str) -> Result<Staged> {
        manifest::check_key(to)?;
        let t0 = Instant::now();
        let _ws = self.ws_lock(to).await;
        let _gc = self.gc_lock.read().await;
        let m = Manifest {
            workspace: to.to_string(),
            version: 1,
            created_ms: now_ms(),
            parent: Some(format!("{}@{}", from.workspace, from.version)),
            ..from.clone()
        };
        let object = self.write_manifest(to, &m).await?;
        Ok(Staged {
            object,
            report: SnapshotReport {
                version: 1,
                created: true,
                size: m.size,
                chunks: m.chunks.len(),
                uploaded_chunks: 0,
                uploaded_bytes: 0,
                ms: t0.elapsed().as_millis() as u64,
            },
            manifest: m,
        })
    }

    /// Deletes every object of workspace `key` (an older release's ref
    /// first); its chunks are left to [`Engine::gc`]. Returns how many.
    pub async fn delete(&self, key: &str) -> Result<usize> {
        manifest::check_key(key)?;
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
        for k in &keys {
            self.objects.delete(k.as_ref()).await?;
        }
        Ok(keys.len())
    }

    /// Deletes what no live version needs and that is older than `grace`:
    /// manifests not in `live` (pruned versions, lost races) and chunks no
    /// kept manifest references. A legacy manifest of a workspace `live`
    /// does not cover is kept, with its chunks.
    pub async fn gc(&self, live: &Live, grace: Duration) -> Result<GcReport> {
        let _gc = self.gc_lock.write().await;
        let cutoff = std::time::SystemTime::now()
            .checked_sub(grace)
            .unwrap_or(std::time::UNIX_EPOCH);
        let old =
            |m: &object_store::ObjectMeta| std::time::SystemTime::from(m.last_modified) < cutoff;
        let prefix = obj_path("ws")?;
        let manifests: Vec<(VersionKey, object_store::ObjectMeta)> = self
            .objects
            .store
            .list(Some(&prefix))
            .try_collect::<Vec<_>>()
            .await?
            .into_iter()
            .filter_map(|m| manifest::parse_manifest_key(m.location.as_ref()).map(|k| (k, m)))
            .collect();
        let mut keep: Vec<String> = live.manifests.iter().cloned().collect();
        let mut dead: Vec<ObjPath> = Vec::new();
        for (k, m) in manifests {
            let object = m.location.to_string();
            if live.manifests.contains(&object) {
                continue;
            }
            if k.legacy && !live.workspaces.contains(&k.workspace) {
                keep.push(object);
            } else if old(&m) {
                dead.push(m.location);
            }
        }
        let mut referenced: HashSet<String> = HashSet::new();
        for k in &keep {
            // A live version whose manifest is missing references nothing
            // that can still be read; a store error stops the collection.
            let Some(raw) = self.objects.get_opt(k).await? else {
                tracing::warn!(manifest = %k, "a live version's manifest is missing");
                continue;
            };
            let m: Manifest = serde_json::from_slice(&raw).map_err(|source| Error::Decode {
                key: k.clone(),
                source,
            })?;
            referenced.extend(m.chunks.into_iter().map(|c| c.hash));
        }
        let chunks = obj_path("chunks")?;
        let garbage: Vec<ObjPath> = self
            .objects
            .store
            .list(Some(&chunks))
            .try_filter(|m| {
                let hash = m.location.filename().unwrap_or_default();
                futures::future::ready(old(m) && !referenced.contains(hash))
            })
            .map_ok(|m| m.location)
            .try_collect()
            .await?;
        for k in dead.iter().chain(&garbage) {
            self.objects.delete(k.as_ref()).await?;
        }
        let report = GcReport {
            chunks: garbage.len(),
            manifests: dead.len(),
        };
        if report != GcReport::default() {
            tracing::info!(
                chunks = report.chunks,
                manifests = report.manifests,
                "collected unreferenced objects"
            );
        }
        Ok(report)
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
