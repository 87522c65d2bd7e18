//! Stored job output and the host's disk, through the router in-process
//! with the fake executor: output counts against the user's disk quota
//! until its job is deleted (`DELETE /mags-jobs/{id}`, audited; 409 for a
//! live job, 404 for an unknown or another user's), the retention prunes
//! the oldest ended jobs' output and then old jobs, and a `disk_gb` the
//! host's data dir cannot hold (a small tmpfs, so the numbers are known)
//! is a 507 before anything is stored.

mod common;

use axum::http::{Method, StatusCode};
use common::{harness_with_limits, Harness};
use mags_control::quota::UserLimits;
use mags_control::retention::{prune, prune_forever, Retention};
use mags_control::Limits;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const MIB: u64 = 1 << 20;

fn quota(disk_bytes: u64) -> Limits {
    Limits {
        user: UserLimits {
            disk_bytes,
            ..UserLimits::UNLIMITED
        },
        ..Limits::new(4)
    }
}

/// A finished one-shot job that printed about `lines` KiB.
async fn job_with_output(h: &Harness, lines: u32) -> (String, u64) {
    let text = "x".repeat(1023);
    let id = h.create_ok(&format!("repeat {lines} {text}")).await;
    let done = h.wait_final(&id).await;
    assert_eq!(done["status"], "completed", "{done}");
    let bytes = done["output_bytes"].as_u64().expect("output_bytes");
    assert!(bytes >= u64::from(lines) * 1024, "{done}");
    (id, bytes)
}

async fn delete(h: &Harness, token: &str, id: &str) -> (StatusCode, Value) {
    h.call(
        Method::DELETE,
        &format!("/api/v1/mags-jobs/{id}"),
        Some(token),
        None,
    )
    .await
}

async fn audited_deletes(h: &Harness) -> Vec<String> {
    let rows = sqlx::query("SELECT target_id FROM audit_events WHERE action = 'job.delete'")
        .fetch_all(h.store.pool())
        .await
        .expect("audit");
    rows.iter()
        .map(|r| sqlx::Row::try_get(r, "target_id").expect("target"))
        .collect()
}

#[tokio::test]
async fn output_counts_against_the_quota_until_its_job_is_deleted() {
    // Room for a 2 GiB disk and 1 MiB more.
    let h = harness_with_limits(quota((2 << 30) + MIB), false).await;
    let (big, bytes) = job_with_output(&h, 1100).await;
    assert!(bytes > MIB);
    let (code, body) = h.create(json!({"script": "echo hi", "disk_gb": 2})).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    let msg = body["error"].as_str().unwrap_or_default();
    assert!(msg.contains("stored job output 1.1 MiB"), "{msg}");
    assert!(msg.contains("mags rm"), "{msg}");

    // A live job cannot be deleted, and the refusal changes nothing.
    let (code, body) = h
        .create(json!({"script": "sleep 30", "persistent": true, "disk_gb": 1}))
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    let live = body["request_id"].as_str().expect("id").to_string();
    let token = h.token.clone();
    let (code, body) = delete(&h, &token, &live).await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("stop it first"),
        "{body}"
    );
    let (code, _) = h.get(&format!("/api/v1/mags-jobs/{live}/status")).await;
    assert_eq!(code, StatusCode::OK);

    // Unknown, and another user's: 404, and the job stays.
    let bob = h.user_token("bob").await;
    for (who, id) in [(&token, "no-such-job"), (&bob, big.as_str())] {
        let (code, body) = delete(&h, who, id).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
        assert!(body["error"].is_string(), "{body}");
    }
    assert!(h.store.job(&big).await.expect("job").is_some());
    assert!(
        audited_deletes(&h).await.is_empty(),
        "refusals are not deletions"
    );

    // The owner deletes it: job and output are gone, the quota has room.
    let (code, body) = delete(&h, &token, &big).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["output_bytes"].as_u64(), Some(bytes), "{body}");
    let (code, _) = h.get(&format!("/api/v1/mags-jobs/{big}/status")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let rows = sqlx::query("SELECT COUNT(*) AS n FROM job_output WHERE job_id = $1")
        .bind(&big)
        .fetch_one(h.store.pool())
        .await
        .expect("count");
    assert_eq!(sqlx::Row::try_get::<i64, _>(&rows, "n").expect("n"), 0);
    assert_eq!(audited_deletes(&h).await, vec![big.clone()]);
    let (code, body) = delete(&h, &token, &big).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    h.call(
        Method::POST,
        &format!("/api/v1/mags-jobs/{live}/stop"),
        Some(&token),
        None,
    )
    .await;
    h.wait_final(&live).await;
    let (code, body) = h.create(json!({"script": "echo hi", "disk_gb": 2})).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
}

