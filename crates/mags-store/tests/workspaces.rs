//! Workspace records: the one-live-job claim (it lapses when the holder
//! ends), listing, deletion refused while held, uploads, and versions (the
//! fenced compare-and-set, pruning, an older release's versions recorded
//! once, what GC keeps). On SQLite,
//! and on Postgres (`MAGS_TEST_POSTGRES_URL`, required like the other
//! store tests: a test never skips itself).

mod common;

use common::job;

use mags_api::JobState;
use mags_store::{clock, Advance, Fence, Finish, Head, Page, Store, Upload, VersionRow};

fn done() -> Finish {
    Finish {
        status: JobState::Completed,
        exit_code: Some(0),
        error: None,
        script_duration_ms: Some(1),
    }
}

fn v(version: u64) -> VersionRow {
    VersionRow {
        version,
        manifest: format!("ws/u/w/v/{version:020}-m{version}"),
        size: 1 << 30,
        created_at: 1000 + version as i64,
    }
}

async fn versions(store: &Store) {
    let u = store.create_user("ver-user", false).await.expect("user");
    let a = store.insert_job(&job(&u.id, "w")).await.expect("job a");
    assert_eq!(
        store
            .claim_workspace(&u.id, "w", &a.id)
            .await
            .expect("claim"),
        None
    );
    // A new record is unrecorded until an older release's ref is read.
    assert_eq!(
        store.workspace_head(&u.id, "w").await.expect("head"),
        Head::Unrecorded
    );
    assert!(store
        .record_workspace_versions(&u.id, "w", &[], None)
        .await
        .expect("record"));
    assert!(
        !store
            .record_workspace_versions(&u.id, "w", &[v(9)], Some(9))
            .await
            .expect("record again"),
        "recorded once"
    );
    assert_eq!(
        store.workspace_head(&u.id, "w").await.expect("head"),
        Head::Empty
    );

    // The holder advances it; anyone else, or a stale parent, is refused.
    let adv = |fence, parent, new: VersionRow| {
        let id = u.id.clone();
        async move {
            store
                .advance_workspace_version(&id, "w", fence, parent, &new, 2)
                .await
                .expect("advance")
        }
    };
    assert_eq!(
        adv(Fence::Job(&a.id), 0, v(1)).await,
        Advance::Won { pruned: vec![] }
    );
    assert_eq!(
        adv(Fence::Job(&a.id), 0, v(1)).await,
        Advance::Lost {
            current: 1,
            holder: Some(a.id.clone())
        },
        "a stale parent"
    );
    assert_eq!(
        adv(Fence::Job("someone-else"), 1, v(2)).await,
        Advance::Lost {
            current: 1,
            holder: Some(a.id.clone())
        },
        "not the holder"
    );
    assert_eq!(
        adv(Fence::Idle, 1, v(2)).await,
        Advance::Lost {
            current: 1,
            holder: Some(a.id.clone())
        },
        "a live job holds it"
    );
    assert_eq!(
        store.workspace_head(&u.id, "w").await.expect("head"),
        Head::At(v(1))
    );
    assert_eq!(
        adv(Fence::Job(&a.id), 1, v(2)).await,
        Advance::Won { pruned: vec![] }
    );
    // Keeping two: the third prunes the first.
    assert_eq!(
        adv(Fence::Job(&a.id), 2, v(3)).await,
        Advance::Won { pruned: vec![v(1)] }
    );
    assert_eq!(
        store.workspace_versions(&u.id, "w").await.expect("kept"),
        vec![v(2), v(3)]
    );

    // Once the holder is final, an idle save may advance it; a job that
    // claims it next fences the old holder out.
    store.finish_job(&a.id, &done()).await.expect("finish");
    assert_eq!(
        adv(Fence::Idle, 3, v(4)).await,
        Advance::Won { pruned: vec![v(2)] }
    );
    let b = store.insert_job(&job(&u.id, "w")).await.expect("job b");
    assert_eq!(
        store
            .claim_workspace(&u.id, "w", &b.id)
            .await
            .expect("claim"),
        None
    );
    assert_eq!(
        adv(Fence::Job(&a.id), 4, v(5)).await,
        Advance::Lost {
            current: 4,
            holder: Some(b.id.clone())
        },
        "the old holder is fenced out"
    );

    // What GC keeps: every kept version of every recorded workspace.
    let c = store
        .insert_job(&job(&u.id, "legacy"))
        .await
        .expect("job c");
    store
        .claim_workspace(&u.id, "legacy", &c.id)
        .await
        .expect("claim");
    let live = store.live_workspace_versions().await.expect("live");
    assert_eq!(live.workspaces, vec![format!("{}/w", u.id)]);
    let mut manifests = live.manifests.clone();
    manifests.sort();
    assert_eq!(manifests, vec![v(3).manifest, v(4).manifest]);
    assert!(store
        .record_workspace_versions(&u.id, "legacy", &[v(6), v(7)], Some(7))
        .await
        .expect("record legacy"));
    assert_eq!(
        store.workspace_head(&u.id, "legacy").await.expect("head"),
        Head::At(v(7))
    );
    assert_eq!(
        store
            .live_workspace_versions()
            .await
            .expect("live")
            .manifests
            .len(),
        4
    );

    // A deleted workspace's versions go with it.
    store.finish_job(&b.id, &done()).await.expect("finish");
    assert!(store.delete_workspace(&u.id, "w").await.expect("delete"));
    assert!(store
        .workspace_versions(&u.id, "w")
        .await
        .expect("kept")
        .is_empty());
    let live = store.live_workspace_versions().await.expect("live");
    assert_eq!(live.workspaces, vec![format!("{}/legacy", u.id)]);
}

