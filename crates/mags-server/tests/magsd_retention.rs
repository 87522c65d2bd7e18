//! `magsd serve`'s job retention, as the real binary (fake executor) on a
//! real SQLite database: at start it deletes ended jobs past
//! `--job-retention-days` and then prunes the oldest ended jobs' output
//! until all output fits `--job-output-max-mb`.

mod common;

use mags_api::{JobState, OutputStream};
use mags_store::{clock, Finish, NewChunk, Store};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn ended_job(store: &Store, user: &str, bytes: usize, finished_at: i64) -> String {
    let job = store
        .insert_job(&common::new_job(user, "echo"))
        .await
        .expect("insert");
    let chunk = NewChunk {
        seq: 0,
        stream: OutputStream::Stdout,
        data: vec![b'x'; bytes],
        ts: clock::now_ms(),
    };
    store
        .append_output(&job.id, &[chunk])
        .await
        .expect("output");
    let done = Finish {
        status: JobState::Completed,
        exit_code: Some(0),
        error: None,
        script_duration_ms: Some(1),
    };
    assert!(store.finish_job(&job.id, &done).await.expect("finish"));
    sqlx::query("UPDATE jobs SET finished_at = $1 WHERE id = $2")
        .bind(finished_at)
        .bind(&job.id)
        .execute(store.pool())
        .await
        .expect("backdate");
    job.spec.id
}

#[tokio::test]
async fn serve_enforces_the_job_retention_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/mags.db", dir.path().display());
    let store = Store::connect(&url).await.expect("store");
    let user = store.create_user("alice", false).await.expect("user");
    let day = 86_400_000;
    let now = clock::now_ms();
    let ancient = ended_job(&store, &user.id, 100, now - 40 * day).await;
    let big = ended_job(&store, &user.id, 2 << 20, now - 2 * day).await;
    let small = ended_job(&store, &user.id, 10, now - day).await;
    store.close().await;

    let server = Server(
        Command::new(env!("CARGO_BIN_EXE_magsd"))
            .args(["serve", "--executor", "fake", "--listen", "127.0.0.1:0"])
            .args(["--ssh-listen", "off", "--job-retention-days", "30"])
            .args(["--job-output-max-mb", "1", "--data-dir"])
            .arg(dir.path())
            .env_remove("MAGS_DATABASE_URL")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start magsd"),
    );
    let store = Store::connect(&url).await.expect("store");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pruned = store
            .job(&big)
            .await
            .expect("job")
            .is_some_and(|j| j.output_pruned_at.is_some());
        if pruned {
            break;
        }
        assert!(Instant::now() < deadline, "magsd did not prune within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        store.job(&ancient).await.expect("job").is_none(),
        "past the age: deleted"
    );
    let big = store.job(&big).await.expect("job").expect("kept");
    assert_eq!(big.output_bytes, 0);
    assert!(store
        .output_after(&big.id, -1, 10)
        .await
        .expect("out")
        .is_empty());
    let small = store.job(&small).await.expect("job").expect("kept");
    assert_eq!((small.output_bytes, small.output_pruned_at), (10, None));
    drop(server);
    store.close().await;
}
