//! The storage engine against a local directory: round trips, incremental
//! uploads, pruning, forks without copying, deletion with garbage
//! collection from a list of live versions, a sync cut off midway, staged
//! versions that never replace an object, and older releases' layout.
//!
//! The record of which version is current is the caller's (the database,
//! in mags-control); [`Record`] keeps it in memory here.

use bytes::Bytes;
use mags_workspace::engine::list_keys;
use mags_workspace::{Engine, Live, Manifest, ObjectConfig, Objects};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

const CHUNK: u64 = 1 << 20;
const KEEP: usize = 3;

fn engine(dir: &Path) -> Engine {
    let objects = Objects::open(&ObjectConfig::Local(dir.join("objects"))).expect("objects");
    Engine::new(objects).with_chunk_size(CHUNK)
}

fn disk(path: &Path, size: u64) -> File {
    let f = File::options()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .expect("disk");
    f.set_len(size).expect("len");
    f
}

fn same(a: &Path, b: &Path) -> bool {
    std::fs::read(a).expect("a") == std::fs::read(b).expect("b")
}

/// Kept versions per workspace, newest last: what the database records.
#[derive(Default)]
struct Record(HashMap<String, Vec<(String, Manifest)>>);

impl Record {
    fn current(&self, key: &str) -> Option<&Manifest> {
        self.0.get(key).and_then(|v| v.last()).map(|(_, m)| m)
    }

    /// Stages `src` on the current version and records it; prunes.
    async fn snapshot(&mut self, e: &Engine, key: &str, src: &Path) -> Option<u64> {
        let parent = self.current(key).cloned();
        let staged = e.stage(key, src, parent.as_ref()).await.expect("stage")?;
        let kept = self.0.entry(key.to_string()).or_default();
        kept.push((staged.object, staged.manifest));
        let drop_n = kept.len().saturating_sub(KEEP);
        let pruned: Vec<String> = kept.drain(..drop_n).map(|(o, _)| o).collect();
        e.prune(&pruned).await;
        Some(staged.report.version)
    }

    fn live(&self) -> Live {
        Live {
            manifests: self.0.values().flatten().map(|(o, _)| o.clone()).collect(),
            workspaces: self.0.keys().cloned().collect(),
        }
    }
}

#[tokio::test]
async fn snapshot_restore_round_trip_is_sparse_and_incremental() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path());
    let src = dir.path().join("disk");
    let f = disk(&src, 64 * CHUNK);
    for i in 0..8u64 {
        f.write_all_at(&vec![i as u8 + 1; CHUNK as usize], i * 3 * CHUNK)
            .expect("write");
    }
    let s1 = e
        .stage("u/ws", &src, None)
        .await
        .expect("snapshot 1")
        .expect("new");
    let r1 = &s1.report;
    assert!(r1.created);
    assert_eq!((r1.version, r1.chunks, r1.uploaded_chunks), (1, 8, 8));

    // Unchanged: nothing written.
    let again = e
        .stage("u/ws", &src, Some(&s1.manifest))
        .await
        .expect("again");
    assert!(again.is_none());

    // One small change: one chunk uploaded.
    f.write_all_at(b"changed", 3 * CHUNK + 100).expect("write");
    let s2 = e
        .stage("u/ws", &src, Some(&s1.manifest))
        .await
        .expect("snapshot 2")
        .expect("new");
    assert_eq!((s2.report.version, s2.report.uploaded_chunks), (2, 1));
    assert_eq!(s2.manifest.parent.as_deref(), Some("u/ws@1"));

    let out = dir.path().join("restored");
    let m = e.manifest_at(&s2.object).await.expect("manifest");
    let rr = e.restore(&m, &out).await.expect("restore");
    assert_eq!(rr.version, 2);
    assert!(same(&src, &out));
    let alloc = mags_workspace::disk::allocated_bytes(&out).expect("stat");
    assert!(
        alloc <= 9 * CHUNK,
        "holes stay holes: {alloc} bytes allocated"
    );

    // Version 1 is still readable.
    let v1 = e.manifest_at(&s1.object).await.expect("v1");
    let out1 = dir.path().join("v1");
    e.restore(&v1, &out1).await.expect("restore v1");
    let back = std::fs::read(&out1).expect("read");
    assert_eq!(
        &back[(3 * CHUNK) as usize..(3 * CHUNK) as usize + 4],
        &[2, 2, 2, 2]
    );
}

