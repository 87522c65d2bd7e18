//! Workspace takeover: a new job on a workspace whose job is live never
//! gets a 409; it takes the workspace over.
//!
//! One live job per workspace stays a fact of the database
//! (`workspaces.live_job_id`, claimed atomically by
//! [`mags_store::Store::claim_workspace`]). A job whose claim fails waits
//! `accepted` in its workspace's queue, in the order jobs were submitted;
//! one task per busy workspace works through that queue. For the job in
//! front it looks at the holder:
//! - a live persistent sandbox is replaced ([`Sandboxes::replace`]): its
//!   files are saved (a synced workspace gets a new version, a local one
//!   keeps its disk), it is stopped, its job ends `completed` with a log
//!   line naming the new job; a sandbox still starting, or whose script
//!   started less than [`crate::sandboxes::MIN_SCRIPT_RUN`] ago, is waited
//!   for first, so every job of a burst gets to run its script;
//! - a one-shot job (or one not yet started) is waited for until it ends.
//!
//! Then the claim is taken and the job goes to the scheduler; its VM starts
//! on the workspace's disk once the previous lease's final save is done
//! (the workspace lock), with its own settings. Admission (claim or queue)
//! and the workers' claims go through one async lock, so a job submitted
//! while others wait never overtakes them.

use crate::sandboxes::{SandboxError, Sandboxes};
use crate::scheduler::{error_finish, store_final, Scheduler};
use crate::sink::Followers;
use mags_api::JobState;
use mags_store::{Job, Store, StoreError};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often a waiting takeover looks at the workspace's holder again.
const POLL: Duration = Duration::from_millis(200);

