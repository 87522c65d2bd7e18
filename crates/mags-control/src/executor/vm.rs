//! The real [`Executor`]: one QEMU microVM per job, through `mags-vm`,
//! which owns the sandbox (its files, sleep snapshot, death and disk
//! checks); this is the adapter to the [`Vm`] trait.
//!
//! On start it reaps what a previous server left behind and begins building
//! the guest image in the background; jobs that arrive meanwhile wait for
//! it (they stay `accepted`). If the build fails, the waiting jobs fail
//! with its reason and the next job tries again. Once the image is there
//! the accelerator is probed (and cached by `mags-vm`) for `/pool-status`.

use super::{
    ExecError, Executor, FileSource, JobSpec, ProcessInput, RunSpec, Tunnel, Vm, VmProcess,
};
use futures::future::BoxFuture;
use mags_vm::{
    AgentConn, DiskSource, ImageProgress, ImageVariant, Layout, Pool, PoolConfig, PoolSlot,
    Process, ProcessEvent, Runtime, RuntimeConfig, Sandbox, SandboxOptions, VmError,
};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Guest memory per sandbox unless configured otherwise.
pub const DEFAULT_MEMORY_MB: u32 = 256;

/// Guest memory of a browser sandbox at least: headless Chromium with a
/// page open needs several hundred MiB on its own.
pub const BROWSER_MEMORY_MB: u32 = 1024;
/// Guest memory of the coding-agent images (`claude`, `pi`): Claude Code
/// is a 400 MB executable that the guest kernel refuses to map in 256 MiB.
pub const AGENT_MEMORY_MB: u32 = 1024;

/// Runs each job in its own microVM.
pub struct VmExecutor {
    runtime: Arc<Runtime>,
    accel: Arc<Mutex<Option<String>>>,
    memory_mb: u32,
    /// The warm pool, once the image and accelerator are known.
    pool: Arc<OnceLock<Arc<Pool>>>,
    pool_size: usize,
}

impl VmExecutor {
    /// Sets up the runtime, reaps orphans, and starts the image build,
    /// accelerator probe and warm pool (`pool_size` idle VMs, 0 for none)
    /// in the background. Call within a tokio runtime.
    pub fn start(cfg: RuntimeConfig, memory_mb: u32, pool_size: usize) -> Self {
        let forced = cfg.accel.map(|a| a.to_string());
        let runtime = Arc::new(Runtime::new(cfg));
        let reaped = runtime.reap_orphans();
        if reaped > 0 {
            tracing::info!(reaped, "removed sandboxes left by a previous server");
        }
        let exec = VmExecutor {
            runtime,
            accel: Arc::new(Mutex::new(forced)),
            memory_mb,
            pool: Arc::default(),
            pool_size,
        };
        let (runtime, accel, pool) = (exec.runtime.clone(), exec.accel.clone(), exec.pool.clone());
        tokio::spawn(async move {
            if let Err(e) = ensure_image(&runtime, ImageVariant::Standard).await {
                tracing::error!(error = %e, "guest image build failed; jobs will retry it");
                return;
            }
            match runtime.accel().await {
                Ok(a) => {
                    tracing::info!(accel = %a, "accelerator");
                    *accel.lock().unwrap_or_else(|p| p.into_inner()) = Some(a.to_string());
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot determine the accelerator");
                    return;
                }
            }
            if pool_size > 0 {
                let cfg = PoolConfig {
                    size: pool_size,
                    memory_mb,
                    ..PoolConfig::for_this_host()
                };
                let _ = pool.set(Pool::start(runtime, cfg));
                tracing::info!(size = pool_size, "warm pool started");
            }
        });
        exec
    }

