//! Real databases for the store tests: SQLite in a temp dir, and Postgres
//! at `MAGS_TEST_POSTGRES_URL` (required: a missing server fails the test
//! with how to start one, it never skips), each test in a fresh schema.

#![allow(dead_code)]

use mags_store::{clock, NewJob, Store};
use sqlx::Executor as _;
use std::collections::BTreeMap;

/// A SQLite store in a fresh temp dir (kept alive by the returned dir).
pub async fn sqlite() -> (Store, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/mags.db", dir.path().display());
    let store = Store::connect(&url).await.expect("connect");
    (store, url, dir)
}

/// A Postgres schema of its own; [`PgSchema::drop`] removes it.
pub struct PgSchema {
    admin: sqlx::AnyPool,
    name: String,
    pub url: String,
}

impl PgSchema {
    pub async fn drop(self) {
        self.admin
            .execute(format!("DROP SCHEMA {} CASCADE", self.name).as_str())
            .await
            .expect("drop schema");
    }
}

/// A Postgres store in a new schema named after `prefix`.
pub async fn postgres(prefix: &str) -> (Store, PgSchema) {
    let base = match std::env::var("MAGS_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => panic!(
            "MAGS_TEST_POSTGRES_URL is not set: start PostgreSQL with \
             `eval \"$(scripts/test-postgres)\"` (or point it at any server, e.g. \
             postgres://mags:mags@127.0.0.1:5432/mags_test)"
        ),
    };
    sqlx::any::install_default_drivers();
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let admin = sqlx::AnyPool::connect(&base)
        .await
        .expect("connect to Postgres");
    admin
        .execute(format!("CREATE SCHEMA {name}").as_str())
        .await
        .expect("create schema");
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{name}");
    let store = Store::connect(&url).await.expect("connect");
    (store, PgSchema { admin, name, url })
}

/// A persistent job of `user_id` on workspace `ws`, ready to insert.
pub fn job(user_id: &str, ws: &str) -> NewJob {
    NewJob {
        id: uuid::Uuid::new_v4().to_string(),
        user_id: user_id.to_string(),
        name: Some(ws.to_string()),
        workspace_id: Some(ws.to_string()),
        base_workspace_id: None,
        persistent: true,
        no_sleep: false,
        no_sync: false,
        startup_command: None,
        script: "true".into(),
        environment: BTreeMap::new(),
        file_ids: Vec::new(),
        disk_gb: 2,
        rootfs_type: None,
        idle_timeout_secs: None,
        no_internet: false,
        egress_allow: Vec::new(),
        egress_deny: Vec::new(),
        timeout_secs: None,
        created_at: clock::monotonic_ms(),
    }
}
