//! Hosts of a cluster on a real database: epochs, leases and fencing,
//! concurrent claims (no job gets two owners), the leader, and a lost
//! host's work handed on. Each check runs on SQLite and on Postgres.

mod common;

use mags_api::JobState;
use mags_store::{Claim, Finish, HostInfo, HostState, NewChunk, Owner, Store, StoreError};
use std::collections::HashSet;
use std::time::Duration;

const LEASE: Duration = Duration::from_secs(30);
/// A lease that has run out as soon as it is given.
const NONE: Duration = Duration::ZERO;

fn info(name: &str) -> HostInfo {
    HostInfo {
        name: name.into(),
        internal_url: Some(format!("http://{name}.internal:7071")),
        capacity: 4,
        labels: [("zone".to_string(), "a".to_string())].into(),
    }
}

/// A one-shot job of `user`, nobody's yet.
fn one_shot(user: &str) -> mags_store::NewJob {
    mags_store::NewJob {
        persistent: false,
        workspace_id: None,
        name: None,
        ..common::job(user, "unused")
    }
}

async fn epochs_leases_and_fences(store: &Store) {
    let a1 = store
        .register_host(&info("a"), LEASE)
        .await
        .expect("register");
    assert_eq!((a1.epoch, a1.state), (1, HostState::Up));
    assert_eq!(a1.info, info("a"));
    let lease = store
        .renew_lease(&a1.owner(), LEASE)
        .await
        .expect("renew")
        .expect("still a's");
    assert!(lease.until >= a1.lease_until);

    // A job taken under epoch 1, then the host starts again: epoch 2.
    let user = store.create_user("fence-user", false).await.expect("user");
    let old = store.fenced(a1.owner());
    let job = old.insert_job(&one_shot(&user.id)).await.expect("insert");
    assert_eq!((job.host.as_deref(), job.host_epoch), (Some("a"), Some(1)));
    let a2 = store.register_host(&info("a"), LEASE).await.expect("again");
    assert_eq!(a2.epoch, 2);
    // The old epoch is fenced: no lease, and its writes change nothing.
    assert_eq!(
        store.renew_lease(&a1.owner(), LEASE).await.expect("renew"),
        None
    );
    assert!(!old.mark_running(&job.id, "vm-old").await.expect("write"));
    let chunk = NewChunk {
        seq: 0,
        stream: mags_api::OutputStream::Stdout,
        data: b"late".to_vec(),
        ts: 1,
    };
    assert!(matches!(
        old.append_output(&job.id, std::slice::from_ref(&chunk))
            .await,
        Err(StoreError::Fenced(_))
    ));
    assert_eq!(store.last_output_seq(&job.id).await.expect("seq"), None);

    // At its start the new epoch adopts what the old one owned.
    let adopted = store.adopt_jobs(&a2.owner()).await.expect("adopt");
    assert_eq!(adopted.len(), 1);
    assert_eq!(adopted[0].host_epoch, Some(2));
    let new = store.fenced(a2.owner());
    assert!(new.mark_running(&job.id, "vm-new").await.expect("write"));
    new.append_output(&job.id, &[chunk]).await.expect("output");
    assert!(!old
        .finish_job(&job.id, &finish(JobState::Completed))
        .await
        .expect("write"));
    let stored = store.job(&job.id).await.expect("read").expect("job");
    assert_eq!(
        (stored.status, stored.vm_id.as_deref()),
        (JobState::Running, Some("vm-new"))
    );
    assert!(new
        .finish_job(&job.id, &finish(JobState::Completed))
        .await
        .expect("write"));

    // Drain: no new claims; undrain: claims again.
    assert!(store.set_draining("a", true).await.expect("drain"));
    let waiting = store.insert_job(&one_shot(&user.id)).await.expect("insert");
    assert_eq!(waiting.host, None);
    let lease = store
        .renew_lease(&a2.owner(), LEASE)
        .await
        .expect("renew")
        .expect("lease");
    assert_eq!(lease.state, HostState::Draining);
    assert!(store
        .claim_jobs(&a2.owner(), &Claim::Queue(5))
        .await
        .expect("claim")
        .is_empty());
    assert!(store.set_draining("a", false).await.expect("undrain"));
    let got = store
        .claim_jobs(&a2.owner(), &Claim::Queue(5))
        .await
        .expect("claim");
    assert_eq!(got.iter().map(|j| &j.id).collect::<Vec<_>>(), [&waiting.id]);
    assert!(!store.set_draining("nobody", true).await.expect("drain"));

    // A host holding a lease, or owning live jobs, is not forgotten.
    assert!(matches!(
        store.forget_host("a").await,
        Err(StoreError::Conflict(_))
    ));
    assert!(!store.forget_host("nobody").await.expect("forget"));
}

