//! Workspaces across hosts: two managers, each with its own cache
//! directory, on one Postgres schema (`MAGS_TEST_POSTGRES_URL`) and one S3
//! bucket (a real `s3s-fs`, `MAGS_TEST_S3S_FS` or `PATH`); both required,
//! a test never skips itself. Saves from one parent version race and one
//! wins, nothing in the bucket is ever replaced, a janitor with a stale
//! cache stores nothing, GC beside a snapshot keeps every live chunk, and
//! an older release's `latest` ref still restores.

use super::*;
use mags_api::JobState;
use mags_store::{clock, Finish, Head, NewJob};
use mags_workspace::S3Config;
use sqlx::Executor as _;
use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

const BUCKET: &str = "mags-ws";
/// Where each test writes its marker: inside the 1 GiB disk, past the
/// filesystem's first metadata.
const MARK: u64 = 300 << 20;

fn s3s_fs() -> PathBuf {
    if let Some(p) = std::env::var_os("MAGS_TEST_S3S_FS").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join("s3s-fs"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "s3s-fs not found (set MAGS_TEST_S3S_FS or put it on PATH): install it with \
                 `cargo install s3s-fs@0.14.1 --locked --features binary`"
            )
        })
}

/// A real S3 server on a loopback port; killed on drop.
struct S3 {
    child: Child,
    port: u16,
    _root: tempfile::TempDir,
}

impl S3 {
    fn start() -> S3 {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(root.path().join(BUCKET)).expect("bucket dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new(s3s_fs())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--access-key",
                "mags-test",
                "--secret-key",
                "mags-test-secret",
            ])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        S3 {
            child,
            port,
            _root: root,
        }
    }

    fn config(&self) -> ObjectConfig {
        ObjectConfig::S3(S3Config {
            endpoint: Some(format!("http://127.0.0.1:{}", self.port)),
            bucket: BUCKET.into(),
            region: None,
            access_key_id: Some("mags-test".into()),
            secret_access_key: Some("mags-test-secret".into()),
        })
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Postgres schema of the test's own.
struct Pg {
    admin: sqlx::AnyPool,
    schema: String,
    url: String,
}

impl Pg {
    async fn new() -> Pg {
        let base = std::env::var("MAGS_TEST_POSTGRES_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| {
                panic!(
                    "MAGS_TEST_POSTGRES_URL is not set: start PostgreSQL with \
                     `eval \"$(scripts/test-postgres)\"`"
                )
            });
        sqlx::any::install_default_drivers();
        let schema = format!("mags_wsc_{}", uuid::Uuid::new_v4().simple());
        let admin = sqlx::AnyPool::connect(&base).await.expect("Postgres");
        admin
            .execute(format!("CREATE SCHEMA {schema}").as_str())
            .await
            .expect("create schema");
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
        Pg { admin, schema, url }
    }

    async fn drop(self) {
        self.admin
            .execute(format!("DROP SCHEMA {} CASCADE", self.schema).as_str())
            .await
            .expect("drop schema");
    }
}

/// One host: its own database connection and cache directory.
struct Host {
    ws: Arc<Inner>,
    _data: tempfile::TempDir,
}

async fn host(pg: &Pg, s3: &S3, cache_window: Duration) -> Host {
    let data = tempfile::tempdir().expect("data dir");
    let store = Store::connect(&pg.url).await.expect("connect");
    let config = StorageConfig {
        objects: s3.config(),
        cache_window,
        versions: 2,
    };
    let ws = Inner::new(store, data.path(), &config).expect("workspaces");
    Host { ws, _data: data }
}

/// A persistent job of `user_id` on `name`, stored and holding it.
async fn claimed_job(store: &Store, user_id: &str, name: &str) -> Job {
    let spec = NewJob {
        id: uuid::Uuid::new_v4().to_string(),
        user_id: user_id.into(),
        name: Some(name.into()),
        workspace_id: Some(name.into()),
        persistent: true,
        script: "true".into(),
        disk_gb: 1,
        created_at: clock::monotonic_ms(),
        ..NewJob::default()
    };
    let job = store.insert_job(&spec).await.expect("insert job");
    let holder = store.claim_workspace(user_id, name, &job.id).await;
    assert_eq!(holder.expect("claim"), None);
    job
}

