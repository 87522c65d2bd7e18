//! What Mags does, with no HTTP in it: the control layer that the API
//! (`mags-server`), cron, browser sessions, the SSH gateway, the URL proxy
//! and the operator commands all call.
//!
//! [`Control`] is the handle: cheap to clone, built once by
//! [`Control::with_workspaces`] (or its shorter forms). Its typed entry
//! points ([`Control::submit`], ...) return errors that say why in types
//! (each module has its own `thiserror` enum); the server maps them to
//! HTTP statuses in one place, cron to skip-or-fail.
//!
//! - [`error`]: [`ControlError`], any module's error, for an edge to map
//!   in one place.
//! - [`jobs`]: job admission (validate, check limits, store, schedule).
//! - [`scheduler`]: runs accepted jobs with a concurrency limit through an
//!   [`executor::Executor`] ([`executor::vm`] for real, [`executor::fake`]
//!   for tests), writing output through [`sink`].
//! - [`sandboxes`]: the VMs of persistent jobs: exec, sleep when idle,
//!   wake on demand, stop; and the seam the SSH gateway connects through.
//! - [`takeover`]: a new job on a workspace with a live job takes it over
//!   (the live sandbox saved and stopped), in submission order.
//! - [`workspaces`]: which disk a job gets (ephemeral, local, persistent,
//!   base, fork), saving it to object storage, and uploaded files.
//! - [`cluster`]: this host among several on one database: its lease,
//!   the waiting jobs it claims, and (as leader) lost hosts' work handed on.
//! - [`cron`]: scheduled jobs, each due run submitted like any job.
//! - [`quota`]: per-user limits (VMs at once, waiting jobs, disk,
//!   request rate) and the host's free disk.
//! - [`audit`]: the audit log's writer (refusals rate-bounded, pruning).
//! - [`retention`]: bounds on ended jobs' stored output (age, total).
//! - [`apps`]: where public URLs live (subdomain allocation).
//! - [`browser`]: browser sessions (Chromium with remote debugging).
//! - [`text`], [`invalid`]: user-given names and text; the one "invalid
//!   request" error.
//! - [`files`]: the local token and server files.

pub mod apps;
pub mod audit;
pub mod browser;
pub mod cluster;
pub mod cron;
pub mod error;
pub mod executor;
pub mod files;
pub mod invalid;
pub mod jobs;
pub mod quota;
pub mod retention;
pub mod sandboxes;
pub mod scheduler;
pub mod sink;
pub mod takeover;
pub mod text;
pub mod workspaces;

pub use error::ControlError;
use mags_store::Store;
use sandboxes::{SandboxConfig, Sandboxes};
use scheduler::Scheduler;
use sink::Followers;
use std::time::Duration;
use tokio::sync::watch;

/// The control layer's handle: what every caller (API handlers, cron, the
/// SSH gateway, the URL proxy) reaches; cheap to clone.
#[derive(Clone)]
pub struct Control {
    pub store: Store,
    pub scheduler: Scheduler,
    pub sandboxes: Sandboxes,
    pub followers: Followers,
    pub workspaces: workspaces::Workspaces,
    /// Becomes `true` when the server shuts down (ends output streams).
    pub shutdown: watch::Receiver<bool>,
    /// Where public URLs live (the URL proxy's domain).
    pub apps: std::sync::Arc<apps::Apps>,
    /// The audit log.
    pub audit: audit::Audit,
    /// The limits the server was started with.
    pub limits: Limits,
    /// Per-user limits and their state.
    pub quotas: std::sync::Arc<quota::Quotas>,
    /// Jobs waiting to take a workspace over from its live job.
    pub takeovers: takeover::Takeovers,
    /// The data dir whose free space bounds new disks (`disk_gb`); None:
    /// not checked (router tests without a data dir).
    pub data_dir: Option<std::path::PathBuf>,
}

/// How much the server runs at once, when sandboxes sleep, and what one
/// user or request may take.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// One-shot jobs running at once.
    pub max_vms: u32,
    /// Persistent sandboxes running (not sleeping) at once.
    pub max_sandboxes: u32,
    /// Idle time before a persistent sandbox sleeps, unless its job says.
    pub idle_timeout: Duration,
    /// Per user: VMs at once, waiting jobs, disk, request rate.
    pub user: quota::UserLimits,
    /// Largest upload (`POST /mags-files`), bytes.
    pub upload_max_bytes: u64,
    /// Seconds a one-shot job's script may run when its request gives no
    /// `timeout` (None: no limit).
    pub job_timeout_secs: Option<u64>,
    /// How often a running sandbox's synced workspace is saved on its own,
    /// bounding what a lost host loses (None: only on sync, sleep, stop).
    pub autosync: Option<Duration>,
}

