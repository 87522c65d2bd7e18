//! Jobs: `POST /mags-jobs`, `GET /mags-jobs`, `GET /mags-jobs/{id}/status`,
//! `/logs`, `/output` (NDJSON), `/mags-jobs/usage`, `/mags-jobs/pool-status`.

use crate::limits::{MAX_DISK_GB, MAX_JOB_PAGE_SIZE, MAX_TIMEOUT_SECS};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Disk size of a sandbox when the request does not say.
pub const DEFAULT_DISK_GB: u32 = 2;

fn default_disk_gb() -> u32 {
    DEFAULT_DISK_GB
}

/// Body of `POST /mags-jobs`. Unknown fields are ignored.
///
/// `script` is required and non-empty; the server checks that (so the error
/// is a readable message rather than a serde one), hence the default here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CreateJobRequest {
    #[serde(default)]
    pub script: String,
    /// `"inline"` (the only kind) when present.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub job_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_workspace_id: Option<String>,
    #[serde(default)]
    pub persistent: bool,
    /// Only valid together with `persistent`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_sleep: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_sync: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_command: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub file_ids: Vec<String>,
    #[serde(default = "default_disk_gb")]
    #[schemars(range(min = 1, max = MAX_DISK_GB))]
    pub disk_gb: u32,
    /// The guest image: `standard` (default), `browser` (Chromium),
    /// `claude` (Claude Code), `pi` (the pi coding agent); any other value
    /// is a 400.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs_type: Option<String>,
    /// Ours (unknown to the published clients): put a persistent sandbox to
    /// sleep after this many idle seconds instead of the server's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_TIMEOUT_SECS))]
    pub idle_timeout_secs: Option<u64>,
    /// Ours: the sandbox reaches nothing outside itself (the egress proxy
    /// refuses every destination for it), whatever the server allows.
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_internet: bool,
    /// Ours: if not empty, the only destinations the sandbox may reach
    /// (CIDRs like `10.1.0.0/16` or hostnames like `pypi.org`, which also
    /// match their subdomains). It narrows the server's policy: the
    /// server's denials (host, private and metadata ranges) still hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress_allow: Vec<String>,
    /// Ours: destinations the sandbox may not reach, on top of the
    /// server's denials (CIDRs or hostnames).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress_deny: Vec<String>,
    /// Ours: kill the script after this many seconds; the job then ends in
    /// `error` ("timed out after N s"). Without it a one-shot job gets the
    /// server's default (`--job-timeout-secs`); a persistent job's script
    /// is limited only when this is given, and its sandbox stays up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_TIMEOUT_SECS))]
    pub timeout: Option<u64>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl CreateJobRequest {
    /// A request for `script` with every other field at its default.
    pub fn new(script: impl Into<String>) -> Self {
        Self {
            script: script.into(),
            job_type: Some("inline".into()),
            name: None,
            workspace_id: None,
            base_workspace_id: None,
            persistent: false,
            no_sleep: false,
            no_sync: false,
            startup_command: None,
            environment: BTreeMap::new(),
            file_ids: Vec::new(),
            disk_gb: DEFAULT_DISK_GB,
            rootfs_type: None,
            idle_timeout_secs: None,
            no_internet: false,
            egress_allow: Vec::new(),
            egress_deny: Vec::new(),
            timeout: None,
        }
    }
}

/// Body of the 202 answer to `POST /mags-jobs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CreateJobResponse {
    /// The job id (a UUID).
    pub request_id: String,
    /// Always `"accepted"`.
    pub status: String,
    pub message: String,
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Stored, not yet given to a VM.
    Accepted,
    /// Waiting for a free VM slot.
    Queued,
    /// A VM runs the script (or, for a persistent job, is kept up).
    Running,
    /// A persistent job's VM is snapshotted to disk while idle.
    Sleeping,
    /// The script exited 0.
    Completed,
    /// Non-zero exit, timeout or infrastructure failure.
    Error,
}

