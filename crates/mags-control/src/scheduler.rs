//! Runs accepted jobs in the background: one-shot jobs at most `max_vms` at
//! a time, and at most as many per user as [`UserSlots`] allows (shared
//! with the user's running sandboxes); persistent ones are handed to
//! [`Sandboxes`], which counts them against its own limit (a long-lived
//! sandbox must not hold a slot of the one-shot queue forever).
//!
//! A job stays `accepted` until its VM is up (`running`); a job that has to
//! wait for a free slot (its user's first, then the server's) is `queued`
//! meanwhile; while it waits for its user's, an idle sandbox of that user
//! is put to sleep to make room. A script that runs past the job's
//! `timeout_secs` is killed by the guest agent (with a host-side backstop)
//! and the job ends in `error`, "timed out after N s". When a one-shot script ends,
//! all output is flushed first and then the final state is stored
//! (`completed` for exit 0, else `error`), so a follower that sees the final
//! state has seen all output. A one-shot job can be stopped ([`Scheduler::stop`]).

use crate::executor::{run_to_end, ExecError, Executor, ExitInfo, JobSpec};
use crate::quota::{UserSlot, UserSlots};
use crate::sandboxes::Sandboxes;
use crate::sink::{Followers, OutputSink};
use mags_api::JobState;
use mags_store::{Finish, Job, Store};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tracing::Instrument as _;

/// Counters for `/pool-status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    pub busy: u32,
    pub queued: u32,
    pub max: u32,
}

/// Hands jobs to the executor; cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    executor: Arc<dyn Executor>,
    followers: Followers,
    sandboxes: Sandboxes,
    slots: Arc<Semaphore>,
    user_slots: Arc<UserSlots>,
    max: u32,
    busy: AtomicU32,
    queued: AtomicU32,
    /// Stop requests of one-shot jobs not yet final, by job id.
    stops: Mutex<HashMap<String, Arc<Notify>>>,
}

/// Adds one to a counter for as long as it lives.
struct Count<'a>(&'a AtomicU32);

impl<'a> Count<'a> {
    fn new(c: &'a AtomicU32) -> Self {
        c.fetch_add(1, Ordering::Relaxed);
        Count(c)
    }
}

impl Drop for Count<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Scheduler {
    /// A scheduler running at most `max_vms` one-shot jobs at once (and
    /// per user what `user_slots` allows), and persistent ones through
    /// `sandboxes`.
    pub fn new(
        store: Store,
        executor: Arc<dyn Executor>,
        followers: Followers,
        sandboxes: Sandboxes,
        max_vms: u32,
        user_slots: Arc<UserSlots>,
    ) -> Self {
        let max = max_vms.max(1);
        Scheduler {
            inner: Arc::new(Inner {
                store,
                executor,
                followers,
                sandboxes,
                slots: Arc::new(Semaphore::new(max as usize)),
                user_slots,
                max,
                busy: AtomicU32::new(0),
                queued: AtomicU32::new(0),
                stops: Mutex::default(),
            }),
        }
    }

    /// Starts running `job` in the background.
    pub fn submit(&self, job: Job) {
        if job.persistent {
            self.inner.sandboxes.launch(job);
            return;
        }
        let inner = self.inner.clone();
        let stop = Arc::new(Notify::new());
        lock(&inner.stops).insert(job.id.clone(), stop.clone());
        let span = tracing::info_span!("job", id = %job.id);
        tokio::spawn(async move { inner.run_job(job, stop).await }.instrument(span));
    }

    /// Asks a one-shot job that is not final to stop; false if there is no
    /// such job. It then ends in `error` ("stopped").
    pub fn stop(&self, job_id: &str) -> bool {
        match lock(&self.inner.stops).get(job_id) {
            Some(n) => {
                n.notify_one();
                true
            }
            None => false,
        }
    }

    /// Current load of one-shot jobs.
    pub fn load(&self) -> Load {
        Load {
            busy: self.inner.busy.load(Ordering::Relaxed),
            queued: self.inner.queued.load(Ordering::Relaxed),
            max: self.inner.max,
        }
    }

    /// The executor's accelerator, once known.
    pub fn accel(&self) -> Option<String> {
        self.inner.executor.accel()
    }

    /// Idle warm VMs and the pool's target size.
    pub fn idle(&self) -> (usize, usize) {
        self.inner.executor.idle()
    }

    /// One-shot jobs this host could start now without queueing them:
    /// how many more a claim may take.
    pub fn free(&self) -> u32 {
        let taken = u32::try_from(lock(&self.inner.stops).len()).unwrap_or(u32::MAX);
        self.inner.max.saturating_sub(taken)
    }

