//! How stored records look on the wire: [`job_status`], [`token_info`],
//! [`user_info`], [`audit_entry`] and [`cron_job`] (the API and the
//! operator commands print the same shapes; times are
//! [`mags_store::clock::rfc3339`]).

use mags_api::{AuditEntry, CronJob, JobStatus, TokenInfo, UserInfo};
use mags_store::clock::{self, rfc3339};
use mags_store::{AuditEvent, CronRow, Job, TokenRow, User};

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

/// The wire shape of a stored cron job.
pub fn cron_job(c: &CronRow) -> CronJob {
    CronJob {
        id: c.id.clone(),
        name: c.name.clone(),
        cron_expression: c.expression.clone(),
        script: c.script.clone(),
        persistent: c.persistent,
        workspace_id: c.workspace_id.clone(),
        environment: c.environment.clone(),
        enabled: c.enabled,
        next_run_at: c.next_run_at.map(rfc3339),
        last_run_at: c.last_run_at.map(rfc3339),
        last_job_id: c.last_job_id.clone(),
        last_status: c.last_job_status.clone(),
        last_skip_reason: c.last_skip.clone(),
        run_count: c.run_count,
        skipped_runs: c.skip_count,
        created_at: rfc3339(c.created_at),
        updated_at: rfc3339(c.updated_at),
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
