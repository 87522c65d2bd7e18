//! The VMs of persistent jobs ("sandboxes"), by job id: they outlive their
//! script, run commands ([`Sandboxes::exec`]), sleep when idle and wake on
//! demand, and end on [`Sandboxes::stop`].
//!
//! Each live persistent job has an [`Entry`] whose [`Slot`] says where its
//! VM is: starting, running (holding one of `max_running` permits, counted
//! apart from the one-shot queue, and one of its user's VM slots, shared
//! with that user's one-shot jobs), sleeping (a snapshot on disk, neither)
//! or gone. The slot's async lock serializes what changes it: a wake, a
//! sleep, a stop, a restart. Commands run without it; while one runs (a
//! [`Busy`] guard lives) the sandbox does not sleep. Neither does it while
//! its script runs and someone follows that script's output (a [`Watch`]
//! guard lives, as for `mags run -p`): the script would freeze mid-way and
//! its follower would wait for an exit that never comes.
//!
//! - [`life`]: starting, waking, sleeping, losing and ending a sandbox.
//! - [`watch`]: the background loop that sleeps idle sandboxes and notices
//!   dead VMs (restarting `no_sleep` ones).
//! - [`exec`]: running a command and forwarding its events.
//!
//! The job's log (one [`OutputSink`] per entry, so one writer per job) gets
//! the script's output and a system line for every sleep, wake, startup
//! command and restart. Exec output is returned to the caller only.

mod exec;
mod life;
mod watch;

pub use exec::ExecRun;
pub use life::MIN_SCRIPT_RUN;

use crate::executor::{Executor, JobSpec, Vm};
use crate::quota::{UserSlot, UserSlots};
use crate::sink::{Followers, OutputSink};
use mags_api::JobState;
use mags_store::{Job, Store, StoreError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Idle time before a persistent sandbox sleeps, unless configured.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// Settings of the registry.
#[derive(Debug, Clone, Copy)]
pub struct SandboxConfig {
    /// Sandboxes running at once (sleeping ones do not count).
    pub max_running: u32,
    /// Idle time before a sandbox sleeps, for jobs that do not say.
    pub idle_timeout: Duration,
    /// How often a running sandbox's synced workspace is saved on its own.
    pub autosync: Option<Duration>,
}

/// Why a sandbox operation failed. Messages are for the API's caller.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("job {0} not found")]
    NotFound(String),
    #[error("job {id} is {status}: {what} needs a running or sleeping sandbox")]
    NotLive {
        id: String,
        status: JobState,
        what: &'static str,
    },
    #[error(
        "job {0} is not a persistent sandbox: run it with persistent: true \
         (or `mags new`) to keep its VM"
    )]
    NotPersistent(String),
    #[error("the sandbox of job {id} is still starting ({status}); try again when it is running")]
    Starting { id: String, status: JobState },
    #[error("{0} sandboxes are running, the most this server allows; stop one or try again")]
    Busy(u32),
    #[error(
        "you have {0} sandboxes and jobs running, the most this server allows per user, \
         and none can sleep; stop one or try again"
    )]
    UserBusy(u32),
    #[error("{0}")]
    Unavailable(String),
    #[error("the sandbox was stopped")]
    Stopped,
    #[error("this server's executor cannot do that: {0}")]
    Unsupported(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks that `job` has a sandbox `what` can use.
pub fn check_live(job: &Job, what: &'static str) -> Result<(), SandboxError> {
    match job.status {
        JobState::Accepted | JobState::Queued => Err(SandboxError::Starting {
            id: job.id.clone(),
            status: job.status,
        }),
        JobState::Running | JobState::Sleeping if job.persistent => Ok(()),
        JobState::Running | JobState::Sleeping => Err(SandboxError::NotPersistent(job.id.clone())),
        JobState::Completed | JobState::Error => Err(SandboxError::NotLive {
            id: job.id.clone(),
            status: job.status,
            what,
        }),
    }
}

/// The live sandboxes of this server; cheap to clone.
#[derive(Clone)]
pub struct Sandboxes {
    inner: Arc<Shared>,
}

pub(crate) struct Shared {
    store: Store,
    executor: Arc<dyn Executor>,
    followers: Followers,
    cfg: SandboxConfig,
    permits: Arc<Semaphore>,
    /// Per-user VM slots, shared with the scheduler's one-shot jobs.
    user_slots: Arc<UserSlots>,
    map: Mutex<HashMap<String, Arc<Entry>>>,
    /// Followers of each job's script output (see [`Sandboxes::watch`]), by
    /// job id: a job may be followed before its entry exists.
    watchers: Arc<Mutex<HashMap<String, usize>>>,
    /// Set at server shutdown: nothing is woken or restarted any more.
    closing: AtomicBool,
}

/// Where a sandbox's VM is.
pub(crate) enum Slot {
    /// Its first VM (or a replacement) is being started.
    Starting,
    Running {
        vm: Arc<dyn Vm>,
        _permit: Permits,
    },
    Sleeping {
        vm_id: String,
    },
    /// Stopped or failed; the entry is on its way out.
    Gone,
}

/// What a running sandbox holds: a server-wide running slot and one of its
/// user's VM slots.
pub(crate) struct Permits {
    _user: UserSlot,
    _server: OwnedSemaphorePermit,
}

/// Settings that can change while the sandbox lives.
#[derive(Debug, Clone)]
struct Settings {
    no_sleep: bool,
    startup_command: Option<String>,
    idle_timeout: Duration,
}

/// One live persistent job.
pub(crate) struct Entry {
    job_id: String,
    user_id: String,
    /// What its VM is started from (again, after a loss).
    spec: JobSpec,
    /// The job's one log writer.
    sink: OutputSink,
    slot: Arc<tokio::sync::Mutex<Slot>>,
    settings: Mutex<Settings>,
    last_active: Mutex<Instant>,
    busy: AtomicUsize,
    /// Its script is running and its output is recorded.
    script_running: AtomicBool,
    /// When its script last started (in this server process).
    script_started: Mutex<Option<Instant>>,
    stop_requested: AtomicBool,
    stop: Notify,
    /// When the watch loop may next try to wake it (after a failure).
    wake_retry: Mutex<Option<Instant>>,
    /// When the watch loop last saved its workspace on its own (or it
    /// started running here).
    autosynced: Mutex<Instant>,
    /// Whether its workspace is synced to object storage.
    synced_workspace: bool,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Entry {
    fn settings(&self) -> Settings {
        lock(&self.settings).clone()
    }

    /// Records activity now.
    fn touch(&self) {
        *lock(&self.last_active) = Instant::now();
    }

    fn idle_for(&self) -> Duration {
        lock(&self.last_active).elapsed()
    }

    fn is_busy(&self) -> bool {
        self.busy.load(Ordering::SeqCst) > 0
    }

    /// Marks the sandbox in use until the guard drops.
    fn busy(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::SeqCst);
        self.touch();
        Busy(self.clone())
    }

    fn request_stop(&self) {
        self.stop_requested.store(true, Ordering::SeqCst);
        self.stop.notify_waiters();
    }

    async fn stopped(&self) {
        let notified = self.stop.notified();
        if !self.stop_requested.load(Ordering::SeqCst) {
            notified.await;
        }
    }
}

/// Keeps a sandbox awake while held (a running command, an SSH session).
pub struct Busy(Arc<Entry>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
        self.0.touch();
    }
}

