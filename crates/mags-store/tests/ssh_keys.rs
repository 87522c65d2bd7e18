//! SSH access keys: found by fingerprint, capped per job, forgotten once
//! their job has ended. On SQLite, and on Postgres
//! (`MAGS_TEST_POSTGRES_URL`, required like the other store tests).

mod common;

use common::job;
use mags_api::JobState;
use mags_store::{ssh_keys::MAX_KEYS_PER_JOB, Finish, SshKeyOwner, Store};

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
    let (store, _, _dir) = common::sqlite().await;
    exercise(&store).await;
    store.close().await;
}

#[tokio::test]
async fn postgres_ssh_keys() {
    let (store, schema) = common::postgres("mags_ssh").await;
    exercise(&store).await;
    store.close().await;
    schema.drop().await;
}
