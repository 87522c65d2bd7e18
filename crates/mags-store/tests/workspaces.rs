//! Workspace records: the one-live-job claim (it lapses when the holder
//! ends), listing, deletion refused while held, and uploads. On SQLite,
//! and on Postgres (`MAGS_TEST_POSTGRES_URL`, required like the other
//! store tests: a test never skips itself).

mod common;

use common::job;

use mags_api::JobState;
use mags_store::{clock, Finish, Page, Store, Upload};

async fn exercise(store: &Store) {
    let u = store.create_user("ws-user", false).await.expect("user");
    let a = store.insert_job(&job(&u.id, "w1")).await.expect("job a");
    let b = store.insert_job(&job(&u.id, "w1")).await.expect("job b");
    assert_eq!(
        store
            .claim_workspace(&u.id, "w1", &a.id)
            .await
            .expect("claim"),
        None
    );
    assert_eq!(
        store
            .claim_workspace(&u.id, "w1", &b.id)
            .await
            .expect("claim"),
        Some(a.id.clone()),
        "a second live job is refused"
    );
    assert!(
        !store.delete_workspace(&u.id, "w1").await.expect("delete"),
        "held"
    );
    store.delete_accepted_job(&b.id).await.expect("delete job");
    assert!(store.job(&b.id).await.expect("job").is_none());

    let (rows, total) = store
        .workspaces(&u.id, Page::first(10))
        .await
        .expect("list");
    assert_eq!(total, 1);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].live_job_id.as_deref(), Some(a.id.as_str()));

    // The claim lapses once the holder is final.
    store
        .finish_job(
            &a.id,
            &Finish {
                status: JobState::Completed,
                exit_code: Some(0),
                error: None,
                script_duration_ms: Some(1),
            },
        )
        .await
        .expect("finish");
    let c = store.insert_job(&job(&u.id, "w1")).await.expect("job c");
    assert_eq!(
        store
            .claim_workspace(&u.id, "w1", &c.id)
            .await
            .expect("claim"),
        None
    );

    store
        .touch_workspace(&u.id, "w1", 5 << 30, true)
        .await
        .expect("touch");
    store
        .touch_workspace(&u.id, "w1", 5 << 30, false)
        .await
        .expect("touch");
    let w = store
        .workspace(&u.id, "w1")
        .await
        .expect("get")
        .expect("some");
    assert!(w.persistent, "persistent is never unset");
    assert_eq!(w.disk_bytes, 5 << 30);

    store
        .touch_workspace(&u.id, "w2", 1 << 30, false)
        .await
        .expect("touch");
    assert!(store.delete_workspace(&u.id, "w2").await.expect("delete"));
    assert!(store.workspace(&u.id, "w2").await.expect("get").is_none());
    assert_eq!(store.all_workspaces().await.expect("all").len(), 1);

    let up_at = clock::now_ms();
    let up = Upload {
        id: "f-1".into(),
        user_id: u.id.clone(),
        name: "data.bin".into(),
        size: 42,
        sha256: "ab".into(),
        created_at: up_at,
    };
    store.insert_upload(&up).await.expect("upload");
    assert_eq!(store.upload(&u.id, "f-1").await.expect("get"), Some(up));
    let other = store.create_user("ws-other", false).await.expect("user");
    assert!(store.upload(&other.id, "f-1").await.expect("get").is_none());

    // Quota counts: workspace w1 (5 GiB) and the upload; nothing of `other`.
    let usage = store.disk_usage(&u.id, 0).await.expect("usage");
    assert_eq!((usage.workspaces, usage.uploads), (5 << 30, 42));
    let later = store
        .disk_usage(&u.id, up_at + 1)
        .await
        .expect("usage since");
    assert_eq!(later.uploads, 0, "older uploads are not counted");
    assert_eq!(
        store.disk_usage(&other.id, 0).await.expect("usage").total(),
        0
    );
    // c holds w1 and is accepted: one pending job; a's is final.
    assert_eq!(store.pending_jobs(&u.id).await.expect("pending"), 1);
    assert_eq!(store.pending_jobs(&other.id).await.expect("pending"), 0);
}

#[tokio::test]
async fn sqlite_workspaces() {
    let (store, _, _dir) = common::sqlite().await;
    exercise(&store).await;
    store.close().await;
}

#[tokio::test]
async fn postgres_workspaces() {
    let (store, schema) = common::postgres("mags_ws").await;
    exercise(&store).await;
    store.close().await;
    schema.drop().await;
}