    /// A fresh sandbox from the warm pool (if the shape fits) or the template.
    async fn start_vm(&self, job: &JobSpec, disk: DiskSource) -> Result<Arc<dyn Vm>, ExecError> {
        self.runtime
            .check_disk_room()
            .map_err(|e| ExecError::Start(e.to_string()))?;
        ensure_image(&self.runtime, job.variant)
            .await
            .map_err(|e| ExecError::Start(format!("guest image unavailable: {e}")))?;
        let memory_mb = match job.variant {
            ImageVariant::Standard => self.memory_mb,
            ImageVariant::Browser => self.memory_mb.max(BROWSER_MEMORY_MB),
            ImageVariant::Claude | ImageVariant::Pi => self.memory_mb.max(AGENT_MEMORY_MB),
        };
        let opts = SandboxOptions {
            id: job.id.clone(),
            memory_mb,
            vcpus: 1,
            disk_gb: job.disk_gb,
            disk,
            variant: job.variant,
        };
        let (sandbox, slot) = match self.pool.get() {
            Some(pool) => pool.acquire(opts).await.map(|(sb, slot)| (sb, Some(slot))),
            None => self.runtime.start(opts).await.map(|sb| (sb, None)),
        }
        .map_err(|e| ExecError::Start(e.to_string()))?;
        let handle = VmHandle::new(sandbox, slot, self.runtime.layout().clone());
        if !job.egress.is_empty() {
            // In place before the script runs; a pool VM, named `pool-...`,
            // is matched by the egress proxy through its own dir.
            let set = lock(&handle.sandbox)
                .as_ref()
                .map(|sb| sb.set_egress(&job.egress));
            if let Some(Err(e)) = set {
                return Err(ExecError::Start(format!(
                    "cannot set the egress rules: {e}"
                )));
            }
        }
        Ok(Arc::new(handle))
    }

    async fn wake_vm(&self, vm_id: &str) -> Result<Arc<dyn Vm>, ExecError> {
        let record = self
            .runtime
            .sleep_record(vm_id)
            .ok_or_else(|| ExecError::Wake(format!("no sleep snapshot of {vm_id}")))?;
        let sandbox = self
            .runtime
            .wake(&record)
            .await
            .map_err(|e| ExecError::Wake(e.to_string()))?;
        Ok(Arc::new(VmHandle::new(
            sandbox,
            None,
            self.runtime.layout().clone(),
        )))
    }
}

impl Executor for VmExecutor {
    fn start(&self, job: &JobSpec) -> BoxFuture<'_, Result<Arc<dyn Vm>, ExecError>> {
        let job = job.clone();
        Box::pin(async move { self.start_vm(&job, DiskSource::Fresh).await })
    }

    fn start_with_disk(
        &self,
        job: &JobSpec,
        disk: DiskSource,
    ) -> BoxFuture<'_, Result<Arc<dyn Vm>, ExecError>> {
        let job = job.clone();
        Box::pin(async move { self.start_vm(&job, disk).await })
    }

    fn wake(&self, vm_id: &str) -> BoxFuture<'_, Result<Arc<dyn Vm>, ExecError>> {
        let vm_id = vm_id.to_string();
        Box::pin(async move { self.wake_vm(&vm_id).await })
    }

    fn has_snapshot(&self, vm_id: &str) -> bool {
        self.runtime.sleep_record(vm_id).is_some()
    }

    fn discard_snapshot(&self, vm_id: &str) {
        if let Err(e) = self.runtime.discard_sleep(vm_id) {
            tracing::warn!(vm = vm_id, error = %e, "cannot remove a sleep snapshot");
        }
    }

    fn accel(&self) -> Option<String> {
        self.accel.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn idle(&self) -> (usize, usize) {
        self.pool.get().map_or((0, self.pool_size), |p| {
            let st = p.status();
            (st.idle_vms, st.min_pool_size)
        })
    }
}

