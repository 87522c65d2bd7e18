//! Every limit the API puts on a request or what it keeps, in one place:
//! the server enforces these, the OpenAPI document states them, and the
//! clients can check before sending.

/// Largest `disk_gb` accepted (jobs and resizes).
pub const MAX_DISK_GB: u32 = 256;
/// Largest `timeout` and `idle_timeout_secs` accepted (30 days).
pub const MAX_TIMEOUT_SECS: u64 = 30 * 86_400;
/// Largest `script` of a job or cron job, in bytes.
pub const MAX_SCRIPT_BYTES: usize = 1024 * 1024;
/// Most entries in one egress list (`egress_allow`, `egress_deny`).
pub const MAX_EGRESS_RULES: usize = 64;
/// Output beyond this many bytes per job is dropped (with a notice).
pub const MAX_OUTPUT_BYTES: u64 = 64 * 1024 * 1024;

/// Longest `/exec` command accepted, in bytes.
pub const MAX_COMMAND_BYTES: usize = 1024 * 1024;
/// Longest `/exec` timeout accepted, seconds (a day).
pub const MAX_EXEC_TIMEOUT_SECS: f64 = 86_400.0;
/// Output of a buffered `/exec` kept per stream; the rest is dropped with
/// a notice.
pub const MAX_EXEC_OUTPUT_BYTES: usize = 32 * 1024 * 1024;
/// Longest startup command accepted, in bytes.
pub const MAX_STARTUP_COMMAND_BYTES: usize = 64 * 1024;

/// Most cron jobs one user may have.
pub const MAX_CRONS_PER_USER: usize = 100;

/// Largest uploaded file, in bytes (100 MB).
pub const MAX_UPLOAD_BYTES: u64 = 100_000_000;
/// Most `file` parts in one upload request (a job takes at most 100
/// `file_ids`).
pub const MAX_UPLOAD_PARTS: usize = 100;
/// Largest request body the server accepts (JSON), except uploads
/// ([`MAX_UPLOAD_BYTES`] per file).
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// Largest `limit` of a listing, and its default: a plain call gets up to
/// this many rows, and `total` says how many there are.
pub const MAX_PAGE_LIMIT: u32 = 1000;
/// Largest `page_size` of `GET /mags-jobs`.
pub const MAX_JOB_PAGE_SIZE: u32 = 100;
/// Largest `limit` of `GET /mags-audit`.
pub const MAX_AUDIT_LIMIT: i64 = 1000;
