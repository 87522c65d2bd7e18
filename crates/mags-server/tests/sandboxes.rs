//! Persistent sandboxes through the router in-process, over a real SQLite
//! store, with the fake executor standing in for VMs: exec, its refusals,
//! timeouts, sleep and wake, no_sleep restarts, settings, stop, sync,
//! recovery after a restart, and the running-sandbox limit.

mod common;

use axum::http::{Method, StatusCode};
use common::{harness, harness_with_limits};
use mags_api::JobState;
use mags_control::Limits;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn assert_error(code: StatusCode, v: &Value, want: StatusCode, needle: &str) {
    assert_eq!(code, want, "{v}");
    let msg = v["error"].as_str().unwrap_or_default();
    assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
}

#[tokio::test]
async fn exec_runs_in_a_persistent_sandbox() {
    let h = harness().await;
    let id = h.new_sandbox(json!({"workspace_id": "box"})).await;
    let s = h.status(&id).await;
    assert!(s["vm_id"].as_str().is_some_and(|v| !v.is_empty()), "{s}");
    assert_eq!(s["persistent"], true);

    let (code, v) = h
        .exec(
            &id,
            json!({"command": "echo hi\necho err >&2\nexit 3", "timeout": 30}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(v["exit_code"], 3);
    assert_eq!(v["stdout"], "hi\n");
    assert_eq!(v["stderr"], "err\n");
    assert_eq!(v["timed_out"], false);

    // The streaming variant: output events, then exit.
    let (code, v) = h
        .call_json(
            Method::POST,
            &format!("/api/v1/mags-jobs/{id}/exec/stream"),
            Some(json!({"command": "echo a\necho b >&2\nexit 5"})),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    let events: Vec<Value> = v
        .as_str()
        .expect("ndjson")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(
        events[0],
        json!({"event": "output", "stream": "stdout", "data": "a\n"})
    );
    assert_eq!(events[1]["stream"], "stderr");
    assert_eq!(
        events[2],
        json!({"event": "exit", "exit_code": 5, "timed_out": false})
    );

    // Bad requests are JSON 400s.
    for (body, needle) in [
        (json!({}), "command"),
        (json!({"command": "  "}), "command"),
        (json!({"command": "echo", "timeout": -1}), "timeout"),
        (json!({"command": "echo", "timeout": 0}), "timeout"),
        (json!({"command": "echo", "timeout": "soon"}), "JSON"),
    ] {
        let (code, v) = h.exec(&id, body.clone()).await;
        assert_error(code, &v, StatusCode::BAD_REQUEST, needle);
    }
    assert_eq!(h.status(&id).await["status"], "running");
}

#[tokio::test]
async fn exec_is_refused_where_there_is_no_sandbox() {
    let h = harness().await;
    let unknown = uuid::Uuid::new_v4().to_string();
    let (code, v) = h.exec(&unknown, json!({"command": "echo"})).await;
    assert_error(code, &v, StatusCode::NOT_FOUND, &unknown);

    // Another user's sandbox is as missing as an unknown one.
    let mine = h.new_sandbox(json!({})).await;
    let bob_token = h.user_token("bob").await;
    for (m, p, body) in [
        (Method::POST, "exec", Some(json!({"command": "echo"}))),
        (
            Method::POST,
            "exec/stream",
            Some(json!({"command": "echo"})),
        ),
        (Method::POST, "stop", None),
        (Method::POST, "sync", None),
    ] {
        let (code, v) = h
            .call_as(
                &bob_token,
                m,
                &format!("/api/v1/mags-jobs/{mine}/{p}"),
                body,
            )
            .await;
        assert_error(code, &v, StatusCode::NOT_FOUND, "not found");
        assert!(!v.to_string().contains("fake-"), "no VM detail leaks: {v}");
    }
    let (code, v) = h
        .call_as(
            &bob_token,
            Method::PATCH,
            &format!("/api/v1/mags-jobs/{mine}"),
            Some(json!({"no_sleep": true})),
        )
        .await;
    assert_error(code, &v, StatusCode::NOT_FOUND, "not found");
    assert_eq!(h.status(&mine).await["no_sleep"], false);

    // A one-shot job, running or done, has no sandbox to exec in.
    let oneshot = h.create_job(json!({"script": "sleep 30"})).await;
    h.wait_status(&oneshot, "running").await;
    let (code, v) = h.exec(&oneshot, json!({"command": "echo"})).await;
    assert_error(code, &v, StatusCode::CONFLICT, "persistent");
    let done = h.create_job(json!({"script": "echo done"})).await;
    h.wait_status(&done, "completed").await;
    let (code, v) = h.exec(&done, json!({"command": "echo"})).await;
    assert_error(code, &v, StatusCode::CONFLICT, "completed");
}

#[tokio::test]
async fn exec_timeout_kills_the_command_not_the_sandbox() {
    let h = harness().await;
    let id = h.new_sandbox(json!({})).await;
    let t0 = Instant::now();
    let (code, v) = h
        .exec(
            &id,
            json!({"command": "echo before\nsleep 30", "timeout": 0.3}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(v["exit_code"], 124);
    assert_eq!(v["timed_out"], true);
    assert_eq!(v["stdout"], "before\n");
    assert!(
        v["stderr"]
            .as_str()
            .is_some_and(|e| e.contains("timed out")),
        "{v}"
    );
    let (code, v) = h.exec(&id, json!({"command": "echo still here"})).await;
    assert_eq!(
        (code, v["stdout"].as_str()),
        (StatusCode::OK, Some("still here\n"))
    );
    assert_eq!(h.status(&id).await["status"], "running");
}

#[tokio::test]
async fn an_idle_sandbox_sleeps_and_exec_wakes_it_with_its_startup_command() {
    let h = harness().await;
    let id = h
        .new_sandbox(json!({"idle_timeout_secs": 1, "startup_command": "echo started"}))
        .await;
    let vm = h.status(&id).await["vm_id"].clone();
    let slept = h.wait_status(&id, "sleeping").await;
    assert_eq!(slept["idle_timeout_secs"], 1);
    // Asleep, no VM time accrues.
    let t1 = slept["vm_seconds"].as_f64().expect("vm_seconds");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.status(&id).await["vm_seconds"].as_f64(), Some(t1));
    let (_, u) = h
        .call_json(Method::GET, "/api/v1/mags-jobs/usage", None)
        .await;
    assert_eq!(u["total_jobs"], 1);
    assert!(
        u["vm_seconds"]
            .as_f64()
            .is_some_and(|s| s >= t1 && s < t1 + 0.1),
        "{u}"
    );

    let (code, v) = h.exec(&id, json!({"command": "echo awake"})).await;
    assert_eq!(
        (code, v["stdout"].as_str()),
        (StatusCode::OK, Some("awake\n")),
        "{v}"
    );
    let s = h.status(&id).await;
    assert_eq!(s["status"], "running");
    assert_eq!(s["vm_id"], vm, "woken, not replaced");
    assert_eq!(h.fake.started(), 1);
    let logs = h.logs(&id).await;
    let pos = |needle: &str| logs.iter().position(|l| l.contains(needle));
    let (asleep, woke, startup, ran) = (
        pos("sandbox asleep (idle for 1 s"),
        pos("sandbox woke in"),
        pos("running the startup command: echo started"),
        logs.iter().position(|l| l == "started"),
    );
    assert!(
        asleep < woke && woke < startup && startup < ran && asleep.is_some(),
        "{logs:?}"
    );
    assert_eq!(
        logs.iter().filter(|l| *l == "started").count(),
        1,
        "{logs:?}"
    );
}

#[tokio::test]
async fn a_no_sleep_sandbox_stays_up_and_comes_back_when_its_vm_dies() {
    let h = harness().await;
    let id = h
        .new_sandbox(json!({"no_sleep": true, "idle_timeout_secs": 1}))
        .await;
    let vm = h.status(&id).await["vm_id"].clone();
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(h.status(&id).await["status"], "running", "never sleeps");

    // Its VM dies under a command; a fresh one replaces it.
    let (code, v) = h.exec(&id, json!({"command": "die"})).await;
    assert_error(code, &v, StatusCode::SERVICE_UNAVAILABLE, "died");
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.fake.started() < 2 {
        assert!(Instant::now() < deadline, "not restarted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // `running` is also what it said before the VM died: wait for the new VM.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = h.status(&id).await;
        if s["status"] == "running" && s["vm_id"] != vm && !s["vm_id"].is_null() {
            break;
        }
        assert!(Instant::now() < deadline, "no fresh VM: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let logs = h.logs(&id).await;
    assert!(
        logs.iter().any(|l| l.contains("a fresh sandbox starts")),
        "{logs:?}"
    );
    let (code, _) = h.exec(&id, json!({"command": "echo ok"})).await;
    assert_eq!(code, StatusCode::OK);

    // Without no_sleep a dead VM ends the job, saying why.
    let other = h.new_sandbox(json!({})).await;
    let (code, _) = h.exec(&other, json!({"command": "die"})).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    let s = h.wait_status(&other, "error").await;
    assert!(
        s["error"].as_str().is_some_and(|e| e.contains("lost")),
        "{s}"
    );
}

#[tokio::test]
async fn settings_change_live() {
    let h = harness().await;
    let id = h.new_sandbox(json!({"idle_timeout_secs": 1})).await;
    let patch = |body: Value| {
        let path = format!("/api/v1/mags-jobs/{id}");
        let h = &h;
        async move { h.call_json(Method::PATCH, &path, Some(body)).await }
    };
    let (code, v) = patch(json!({"no_sleep": true, "startup_command": "echo up"})).await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(
        (v["no_sleep"].as_bool(), v["startup_command"].as_str()),
        (Some(true), Some("echo up"))
    );
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(h.status(&id).await["status"], "running");

    // Back to sleeping; a sleeping sandbox turned no_sleep wakes by itself.
    let (code, v) = patch(json!({"no_sleep": false, "startup_command": ""})).await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert!(v["startup_command"].is_null(), "{v}");
    h.wait_status(&id, "sleeping").await;
    let (code, _) = patch(json!({"no_sleep": true})).await;
    assert_eq!(code, StatusCode::OK);
    h.wait_status(&id, "running").await;
    let (code, v) = patch(json!({})).await;
    assert_eq!(
        (code, v["no_sleep"].as_bool()),
        (StatusCode::OK, Some(true))
    );

    // no_sleep needs a persistent job; a finished job has nothing to change.
    let oneshot = h.create_job(json!({"script": "echo"})).await;
    let (code, v) = h
        .call_json(
            Method::PATCH,
            &format!("/api/v1/mags-jobs/{oneshot}"),
            Some(json!({"no_sleep": true})),
        )
        .await;
    assert!(
        code == StatusCode::BAD_REQUEST || code == StatusCode::CONFLICT,
        "{code} {v}"
    );
    h.wait_status(&oneshot, "completed").await;
    let (code, v) = h
        .call_json(
            Method::PATCH,
            &format!("/api/v1/mags-jobs/{oneshot}"),
            Some(json!({"startup_command": "x"})),
        )
        .await;
    assert_error(code, &v, StatusCode::CONFLICT, "ended");
    let unknown = uuid::Uuid::new_v4();
    let (code, v) = h
        .call_json(
            Method::PATCH,
            &format!("/api/v1/mags-jobs/{unknown}"),
            Some(json!({})),
        )
        .await;
    assert_error(code, &v, StatusCode::NOT_FOUND, "not found");
}

#[tokio::test]
async fn stop_ends_running_and_sleeping_sandboxes_and_one_shot_jobs() {
    let h = harness().await;
    // The script's exit is recorded while the sandbox stays up, and kept.
    let id = h
        .create_job(json!({"script": "echo hello\nexit 3", "persistent": true}))
        .await;
    let (_, out) = h
        .call_json(
            Method::GET,
            &format!("/api/v1/mags-jobs/{id}/output?follow=true"),
            None,
        )
        .await;
    let last: Value = out
        .as_str()
        .and_then(|t| t.lines().last())
        .and_then(|l| serde_json::from_str(l).ok())
        .expect("an exit event ends the stream");
    assert_eq!(last["event"], "exit");
    assert_eq!(last["status"], "running");
    assert_eq!(last["exit_code"], 3);
    let s = h.status(&id).await;
    assert_eq!(
        (s["status"].as_str(), s["exit_code"].as_i64()),
        (Some("running"), Some(3))
    );

    let (code, v) = h
        .call_json(Method::POST, &format!("/api/v1/mags-jobs/{id}/sync"), None)
        .await;
    assert_eq!(
        (code, v["success"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{v}"
    );
    let (code, v) = h
        .call_json(Method::POST, &format!("/api/v1/mags-jobs/{id}/stop"), None)
        .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "completed");
    let s = h.status(&id).await;
    assert_eq!(
        (s["status"].as_str(), s["exit_code"].as_i64()),
        (Some("completed"), Some(3))
    );
    assert!(h.logs(&id).await.iter().any(|l| l == "stopped on request"));
    let (code, v) = h
        .call_json(Method::POST, &format!("/api/v1/mags-jobs/{id}/stop"), None)
        .await;
    assert_error(code, &v, StatusCode::CONFLICT, "already ended");
    let (code, v) = h.exec(&id, json!({"command": "echo"})).await;
    assert_error(code, &v, StatusCode::CONFLICT, "completed");
    let (code, v) = h
        .call_json(Method::POST, &format!("/api/v1/mags-jobs/{id}/sync"), None)
        .await;
    assert_error(code, &v, StatusCode::CONFLICT, "completed");

    // A sleeping one: its snapshot goes too.
    let asleep = h.new_sandbox(json!({"idle_timeout_secs": 1})).await;
    let vm = h.wait_status(&asleep, "sleeping").await["vm_id"]
        .as_str()
        .expect("vm")
        .to_string();
    use mags_control::executor::Executor as _;
    assert!(h.fake.has_snapshot(&vm));
    let (code, v) = h
        .call_json(
            Method::POST,
            &format!("/api/v1/mags-jobs/{asleep}/stop"),
            None,
        )
        .await;
    assert_eq!(
        (code, v["status"].as_str()),
        (StatusCode::OK, Some("completed")),
        "{v}"
    );
    assert!(!h.fake.has_snapshot(&vm));

    // A one-shot job mid-script is killed.
    let oneshot = h.create_job(json!({"script": "echo x\nsleep 30"})).await;
    h.wait_status(&oneshot, "running").await;
    let (code, v) = h
        .call_json(
            Method::POST,
            &format!("/api/v1/mags-jobs/{oneshot}/stop"),
            None,
        )
        .await;
    assert_eq!(
        (code, v["status"].as_str()),
        (StatusCode::OK, Some("error")),
        "{v}"
    );
    assert!(h.status(&oneshot).await["error"]
        .as_str()
        .is_some_and(|e| e.contains("stopped")));
}

#[tokio::test]
async fn a_restarted_server_brings_persistent_sandboxes_back() {
    let h = harness().await;
    // One sleeps (its snapshot survives), one runs (its VM dies with the server).
    let asleep = h.new_sandbox(json!({"idle_timeout_secs": 1})).await;
    h.wait_status(&asleep, "sleeping").await;
    let running = h.new_sandbox(json!({})).await;
    let old_vm = h.status(&running).await["vm_id"].clone();

    // A new server on the same database and "host" (the fake keeps snapshots).
    let h2 = h.restarted(Limits::new(4));
    h2.state.scheduler.recover().await.expect("recover");

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = h2.status(&running).await;
        if s["status"] == "running" && s["vm_id"] != old_vm {
            break;
        }
        assert!(Instant::now() < deadline, "not restarted: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let logs = h2.logs(&running).await;
    assert!(
        logs.iter()
            .any(|l| l.contains("magsd restarted and the sandbox's VM was lost")),
        "{logs:?}"
    );
    assert_eq!(h2.status(&asleep).await["status"], "sleeping");
    let (code, v) = h2.exec(&asleep, json!({"command": "echo back"})).await;
    assert_eq!(
        (code, v["stdout"].as_str()),
        (StatusCode::OK, Some("back\n")),
        "{v}"
    );
    let job = h2.store.job(&asleep).await.expect("q").expect("job");
    assert_eq!(job.status, JobState::Running);
}

#[tokio::test]
async fn the_running_limit_puts_the_least_recently_used_sandbox_to_sleep() {
    let h = harness_with_limits(
        Limits {
            max_sandboxes: 1,
            ..Limits::new(4)
        },
        false,
    )
    .await;
    let first = h.new_sandbox(json!({})).await;
    let second = h.new_sandbox(json!({})).await;
    assert_eq!(h.status(&first).await["status"], "sleeping", "made room");
    let (code, _) = h.exec(&first, json!({"command": "echo"})).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(h.status(&second).await["status"], "sleeping");
    assert_eq!(h.status(&first).await["status"], "running");
    let (_, p) = h
        .call_json(Method::GET, "/api/v1/mags-jobs/pool-status", None)
        .await;
    assert_eq!(p["busy_vms"], 1, "{p}");

    // A no_sleep sandbox is never evicted: a third waits, queued.
    let (code, _) = h
        .call_json(
            Method::PATCH,
            &format!("/api/v1/mags-jobs/{first}"),
            Some(json!({"no_sleep": true})),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    let third = h
        .create_job(json!({"script": "sleep infinity", "persistent": true}))
        .await;
    h.wait_status(&third, "queued").await;
    let (code, _) = h
        .call_json(
            Method::POST,
            &format!("/api/v1/mags-jobs/{first}/stop"),
            None,
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    h.wait_status(&third, "running").await;
}

#[tokio::test]
async fn shutdown_ends_running_commands() {
    let h = Arc::new(harness().await);
    let id = h.new_sandbox(json!({})).await;
    let (h1, h2) = (h.clone(), h.clone());
    let (id1, id2) = (id.clone(), id.clone());
    let stream = tokio::spawn(async move {
        h1.call_json(
            Method::POST,
            &format!("/api/v1/mags-jobs/{id1}/exec/stream"),
            Some(json!({"command": "echo started\nsleep 30"})),
        )
        .await
    });
    let buffered = tokio::spawn(async move {
        h2.exec(&id2, json!({"command": "sleep 30", "timeout": 60}))
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.shutdown.send(true).expect("signal");
    let (code, v) = tokio::time::timeout(Duration::from_secs(3), stream)
        .await
        .expect("the stream ended")
        .expect("task");
    assert_eq!(code, StatusCode::OK);
    let text = v.as_str().unwrap_or_default();
    assert!(
        text.contains("started") && text.contains("shutting down"),
        "{text}"
    );
    let (code, v) = tokio::time::timeout(Duration::from_secs(3), buffered)
        .await
        .expect("the exec ended")
        .expect("task");
    assert_error(code, &v, StatusCode::SERVICE_UNAVAILABLE, "shutting down");
}

/// With autosync, a running sandbox's synced workspace is saved on its
/// own every interval (what a lost host can lose is bounded), a sandbox
/// without one is left alone, and saving is not activity: the sandbox
/// still sleeps when idle.
#[tokio::test]
async fn autosync_saves_synced_workspaces_and_is_not_activity() {
    let h = harness_with_limits(
        Limits {
            autosync: Some(Duration::from_millis(300)),
            ..Limits::new(4)
        },
        true,
    )
    .await;
    let plain = h.new_sandbox(json!({})).await;
    h.wait_status(&plain, "running").await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(h.fake.syncs(), 0, "no synced workspace, nothing saved");

    let id = h
        .new_sandbox(json!({"workspace_id": "saved", "idle_timeout_secs": 2}))
        .await;
    h.wait_status(&id, "running").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.fake.syncs() < 2 {
        assert!(Instant::now() < deadline, "autosync did not run twice");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Not activity: it sleeps at its idle timeout all the same.
    h.wait_status(&id, "sleeping").await;
    let asleep = h.fake.syncs();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        h.fake.syncs() <= asleep + 1,
        "a sleeping sandbox is not saved again and again"
    );
}
