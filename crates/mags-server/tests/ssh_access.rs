//! SSH access (`POST /mags-jobs/{id}/access` with port 22) through the
//! router in-process, with the fake executor: keys only for the owner of
//! a live sandbox, the `{"success": false, "error"}` failures, waking a
//! sleeping sandbox, and keys stored only as fingerprints that die with
//! their job. (The gateway itself is exercised with real VMs and OpenSSH
//! in `mags-e2e`.)

mod common;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use common::{harness, harness_with_ssh, Harness};
use mags_server::ssh::keys;
use russh::keys::PrivateKey;
use serde_json::{json, Value};

/// `POST /access` for `port` of job `id`, as the holder of `token`, sent
/// to the API at `mags.example:7070` (the host `/access` then names).
async fn access_as(h: &Harness, token: &str, id: &str, port: u16) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("/api/v1/mags-jobs/{id}/access"))
        .header(header::HOST, "mags.example:7070")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::from(json!({ "port": port }).to_string()))
        .expect("request");
    let (status, _, v) = h.send(req).await;
    (status, v)
}

/// SSH access to `id` for the harness's user.
async fn access(h: &Harness, id: &str) -> (StatusCode, Value) {
    access_as(h, &h.token, id, 22).await
}

fn assert_failed(code: StatusCode, v: &Value, want: StatusCode, needle: &str) {
    assert_eq!(code, want, "{v}");
    assert_eq!(v["success"], false, "{v}");
    let msg = v["error"].as_str().unwrap_or_default();
    assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
}

#[tokio::test]
async fn the_owner_of_a_live_sandbox_gets_a_fresh_key_each_time() {
    let h = harness_with_ssh().await;
    let id = h.new_sandbox(json!({})).await;
    let (code, v) = access(&h, &id).await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(v["success"], true);
    // Bound to all interfaces: the host the client reached the API at.
    assert_eq!(v["ssh_host"], "mags.example");
    assert_eq!(v["ssh_port"], 2222);
    let pem = v["ssh_private_key"].as_str().expect("key");
    let key = PrivateKey::from_openssh(pem.as_bytes()).expect("an OpenSSH private key");
    assert_eq!(key.algorithm(), russh::keys::Algorithm::Ed25519);

    // Stored as the public key's fingerprint, nothing more.
    let fp = keys::fingerprint(key.public_key());
    let owner = h
        .store
        .ssh_key_owner(&fp)
        .await
        .expect("lookup")
        .expect("known");
    assert_eq!(owner.job_id, id);
    let row = sqlx::query("SELECT * FROM ssh_keys")
        .fetch_all(h.store.pool())
        .await
        .expect("rows");
    assert_eq!(row.len(), 1);
    let dump = format!("{:?}", sqlx::Row::columns(&row[0]));
    assert!(!dump.contains("private"), "{dump}");

    let (_, again) = access(&h, &id).await;
    assert_ne!(
        again["ssh_private_key"], v["ssh_private_key"],
        "a fresh key"
    );
}

#[tokio::test]
async fn access_is_refused_with_success_false() {
    let h = harness_with_ssh().await;
    let id = h.new_sandbox(json!({})).await;
    let (code, v) = access(&h, "no-such-job").await;
    assert_failed(code, &v, StatusCode::NOT_FOUND, "not found");

    let bob_token = h.user_token("bob").await;
    let (code, v) = access_as(&h, &bob_token, &id, 22).await;
    assert_failed(code, &v, StatusCode::NOT_FOUND, "not found");

    let one_shot = h.create_job(json!({"script": "exit 0"})).await;
    h.wait_status(&one_shot, "completed").await;
    let (code, v) = access(&h, &one_shot).await;
    assert_failed(code, &v, StatusCode::CONFLICT, "completed");

    let h = harness().await;
    let id = h.new_sandbox(json!({})).await;
    let (code, v) = access(&h, &id).await;
    assert_failed(code, &v, StatusCode::SERVICE_UNAVAILABLE, "no SSH gateway");
}

#[tokio::test]
async fn access_wakes_a_sleeping_sandbox_and_keys_die_with_it() {
    let h = harness_with_ssh().await;
    let id = h.new_sandbox(json!({"idle_timeout_secs": 1})).await;
    h.wait_status(&id, "sleeping").await;
    let (code, v) = access(&h, &id).await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(h.status(&id).await["status"], "running");
    let key = PrivateKey::from_openssh(v["ssh_private_key"].as_str().expect("key").as_bytes())
        .expect("key");
    let fp = keys::fingerprint(key.public_key());

    let t = h.token.clone();
    let (code, _) = h
        .call_as(
            &t,
            Method::POST,
            &format!("/api/v1/mags-jobs/{id}/stop"),
            None,
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    // The next access (of any sandbox) forgets the ended job's keys.
    let other = h.new_sandbox(json!({})).await;
    assert_eq!(access(&h, &other).await.0, StatusCode::OK);
    assert_eq!(h.store.ssh_key_owner(&fp).await.expect("lookup"), None);
}