/// One sandbox behind the [`Vm`] trait. The agent connection is cloned out
/// so processes run without a lock; `sleep`/`shutdown` take the sandbox.
struct VmHandle {
    id: String,
    agent: AgentConn,
    /// Where the sandbox's files (its QMP socket) are, to grow its disk.
    layout: Layout,
    /// Shared with its processes, which ask it why a lost VM died.
    sandbox: Arc<Mutex<Option<Sandbox>>>,
    /// Set while the sandbox holds a slot of the warm pool; dropped with
    /// the handle at the latest.
    slot: Mutex<Option<PoolSlot>>,
}

impl VmHandle {
    fn new(sandbox: Sandbox, slot: Option<PoolSlot>, layout: Layout) -> Self {
        VmHandle {
            id: sandbox.id().to_string(),
            agent: sandbox.agent().clone(),
            layout,
            sandbox: Arc::new(Mutex::new(Some(sandbox))),
            slot: Mutex::new(slot),
        }
    }

    fn take(&self) -> Result<Sandbox, ExecError> {
        lock(&self.sandbox)
            .take()
            .ok_or_else(|| ExecError::Lost("the sandbox is no longer running".into()))
    }

    /// Frees the pool slot now that the sandbox is gone.
    fn release(&self) {
        drop(lock(&self.slot).take());
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn lost(e: VmError) -> ExecError {
    ExecError::Lost(e.to_string())
}

/// A guest's refusal stays one; anything else means the VM went away.
fn refused_or_lost(e: VmError) -> ExecError {
    match e {
        VmError::Guest(m) => ExecError::Refused(m),
        other => lost(other),
    }
}

/// Why QEMU ended, in words, once it has.
fn death_of(sandbox: &Mutex<Option<Sandbox>>) -> Option<String> {
    lock(sandbox).as_mut()?.death()
}

impl Vm for VmHandle {
    fn id(&self) -> &str {
        &self.id
    }

    fn run(&self, spec: RunSpec) -> BoxFuture<'_, Result<Box<dyn VmProcess>, ExecError>> {
        Box::pin(async move {
            let p = match self.agent.run(spec).await {
                Ok(p) => p,
                Err(e) => return Err(lost_in(&self.sandbox, e).await),
            };
            Ok(Box::new(VmProc {
                process: p,
                sandbox: self.sandbox.clone(),
            }) as Box<dyn VmProcess>)
        })
    }

    fn sync(&self) -> BoxFuture<'_, Result<(), ExecError>> {
        Box::pin(async move { self.agent.sync().await.map_err(lost) })
    }

    fn is_alive(&self) -> bool {
        lock(&self.sandbox).as_mut().is_some_and(Sandbox::is_alive)
    }

    fn death(&self) -> Option<String> {
        death_of(&self.sandbox)
    }