/// Someone follows a job's script output; see [`Sandboxes::watch`].
pub struct Watch {
    watchers: Arc<Mutex<HashMap<String, usize>>>,
    job_id: String,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut w = lock(&self.watchers);
        if let Some(n) = w.get_mut(&self.job_id) {
            *n -= 1;
            if *n == 0 {
                w.remove(&self.job_id);
            }
        }
    }
}

/// A live sandbox for an interactive session; see [`Sandboxes::connect`].
pub struct Connected {
    /// The VM: run (interactive) processes, open tunnels to its ports.
    pub vm: Arc<dyn Vm>,
    pub vm_id: String,
    /// The job's environment, for the processes the session starts.
    pub environment: std::collections::BTreeMap<String, String>,
    /// Keeps the sandbox awake while the session lasts.
    pub busy: Busy,
}

impl Sandboxes {
    /// An empty registry; starts its background loop (call within tokio).
    pub fn new(
        store: Store,
        executor: Arc<dyn Executor>,
        followers: Followers,
        cfg: SandboxConfig,
        user_slots: Arc<UserSlots>,
    ) -> Sandboxes {
        let max = cfg.max_running.max(1);
        let inner = Arc::new(Shared {
            store,
            executor,
            followers,
            cfg: SandboxConfig {
                max_running: max,
                ..cfg
            },
            permits: Arc::new(Semaphore::new(max as usize)),
            user_slots,
            map: Mutex::default(),
            watchers: Arc::default(),
            closing: AtomicBool::new(false),
        });
        watch::spawn(Arc::downgrade(&inner));
        Sandboxes { inner }
    }

    /// Starts the sandbox of a new persistent job in the background.
    pub fn launch(&self, job: Job) {
        self.inner.clone().launch(job);
    }

    /// Takes over a persistent job a previous server left `running` or
    /// `sleeping`: one with a sleep snapshot stays (or goes) to sleep and
    /// wakes on demand; one whose VM was lost gets a fresh one, and says so
    /// in its log.
    pub fn recover(&self, job: Job) {
        self.inner.clone().recover(job);
    }

