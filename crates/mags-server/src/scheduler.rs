//! Runs accepted jobs in the background, at most `max_vms` at a time.
//!
//! A job stays `accepted` until the [`Executor`] reports its VM up
//! (`running`); a job that has to wait for a free slot is `queued`
//! meanwhile. When the executor returns, all output is flushed first and
//! then the final state is stored (`completed` for exit 0, else `error`),
//! so a follower that sees the final state has seen all output.

use crate::executor::{ExecError, Executor, ExitInfo, JobSpec};
use crate::sink::{Followers, OutputSink};
use mags_api::JobState;
use mags_store::{Finish, Job, Store};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
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
    slots: Arc<Semaphore>,
    max: u32,
    busy: AtomicU32,
    queued: AtomicU32,
}

impl Scheduler {
    /// A scheduler running at most `max_vms` jobs at once.
    pub fn new(
        store: Store,
        executor: Arc<dyn Executor>,
        followers: Followers,
        max_vms: u32,
    ) -> Self {
        let max = max_vms.max(1);
        Scheduler {
            inner: Arc::new(Inner {
                store,
                executor,
                followers,
                slots: Arc::new(Semaphore::new(max as usize)),
                max,
                busy: AtomicU32::new(0),
                queued: AtomicU32::new(0),
            }),
        }
    }

    /// Starts running `job` in the background.
    pub fn submit(&self, job: Job) {
        let inner = self.inner.clone();
        let span = tracing::info_span!("job", id = %job.id);
        tokio::spawn(async move { inner.run_job(job).await }.instrument(span));
    }

    /// Current load.
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

    /// Ends jobs a previous server process left mid-run (they are `error`,
    /// with the reason in their log) and re-queues those it had not started.
    pub async fn recover(&self) -> Result<(), mags_store::StoreError> {
        let store = &self.inner.store;
        for job in store
            .jobs_in_states(&[JobState::Running, JobState::Sleeping])
            .await?
        {
            let reason = "server restarted while the job was running";
            tracing::warn!(job = %job.id, "{reason}");
            self.inner.fail(&job.id, reason).await;
        }
        for job in store
            .jobs_in_states(&[JobState::Accepted, JobState::Queued])
            .await?
        {
            tracing::info!(job = %job.id, "re-queueing a job accepted before a restart");
            self.submit(job);
        }
        Ok(())
    }
}

impl Inner {
    async fn run_job(self: Arc<Self>, job: Job) {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                self.queued.fetch_add(1, Ordering::Relaxed);
                match self
                    .store
                    .set_waiting_status(&job.id, JobState::Queued)
                    .await
                {
                    Ok(_) => self.followers.notify(&job.id),
                    Err(e) => tracing::warn!(error = %e, "cannot mark the job queued"),
                }
                let p = self.slots.clone().acquire_owned().await;
                self.queued.fetch_sub(1, Ordering::Relaxed);
                match p {
                    Ok(p) => p,
                    // The semaphore is never closed.
                    Err(_) => return,
                }
            }
        };
        self.busy.fetch_add(1, Ordering::Relaxed);
        tracing::info!("starting");

        let (sink, writer) = OutputSink::start(self.store.clone(), self.followers.clone(), &job.id);
        let spec = JobSpec {
            id: job.id.clone(),
            script: job.script.clone(),
            environment: job.environment.clone(),
            disk_gb: job.disk_gb,
            timeout_ms: None,
        };
        let executor = self.executor.clone();
        let run_sink = sink.clone();
        // Its own task, so a panicking executor fails the job instead of
        // leaving it `accepted` forever.
        let result =
            tokio::spawn(async move { executor.run(spec, run_sink).await }.in_current_span())
                .await
                .unwrap_or_else(|e| Err(ExecError::Lost(format!("executor crashed: {e}"))));

        let finish = match result {
            Ok(exit) => finish_for_exit(exit),
            Err(e) => {
                tracing::warn!(error = %e, "job failed");
                sink.system(&format!("error: {e}")).await;
                Finish {
                    status: JobState::Error,
                    exit_code: None,
                    error: Some(e.to_string()),
                    script_duration_ms: None,
                }
            }
        };
        drop(sink);
        if let Err(e) = writer.await {
            tracing::error!(error = %e, "output writer crashed");
        }
        self.store_final(&job.id, &finish).await;
        tracing::info!(status = %finish.status, exit_code = ?finish.exit_code, "finished");
        self.busy.fetch_sub(1, Ordering::Relaxed);
        drop(permit);
    }

    /// Ends a job in `error` with `reason` (also written to its log).
    async fn fail(&self, job_id: &str, reason: &str) {
        let (sink, writer) = OutputSink::start(self.store.clone(), self.followers.clone(), job_id);
        sink.system(&format!("error: {reason}")).await;
        drop(sink);
        if let Err(e) = writer.await {
            tracing::error!(error = %e, "output writer crashed");
        }
        let finish = Finish {
            status: JobState::Error,
            exit_code: None,
            error: Some(reason.to_string()),
            script_duration_ms: None,
        };
        self.store_final(job_id, &finish).await;
    }

    /// Stores the final state, retrying a few times (a job must not stay
    /// `running` because the database hiccuped), then wakes followers.
    async fn store_final(&self, job_id: &str, finish: &Finish) {
        for attempt in 1..=5u32 {
            match self.store.finish_job(job_id, finish).await {
                Ok(_) => break,
                Err(e) => {
                    tracing::error!(error = %e, attempt, "cannot store the job's final state");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
            }
        }
        self.followers.notify(job_id);
    }
}

/// `completed` for exit 0, else `error` (with a reason for timeouts).
fn finish_for_exit(exit: ExitInfo) -> Finish {
    let ok = exit.exit_code == 0 && !exit.timed_out;
    Finish {
        status: if ok {
            JobState::Completed
        } else {
            JobState::Error
        },
        exit_code: Some(exit.exit_code),
        error: exit.timed_out.then(|| "the script timed out".to_string()),
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
        };
        assert_eq!(finish_for_exit(exit(0, false)).status, JobState::Completed);
        let f = finish_for_exit(exit(2, false));
        assert_eq!(
            (f.status, f.exit_code, f.error),
            (JobState::Error, Some(2), None)
        );
        let f = finish_for_exit(exit(137, true));
        assert_eq!(f.status, JobState::Error);
        assert!(f.error.is_some());
    }
}
