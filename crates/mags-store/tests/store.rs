//! The store against real databases: SQLite in a temp dir always, and
//! Postgres when `MAGS_TEST_POSTGRES_URL` is set (required:
//! a missing server fails the test rather than skipping it). Each Postgres test works in a
//! fresh schema that it drops afterwards.

mod common;

use mags_api::{JobState, OutputStream};
use mags_store::{clock, Finish, JobSettings, NewChunk, NewJob, Store, StoreError};
use std::collections::BTreeMap;

/// The same checks for every backend.
async fn exercise(store: &Store) {
    users_and_tokens(store).await;
    jobs_lifecycle(store).await;
    sandbox_states(store).await;
    output_round_trip(store).await;
    database_clock(store).await;
}

/// The database's clock reads as unix milliseconds and moves forward.
async fn database_clock(store: &Store) {
    let a = store.db_now_ms().await.expect("db clock");
    let local = mags_store::clock::now_ms();
    assert!((a - local).abs() < 60_000, "db {a} vs host {local}");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let b = store.db_now_ms().await.expect("db clock");
    assert!(b >= a + 10, "{a} then {b}");
}

async fn users_and_tokens(store: &Store) {
    let alice = store
        .create_user("alice", false)
        .await
        .expect("create alice");
    assert!(matches!(
        store.create_user("alice", true).await,
        Err(StoreError::Conflict(_))
    ));
    let again = store
        .ensure_user("alice", true)
        .await
        .expect("ensure alice");
    assert_eq!(again, alice);
    let admin = store
        .ensure_user("admin", true)
        .await
        .expect("ensure admin");
    assert!(admin.is_admin);

    let (info, token) = store.create_token(&alice.id).await.expect("token");
    assert!(token.starts_with(&info.prefix));
    let auth = store
        .authenticate(&token)
        .await
        .expect("authenticate")
        .expect("known token");
    assert_eq!(auth.user, alice);
    assert_eq!(auth.token_id, info.id);

    // Stored hashed: the clear token appears nowhere in the table.
    let row = sqlx::query("SELECT token_hash FROM tokens WHERE id = $1")
        .bind(&info.id)
        .fetch_one(store.pool())
        .await
        .expect("select");
    let stored: String = sqlx::Row::try_get(&row, "token_hash").expect("hash");
    assert_ne!(stored, token);
    assert_eq!(stored, mags_store::hash_token(&token));

    assert!(store
        .authenticate("mags_nope")
        .await
        .expect("query")
        .is_none());
    assert!(store.revoke_token(&info.id).await.expect("revoke"));
    assert!(store.authenticate(&token).await.expect("query").is_none());

    // A token from a file can be adopted.
    store
        .add_token(&admin.id, "mags_fromfile")
        .await
        .expect("add");
    let a = store.authenticate("mags_fromfile").await.expect("query");
    assert_eq!(a.map(|a| a.user.name), Some("admin".to_string()));
}

fn new_job(user_id: &str, name: Option<&str>, workspace: Option<&str>) -> NewJob {
    NewJob {
        id: uuid::Uuid::new_v4().to_string(),
        user_id: user_id.to_string(),
        name: name.map(str::to_string),
        workspace_id: workspace.map(str::to_string),
        base_workspace_id: None,
        persistent: false,
        no_sleep: false,
        no_sync: false,
        startup_command: None,
        script: "echo hi".into(),
        environment: BTreeMap::from([("K".to_string(), "v \"q\"".to_string())]),
        file_ids: vec!["f1".into()],
        disk_gb: 2,
        rootfs_type: None,
        idle_timeout_secs: None,
        no_internet: false,
        egress_allow: vec!["pypi.org".into()],
        egress_deny: vec!["10.1.0.0/16".into()],
        timeout_secs: None,
        created_at: clock::monotonic_ms(),
    }
}