    /// Starts again here the sandbox of `job`, which this host has just
    /// claimed after its host was lost (a `no_sleep` one comes back by
    /// itself); its log says so.
    pub async fn come_back(&self, job: Job) {
        self.inner.come_back(job).await;
    }

    /// Runs `bash -c command` in `/root` of the job's sandbox, waking it
    /// first if it sleeps. The caller checks ownership and [`check_live`].
    pub async fn exec(
        &self,
        job_id: &str,
        command: &str,
        timeout: Option<Duration>,
    ) -> Result<ExecRun, SandboxError> {
        self.inner.exec(job_id, command, timeout).await
    }

    /// Stops the sandbox: a running VM is synced and shut down, a sleeping
    /// one's snapshot deleted; the job ends `completed` (or `error` with
    /// the reason). Ok if it has ended meanwhile.
    pub async fn stop(&self, job_id: &str) -> Result<(), SandboxError> {
        self.inner.stop(job_id).await
    }

    /// Ends the sandbox because job `by` takes its workspace `ws` over:
    /// its files are saved (synced workspace: a new version; local: its
    /// disk kept), it is shut down, and its job ends `completed` with a log
    /// line naming `by`. [`SandboxError::Starting`] while it is starting or
    /// its script started less than [`MIN_SCRIPT_RUN`] ago: try again.
    pub async fn replace(&self, job_id: &str, by: &str, ws: &str) -> Result<(), SandboxError> {
        self.inner.replace(job_id, by, ws).await
    }

    /// Flushes the guest's filesystems (a sleeping sandbox's disk already is).
    pub async fn sync(&self, job_id: &str) -> Result<(), SandboxError> {
        self.inner.sync(job_id).await
    }

    /// Applies changed settings of a live job (already stored) to its sandbox.
    pub fn update(&self, job: &Job) {
        if let Some(e) = self.inner.entry(&job.id) {
            let mut s = lock(&e.settings);
            s.no_sleep = job.no_sleep;
            s.startup_command = job.startup_command.clone();
            s.idle_timeout = self.inner.idle_timeout(job);
            drop(s);
            e.touch();
        }
    }

    /// Marks job `job_id`'s script output as followed until the guard
    /// drops: while its script runs, its sandbox does not sleep (its idle
    /// time counts from the script's end).
    pub fn watch(&self, job_id: &str) -> Watch {
        *lock(&self.inner.watchers)
            .entry(job_id.to_string())
            .or_default() += 1;
        Watch {
            watchers: self.inner.watchers.clone(),
            job_id: job_id.to_string(),
        }
    }

    /// Records activity on a sandbox (it sleeps that much later).
    pub fn touch(&self, job_id: &str) {
        if let Some(e) = self.inner.entry(job_id) {
            e.touch();
        }
    }

    /// The seam for the SSH gateway (and anything else that needs the
    /// guest itself): the VM of `user_id`'s job `job_id`, woken if it
    /// sleeps, kept awake while the returned [`Connected`] lives.
    pub async fn connect(&self, user_id: &str, job_id: &str) -> Result<Connected, SandboxError> {
        let job = self
            .inner
            .store
            .job_for_user(user_id, job_id)
            .await?
            .ok_or_else(|| SandboxError::NotFound(job_id.to_string()))?;
        check_live(&job, "a session")?;
        let entry = self.inner.live_or_adopted(job_id).await?;
        let (vm, busy) = self.inner.acquire(&entry).await?;
        Ok(Connected {
            vm_id: vm.id().to_string(),
            vm,
            environment: entry.spec.environment.clone(),
            busy,
        })
    }

    /// Wakes the job's sandbox if it sleeps (a no-op if it runs) and counts
    /// that as activity. The caller checks ownership and [`check_live`].
    pub async fn wake(&self, job_id: &str) -> Result<(), SandboxError> {
        let entry = self.inner.live_or_adopted(job_id).await?;
        let (_vm, _busy) = self.inner.acquire(&entry).await?;
        Ok(())
    }

    /// Puts one of `user_id`'s idle running sandboxes to sleep (the least
    /// recently used that may sleep), freeing one of the user's VM slots;
    /// whether one was.
    pub async fn make_room_for(&self, user_id: &str) -> bool {
        self.inner.evict_one("", Some(user_id)).await
    }

    /// Whether [`Sandboxes::make_room_for`] would find a sandbox to sleep
    /// now.
    pub fn can_make_room_for(&self, user_id: &str) -> bool {
        self.inner
            .sleep_candidates("", Some(user_id))
            .iter()
            .any(|e| matches!(e.slot.try_lock().as_deref(), Ok(Slot::Running { .. })))
    }

