//! One user can never see, touch, wake or proxy to another's resources.
//!
//! The operations come from the OpenAPI document: every operation with a
//! path parameter must have a case here that names alice's resource and is
//! called with bob's token (and with an admin's: the admin role gives no
//! power over other users' sandboxes), answering a JSON 404; every other
//! operation must be classified (a listing that must not show alice's
//! things, a creation whose references resolve in the caller's own
//! namespace, admin-only, or about nobody's resources). A new route
//! without a case fails [`every_operation_refuses_another_users_resources`].
//! Afterwards alice's resources are exactly as they were.

mod common;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use common::Harness;
use mags_control::Limits;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;
use tower::ServiceExt as _;

/// What alice owns when bob starts trying.
struct Alice {
    id: String,
    /// A persistent sandbox, running.
    running: String,
    /// A persistent sandbox, asleep.
    sleeping: String,
    /// A one-shot job that ran on workspace `shared`.
    done: String,
    /// A live browser-image job named `web`.
    browser: String,
    upload: String,
    cron_id: String,
    alias: String,
    token_id: String,
    token_prefix: String,
}

async fn wait_status(h: &Harness, id: &str, want: &str) {
    for _ in 0..300 {
        let (_, s) = h.get(&format!("/api/v1/mags-jobs/{id}/status")).await;
        if s["status"] == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("job {id} never became {want}");
}

async fn submit(h: &Harness, token: &str, body: Value) -> (StatusCode, Value) {
    h.call_as(token, Method::POST, "/api/v1/mags-jobs", Some(body))
        .await
}

async fn submit_ok(h: &Harness, token: &str, body: Value) -> String {
    let (code, v) = submit(h, token, body).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{v}");
    v["request_id"].as_str().expect("request_id").to_string()
}

/// A multipart upload of one small file.
async fn upload(h: &Harness, token: &str, name: &str) -> String {
    let boundary = "mags-test-boundary";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
         Content-Type: text/plain\r\n\r\nsecret of alice\r\n--{boundary}--\r\n"
    );
    let req = Request::post("/api/v1/mags-files")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(Body::from(body))
        .expect("request");
    let resp = h.app.clone().oneshot(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    let v: Value = serde_json::from_slice(&bytes).expect("json");
    v["file_id"].as_str().expect("file_id").to_string()
}

async fn alice_resources(h: &Harness) -> Alice {
    let t = h.token.clone();
    let id = h
        .store
        .user_by_name("alice")
        .await
        .expect("query")
        .expect("alice")
        .id;
    let running = submit_ok(h, &t, json!({"script": "echo up", "persistent": true})).await;
    let sleeping = submit_ok(
        h,
        &t,
        json!({"script": "echo up", "persistent": true, "idle_timeout_secs": 1}),
    )
    .await;
    let done = submit_ok(
        h,
        &t,
        json!({"script": "echo done", "workspace_id": "shared"}),
    )
    .await;
    let browser = submit_ok(
        h,
        &t,
        json!({"script": "echo up", "persistent": true, "name": "web", "rootfs_type": "browser"}),
    )
    .await;
    wait_status(h, &running, "running").await;
    wait_status(h, &browser, "running").await;
    wait_status(h, &sleeping, "sleeping").await;
    h.wait_final(&done).await;
    let upload = upload(h, &t, "alice.txt").await;
    let (code, cron) = h
        .call_as(
            &t,
            Method::POST,
            "/api/v1/mags-cron",
            Some(json!({"name": "nightly", "cron_expression": "0 3 * * *", "script": "echo"})),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{cron}");
    let (code, alias) = h
        .call_as(
            &t,
            Method::POST,
            "/api/v1/mags-url-aliases",
            Some(json!({"subdomain": "alice-site", "workspace_id": "shared"})),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{alias}");
    let (code, tokens) = h
        .call_as(&t, Method::GET, "/api/v1/mags-tokens", None)
        .await;
    assert_eq!(code, StatusCode::OK, "{tokens}");
    Alice {
        id,
        running,
        sleeping,
        done,
        browser,
        upload,
        cron_id: cron["id"].as_str().expect("cron id").to_string(),
        alias: "alice-site".into(),
        token_id: tokens["tokens"][0]["id"].as_str().expect("id").to_string(),
        token_prefix: tokens["tokens"][0]["prefix"]
            .as_str()
            .expect("prefix")
            .to_string(),
    }
}

/// Everything observable about alice's resources, minus what moves on
/// its own (VM seconds, token use times).
async fn alice_view(h: &Harness, a: &Alice) -> Value {
    let mut jobs = serde_json::Map::new();
    for id in [&a.running, &a.sleeping, &a.done, &a.browser] {
        let (code, s) = h.get(&format!("/api/v1/mags-jobs/{id}/status")).await;
        assert_eq!(code, StatusCode::OK, "{s}");
        let keep = [
            "status",
            "vm_id",
            "no_sleep",
            "startup_command",
            "idle_timeout_secs",
            "workspace_id",
            "exit_code",
            "subdomain",
            "url",
        ];
        let view: serde_json::Map<String, Value> = keep
            .iter()
            .map(|k| (k.to_string(), s[*k].clone()))
            .collect();
        jobs.insert(id.clone(), Value::Object(view));
    }
    let (_, tokens) = h.get("/api/v1/mags-tokens").await;
    let tokens: Vec<Value> = tokens["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .map(|t| json!([t["id"], t["revoked"]]))
        .collect();
    let (_, list) = h.get("/api/v1/mags-jobs").await;
    let listed: Vec<Value> = list["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| json!([j["id"], j["status"]]))
        .collect();
    json!({
        "jobs": jobs,
        "listed": listed,
        "workspaces": h.get("/api/v1/mags-workspaces").await.1,
        "cron": h.get("/api/v1/mags-cron").await.1,
        "aliases": h.get("/api/v1/mags-url-aliases").await.1,
        "tokens": tokens,
        "upload_known": h.store.upload(&a.id, &a.upload).await.expect("upload").is_some(),
    })
}

/// The calls that name alice's resource for an operation with a path
/// parameter; `None` for an operation this test does not know (a failure).
fn id_cases(op: &str, a: &Alice) -> Option<Vec<(String, Option<Value>)>> {
    let job = |id: &str, tail: &str| format!("/api/v1/mags-jobs/{id}{tail}");
    let exec = json!({"command": "echo hi"});
    Some(match op {
        "patch /api/v1/mags-jobs/{id}" => vec![
            (job(&a.running, ""), Some(json!({"no_sleep": true}))),
            (job(&a.sleeping, ""), Some(json!({"startup_command": "x"}))),
        ],
        "post /api/v1/mags-jobs/{id}/access" => vec![
            (job(&a.sleeping, "/access"), Some(json!({"port": 8080}))),
            (job(&a.running, "/access"), Some(json!({"port": 8080}))),
            (job(&a.sleeping, "/access"), Some(json!({"port": 22}))),
        ],
        "post /api/v1/mags-jobs/{id}/exec" => vec![
            (job(&a.sleeping, "/exec"), Some(exec.clone())),
            (job(&a.running, "/exec"), Some(exec)),
        ],
        "post /api/v1/mags-jobs/{id}/exec/stream" => {
            vec![(job(&a.sleeping, "/exec/stream"), Some(exec))]
        }
        "get /api/v1/mags-jobs/{id}/exec/tty" => vec![(job(&a.sleeping, "/exec/tty"), None)],
        "get /api/v1/mags-jobs/{id}/logs" => vec![
            (job(&a.done, "/logs"), None),
            (job(&a.running, "/logs"), None),
        ],
        "get /api/v1/mags-jobs/{id}/output" => vec![
            (job(&a.done, "/output"), None),
            (job(&a.running, "/output?follow=true"), None),
        ],
        "delete /api/v1/mags-jobs/{id}" => {
            vec![(job(&a.done, ""), None), (job(&a.running, ""), None)]
        }
        "get /api/v1/mags-jobs/{id}/status" => vec![
            (job(&a.done, "/status"), None),
            (job(&a.sleeping, "/status"), None),
        ],
        "post /api/v1/mags-jobs/{id}/stop" => vec![
            (job(&a.running, "/stop"), None),
            (job(&a.sleeping, "/stop"), None),
            (job(&a.browser, "/stop"), None),
        ],
        "post /api/v1/mags-jobs/{id}/sync" => vec![(job(&a.running, "/sync"), None)],
        "delete /api/v1/mags-url-aliases/{subdomain}" => {
            vec![(format!("/api/v1/mags-url-aliases/{}", a.alias), None)]
        }
        "delete /api/v1/mags-workspaces/{id}" => {
            vec![("/api/v1/mags-workspaces/shared".into(), None)]
        }
        "post /api/v1/mags-workspaces/{id}/resize" => vec![(
            "/api/v1/mags-workspaces/shared/resize".into(),
            Some(json!({"disk_gb": 4})),
        )],
        "get /api/v1/mags-cron/{id}" | "delete /api/v1/mags-cron/{id}" => vec![
            (format!("/api/v1/mags-cron/{}", a.cron_id), None),
            ("/api/v1/mags-cron/nightly".into(), None),
        ],
        "patch /api/v1/mags-cron/{id}" => vec![
            (
                format!("/api/v1/mags-cron/{}", a.cron_id),
                Some(json!({"enabled": false})),
            ),
            (
                "/api/v1/mags-cron/nightly".into(),
                Some(json!({"script": "echo bob"})),
            ),
        ],
        "delete /api/v1/mags-tokens/{id}" => vec![
            (format!("/api/v1/mags-tokens/{}", a.token_id), None),
            (format!("/api/v1/mags-tokens/{}", a.token_prefix), None),
        ],
        _ => return None,
    })
}

/// Operations without a path parameter, and how this test covers them.
const LISTINGS: &[&str] = &[
    "get /api/v1/mags-jobs",
    "get /api/v1/mags-workspaces",
    "get /api/v1/mags-cron",
    "get /api/v1/mags-url-aliases",
    "get /api/v1/mags-tokens",
    "get /api/v1/mags-audit",
    "get /api/v1/mags-jobs/usage",
];
/// Creations whose references (workspace, base, files, names, users)
/// resolve in the caller's namespace: checked one by one below.
const CREATIONS: &[&str] = &[
    "post /api/v1/mags-jobs",
    "post /api/v1/mags-url-aliases",
    "post /api/v1/mags-cron",
    "post /api/v1/mags-browser",
    "post /api/v1/mags-tokens",
];
/// Admin only: 403 for anyone else, whatever they name.
const ADMIN_ONLY: &[&str] = &["get /api/v1/mags-users", "post /api/v1/mags-users"];
/// About no user's resources (or only ever the caller's own new one).
const NOBODYS: &[&str] = &[
    "get /health",
    "get /api/v1/whoami",
    "get /api/v1/mags-jobs/pool-status",
    "post /api/v1/mags-files",
];

fn assert_json_404(code: StatusCode, v: &Value, what: &str) {
    assert_eq!(code, StatusCode::NOT_FOUND, "{what}: {v}");
    let msg = v["error"].as_str().unwrap_or_default();
    assert!(!msg.is_empty(), "{what}: a JSON error, got {v}");
}

#[tokio::test]
async fn every_operation_refuses_another_users_resources() {
    let h = common::harness_with_workspaces(Limits::new(8)).await;
    let a = alice_resources(&h).await;
    let bob = h.add_user("bob", false).await;
    let root = h.add_user("root", true).await;
    let before = alice_view(&h, &a).await;
    assert_eq!(before["jobs"][&a.sleeping]["status"], "sleeping");

    let doc = mags_server::openapi::document();
    let mut covered = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("item").keys() {
            let op = format!("{method} {path}");
            if !path.contains('{') {
                let known = [LISTINGS, CREATIONS, ADMIN_ONLY, NOBODYS]
                    .iter()
                    .any(|l| l.contains(&op.as_str()));
                assert!(
                    known,
                    "{op} has no cross-user classification in tests/cross_user.rs"
                );
                continue;
            }
            let cases = id_cases(&op, &a)
                .unwrap_or_else(|| panic!("{op} has no cross-user case in tests/cross_user.rs"));
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            // An admin may revoke any token (that is its role); for
            // everything else it is just another user.
            let admin_too = !path.starts_with("/api/v1/mags-tokens");
            for (p, body) in cases {
                let (code, v) = h.call_as(&bob, m.clone(), &p, body.clone()).await;
                assert_json_404(code, &v, &format!("bob: {method} {p}"));
                if admin_too {
                    let (code, v) = h.call_as(&root, m.clone(), &p, body).await;
                    assert_json_404(code, &v, &format!("admin: {method} {p}"));
                }
                covered += 1;
            }
        }
    }
    assert!(covered >= 25, "only {covered} cross-user calls");

    // Nothing of alice's moved; the sleeping sandbox was not woken by any
    // of it (exec, access, tty, stop), even a moment later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = alice_view(&h, &a).await;
    assert_eq!(before, after, "alice's resources changed");
    assert_eq!(after["jobs"][&a.sleeping]["status"], "sleeping");
    assert_eq!(after["upload_known"], true);
}

/// Every id of alice's that bob must never see.
fn alice_secrets(a: &Alice) -> Vec<String> {
    vec![
        a.id.clone(),
        a.running.clone(),
        a.sleeping.clone(),
        a.done.clone(),
        a.browser.clone(),
        a.upload.clone(),
        a.cron_id.clone(),
        a.alias.clone(),
        a.token_id.clone(),
        a.token_prefix.clone(),
    ]
}

#[tokio::test]
async fn listings_show_only_the_callers_own_things() {
    let h = common::harness_with_workspaces(Limits::new(8)).await;
    let a = alice_resources(&h).await;
    let bob = h.add_user("bob", false).await;
    let root = h.add_user("root", true).await;
    // Bob has a workspace of the same name: his own.
    let b = submit_ok(
        &h,
        &bob,
        json!({"script": "echo", "workspace_id": "shared"}),
    )
    .await;
    for _ in 0..250 {
        let (_, s) = h
            .call_as(
                &bob,
                Method::GET,
                &format!("/api/v1/mags-jobs/{b}/status"),
                None,
            )
            .await;
        if s["status"] == "completed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for token in [&bob, &root] {
        for op in LISTINGS {
            let path = op.split_once(' ').expect("op").1;
            let (code, v) = h.call_as(token, Method::GET, path, None).await;
            assert_eq!(code, StatusCode::OK, "{op}: {v}");
            let text = v.to_string();
            for s in alice_secrets(&a) {
                // The admin's audit view is everyone's by design.
                if *op == "get /api/v1/mags-audit" && token == &root {
                    continue;
                }
                assert!(!text.contains(&s), "{op} shows alice's {s}: {text}");
            }
        }
    }
    let (_, usage) = h
        .call_as(&bob, Method::GET, "/api/v1/mags-jobs/usage", None)
        .await;
    assert_eq!(usage["total_jobs"], 1, "only bob's own job: {usage}");
    let (_, ws) = h
        .call_as(&bob, Method::GET, "/api/v1/mags-workspaces", None)
        .await;
    assert_eq!(ws["total"], 1, "{ws}");
    assert_eq!(ws["workspaces"][0]["workspace_id"], "shared");
    // Alice still sees her own listings in full.
    let (_, mine) = h.get("/api/v1/mags-jobs").await;
    assert_eq!(mine["total"], 4, "{mine}");
    assert!(!mine.to_string().contains(&b), "alice sees bob's job");
}

#[tokio::test]
async fn creations_resolve_references_in_the_callers_own_namespace() {
    let h = common::harness_with_workspaces(Limits::new(8)).await;
    let a = alice_resources(&h).await;
    let bob = h.add_user("bob", false).await;
    let before = alice_view(&h, &a).await;
    let jobs_before = h.job_count().await;

    // Alice's uploaded file, alice's workspace as a base: unknown to bob,
    // refused with a JSON error, nothing created.
    let refused = [
        json!({"script": "echo", "file_ids": [a.upload]}),
        json!({"script": "echo", "base_workspace_id": "shared"}),
        json!({"script": "echo", "workspace_id": "mine", "base_workspace_id": "shared"}),
    ];
    for body in refused {
        let (code, v) = submit(&h, &bob, body.clone()).await;
        assert!(
            matches!(code, StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND),
            "{body}: {code} {v}"
        );
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }
    assert_eq!(h.job_count().await, jobs_before, "nothing was created");

    // A job on workspace "shared" is bob's own "shared": a new, empty
    // workspace, even while alice's is held by her live job.
    let (code, v) = submit(
        &h,
        &alice_token(&h),
        json!({"script": "echo", "persistent": true, "workspace_id": "shared"}),
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{v}");
    let alice_live = v["request_id"].as_str().expect("id").to_string();
    wait_status(&h, &alice_live, "running").await;
    let (code, v) = submit(
        &h,
        &bob,
        json!({"script": "echo", "workspace_id": "shared"}),
    )
    .await;
    assert_eq!(
        code,
        StatusCode::ACCEPTED,
        "not alice's busy workspace: {v}"
    );
    let bobs = h
        .store
        .job(v["request_id"].as_str().expect("id"))
        .await
        .expect("job")
        .expect("stored");
    assert_ne!(bobs.user_id, a.id);
    assert_eq!(bobs.workspace_id.as_deref(), Some("shared"));
    let bob_id = bobs.user_id.clone();
    let row = h.store.workspace(&bob_id, "shared").await.expect("ws");
    assert!(row.is_some(), "bob's own workspace record");
    let alices = h.store.workspace(&a.id, "shared").await.expect("ws");
    assert_eq!(
        alices.and_then(|w| w.live_job_id),
        Some(alice_live.clone()),
        "alice's workspace still held by her job"
    );

    // An alias to "shared" follows bob's workspace, not alice's.
    let (code, v) = h
        .call_as(
            &bob,
            Method::POST,
            "/api/v1/mags-url-aliases",
            Some(json!({"subdomain": "bob-site", "workspace_id": "shared"})),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    match h.store.route("bob-site").await.expect("route") {
        Some(mags_store::Route::Job { user_id, .. }) => assert_eq!(user_id, bob_id),
        Some(mags_store::Route::NoLiveJob { .. }) => {}
        None => panic!("bob's alias does not resolve"),
    }
    // Alice's alias name is taken (subdomains are one public namespace):
    // a 409 that changes nothing.
    let (code, _) = h
        .call_as(
            &bob,
            Method::POST,
            "/api/v1/mags-url-aliases",
            Some(json!({"subdomain": a.alias, "workspace_id": "shared"})),
        )
        .await;
    assert_eq!(code, StatusCode::CONFLICT);

    // A cron job of the same name is bob's own.
    let (code, v) = h
        .call_as(
            &bob,
            Method::POST,
            "/api/v1/mags-cron",
            Some(json!({"name": "nightly", "cron_expression": "0 4 * * *", "script": "echo"})),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    assert_ne!(v["id"], a.cron_id.as_str());

    // Bob's browser session "web" is never alice's live one.
    let (code, v) = h
        .call_as(
            &bob,
            Method::POST,
            "/api/v1/mags-browser",
            Some(json!({"name": "web"})),
        )
        .await;
    assert_ne!(v["request_id"], a.browser.as_str(), "{code} {v}");
    assert!(h
        .store
        .first_access(&a.browser)
        .await
        .expect("access")
        .is_none());

    // Tokens for alice: bob may not ask (the same 403 for any other name).
    for user in ["alice", "nobody-at-all"] {
        let (code, v) = h
            .call_as(
                &bob,
                Method::POST,
                "/api/v1/mags-tokens",
                Some(json!({"user": user})),
            )
            .await;
        assert_eq!(code, StatusCode::FORBIDDEN, "{v}");
        let (code2, v2) = h
            .call_as(
                &bob,
                Method::GET,
                &format!("/api/v1/mags-tokens?user={user}"),
                None,
            )
            .await;
        assert_eq!((code2, &v2["error"]), (StatusCode::FORBIDDEN, &v["error"]));
        let (code, _) = h
            .call_as(
                &bob,
                Method::GET,
                &format!("/api/v1/mags-audit?user={user}"),
                None,
            )
            .await;
        assert_eq!(code, StatusCode::FORBIDDEN);
    }
    for op in ADMIN_ONLY {
        let (method, path) = op.split_once(' ').expect("op");
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let body = (method == "post").then(|| json!({"name": "mallory", "is_admin": true}));
        let (code, v) = h.call_as(&bob, m, path, body).await;
        assert_eq!(code, StatusCode::FORBIDDEN, "{op}: {v}");
    }
    assert!(h.store.user_by_name("mallory").await.expect("q").is_none());

    let mut after = alice_view(&h, &a).await;
    // Alice's own new job is the one change.
    let mut listed: BTreeSet<String> = after["listed"]
        .as_array()
        .expect("listed")
        .iter()
        .map(|j| j[0].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(listed.remove(&alice_live));
    after["listed"] = json!(before["listed"]);
    after["workspaces"] = before["workspaces"].clone();
    assert_eq!(before, after);
}

fn alice_token(h: &Harness) -> String {
    h.token.clone()
}

#[tokio::test]
async fn the_url_proxy_refuses_another_users_token_on_a_secret_port() {
    let h = common::harness_with_workspaces(Limits::new(8)).await;
    let a = alice_resources(&h).await;
    let bob = h.add_user("bob", false).await;
    h.store
        .ensure_access_with(&a.sleeping, &a.id, 9222, "alicecdp", Some("s3cret-value"))
        .await
        .expect("access");
    for auth in [Some(bob.as_str()), None] {
        let mut req = Request::get("/json/version").header(header::HOST, "alicecdp.localhost");
        if let Some(t) = auth {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let resp = h
            .app
            .clone()
            .oneshot(req.body(Body::empty()).expect("request"))
            .await
            .expect("response");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    // Refused before anything was woken.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, s) = h
        .get(&format!("/api/v1/mags-jobs/{}/status", a.sleeping))
        .await;
    assert_eq!(s["status"], "sleeping");
}
