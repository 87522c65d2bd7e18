//! The router in-process (`tower::ServiceExt::oneshot`) over a real SQLite
//! store, with the fake executor standing in for VMs: shared by the
//! router test files (and by the Python SDK's, which serves it over TCP).

#![allow(dead_code)]

pub mod postgres;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use mags_control::executor::fake::FakeExecutor;
use mags_control::workspaces::{StorageConfig, Workspaces};
use mags_control::{Control, Limits};
use mags_server::ssh::SshEndpoint;
use mags_server::{router, AppState};
use mags_store::Store;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt as _;

pub struct Harness {
    pub app: Router,
    pub state: AppState,
    pub shutdown: tokio::sync::watch::Sender<bool>,
    pub store: Store,
    /// The executor's handle: VMs started, snapshots kept.
    pub fake: FakeExecutor,
    /// A token of `alice`, the harness's user.
    pub token: String,
    /// Shared with a [`Harness::restarted`] server.
    _dir: Arc<tempfile::TempDir>,
}

pub async fn harness_with(max_vms: u32) -> Harness {
    harness_with_limits(Limits::new(max_vms), false).await
}

/// A harness whose server also keeps workspaces and uploads (in its temp
/// dir: local object store, disks made with `mkfs.ext4`).
pub async fn harness_with_workspaces(limits: Limits) -> Harness {
    harness_with_limits(limits, true).await
}

/// A harness with every limit given; with `workspaces`, uploads and
/// workspaces are kept in a local object store in the temp dir.
pub async fn harness_with_limits(limits: Limits, workspaces: bool) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::connect(&format!("sqlite://{}/mags.db", dir.path().display()))
        .await
        .expect("store");
    let alice = store.create_user("alice", false).await.expect("user");
    let (_, token) = store.create_token(&alice.id).await.expect("token");
    let ws = if workspaces {
        let config = StorageConfig::local(dir.path().join("objects"));
        Workspaces::start(store.clone(), dir.path(), &config).expect("workspaces")
    } else {
        Workspaces::disabled()
    };
    let fake = FakeExecutor::new();
    let (control, shutdown) =
        Control::with_workspaces(store.clone(), Arc::new(fake.clone()), limits, ws);
    let state = AppState::new(control);
    Harness {
        app: router(state.clone()),
        state,
        shutdown,
        store,
        fake,
        token,
        _dir: Arc::new(dir),
    }
}

/// [`harness`] with an SSH gateway bound to all interfaces on port 2222
/// and no `--ssh-host`: `/access` answers with the host the API was
/// reached at.
pub async fn harness_with_ssh() -> Harness {
    let mut h = harness().await;
    h.state.ssh = Some(SshEndpoint {
        addr: "0.0.0.0:2222".parse().expect("addr"),
        public_host: None,
    });
    h.app = router(h.state.clone());
    h
}

/// A one-shot job of `user_id` running `script`, ready to insert.
pub fn new_job(user_id: &str, script: &str) -> mags_store::NewJob {
    mags_store::NewJob {
        id: uuid::Uuid::new_v4().to_string(),
        user_id: user_id.to_string(),
        name: None,
        workspace_id: None,
        base_workspace_id: None,
        persistent: false,
        no_sleep: false,
        no_sync: false,
        startup_command: None,
        script: script.into(),
        environment: Default::default(),
        file_ids: Vec::new(),
        disk_gb: 2,
        rootfs_type: None,
        idle_timeout_secs: None,
        no_internet: false,
        egress_allow: Vec::new(),
        egress_deny: Vec::new(),
        timeout_secs: None,
        created_at: mags_store::clock::monotonic_ms(),
    }
}

pub async fn harness() -> Harness {
    harness_with(4).await
}

impl Harness {
    /// Adds a user and returns a token of it.
    pub async fn add_user(&self, name: &str, admin: bool) -> String {
        let u = self.store.create_user(name, admin).await.expect("user");
        self.store.create_token(&u.id).await.expect("token").1
    }