#[tokio::test]
async fn old_versions_are_pruned_and_deleted_chunks_collected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path());
    let src = dir.path().join("disk");
    let f = disk(&src, 8 * CHUNK);
    let mut rec = Record::default();
    for i in 0..5u8 {
        f.write_all_at(&[i + 1; 4096], 0).expect("write");
        rec.snapshot(&e, "u/ws", &src).await.expect("new version");
    }
    let stored: Vec<u64> = e
        .stored("u/ws")
        .await
        .expect("stored")
        .iter()
        .map(|(k, _)| k.version)
        .collect();
    assert_eq!(stored, vec![3, 4, 5]);
    // Chunks of pruned versions go at the next collection.
    let report = e.gc(&rec.live(), Duration::ZERO).await.expect("gc");
    assert_eq!((report.chunks, report.manifests), (2, 0));
    let m = rec.current("u/ws").expect("current").clone();
    e.restore(&m, &dir.path().join("r")).await.expect("restore");

    e.delete("u/ws").await.expect("delete");
    rec.0.remove("u/ws");
    e.gc(&rec.live(), Duration::ZERO).await.expect("gc");
    assert!(e.newest_stored("u/ws").await.expect("stored").is_none());
    let left = list_keys(e.objects(), "chunks").await.expect("list");
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn a_fork_shares_chunks_and_never_changes_its_base() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path());
    let src = dir.path().join("base");
    let f = disk(&src, 16 * CHUNK);
    f.write_all_at(&[9u8; 100_000], 0).expect("write");
    let mut rec = Record::default();
    rec.snapshot(&e, "u/base", &src).await.expect("snapshot");
    let chunks_before = list_keys(e.objects(), "chunks").await.expect("list").len();

    let base = rec.current("u/base").expect("base").clone();
    let staged = e.fork(&base, "u/fork").await.expect("fork");
    let forked = staged.manifest.clone();
    assert_eq!(forked.chunks, base.chunks);
    assert_eq!(forked.version, 1);
    assert_eq!(
        list_keys(e.objects(), "chunks").await.expect("list").len(),
        chunks_before,
        "forking copies no data"
    );
    rec.0
        .insert("u/fork".into(), vec![(staged.object, forked.clone())]);

    // The fork changes; the base does not.
    let fork_disk = dir.path().join("fork");
    e.restore(&forked, &fork_disk).await.expect("restore");
    File::options()
        .write(true)
        .open(&fork_disk)
        .expect("open")
        .write_all_at(b"fork-only", 5 * CHUNK)
        .expect("write");
    let r = e
        .stage("u/fork", &fork_disk, Some(&forked))
        .await
        .expect("snapshot fork")
        .expect("new");
    assert_eq!((r.report.version, r.report.uploaded_chunks), (2, 1));
    rec.0
        .get_mut("u/fork")
        .expect("fork")
        .push((r.object, r.manifest));
    assert_eq!(
        e.newest_stored("u/base").await.expect("l").expect("s"),
        base
    );

    // Deleting the base keeps the chunks the fork still uses.
    e.delete("u/base").await.expect("delete base");
    rec.0.remove("u/base");
    e.gc(&rec.live(), Duration::ZERO).await.expect("gc");
    let m = rec.current("u/fork").expect("fork").clone();
    let out = dir.path().join("fork-restored");
    e.restore(&m, &out).await.expect("restore fork");
    assert!(same(&out, &fork_disk));
}

/// A sync that dies after uploading chunks but before it is recorded
/// leaves the previous version as the current one, whole.
#[tokio::test]
async fn an_interrupted_sync_leaves_the_old_version_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path());
    let src = dir.path().join("disk");
    let f = disk(&src, 32 * CHUNK);
    f.write_all_at(&[1u8; 3 * CHUNK as usize], 0)
        .expect("write");
    let mut rec = Record::default();
    rec.snapshot(&e, "u/ws", &src).await.expect("v1");
    let v1_copy = dir.path().join("v1-copy");
    std::fs::copy(&src, &v1_copy).expect("copy");

    // Rewrite everything, and cut the sync off while it uploads.
    f.write_all_at(&[2u8; 20 * CHUNK as usize], 0)
        .expect("write");
    let v1 = rec.current("u/ws").cloned();
    let cut =
        tokio::time::timeout(Duration::from_millis(5), e.stage("u/ws", &src, v1.as_ref())).await;
    assert!(cut.is_err(), "the sync should still have been running");

    let m = rec.current("u/ws").expect("current").clone();
    assert_eq!(m.version, 1);
    // What the cut sync uploaded is garbage once older than the grace period.
    e.gc(&rec.live(), Duration::ZERO).await.expect("gc");
    let out = dir.path().join("after-crash");
    e.restore(&m, &out).await.expect("restore");
    assert!(same(&out, &v1_copy));
}

