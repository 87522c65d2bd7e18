//! Cron jobs through the router (fake executor, real SQLite store), with
//! the ticker driven by hand at chosen times instead of waiting minutes;
//! and two hosts on one Postgres database (`MAGS_TEST_POSTGRES_URL`,
//! required like the store tests').

mod common;

use axum::http::{Method, StatusCode};
use common::harness;
use mags_control::cron;
use mags_store::clock;
use serde_json::{json, Value};

const MINUTE: i64 = 60_000;

async fn create(h: &common::Harness, body: Value) -> (StatusCode, Value) {
    let t = h.token.clone();
    h.call(
        Method::POST,
        "/api/v1/mags-cron",
        Some(&t),
        Some(&body.to_string()),
    )
    .await
}

async fn cron_count(h: &common::Harness) -> usize {
    let (status, body) = h.get("/api/v1/mags-cron").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["total"].as_u64().expect("total") as usize
}

#[tokio::test]
async fn bad_cron_requests_are_400_and_create_nothing() {
    let h = harness().await;
    for (body, needle) in [
        (
            json!({"name": "a", "cron_expression": "* * * *", "script": "echo"}),
            "5",
        ),
        (
            json!({"name": "a", "cron_expression": "61 * * * *", "script": "echo"}),
            "minute",
        ),
        (
            json!({"name": "a", "cron_expression": "@reboot", "script": "echo"}),
            "macro",
        ),
        (
            json!({"name": "a", "cron_expression": "0 0 30 2 *", "script": "echo"}),
            "never",
        ),
        (
            json!({"name": "", "cron_expression": "* * * * *", "script": "echo"}),
            "name",
        ),
        (
            json!({"name": "a", "cron_expression": "* * * * *", "script": " "}),
            "script",
        ),
        (
            json!({"name": "a", "cron_expression": "* * * * *", "script": "x", "workspace_id": "../x"}),
            "workspace",
        ),
        (json!({"name": "a", "script": "x"}), "cron_expression"),
    ] {
        let (status, resp) = create(&h, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {resp}");
        let msg = resp["error"].as_str().unwrap_or_default();
        assert!(
            msg.contains(needle),
            "{body}: {msg:?} should mention {needle}"
        );
    }
    assert_eq!(cron_count(&h).await, 0);
    assert_eq!(h.job_count().await, 0);
}

#[tokio::test]
async fn crud_by_id_and_name_scoped_to_the_owner() {
    let h = harness().await;
    let (status, c) = create(
        &h,
        json!({"name": "nightly", "cron_expression": "0 3 * * *", "script": "echo hi",
               "environment": {"A": "1"}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    let id = c["id"].as_str().expect("id").to_string();
    assert_eq!(c["enabled"], true);
    assert!(
        c["next_run_at"]
            .as_str()
            .expect("next")
            .contains("T03:00:00"),
        "{c}"
    );
    let (status, dup) = create(
        &h,
        json!({"name": "nightly", "cron_expression": "@hourly", "script": "x"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{dup}");

    let (status, by_name) = h.get("/api/v1/mags-cron/nightly").await;
    assert_eq!(
        (status, by_name["id"].as_str()),
        (StatusCode::OK, Some(id.as_str()))
    );

    let t = h.token.clone();
    let path = format!("/api/v1/mags-cron/{id}");
    let (status, off) = h
        .call(
            Method::PATCH,
            &path,
            Some(&t),
            Some(r#"{"enabled": false}"#),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{off}");
    assert_eq!(
        (off["enabled"].clone(), off["next_run_at"].clone()),
        (json!(false), Value::Null)
    );
    assert_eq!(off["script"], "echo hi", "untouched fields stay");
    let (status, bad) = h
        .call(
            Method::PATCH,
            &path,
            Some(&t),
            Some(r#"{"cron_expression": "nope"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");

    // Another user sees nothing and changes nothing.
    let bob = h.store.create_user("bob", false).await.expect("bob");
    let (_, bob_token) = h.store.create_token(&bob.id).await.expect("token");
    for method in [Method::GET, Method::DELETE] {
        let (status, _) = h.call(method, &path, Some(&bob_token), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let (status, _) = h
        .call(
            Method::PATCH,
            &path,
            Some(&bob_token),
            Some(r#"{"enabled": true}"#),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, _) = h.call(Method::DELETE, &path, Some(&t), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cron_count(&h).await, 0);
    let (status, _) = h.get(&path).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn due_runs_become_jobs_once_and_never_overlap() {
    let h = harness().await;
    let (status, c) = create(
        &h,
        json!({"name": "every-minute", "cron_expression": "* * * * *", "script": "echo tick"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    let id = c["id"].as_str().expect("id").to_string();

    // Not due yet: nothing happens.
    let now = clock::now_ms();
    let r = cron::tick(&h.state, now).await.expect("tick");
    assert!(r.started.is_empty());

    // A minute later the run is due; two servers ticking at once (or a
    // server and its restarted self) start it exactly once.
    let later = now + MINUTE + 1_000;
    let (a, b) = tokio::join!(cron::tick(&h.state, later), cron::tick(&h.state, later));
    let started: Vec<String> = [a, b]
        .into_iter()
        .flat_map(|r| r.expect("tick").started)
        .collect();
    assert_eq!(started.len(), 1, "one run, not two: {started:?}");
    // A restarted server (a new state over the same database) ticking at
    // the same moment finds nothing left to start.
    let (restarted, _stop) = mags_control::Control::new(
        h.store.clone(),
        std::sync::Arc::new(mags_control::executor::fake::FakeExecutor::new()),
        4,
    );
    let r = cron::tick(&restarted, later).await.expect("tick");
    assert!(r.started.is_empty(), "a restart must not run it again");
    let done = h.wait_final(&started[0]).await;
    assert_eq!(done["status"], "completed", "{done}");
    let (_, logs) = h
        .get(&format!("/api/v1/mags-jobs/{}/logs", started[0]))
        .await;
    assert!(logs.to_string().contains("tick"), "{logs}");
    let (_, c) = h.get(&format!("/api/v1/mags-cron/{id}")).await;
    assert_eq!(c["last_job_id"].as_str(), Some(started[0].as_str()), "{c}");
    assert_eq!(c["last_status"], "completed");
    assert_eq!(c["run_count"], 1);

    // Hours of missed ticks (the server was down) collapse into one run.
    // (At a minute's first second, so a second later is not due again.)
    let much_later = (later + 180 * MINUTE) / MINUTE * MINUTE + 1_000;
    let r = cron::tick(&h.state, much_later).await.expect("tick");
    assert_eq!(r.started.len(), 1);
    h.wait_final(&r.started[0]).await;
    let r = cron::tick(&h.state, much_later + 1_000)
        .await
        .expect("tick");
    assert!(r.started.is_empty(), "the backlog ran once");

    // A run still going when the next one is due: the next is skipped and
    // the skip is recorded.
    let t = h.token.clone();
    h.call(
        Method::PATCH,
        &format!("/api/v1/mags-cron/{id}"),
        Some(&t),
        Some(r#"{"script": "sleep 30"}"#),
    )
    .await;
    let t1 = much_later + 10 * MINUTE;
    let r = cron::tick(&h.state, t1).await.expect("tick");
    assert_eq!(r.started.len(), 1);
    let r = cron::tick(&h.state, t1 + MINUTE).await.expect("tick");
    assert_eq!((r.started.len(), r.skipped), (0, 1));
    let (_, c) = h.get(&format!("/api/v1/mags-cron/{id}")).await;
    assert_eq!(c["skipped_runs"], 1, "{c}");
    assert!(
        c["last_skip_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("still"),
        "{c}"
    );
    assert_eq!(h.job_count().await, 3);
}

/// A run refused by the user's limits is skipped once (two ticks racing
/// for it): the reason recorded, the schedule moved on, no job stored.
#[tokio::test]
async fn a_run_refused_by_a_limit_is_skipped_once() {
    let mut limits = mags_control::Limits::new(4);
    limits.user.max_pending = 1;
    let h = common::harness_with_limits(limits, false).await;
    let (status, c) = create(
        &h,
        json!({"name": "refused", "cron_expression": "* * * * *", "script": "echo"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    let id = c["id"].as_str().expect("id").to_string();
    let alice = h
        .store
        .user_by_name("alice")
        .await
        .expect("user")
        .expect("alice");
    // A job left waiting (stored, never scheduled): the user is at the limit.
    let waiting = common::new_job(&alice.id, "true");
    h.store.insert_job(&waiting).await.expect("job");
    let at = clock::now_ms() + MINUTE + 1_000;
    let (a, b) = tokio::join!(cron::tick(&h.state, at), cron::tick(&h.state, at));
    let (a, b) = (a.expect("tick"), b.expect("tick"));
    assert_eq!(
        (a.started.len() + b.started.len(), a.skipped + b.skipped),
        (0, 1),
        "{a:?} {b:?}"
    );
    let row = h
        .store
        .cron(&alice.id, &id)
        .await
        .expect("get")
        .expect("cron");
    assert_eq!((row.run_count, row.skip_count), (0, 1));
    let why = row.last_skip.clone().unwrap_or_default();
    assert!(
        why.starts_with("not started: ") && why.contains("waiting"),
        "{why}"
    );
    assert!(row.next_run_at.expect("next") > at, "moved on");
    let (runs, total) = h
        .store
        .cron_runs(&id, mags_store::Page::first(10))
        .await
        .expect("runs");
    assert_eq!(total, 1);
    assert_eq!(
        (runs[0].job_id.clone(), runs[0].skip_reason.clone()),
        (None, Some(why))
    );
    let again = cron::tick(&h.state, at).await.expect("tick");
    assert_eq!((again.started.len(), again.skipped), (0, 0));
    assert_eq!(h.job_count().await, 1, "only the waiting job");
}

#[tokio::test]
async fn a_disabled_cron_never_runs() {
    let h = harness().await;
    let (_, c) = create(
        &h,
        json!({"name": "off", "cron_expression": "* * * * *", "script": "echo", "enabled": false}),
    )
    .await;
    assert_eq!(c["enabled"], false, "{c}");
    let r = cron::tick(&h.state, clock::now_ms() + 10 * MINUTE)
        .await
        .expect("tick");
    assert!(r.started.is_empty());
    assert_eq!(h.job_count().await, 0);
}

/// The published Python client sends `persistent` without a workspace: the
/// cron job gets one named after it, and each run is a sandbox that stays
/// up on it.
#[tokio::test]
async fn a_persistent_cron_without_a_workspace_uses_its_own_name() {
    let h = harness().await;
    let (status, c) = create(
        &h,
        json!({"name": "my server", "cron_expression": "* * * * *", "script": "echo up",
               "persistent": true}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    assert_eq!(c["workspace_id"], "my-server", "{c}");
    let r = cron::tick(&h.state, clock::now_ms() + MINUTE + 1_000)
        .await
        .expect("tick");
    assert_eq!(r.started.len(), 1, "{r:?}");
    let (_, job) = h
        .get(&format!("/api/v1/mags-jobs/{}/status", r.started[0]))
        .await;
    assert_eq!(
        (job["workspace_id"].as_str(), job["persistent"].as_bool()),
        (Some("my-server"), Some(true)),
        "{job}"
    );
    // The sandbox stays up after its script: the run is live, not final.
    wait_running(&h, &r.started[0]).await;
    // The next run is not skipped: it takes the workspace over.
    let r2 = cron::tick(&h.state, clock::now_ms() + 2 * MINUTE + 1_000)
        .await
        .expect("tick");
    assert_eq!((r2.started.len(), r2.skipped), (1, 0), "{r2:?}");
    wait_running(&h, &r2.started[0]).await;
    let first = h.wait_final(&r.started[0]).await;
    assert_eq!(first["status"], "completed", "{first}");
    let (_, logs) = h
        .get(&format!("/api/v1/mags-jobs/{}/logs", r.started[0]))
        .await;
    assert!(
        logs.to_string()
            .contains(&format!("replaced by job {}", r2.started[0])),
        "{logs}"
    );
}

async fn wait_running(h: &common::Harness, id: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, job) = h.get(&format!("/api/v1/mags-jobs/{id}/status")).await;
        if job["status"] == "running" && job["vm_id"].as_str().is_some() {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{job}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A host of a cluster: its own `Store` (connections) on the shared
/// database, its own control layer and executor.
struct Host {
    control: mags_control::Control,
    fake: mags_control::executor::fake::FakeExecutor,
    _stop: tokio::sync::watch::Sender<bool>,
}

async fn host(url: &str) -> Host {
    let store = mags_store::Store::connect(url).await.expect("connect");
    let fake = mags_control::executor::fake::FakeExecutor::new();
    let (control, stop) = mags_control::Control::new(store, std::sync::Arc::new(fake.clone()), 4);
    Host {
        control,
        fake,
        _stop: stop,
    }
}

/// Polls `what` (for 10 s at most) until it holds.
async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Two hosts on one Postgres database, both ticking at the database's
/// clock: every run due in the past starts once, on one host (whose
/// scheduler then runs it), and a run not yet due by the database's clock
/// starts on neither.
#[tokio::test]
async fn two_hosts_on_one_postgres_start_each_due_run_once() {
    let db = common::postgres::schema("mags_cron_hosts").await;
    let (a, b) = (host(&db.url).await, host(&db.url).await);
    let store = a.control.store.clone();
    let user = store.create_user("alice", false).await.expect("user");
    let now = store.db_now_ms().await.expect("db clock");
    let mut due = Vec::new();
    for i in 0..6 {
        let c = store
            .insert_cron(&mags_store::NewCron {
                id: uuid::Uuid::new_v4().to_string(),
                user_id: user.id.clone(),
                name: format!("due-{i}"),
                expression: "* * * * *".into(),
                script: "echo tick".into(),
                persistent: false,
                workspace_id: None,
                environment: Default::default(),
                enabled: true,
                next_run_at: Some(now - (i + 1) * 5 * MINUTE),
            })
            .await
            .expect("cron");
        due.push(c);
    }
    let soon = store
        .insert_cron(&mags_store::NewCron {
            id: uuid::Uuid::new_v4().to_string(),
            name: "soon".into(),
            next_run_at: Some(now + 5 * MINUTE),
            ..due[0].spec.clone()
        })
        .await
        .expect("cron");

    let (ra, rb) = tokio::join!(cron::tick_now(&a.control), cron::tick_now(&b.control));
    let (ra, rb) = (ra.expect("tick a"), rb.expect("tick b"));
    assert_eq!((ra.failed, rb.failed), (0, 0));
    assert_eq!(
        ra.started.len() + rb.started.len(),
        due.len(),
        "each due run once: {ra:?} {rb:?}"
    );
    // Both hosts ticking on (their real tickers) start nothing more.
    mags_control::cron::start(a.control.clone(), a.control.shutdown.clone());
    mags_control::cron::start(b.control.clone(), b.control.shutdown.clone());
    for c in &due {
        let c = store
            .cron(&user.id, &c.id)
            .await
            .expect("get")
            .expect("cron");
        assert_eq!(c.run_count, 1, "{}", c.name);
        let next = c.next_run_at.expect("next");
        assert!(
            next > now && next % MINUTE == 0,
            "next from the database's clock: {next}"
        );
        let (runs, total) = store
            .cron_runs(&c.id, mags_store::Page::first(10))
            .await
            .expect("runs");
        assert_eq!(total, 1, "{}", c.name);
        assert_eq!(runs[0].job_id, c.last_job_id);
    }
    // Each started job was handed to the scheduler of the host that
    // started it, and ran there.
    wait_until("every run's VM started", || async {
        a.fake.started() + b.fake.started() >= due.len()
    })
    .await;
    assert_eq!(a.fake.started(), ra.started.len());
    assert_eq!(b.fake.started(), rb.started.len());
    for id in ra.started.iter().chain(&rb.started) {
        let store = store.clone();
        wait_until("the run completed", || {
            let store = store.clone();
            async move {
                store
                    .job(id)
                    .await
                    .expect("job")
                    .is_some_and(|j| j.status == mags_api::JobState::Completed)
            }
        })
        .await;
    }
    let row = sqlx::query("SELECT COUNT(*) AS n FROM jobs")
        .fetch_one(store.pool())
        .await
        .expect("count");
    let jobs: i64 = sqlx::Row::try_get(&row, "n").expect("n");
    assert_eq!(jobs, due.len() as i64, "one job per due run");
    let soon = store
        .cron(&user.id, &soon.id)
        .await
        .expect("get")
        .expect("cron");
    assert_eq!(
        (soon.run_count, soon.next_run_at),
        (0, Some(now + 5 * MINUTE)),
        "not due yet by the database's clock"
    );
    for h in [&a, &b] {
        h.control.store.close().await;
    }
    db.drop().await;
}