impl Limits {
    /// `max_vms` for both kinds, the default idle timeout and upload
    /// limit, no job timeout and no per-user limits.
    pub fn new(max_vms: u32) -> Self {
        Limits {
            max_vms,
            max_sandboxes: max_vms,
            idle_timeout: sandboxes::DEFAULT_IDLE_TIMEOUT,
            user: quota::UserLimits::UNLIMITED,
            upload_max_bytes: mags_api::limits::MAX_UPLOAD_BYTES,
            job_timeout_secs: None,
            autosync: None,
        }
    }
}

impl Control {
    /// State around `store` and an executor, running at most `max_vms`
    /// one-shot jobs (and as many sandboxes) at once. Returns the sender
    /// that signals shutdown. Call within a tokio runtime.
    pub fn new(
        store: Store,
        executor: std::sync::Arc<dyn executor::Executor>,
        max_vms: u32,
    ) -> (Control, watch::Sender<bool>) {
        Self::with_limits(store, executor, Limits::new(max_vms))
    }

    /// Like [`Control::new`] with every limit given.
    pub fn with_limits(
        store: Store,
        executor: std::sync::Arc<dyn executor::Executor>,
        limits: Limits,
    ) -> (Control, watch::Sender<bool>) {
        Self::with_workspaces(store, executor, limits, workspaces::Workspaces::disabled())
    }

    /// Like [`Control::with_limits`], with workspaces (the executor is
    /// wrapped so jobs get their workspace disks).
    pub fn with_workspaces(
        store: Store,
        executor: std::sync::Arc<dyn executor::Executor>,
        limits: Limits,
        workspaces: workspaces::Workspaces,
    ) -> (Control, watch::Sender<bool>) {
        let executor = workspaces::executor::wrap(executor, &workspaces);
        let followers = Followers::default();
        let quotas = std::sync::Arc::new(quota::Quotas::new(limits.user));
        let sandboxes = Sandboxes::new(
            store.clone(),
            executor.clone(),
            followers.clone(),
            SandboxConfig {
                max_running: limits.max_sandboxes,
                idle_timeout: limits.idle_timeout,
                autosync: limits.autosync,
            },
            quotas.slots.clone(),
        );
        let scheduler = Scheduler::new(
            store.clone(),
            executor,
            followers.clone(),
            sandboxes.clone(),
            limits.max_vms,
            quotas.slots.clone(),
        );
        let takeovers = takeover::Takeovers::new(
            store.clone(),
            scheduler.clone(),
            sandboxes.clone(),
            followers.clone(),
        );
        let (tx, rx) = watch::channel(false);
        (
            Control {
                takeovers,
                audit: audit::Audit::new(store.clone()),
                store,
                scheduler,
                sandboxes,
                followers,
                workspaces,
                shutdown: rx,
                apps: Default::default(),
                limits,
                quotas,
                data_dir: None,
            },
            tx,
        )
    }
}

/// The typed commands every edge calls (the API's handlers, cron, browser
/// sessions). Each checks that the job is the caller's: another user's
/// job is [`sandboxes::SandboxError::NotFound`], as a missing one is.
impl Control {
    /// Checks, stores and schedules a job for `user_id` ([`jobs::submit`]).
    pub async fn submit(
        &self,
        user_id: &str,
        req: mags_api::CreateJobRequest,
    ) -> Result<mags_store::Job, ControlError> {
        jobs::submit(self, user_id, req).await
    }

    /// The job `id` of `user_id`.
    pub async fn job(
        &self,
        user_id: &str,
        id: &str,
    ) -> Result<mags_store::Job, sandboxes::SandboxError> {
        self.store
            .job_for_user(user_id, id)
            .await?
            .ok_or_else(|| sandboxes::SandboxError::NotFound(id.to_string()))
    }

    /// Starts `command` in the live sandbox of the user's job `id` (waking
    /// it if it sleeps); `timeout` kills it.
    pub async fn exec(
        &self,
        user_id: &str,
        id: &str,
        command: &str,
        timeout: Option<Duration>,
    ) -> Result<sandboxes::ExecRun, sandboxes::SandboxError> {
        let job = self.job(user_id, id).await?;
        sandboxes::check_live(&job, "exec")?;
        self.sandboxes.exec(&job.id, command, timeout).await
    }
}