async fn end(store: &Store, job_id: &str) {
    let done = Finish {
        status: JobState::Completed,
        exit_code: Some(0),
        error: None,
        script_duration_ms: Some(1),
    };
    assert!(store.finish_job(job_id, &done).await.expect("finish job"));
}

fn disk_of(lease: &Lease) -> PathBuf {
    match &lease.disk {
        DiskSource::Existing { path, .. } => path.clone(),
        DiskSource::Fresh => panic!("a workspace lease has its disk"),
    }
}

fn write_mark(disk: &Path, mark: &[u8; 16]) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(disk)
        .expect("open disk");
    f.write_all_at(mark, MARK).expect("write mark");
}

fn mark(s: &str) -> [u8; 16] {
    let mut m = [b'.'; 16];
    m[..s.len()].copy_from_slice(s.as_bytes());
    m
}

/// The current version of `user/name` per the database, and its marker.
async fn current(h: &Host, user_id: &str, name: &str) -> (u64, [u8; 16]) {
    let m =
        h.ws.head(user_id, name, true)
            .await
            .expect("head")
            .expect("a stored version");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("restored");
    h.ws.engine.restore(&m, &out).await.expect("restore");
    let mut got = [0u8; 16];
    std::fs::File::open(&out)
        .expect("open")
        .read_exact_at(&mut got, MARK)
        .expect("read mark");
    (m.version, got)
}

/// Every object in the bucket: its etag (from a HEAD: the listing has
/// none) and last-modified time.
async fn listing(h: &Host) -> BTreeMap<String, (Option<String>, String)> {
    use futures::TryStreamExt as _;
    let store = h.ws.engine.objects().store();
    let keys: Vec<object_store::path::Path> = store
        .list(None)
        .map_ok(|m| m.location)
        .try_collect()
        .await
        .expect("list bucket");
    let mut out = BTreeMap::new();
    for k in keys {
        let m = store.head(&k).await.expect("head");
        assert!(m.e_tag.is_some(), "the S3 server gives etags");
        out.insert(k.to_string(), (m.e_tag, m.last_modified.to_rfc3339()));
    }
    out
}

/// No object of `before` was written again: each one still there is
/// unchanged; one gone must be a manifest (a pruned version's).
fn nothing_replaced(
    before: &BTreeMap<String, (Option<String>, String)>,
    after: &BTreeMap<String, (Option<String>, String)>,
) {
    for (key, was) in before {
        match after.get(key) {
            Some(now) => assert_eq!(now, was, "object {key} was replaced"),
            None => assert!(
                mags_workspace::manifest::parse_manifest_key(key).is_some(),
                "object {key} was removed"
            ),
        }
    }
}

/// A lease given up the way a crash leaves it: the disk may hold writes
/// no version has (`cache.json` says unsaved), and nothing saved it.
fn abandon(h: &Host, lease: &Lease) {
    if let Some(ws) = &lease.ws {
        lock(&ws.guard).take();
    }
    lock(&h.ws.leases).remove(&lease.job_id);
}

fn maintenance(user_id: &str, name: &str) -> Job {
    manage::maintenance_job(user_id, name, true, 1)
}

/// Stores version 1 of `name` from host `h` through a job.
async fn first_version(h: &Host, user_id: &str, name: &str, m: &str) {
    let store = h.ws.store();
    let job = claimed_job(store, user_id, name).await;
    let lease = h.ws.prepare(&job).await.expect("prepare").expect("lease");
    write_mark(&disk_of(&lease), &mark(m));
    h.ws.finish(&lease).await.expect("first save");
    end(store, &job.id).await;
}

