//! What ended jobs keep on the host, bounded: a periodic task (at start,
//! then every [`PRUNE_EVERY`]) that
//!
//! 1. deletes ended jobs (row, output, URL routes, SSH keys) that ended
//!    more than `--job-retention-days` ago, oldest first;
//! 2. if all jobs' stored output is still over `--job-output-max-mb`,
//!    deletes the output of the oldest ended jobs until it is not; those
//!    jobs stay (status, exit code, times) with `output_pruned: true`.
//!
//! Live jobs are never touched. Users delete their own ended jobs with
//! `DELETE /mags-jobs/{id}`; until then a job's output counts against its
//! user's disk quota ([`crate::quota`]).

use mags_store::{clock, Store, StoreError};
use std::time::Duration;

/// Default `--job-retention-days`.
pub const DEFAULT_RETENTION_DAYS: u32 = 30;
/// Default `--job-output-max-mb` (10 GiB).
pub const DEFAULT_OUTPUT_MAX_MB: u64 = 10 * 1024;
/// How often the bounds are enforced.
pub const PRUNE_EVERY: Duration = Duration::from_secs(300);

/// The bounds; 0 turns one off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Ended jobs older than this many days are deleted.
    pub max_age_days: u32,
    /// All jobs' stored output together, bytes.
    pub max_output_bytes: u64,
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Ended jobs deleted for their age, and their output bytes.
    pub jobs_deleted: u64,
    pub deleted_bytes: u64,
    /// Ended jobs whose output was deleted for the total, and its bytes.
    pub jobs_pruned: u64,
    pub pruned_bytes: u64,
}

/// One pass at `now_ms` (unix ms).
pub async fn prune(store: &Store, r: Retention, now_ms: i64) -> Result<PruneReport, StoreError> {
    let mut report = PruneReport::default();
    if r.max_age_days > 0 {
        let before = now_ms - i64::from(r.max_age_days) * 86_400_000;
        let (jobs, bytes) = store.delete_jobs_ended_before(before, u64::MAX).await?;
        report.jobs_deleted = jobs;
        report.deleted_bytes = bytes;
    }
    if r.max_output_bytes > 0 {
        let total = store.output_total().await?;
        if total > r.max_output_bytes {
            let (jobs, bytes) = store
                .prune_oldest_output(total - r.max_output_bytes)
                .await?;
            report.jobs_pruned = jobs;
            report.pruned_bytes = bytes;
        }
    }
    Ok(report)
}

/// Runs [`prune`] now and every [`PRUNE_EVERY`] until `shutdown`.
pub async fn prune_forever(
    store: Store,
    r: Retention,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    if r.max_age_days == 0 && r.max_output_bytes == 0 {
        return;
    }
    loop {
        match prune(&store, r, clock::now_ms()).await {
            Ok(rep) if rep == PruneReport::default() => {}
            Ok(rep) => tracing::info!(
                jobs_deleted = rep.jobs_deleted,
                deleted_bytes = rep.deleted_bytes,
                jobs_pruned = rep.jobs_pruned,
                pruned_bytes = rep.pruned_bytes,
                "job retention"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot enforce the job retention"),
        }
        tokio::select! {
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}
