//! The router in-process (`tower::ServiceExt::oneshot`) over a real SQLite
//! store, with the fake executor standing in for VMs.

mod common;

use axum::http::{Method, StatusCode};
use common::{harness, harness_with};
use mags_api::JobState;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

fn assert_json_error(status: StatusCode, body: &Value, want: StatusCode) {
    assert_eq!(status, want, "{body}");
    let msg = body["error"].as_str().unwrap_or_default();
    assert!(!msg.is_empty(), "error body is JSON with a message: {body}");
}

#[tokio::test]
async fn bad_input_is_a_json_400_and_creates_nothing() {
    let h = harness().await;
    let t = h.token.clone();
    let cases: Vec<(&str, &str)> = vec![
        (r#"{"persistent": false}"#, "script"),
        (r#"{"script": "   "}"#, "script"),
        (r#"{"script": "echo", "#, "JSON"),
        ("", "empty"),
        (r#"["script"]"#, "JSON"),
        (r#"{"script": "echo", "no_sleep": true}"#, "persistent"),
        (r#"{"script": "echo", "disk_gb": 0}"#, "disk_gb"),
        (r#"{"script": "echo", "environment": {"A": 1}}"#, "JSON"),
        (r#"{"script": "echo", "type": "docker"}"#, "type"),
        (r#"{"script": "echo", "file_ids": ["nope"]}"#, "file"),
        (
            r#"{"script": "echo", "egress_allow": ["a b"]}"#,
            "egress_allow",
        ),
        (
            r#"{"script": "echo", "egress_deny": ["10.0.0.0/99"]}"#,
            "egress_deny",
        ),
        (r#"{"script": "echo", "egress_deny": "pypi.org"}"#, "JSON"),
        (
            r#"{"script": "echo", "rootfs_type": "gentoo"}"#,
            "rootfs_type \"gentoo\": use one of standard",
        ),
    ];
    for (body, needle) in cases {
        let (status, v) = h
            .call(Method::POST, "/api/v1/mags-jobs", Some(&t), Some(body))
            .await;
        assert_json_error(status, &v, StatusCode::BAD_REQUEST);
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(
            msg.contains(needle),
            "{body:?} -> {msg:?} should mention {needle}"
        );
    }
    assert_eq!(h.job_count().await, 0);
}

#[tokio::test]
async fn auth_is_required_and_has_no_side_effect() {
    let h = harness().await;
    let body = r#"{"script": "echo hi"}"#;
    for token in [None, Some("mags_wrong"), Some("")] {
        let (status, v) = h
            .call(Method::POST, "/api/v1/mags-jobs", token, Some(body))
            .await;
        assert_json_error(status, &v, StatusCode::UNAUTHORIZED);
        let (status, v) = h.call(Method::GET, "/api/v1/mags-jobs", token, None).await;
        assert_json_error(status, &v, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(h.job_count().await, 0);
    // /health needs no token.
    let (status, v) = h.call(Method::GET, "/health", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["status"], "ok");
}

#[tokio::test]
async fn unknown_ids_routes_and_methods_are_json_errors() {
    let h = harness().await;
    let id = uuid::Uuid::new_v4();
    for p in ["status", "logs", "output"] {
        let (status, v) = h.get(&format!("/api/v1/mags-jobs/{id}/{p}")).await;
        assert_json_error(status, &v, StatusCode::NOT_FOUND);
    }
    let (status, v) = h.get("/api/v1/nothing-here").await;
    assert_json_error(status, &v, StatusCode::NOT_FOUND);
    let t = h.token.clone();
    let (status, v) = h
        .call(Method::DELETE, "/api/v1/mags-jobs", Some(&t), None)
        .await;
    assert_json_error(status, &v, StatusCode::METHOD_NOT_ALLOWED);
    let (status, v) = h.get("/api/v1/mags-jobs?page=abc").await;
    assert_json_error(status, &v, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_job_runs_to_completion_with_its_output_in_the_logs() {
    let h = harness().await;
    let (status, v) = h
        .create(
            json!({"script": "echo hello\necho oops >&2\nsleep 0.3\nprintf partial",
                       "type": "inline", "name": "first", "persistent": false, "unknown": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["status"], "accepted");
    let id = v["request_id"].as_str().expect("id").to_string();
    uuid::Uuid::parse_str(&id).expect("job ids are UUIDs");

    // It is seen running, with a VM id, before it completes.
    let mut saw_running = false;
    for _ in 0..100 {
        let (_, s) = h.get(&format!("/api/v1/mags-jobs/{id}/status")).await;
        if s["status"] == "running" {
            assert!(s["vm_id"].as_str().is_some_and(|v| !v.is_empty()), "{s}");
            saw_running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(saw_running);

    let s = h.wait_final(&id).await;
    assert_eq!(s["status"], "completed");
    assert_eq!(s["exit_code"], 0);
    assert_eq!(s["name"], "first");
    assert_eq!(s["request_id"], id.as_str());
    assert!(s["started_at"].as_str().is_some() && s["finished_at"].as_str().is_some());
    assert!(s["script_duration_ms"].as_i64().is_some_and(|d| d >= 300));

    let (status, logs) = h.get(&format!("/api/v1/mags-jobs/{id}/logs")).await;
    assert_eq!(status, StatusCode::OK);
    let entries: Vec<(String, String)> = logs["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .map(|e| {
            assert!(e["timestamp"].is_string() && e["level"].is_string());
            (
                e["message"].as_str().unwrap_or_default().to_string(),
                e["source"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let want = [
        ("hello", "stdout"),
        ("oops", "stderr"),
        ("partial", "stdout"),
    ];
    assert_eq!(
        entries,
        want.map(|(m, s)| (m.to_string(), s.to_string())).to_vec()
    );
}

#[tokio::test]
async fn failures_end_in_error() {
    let h = harness().await;
    let id = h.create_ok("echo before\nexit 3").await;
    let s = h.wait_final(&id).await;
    assert_eq!(
        (s["status"].as_str(), s["exit_code"].as_i64()),
        (Some("error"), Some(3))
    );

    let id = h.create_ok("fail no VM for you").await;
    let s = h.wait_final(&id).await;
    assert_eq!(s["status"], "error");
    assert!(s["exit_code"].is_null());
    assert!(
        s["error"]
            .as_str()
            .is_some_and(|e| e.contains("no VM for you")),
        "{s}"
    );
    let (_, logs) = h.get(&format!("/api/v1/mags-jobs/{id}/logs")).await;
    let sys = &logs["logs"][0];
    assert_eq!(sys["source"], "system");
    assert!(sys["message"]
        .as_str()
        .is_some_and(|m| m.contains("no VM for you")));
}

#[tokio::test]
async fn listing_is_newest_first_and_paged() {
    let h = harness().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(h.create_ok(&format!("echo {i}")).await);
    }
    let (status, page1) = h.get("/api/v1/mags-jobs?page=1&page_size=2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page1["total"], 5);
    assert_eq!(page1["page"], 1);
    assert_eq!(page1["page_size"], 2);
    let got: Vec<&str> = page1["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter_map(|j| j["request_id"].as_str())
        .collect();
    assert_eq!(got, vec![ids[4].as_str(), ids[3].as_str()]);
    let (_, page3) = h.get("/api/v1/mags-jobs?page=3&page_size=2").await;
    assert_eq!(page3["jobs"].as_array().map(Vec::len), Some(1));
    assert_eq!(page3["jobs"][0]["id"], ids[0].as_str());
    let (_, all) = h.get("/api/v1/mags-jobs").await;
    assert_eq!(all["jobs"].as_array().map(Vec::len), Some(5));
}

#[tokio::test]
async fn another_users_job_is_not_found() {
    let h = harness().await;
    let id = h.create_ok("echo mine").await;
    let bob = h.store.create_user("bob", false).await.expect("bob");
    let (_, bob_token) = h.store.create_token(&bob.id).await.expect("token");
    for p in ["status", "logs", "output"] {
        let (status, v) = h
            .call(
                Method::GET,
                &format!("/api/v1/mags-jobs/{id}/{p}"),
                Some(&bob_token),
                None,
            )
            .await;
        assert_json_error(status, &v, StatusCode::NOT_FOUND);
    }
    let (_, list) = h
        .call(Method::GET, "/api/v1/mags-jobs", Some(&bob_token), None)
        .await;
    assert_eq!(list["total"], 0);
}

#[tokio::test]
async fn usage_and_pool_status_win_over_job_ids() {
    let h = harness().await;
    let id = h.create_ok("echo x").await;
    h.wait_final(&id).await;
    let (status, u) = h.get("/api/v1/mags-jobs/usage?window_days=7").await;
    assert_eq!(status, StatusCode::OK, "{u}");
    assert_eq!(u["total_jobs"], 1);
    assert!(u["vm_seconds"].is_number());
    let (status, p) = h.get("/api/v1/mags-jobs/pool-status").await;
    assert_eq!(status, StatusCode::OK, "{p}");
    for k in [
        "idle_vms",
        "busy_vms",
        "total_vms",
        "min_pool_size",
        "max_pool_size",
    ] {
        assert!(p[k].is_number(), "{k} in {p}");
    }
    assert_eq!(p["max_pool_size"], 4);
    assert_eq!(p["accel"], "fake");
}

#[tokio::test]
async fn output_stream_carries_exact_bytes_and_ends_with_exit() {
    let h = harness().await;
    let id = h
        .create_ok("printf a\\n\nhex ff00fe\necho err >&2\nsleep 0.2\necho late\nexit 4")
        .await;
    let (status, v) = h
        .call(
            Method::GET,
            &format!("/api/v1/mags-jobs/{id}/output?follow=true"),
            Some(&h.token.clone()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let text = v
        .as_str()
        .expect("NDJSON is not one JSON value")
        .to_string();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    let last = events.last().expect("events");
    assert_eq!(last["event"], "exit");
    assert_eq!(last["status"], "error");
    assert_eq!(last["exit_code"], 4);

    use base64::Engine as _;
    let mut stdout = Vec::new();
    let mut seqs = Vec::new();
    for e in events.iter().filter(|e| e["event"] == "output") {
        seqs.push(e["seq"].as_i64().expect("seq"));
        if e["stream"] == "stdout" {
            match (e["data"].as_str(), e["data_b64"].as_str()) {
                (Some(d), _) => stdout.extend_from_slice(d.as_bytes()),
                (None, Some(b)) => stdout.extend(
                    base64::engine::general_purpose::STANDARD
                        .decode(b)
                        .expect("base64"),
                ),
                _ => panic!("chunk without data: {e}"),
            }
        }
    }
    assert_eq!(stdout, b"a\n\xff\x00\xfelate\n");
    assert!(seqs.windows(2).all(|w| w[1] > w[0]), "{seqs:?}");

    // Resuming after a seq gives only what follows.
    let after = seqs[0];
    let (_, v) = h
        .call(
            Method::GET,
            &format!("/api/v1/mags-jobs/{id}/output?after={after}"),
            Some(&h.token.clone()),
            None,
        )
        .await;
    let resumed: Vec<Value> = v
        .as_str()
        .expect("ndjson")
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "output")
        .collect();
    assert_eq!(resumed.len(), seqs.len() - 1);
    assert_eq!(resumed[0]["seq"], seqs[1]);
}

#[tokio::test]
async fn jobs_queue_beyond_the_vm_limit() {
    let h = harness_with(1).await;
    let first = h.create_ok("sleep 0.5").await;
    let second = h.create_ok("echo second").await;
    let mut saw_queued = false;
    for _ in 0..40 {
        let (_, s) = h.get(&format!("/api/v1/mags-jobs/{second}/status")).await;
        if s["status"] == "queued" {
            saw_queued = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(saw_queued, "the second job waits as queued");
    let load = h.state.scheduler.load();
    assert_eq!((load.busy, load.max), (1, 1));
    assert_eq!(h.wait_final(&first).await["status"], "completed");
    assert_eq!(h.wait_final(&second).await["status"], "completed");
}

#[tokio::test]
async fn a_second_job_on_a_busy_workspace_waits_for_the_first() {
    let h = harness().await;
    let (status, v) = h
        .create(json!({"script": "sleep 0.5", "workspace_id": "ws1"}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let id = v["request_id"].as_str().expect("id").to_string();
    let (_, s) = h.get(&format!("/api/v1/mags-jobs/{id}/status")).await;
    assert_eq!(s["name"], "ws1", "the workspace names the job");
    // No 409: it waits its turn (see tests/takeover.rs).
    let (status, v) = h
        .create(json!({"script": "echo", "workspace_id": "ws1"}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let second = v["request_id"].as_str().expect("id").to_string();
    let first = h.wait_final(&id).await;
    assert_eq!(first["status"], "completed");
    let second = h.wait_final(&second).await;
    assert_eq!(second["status"], "completed");
    assert!(
        second["started_at"].as_str() >= first["finished_at"].as_str(),
        "{first}\n{second}"
    );
}

#[tokio::test]
async fn restart_fails_running_jobs_and_requeues_accepted_ones() {
    let h = harness().await;
    let user = h
        .store
        .user_by_name("alice")
        .await
        .expect("q")
        .expect("alice");
    let mk = |script: &str| common::new_job(&user.id, script);
    let running = mk("echo never");
    let accepted = mk("echo again");
    h.store.insert_job(&running).await.expect("insert");
    h.store.insert_job(&accepted).await.expect("insert");
    h.store
        .mark_running(&running.id, "vm-old")
        .await
        .expect("running");

    h.state.scheduler.recover().await.expect("recover");
    let s = h.wait_final(&running.id).await;
    assert_eq!(s["status"], "error");
    assert_eq!(s["error"], "server restarted while the job was running");
    let (_, logs) = h
        .get(&format!("/api/v1/mags-jobs/{}/logs", running.id))
        .await;
    assert_eq!(logs["logs"][0]["source"], "system");
    let s = h.wait_final(&accepted.id).await;
    assert_eq!(s["status"], "completed");
    let job = h.store.job(&accepted.id).await.expect("q").expect("job");
    assert_eq!(job.status, JobState::Completed);
}

#[tokio::test]
async fn a_megabyte_of_output_is_stored_in_few_chunks() {
    let h = harness().await;
    let line = "x".repeat(99);
    let id = h.create_ok(&format!("repeat 10000 {line}")).await;
    assert_eq!(h.wait_final(&id).await["status"], "completed");
    let row = sqlx::query(
        "SELECT COUNT(*) AS n, SUM(LENGTH(data)) AS bytes FROM job_output WHERE job_id = $1",
    )
    .bind(&id)
    .fetch_one(h.store.pool())
    .await
    .expect("count");
    let n: i64 = sqlx::Row::try_get(&row, "n").expect("n");
    let bytes: i64 = sqlx::Row::try_get(&row, "bytes").expect("bytes");
    assert_eq!(bytes, 1_000_000);
    assert!(n <= 40, "1 MB became {n} chunks");
    let (_, logs) = h.get(&format!("/api/v1/mags-jobs/{id}/logs")).await;
    let logs = logs["logs"].as_array().expect("logs");
    assert_eq!(logs.len(), 10_000);
    assert!(logs.iter().all(|e| e["message"] == line.as_str()));
}

#[tokio::test]
async fn shutdown_ends_output_streams() {
    let h = Arc::new(harness().await);
    let id = h.create_ok("echo started\nsleep 30").await;
    let h2 = h.clone();
    let path = format!("/api/v1/mags-jobs/{id}/output?follow=true");
    let follow = tokio::spawn(async move {
        let t = h2.token.clone();
        h2.call(Method::GET, &path, Some(&t), None).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!follow.is_finished(), "still following a running job");
    h.shutdown.send(true).expect("signal");
    let (status, body) = tokio::time::timeout(Duration::from_secs(3), follow)
        .await
        .expect("the stream ended on shutdown")
        .expect("task");
    assert_eq!(status, StatusCode::OK);
    let text = body.as_str().unwrap_or_default().to_string();
    assert!(text.contains("started"), "{text}");
    assert!(
        !text.contains("\"exit\""),
        "no exit event for a job still running: {text}"
    );
}

/// A browser session whose Chromium never comes up (the fake executor runs
/// no launch script: exit 127) is a 503, and its sandbox is stopped, not
/// left running to hold a VM slot and its disk (found by schemathesis:
/// each failed attempt added a live sandbox until the host-disk check
/// answered 507).
#[tokio::test]
async fn a_browser_that_does_not_start_is_stopped() {
    let h = harness().await;
    let t = h.token.clone();
    let (status, body) = h
        .call(
            Method::POST,
            "/api/v1/mags-browser",
            Some(&t),
            Some(r#"{"name": "shop"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("did not start")),
        "{body}"
    );
    let (_, list) = h.get("/api/v1/mags-jobs").await;
    let job = &list["jobs"][0];
    assert_eq!(job["name"], "shop", "{list}");
    let id = job["request_id"].as_str().expect("request_id");
    let s = h.wait_final(id).await;
    assert!(
        matches!(s["status"].as_str(), Some("completed" | "error")),
        "{s}"
    );
}
