//! Scheduled jobs: each due run becomes an ordinary job.
//!
//! [`tick`] looks for cron jobs whose `next_run_at` has passed and decides
//! each due run: it is skipped if the previous run of that cron is still
//! going (never two at once) or the run is refused for itself (the user's
//! limits, a bad request), else started. Either way one transaction in the
//! store ([`Store::start_cron_run`], [`Store::skip_cron_run`]) moves
//! `next_run_at` to the next fire time after *now* with a compare-and-set
//! and records the run, with a started run's job; so of several hosts (or a
//! server and its restarted self) exactly one decides each due time, a host
//! that dies half-way loses no run, and ticks missed while no server ran
//! collapse into one run. Only then is the job handed to the scheduler. A
//! persistent cron's previous run whose sandbox is up (running or
//! sleeping) is not "still going": the new run takes the workspace over
//! from it.
//!
//! *Now* is the database's clock ([`Store::db_now_ms`], read by
//! [`tick_now`]), both for what is due and for the next fire time, so a
//! host whose own clock is off fires nothing early (or late).
//!
//! [`Store::start_cron_run`]: mags_store::Store::start_cron_run
//! [`Store::skip_cron_run`]: mags_store::Store::skip_cron_run
//! [`Store::db_now_ms`]: mags_store::Store::db_now_ms

pub mod expr;

use crate::jobs::{self, Invalid};
use crate::text::Esc;
use crate::Control;
use crate::ControlError;
use expr::CronExpr;
use mags_api::{CreateJobRequest, JobState};
use mags_store::{CronRow, DueRun};
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
    /// Runs that failed for the server's sake (logged); those not stored
    /// stay due and are tried again by the next tick.
    pub failed: usize,
}

/// What became of one due run.
enum Outcome {
    Started(String),
    Skipped,
    /// Another host (or tick) decided this due time.
    Taken,
}

/// [`tick`] at the database's clock: what the server's ticker runs.
pub async fn tick_now(state: &Control) -> Result<TickReport, ControlError> {
    let now = state.store.db_now_ms().await?;
    tick(state, now).await
}

/// Starts (or skips) every run due at `now` (unix ms on the database's
/// clock; tests give their own). A run refused for itself
/// ([`ControlError::is_refusal`]: its request or the user's limits) is
/// skipped and recorded; any other failure of one run is logged and
/// counted, and the tick goes on with the others. Only a failure to read
/// what is due fails the tick.
pub async fn tick(state: &Control, now: i64) -> Result<TickReport, ControlError> {
    let mut report = TickReport::default();
    for c in state.store.due_crons(now).await? {
        match run_due(state, &c, now).await {
            Ok(Outcome::Started(id)) => report.started.push(id),
            Ok(Outcome::Skipped) => report.skipped += 1,
            Ok(Outcome::Taken) => {}
            Err(e) => {
                tracing::warn!(cron = %Esc(&c.name), error = %e, "cron run failed");
                report.failed += 1;
            }
        }
    }
    Ok(report)
}

/// Decides the due run of `c` at `now`: skipped, or started and handed to
/// the scheduler.
async fn run_due(state: &Control, c: &CronRow, now: i64) -> Result<Outcome, ControlError> {
    let Some(due_at) = c.next_run_at else {
        return Ok(Outcome::Taken);
    };
    // A stored expression was valid when written; if not, stop it.
    let next = CronExpr::parse(&c.expression)
        .ok()
        .and_then(|e| e.next_after(now));
    let run = DueRun {
        cron_id: &c.id,
        due_at,
        next,
        now,
        host: state.store.owner().map(|o| o.host.as_str()),
    };
    let skip = |why: String| async move {
        if state.store.skip_cron_run(&run, &why).await? {
            tracing::info!(cron = %Esc(&c.name), "run skipped: {}", Esc(&why));
            Ok(Outcome::Skipped)
        } else {
            Ok(Outcome::Taken)
        }
    };
    if let Some(status) = still_going(state, c).await? {
        let prev = c.last_job_id.as_deref().unwrap_or("?");
        return skip(format!("previous run {prev} is still {status}")).await;
    }
    // The checks of a submission, storing nothing: the job is stored with
    // the run's claim, in one transaction.
    let new = match jobs::admit(state, &c.user_id, run_request(c)).await {
        Ok(new) => new,
        // Refused for this run only (the user's limits included): skipped.
        Err(e) if e.is_refusal() => return skip(format!("not started: {e}")).await,
        Err(e) => return Err(e),
    };
    let Some(job) = state.store.start_cron_run(&run, &new).await? else {
        return Ok(Outcome::Taken);
    };
    tracing::info!(cron = %Esc(&c.name), job = %job.id, "cron run started");
    let id = job.id.clone();
    jobs::schedule(state, job).await?;
    Ok(Outcome::Started(id))
}

/// The status of the previous run of `c` if it still counts as running.
/// A run counts as running until its job is final, except that a
/// persistent run's live sandbox is taken over by the next run (see
/// `takeover`), as a new `mags run -p` on its workspace would.
async fn still_going(state: &Control, c: &CronRow) -> Result<Option<String>, ControlError> {
    let unfinished = |s: &&str| JobState::parse(s).is_some_and(|st| !st.is_final());
    let Some(status) = c.last_job_status.as_deref().filter(unfinished) else {
        return Ok(None);
    };
    if c.persistent && c.workspace_id.is_some() {
        let prev = match &c.last_job_id {
            Some(id) => state.store.job(id).await?,
            None => None,
        };
        if prev.is_some_and(|j| j.persistent && j.status.is_live()) {
            return Ok(None);
        }
    }
    Ok(Some(status.to_string()))
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

/// Runs [`tick_now`] every [`TICK_EVERY`] until shutdown.
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
            if let Err(e) = tick_now(&state).await {
                tracing::warn!(error = %e, "cron tick failed");
            }
        }
    });
}
