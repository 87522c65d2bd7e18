//! SSH access (`POST /mags-jobs/{id}/access` with port 22) through the
//! router in-process, with the fake executor: keys only for the owner of
//! a live sandbox, the `{"success": false, "error"}` failures, waking a
//! sleeping sandbox, and keys stored only as fingerprints that die with
//! their job. (The gateway itself is exercised with real VMs and OpenSSH
//! in `mags-e2e`.)

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use mags_control::executor::fake::FakeExecutor;
use mags_control::{Control, Limits};
use mags_server::ssh::{keys, SshEndpoint};
use mags_server::{router, AppState};
use mags_store::Store;
use russh::keys::PrivateKey;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt as _;

struct Harness {
    app: Router,
    store: Store,
    token: String,
    _dir: tempfile::TempDir,
}

async fn harness(ssh: bool) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::connect(&format!("sqlite://{}/mags.db", dir.path().display()))
        .await
        .expect("store");
    let alice = store.create_user("alice", false).await.expect("user");
    let (_, token) = store.create_token(&alice.id).await.expect("token");
    let (control, _shutdown) =
        Control::with_limits(store.clone(), Arc::new(FakeExecutor::new()), Limits::new(4));
    let mut state = AppState::new(control);
    if ssh {
        state.ssh = Some(SshEndpoint {
            addr: "0.0.0.0:2222".parse().expect("addr"),
            public_host: None,
        });
    }
    Harness {
        app: router(state),
        store,
        token,
        _dir: dir,
    }
}

impl Harness {
    async fn call_as(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "mags.example:7070")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .expect("request");
        let resp = self.app.clone().oneshot(req).await.expect("response");
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn access_as(&self, token: &str, id: &str, port: u16) -> (StatusCode, Value) {
        self.call_as(
            token,
            Method::POST,
            &format!("/api/v1/mags-jobs/{id}/access"),
            Some(json!({ "port": port })),
        )
        .await
    }

    async fn access(&self, id: &str) -> (StatusCode, Value) {
        let t = self.token.clone();
        self.access_as(&t, id, 22).await
    }

    async fn status(&self, id: &str) -> Value {
        let t = self.token.clone();
        self.call_as(
            &t,
            Method::GET,
            &format!("/api/v1/mags-jobs/{id}/status"),
            None,
        )
        .await
        .1
    }

    async fn create(&self, body: Value) -> String {
        let t = self.token.clone();
        let (code, v) = self
            .call_as(&t, Method::POST, "/api/v1/mags-jobs", Some(body))
            .await;
        assert_eq!(code, StatusCode::ACCEPTED, "{v}");
        v["request_id"].as_str().expect("id").to_string()
    }

    async fn wait_status(&self, id: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.status(id).await["status"] != want {
            assert!(Instant::now() < deadline, "job {id} never {want}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn sandbox(&self, extra: Value) -> String {
        let mut body = json!({"script": "sleep infinity", "persistent": true});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let id = self.create(body).await;
        self.wait_status(&id, "running").await;
        id
    }
}

fn assert_failed(code: StatusCode, v: &Value, want: StatusCode, needle: &str) {
    assert_eq!(code, want, "{v}");
    assert_eq!(v["success"], false, "{v}");
    let msg = v["error"].as_str().unwrap_or_default();
    assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
}

#[tokio::test]
async fn the_owner_of_a_live_sandbox_gets_a_fresh_key_each_time() {
    let h = harness(true).await;
    let id = h.sandbox(json!({})).await;
    let (code, v) = h.access(&id).await;
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

    let (_, again) = h.access(&id).await;
    assert_ne!(
        again["ssh_private_key"], v["ssh_private_key"],
        "a fresh key"
    );
}

#[tokio::test]
async fn access_is_refused_with_success_false() {
    let h = harness(true).await;
    let id = h.sandbox(json!({})).await;
    let (code, v) = h.access("no-such-job").await;
    assert_failed(code, &v, StatusCode::NOT_FOUND, "not found");

    let bob = h.store.create_user("bob", false).await.expect("bob");
    let (_, bob_token) = h.store.create_token(&bob.id).await.expect("token");
    let (code, v) = h.access_as(&bob_token, &id, 22).await;
    assert_failed(code, &v, StatusCode::NOT_FOUND, "not found");

    let one_shot = h.create(json!({"script": "exit 0"})).await;
    h.wait_status(&one_shot, "completed").await;
    let (code, v) = h.access(&one_shot).await;
    assert_failed(code, &v, StatusCode::CONFLICT, "completed");

    let h = harness(false).await;
    let id = h.sandbox(json!({})).await;
    let (code, v) = h.access(&id).await;
    assert_failed(code, &v, StatusCode::SERVICE_UNAVAILABLE, "no SSH gateway");
}

#[tokio::test]
async fn access_wakes_a_sleeping_sandbox_and_keys_die_with_it() {
    let h = harness(true).await;
    let id = h.sandbox(json!({"idle_timeout_secs": 1})).await;
    h.wait_status(&id, "sleeping").await;
    let (code, v) = h.access(&id).await;
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
    let other = h.sandbox(json!({})).await;
    assert_eq!(h.access(&other).await.0, StatusCode::OK);
    assert_eq!(h.store.ssh_key_owner(&fp).await.expect("lookup"), None);
}
