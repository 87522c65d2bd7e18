//! REST request and response types of the Mags API, under `/api/v1`.
//!
//! These are the wire shapes the published clients (the `magpie-mags` Python
//! SDK, the Node SDK, the `mags` CLI) send and expect; see
//! `mags-contract.md`. Field names here are the contract: rename nothing.
//! Unknown request fields are accepted and ignored, and clients ignore
//! unknown response fields, so adding a response field is always safe.
//!
//! - [`jobs`]: creating, inspecting and listing jobs, their logs and the
//!   NDJSON output stream used by our own CLI.
//! - [`sandbox`]: long-lived sandboxes: exec, update, stop, sync.
//! - [`workspaces`]: workspaces and uploaded files.
//! - [`cron`]: scheduled jobs.
//! - [`ssh`]: SSH access keys and the terminal WebSocket.
//! - [`users`]: API tokens, users (admin) and the audit log.
//! - [`ErrorBody`]: the one error shape, `{"error": "..."}`.

pub mod access;
pub mod cron;
pub mod jobs;
pub mod limits;
pub mod sandbox;
pub mod ssh;
pub mod users;
pub mod workspaces;

pub use access::{
    valid_subdomain, AccessRequest, AccessResponse, AliasInfo, AliasList, BrowserRequest,
    BrowserSession, CreateAliasRequest,
};
pub use cron::{CronCreateRequest, CronJob, CronList, CronUpdateRequest};
pub use jobs::{
    CreateJobRequest, CreateJobResponse, DeleteJobResponse, JobList, JobListQuery, JobState,
    JobStatus, LogEntry, LogsQuery, LogsResponse, OutputEvent, OutputStream, PoolStatus,
    UsageResponse, WhoAmI, DEFAULT_DISK_GB,
};
pub use sandbox::{
    ActionResponse, ExecEvent, ExecRequest, ExecResponse, UpdateJobRequest,
    DEFAULT_EXEC_TIMEOUT_SECS, TIMEOUT_EXIT_CODE,
};

pub use ssh::{SshAccessError, SshAccessResponse, TtyClientMsg, TtyQuery, TtyServerMsg, SSH_PORT};
pub use users::{
    AuditAction, AuditEntry, AuditList, AuditQuery, CreateTokenRequest, CreateUserRequest,
    CreatedToken, RevokedToken, TokenInfo, TokenList, TokenListQuery, UserInfo, UserList,
};
pub use workspaces::{
    ResizeRequest, UploadResponse, UploadedFile, WorkspaceActionResponse, WorkspaceInfo,
    WorkspaceList,
};

use limits::MAX_PAGE_LIMIT;
use serde::{Deserialize, Serialize};

/// Query of the listings (`/mags-workspaces`, `/mags-cron`,
/// `/mags-url-aliases`, `/mags-tokens`, `/mags-users`): one page, with the
/// whole count in the answer's `total`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PageQuery {
    /// Skip this many rows first (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// At most this many rows (default and largest: 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_PAGE_LIMIT))]
    pub limit: Option<u32>,
}

/// Body of every error response (status >= 400).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ErrorBody {
    /// A human-readable message.
    pub error: String,
}

/// Body of `GET /health` (no authentication).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Health {
    /// Always `"ok"` when the server answers.
    pub status: String,
    /// The server's version.
    pub version: String,
}

/// The `--server-file` magsd writes once it listens (and the CLI reads in
/// local mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ServerFile {
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    /// Process id of the server.
    pub pid: u32,
}