    /// Takes over what a previous server process left: one-shot jobs
    /// mid-run end in `error` (with the reason in their log), persistent
    /// ones come back through [`Sandboxes::recover`], and jobs not yet
    /// started are queued again. A host of a cluster (a fenced store)
    /// takes only its own jobs (from its earlier epochs) and those from
    /// before hosts were recorded; others' are theirs, or the leader's to
    /// hand on.
    pub async fn recover(&self) -> Result<(), mags_store::StoreError> {
        let store = &self.inner.store;
        let (started, waiting): (Vec<Job>, Vec<Job>) = match store.owner() {
            Some(owner) => store
                .adopt_jobs(owner)
                .await?
                .into_iter()
                .partition(|j| matches!(j.status, JobState::Running | JobState::Sleeping)),
            None => (
                store
                    .jobs_in_states(&[JobState::Running, JobState::Sleeping])
                    .await?,
                store
                    .jobs_in_states(&[JobState::Accepted, JobState::Queued])
                    .await?,
            ),
        };
        for job in started {
            if job.persistent {
                self.inner.sandboxes.recover(job);
                continue;
            }
            let reason = "server restarted while the job was running";
            tracing::warn!(job = %job.id, "{reason}");
            self.inner.fail(&job.id, reason).await;
        }
        for job in waiting {
            if self.waits_for_workspace(&job).await? {
                continue;
            }
            tracing::info!(job = %job.id, "re-queueing a job accepted before a restart");
            self.submit(job);
        }
        Ok(())
    }

    /// Whether `job` (accepted, not running) is on a workspace another
    /// live job holds: it waits to take it over ([`crate::takeover`])
    /// instead of starting. Claims the workspace for it otherwise.
    pub async fn waits_for_workspace(&self, job: &Job) -> Result<bool, mags_store::StoreError> {
        let Some(ws) = &job.workspace_id else {
            return Ok(false);
        };
        let store = &self.inner.store;
        Ok(store
            .claim_workspace(&job.user_id, ws, &job.id)
            .await?
            .is_some())
    }