#[tokio::test]
async fn two_hosts_saving_from_one_version_one_wins_and_nothing_is_replaced() {
    let (s3, pg) = (S3::start(), Pg::new().await);
    let a = host(&pg, &s3, Duration::from_secs(600)).await;
    let b = host(&pg, &s3, Duration::from_secs(600)).await;
    let user =
        a.ws.store()
            .create_user("alice", false)
            .await
            .expect("user");
    first_version(&a, &user.id, "w", "v1").await;
    assert_eq!(current(&b, &user.id, "w").await, (1, mark("v1")));

    for round in 1..=3u64 {
        // Each host's cache is made from the current version.
        let la =
            a.ws.prepare_maintenance(&maintenance(&user.id, "w"), "w")
                .await;
        let lb =
            b.ws.prepare_maintenance(&maintenance(&user.id, "w"), "w")
                .await;
        let (la, lb) = (la.expect("prepare a"), lb.expect("prepare b"));
        write_mark(&disk_of(&la), &mark(&format!("a{round}")));
        write_mark(&disk_of(&lb), &mark(&format!("b{round}")));
        let before = listing(&a).await;
        let (ra, rb) = tokio::join!(a.ws.finish(&la), b.ws.finish(&lb));
        let after = listing(&a).await;
        nothing_replaced(&before, &after);
        let winner = match (&ra, &rb) {
            (Ok(()), Err(e)) => {
                assert!(
                    matches!(e, WsError::Conflict { base, current, .. }
                    if *base == round && *current == round + 1),
                    "{e}"
                );
                "a"
            }
            (Err(e), Ok(())) => {
                assert!(
                    matches!(e, WsError::Conflict { base, current, .. }
                    if *base == round && *current == round + 1),
                    "{e}"
                );
                "b"
            }
            _ => panic!("exactly one save wins: {ra:?} / {rb:?}"),
        };
        let (version, got) = current(&a, &user.id, "w").await;
        assert_eq!(version, round + 1);
        assert_eq!(
            got,
            mark(&format!("{winner}{round}")),
            "the winner's content"
        );
        assert_eq!(current(&b, &user.id, "w").await.1, got, "both hosts agree");
    }
    // The losers' manifests were written (new names) but never recorded.
    let kept =
        a.ws.store()
            .workspace_versions(&user.id, "w")
            .await
            .expect("kept");
    assert_eq!(
        kept.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![3, 4]
    );
    let stored =
        a.ws.engine
            .stored(&format!("{}/w", user.id))
            .await
            .expect("stored");
    assert!(
        stored.len() > kept.len(),
        "lost races leave garbage: {stored:?}"
    );
    // A manifest's name is taken for good: the store refuses to replace it.
    let before = listing(&a).await;
    let again =
        a.ws.engine
            .objects()
            .put_new(&kept[1].manifest, bytes::Bytes::from_static(b"{}"))
            .await;
    assert!(
        matches!(again, Err(mags_workspace::Error::Taken(_))),
        "{again:?}"
    );
    assert_eq!(listing(&a).await, before);
    pg.drop().await;
}