fn finish(status: JobState) -> Finish {
    Finish {
        status,
        exit_code: Some(0),
        error: None,
        script_duration_ms: Some(1),
    }
}

/// Eight hosts (each on its own connection pool) claim 60 waiting jobs at
/// once, a few at a time: every job is claimed exactly once.
async fn concurrent_claims(store: &Store, url: &str) {
    let user = store.create_user("claim-user", false).await.expect("user");
    let mut all = HashSet::new();
    for _ in 0..60 {
        all.insert(
            store
                .insert_job(&one_shot(&user.id))
                .await
                .expect("job")
                .id
                .clone(),
        );
    }
    let mut tasks = Vec::new();
    for i in 0..8 {
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let store = Store::connect(&url).await.expect("connect");
            let me = store
                .register_host(&info(&format!("claimer-{i}")), LEASE)
                .await
                .expect("register")
                .owner();
            let mut mine = Vec::new();
            loop {
                let got = store
                    .claim_jobs(&me, &Claim::Queue(3))
                    .await
                    .expect("claim");
                if got.is_empty() {
                    break;
                }
                for j in got {
                    assert_eq!(j.host.as_deref(), Some(me.host.as_str()));
                    mine.push(j.id.clone());
                }
            }
            store.close().await;
            mine
        }));
    }
    let mut seen = HashSet::new();
    let mut hosts_that_claimed = 0;
    for t in tasks {
        let mine = t.await.expect("claimer");
        hosts_that_claimed += usize::from(!mine.is_empty());
        for id in mine {
            assert!(seen.insert(id.clone()), "job {id} claimed twice");
        }
    }
    assert_eq!(seen, all);
    assert!(hosts_that_claimed >= 1);
    // What the database says agrees with what each claimer got.
    for id in &all {
        let j = store.job(id).await.expect("read").expect("job");
        assert!(j.host.as_deref().is_some_and(|h| h.starts_with("claimer-")));
    }
}

/// A host whose lease ran out claims nothing; the leader's lease passes on
/// only once it runs out.
async fn leases_and_the_leader(store: &Store) {
    let user = store.create_user("lead-user", false).await.expect("user");
    let late = store
        .register_host(&info("late"), NONE)
        .await
        .expect("register");
    store.insert_job(&one_shot(&user.id)).await.expect("job");
    assert!(store
        .claim_jobs(&late.owner(), &Claim::Queue(5))
        .await
        .expect("claim")
        .is_empty());

    let x = store
        .register_host(&info("x"), LEASE)
        .await
        .expect("x")
        .owner();
    let y = store
        .register_host(&info("y"), LEASE)
        .await
        .expect("y")
        .owner();
    let since = store
        .try_lead(&x, LEASE)
        .await
        .expect("lead")
        .expect("x leads");
    assert_eq!(store.try_lead(&y, LEASE).await.expect("lead"), None);
    assert_eq!(store.try_lead(&x, LEASE).await.expect("lead"), Some(since));
    assert_eq!(store.leader().await.expect("leader").as_deref(), Some("x"));
    // x's lease runs out (it renews with none): y takes over, x cannot.
    store
        .try_lead(&x, NONE)
        .await
        .expect("lead")
        .expect("still x");
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(store.try_lead(&y, LEASE).await.expect("lead").is_some());
    assert_eq!(store.try_lead(&x, LEASE).await.expect("lead"), None);
    assert_eq!(store.leader().await.expect("leader").as_deref(), Some("y"));
    // A new epoch of y is another leader (the old one may still run).
    let y2 = store
        .register_host(&info("y"), LEASE)
        .await
        .expect("y")
        .owner();
    assert_eq!(store.try_lead(&y2, LEASE).await.expect("lead"), None);
}

