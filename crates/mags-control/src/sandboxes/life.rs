//! A sandbox's life: started (first, or afresh after a loss), woken,
//! slept, lost and ended. Whatever changes a [`Slot`] is handed its lock
//! (a [`SlotGuard`]) and keeps it until the slot and the database agree.

use super::{Busy, Entry, Permits, SandboxError, Shared, Slot};
use crate::executor::{bash, elapsed_ms, run_to_end, ExecError, ProcessEvent, Vm, VmProcess};
use crate::quota::UserSlot;
use crate::scheduler::{error_finish, store_final};
use futures::future::BoxFuture;
use mags_api::JobState;
use mags_store::{Finish, Job};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, OwnedMutexGuard, OwnedSemaphorePermit};
use tracing::Instrument as _;

pub(super) type SlotGuard = OwnedMutexGuard<Slot>;

/// How long a wake waits for a running slot (after trying to free one).
const WAKE_WAIT: Duration = Duration::from_secs(30);
/// How long a wake waits for the startup command before letting callers in.
const STARTUP_WAIT: Duration = Duration::from_secs(10);
/// A sandbox whose script started less than this long ago (and still
/// runs) is not replaced yet by a takeover: in a burst of jobs on one
/// workspace, each one's script gets to run.
pub const MIN_SCRIPT_RUN: Duration = Duration::from_secs(2);

/// How to wait for a running slot.
#[derive(Clone, Copy)]
enum Wait {
    /// As long as it takes (the job shows `queued`), unless stopped.
    Queue,
    Bounded(Duration),
}

/// Which VM of the job this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    First,
    /// A fresh VM replacing a lost one; the script runs again.
    Replace,
}

impl Shared {
    pub(super) fn launch(self: Arc<Self>, job: Job) {
        let span = tracing::info_span!("sandbox", job = %job.id);
        tokio::spawn(
            async move {
                let (entry, slot) = self.register(&job, Slot::Starting).await;
                self.start_into(entry, slot, Start::First).await;
            }
            .instrument(span),
        );
    }

    pub(super) fn recover(self: Arc<Self>, job: Job) {
        let span = tracing::info_span!("sandbox", job = %job.id);
        tokio::spawn(
            async move {
                let snapshot = job
                    .vm_id
                    .clone()
                    .filter(|v| self.executor.has_snapshot(v));
                if let Some(vm_id) = snapshot {
                    let (entry, _slot) = self.register(&job, Slot::Sleeping { vm_id }).await;
                    if job.status == JobState::Running {
                        if let Err(e) = self.store.mark_sleeping(&job.id).await {
                            tracing::error!(error = %e, "cannot mark the sandbox sleeping");
                        }
                        entry
                            .sink
                            .system("magsd restarted; the sandbox's sleep snapshot was kept: it wakes on demand")
                            .await;
                        entry.sink.flush().await;
                        self.followers.notify(&job.id);
                    }
                    tracing::info!("recovered a sleeping sandbox");
                    return;
                }
                let (entry, slot) = self.register(&job, Slot::Starting).await;
                let what = if job.status == JobState::Sleeping {
                    "the sandbox's sleep snapshot is missing"
                } else if job.workspace_id.is_some() {
                    "the sandbox's VM was lost with it (memory and processes are gone; the \
                     workspace's files are kept)"
                } else {
                    "the sandbox's VM was lost with it (memory, processes and files are gone)"
                };
                tracing::warn!("{what}; starting a fresh sandbox");
                entry
                    .sink
                    .system(&format!("magsd restarted and {what}; starting a fresh sandbox"))
                    .await;
                entry.sink.flush().await;
                self.start_into(entry, slot, Start::Replace).await;
            }
            .instrument(span),
        );
    }

    /// A sandbox whose host was lost, just claimed by this host:
    /// registered now (callers wait on its slot), started again in the
    /// background with its script (from its workspace's last synced
    /// version).
    pub(super) async fn come_back(self: &Arc<Self>, job: Job) -> Arc<Entry> {
        let span = tracing::info_span!("sandbox", job = %job.id);
        let (entry, slot) = self.register(&job, Slot::Starting).await;
        let here = self
            .store
            .owner()
            .map_or_else(|| "this host".to_string(), |o| format!("host {}", o.host));
        let (this, e) = (self.clone(), entry.clone());
        tokio::spawn(
            async move {
                tracing::warn!("starting a sandbox whose host was lost");
                e.sink
                    .system(&format!("starting the sandbox again on {here}"))
                    .await;
                e.sink.flush().await;
                this.start_into(e, slot, Start::Replace).await;
            }
            .instrument(span),
        );
        entry
    }

