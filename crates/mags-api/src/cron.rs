//! Scheduled jobs: `POST/GET /mags-cron`, `GET/PATCH/DELETE /mags-cron/{id}`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Body of `POST /mags-cron`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CronCreateRequest {
    pub name: String,
    /// Standard 5 fields (`min hour day-of-month month day-of-week`, UTC)
    /// or `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`.
    pub cron_expression: String,
    pub script: String,
    /// Runs on a persistent workspace: each run's changes are synced.
    #[serde(default)]
    pub persistent: bool,
    #[serde(default)]
    pub workspace_id: Option<String>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// Body of `PATCH /mags-cron/{id}`: any subset of the fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CronUpdateRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron_expression: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent: Option<bool>,
    /// An empty string clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// A cron job, as every `/mags-cron` endpoint returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CronJob {
    pub id: String,
    pub name: String,
    pub cron_expression: String,
    pub script: String,
    pub persistent: bool,
    pub workspace_id: Option<String>,
    pub environment: BTreeMap<String, String>,
    pub enabled: bool,
    /// RFC 3339, UTC; absent while disabled.
    pub next_run_at: Option<String>,
    pub last_run_at: Option<String>,
    /// The job of the latest run (an ordinary job: `mags logs <id>`).
    pub last_job_id: Option<String>,
    /// That job's status (`running`, `completed`, `error`, ...).
    pub last_status: Option<String>,
    /// Why the latest due run was skipped, if it was (e.g. the previous
    /// run was still running).
    pub last_skip_reason: Option<String>,
    pub run_count: u64,
    pub skipped_runs: u64,
    pub created_at: String,
    pub updated_at: String,
}

/// Body of `GET /mags-cron`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CronList {
    pub cron_jobs: Vec<CronJob>,
    pub total: usize,
}
