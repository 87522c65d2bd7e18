//! How stored records look on the wire: [`job_status`] and [`rfc3339`].

use mags_api::JobStatus;
use mags_store::{clock, Job};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Unix milliseconds as RFC 3339 UTC (`2025-01-02T03:04:05.678Z`).
pub fn rfc3339(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// The API view of a job.
pub fn job_status(job: &Job) -> JobStatus {
    JobStatus {
        request_id: job.id.clone(),
        id: job.id.clone(),
        name: job.name.clone(),
        status: job.status,
        vm_id: job.vm_id.clone(),
        workspace_id: job.workspace_id.clone(),
        base_workspace_id: job.base_workspace_id.clone(),
        persistent: job.persistent,
        no_sleep: job.no_sleep,
        startup_command: job.startup_command.clone(),
        idle_timeout_secs: job.idle_timeout_secs,
        timeout: job.timeout_secs,
        subdomain: None,
        url: None,
        exit_code: job.exit_code,
        script_duration_ms: job.script_duration_ms,
        disk_gb: job.disk_gb,
        created_at: rfc3339(job.created_at),
        started_at: job.started_at.map(rfc3339),
        finished_at: job.finished_at.map(rfc3339),
        error: job.error.clone(),
        vm_seconds: job.vm_ms_at(clock::now_ms()) as f64 / 1000.0,
        output_bytes: job.output_bytes,
        output_pruned: job.output_pruned_at.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