/// The leader declares a host lost: its running one-shot job ends
/// `error`, its unstarted one is queued again, its sandboxes are nobody's;
/// its late writes land nowhere; another host takes the work.
async fn a_lost_host(store: &Store) {
    let user = store.create_user("lost-user", false).await.expect("user");
    let dead = store
        .register_host(&info("dead"), NONE)
        .await
        .expect("register");
    let heir = store
        .register_host(&info("heir"), LEASE)
        .await
        .expect("register");
    let d = store.fenced(dead.owner());
    let running = d.insert_job(&one_shot(&user.id)).await.expect("job");
    assert!(d.mark_running(&running.id, "vm-1").await.expect("run"));
    let unstarted = d.insert_job(&one_shot(&user.id)).await.expect("job");
    assert!(d
        .set_waiting_status(&unstarted.id, JobState::Queued)
        .await
        .expect("queue"));
    let sandbox = d
        .insert_job(&common::job(&user.id, "ws-a"))
        .await
        .expect("job");
    assert!(d.mark_running(&sandbox.id, "vm-2").await.expect("run"));
    let always_on = d
        .insert_job(&mags_store::NewJob {
            no_sleep: true,
            ..common::job(&user.id, "ws-b")
        })
        .await
        .expect("job");
    assert!(d.mark_running(&always_on.id, "vm-3").await.expect("run"));
    assert!(d.mark_sleeping(&always_on.id).await.expect("sleep"));

    tokio::time::sleep(Duration::from_millis(5)).await;
    let expired = store.expired_hosts(Duration::ZERO).await.expect("expired");
    // "late" (from the leader check) ran out too; the others renew.
    assert_eq!(
        expired
            .iter()
            .map(|h| h.info.name.as_str())
            .collect::<Vec<_>>(),
        ["dead", "late"]
    );
    let seen = expired
        .iter()
        .find(|h| h.info.name == "dead")
        .expect("dead expired")
        .clone();
    // Not expired by a long grace; heir (renewing) never.
    assert!(store
        .expired_hosts(Duration::from_secs(3600))
        .await
        .expect("expired")
        .is_empty());
    assert!(!expired.iter().any(|h| h.info.name == "heir"));

    let lost = store
        .declare_lost(&seen, "host dead was lost")
        .await
        .expect("declare")
        .expect("as seen");
    assert_eq!(lost.failed, std::slice::from_ref(&running.id));
    assert_eq!(lost.requeued, std::slice::from_ref(&unstarted.id));
    let mut orphans = vec![sandbox.id.clone(), always_on.id.clone()];
    orphans.sort();
    assert_eq!(lost.orphaned, orphans);
    // Declared once: a second declaration (another leader, late) is empty.
    assert!(store
        .declare_lost(&seen, "again")
        .await
        .expect("declare")
        .is_none());
    let j = store.job(&running.id).await.expect("read").expect("job");
    assert_eq!(
        (j.status, j.error.as_deref()),
        (JobState::Error, Some("host dead was lost"))
    );
    let log = store.output_after(&running.id, -1, 10).await.expect("log");
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].stream, mags_api::OutputStream::System);
    assert_eq!(log[0].data, b"error: host dead was lost\n");
    let log = store.output_after(&sandbox.id, -1, 10).await.expect("log");
    let text = String::from_utf8_lossy(&log[0].data).to_string();
    assert!(text.contains("writes not yet synced are gone"), "{text}");
    let j = store.job(&unstarted.id).await.expect("read").expect("job");
    assert_eq!((j.status, j.host.as_deref()), (JobState::Accepted, None));

    // The lost host's late writes change nothing, and it has no lease.
    assert!(!d
        .finish_job(&running.id, &finish(JobState::Completed))
        .await
        .expect("write"));
    assert!(!d
        .mark_running(&unstarted.id, "vm-late")
        .await
        .expect("write"));
    assert!(!d.mark_awake(&always_on.id, "vm-late").await.expect("write"));
    assert_eq!(
        store
            .renew_lease(&dead.owner(), LEASE)
            .await
            .expect("renew"),
        None
    );
    assert_eq!(
        store.host("dead").await.expect("host").map(|h| h.state),
        Some(HostState::Lost)
    );

    // The heir: the queue, then the no_sleep sandbox, then the other on demand.
    let h = heir.owner();
    let queue = store
        .claim_jobs(&h, &Claim::Queue(10))
        .await
        .expect("claim");
    assert!(queue.iter().any(|j| j.id == unstarted.id));
    let on = store
        .claim_jobs(&h, &Claim::AlwaysOn(10))
        .await
        .expect("claim");
    assert_eq!(
        on.iter().map(|j| &j.id).collect::<Vec<_>>(),
        [&always_on.id]
    );
    assert!(store
        .claim_jobs(&h, &Claim::One(running.id.clone()))
        .await
        .expect("claim")
        .is_empty());
    let one = store
        .claim_jobs(&h, &Claim::One(sandbox.id.clone()))
        .await
        .expect("claim");
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].host.as_deref(), Some("heir"));
    // Claimed once: a second host asking for it gets nothing.
    let other = store
        .register_host(&info("other"), LEASE)
        .await
        .expect("r")
        .owner();
    assert!(store
        .claim_jobs(&other, &Claim::One(sandbox.id.clone()))
        .await
        .expect("claim")
        .is_empty());
    let heirs = store.fenced(h);
    assert!(heirs.mark_awake(&always_on.id, "vm-4").await.expect("wake"));

    // Restarted under its name, the lost host adopts nothing of its past.
    let back = store
        .register_host(&info("dead"), LEASE)
        .await
        .expect("again");
    assert_eq!((back.epoch, back.state), (dead.epoch + 1, HostState::Up));
    assert!(store
        .adopt_jobs(&back.owner())
        .await
        .expect("adopt")
        .is_empty());
    // Owning nothing live, a lost host may be forgotten.
    let gone = store.register_host(&info("gone"), NONE).await.expect("r");
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(store.forget_host("gone").await.expect("forget"));
    assert!(store.host(&gone.info.name).await.expect("host").is_none());
}