/// Two snapshots from the same parent (two hosts) write two manifests
/// under different names; neither replaces anything, and the one never
/// recorded is collected once it is older than the grace period.
#[tokio::test]
async fn staged_versions_never_replace_an_object() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path());
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let (fa, fb) = (disk(&a, 8 * CHUNK), disk(&b, 8 * CHUNK));
    fa.write_all_at(&[1u8; 4096], 0).expect("write");
    fb.write_all_at(&[2u8; 4096], CHUNK).expect("write");
    let mut rec = Record::default();
    std::fs::copy(&a, dir.path().join("base")).expect("copy");
    rec.snapshot(&e, "u/ws", &dir.path().join("base"))
        .await
        .expect("v1");
    let v1 = rec.current("u/ws").cloned();
    fa.write_all_at(b"host a", 4 * CHUNK).expect("write");

    let sa = e
        .stage("u/ws", &a, v1.as_ref())
        .await
        .expect("a")
        .expect("new");
    let sb = e
        .stage("u/ws", &b, v1.as_ref())
        .await
        .expect("b")
        .expect("new");
    assert_eq!((sa.manifest.version, sb.manifest.version), (2, 2));
    assert_ne!(sa.object, sb.object, "two names for two candidates");
    assert_eq!(e.manifest_at(&sa.object).await.expect("a"), sa.manifest);
    assert_eq!(e.manifest_at(&sb.object).await.expect("b"), sb.manifest);
    assert!(matches!(
        e.objects()
            .put_new(&sa.object, Bytes::from_static(b"{}"))
            .await,
        Err(mags_workspace::Error::Taken(_))
    ));

    // B is recorded; A's manifest is garbage, and so is its own chunk.
    rec.0
        .get_mut("u/ws")
        .expect("ws")
        .push((sb.object.clone(), sb.manifest.clone()));
    let young = e
        .gc(&rec.live(), Duration::from_secs(3600))
        .await
        .expect("gc");
    assert_eq!(young, Default::default(), "nothing younger than the grace");
    let report = e.gc(&rec.live(), Duration::ZERO).await.expect("gc");
    assert_eq!((report.manifests, report.chunks), (1, 1));
    assert!(e.manifest_at(&sa.object).await.is_err());
    let out = dir.path().join("restored");
    e.restore(&sb.manifest, &out).await.expect("restore");
    assert!(same(&out, &b));
}

/// An older release's layout (`latest` ref, manifests named by number)
/// stays readable, and GC keeps its chunks until its versions are
/// recorded in the live list.
#[tokio::test]
async fn an_older_releases_layout_is_read_and_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path());
    let src = dir.path().join("disk");
    let f = disk(&src, 8 * CHUNK);
    f.write_all_at(&[7u8; 4096], 0).expect("write");
    let staged = e
        .stage("u/old", &src, None)
        .await
        .expect("stage")
        .expect("new");
    // Lay it out as an older release did: by number, and a `latest` ref.
    let legacy = mags_workspace::manifest::version_key("u/old", 1);
    let body = serde_json::to_vec(&staged.manifest).expect("json");
    let objects = e.objects();
    objects
        .put_durable(&legacy, Bytes::from(body))
        .await
        .expect("legacy manifest");
    objects.delete(&staged.object).await.expect("delete new");
    objects
        .put_durable(
            &mags_workspace::manifest::latest_key("u/old"),
            Bytes::from_static(br#"{"version":1}"#),
        )
        .await
        .expect("legacy ref");

    let m = e.legacy_latest("u/old").await.expect("read").expect("some");
    assert_eq!(m, staged.manifest);
    let stored = e.stored("u/old").await.expect("stored");
    assert_eq!(stored.len(), 1);
    assert!(stored[0].0.legacy);

    // Not recorded yet: kept, chunks and all.
    let report = e.gc(&Live::default(), Duration::ZERO).await.expect("gc");
    assert_eq!(report, Default::default());
    // Recorded (its manifest live): still kept.
    let live = Live {
        manifests: [legacy.clone()].into(),
        workspaces: ["u/old".to_string()].into(),
    };
    assert_eq!(
        e.gc(&live, Duration::ZERO).await.expect("gc"),
        Default::default()
    );
    let out = dir.path().join("restored");
    e.restore(&m, &out).await.expect("restore");
    assert!(same(&out, &src));
    // Recorded, and no longer live (pruned): collected.
    let gone = Live {
        manifests: Default::default(),
        workspaces: ["u/old".to_string()].into(),
    };
    let report = e.gc(&gone, Duration::ZERO).await.expect("gc");
    assert_eq!((report.manifests, report.chunks), (1, 1));
}