    /// Ends a sandbox this host claimed from a lost host without starting
    /// it again (a stop, or a takeover of its workspace): no VM runs, so
    /// there is nothing to save.
    async fn end_adopted(&self, job: &Job, replaced_by: Option<(&str, &str)>) {
        let (sink, writer) =
            crate::sink::OutputSink::start(self.store.clone(), self.followers.clone(), &job.id);
        let line = match replaced_by {
            None => "stopped on request".to_string(),
            Some((by, ws)) => format!("replaced by job {by}, which took workspace {ws} over"),
        };
        sink.system(&line).await;
        drop(sink);
        if let Err(e) = writer.await {
            tracing::error!(error = %e, "output writer crashed");
        }
        let finish = Finish {
            status: JobState::Completed,
            exit_code: job.exit_code,
            error: None,
            script_duration_ms: job.script_duration_ms,
        };
        store_final(&self.store, &self.followers, &job.id, &finish).await;
    }

    /// Gets a running slot, starts a VM and the script in it; if that
    /// fails, the job ends in `error`.
    async fn start_into(self: &Arc<Self>, entry: Arc<Entry>, mut slot: SlotGuard, how: Start) {
        let permit = match self.permit(&entry, Wait::Queue).await {
            Ok(p) => p,
            Err(e) => {
                let reason = match e {
                    SandboxError::Stopped => "stopped before it started".to_string(),
                    other => other.to_string(),
                };
                entry.sink.system(&format!("error: {reason}")).await;
                self.end(&entry, slot, error_finish(reason)).await;
                return;
            }
        };
        match self.start_vm(&entry, how).await {
            Ok(vm) => {
                tracing::info!(vm = vm.id(), ?how, "sandbox running");
                *slot = Slot::Running {
                    vm,
                    _permit: permit,
                };
            }
            Err(e) => {
                tracing::warn!(error = %e, "sandbox failed to start");
                entry.sink.system(&format!("error: {e}")).await;
                self.end(&entry, slot, error_finish(e.to_string())).await;
            }
        }
    }

    async fn start_vm(
        self: &Arc<Self>,
        entry: &Arc<Entry>,
        how: Start,
    ) -> Result<Arc<dyn Vm>, ExecError> {
        if self.closing.load(Ordering::SeqCst) {
            return Err(ExecError::Start("the server is shutting down".into()));
        }
        let vm = self.executor.start(&entry.spec).await?;
        let id = &entry.job_id;
        let marked = match how {
            Start::First => self.store.mark_running(id, vm.id()).await,
            Start::Replace => match self.store.record_script_exit(id, None).await {
                Ok(_) => self.store.mark_awake(id, vm.id()).await,
                Err(e) => Err(e),
            },
        };
        if let Err(e) = marked {
            retire(vm);
            return Err(ExecError::Start(e.to_string()));
        }
        self.followers.notify(id);
        entry.touch();
        let script = entry.spec.script_run();
        match vm.run(script).await {
            Ok(process) => {
                entry.script_running.store(true, Ordering::SeqCst);
                *super::lock(&entry.script_started) = Some(Instant::now());
                tokio::spawn(self.clone().follow_script(entry.clone(), process));
                Ok(vm)
            }
            Err(e) => {
                retire(vm);
                Err(ExecError::Start(format!("cannot start the script: {e}")))
            }
        }
    }

    /// Records the script's output, and its exit while the job stays live.
    async fn follow_script(self: Arc<Self>, entry: Arc<Entry>, process: Box<dyn VmProcess>) {
        self.record_script(&entry, process).await;
        entry.script_running.store(false, Ordering::SeqCst);
        // Idle from now on: the script (if it was followed) kept it up.
        entry.touch();
    }

