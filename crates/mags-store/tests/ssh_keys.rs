//! SSH access keys: found by fingerprint, capped per job, forgotten once
//! their job has ended. On SQLite, and on Postgres
//! (`MAGS_TEST_POSTGRES_URL`, required like the other store tests).

use mags_api::JobState;
use mags_store::{clock, ssh_keys::MAX_KEYS_PER_JOB, Finish, NewJob, SshKeyOwner, Store};
use sqlx::Executor as _;
use std::collections::BTreeMap;

fn job(user_id: &str, ws: &str) -> NewJob {
    NewJob {
        id: uuid::Uuid::new_v4().to_string(),
        user_id: user_id.to_string(),
        name: Some(ws.to_string()),
        workspace_id: Some(ws.to_string()),
        base_workspace_id: None,
        persistent: true,
        no_sleep: false,
        no_sync: false,
        startup_command: None,
        script: "true".into(),
        environment: BTreeMap::new(),
        file_ids: Vec::new(),
        disk_gb: 2,
        rootfs_type: None,
        idle_timeout_secs: None,
        no_internet: false,
        created_at: clock::monotonic_ms(),
    }
}

async fn exercise(store: &Store) {
    let u = store.create_user("ssh-user", false).await.expect("user");
    let a = store.insert_job(&job(&u.id, "a")).await.expect("job a");
    let b = store.insert_job(&job(&u.id, "b")).await.expect("job b");
    store.add_ssh_key("fp-a", &a.id, &u.id).await.expect("add");
    store.add_ssh_key("fp-b", &b.id, &u.id).await.expect("add");
    assert_eq!(
        store.ssh_key_owner("fp-a").await.expect("owner"),
        Some(SshKeyOwner {
            job_id: a.id.clone(),
            user_id: u.id.clone()
        })
    );
    assert_eq!(store.ssh_key_owner("fp-x").await.expect("owner"), None);

    // Only the newest keys of a job are kept.
    for i in 0..MAX_KEYS_PER_JOB {
        store
            .add_ssh_key(&format!("fp-a{i}"), &a.id, &u.id)
            .await
            .expect("add");
    }
    assert_eq!(store.ssh_key_owner("fp-a").await.expect("owner"), None);
    assert!(store.ssh_key_owner("fp-a0").await.expect("owner").is_some());
    assert!(store.ssh_key_owner("fp-b").await.expect("owner").is_some());

    // Keys die with their job.
    store.mark_running(&b.id, "vm").await.expect("run");
    let finish = Finish {
        status: JobState::Completed,
        exit_code: Some(0),
        error: None,
        script_duration_ms: None,
    };
    assert!(store.finish_job(&b.id, &finish).await.expect("finish"));
    assert_eq!(store.delete_ended_ssh_keys().await.expect("delete"), 1);
    assert_eq!(store.ssh_key_owner("fp-b").await.expect("owner"), None);
    assert!(store.ssh_key_owner("fp-a0").await.expect("owner").is_some());
}

#[tokio::test]
async fn sqlite_ssh_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let store = Store::connect(&url).await.expect("connect");
    exercise(&store).await;
    store.close().await;
}

#[tokio::test]
async fn postgres_ssh_keys() {
    let base = match std::env::var("MAGS_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => panic!(
            "MAGS_TEST_POSTGRES_URL is not set: start PostgreSQL with \
             `eval \"$(scripts/test-postgres)\"`"
        ),
    };
    sqlx::any::install_default_drivers();
    let schema = format!("mags_ssh_{}", uuid::Uuid::new_v4().simple());
    let admin = sqlx::AnyPool::connect(&base)
        .await
        .expect("connect to Postgres");
    admin
        .execute(format!("CREATE SCHEMA {schema}").as_str())
        .await
        .expect("create schema");
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    let store = Store::connect(&url).await.expect("connect");
    exercise(&store).await;
    store.close().await;
    admin
        .execute(format!("DROP SCHEMA {schema} CASCADE").as_str())
        .await
        .expect("drop schema");
}
