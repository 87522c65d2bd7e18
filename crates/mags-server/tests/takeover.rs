//! Workspace takeover through the router (fake executor, real SQLite
//! store): a new job on a workspace with a live sandbox replaces it
//! instead of a 409, in submission order, with one live job at a time.

mod common;

use axum::http::{Method, StatusCode};
use common::{harness, log_text, Harness};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn status(h: &Harness, id: &str) -> Value {
    let (code, v) = h.get(&format!("/api/v1/mags-jobs/{id}/status")).await;
    assert_eq!(code, StatusCode::OK, "{v}");
    v
}

async fn wait_for(h: &Harness, id: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = status(h, id).await;
        let ready = v["status"] == want && (want != "running" || v["vm_id"].as_str().is_some());
        if ready {
            return v;
        }
        assert!(Instant::now() < deadline, "{id} never became {want}: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn submit(h: &Harness, body: Value) -> String {
    let (code, v) = h.create(body).await;
    assert_eq!(code, StatusCode::ACCEPTED, "no 409 any more: {v}");
    v["request_id"].as_str().expect("id").to_string()
}

/// Jobs of workspace `ws` whose VM is live.
async fn live_jobs(h: &Harness, ws: &str) -> Vec<String> {
    let rows = sqlx::query(
        "SELECT id FROM jobs WHERE workspace_id = $1 AND status IN ('running', 'sleeping')",
    )
    .bind(ws)
    .fetch_all(h.store.pool())
    .await
    .expect("query");
    rows.iter()
        .map(|r| sqlx::Row::try_get(r, "id").expect("id"))
        .collect()
}

/// The replaced job ended `completed` and its log names its successor.
async fn assert_replaced(h: &Harness, old: &str, by: &str) {
    let v = wait_for(h, old, "completed").await;
    assert_eq!(v["error"], Value::Null, "{v}");
    let log = log_text(h, old).await;
    assert!(
        log.contains(&format!("replaced by job {by}")),
        "{old}'s log should name {by}:\n{log}"
    );
}

#[tokio::test]
async fn a_new_job_takes_a_live_sandbox_over_with_its_own_settings() {
    let h = harness().await;
    let first = submit(
        &h,
        json!({"script": "echo first", "workspace_id": "proj", "persistent": true}),
    )
    .await;
    wait_for(&h, &first, "running").await;
    let second = submit(
        &h,
        json!({"script": "echo second", "workspace_id": "proj", "persistent": true,
               "no_sleep": true, "startup_command": "echo woke", "disk_gb": 3}),
    )
    .await;
    assert_replaced(&h, &first, &second).await;
    let v = wait_for(&h, &second, "running").await;
    assert_eq!(
        (
            v["no_sleep"].as_bool(),
            v["startup_command"].as_str(),
            v["disk_gb"].as_u64()
        ),
        (Some(true), Some("echo woke"), Some(3)),
        "{v}"
    );
    assert_eq!(live_jobs(&h, "proj").await, std::slice::from_ref(&second));

    // A one-shot job takes it over too, and then the workspace is free.
    let third = submit(&h, json!({"script": "echo third", "workspace_id": "proj"})).await;
    assert_replaced(&h, &second, &third).await;
    assert_eq!(h.wait_final(&third).await["status"], "completed");
    assert!(live_jobs(&h, "proj").await.is_empty());
    assert!(log_text(&h, &third).await.contains("third"));
}

#[tokio::test]
async fn takeovers_in_a_row_and_racing_ones_run_in_order_with_one_live_job() {
    let h = harness().await;
    let body = |n: usize| json!({"script": format!("echo run{n}"), "workspace_id": "w", "persistent": true});
    let mut prev = submit(&h, body(0)).await;
    wait_for(&h, &prev, "running").await;
    for n in 1..=3 {
        let next = submit(&h, body(n)).await;
        assert_replaced(&h, &prev, &next).await;
        wait_for(&h, &next, "running").await;
        assert_eq!(
            live_jobs(&h, "w").await,
            std::slice::from_ref(&next),
            "after takeover {n}"
        );
        prev = next;
    }
    // Two at once: both run, one after the other (in the order they were
    // admitted); the later one replaces the earlier.
    let (a, b) = tokio::join!(submit(&h, body(4)), submit(&h, body(5)));
    let deadline = Instant::now() + Duration::from_secs(20);
    let (early, late) = loop {
        let (sa, sb) = (status(&h, &a).await, status(&h, &b).await);
        match (sa["status"].as_str(), sb["status"].as_str()) {
            (Some("completed"), Some("running")) => break (a.clone(), b.clone()),
            (Some("running"), Some("completed")) => break (b.clone(), a.clone()),
            _ => {}
        }
        assert!(Instant::now() < deadline, "{sa}\n{sb}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_replaced(&h, &prev, &early).await;
    assert_replaced(&h, &early, &late).await;
    let n = if early == a { "run4" } else { "run5" };
    assert!(
        log_text(&h, &early).await.contains(n),
        "the earlier racer's script ran before it was replaced"
    );
    wait_for(&h, &late, "running").await;
    assert_eq!(live_jobs(&h, "w").await, [late]);
}

#[tokio::test]
async fn a_one_shot_holder_is_waited_for_and_a_waiting_job_can_be_stopped() {
    let h = harness().await;
    let busy = submit(
        &h,
        json!({"script": "sleep 1\necho done", "workspace_id": "ws"}),
    )
    .await;
    wait_for(&h, &busy, "running").await;
    let next = submit(&h, json!({"script": "echo next", "workspace_id": "ws"})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status(&h, &next).await["status"], "accepted", "it waits");
    assert_eq!(h.wait_final(&busy).await["status"], "completed");
    assert!(
        log_text(&h, &busy).await.contains("done"),
        "a one-shot script is not cut short"
    );
    assert_eq!(h.wait_final(&next).await["status"], "completed");

    // Stopping a job that waits for the workspace ends it; the holder stays.
    let holder = submit(
        &h,
        json!({"script": "sleep 30", "workspace_id": "ws", "persistent": true}),
    )
    .await;
    wait_for(&h, &holder, "running").await;
    let waiting = submit(&h, json!({"script": "echo never", "workspace_id": "ws"})).await;
    let t = h.token.clone();
    let (code, v) = h
        .call(
            Method::POST,
            &format!("/api/v1/mags-jobs/{waiting}/stop"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    let v = h.wait_final(&waiting).await;
    assert_eq!(v["status"], "error", "{v}");
    assert!(v["error"]
        .as_str()
        .unwrap_or_default()
        .contains("before it started"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status(&h, &holder).await["status"], "running");
    assert_eq!(live_jobs(&h, "ws").await, [holder]);
}
