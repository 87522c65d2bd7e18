//! Cron records: CRUD scoped to the owner, unique names, and the one
//! transaction (claim, job, run record) that lets exactly one of several
//! concurrent hosts start a due run, and loses none when it fails.

mod common;

use mags_store::{CronUpdate, DueRun, NewCron, NewJob, Page, Store, StoreError};
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

/// A due run of `cron_id` decided at the due time itself by "host-a".
fn due_run(cron_id: &str, due_at: i64, next: Option<i64>) -> DueRun<'_> {
    DueRun {
        cron_id,
        due_at,
        next,
        now: due_at + 7,
        host: Some("host-a"),
    }
}

/// A one-shot job of `user_id`, as a cron run submits.
fn one_shot(user_id: &str) -> NewJob {
    NewJob {
        name: Some("nightly".into()),
        workspace_id: None,
        persistent: false,
        ..common::job(user_id, "unused")
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

    // Due at 1000: started once, recorded in the cron and its history.
    let due = store.due_crons(1_500).await.expect("due");
    assert_eq!(due.len(), 1);
    let run = due_run(&a.id, 1_000, Some(61_000));
    let job = one_shot(&u.id);
    let started = store.start_cron_run(&run, &job).await.expect("start");
    assert_eq!(started.map(|j| j.spec), Some(job.clone()));
    assert!(store.due_crons(1_500).await.expect("due").is_empty());
    assert!(
        !store.skip_cron_run(&run, "late").await.expect("skip"),
        "a started due time is not skipped after"
    );
    // The next due time skipped (a previous run still going): recorded.
    let skip = due_run(&a.id, 61_000, Some(121_000));
    assert!(store
        .skip_cron_run(&skip, "previous run still running")
        .await
        .expect("skip"));
    let a2 = store.cron(&u.id, &a.id).await.expect("get").expect("some");
    assert_eq!((a2.run_count, a2.skip_count), (1, 1));
    assert_eq!(a2.last_job_id.as_deref(), Some(job.id.as_str()));
    assert_eq!(a2.last_job_status.as_deref(), Some("accepted"));
    assert_eq!(a2.last_run_at, Some(run.now), "the database's time");
    assert_eq!(a2.last_skip.as_deref(), Some("previous run still running"));
    assert_eq!(a2.next_run_at, Some(121_000));
    let (runs, total) = store.cron_runs(&a.id, Page::first(10)).await.expect("runs");
    assert_eq!(total, 2);
    let seen: Vec<_> = runs
        .iter()
        .map(|r| (r.due_at, r.job_id.clone(), r.skip_reason.clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (61_000, None, Some("previous run still running".into())),
            (1_000, Some(job.id.clone()), None),
        ],
        "newest first"
    );
    assert_eq!(runs[1].host.as_deref(), Some("host-a"));
    let (page2, _) = store
        .cron_runs(&a.id, Page::first(1).next())
        .await
        .expect("runs");
    assert_eq!(page2.first().map(|r| r.due_at), Some(1_000));

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
    let late = due_run(&a.id, 121_000, Some(181_000));
    assert_eq!(
        store
            .start_cron_run(&late, &one_shot(&u.id))
            .await
            .expect("start"),
        None
    );
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
    let (_, runs) = store.cron_runs(&a.id, Page::first(10)).await.expect("runs");
    assert_eq!(runs, 0, "its history goes with it");
}

/// The number of rows of `table` (`jobs`, `cron_runs`).
async fn rows(store: &Store, table: &str) -> i64 {
    let row = sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
        .fetch_one(store.pool())
        .await
        .expect("count");
    sqlx::Row::try_get(&row, "n").expect("n")
}

/// Eight hosts (each its own [`Store`], so its own connections) race for
/// one due time: one job, one run record; a repeat stores nothing, and a
/// schedule set back onto a due time that ran only moves on from it.
async fn racing_hosts_start_a_run_once(store: &Store, url: &str) {
    let u = store.create_user("racer", false).await.expect("user");
    let c = store
        .insert_cron(&cron(&u.id, "race", Some(60_000)))
        .await
        .expect("insert");
    let mut hosts = Vec::new();
    for _ in 0..8 {
        hosts.push(Store::connect(url).await.expect("connect"));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (i, host) in hosts.iter().enumerate() {
        let (host, id, user) = (host.clone(), c.id.clone(), u.id.clone());
        tasks.spawn(async move {
            let name = format!("host-{i}");
            let run = DueRun {
                cron_id: &id,
                due_at: 60_000,
                next: Some(120_000),
                now: 60_500,
                host: Some(&name),
            };
            let job = one_shot(&user);
            let started = host.start_cron_run(&run, &job).await.expect("start");
            started.map(|j| (j.spec.id, name))
        });
    }
    let mut winners = Vec::new();
    while let Some(r) = tasks.join_next().await {
        winners.extend(r.expect("task"));
    }
    assert_eq!(winners.len(), 1, "exactly one host starts it: {winners:?}");
    assert_eq!(
        (rows(store, "jobs").await, rows(store, "cron_runs").await),
        (1, 1)
    );
    let (runs, _) = store.cron_runs(&c.id, Page::first(10)).await.expect("runs");
    let (job_id, host) = &winners[0];
    assert_eq!(runs[0].job_id.as_ref(), Some(job_id));
    assert_eq!(runs[0].host.as_ref(), Some(host));
    let row = store.cron(&u.id, &c.id).await.expect("get").expect("some");
    assert_eq!((row.run_count, row.next_run_at), (1, Some(120_000)));
    assert_eq!(row.last_job_id.as_ref(), Some(job_id));

    // A repeat for the same due time (a host that read it late): nothing.
    let again = DueRun {
        cron_id: &c.id,
        due_at: 60_000,
        next: Some(120_000),
        now: 61_000,
        host: None,
    };
    let repeat = hosts[3].start_cron_run(&again, &one_shot(&u.id)).await;
    assert_eq!(repeat.expect("start"), None);
    // The schedule set back onto the due time that ran: the next attempt
    // stores no second run for it, but moves on (so the cron is not stuck).
    let back = CronUpdate {
        next_run_at: Some(60_000),
        ..Default::default()
    };
    store
        .update_cron(&u.id, &c.id, &back)
        .await
        .expect("update");
    let repeat = hosts[5].start_cron_run(&again, &one_shot(&u.id)).await;
    assert_eq!(repeat.expect("start"), None);
    assert_eq!(
        (rows(store, "jobs").await, rows(store, "cron_runs").await),
        (1, 1)
    );
    let row = store.cron(&u.id, &c.id).await.expect("get").expect("some");
    assert_eq!((row.run_count, row.next_run_at), (1, Some(120_000)));

    // Racing skips of the next due time record one skip.
    let mut tasks = tokio::task::JoinSet::new();
    for host in &hosts {
        let (host, id) = (host.clone(), c.id.clone());
        tasks.spawn(async move {
            let run = DueRun {
                cron_id: &id,
                due_at: 120_000,
                next: Some(180_000),
                now: 120_100,
                host: None,
            };
            host.skip_cron_run(&run, "over quota").await.expect("skip")
        });
    }
    let mut skipped = 0;
    while let Some(r) = tasks.join_next().await {
        skipped += usize::from(r.expect("task"));
    }
    assert_eq!(skipped, 1);
    let row = store.cron(&u.id, &c.id).await.expect("get").expect("some");
    assert_eq!((row.run_count, row.skip_count), (1, 1));
    assert_eq!(row.next_run_at, Some(180_000), "moved on exactly once");
    assert_eq!(rows(store, "jobs").await, 1);
    for host in hosts {
        host.close().await;
    }
}

/// A failure inside the transaction (here the job's insert: its id is
/// taken) stores nothing and leaves the run due; a retry starts it.
async fn a_failed_start_loses_no_run(store: &Store) {
    let u = store.create_user("unlucky", false).await.expect("user");
    let c = store
        .insert_cron(&cron(&u.id, "fails", Some(60_000)))
        .await
        .expect("insert");
    let taken = store.insert_job(&one_shot(&u.id)).await.expect("job");
    let run = due_run(&c.id, 60_000, Some(120_000));
    let clash = NewJob {
        id: taken.id.clone(),
        ..one_shot(&u.id)
    };
    let failed = store.start_cron_run(&run, &clash).await;
    assert!(matches!(failed, Err(StoreError::Conflict(_))), "{failed:?}");
    let row = store.cron(&u.id, &c.id).await.expect("get").expect("some");
    assert_eq!(row.next_run_at, Some(60_000), "still due");
    assert_eq!((row.run_count, row.last_job_id), (0, None));
    assert_eq!(
        (rows(store, "jobs").await, rows(store, "cron_runs").await),
        (1, 0)
    );
    assert_eq!(store.due_crons(60_000).await.expect("due").len(), 1);

    let job = one_shot(&u.id);
    let started = store.start_cron_run(&run, &job).await.expect("retry");
    assert_eq!(started.map(|j| j.spec.id), Some(job.id));
    assert_eq!(
        (rows(store, "jobs").await, rows(store, "cron_runs").await),
        (2, 1)
    );
}

#[tokio::test]
async fn sqlite_cron() {
    let (store, _, _dir) = common::sqlite().await;
    exercise(&store).await;
    store.close().await;
}

#[tokio::test]
async fn sqlite_cron_race() {
    let (store, url, _dir) = common::sqlite().await;
    racing_hosts_start_a_run_once(&store, &url).await;
    store.close().await;
}

#[tokio::test]
async fn sqlite_cron_failed_start() {
    let (store, _, _dir) = common::sqlite().await;
    a_failed_start_loses_no_run(&store).await;
    store.close().await;
}

#[tokio::test]
async fn postgres_cron() {
    let (store, schema) = common::postgres("mags_cron").await;
    exercise(&store).await;
    store.close().await;
    schema.drop().await;
}

#[tokio::test]
async fn postgres_cron_race() {
    let (store, schema) = common::postgres("mags_cron_race").await;
    racing_hosts_start_a_run_once(&store, &schema.url).await;
    store.close().await;
    schema.drop().await;
}

#[tokio::test]
async fn postgres_cron_failed_start() {
    let (store, schema) = common::postgres("mags_cron_fail").await;
    a_failed_start_loses_no_run(&store).await;
    store.close().await;
    schema.drop().await;
}