#[tokio::test]
async fn retention_prunes_the_oldest_output_first_then_old_jobs() {
    let h = harness_with_limits(Limits::new(4), false).await;
    let mut jobs = Vec::new();
    for _ in 0..3 {
        jobs.push(job_with_output(&h, 300).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let each = jobs[0].1;
    let live = h.create_ok("repeat 300 y\nsleep 30").await;
    // Keep about 1.5 jobs' worth: the two oldest ended jobs lose their output.
    let r = Retention {
        max_age_days: 0,
        max_output_bytes: each + each / 2 + 300 * 2,
    };
    let report = prune(&h.store, r, mags_store::clock::now_ms())
        .await
        .expect("prune");
    assert_eq!(
        (report.jobs_pruned, report.jobs_deleted),
        (2, 0),
        "{report:?}"
    );
    for (i, (id, _)) in jobs.iter().enumerate() {
        let (_, status) = h.get(&format!("/api/v1/mags-jobs/{id}/status")).await;
        let (_, logs) = h.get(&format!("/api/v1/mags-jobs/{id}/logs")).await;
        let lines = logs["logs"].as_array().map_or(0, Vec::len);
        if i < 2 {
            assert_eq!(status["output_pruned"], true, "{status}");
            assert_eq!((status["output_bytes"].as_u64(), lines), (Some(0), 0));
            assert_eq!(status["status"], "completed", "the job itself stays");
        } else {
            assert_eq!(status["output_pruned"], false, "{status}");
            assert_eq!(lines, 300, "the newest keeps its output");
        }
    }

    // By age, through the task `magsd serve` runs: ended jobs older than
    // a day go at its first pass; the live one stays.
    let tomorrow = mags_store::clock::now_ms() + 2 * 86_400_000;
    let report = prune(
        &h.store,
        Retention {
            max_age_days: 1,
            max_output_bytes: 0,
        },
        tomorrow,
    )
    .await
    .expect("prune by age");
    assert_eq!(report.jobs_deleted, 3, "{report:?}");
    for (id, _) in &jobs {
        let (code, _) = h.get(&format!("/api/v1/mags-jobs/{id}/status")).await;
        assert_eq!(code, StatusCode::NOT_FOUND);
    }
    let (code, _) = h.get(&format!("/api/v1/mags-jobs/{live}/status")).await;
    assert_eq!(code, StatusCode::OK, "a live job is never deleted");

    // The periodic task prunes at once when started.
    let (old, _) = job_with_output(&h, 50).await;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(prune_forever(
        h.store.clone(),
        Retention {
            max_age_days: 0,
            max_output_bytes: 1,
        },
        rx,
    ));
    let mut pruned = false;
    for _ in 0..250 {
        let (_, s) = h.get(&format!("/api/v1/mags-jobs/{old}/status")).await;
        if s["output_pruned"] == true {
            pruned = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = tx.send(true);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the task stops at shutdown")
        .expect("task");
    assert!(pruned, "the retention task did not prune at start");
}

/// A tmpfs of `size` at a new temp dir; unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        let ok = out.as_ref().is_ok_and(|o| o.status.success());
        assert!(
            ok,
            "this test mounts a small tmpfs as the data dir and needs root \
             (CAP_SYS_ADMIN) and mount(8): {out:?}"
        );
        Tmpfs { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn with_data_dir(mut h: Harness, dir: &Path) -> Harness {
    h.state.control.data_dir = Some(dir.to_path_buf());
    h.app = mags_server::router(h.state.clone());
    h
}

#[tokio::test]
async fn a_disk_the_host_cannot_hold_is_refused_before_anything_is_made() {
    let fs = Tmpfs::mount("3g");
    let h = with_data_dir(harness_with_limits(Limits::new(4), false).await, &fs.path());
    let before = h.job_count().await;
    let (code, body) = h.create(json!({"script": "echo hi", "disk_gb": 4})).await;
    assert_eq!(code, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    let msg = body["error"].as_str().unwrap_or_default();
    assert!(
        msg.contains("a 4 GiB disk") && msg.contains("3 GiB free"),
        "{msg}"
    );
    assert_eq!(h.job_count().await, before, "nothing stored");

    // 2 GiB fits; while its sandbox lives, another 2 GiB does not.
    let (code, body) = h
        .create(json!({"script": "sleep 30", "persistent": true, "disk_gb": 2}))
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    let live = body["request_id"].as_str().expect("id").to_string();
    let mut running = false;
    for _ in 0..250 {
        let (_, s) = h.get(&format!("/api/v1/mags-jobs/{live}/status")).await;
        if s["status"] == "running" {
            running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(running, "the sandbox did not start");
    let (code, body) = h.create(json!({"script": "echo hi", "disk_gb": 2})).await;
    assert_eq!(code, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    let msg = body["error"].as_str().unwrap_or_default();
    assert!(
        msg.contains("2 GiB of it promised to the disks of 1 live"),
        "{msg}"
    );
    assert_eq!(h.job_count().await, before + 1, "only the sandbox's job");

    // A resize past it is refused too, and the workspace keeps its size.
    let alice = h
        .store
        .user_by_name("alice")
        .await
        .expect("q")
        .expect("alice");
    h.store
        .touch_workspace(&alice.id, "ws1", 1 << 30, false)
        .await
        .expect("workspace");
    let (code, body) = h
        .call(
            Method::POST,
            "/api/v1/mags-workspaces/ws1/resize",
            Some(&h.token.clone()),
            Some(&json!({"disk_gb": 100}).to_string()),
        )
        .await;
    assert_eq!(code, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("workspace ws1 at 100 GiB"),
        "{body}"
    );
    let ws = h
        .store
        .workspace(&alice.id, "ws1")
        .await
        .expect("q")
        .expect("ws");
    assert_eq!(ws.disk_bytes, 1 << 30);
    drop(h);
}