    fn disk_trouble(&self) -> BoxFuture<'_, Option<String>> {
        Box::pin(async move {
            let check = lock(&self.sandbox).as_ref()?.disk_trouble();
            check.await
        })
    }

    fn open_tunnel(&self, port: u16) -> BoxFuture<'_, Result<Box<dyn Tunnel>, ExecError>> {
        Box::pin(async move {
            let t = self
                .agent
                .open_tunnel(port)
                .await
                .map_err(refused_or_lost)?;
            Ok(Box::new(t) as Box<dyn Tunnel>)
        })
    }

    fn write_file<'a>(
        &'a self,
        path: &'a str,
        mode: u32,
        content: FileSource,
    ) -> BoxFuture<'a, Result<(), ExecError>> {
        Box::pin(async move {
            self.agent
                .write_file_from(path, mode, content)
                .await
                .map_err(refused_or_lost)
        })
    }

    fn freeze(&self, auto_thaw: Duration) -> BoxFuture<'_, Result<(), ExecError>> {
        Box::pin(async move { self.agent.freeze(auto_thaw).await.map_err(refused_or_lost) })
    }

    fn thaw(&self) -> BoxFuture<'_, Result<(), ExecError>> {
        Box::pin(async move { self.agent.thaw().await.map_err(refused_or_lost) })
    }

    fn grow_disk(&self, bytes: u64) -> BoxFuture<'_, Result<(), ExecError>> {
        Box::pin(async move {
            mags_vm::live::grow_disk(&self.layout, &self.id, &self.agent, bytes)
                .await
                .map_err(refused_or_lost)
        })
    }

    fn sleep(&self) -> BoxFuture<'_, Result<(), ExecError>> {
        Box::pin(async move {
            let sandbox = self.take()?;
            let r = sandbox.sleep().await;
            self.release();
            r.map(|_| ()).map_err(|e| ExecError::Sleep(e.to_string()))
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, Result<(), ExecError>> {
        Box::pin(async move {
            let sandbox = self.take()?;
            let r = sandbox.shutdown().await;
            self.release();
            r.map_err(lost)
        })
    }
}

/// A guest process behind the [`VmProcess`] trait.
struct VmProc {
    process: Process,
    sandbox: Arc<Mutex<Option<Sandbox>>>,
}

/// The agent connection broke: if QEMU died (it closes the socket just
/// before it can be reaped, so wait a moment), that is the reason.
async fn lost_in(sandbox: &Mutex<Option<Sandbox>>, e: VmError) -> ExecError {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if let Some(death) = death_of(sandbox) {
            return ExecError::Lost(death);
        }
        if Instant::now() >= deadline || lock(sandbox).is_none() {
            return lost(e);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl VmProcess for VmProc {
    fn next_event(&mut self) -> BoxFuture<'_, Result<Option<ProcessEvent>, ExecError>> {
        Box::pin(async move {
            match self.process.next_event().await {
                Ok(ev) => Ok(ev),
                Err(e) => Err(lost_in(&self.sandbox, e).await),
            }
        })
    }

    fn signal(&self, signal: i32) -> BoxFuture<'_, Result<(), ExecError>> {
        Box::pin(async move { self.process.signal(signal).await.map_err(lost) })
    }

    fn input(&self) -> Arc<dyn ProcessInput> {
        Arc::new(VmInput(self.process.input()))
    }
}

/// A guest process's input behind the [`ProcessInput`] trait.
struct VmInput(mags_vm::ProcessInput);

impl ProcessInput for VmInput {
    fn write<'a>(&'a self, data: &'a [u8]) -> BoxFuture<'a, Result<(), ExecError>> {
        Box::pin(async move { self.0.write(data).await.map_err(lost) })
    }

    fn close(&self) -> BoxFuture<'_, Result<(), ExecError>> {
        Box::pin(async move { self.0.close().await.map_err(lost) })
    }

    fn resize(&self, rows: u16, cols: u16) -> BoxFuture<'_, Result<(), ExecError>> {
        Box::pin(async move { self.0.resize(rows, cols).await.map_err(lost) })
    }

    fn signal(&self, signal: i32) -> BoxFuture<'_, Result<(), ExecError>> {
        Box::pin(async move { self.0.signal(signal).await.map_err(lost) })
    }
}

/// Builds the image unless already built (`mags-vm` makes concurrent
/// callers share one build, and lets a failed build be retried).
async fn ensure_image(runtime: &Runtime, variant: ImageVariant) -> Result<(), mags_vm::VmError> {
    if runtime.cached_variant(variant)?.is_none() {
        tracing::info!(%variant, "building the guest image; jobs wait for it");
    }
    let image = runtime.ensure_variant(variant, log_progress).await?;
    tracing::debug!(hash = %image.hash, %variant, "guest image ready");
    Ok(())
}

fn log_progress(p: ImageProgress) {
    match p {
        ImageProgress::Step { index, total, name } => {
            tracing::info!(step = index, of = total, "image build: {name}");
        }
        ImageProgress::Log(line) => tracing::debug!("image build: {line}"),
        ImageProgress::Done { cached } => tracing::debug!(cached, "image build done"),
    }
}
