//! How stored records look on the wire: [`job_status`], [`token_info`],
//! [`user_info`], [`audit_entry`] and [`rfc3339`] (the API and the
//! operator commands print the same shapes).

use mags_api::{AuditEntry, JobStatus, TokenInfo, UserInfo};
use mags_store::{clock, AuditEvent, Job, TokenRow, User};
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

/// The API view of a stored token.
pub fn token_info(t: &TokenRow) -> TokenInfo {
    TokenInfo {
        id: t.id.clone(),
        prefix: t.prefix.clone(),
        user: t.user_name.clone(),
        created_at: rfc3339(t.created_at),
        last_used_at: t.last_used_at.map(rfc3339),
        revoked: t.revoked,
    }
}

/// The API view of a user.
pub fn user_info(u: &User) -> UserInfo {
    UserInfo {
        id: u.id.clone(),
        name: u.name.clone(),
        is_admin: u.is_admin,
        created_at: rfc3339(u.created_at),
    }
}

/// The API view of an audit event.
pub fn audit_entry(e: &AuditEvent) -> AuditEntry {
    let ev = &e.event;
    AuditEntry {
        id: e.id.clone(),
        time: rfc3339(e.at),
        user: ev.user_name.clone(),
        user_id: ev.user_id.clone(),
        token_prefix: ev.token_prefix.clone(),
        action: ev.action.clone(),
        target_kind: ev.target_kind.clone(),
        target_id: ev.target_id.clone(),
        detail: ev.detail.clone(),
        source_ip: ev.source_ip.clone(),
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