/// The takeover queues of this server; cheap to clone.
#[derive(Clone)]
pub struct Takeovers {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    scheduler: Scheduler,
    sandboxes: Sandboxes,
    followers: Followers,
    /// Jobs waiting for a workspace, by `<user id>/<workspace>`; a key is
    /// present while its worker runs.
    queues: Mutex<HashMap<String, VecDeque<Job>>>,
    /// Serializes claims: admission and the workers'.
    admission: tokio::sync::Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn key(user_id: &str, ws: &str) -> String {
    format!("{user_id}/{ws}")
}

impl Takeovers {
    pub fn new(
        store: Store,
        scheduler: Scheduler,
        sandboxes: Sandboxes,
        followers: Followers,
    ) -> Takeovers {
        Takeovers {
            inner: Arc::new(Inner {
                store,
                scheduler,
                sandboxes,
                followers,
                queues: Mutex::default(),
                admission: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Hands a stored, `accepted` job to the scheduler: at once if it has
    /// no workspace or its claim succeeds, else after the workspace's
    /// current job and every job queued before it (see the module docs).
    pub async fn submit(&self, job: Job) -> Result<(), StoreError> {
        let Some(ws) = job.workspace_id.clone() else {
            self.inner.scheduler.submit(job);
            return Ok(());
        };
        let k = key(&job.user_id, &ws);
        let _admission = self.inner.admission.lock().await;
        if let Some(q) = lock(&self.inner.queues).get_mut(&k) {
            q.push_back(job);
            return Ok(());
        }
        let holder = self
            .inner
            .store
            .claim_workspace(&job.user_id, &ws, &job.id)
            .await?;
        match holder {
            None => self.inner.scheduler.submit(job),
            Some(holder) => {
                tracing::info!(job = %job.id, %holder, workspace = %ws, "taking the workspace over");
                lock(&self.inner.queues).insert(k.clone(), VecDeque::from([job]));
                tokio::spawn(self.inner.clone().work(k));
            }
        }
        Ok(())
    }

    /// Takes a waiting job out of its queue (it is being stopped); whether
    /// it was waiting. The caller records its end.
    pub fn cancel(&self, job_id: &str) -> bool {
        let mut queues = lock(&self.inner.queues);
        for q in queues.values_mut() {
            // The front job is the worker's: it notices the final status.
            if let Some(i) = q.iter().skip(1).position(|j| j.id == job_id) {
                q.remove(i + 1);
                return true;
            }
            if q.front().is_some_and(|j| j.id == job_id) {
                return true;
            }
        }
        false
    }

    /// Whether `job_id` waits for a workspace here.
    pub fn is_waiting(&self, job_id: &str) -> bool {
        lock(&self.inner.queues)
            .values()
            .any(|q| q.iter().any(|j| j.id == job_id))
    }

    /// Ends a waiting job that is being stopped: out of its queue, final
    /// `error` ("stopped before it started"). False if it was not waiting.
    pub async fn stop(&self, job_id: &str) -> bool {
        if !self.cancel(job_id) {
            return false;
        }
        let finish = error_finish("stopped before it started".into());
        store_final(&self.inner.store, &self.inner.followers, job_id, &finish).await;
        true
    }

    /// After a restart: the jobs left `accepted`/`queued` on a workspace
    /// they do not hold, in the order they were created, queue again.
    pub async fn resume(&self, jobs: Vec<Job>) -> Result<(), StoreError> {
        for job in jobs {
            self.submit(job).await?;
        }
        Ok(())
    }
}

impl Inner {
    /// Works through the queue `k` until it is empty.
    async fn work(self: Arc<Self>, k: String) {
        loop {
            let front = lock(&self.queues).get(&k).and_then(|q| q.front().cloned());
            let Some(job) = front else {
                lock(&self.queues).remove(&k);
                return;
            };
            self.take_over(&job).await;
            let _admission = self.admission.lock().await;
            let mut queues = lock(&self.queues);
            if let Some(q) = queues.get_mut(&k) {
                if q.front().is_some_and(|j| j.id == job.id) {
                    q.pop_front();
                }
                if q.is_empty() {
                    queues.remove(&k);
                    return;
                }
            }
        }
    }

    /// Returns once `job` holds its workspace and went to the scheduler,
    /// or ended (stopped while it waited).
    async fn take_over(&self, job: &Job) {
        let Some(ws) = job.workspace_id.as_deref() else {
            return;
        };
        let mut waiting_for = None;
        loop {
            let holder = {
                let _admission = self.admission.lock().await;
                match self.store.job(&job.id).await {
                    Ok(Some(j)) if !j.status.is_final() => {}
                    Ok(_) => return, // stopped (or removed) while it waited
                    Err(e) => {
                        tracing::warn!(job = %job.id, error = %e, "takeover: cannot read the job");
                        drop(_admission);
                        tokio::time::sleep(POLL).await;
                        continue;
                    }
                }
                match self.store.claim_workspace(&job.user_id, ws, &job.id).await {
                    Ok(None) => {
                        self.scheduler.submit(job.clone());
                        return;
                    }
                    Ok(Some(holder)) => holder,
                    Err(e) => {
                        tracing::warn!(job = %job.id, error = %e, "takeover: cannot claim");
                        String::new()
                    }
                }
            };
            if !holder.is_empty() && self.replace(&holder, job, ws).await {
                continue;
            }
            if waiting_for.as_deref() != Some(holder.as_str()) {
                tracing::info!(job = %job.id, %holder, workspace = ws, "waiting for the workspace's job");
                waiting_for = Some(holder);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Replaces the holder if it is a live persistent sandbox ready to be
    /// replaced; whether it was (false: wait and look again).
    async fn replace(&self, holder: &str, job: &Job, ws: &str) -> bool {
        let h = match self.store.job(holder).await {
            Ok(Some(h)) => h,
            _ => return false,
        };
        let live_sandbox =
            h.persistent && matches!(h.status, JobState::Running | JobState::Sleeping);
        if !live_sandbox {
            return false;
        }
        match self.sandboxes.replace(&h.id, &job.id, ws).await {
            Ok(()) => {
                tracing::info!(job = %job.id, replaced = %h.id, workspace = ws, "workspace taken over");
                true
            }
            Err(SandboxError::Starting { .. }) => false,
            Err(e) => {
                tracing::warn!(job = %job.id, holder = %h.id, error = %e, "takeover: cannot replace the sandbox yet");
                false
            }
        }
    }
}