    /// Sends a request the way the Python client does (JSON content type
    /// even without a body); returns status and parsed JSON (or the text).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .expect("request");
        let resp = self.app.clone().oneshot(req).await.expect("response");
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("body");
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, value)
    }

    /// The temp dir the store (and object storage, if any) live in.
    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// A new server on this one's store and fake executor, as after a
    /// restart on the same host (the fake keeps its snapshots; the token
    /// still works), with `limits` and no workspaces. It recovers nothing
    /// until `state.scheduler.recover()` is called.
    pub fn restarted(&self, limits: Limits) -> Harness {
        let (control, shutdown) =
            Control::with_limits(self.store.clone(), Arc::new(self.fake.clone()), limits);
        let state = AppState::new(control);
        Harness {
            app: router(state.clone()),
            state,
            shutdown,
            store: self.store.clone(),
            fake: self.fake.clone(),
            token: self.token.clone(),
            _dir: self._dir.clone(),
        }
    }

    /// A token of a new user `name`.
    pub async fn user_token(&self, name: &str) -> String {
        let u = self.store.create_user(name, false).await.expect("user");
        self.store.create_token(&u.id).await.expect("token").1
    }

    /// Sends `req` as is; returns status, headers and parsed JSON (or text).
    pub async fn send(&self, req: Request<Body>) -> (StatusCode, HeaderMap, Value) {
        let resp = self.app.clone().oneshot(req).await.expect("response");
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.expect("body");
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (parts.status, parts.headers, value)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(&self.token.clone()), None)
            .await
    }

    pub async fn create(&self, body: Value) -> (StatusCode, Value) {
        let t = self.token.clone();
        self.call(
            Method::POST,
            "/api/v1/mags-jobs",
            Some(&t),
            Some(&body.to_string()),
        )
        .await
    }

    pub async fn create_ok(&self, script: &str) -> String {
        let (status, body) = self
            .create(json!({"script": script, "persistent": false}))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        body["request_id"].as_str().expect("request_id").to_string()
    }

    pub async fn wait_final(&self, id: &str) -> Value {
        for _ in 0..250 {
            let (status, body) = self.get(&format!("/api/v1/mags-jobs/{id}/status")).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            if matches!(body["status"].as_str(), Some("completed" | "error")) {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("job {id} did not finish");
    }

    pub async fn job_count(&self) -> i64 {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM jobs")
            .fetch_one(self.store.pool())
            .await
            .expect("count");
        sqlx::Row::try_get(&row, "n").expect("n")
    }
}

/// Persistent sandboxes and requests with JSON bodies.
impl Harness {
    /// Sends `body` (if any) as JSON, as the holder of `token`.
    pub async fn call_as(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let body = body.map(|b| b.to_string());
        self.call(method, path, Some(token), body.as_deref()).await
    }

    /// [`Harness::call_as`] as the harness's user.
    pub async fn call_json(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let t = self.token.clone();
        self.call_as(&t, method, path, body).await
    }

    /// A job's `/status`, which must answer 200.
    pub async fn status(&self, id: &str) -> Value {
        let (code, v) = self
            .call_json(Method::GET, &format!("/api/v1/mags-jobs/{id}/status"), None)
            .await;
        assert_eq!(code, StatusCode::OK, "{v}");
        v
    }

    /// Creates a job of `body`, which must be accepted: its id.
    pub async fn create_job(&self, body: Value) -> String {
        let (code, v) = self
            .call_json(Method::POST, "/api/v1/mags-jobs", Some(body))
            .await;
        assert_eq!(code, StatusCode::ACCEPTED, "{v}");
        v["request_id"].as_str().expect("id").to_string()
    }

    /// A persistent idle sandbox (`extra` adds to its request), waited for
    /// until it runs (like the SDK's `new()`).
    pub async fn new_sandbox(&self, extra: Value) -> String {
        let mut body = json!({"script": "sleep infinity", "persistent": true});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let id = self.create_job(body).await;
        self.wait_status(&id, "running").await;
        id
    }

    /// Polls `id`'s status (for 10 s at most) until it is `want`.
    pub async fn wait_status(&self, id: &str, want: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = self.status(id).await;
            if s["status"] == want {
                return s;
            }
            assert!(Instant::now() < deadline, "job {id} never {want}: {s}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `POST /mags-jobs/{id}/exec` with `body`.
    pub async fn exec(&self, id: &str, body: Value) -> (StatusCode, Value) {
        self.call_json(
            Method::POST,
            &format!("/api/v1/mags-jobs/{id}/exec"),
            Some(body),
        )
        .await
    }

    /// The messages of a job's `/logs`, in order.
    pub async fn logs(&self, id: &str) -> Vec<String> {
        let (_, v) = self
            .call_json(Method::GET, &format!("/api/v1/mags-jobs/{id}/logs"), None)
            .await;
        v["logs"]
            .as_array()
            .expect("logs")
            .iter()
            .map(|l| l["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

/// The messages of a job's `/logs`, one per line.
pub async fn log_text(h: &Harness, id: &str) -> String {
    let (_, logs) = h.get(&format!("/api/v1/mags-jobs/{id}/logs")).await;
    logs["logs"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|e| e["message"].as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// Regular files anywhere under `dir` (0 if it does not exist).
pub fn files_under(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => files_under(&e.path()),
            Ok(t) if t.is_file() => 1,
            _ => 0,
        })
        .sum()
}

/// `POST /mags-files` with one part per `(field name, file name, data)`.
pub async fn upload_parts(h: &Harness, parts: &[(&str, &str, &[u8])]) -> (StatusCode, Value) {
    let boundary = "xBOUNDARYx";
    let mut body = Vec::new();
    for (field, file, data) in parts {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; \
                 filename=\"{file}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let req = Request::post("/api/v1/mags-files")
        .header(header::AUTHORIZATION, format!("Bearer {}", h.token))
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(Body::from(body))
        .expect("request");
    let (status, _, v) = h.send(req).await;
    (status, v)
}

/// Uploads stored, of every user.
pub async fn upload_count(h: &Harness) -> i64 {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM uploads")
        .fetch_one(h.store.pool())
        .await
        .expect("count");
    sqlx::Row::try_get(&row, "n").expect("n")
}
