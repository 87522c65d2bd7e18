//! Scheduled jobs: each due run becomes an ordinary job.
//!
//! [`tick`] looks for cron jobs whose `next_run_at` has passed, moves each
//! one's `next_run_at` to its next fire time after *now* with a
//! compare-and-set in the store (so of several hosts, or a server and its
//! restarted self, exactly one starts the run, and ticks missed while no
//! server ran collapse into one run), then starts the run, or skips it if
//! the previous run of that cron is still going (never two at once),
//! recording why. A persistent cron's previous run whose sandbox is up
//! (running or sleeping) is not "still going": the new run takes the
//! workspace over from it.

pub mod expr;

use crate::jobs::Invalid;
use crate::text::Esc;
use crate::Control;
use crate::ControlError;
use expr::CronExpr;
use mags_api::{CreateJobRequest, JobState};
use mags_store::CronRow;
use std::time::Duration;
use tokio::sync::watch;

/// How often the server looks for due runs.
pub const TICK_EVERY: Duration = Duration::from_secs(1);

/// Parses an expression given by a user, saying what is wrong with it.
pub fn parse(expression: &str) -> Result<CronExpr, Invalid> {
    CronExpr::parse(expression).map_err(|e| Invalid(format!("cron_expression: {e}")))
}

/// What one [`tick`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickReport {
    pub started: Vec<String>,
    pub skipped: usize,
}

/// Starts (or skips) every run due at `now` (unix ms).
/// A run refused for itself ([`ControlError::is_refusal`]: its request or
/// the user's limits) is skipped and recorded; any other failure ends the
/// tick with it.
pub async fn tick(state: &Control, now: i64) -> Result<TickReport, ControlError> {
    let mut report = TickReport::default();
    for c in state.store.due_crons(now).await? {
        let Some(due) = c.next_run_at else { continue };
        // A stored expression was valid when written; if not, stop it.
        let next = CronExpr::parse(&c.expression)
            .ok()
            .and_then(|e| e.next_after(now));
        if !state.store.claim_cron_run(&c.id, due, next).await? {
            continue; // another host (or tick) took this run
        }
        // A run counts as running until its job is final, except that a
        // persistent run's live sandbox is taken over by the next run (see
        // `takeover`), as a new `mags run -p` on its workspace would.
        let unfinished = |s: &&str| JobState::parse(s).is_some_and(|st| !st.is_final());
        let running = match c.last_job_status.as_deref().filter(unfinished) {
            Some(status) if c.persistent && c.workspace_id.is_some() => {
                let prev = match &c.last_job_id {
                    Some(id) => state.store.job(id).await?,
                    None => None,
                };
                let handed_over = prev
                    .as_ref()
                    .is_some_and(|j| j.persistent && j.status.is_live());
                (!handed_over).then_some(status)
            }
            other => other,
        };
        if let Some(status) = running {
            let why = format!(
                "previous run {} is still {status}",
                c.last_job_id.as_deref().unwrap_or("?")
            );
            tracing::info!(cron = %Esc(&c.name), "{why}; run skipped");
            state.store.record_cron_skip(&c.id, &why).await?;
            report.skipped += 1;
            continue;
        }
        match state.submit(&c.user_id, run_request(&c)).await {
            Ok(job) => {
                tracing::info!(cron = %Esc(&c.name), job = %job.id, "cron run started");
                state.store.record_cron_run(&c.id, &job.id, now).await?;
                report.started.push(job.id.clone());
            }
            // Refused for this run only (the user's limits included): skipped.
            Err(e) if e.is_refusal() => {
                let why = format!("not started: {e}");
                tracing::warn!(cron = %Esc(&c.name), "{}", Esc(&why));
                state.store.record_cron_skip(&c.id, &why).await?;
                report.skipped += 1;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(report)
}

/// The job one run of `c` submits, named after the cron: one-shot, or for
/// a persistent cron a sandbox that stays up after its script.
fn run_request(c: &CronRow) -> CreateJobRequest {
    let mut req = CreateJobRequest::new(&c.script);
    req.name = Some(c.name.clone());
    req.workspace_id = c.workspace_id.clone();
    req.environment = c.environment.clone();
    req.persistent = c.persistent;
    req
}

/// Runs [`tick`] every [`TICK_EVERY`] until shutdown.
pub fn start(state: Control, mut shutdown: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(TICK_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
            if let Err(e) = tick(&state, mags_store::clock::now_ms()).await {
                tracing::warn!(error = %e, "cron tick failed");
            }
        }
    });
}