    /// `(running, sleeping, most running)`.
    pub fn counts(&self) -> (u32, u32, u32) {
        let entries = self.inner.entries();
        let (mut running, mut sleeping) = (0, 0);
        for e in entries {
            match e.slot.try_lock().as_deref() {
                Ok(Slot::Sleeping { .. }) => sleeping += 1,
                Ok(Slot::Gone) => {}
                // Busy slots are being woken, slept or started: count as running.
                _ => running += 1,
            }
        }
        (running, sleeping, self.inner.cfg.max_running)
    }

    /// At server shutdown: puts every running sandbox to sleep (within
    /// `within`), so it comes back with its processes after a restart.
    pub async fn sleep_all(&self, within: Duration) {
        self.inner.sleep_all(within).await;
    }
}

impl Shared {
    fn entry(&self, job_id: &str) -> Option<Arc<Entry>> {
        lock(&self.map).get(job_id).cloned()
    }

    /// The entry of a job the caller found live in the database.
    /// [`Shared::live_entry`]; or, for a live sandbox whose host was lost
    /// (nobody's now), this host takes it and starts it again here: its
    /// entry, the VM starting (callers wait on its slot).
    async fn live_or_adopted(self: &Arc<Self>, job_id: &str) -> Result<Arc<Entry>, SandboxError> {
        if let Some(e) = self.entry(job_id) {
            return Ok(e);
        }
        match self.adopt(job_id).await? {
            Some(job) => Ok(self.come_back(job).await),
            None => self.live_entry(job_id),
        }
    }

    /// Takes the live persistent job `job_id` for this host if nobody owns
    /// it (its host was lost); `None` if it is not such a job, or another
    /// host took it first. A job another host runs is
    /// [`SandboxError::Unavailable`] here, naming that host.
    async fn adopt(&self, job_id: &str) -> Result<Option<Job>, SandboxError> {
        let Some(owner) = self.store.owner() else {
            return Ok(None);
        };
        let Some(job) = self.store.job(job_id).await? else {
            return Ok(None);
        };
        if let Some(host) = job.host.as_deref().filter(|h| *h != owner.host) {
            return Err(SandboxError::Unavailable(format!(
                "the sandbox of job {job_id} runs on host {host}; send the request to that host"
            )));
        }
        if job.host.is_some() || !job.persistent || job.status.is_final() {
            return Ok(None);
        }
        let claim = mags_store::Claim::One(job.id.clone());
        Ok(self.store.claim_jobs(owner, &claim).await?.pop())
    }

    fn live_entry(&self, job_id: &str) -> Result<Arc<Entry>, SandboxError> {
        self.entry(job_id).ok_or_else(|| {
            SandboxError::Unavailable(format!(
                "the sandbox of job {job_id} is not known to this server; it may have just ended"
            ))
        })
    }

    /// Whether the sandbox must stay awake now: a command or session runs
    /// in it, or its script runs while someone follows the script's output.
    fn in_use(&self, e: &Entry) -> bool {
        e.is_busy()
            || (e.script_running.load(Ordering::SeqCst)
                && lock(&self.watchers).contains_key(&e.job_id))
    }

    fn entries(&self) -> Vec<Arc<Entry>> {
        lock(&self.map).values().cloned().collect()
    }

    fn idle_timeout(&self, job: &Job) -> Duration {
        job.idle_timeout_secs
            .filter(|s| *s > 0)
            .map_or(self.cfg.idle_timeout, Duration::from_secs)
    }

    /// Adds the entry of `job` with its slot in `slot`; returns the entry
    /// and the slot's lock, taken before anyone else can see the entry.
    async fn register(
        &self,
        job: &Job,
        slot: Slot,
    ) -> (Arc<Entry>, tokio::sync::OwnedMutexGuard<Slot>) {
        let (sink, _writer) =
            OutputSink::start(self.store.clone(), self.followers.clone(), &job.id);
        let slot = Arc::new(tokio::sync::Mutex::new(slot));
        let guard = slot.clone().lock_owned().await;
        let entry = Arc::new(Entry {
            job_id: job.id.clone(),
            user_id: job.user_id.clone(),
            spec: JobSpec::of(job),
            sink,
            slot,
            settings: Mutex::new(Settings {
                no_sleep: job.no_sleep,
                startup_command: job.startup_command.clone(),
                idle_timeout: self.idle_timeout(job),
            }),
            last_active: Mutex::new(Instant::now()),
            busy: AtomicUsize::new(0),
            script_running: AtomicBool::new(false),
            script_started: Mutex::new(None),
            stop_requested: AtomicBool::new(false),
            stop: Notify::new(),
            wake_retry: Mutex::new(None),
            autosynced: Mutex::new(Instant::now()),
            synced_workspace: job.workspace_id.is_some() && !job.no_sync,
        });
        lock(&self.map).insert(job.id.clone(), entry.clone());
        (entry, guard)
    }

    fn unregister(&self, job_id: &str) {
        lock(&self.map).remove(job_id);
    }
}
