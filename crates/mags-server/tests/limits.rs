//! Per-user limits, body limits and job timeouts through the router
//! in-process, with the fake executor: each refusal is a JSON error with
//! the right status (429 + `Retry-After`, 403, 413, 400) and changes
//! nothing; a timed-out script ends its job in `error` with the reason.

mod common;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use common::{files_under, harness_with_limits, log_text, upload_count, upload_parts, Harness};
use mags_control::quota::UserLimits;
use mags_control::Limits;
use serde_json::{json, Value};
use std::time::Duration;

fn limits(user: UserLimits) -> Limits {
    Limits {
        user,
        ..Limits::new(4)
    }
}

/// Each user may run one VM at once and have `max_pending` jobs waiting
/// (0: any number).
async fn one_vm_each(max_pending: u32) -> Harness {
    let user = UserLimits {
        max_running: 1,
        max_pending,
        ..UserLimits::UNLIMITED
    };
    harness_with_limits(limits(user), false).await
}

fn assert_json_error(status: StatusCode, body: &Value, want: StatusCode, needle: &str) {
    assert_eq!(status, want, "{body}");
    let msg = body["error"].as_str().unwrap_or_default();
    assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
    // One message, one line: no runs of spaces from a broken continuation.
    assert!(!msg.contains("  ") && !msg.contains('\n'), "{msg:?}");
}