async fn jobs_lifecycle(store: &Store) {
    let u = store.ensure_user("jobber", false).await.expect("user");
    let other = store.ensure_user("other", false).await.expect("user");
    let mut ids = Vec::new();
    let mut inserted = Vec::new();
    for i in 0..5 {
        let j = new_job(&u.id, Some(&format!("job{i}")), Some("ws"));
        inserted.push(store.insert_job(&j).await.expect("insert"));
        ids.push(j.id);
    }
    let theirs = new_job(&other.id, None, None);
    store.insert_job(&theirs).await.expect("insert");

    let j = store
        .job_for_user(&u.id, &ids[0])
        .await
        .expect("get")
        .expect("found");
    assert_eq!(j, inserted[0], "insert_job returns the job as stored");
    assert_eq!(j.status, JobState::Accepted);
    assert_eq!(j.environment.get("K").map(String::as_str), Some("v \"q\""));
    assert_eq!(j.file_ids, vec!["f1".to_string()]);
    assert!(store
        .job_for_user(&u.id, &theirs.id)
        .await
        .expect("get")
        .is_none());
    assert!(store.job(&theirs.id).await.expect("get").is_some());

    // Newest first, paged, with the total.
    let (page1, total) = store.list_jobs(&u.id, 0, 2).await.expect("list");
    assert_eq!(total, 5);
    assert_eq!(
        page1.iter().map(|j| j.id.clone()).collect::<Vec<_>>(),
        vec![ids[4].clone(), ids[3].clone()]
    );
    assert!(
        page1
            .iter()
            .all(|j| j.script.is_empty() && j.environment.is_empty()),
        "listings leave the scripts out"
    );
    let (page3, _) = store.list_jobs(&u.id, 4, 2).await.expect("list");
    assert_eq!(page3.len(), 1);
    assert_eq!(page3[0].id, ids[0]);

    assert!(store
        .set_waiting_status(&ids[0], JobState::Queued)
        .await
        .expect("queue"));
    assert!(store.mark_running(&ids[0], "vm-1").await.expect("run"));
    let live = store
        .live_job_in_workspace(&u.id, "ws")
        .await
        .expect("live")
        .expect("some");
    assert_eq!(live.id, ids[4], "newest live job");
    let finish = Finish {
        status: JobState::Error,
        exit_code: Some(3),
        error: None,
        script_duration_ms: Some(12),
    };
    assert!(store.finish_job(&ids[0], &finish).await.expect("finish"));
    // Final is final.
    assert!(!store
        .finish_job(&ids[0], &finish)
        .await
        .expect("finish again"));
    assert!(!store
        .mark_running(&ids[0], "vm-2")
        .await
        .expect("run again"));
    assert!(!store
        .set_waiting_status(&ids[0], JobState::Queued)
        .await
        .expect("queue"));
    let j = store.job(&ids[0]).await.expect("get").expect("found");
    assert_eq!(j.status, JobState::Error);
    assert_eq!(j.exit_code, Some(3));
    assert_eq!(j.vm_id.as_deref(), Some("vm-1"));
    assert!(j.started_at.is_some() && j.finished_at.is_some());

    let accepted = store
        .jobs_in_states(&[JobState::Accepted, JobState::Running])
        .await
        .expect("states");
    assert_eq!(accepted.len(), 5, "4 of ours and 1 of theirs are accepted");

    let (n, _vm_ms) = store.usage(&u.id, 0).await.expect("usage");
    assert_eq!(n, 5);
}

