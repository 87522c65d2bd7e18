//! Job output accounting, job deletion and output retention on SQLite and
//! Postgres (`MAGS_TEST_POSTGRES_URL`, required).

mod common;

use mags_api::{JobState, OutputStream};
use mags_store::{clock, Finish, JobDeletion, NewChunk, Store};

fn chunk(seq: i64, bytes: usize) -> NewChunk {
    NewChunk {
        seq,
        stream: OutputStream::Stdout,
        data: vec![b'x'; bytes],
        ts: clock::now_ms(),
    }
}

async fn ended_job(store: &Store, user: &str, output: &[usize]) -> String {
    let mut new = common::job(user, "ws");
    new.workspace_id = None;
    new.persistent = false;
    new.disk_gb = 3;
    let job = store.insert_job(&new).await.expect("insert");
    let chunks: Vec<_> = output
        .iter()
        .enumerate()
        .map(|(i, n)| chunk(i as i64, *n))
        .collect();
    store.append_output(&job.id, &chunks).await.expect("append");
    let done = Finish {
        status: JobState::Completed,
        exit_code: Some(0),
        error: None,
        script_duration_ms: Some(1),
    };
    assert!(store.finish_job(&job.id, &done).await.expect("finish"));
    // Each ends in its own millisecond, so "oldest" is well defined.
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    job.spec.id
}

async fn exercise(store: &Store) {
    let alice = store.create_user("alice", false).await.expect("alice");
    let bob = store.create_user("bob", false).await.expect("bob");

    // Output is counted per job and per user, across appends.
    let a1 = ended_job(store, &alice.id, &[1000, 24]).await;
    store
        .append_output(&a1, &[chunk(2, 1000)])
        .await
        .expect("append more");
    let job = store.job(&a1).await.expect("job").expect("exists");
    assert_eq!((job.output_bytes, job.output_pruned_at), (2024, None));
    let usage = store.disk_usage(&alice.id, 0).await.expect("usage");
    assert_eq!((usage.job_output, usage.total()), (2024, 2024));
    assert_eq!(
        store
            .disk_usage(&bob.id, 0)
            .await
            .expect("usage")
            .job_output,
        0
    );

    // A live job is not deleted; another user's is not found; an ended one
    // goes with its output, keys and URL routes.
    let live = store
        .insert_job(&common::job(&alice.id, "live"))
        .await
        .expect("live job");
    assert_eq!(
        store
            .delete_ended_job(&alice.id, &live.id)
            .await
            .expect("delete"),
        JobDeletion::Live(JobState::Accepted)
    );
    let disks = store.live_disks().await.expect("live disks");
    assert_eq!((disks.jobs, disks.bytes), (0, 0), "waiting: no disk yet");
    assert!(store.mark_running(&live.id, "vm-1").await.expect("running"));
    let disks = store.live_disks().await.expect("live disks");
    assert_eq!((disks.jobs, disks.bytes), (1, 2 << 30));
    assert_eq!(
        store
            .delete_ended_job(&alice.id, &live.id)
            .await
            .expect("delete"),
        JobDeletion::Live(JobState::Running)
    );
    assert_eq!(
        store.delete_ended_job(&bob.id, &a1).await.expect("delete"),
        JobDeletion::NotFound
    );
    store
        .add_ssh_key("SHA256:k", &a1, &alice.id)
        .await
        .expect("key");
    store
        .ensure_access(&a1, &alice.id, 8080, "sub-a1")
        .await
        .expect("access");
    assert_eq!(
        store
            .delete_ended_job(&alice.id, &a1)
            .await
            .expect("delete"),
        JobDeletion::Deleted { output_bytes: 2024 }
    );
    assert!(store.job(&a1).await.expect("job").is_none());
    assert!(store
        .output_after(&a1, -1, 10)
        .await
        .expect("output")
        .is_empty());
    assert!(store
        .ssh_key_owner("SHA256:k")
        .await
        .expect("key")
        .is_none());
    assert!(store.first_access(&a1).await.expect("access").is_none());
    assert_eq!(
        store
            .disk_usage(&alice.id, 0)
            .await
            .expect("usage")
            .job_output,
        0
    );
    assert_eq!(
        store.delete_ended_job(&alice.id, &a1).await.expect("again"),
        JobDeletion::NotFound
    );

    // Pruning frees the oldest ended jobs' output first and keeps the rows.
    let old = ended_job(store, &alice.id, &[500]).await;
    let mid = ended_job(store, &bob.id, &[300]).await;
    let new = ended_job(store, &alice.id, &[200]).await;
    store
        .append_output(&live.id, &[chunk(0, 4000)])
        .await
        .expect("live output");
    assert_eq!(store.output_total().await.expect("total"), 5000);
    let (jobs, freed) = store.prune_oldest_output(600).await.expect("prune");
    assert_eq!((jobs, freed), (2, 800), "the two oldest ended jobs");
    for (id, bytes, pruned) in [(&old, 0, true), (&mid, 0, true), (&new, 200, false)] {
        let j = store.job(id).await.expect("job").expect("kept");
        assert_eq!(
            (j.output_bytes, j.output_pruned_at.is_some()),
            (bytes, pruned)
        );
    }
    assert!(store
        .output_after(&old, -1, 10)
        .await
        .expect("out")
        .is_empty());
    assert_eq!(
        store.output_after(&new, -1, 10).await.expect("out").len(),
        1
    );
    let (jobs, freed) = store
        .prune_oldest_output(u64::MAX)
        .await
        .expect("prune all");
    assert_eq!(
        (jobs, freed),
        (1, 200),
        "a live job's output is never pruned"
    );
    assert_eq!(store.output_total().await.expect("total"), 4000);

    // Age: ended jobs that ended before the cut go, live ones stay.
    let cut = clock::now_ms() + 1;
    let (jobs, _) = store
        .delete_jobs_ended_before(cut, 2)
        .await
        .expect("delete old");
    assert_eq!(jobs, 2, "bounded by the limit");
    let (jobs, _) = store
        .delete_jobs_ended_before(cut, 100)
        .await
        .expect("delete old");
    assert_eq!(jobs, 1);
    for id in [&old, &mid, &new] {
        assert!(store.job(id).await.expect("job").is_none());
    }
    assert!(store.job(&live.id).await.expect("job").is_some());
}