impl JobState {
    /// The wire word.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Accepted => "accepted",
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Sleeping => "sleeping",
            JobState::Completed => "completed",
            JobState::Error => "error",
        }
    }

    /// Parses the wire word.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "accepted" => JobState::Accepted,
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "sleeping" => JobState::Sleeping,
            "completed" => JobState::Completed,
            "error" => JobState::Error,
            _ => return None,
        })
    }

    /// `completed` or `error`: the job will not change any more.
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Completed | JobState::Error)
    }

    /// `running` or `sleeping`: a VM (or its snapshot) is live.
    pub fn is_live(self) -> bool {
        matches!(self, JobState::Running | JobState::Sleeping)
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One job as `GET /mags-jobs/{id}/status` and `GET /mags-jobs` show it.
/// Timestamps are RFC 3339 (UTC).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct JobStatus {
    pub request_id: String,
    /// Same as `request_id`.
    pub id: String,
    pub name: Option<String>,
    pub status: JobState,
    pub vm_id: Option<String>,
    pub workspace_id: Option<String>,
    #[serde(default)]
    pub base_workspace_id: Option<String>,
    #[serde(default)]
    pub persistent: bool,
    /// A persistent sandbox that never sleeps.
    #[serde(default)]
    pub no_sleep: bool,
    /// Run after every wake of a persistent sandbox.
    #[serde(default)]
    pub startup_command: Option<String>,
    /// Idle seconds before a persistent sandbox sleeps, if not the server's
    /// default.
    #[serde(default)]
    pub idle_timeout_secs: Option<u64>,
    /// Seconds the script may run before it is killed (none: no limit).
    #[serde(default)]
    pub timeout: Option<u64>,
    pub subdomain: Option<String>,
    pub url: Option<String>,
    pub exit_code: Option<i32>,
    pub script_duration_ms: Option<i64>,
    #[serde(default)]
    pub disk_gb: u32,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Why the job ended in `error`, when it was not the script's own exit.
    pub error: Option<String>,
    /// Seconds a VM has run for this job (sleeping time not counted).
    #[serde(default)]
    pub vm_seconds: f64,
    /// Bytes of output stored for this job; they count against its user's
    /// disk quota until the job is deleted (`DELETE /mags-jobs/{id}`).
    #[serde(default)]
    pub output_bytes: u64,
    /// The server's retention deleted this ended job's output to bound
    /// the total stored (`/logs` is empty); the job itself is kept.
    #[serde(default)]
    pub output_pruned: bool,
}

/// Body of `DELETE /mags-jobs/{id}` (ours): the ended job and its output
/// are gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeleteJobResponse {
    pub success: bool,
    pub request_id: String,
    /// Bytes of stored output deleted with it.
    pub output_bytes: u64,
    pub message: String,
}

/// Which output a log entry or chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutputStream {
    Stdout,
    Stderr,
    /// Messages from Mags itself (start failures, truncation notices).
    System,
}

impl OutputStream {
    /// The wire word.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
            OutputStream::System => "system",
        }
    }

    /// Parses the wire word.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "stdout" => OutputStream::Stdout,
            "stderr" => OutputStream::Stderr,
            "system" => OutputStream::System,
            _ => return None,
        })
    }
}

/// One line of a job's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LogEntry {
    /// When the line started (RFC 3339).
    pub timestamp: String,
    /// `info` (stdout, system) or `error` (stderr).
    pub level: String,
    /// The line, without its newline; invalid UTF-8 is replaced.
    pub message: String,
    pub source: OutputStream,
}

/// Query of `GET /mags-jobs/{id}/logs`. Without either, every line so far
/// (the body is streamed, so its size is no limit).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LogsQuery {
    /// Skip this many entries first (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Send at most this many entries (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub limit: Option<u64>,
}

/// Body of `GET /mags-jobs/{id}/logs` (streamed: entries are sent as they
/// are read, so any amount of output is served in bounded memory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LogsResponse {
    pub logs: Vec<LogEntry>,
}