/// A persistent job: running <-> sleeping, its script's exit recorded while
/// it stays live, settings changed live, VM time only while a VM runs.
async fn sandbox_states(store: &Store) {
    let u = store.ensure_user("sleeper", false).await.expect("user");
    let mut nj = new_job(&u.id, Some("box"), None);
    nj.persistent = true;
    nj.idle_timeout_secs = Some(7);
    let j = store.insert_job(&nj).await.expect("insert");
    assert_eq!(j.idle_timeout_secs, Some(7));
    assert!(store.mark_running(&j.id, "vm-a").await.expect("run"));
    let j = store.job(&j.id).await.expect("get").expect("found");
    assert!(j.vm_since.is_some());
    assert!(store
        .record_script_exit(&j.id, Some((3, 40)))
        .await
        .expect("exit"));
    // Backdate the VM period so the sums are visible.
    sqlx::query("UPDATE jobs SET vm_since = vm_since - 5000 WHERE id = $1")
        .bind(&j.id)
        .execute(store.pool())
        .await
        .expect("backdate");
    assert!(store.mark_sleeping(&j.id).await.expect("sleep"));
    let slept = store.job(&j.id).await.expect("get").expect("found");
    assert_eq!(slept.status, JobState::Sleeping);
    assert_eq!(
        (slept.exit_code, slept.script_duration_ms),
        (Some(3), Some(40))
    );
    assert!(slept.vm_since.is_none());
    assert!(slept.vm_ms >= 5000, "{}", slept.vm_ms);
    // Asleep, no VM time accrues.
    let (_, before) = store.usage(&u.id, 0).await.expect("usage");
    assert!((5000..6000).contains(&before), "{before}");

    assert!(store.mark_awake(&j.id, "vm-a").await.expect("wake"));
    let woke = store.job(&j.id).await.expect("get").expect("found");
    assert_eq!(woke.status, JobState::Running);
    assert!(woke.vm_since.is_some());
    let settings = JobSettings {
        startup_command: Some(Some("echo up".into())),
        no_sleep: Some(true),
        idle_timeout_secs: Some(None),
    };
    assert!(store
        .update_job_settings(&j.id, &settings)
        .await
        .expect("settings"));
    assert!(!store
        .update_job_settings(&j.id, &JobSettings::default())
        .await
        .expect("nothing to change"));
    let set = store.job(&j.id).await.expect("get").expect("found");
    assert_eq!(set.startup_command.as_deref(), Some("echo up"));
    assert!(set.no_sleep);
    assert_eq!(set.idle_timeout_secs, None);
    assert!(store.record_script_exit(&j.id, None).await.expect("clear"));

    let finish = Finish {
        status: JobState::Completed,
        exit_code: None,
        error: None,
        script_duration_ms: None,
    };
    assert!(store.finish_job(&j.id, &finish).await.expect("finish"));
    let done = store.job(&j.id).await.expect("get").expect("found");
    assert!(done.vm_since.is_none() && done.vm_ms >= 5000);
    // Final is final for these too.
    assert!(!store.mark_awake(&j.id, "vm-b").await.expect("wake"));
    assert!(!store.mark_sleeping(&j.id).await.expect("sleep"));
    assert!(!store
        .record_script_exit(&j.id, Some((0, 1)))
        .await
        .expect("exit"));
    assert!(!store
        .update_job_settings(&j.id, &settings)
        .await
        .expect("settings"));
}

async fn output_round_trip(store: &Store) {
    let u = store.ensure_user("writer", false).await.expect("user");
    let j = new_job(&u.id, None, None);
    store.insert_job(&j).await.expect("insert");
    assert_eq!(store.last_output_seq(&j.id).await.expect("seq"), None);
    let binary: Vec<u8> = (0..=255u8).collect();
    let chunks = vec![
        NewChunk {
            seq: 0,
            stream: OutputStream::Stdout,
            data: b"hello\n".to_vec(),
            ts: 1,
        },
        NewChunk {
            seq: 1,
            stream: OutputStream::Stderr,
            data: binary.clone(),
            ts: 2,
        },
        NewChunk {
            seq: 2,
            stream: OutputStream::System,
            data: Vec::new(),
            ts: 3,
        },
    ];
    store.append_output(&j.id, &chunks).await.expect("append");
    assert_eq!(
        store.output_after(&j.id, -1, 100).await.expect("read"),
        chunks
    );
    assert_eq!(
        store.output_after(&j.id, 0, 1).await.expect("read"),
        chunks[1..2]
    );
    assert_eq!(store.last_output_seq(&j.id).await.expect("seq"), Some(2));
    // A duplicate seq rolls back the whole batch.
    let dup = vec![
        NewChunk {
            seq: 3,
            stream: OutputStream::Stdout,
            data: b"x".to_vec(),
            ts: 4,
        },
        NewChunk {
            seq: 2,
            stream: OutputStream::Stdout,
            data: b"y".to_vec(),
            ts: 4,
        },
    ];
    assert!(store.append_output(&j.id, &dup).await.is_err());
    assert_eq!(store.last_output_seq(&j.id).await.expect("seq"), Some(2));
}

#[tokio::test]
async fn sqlite_store() {
    let (store, url, _dir) = common::sqlite().await;
    exercise(&store).await;
    store.close().await;

    // Migrations are idempotent and the data survives a reconnect.
    let store = Store::connect(&url).await.expect("reconnect");
    assert!(store.user_by_name("alice").await.expect("query").is_some());
    let row = sqlx::query("PRAGMA journal_mode")
        .fetch_one(store.pool())
        .await
        .expect("pragma");
    let mode: String = sqlx::Row::try_get(&row, 0).expect("mode");
    assert_eq!(mode.to_lowercase(), "wal");
}

#[tokio::test]
async fn postgres_store() {
    let (store, schema) = common::postgres("mags_test").await;
    exercise(&store).await;
    store.close().await;
    let store = Store::connect(&schema.url).await.expect("reconnect");
    assert!(store.user_by_name("alice").await.expect("query").is_some());
    store.close().await;
    schema.drop().await;
}