    async fn record_script(&self, entry: &Entry, mut process: Box<dyn VmProcess>) {
        let started = Instant::now();
        loop {
            match process.next_event().await {
                Ok(Some(ProcessEvent::Stdout(b))) => entry.sink.stdout(b).await,
                Ok(Some(ProcessEvent::Stderr(b))) => entry.sink.stderr(b).await,
                Ok(Some(ProcessEvent::Exited {
                    code, timed_out, ..
                })) => {
                    let how = if timed_out {
                        let secs = entry.spec.timeout_ms.map(|ms| ms / 1000);
                        format!(
                            "script {} (exit code {code})",
                            crate::scheduler::timed_out_reason(secs)
                        )
                    } else {
                        format!("script exited with code {code}")
                    };
                    entry
                        .sink
                        .system(&format!("{how}; the sandbox stays up until stopped"))
                        .await;
                    entry.sink.flush().await;
                    let exit = Some((code, elapsed_ms(started)));
                    if let Err(e) = self.store.record_script_exit(&entry.job_id, exit).await {
                        tracing::error!(error = %e, "cannot record the script's exit");
                    }
                    self.followers.notify(&entry.job_id);
                    return;
                }
                // The VM slept, stopped or died under the script: what it
                // does from now on is not recorded.
                Ok(None) | Err(_) => return,
            }
        }
    }

    /// What a running sandbox holds: one of its user's VM slots, then a
    /// server-wide running slot; each free, freed by sleeping an idle
    /// sandbox (of the same user, for the user's), or waited for.
    async fn permit(self: &Arc<Self>, entry: &Entry, wait: Wait) -> Result<Permits, SandboxError> {
        let user = self.user_permit(entry, wait).await?;
        let server = self.server_permit(entry, wait).await?;
        Ok(Permits {
            _user: user,
            _server: server,
        })
    }

    /// One of the entry's user's VM slots.
    async fn user_permit(
        self: &Arc<Self>,
        entry: &Entry,
        wait: Wait,
    ) -> Result<UserSlot, SandboxError> {
        let user = Some(entry.user_id.as_str());
        loop {
            if let Some(p) = self.user_slots.try_acquire(&entry.user_id) {
                return Ok(p);
            }
            if !self.evict_one(&entry.job_id, user).await {
                break;
            }
        }
        let acquire = self.user_slots.acquire(&entry.user_id);
        match wait {
            Wait::Bounded(d) => tokio::time::timeout(d, acquire)
                .await
                .map_err(|_| SandboxError::UserBusy(self.user_slots.max())),
            Wait::Queue => {
                self.show_queued(entry).await;
                tokio::pin!(acquire);
                loop {
                    tokio::select! {
                        p = &mut acquire => return Ok(p),
                        _ = entry.stopped() => return Err(SandboxError::Stopped),
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {
                            self.evict_one(&entry.job_id, user).await;
                        }
                    }
                }
            }
        }
    }

    async fn show_queued(&self, entry: &Entry) {
        if let Ok(true) = self
            .store
            .set_waiting_status(&entry.job_id, JobState::Queued)
            .await
        {
            self.followers.notify(&entry.job_id);
        }
    }

    /// A server-wide running slot.
    async fn server_permit(
        self: &Arc<Self>,
        entry: &Entry,
        wait: Wait,
    ) -> Result<OwnedSemaphorePermit, SandboxError> {
        loop {
            if let Ok(p) = self.permits.clone().try_acquire_owned() {
                return Ok(p);
            }
            if !self.evict_one(&entry.job_id, None).await {
                break;
            }
        }
        let busy = || SandboxError::Busy(self.cfg.max_running);
        match wait {
            Wait::Bounded(d) => tokio::time::timeout(d, self.permits.clone().acquire_owned())
                .await
                .ok()
                .and_then(Result::ok)
                .ok_or_else(busy),
            Wait::Queue => {
                self.show_queued(entry).await;
                loop {
                    tokio::select! {
                        p = self.permits.clone().acquire_owned() => return p.map_err(|_| busy()),
                        _ = entry.stopped() => return Err(SandboxError::Stopped),
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {
                            self.evict_one(&entry.job_id, None).await;
                        }
                    }
                }
            }
        }
    }

    /// Sandboxes that may be slept to make room, least recently used
    /// first: not `except`, not busy, not `no_sleep`, of `user` if given.
    pub(super) fn sleep_candidates(&self, except: &str, user: Option<&str>) -> Vec<Arc<Entry>> {
        let mut candidates: Vec<Arc<Entry>> = self
            .entries()
            .into_iter()
            .filter(|e| {
                e.job_id != except
                    && user.is_none_or(|u| e.user_id == u)
                    && !self.in_use(e)
                    && !e.settings().no_sleep
            })
            .collect();
        candidates.sort_by_key(|e| std::cmp::Reverse(e.idle_for()));
        candidates
    }