/// Two savers from the same parent at once: exactly one wins.
async fn racing_savers(store: &Store) {
    let u = store.create_user("race-user", false).await.expect("user");
    let a = store.insert_job(&job(&u.id, "r")).await.expect("job");
    store
        .claim_workspace(&u.id, "r", &a.id)
        .await
        .expect("claim");
    store.finish_job(&a.id, &done()).await.expect("finish");
    store
        .record_workspace_versions(&u.id, "r", &[], None)
        .await
        .expect("record");
    for parent in 0..5u64 {
        let mut one = v(parent + 1);
        one.manifest.push('a');
        let mut two = v(parent + 1);
        two.manifest.push('b');
        let (x, y) = tokio::join!(
            store.advance_workspace_version(&u.id, "r", Fence::Idle, parent, &one, 3),
            store.advance_workspace_version(&u.id, "r", Fence::Idle, parent, &two, 3),
        );
        let (x, y) = (x.expect("x"), y.expect("y"));
        let won: Vec<&VersionRow> = [(&x, &one), (&y, &two)]
            .into_iter()
            .filter(|(r, _)| matches!(r, Advance::Won { .. }))
            .map(|(_, row)| row)
            .collect();
        assert_eq!(won.len(), 1, "exactly one wins: {x:?} {y:?}");
        let lost = if matches!(x, Advance::Won { .. }) {
            &y
        } else {
            &x
        };
        assert_eq!(
            lost,
            &Advance::Lost {
                current: parent + 1,
                holder: None
            }
        );
        assert_eq!(
            store.workspace_head(&u.id, "r").await.expect("head"),
            Head::At(won[0].clone())
        );
    }
}

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

#[tokio::test]
async fn sqlite_workspace_versions() {
    let (store, _, _dir) = common::sqlite().await;
    versions(&store).await;
    racing_savers(&store).await;
    store.close().await;
}

#[tokio::test]
async fn postgres_workspace_versions() {
    let (store, schema) = common::postgres("mags_wsv").await;
    versions(&store).await;
    racing_savers(&store).await;
    store.close().await;
    schema.drop().await;
}
