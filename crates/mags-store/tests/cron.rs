//! Cron records: CRUD scoped to the owner, unique names, and the run claim
//! that lets exactly one of several concurrent tickers start a due run.

mod common;

use mags_store::{CronUpdate, NewCron, Page, Store, StoreError};
use std::collections::BTreeMap;

fn cron(user_id: &str, name: &str, next: Option<i64>) -> NewCron {
    NewCron {
        id: uuid::Uuid::new_v4().to_string(),
        user_id: user_id.to_string(),
        name: name.to_string(),
        expression: "* * * * *".into(),
        script: "date".into(),
        persistent: false,
        workspace_id: None,
        environment: BTreeMap::from([("A".to_string(), "1".to_string())]),
        enabled: true,
        next_run_at: next,
    }
}

async fn exercise(store: &Store) {
    let u = store.create_user("cron-user", false).await.expect("user");
    let other = store.create_user("cron-other", false).await.expect("user");
    let a = store
        .insert_cron(&cron(&u.id, "nightly", Some(1_000)))
        .await
        .expect("insert");
    assert_eq!(a.environment.get("A").map(String::as_str), Some("1"));
    assert!(matches!(
        store.insert_cron(&cron(&u.id, "nightly", None)).await,
        Err(StoreError::Conflict(_))
    ));
    // Another user may use the name, and cannot see or touch ours.
    store
        .insert_cron(&cron(&other.id, "nightly", None))
        .await
        .expect("other's");
    assert!(store.cron(&other.id, &a.id).await.expect("get").is_none());
    assert!(!store.delete_cron(&other.id, &a.id).await.expect("delete"));
    assert_eq!(
        store
            .cron(&u.id, "nightly")
            .await
            .expect("by name")
            .map(|c| c.spec.id),
        Some(a.id.clone())
    );

    // Due at 1000: of two racing claims exactly one wins.
    let due = store.due_crons(1_500).await.expect("due");
    assert_eq!(due.len(), 1);
    let (x, y) = tokio::join!(
        store.claim_cron_run(&a.id, 1_000, Some(61_000)),
        store.claim_cron_run(&a.id, 1_000, Some(61_000)),
    );
    assert!(
        x.expect("claim") ^ y.expect("claim"),
        "exactly one claim wins"
    );
    assert!(store.due_crons(1_500).await.expect("due").is_empty());
    store
        .record_cron_run(&a.id, "job-1", 1_200)
        .await
        .expect("record");
    store
        .record_cron_skip(&a.id, "previous run still running")
        .await
        .expect("skip");
    let a2 = store.cron(&u.id, &a.id).await.expect("get").expect("some");
    assert_eq!((a2.run_count, a2.skip_count), (1, 1));
    assert_eq!(a2.last_job_id.as_deref(), Some("job-1"));
    assert_eq!(a2.last_job_status, None, "job-1 is not a stored job");
    assert_eq!(a2.next_run_at, Some(61_000));

    // Disabling clears the next run; a disabled cron is never due or claimed.
    let off = CronUpdate {
        enabled: Some(false),
        next_run_at: None,
        ..Default::default()
    };
    let a3 = store
        .update_cron(&u.id, &a.id, &off)
        .await
        .expect("update")
        .expect("some");
    assert!(!a3.enabled && a3.next_run_at.is_none());
    assert_eq!(a3.script, "date", "unchanged fields stay");
    assert!(!store
        .claim_cron_run(&a.id, 61_000, Some(1))
        .await
        .expect("claim"));
    assert!(store
        .update_cron(&other.id, &a.id, &off)
        .await
        .expect("update")
        .is_none());

    let (rows, total) = store.crons(&u.id, Page::first(10)).await.expect("list");
    assert_eq!((rows.len(), total), (1, 1));
    assert!(store.delete_cron(&u.id, &a.id).await.expect("delete"));
    let (rows, total) = store.crons(&u.id, Page::first(10)).await.expect("list");
    assert!(rows.is_empty() && total == 0);
}

#[tokio::test]
async fn sqlite_cron() {
    let (store, _, _dir) = common::sqlite().await;
    exercise(&store).await;
    store.close().await;
}

#[tokio::test]
async fn postgres_cron() {
    let (store, schema) = common::postgres("mags_cron").await;
    exercise(&store).await;
    store.close().await;
    schema.drop().await;
}