#[tokio::test]
async fn a_janitor_with_a_stale_cache_stores_nothing() {
    let (s3, pg) = (S3::start(), Pg::new().await);
    // A's janitor sees every workspace as idle at once.
    let a = host(&pg, &s3, Duration::ZERO).await;
    let b = host(&pg, &s3, Duration::from_secs(600)).await;
    let user = a.ws.store().create_user("bob", false).await.expect("user");

    // A caches version 1 and holds writes no version has (A crashed).
    first_version(&a, &user.id, "w", "v1").await;
    let job = claimed_job(a.ws.store(), &user.id, "w").await;
    let la = a.ws.prepare(&job).await.expect("prepare").expect("lease");
    write_mark(&disk_of(&la), &mark("a-unsaved"));
    abandon(&a, &la);
    end(a.ws.store(), &job.id).await;
    let a_dir = a.ws.ws_dir(&user.id, "w");
    assert!(read_meta(&a_dir).unsaved);

    // While B's job holds the workspace, the janitor leaves it alone.
    let job = claimed_job(b.ws.store(), &user.id, "w").await;
    let lb = b.ws.prepare(&job).await.expect("prepare").expect("lease");
    a.ws.expire_caches().await.expect("janitor");
    assert!(a_dir.join("disk.ext4").exists(), "held elsewhere: kept");
    // An idle save racing that job is fenced out.
    let raced =
        a.ws.snapshot_cache(&user.id, "w", &a_dir, "race", false, Fence::Idle)
            .await;
    assert!(
        matches!(&raced, Err(WsError::Conflict { holder: Some(h), .. }) if *h == job.id),
        "{raced:?}"
    );
    // B stores version 2 and ends.
    write_mark(&disk_of(&lb), &mark("b"));
    b.ws.finish(&lb).await.expect("b saves");
    end(b.ws.store(), &job.id).await;
    assert_eq!(current(&b, &user.id, "w").await, (2, mark("b")));

    let before = listing(&a).await;
    a.ws.expire_caches().await.expect("janitor");
    assert_eq!(listing(&a).await, before, "the janitor wrote nothing");
    assert_eq!(
        current(&a, &user.id, "w").await,
        (2, mark("b")),
        "B's version stays"
    );
    assert!(!a_dir.exists(), "the stale cache is dropped");

    // A cache made from the current version is stored by the janitor.
    first_version(&a, &user.id, "w2", "w2-v1").await;
    let job = claimed_job(a.ws.store(), &user.id, "w2").await;
    let l = a.ws.prepare(&job).await.expect("prepare").expect("lease");
    write_mark(&disk_of(&l), &mark("w2-unsaved"));
    abandon(&a, &l);
    end(a.ws.store(), &job.id).await;
    a.ws.expire_caches().await.expect("janitor");
    assert_eq!(current(&b, &user.id, "w2").await, (2, mark("w2-unsaved")));
    assert!(!a.ws.ws_dir(&user.id, "w2").exists());
    pg.drop().await;
}

#[tokio::test]
async fn gc_beside_a_snapshot_keeps_every_live_chunk() {
    let (s3, pg) = (S3::start(), Pg::new().await);
    let a = host(&pg, &s3, Duration::from_secs(600)).await;
    let b = host(&pg, &s3, Duration::from_secs(600)).await;
    let user =
        a.ws.store()
            .create_user("carol", false)
            .await
            .expect("user");
    first_version(&b, &user.id, "w", "v1").await;
    let grace = Duration::from_millis(800);
    let mut collected = 0;
    for round in 2..=6u64 {
        // Older chunks are past the grace: only the live list keeps them.
        tokio::time::sleep(grace + Duration::from_millis(200)).await;
        let lb =
            b.ws.prepare_maintenance(&maintenance(&user.id, "w"), "w")
                .await;
        let lb = lb.expect("prepare");
        let disk = disk_of(&lb);
        write_mark(&disk, &mark(&format!("v{round}")));
        // New data in a chunk of its own each round, garbage once pruned.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&disk)
            .expect("open");
        f.write_all_at(&[round as u8; 4096], (400 + round * 16) << 20)
            .expect("write");
        let done = std::sync::atomic::AtomicBool::new(false);
        let snapshot = async {
            let r = b.ws.finish(&lb).await;
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            r
        };
        let gc = async {
            let mut runs = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) && runs < 200 {
                collected += a.ws.collect_garbage(grace).await.expect("gc").chunks;
                runs += 1;
            }
            runs
        };
        let (saved, runs) = tokio::join!(snapshot, gc);
        saved.expect("save");
        assert!(runs > 0);
        collected += a.ws.collect_garbage(grace).await.expect("gc").chunks;

        // Every chunk of every version the database lists is there.
        let live = a.ws.store().live_workspace_versions().await.expect("live");
        for object in &live.manifests {
            let m =
                a.ws.engine
                    .manifest_at(object)
                    .await
                    .expect("live manifest");
            for c in &m.chunks {
                let key = mags_workspace::manifest::chunk_key(&c.hash);
                let path = object_store::path::Path::from(key.as_str());
                let head = a.ws.engine.objects().store().head(&path).await;
                assert!(
                    head.is_ok(),
                    "round {round}: live chunk {key} was collected"
                );
            }
        }
        assert_eq!(
            current(&a, &user.id, "w").await,
            (round, mark(&format!("v{round}")))
        );
    }
    assert!(collected > 0, "pruned versions' chunks are collected");
    pg.drop().await;
}