/// Jobs from before hosts were recorded that had started are adopted by
/// the first host to start; ones waiting are claimed as any other.
async fn jobs_from_before_hosts(store: &Store) {
    let user = store.create_user("legacy-user", false).await.expect("user");
    let started = store
        .insert_job(&common::job(&user.id, "old-ws"))
        .await
        .expect("job");
    assert!(store
        .mark_running(&started.id, "vm-old")
        .await
        .expect("run"));
    let me = store.register_host(&info("first"), LEASE).await.expect("r");
    let adopted = store.adopt_jobs(&me.owner()).await.expect("adopt");
    assert!(adopted.iter().any(|j| j.id == started.id));
    let j = store.job(&started.id).await.expect("read").expect("job");
    assert_eq!(j.host.as_deref(), Some("first"));
    let fenced = store.fenced(Owner {
        host: "first".into(),
        epoch: me.epoch,
    });
    assert!(fenced.mark_sleeping(&started.id).await.expect("sleep"));
}

async fn exercise(store: &Store, url: &str) {
    epochs_leases_and_fences(store).await;
    concurrent_claims(store, url).await;
    leases_and_the_leader(store).await;
    a_lost_host(store).await;
    jobs_from_before_hosts(store).await;
}

#[tokio::test]
async fn sqlite_hosts() {
    let (store, url, _dir) = common::sqlite().await;
    exercise(&store, &url).await;
}

#[tokio::test]
async fn postgres_hosts() {
    let (store, schema) = common::postgres("mags_hosts").await;
    exercise(&store, &schema.url).await;
    store.close().await;
    schema.drop().await;
}
