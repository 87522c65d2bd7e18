//! Workspaces and uploaded files: `POST /mags-files`, `GET /mags-workspaces`,
//! `DELETE /mags-workspaces/{id}`, `POST /mags-workspaces/{id}/resize`.

use serde::{Deserialize, Serialize};

/// Body of the answer to `POST /mags-files` (multipart, one or more parts
/// named `file`): the first file's fields, and with several parts also
/// every file's id and fields in the order sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UploadResponse {
    /// Pass it in a job's `file_ids`.
    pub file_id: String,
    /// The file name it will have in the VM (`/root/<name>`, `/uploads/<name>`).
    pub name: String,
    pub size: u64,
    pub sha256: String,
    /// With several parts: all their ids, in order (absent for one part).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub file_ids: Vec<String>,
    /// With several parts: each file (absent for one part).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<UploadedFile>,
}

/// One stored file of a `POST /mags-files` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UploadedFile {
    pub file_id: String,
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// One workspace in `GET /mags-workspaces`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WorkspaceInfo {
    pub workspace_id: String,
    /// Synced to object storage (versions kept there).
    pub persistent: bool,
    /// Disk size, bytes.
    pub size: u64,
    /// Size of the disk in GB (rounded up).
    pub disk_gb: u64,
    /// RFC 3339.
    pub last_used: String,
    pub created_at: String,
    /// Stored versions (0 for a local workspace).
    pub versions: u32,
    pub latest_version: Option<u64>,
    /// Whether this host holds its disk (a local workspace's only copy).
    pub cached: bool,
    /// The live job using it, if any.
    pub live_job_id: Option<String>,
}

/// Body of `GET /mags-workspaces`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WorkspaceList {
    pub workspaces: Vec<WorkspaceInfo>,
    pub total: i64,
}

/// Body of `POST /mags-workspaces/{id}/resize`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ResizeRequest {
    #[schemars(range(min = 1, max = crate::limits::MAX_DISK_GB))]
    pub disk_gb: u32,
}

/// Answer to resize and delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WorkspaceActionResponse {
    pub success: bool,
    pub workspace_id: String,
    pub message: String,
}