#[tokio::test]
async fn an_older_releases_latest_ref_still_restores() {
    let (s3, pg) = (S3::start(), Pg::new().await);
    let a = host(&pg, &s3, Duration::from_secs(600)).await;
    let user = a.ws.store().create_user("dave", false).await.expect("user");
    let key = format!("{}/old", user.id);

    // Lay a version out as an older release did: named by number, and a
    // `latest` ref, with no version in the database.
    let src_dir = tempfile::tempdir().expect("tempdir");
    let src = src_dir.path().join("disk");
    mags_vm::disk::create_disk(&src, 1 << 30)
        .await
        .expect("disk");
    write_mark(&src, &mark("legacy"));
    let staged = a.ws.engine.stage(&key, &src, None).await.expect("stage");
    let staged = staged.expect("new");
    let objects = a.ws.engine.objects();
    let legacy = mags_workspace::manifest::version_key(&key, 1);
    let body = serde_json::to_vec(&staged.manifest).expect("json");
    objects
        .put_durable(&legacy, body.into())
        .await
        .expect("manifest");
    objects.delete(&staged.object).await.expect("delete");
    let latest = mags_workspace::manifest::latest_key(&key);
    let r = bytes::Bytes::from_static(br#"{"version":1}"#);
    objects.put_durable(&latest, r).await.expect("ref");
    a.ws.store()
        .mark_workspace_persistent(&user.id, "old")
        .await
        .expect("record");
    assert_eq!(
        a.ws.store()
            .workspace_head(&user.id, "old")
            .await
            .expect("head"),
        Head::Unrecorded
    );
    let before = listing(&a).await;

    // GC before anything read it keeps it whole.
    a.ws.collect_garbage(Duration::ZERO).await.expect("gc");
    nothing_replaced(&before, &listing(&a).await);

    // A job restores it; the database records it.
    let job = claimed_job(a.ws.store(), &user.id, "old").await;
    let lease = a.ws.prepare(&job).await.expect("prepare").expect("lease");
    let mut got = [0u8; 16];
    std::fs::File::open(disk_of(&lease))
        .expect("open")
        .read_exact_at(&mut got, MARK)
        .expect("read");
    assert_eq!(got, mark("legacy"));
    match a
        .ws
        .store()
        .workspace_head(&user.id, "old")
        .await
        .expect("head")
    {
        Head::At(row) => assert_eq!((row.version, row.manifest.as_str()), (1, legacy.as_str())),
        other => panic!("not recorded: {other:?}"),
    }
    write_mark(&disk_of(&lease), &mark("new"));
    a.ws.finish(&lease).await.expect("save");
    end(a.ws.store(), &job.id).await;
    a.ws.collect_garbage(Duration::ZERO).await.expect("gc");
    nothing_replaced(&before, &listing(&a).await);

    // What `mags workspace list` shows.
    let ws = Workspaces {
        inner: Some(a.ws.clone()),
    };
    let (list, _) = ws
        .list(&user.id, mags_store::Page::first(10))
        .await
        .expect("list");
    assert_eq!((list[0].versions, list[0].latest_version), (2, Some(2)));
    assert_eq!(current(&a, &user.id, "old").await, (2, mark("new")));
    pg.drop().await;
}