#[tokio::test]
async fn sqlite_retention() {
    let (store, _url, _dir) = common::sqlite().await;
    exercise(&store).await;
    store.close().await;
}

#[tokio::test]
async fn postgres_retention() {
    let (store, schema) = common::postgres("mags_retention").await;
    exercise(&store).await;
    store.close().await;
    schema.drop().await;
}

/// Output stored before the migration is counted by it: the migration is
/// undone by hand, then applied again at the next connect.
async fn migration_counts_existing_output(store: Store, url: &str) {
    let alice = store.create_user("alice", false).await.expect("alice");
    let id = ended_job(&store, &alice.id, &[700, 300]).await;
    for sql in [
        "DELETE FROM mags_migrations WHERE version = 11",
        "DROP INDEX jobs_finished",
        "ALTER TABLE jobs DROP COLUMN output_pruned_at",
        "ALTER TABLE jobs DROP COLUMN output_bytes",
    ] {
        sqlx::query(sql).execute(store.pool()).await.expect(sql);
    }
    store.close().await;
    let store = Store::connect(url).await.expect("migrate again");
    let job = store.job(&id).await.expect("job").expect("kept");
    assert_eq!(job.output_bytes, 1000);
    store.close().await;
}

#[tokio::test]
async fn the_migration_counts_existing_output() {
    let (store, url, _dir) = common::sqlite().await;
    migration_counts_existing_output(store, &url).await;
    let (store, schema) = common::postgres("mags_retention_mig").await;
    let url = schema.url.clone();
    migration_counts_existing_output(store, &url).await;
    schema.drop().await;
}