    /// The jobs [`Scheduler::recover`] left waiting for a workspace another
    /// job holds, oldest first.
    pub async fn waiting_for_workspaces(&self) -> Result<Vec<Job>, mags_store::StoreError> {
        let store = &self.inner.store;
        let mut waiting = Vec::new();
        for job in store
            .jobs_in_states(&[JobState::Accepted, JobState::Queued])
            .await?
        {
            // Another host's (or nobody's yet): not this host's to resume.
            if let Some(owner) = store.owner() {
                if job.host.as_deref() != Some(owner.host.as_str()) {
                    continue;
                }
            }
            let Some(ws) = &job.workspace_id else {
                continue;
            };
            let holder = store
                .workspace(&job.user_id, ws)
                .await?
                .and_then(|w| w.live_job_id);
            if holder.as_deref() != Some(job.id.as_str()) {
                waiting.push(job);
            }
        }
        waiting.sort_by_key(|j| j.created_at);
        Ok(waiting)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How a one-shot job's run ended.
enum Outcome {
    Ran(Result<ExitInfo, ExecError>),
    Stopped,
}

impl Inner {
    async fn run_job(self: Arc<Self>, job: Job, stop: Arc<Notify>) {
        let (sink, writer) = OutputSink::start(self.store.clone(), self.followers.clone(), &job.id);
        // Its own task, so a panicking executor fails the job instead of
        // leaving it `accepted` forever, and a stop can abort it (dropping
        // the VM kills it).
        let task = tokio::spawn(
            self.clone()
                .run_once(job.clone(), sink.clone())
                .in_current_span(),
        );
        let abort = task.abort_handle();
        let outcome = tokio::select! {
            r = task => Outcome::Ran(
                r.unwrap_or_else(|e| Err(ExecError::Lost(format!("executor crashed: {e}")))),
            ),
            _ = stop.notified() => {
                abort.abort();
                Outcome::Stopped
            }
        };
        let finish = match outcome {
            Outcome::Ran(Ok(exit)) => {
                if let Some(why) = &exit.disk_trouble {
                    tracing::warn!(%why, "the host failed the sandbox's disk");
                }
                let finish = finish_for_exit(exit, job.timeout_secs);
                if let Some(reason) = finish.error.as_deref() {
                    sink.system(&format!("error: {reason}")).await;
                }
                finish
            }
            Outcome::Ran(Err(e)) => {
                tracing::warn!(error = %e, "job failed");
                sink.system(&format!("error: {e}")).await;
                error_finish(e.to_string())
            }
            Outcome::Stopped => {
                tracing::info!("stopped on request");
                sink.system("stopped on request").await;
                error_finish("stopped on request before the script ended".into())
            }
        };
        drop(sink);
        if let Err(e) = writer.await {
            tracing::error!(error = %e, "output writer crashed");
        }
        self.store_final(&job.id, &finish).await;
        lock(&self.stops).remove(&job.id);
        tracing::info!(status = %finish.status, exit_code = ?finish.exit_code, "finished");
    }

    /// Waits for a slot, starts a VM, runs the script in it.
    async fn run_once(self: Arc<Self>, job: Job, sink: OutputSink) -> Result<ExitInfo, ExecError> {
        let mut queued = None;
        let _user_slot = match self.user_slots.try_acquire(&job.user_id) {
            Some(s) => s,
            None => {
                queued = Some(self.mark_queued(&job.id).await);
                self.user_slot(&job.user_id).await
            }
        };
        // The user's VMs on the cluster's other hosts count too: wait while
        // they and this host's (this one's slot included) pass the limit.
        let max = self.user_slots.max();
        if max > 0 {
            loop {
                let elsewhere = self.store.vms_elsewhere(&job.user_id).await.unwrap_or(0);
                if self.user_slots.in_use(&job.user_id) + elsewhere <= max {
                    break;
                }
                if queued.is_none() {
                    queued = Some(self.mark_queued(&job.id).await);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        let _permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if queued.is_none() {
                    queued = Some(self.mark_queued(&job.id).await);
                }
                self.slots
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| ExecError::Start("the scheduler is closed".into()))?
            }
        };
        drop(queued);
        let _busy = Count::new(&self.busy);
        tracing::info!("starting");
        let spec = JobSpec::of(&job);
        let vm = self.executor.start(&spec).await?;
        sink.running(vm.id())
            .await
            .map_err(|e| ExecError::Start(e.to_string()))?;
        let result = match vm.run(spec.script_run()).await {
            // A guest whose disk writes fail may hang in the kernel, so the
            // host's count of failed requests is watched while it runs.
            Ok(process) => tokio::select! {
                r = run_with_backstop(process, &sink, spec.timeout_ms) => r,
                why = disk_failed(vm.as_ref()) => Err(ExecError::Lost(why)),
            },
            Err(e) => Err(ExecError::Start(format!("cannot start the script: {e}"))),
        };
        // Writes the host failed (its disk full) fail the job, whatever
        // the script made of its I/O errors.
        let result = match result {
            Ok(exit) => Ok(ExitInfo {
                disk_trouble: vm.disk_trouble().await,
                ..exit
            }),
            Err(e) => Err(e),
        };
        // The job's outcome does not wait for the VM to power off, except
        // when its workspace is saved then: final means saved.
        let down = async move {
            if let Err(e) = vm.shutdown().await {
                tracing::warn!(error = %e, "sandbox shutdown failed");
            }
        };
        if job.workspace_id.is_some() || job.base_workspace_id.is_some() {
            down.await;
        } else {
            tokio::spawn(down);
        }
        result
    }

    /// Shows the job `queued` until the returned guard drops.
    async fn mark_queued(&self, job_id: &str) -> Count<'_> {
        let queued = Count::new(&self.queued);
        match self
            .store
            .set_waiting_status(job_id, JobState::Queued)
            .await
        {
            Ok(_) => self.followers.notify(job_id),
            Err(e) => tracing::warn!(error = %e, "cannot mark the job queued"),
        }
        queued
    }

    /// Waits for one of the user's VM slots; every second meanwhile, one
    /// of the user's idle sandboxes is put to sleep to make room.
    async fn user_slot(&self, user_id: &str) -> UserSlot {
        let wait = self.user_slots.acquire(user_id);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                slot = &mut wait => return slot,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    self.sandboxes.make_room_for(user_id).await;
                }
            }
        }
    }

    /// Ends a job in `error` with `reason` (also written to its log).
    async fn fail(&self, job_id: &str, reason: &str) {
        let (sink, writer) = OutputSink::start(self.store.clone(), self.followers.clone(), job_id);
        sink.system(&format!("error: {reason}")).await;
        drop(sink);
        if let Err(e) = writer.await {
            tracing::error!(error = %e, "output writer crashed");
        }
        self.store_final(job_id, &error_finish(reason.to_string()))
            .await;
    }

    /// Stores the final state (see [`store_final`]).
    async fn store_final(&self, job_id: &str, finish: &Finish) {
        store_final(&self.store, &self.followers, job_id, finish).await;
    }
}