/// Polls the job until `done` holds for its status body.
async fn wait_for(h: &Harness, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..500 {
        let (status, body) = h.get(&format!("/api/v1/mags-jobs/{id}/status")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if done(&body) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("job {id}: {what} never happened");
}

async fn wait_status(h: &Harness, id: &str, want: &str) -> Value {
    wait_for(h, id, want, |b| b["status"] == want).await
}

async fn post_as(h: &Harness, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
    h.call(Method::POST, path, Some(token), Some(&body.to_string()))
        .await
}

#[tokio::test]
async fn a_script_past_its_timeout_ends_the_job_in_error_with_the_reason() {
    let h = harness_with_limits(Limits::new(4), false).await;
    let (status, v) = h
        .create(json!({"script": "echo before\nsleep 30\necho never-printed", "timeout": 1}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let id = v["request_id"].as_str().expect("id").to_string();
    let st = h.wait_final(&id).await;
    assert_eq!(st["status"], "error", "{st}");
    assert_eq!(st["timeout"], 1);
    assert_eq!(
        st["error"], "timed out after 1 s (the script was killed)",
        "{st}"
    );
    let logs = log_text(&h, &id).await;
    assert!(
        logs.contains("before") && !logs.contains("never-printed"),
        "{logs}"
    );
    assert!(logs.contains("error: timed out after 1 s"), "{logs}");

    // A script that ends in time is not touched.
    let (_, v) = h
        .create(json!({"script": "echo quick", "timeout": 30}))
        .await;
    let id = v["request_id"].as_str().expect("id");
    assert_eq!(h.wait_final(id).await["status"], "completed");
}

#[tokio::test]
async fn the_server_default_timeout_applies_to_one_shot_jobs_only() {
    let h = harness_with_limits(
        Limits {
            job_timeout_secs: Some(1),
            ..Limits::new(4)
        },
        false,
    )
    .await;
    let id = h.create_ok("sleep 30").await;
    let st = h.wait_final(&id).await;
    assert_eq!(
        (st["status"].as_str(), st["timeout"].as_u64()),
        (Some("error"), Some(1)),
        "{st}"
    );
    assert!(st["error"]
        .as_str()
        .is_some_and(|e| e.contains("timed out after 1 s")));

    // A persistent job's script has no limit unless it asks for one.
    let (_, v) = h
        .create(json!({"script": "echo up", "persistent": true}))
        .await;
    let id = v["request_id"].as_str().expect("id");
    let st = wait_status(&h, id, "running").await;
    assert!(st["timeout"].is_null(), "{st}");
}

#[tokio::test]
async fn a_persistent_jobs_timeout_kills_its_script_and_keeps_the_sandbox() {
    let h = harness_with_limits(Limits::new(4), false).await;
    let (_, v) = h
        .create(json!({"script": "echo up\nsleep 30", "persistent": true, "timeout": 1}))
        .await;
    let id = v["request_id"].as_str().expect("id").to_string();
    let st = wait_for(&h, &id, "script exit", |b| !b["exit_code"].is_null()).await;
    assert_eq!(st["status"], "running", "the sandbox stays up: {st}");
    assert_eq!(st["exit_code"], 137);
    let logs = log_text(&h, &id).await;
    assert!(
        logs.contains("timed out after 1 s") && logs.contains("stays up"),
        "{logs}"
    );
    let (status, out) = h
        .call(
            Method::POST,
            &format!("/api/v1/mags-jobs/{id}/exec"),
            Some(&h.token.clone()),
            Some(r#"{"command": "echo still here"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["stdout"], "still here\n");
}

#[tokio::test]
async fn a_bad_timeout_is_a_400_and_creates_nothing() {
    let h = harness_with_limits(Limits::new(4), false).await;
    for (body, needle) in [
        (json!({"script": "echo", "timeout": 0}), "timeout"),
        (json!({"script": "echo", "timeout": 999_999_999}), "timeout"),
        (json!({"script": "echo", "timeout": "soon"}), "invalid JSON"),
        (json!({"script": "echo", "timeout": -1}), "invalid JSON"),
    ] {
        let (status, v) = h.create(body).await;
        assert_json_error(status, &v, StatusCode::BAD_REQUEST, needle);
    }
    assert_eq!(h.job_count().await, 0);
}

#[tokio::test]
async fn one_shot_jobs_past_the_users_vm_limit_wait_queued_and_others_go_on() {
    let h = one_vm_each(0).await;
    let first = h.create_ok("sleep 30").await;
    wait_status(&h, &first, "running").await;
    let second = h.create_ok("echo second").await;
    wait_status(&h, &second, "queued").await;

    // Another user is not held up by alice's limit.
    let bob = h.user_token("bob").await;
    let (status, v) = post_as(&h, &bob, "/api/v1/mags-jobs", json!({"script": "echo bob"})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let bobs = v["request_id"].as_str().expect("id").to_string();
    let (_, st) = h
        .call(
            Method::GET,
            &format!("/api/v1/mags-jobs/{bobs}/status"),
            Some(&bob),
            None,
        )
        .await;
    assert_ne!(st["status"], "queued", "{st}");

    // The queued job runs once the first ends.
    let (status, v) = h
        .call(
            Method::POST,
            &format!("/api/v1/mags-jobs/{first}/stop"),
            Some(&h.token.clone()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let st = h.wait_final(&second).await;
    assert_eq!(st["status"], "completed", "{st}");
    assert_eq!(log_text(&h, &second).await, "second");
}

#[tokio::test]
async fn too_many_waiting_jobs_is_a_429_with_retry_after_and_creates_nothing() {
    let h = one_vm_each(2).await;
    let running = h.create_ok("sleep 30").await;
    wait_status(&h, &running, "running").await;
    h.create_ok("echo 1").await;
    h.create_ok("echo 2").await;
    let before = h.job_count().await;
    let req = Request::post("/api/v1/mags-jobs")
        .header(header::AUTHORIZATION, format!("Bearer {}", h.token))
        .body(Body::from(json!({"script": "echo 3"}).to_string()))
        .expect("request");
    let (status, headers, v) = h.send(req).await;
    assert_json_error(status, &v, StatusCode::TOO_MANY_REQUESTS, "waiting");
    let retry: u64 = headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!(retry >= 1);
    assert_eq!(h.job_count().await, before);
}

#[tokio::test]
async fn a_new_sandbox_at_the_users_limit_sleeps_an_idle_one_or_is_refused() {
    let h = one_vm_each(0).await;
    let (_, v) = h
        .create(json!({"script": "echo a", "persistent": true, "no_sleep": true}))
        .await;
    let a = v["request_id"].as_str().expect("id").to_string();
    wait_status(&h, &a, "running").await;
    // a may not sleep: nothing can make room.
    let before = h.job_count().await;
    let (status, v) = h
        .create(json!({"script": "echo b", "persistent": true}))
        .await;
    assert_json_error(status, &v, StatusCode::TOO_MANY_REQUESTS, "per user");
    assert_eq!(h.job_count().await, before);

    // Once a may sleep, a new sandbox puts it to sleep and runs.
    let t = h.token.clone();
    let (status, v) = h
        .call(
            Method::PATCH,
            &format!("/api/v1/mags-jobs/{a}"),
            Some(&t),
            Some(r#"{"no_sleep": false}"#),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = h
        .create(json!({"script": "echo b", "persistent": true}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let b = v["request_id"].as_str().expect("id").to_string();
    wait_status(&h, &b, "running").await;
    wait_status(&h, &a, "sleeping").await;
}

#[tokio::test]
async fn requests_past_the_users_rate_are_429_with_retry_after() {
    let h = harness_with_limits(
        limits(UserLimits {
            requests_per_sec: 0.5,
            request_burst: 3,
            ..UserLimits::UNLIMITED
        }),
        false,
    )
    .await;
    for _ in 0..3 {
        let (status, v) = h.get("/api/v1/mags-jobs").await;
        assert_eq!(status, StatusCode::OK, "{v}");
    }
    let req = Request::post("/api/v1/mags-jobs")
        .header(header::AUTHORIZATION, format!("Bearer {}", h.token))
        .body(Body::from(json!({"script": "echo"}).to_string()))
        .expect("request");
    let (status, headers, v) = h.send(req).await;
    assert_json_error(
        status,
        &v,
        StatusCode::TOO_MANY_REQUESTS,
        "too many requests",
    );
    assert!(headers.contains_key(header::RETRY_AFTER), "{headers:?}");
    assert_eq!(h.job_count().await, 0, "a refused request changes nothing");
    // Buckets are per user.
    let bob = h.user_token("bob").await;
    let (status, _) = h
        .call(Method::GET, "/api/v1/mags-jobs", Some(&bob), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    // Unauthenticated requests are refused before the limit counts them.
    let (status, _) = h.call(Method::GET, "/api/v1/mags-jobs", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn disk_past_the_users_quota_is_a_403_and_changes_nothing() {
    let h = harness_with_limits(
        limits(UserLimits {
            disk_bytes: 5 << 30,
            ..UserLimits::UNLIMITED
        }),
        true,
    )
    .await;
    let alice = h
        .store
        .user_by_name("alice")
        .await
        .expect("q")
        .expect("alice");
    h.store
        .touch_workspace(&alice.id, "big", 4 << 30, false)
        .await
        .expect("workspace");
    // A new workspace of 2 GiB on top of 4: over 5.
    let (status, v) = h
        .create(json!({"script": "echo", "workspace_id": "more", "disk_gb": 2}))
        .await;
    assert_json_error(status, &v, StatusCode::FORBIDDEN, "disk quota");
    // A job's own 6 GiB disk alone is over it.
    let (status, v) = h.create(json!({"script": "echo", "disk_gb": 6})).await;
    assert_json_error(status, &v, StatusCode::FORBIDDEN, "disk quota");
    assert_eq!(h.job_count().await, 0);
    // Growing the workspace past the quota.
    let (status, v) = h
        .call(
            Method::POST,
            "/api/v1/mags-workspaces/big/resize",
            Some(&h.token.clone()),
            Some(r#"{"disk_gb": 6}"#),
        )
        .await;
    assert_json_error(status, &v, StatusCode::FORBIDDEN, "disk quota");
    let ws = h
        .store
        .workspace(&alice.id, "big")
        .await
        .expect("q")
        .expect("big");
    assert_eq!(ws.disk_bytes, 4 << 30, "unchanged");
    // An upload larger than what is left (1 GiB) is refused and not kept.
    h.store
        .touch_workspace(&alice.id, "big", (5 << 30) - 1000, false)
        .await
        .expect("workspace");
    let (status, v) = upload(&h, &vec![b'x'; 5000]).await;
    assert_json_error(status, &v, StatusCode::FORBIDDEN, "disk quota");
    assert_eq!(upload_count(&h).await, 0);
    // Within the quota all is well.
    let (status, v) = upload(&h, b"small").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = h
        .create(json!({"script": "echo", "workspace_id": "big", "disk_gb": 2}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "the same workspace: {v}");
}

/// `POST /mags-files` with one part `file` holding `data`.
async fn upload(h: &Harness, data: &[u8]) -> (StatusCode, Value) {
    upload_parts(h, &[("file", "f.bin", data)]).await
}

#[tokio::test]
async fn an_upload_over_the_servers_limit_is_a_413_and_leaves_nothing() {
    let h = harness_with_limits(
        Limits {
            upload_max_bytes: 1000,
            ..Limits::new(4)
        },
        true,
    )
    .await;
    let (status, v) = upload(&h, &vec![b'x'; 1001]).await;
    assert_json_error(status, &v, StatusCode::PAYLOAD_TOO_LARGE, "1000 bytes");
    assert_eq!(upload_count(&h).await, 0);
    assert_eq!(
        files_under(&h.data_dir().join("objects")),
        0,
        "nothing left in object storage"
    );
    let (status, v) = upload(&h, &[b'y'; 1000]).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["size"], 1000);
}

/// Every API route family, with a body over the 2 MiB limit: a JSON 413,
/// whether the body says its length or not, and nothing changes.
#[tokio::test]
async fn an_oversized_body_is_a_413_on_every_route_family_and_changes_nothing() {
    let h = harness_with_limits(Limits::new(4), true).await;
    let t = h.token.clone();
    let (_, v) = h
        .create(json!({"script": "echo up", "persistent": true, "name": "box"}))
        .await;
    let job = v["request_id"].as_str().expect("id").to_string();
    wait_status(&h, &job, "running").await;
    let (status, cron) = h
        .call(
            Method::POST,
            "/api/v1/mags-cron",
            Some(&t),
            Some(r#"{"name": "c", "cron_expression": "0 0 * * *", "script": "echo"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{cron}");
    let cron = cron["id"].as_str().expect("cron id").to_string();
    // An alias needs a workspace of the caller's.
    let alice = h
        .store
        .user_by_name("alice")
        .await
        .expect("q")
        .expect("alice");
    let holder = common::new_job(&alice.id, "echo");
    h.store.insert_job(&holder).await.expect("job");
    h.store
        .claim_workspace(&alice.id, "box", &holder.id)
        .await
        .expect("workspace");
    let (status, v) = h
        .call(
            Method::POST,
            "/api/v1/mags-url-aliases",
            Some(&t),
            Some(&json!({"subdomain": "keepme", "workspace_id": "box"}).to_string()),
        )
        .await;
    assert!(status.is_success(), "{v}");
    let jobs_before = h.job_count().await;

    // A JSON object with a 3 MiB string: valid but too large.
    let big = format!(r#"{{"script": "{}"}}"#, "x".repeat(3 << 20));
    let routes: Vec<(Method, String)> = vec![
        (Method::POST, "/api/v1/mags-jobs".into()),
        (Method::GET, "/api/v1/mags-jobs".into()),
        (Method::PATCH, format!("/api/v1/mags-jobs/{job}")),
        (Method::POST, format!("/api/v1/mags-jobs/{job}/exec")),
        (Method::POST, format!("/api/v1/mags-jobs/{job}/exec/stream")),
        (Method::POST, format!("/api/v1/mags-jobs/{job}/stop")),
        (Method::POST, format!("/api/v1/mags-jobs/{job}/sync")),
        (Method::POST, format!("/api/v1/mags-jobs/{job}/access")),
        (Method::POST, "/api/v1/mags-browser".into()),
        (Method::POST, "/api/v1/mags-url-aliases".into()),
        (Method::DELETE, "/api/v1/mags-url-aliases/keepme".into()),
        (Method::POST, "/api/v1/mags-workspaces/box/resize".into()),
        (Method::DELETE, "/api/v1/mags-workspaces/box".into()),
        (Method::POST, "/api/v1/mags-cron".into()),
        (Method::PATCH, format!("/api/v1/mags-cron/{cron}")),
        (Method::DELETE, format!("/api/v1/mags-cron/{cron}")),
        (Method::GET, "/api/v1/whoami".into()),
        (Method::GET, "/health".into()),
    ];
    for (method, path) in &routes {
        for declared in [true, false] {
            // Without a declared length only a handler that reads the
            // body sees its size; the others never look at it.
            if !declared && !reads_body(method, path) {
                continue;
            }
            let mut req = Request::builder()
                .method(method.clone())
                .uri(path)
                .header(header::AUTHORIZATION, format!("Bearer {t}"))
                .header(header::CONTENT_TYPE, "application/json");
            if declared {
                req = req.header(header::CONTENT_LENGTH, big.len());
            }
            let req = req.body(Body::from(big.clone())).expect("request");
            let (status, _, v) = h.send(req).await;
            assert_json_error(status, &v, StatusCode::PAYLOAD_TOO_LARGE, "too large");
        }
    }

    // Nothing changed: no job, the sandbox still runs, cron and alias remain.
    assert_eq!(h.job_count().await, jobs_before);
    let (_, st) = h.get(&format!("/api/v1/mags-jobs/{job}/status")).await;
    assert_eq!(st["status"], "running", "{st}");
    assert!(st["startup_command"].is_null(), "{st}");
    let (status, c) = h.get(&format!("/api/v1/mags-cron/{cron}")).await;
    assert_eq!(status, StatusCode::OK, "{c}");
    assert_eq!(c["script"], "echo");
    let (_, aliases) = h.get("/api/v1/mags-url-aliases").await;
    assert_eq!(aliases["total"], 1, "{aliases}");
    let (_, ws) = h.get("/api/v1/mags-workspaces").await;
    assert_eq!(ws["total"], 1, "only the alias's workspace: {ws}");
}

/// Routes whose handler reads a JSON body (so an undeclared oversized
/// body is caught while reading).
fn reads_body(method: &Method, path: &str) -> bool {
    let reading = [
        "/mags-jobs",
        "/exec",
        "/exec/stream",
        "/access",
        "/mags-browser",
        "/mags-url-aliases",
        "/resize",
        "/mags-cron",
    ];
    (*method == Method::POST && reading.iter().any(|r| path.ends_with(r)))
        || (*method == Method::PATCH)
}

#[tokio::test]
async fn a_cron_run_refused_by_the_users_limits_is_skipped_with_the_reason() {
    let h = one_vm_each(1).await;
    let running = h.create_ok("sleep 30").await;
    wait_status(&h, &running, "running").await;
    h.create_ok("echo waiting").await;
    let t = h.token.clone();
    let (status, c) = post_as(
        &h,
        &t,
        "/api/v1/mags-cron",
        json!({"name": "tick", "cron_expression": "* * * * *", "script": "echo tick"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    let before = h.job_count().await;
    let later = mags_store::clock::now_ms() + 61_000;
    let r = mags_control::cron::tick(&h.state, later)
        .await
        .expect("the tick goes on");
    assert_eq!((r.started.len(), r.skipped), (0, 1));
    assert_eq!(h.job_count().await, before);
    let (_, c) = h
        .get(&format!(
            "/api/v1/mags-cron/{}",
            c["id"].as_str().expect("id")
        ))
        .await;
    let why = c["last_skip_reason"].as_str().unwrap_or_default();
    assert!(why.contains("waiting for a VM"), "{c}");
}