/// Query of `GET /mags-jobs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct JobListQuery {
    /// Page number, from 1 (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub page: Option<u32>,
    /// Jobs per page (default 20, at most 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_JOB_PAGE_SIZE))]
    pub page_size: Option<u32>,
}

/// Body of `GET /mags-jobs?page=&page_size=`: newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct JobList {
    pub jobs: Vec<JobStatus>,
    pub total: i64,
    pub page: u32,
    pub page_size: u32,
}

/// Body of `GET /mags-jobs/usage?window_days=`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UsageResponse {
    pub window_days: u32,
    pub total_jobs: i64,
    pub vm_seconds: f64,
}

/// Body of `GET /mags-jobs/pool-status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PoolStatus {
    pub idle_vms: u32,
    pub busy_vms: u32,
    pub total_vms: u32,
    pub min_pool_size: u32,
    pub max_pool_size: u32,
    /// Jobs waiting for a VM slot.
    #[serde(default)]
    pub queued_jobs: u32,
    /// `kvm`, `tcg`, `fake`, or null while not yet known.
    pub accel: Option<String>,
}

/// Body of `GET /api/v1/whoami` (ours; not used by the published clients).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WhoAmI {
    pub user: String,
    pub is_admin: bool,
}

/// One line of the NDJSON body of `GET /mags-jobs/{id}/output`.
///
/// Output chunks come in `seq` order; the stream ends with `Exit` once the
/// job is final, or once the script of a persistent job has ended (its
/// sandbox lives on: `status` is then `running` or `sleeping`). Chunk bytes are in `data` when they are valid UTF-8, else
/// base64 in `data_b64`; exactly one of the two is present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum OutputEvent {
    Output {
        seq: i64,
        stream: OutputStream,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data_b64: Option<String>,
        timestamp: String,
    },
    /// The job's status changed (sent once at the start too).
    Status { status: JobState },
    /// The job is final (or a persistent job's script ended); nothing follows.
    Exit {
        status: JobState,
        exit_code: Option<i32>,
        #[serde(default)]
        error: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_request_defaults_and_unknown_fields() {
        let r: CreateJobRequest =
            serde_json::from_str(r#"{"script":"echo hi","persistent":false,"bogus":[1,2]}"#)
                .expect("parses");
        assert_eq!(r.script, "echo hi");
        assert_eq!(r.disk_gb, DEFAULT_DISK_GB);
        assert!(r.environment.is_empty());
        assert!(!r.no_sleep);

        let r: CreateJobRequest = serde_json::from_str(
            r#"{"script":"x","type":"inline","name":"n","workspace_id":"w","environment":{"A":"1"},"file_ids":["f"],"disk_gb":5,"rootfs_type":"standard","no_sleep":true,"persistent":true}"#,
        )
        .expect("parses");
        assert_eq!(r.job_type.as_deref(), Some("inline"));
        assert_eq!(r.environment.get("A").map(String::as_str), Some("1"));
        assert_eq!(r.disk_gb, 5);
        assert!(r.no_sleep && r.persistent);
    }

    #[test]
    fn output_events_are_tagged() {
        let e = OutputEvent::Exit {
            status: JobState::Completed,
            exit_code: Some(0),
            error: None,
        };
        let s = serde_json::to_string(&e).expect("serializes");
        assert_eq!(
            s,
            r#"{"event":"exit","status":"completed","exit_code":0,"error":null}"#
        );
        let o: OutputEvent = serde_json::from_str(
            r#"{"event":"output","seq":3,"stream":"stderr","data":"x","timestamp":"t"}"#,
        )
        .expect("parses");
        assert!(matches!(
            o,
            OutputEvent::Output {
                seq: 3,
                stream: OutputStream::Stderr,
                ..
            }
        ));
    }

    #[test]
    fn state_words_round_trip() {
        for s in [
            JobState::Accepted,
            JobState::Queued,
            JobState::Running,
            JobState::Sleeping,
            JobState::Completed,
            JobState::Error,
        ] {
            assert_eq!(JobState::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_string(&s).expect("serializes"),
                format!("\"{s}\"")
            );
        }
    }
}