    /// Sleeps the least recently used running sandbox that may sleep (see
    /// [`Shared::sleep_candidates`]); whether one was put away.
    pub(super) async fn evict_one(self: &Arc<Self>, except: &str, user: Option<&str>) -> bool {
        for e in self.sleep_candidates(except, user) {
            let Ok(slot) = e.slot.clone().try_lock_owned() else {
                continue;
            };
            if !matches!(*slot, Slot::Running { .. }) || self.in_use(&e) {
                continue;
            }
            tracing::info!(job = %e.job_id, "sleeping an idle sandbox to make room");
            self.sleep_now(&e, slot, "to make room for another sandbox")
                .await;
            return true;
        }
        false
    }

    /// Puts a running sandbox to sleep. If that fails the VM is gone: the
    /// sandbox is handled as lost (in the background).
    pub(super) async fn sleep_now(
        self: &Arc<Self>,
        entry: &Arc<Entry>,
        mut slot: SlotGuard,
        why: &str,
    ) {
        let prev = std::mem::replace(&mut *slot, Slot::Gone);
        let Slot::Running { vm, _permit } = prev else {
            *slot = prev;
            return;
        };
        let t0 = Instant::now();
        let result = vm.sleep().await;
        drop(_permit);
        match result {
            Ok(()) => {
                let ms = t0.elapsed().as_millis();
                tracing::info!(job = %entry.job_id, ms, why, "sandbox asleep");
                *slot = Slot::Sleeping {
                    vm_id: vm.id().to_string(),
                };
                // The line first: a follower that stops at `sleeping` (as
                // `mags run -p` does) sees it.
                entry
                    .sink
                    .system(&format!("sandbox asleep ({why}; snapshot in {ms} ms)"))
                    .await;
                entry.sink.flush().await;
                if let Err(e) = self.store.mark_sleeping(&entry.job_id).await {
                    tracing::error!(error = %e, "cannot mark the sandbox sleeping");
                }
                self.followers.notify(&entry.job_id);
            }
            // At shutdown the job stays `running`; the next start replaces the VM.
            Err(e) if self.closing.load(Ordering::SeqCst) => {
                tracing::warn!(job = %entry.job_id, error = %e, "cannot sleep the sandbox at shutdown");
            }
            Err(e) => {
                tokio::spawn(self.clone().lost(entry.clone(), slot, e.to_string()));
            }
        }
    }