/// How often a running one-shot job's disk error count is read.
const DISK_CHECK: Duration = Duration::from_secs(2);

/// Resolves once the host has failed a request to `vm`'s disk: the reason.
async fn disk_failed(vm: &dyn crate::executor::Vm) -> String {
    loop {
        tokio::time::sleep(DISK_CHECK).await;
        if let Some(why) = vm.disk_trouble().await {
            return why;
        }
    }
}

/// Stores a job's final state, retrying a few times (a job must not stay
/// live because the database hiccuped), then wakes its followers.
pub(crate) async fn store_final(
    store: &Store,
    followers: &Followers,
    job_id: &str,
    finish: &Finish,
) {
    for attempt in 1..=5u32 {
        match store.finish_job(job_id, finish).await {
            Ok(_) => break,
            Err(e) => {
                tracing::error!(error = %e, attempt, "cannot store the job's final state");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
        }
    }
    followers.notify(job_id);
}

/// `error` for a reason other than the script's exit.
pub(crate) fn error_finish(reason: String) -> Finish {
    Finish {
        status: JobState::Error,
        exit_code: None,
        error: Some(reason),
        script_duration_ms: None,
    }
}

/// How long past its timeout the host waits for the guest to report a
/// killed script before it gives up on the VM.
const TIMEOUT_GRACE: Duration = Duration::from_secs(30);

/// [`run_to_end`], bounded on the host too: the guest agent kills a script
/// at `timeout_ms`; if it has not said so [`TIMEOUT_GRACE`] later (a hung
/// guest), the run counts as timed out and the VM is shut down by the
/// caller.
async fn run_with_backstop(
    process: Box<dyn crate::executor::VmProcess>,
    sink: &OutputSink,
    timeout_ms: Option<u64>,
) -> Result<ExitInfo, ExecError> {
    let Some(ms) = timeout_ms else {
        return run_to_end(process, sink).await;
    };
    let started = std::time::Instant::now();
    match tokio::time::timeout(
        Duration::from_millis(ms) + TIMEOUT_GRACE,
        run_to_end(process, sink),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!("the guest did not end the timed-out script; stopping its VM");
            Ok(ExitInfo {
                exit_code: 137,
                timed_out: true,
                script_duration_ms: crate::executor::elapsed_ms(started),
                disk_trouble: None,
            })
        }
    }
}

/// The reason a job whose script ran past `timeout_secs` ends with.
pub(crate) fn timed_out_reason(timeout_secs: Option<u64>) -> String {
    match timeout_secs {
        Some(s) => format!("timed out after {s} s (the script was killed)"),
        None => "timed out (the script was killed)".into(),
    }
}

/// `completed` for exit 0, else `error` (with a reason for a timeout or
/// a disk the host failed).
fn finish_for_exit(exit: ExitInfo, timeout_secs: Option<u64>) -> Finish {
    let ok = exit.exit_code == 0 && !exit.timed_out && exit.disk_trouble.is_none();
    let error = match exit.disk_trouble {
        Some(why) => Some(why),
        None => exit.timed_out.then(|| timed_out_reason(timeout_secs)),
    };
    Finish {
        status: if ok {
            JobState::Completed
        } else {
            JobState::Error
        },
        exit_code: Some(exit.exit_code),
        error,
        script_duration_ms: Some(exit.script_duration_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_map_to_states() {
        let exit = |code, timed_out| ExitInfo {
            exit_code: code,
            timed_out,
            script_duration_ms: 5,
            disk_trouble: None,
        };
        assert_eq!(
            finish_for_exit(exit(0, false), None).status,
            JobState::Completed
        );
        let f = finish_for_exit(exit(2, false), Some(5));
        assert_eq!(
            (f.status, f.exit_code, f.error),
            (JobState::Error, Some(2), None)
        );
        let f = finish_for_exit(exit(137, true), Some(5));
        assert_eq!(f.status, JobState::Error);
        assert!(f.error.is_some());
        assert_eq!(
            f.error.as_deref(),
            Some("timed out after 5 s (the script was killed)")
        );
        let f = finish_for_exit(
            ExitInfo {
                disk_trouble: Some("the host's disk is full".into()),
                ..exit(0, false)
            },
            None,
        );
        assert_eq!(
            (f.status, f.exit_code, f.error.as_deref()),
            (JobState::Error, Some(0), Some("the host's disk is full"))
        );
        assert_ne!(
            f.error.as_deref(),
            Some("timed out after 5 s (the script was killed)")
        );
    }
}
