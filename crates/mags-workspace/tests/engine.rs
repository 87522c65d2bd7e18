//! The storage engine against a local directory: round trips, incremental
//! uploads, pruning, forks without copying, deletion with garbage
//! collection, and a sync cut off midway.

use mags_workspace::engine::list_keys;
use mags_workspace::{Engine, ObjectConfig, Objects};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

const CHUNK: u64 = 1 << 20;

fn engine(dir: &Path) -> Engine {
    let objects = Objects::open(&ObjectConfig::Local(dir.join("objects"))).expect("objects");
    Engine::new(objects, 3).with_chunk_size(CHUNK)
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
    let r1 = e.snapshot("u/ws", &src).await.expect("snapshot 1");
    assert!(r1.created);
    assert_eq!((r1.version, r1.chunks, r1.uploaded_chunks), (1, 8, 8));

    // Unchanged: nothing written, same version.
    let r = e.snapshot("u/ws", &src).await.expect("snapshot again");
    assert!(!r.created);
    assert_eq!(r.version, 1);

    // One small change: one chunk uploaded.
    f.write_all_at(b"changed", 3 * CHUNK + 100).expect("write");
    let r2 = e.snapshot("u/ws", &src).await.expect("snapshot 2");
    assert_eq!((r2.version, r2.uploaded_chunks), (2, 1));

    let out = dir.path().join("restored");
    let m = e.latest("u/ws").await.expect("latest").expect("some");
    let rr = e.restore(&m, &out).await.expect("restore");
    assert_eq!(rr.version, 2);
    assert!(same(&src, &out));
    let alloc = mags_workspace::disk::allocated_bytes(&out).expect("stat");
    assert!(
        alloc <= 9 * CHUNK,
        "holes stay holes: {alloc} bytes allocated"
    );

    // Version 1 is still readable.
    let v1 = e.manifest("u/ws", 1).await.expect("v1");
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
    for i in 0..5u8 {
        f.write_all_at(&[i + 1; 4096], 0).expect("write");
        e.snapshot("u/ws", &src).await.expect("snapshot");
    }
    assert_eq!(e.versions("u/ws").await.expect("versions"), vec![3, 4, 5]);
    // Chunks of pruned versions go at the next collection.
    assert_eq!(e.gc(Duration::ZERO).await.expect("gc"), 2);
    let m = e.latest("u/ws").await.expect("latest").expect("some");
    e.restore(&m, &dir.path().join("r")).await.expect("restore");

    e.delete("u/ws").await.expect("delete");
    e.gc(Duration::ZERO).await.expect("gc");
    assert!(e.latest("u/ws").await.expect("latest").is_none());
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
    e.snapshot("u/base", &src).await.expect("snapshot");
    let chunks_before = list_keys(e.objects(), "chunks").await.expect("list").len();

    let base = e.latest("u/base").await.expect("latest").expect("some");
    let forked = e.fork(&base, "u/fork").await.expect("fork");
    assert_eq!(forked.chunks, base.chunks);
    assert_eq!(
        list_keys(e.objects(), "chunks").await.expect("list").len(),
        chunks_before,
        "forking copies no data"
    );
    assert!(
        e.fork(&base, "u/fork").await.is_err(),
        "a fork target must be new"
    );

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
        .snapshot("u/fork", &fork_disk)
        .await
        .expect("snapshot fork");
    assert_eq!((r.version, r.uploaded_chunks), (2, 1));
    assert_eq!(e.latest("u/base").await.expect("l").expect("s"), base);

    // Deleting the base keeps the chunks the fork still uses.
    e.delete("u/base").await.expect("delete base");
    e.gc(Duration::ZERO).await.expect("gc");
    let m = e.latest("u/fork").await.expect("l").expect("s");
    let out = dir.path().join("fork-restored");
    e.restore(&m, &out).await.expect("restore fork");
    assert!(same(&out, &fork_disk));
}

/// A sync that dies after uploading chunks but before its ref is moved
/// leaves the previous version as the acknowledged one, whole.
#[tokio::test]
async fn an_interrupted_sync_leaves_the_old_version_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path());
    let src = dir.path().join("disk");
    let f = disk(&src, 32 * CHUNK);
    f.write_all_at(&[1u8; 3 * CHUNK as usize], 0)
        .expect("write");
    e.snapshot("u/ws", &src).await.expect("v1");
    let v1_copy = dir.path().join("v1-copy");
    std::fs::copy(&src, &v1_copy).expect("copy");

    // Rewrite everything, and cut the sync off while it uploads.
    f.write_all_at(&[2u8; 20 * CHUNK as usize], 0)
        .expect("write");
    let cut = tokio::time::timeout(Duration::from_millis(5), e.snapshot("u/ws", &src)).await;
    assert!(cut.is_err(), "the sync should still have been running");

    let m = e.latest("u/ws").await.expect("latest").expect("some");
    assert_eq!(m.version, 1);
    let out = dir.path().join("after-crash");
    e.restore(&m, &out).await.expect("restore");
    assert!(same(&out, &v1_copy));
}