    /// The VM died (or could not be slept): a `no_sleep` sandbox gets a
    /// fresh one, others end in `error`. Boxed: it may start a VM, which
    /// may sleep another sandbox, which may be lost.
    pub(super) fn lost(
        self: Arc<Self>,
        entry: Arc<Entry>,
        mut slot: SlotGuard,
        reason: String,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            if let Slot::Running { vm, .. } = std::mem::replace(&mut *slot, Slot::Gone) {
                retire(vm);
            }
            tracing::warn!(job = %entry.job_id, %reason, "sandbox lost");
            if entry.settings().no_sleep && !self.closing.load(Ordering::SeqCst) {
                entry
                    .sink
                    .system(&format!(
                        "the sandbox's VM was lost ({reason}); no_sleep is set, so a fresh \
                         sandbox starts (files and processes from before are gone)"
                    ))
                    .await;
                entry.sink.flush().await;
                *slot = Slot::Starting;
                self.start_into(entry, slot, Start::Replace).await;
            } else {
                let reason = format!("the sandbox's VM was lost: {reason}");
                entry.sink.system(&format!("error: {reason}")).await;
                self.end(&entry, slot, error_finish(reason)).await;
            }
        })
    }

    /// Ends the job with `finish` and forgets the sandbox.
    async fn end(&self, entry: &Entry, mut slot: SlotGuard, finish: Finish) {
        *slot = Slot::Gone;
        entry.sink.flush().await;
        store_final(&self.store, &self.followers, &entry.job_id, &finish).await;
        self.unregister(&entry.job_id);
    }

    /// Wakes a sleeping sandbox (no-op otherwise), then runs its startup
    /// command. On failure the snapshot is kept and the sandbox stays asleep.
    pub(super) async fn wake_into(
        self: &Arc<Self>,
        entry: &Arc<Entry>,
        slot: &mut SlotGuard,
    ) -> Result<(), SandboxError> {
        let Slot::Sleeping { vm_id } = &**slot else {
            return Ok(());
        };
        let vm_id = vm_id.clone();
        if self.closing.load(Ordering::SeqCst) {
            return Err(SandboxError::Unavailable(
                "the server is shutting down".into(),
            ));
        }
        let permit = self.permit(entry, Wait::Bounded(WAKE_WAIT)).await?;
        let t0 = Instant::now();
        let vm = match self.executor.wake(&vm_id).await {
            Ok(vm) => vm,
            Err(e) => {
                tracing::warn!(job = %entry.job_id, error = %e, "wake failed");
                entry
                    .sink
                    .system(&format!("{e}; the sandbox stays asleep"))
                    .await;
                return Err(SandboxError::Unavailable(format!(
                    "{e}; the sandbox stays asleep, try again"
                )));
            }
        };
        let ms = t0.elapsed().as_millis();
        tracing::info!(job = %entry.job_id, ms, "sandbox woke");
        if let Err(e) = self.store.mark_awake(&entry.job_id, vm.id()).await {
            tracing::error!(error = %e, "cannot mark the sandbox running");
        }
        entry.touch();
        **slot = Slot::Running {
            vm: vm.clone(),
            _permit: permit,
        };
        entry.sink.system(&format!("sandbox woke in {ms} ms")).await;
        self.followers.notify(&entry.job_id);
        if let Some(cmd) = entry.settings().startup_command {
            self.run_startup(entry, &vm, &cmd).await;
        }
        // Whoever the wake was for sees its lines in the log right away.
        entry.sink.flush().await;
        Ok(())
    }

    /// Runs the startup command after a wake, its output into the job's
    /// log; waits for it a little, so quick ones finish before callers go on.
    async fn run_startup(&self, entry: &Arc<Entry>, vm: &Arc<dyn Vm>, cmd: &str) {
        entry
            .sink
            .system(&format!("running the startup command: {cmd}"))
            .await;
        let process = match vm.run(bash(cmd, &entry.spec.environment, None)).await {
            Ok(p) => p,
            Err(e) => {
                entry
                    .sink
                    .system(&format!("the startup command could not start: {e}"))
                    .await;
                return;
            }
        };
        let sink = entry.sink.clone();
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            // Cut short by a sleep or stop: nothing more to say.
            if let Ok(exit) = run_to_end(process, &sink).await {
                sink.system(&format!(
                    "the startup command exited with code {}",
                    exit.exit_code
                ))
                .await;
            }
            let _ = tx.send(());
        });
        if tokio::time::timeout(STARTUP_WAIT, rx).await.is_err() {
            entry
                .sink
                .system("the startup command is still running; carrying on")
                .await;
        }
    }

    /// The running VM of a sandbox, woken first if needed, marked busy.
    pub(super) async fn acquire(
        self: &Arc<Self>,
        entry: &Arc<Entry>,
    ) -> Result<(Arc<dyn Vm>, Busy), SandboxError> {
        entry.touch();
        let mut slot = entry.slot.clone().lock_owned().await;
        self.wake_into(entry, &mut slot).await?;
        match &*slot {
            Slot::Running { vm, .. } if vm.is_alive() => Ok((vm.clone(), entry.busy())),
            Slot::Running { .. } => Err(SandboxError::Unavailable(
                "the sandbox's VM stopped unexpectedly; see its logs".into(),
            )),
            Slot::Starting | Slot::Sleeping { .. } => Err(SandboxError::Unavailable(
                "the sandbox is being restarted; try again shortly".into(),
            )),
            Slot::Gone => Err(SandboxError::Stopped),
        }
    }

    pub(super) async fn stop(&self, job_id: &str) -> Result<(), SandboxError> {
        self.end_on_request(job_id, None).await
    }

    /// Replaces the sandbox of `job_id` by job `by` on workspace `ws`:
    /// like a stop (its files saved by the final save after power-off), but
    /// refused with [`SandboxError::Starting`] while it starts or while its
    /// script has run less than [`MIN_SCRIPT_RUN`], and its log names `by`.
    pub(super) async fn replace(
        &self,
        job_id: &str,
        by: &str,
        ws: &str,
    ) -> Result<(), SandboxError> {
        let entry = self.live_entry(job_id)?;
        let not_yet = || SandboxError::Starting {
            id: job_id.to_string(),
            status: JobState::Running,
        };
        {
            let slot = entry.slot.clone().lock_owned().await;
            if matches!(*slot, Slot::Starting) {
                return Err(not_yet());
            }
        }
        let young =
            super::lock(&entry.script_started).is_some_and(|t| t.elapsed() < MIN_SCRIPT_RUN);
        if young && entry.script_running.load(Ordering::SeqCst) {
            return Err(not_yet());
        }
        self.end_on_request(job_id, Some((by, ws))).await
    }

    /// Ends the sandbox on request: a stop (`replaced_by` none: the guest
    /// is synced, then shut down) or a takeover by another job.
    async fn end_on_request(
        &self,
        job_id: &str,
        replaced_by: Option<(&str, &str)>,
    ) -> Result<(), SandboxError> {
        let entry = match self.live_entry(job_id) {
            Ok(e) => e,
            // A sandbox whose host was lost has no VM to stop: it ends.
            Err(unknown) => match self.adopt(job_id).await? {
                Some(job) => {
                    self.end_adopted(&job, replaced_by).await;
                    return Ok(());
                }
                None => return Err(unknown),
            },
        };
        entry.request_stop();
        let mut slot = entry.slot.clone().lock_owned().await;
        let (status, error) = match std::mem::replace(&mut *slot, Slot::Gone) {
            Slot::Running { vm, _permit } => {
                // A takeover skips the live sync: the final save after the
                // power-off (which flushes the guest) stores the same files.
                let synced = match replaced_by {
                    None => vm.sync().await,
                    Some(_) => Ok(()),
                };
                let r = match synced {
                    Ok(()) => vm.shutdown().await,
                    Err(e) => {
                        retire(vm);
                        Err(e)
                    }
                };
                match r {
                    Ok(()) => (JobState::Completed, None),
                    Err(e) => (
                        JobState::Error,
                        Some(format!("could not stop cleanly: {e}")),
                    ),
                }
            }
            Slot::Sleeping { vm_id } => {
                self.executor.discard_snapshot(&vm_id);
                (JobState::Completed, None)
            }
            Slot::Starting => (JobState::Error, Some("stopped before it started".into())),
            // Ended meanwhile.
            Slot::Gone => return Ok(()),
        };
        let job = self.store.job(job_id).await?;
        let line = match (&error, replaced_by) {
            (None, None) => "stopped on request".to_string(),
            (None, Some((by, ws))) => format!(
                "replaced by job {by}, which took workspace {ws} over: this sandbox's files \
                 were saved and it was stopped"
            ),
            (Some(e), _) => format!("error: {e}"),
        };
        entry.sink.system(&line).await;
        let finish = Finish {
            status,
            exit_code: job.as_ref().and_then(|j| j.exit_code),
            error,
            script_duration_ms: job.as_ref().and_then(|j| j.script_duration_ms),
        };
        self.end(&entry, slot, finish).await;
        tracing::info!(job = job_id, %status, replaced_by = ?replaced_by.map(|r| r.0), "sandbox stopped");
        Ok(())
    }

    pub(super) async fn sync(&self, job_id: &str) -> Result<(), SandboxError> {
        let entry = self.live_entry(job_id)?;
        entry.touch();
        let slot = entry.slot.clone().lock_owned().await;
        match &*slot {
            Slot::Running { vm, .. } => vm
                .sync()
                .await
                .map_err(|e| SandboxError::Unavailable(e.to_string())),
            Slot::Sleeping { .. } => Ok(()),
            Slot::Starting => Err(SandboxError::Unavailable(
                "the sandbox is being restarted; try again shortly".into(),
            )),
            Slot::Gone => Err(SandboxError::Stopped),
        }
    }

    pub(super) async fn sleep_all(self: &Arc<Self>, within: Duration) {
        self.closing.store(true, Ordering::SeqCst);
        let work = async {
            for entry in self.entries() {
                let slot = entry.slot.clone().lock_owned().await;
                if matches!(*slot, Slot::Running { .. }) {
                    self.sleep_now(&entry, slot, "magsd is shutting down").await;
                }
            }
        };
        if tokio::time::timeout(within, work).await.is_err() {
            tracing::warn!("not every sandbox could be put to sleep before shutdown");
        }
    }
}

/// Shuts a VM down in the background (it may already be dead).
fn retire(vm: Arc<dyn Vm>) {
    tokio::spawn(async move {
        if let Err(e) = vm.shutdown().await {
            tracing::debug!(error = %e, "shutting down a VM that is gone");
        }
    });
}
