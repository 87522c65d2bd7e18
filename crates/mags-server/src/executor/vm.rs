//! The real [`Executor`]: one QEMU microVM per job, through `mags-vm`.
//!
//! On start it reaps what a previous server left behind and begins building
//! the guest image in the background; jobs that arrive meanwhile wait for
//! it (they stay `accepted`). If the build fails, the waiting jobs fail
//! with its reason and the next job tries again. Once the image is there
//! the accelerator is probed (and cached by `mags-vm`) for `/pool-status`.

use super::{ExecError, Executor, ExitInfo, JobSpec, OutputSink};
use futures::future::BoxFuture;
use mags_proto::RunSpec;
use mags_vm::{
    ImageProgress, Pool, PoolConfig, ProcessEvent, Runtime, RuntimeConfig, Sandbox, SandboxOptions,
};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

/// Guest memory per sandbox unless configured otherwise.
pub const DEFAULT_MEMORY_MB: u32 = 256;

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
            if let Err(e) = ensure_image(&runtime).await {
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

    async fn run_in_vm(&self, job: JobSpec, sink: OutputSink) -> Result<ExitInfo, ExecError> {
        ensure_image(&self.runtime)
            .await
            .map_err(|e| ExecError::Start(format!("guest image unavailable: {e}")))?;
        let opts = SandboxOptions {
            id: job.id.clone(),
            memory_mb: self.memory_mb,
            vcpus: 1,
            disk_gb: job.disk_gb,
        };
        let pool = self.pool.get().cloned();
        let sandbox = match &pool {
            Some(pool) => pool.acquire(opts).await,
            None => self.runtime.start(opts).await,
        }
        .map_err(|e| ExecError::Start(e.to_string()))?;
        let result = run_script(&sandbox, job, &sink).await;
        // The job's outcome does not wait for the VM to power off.
        tokio::spawn(retire(sandbox, pool));
        result
    }
}

impl Executor for VmExecutor {
    fn run(&self, job: JobSpec, sink: OutputSink) -> BoxFuture<'_, Result<ExitInfo, ExecError>> {
        Box::pin(self.run_in_vm(job, sink))
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

/// Shuts a finished job's sandbox down and frees its pool slot.
async fn retire(sandbox: Sandbox, pool: Option<Arc<Pool>>) {
    if let Err(e) = sandbox.shutdown().await {
        tracing::warn!(error = %e, "sandbox shutdown failed");
    }
    if let Some(pool) = pool {
        pool.release();
    }
}

/// Runs the script in a started sandbox, streaming its output to `sink`.
async fn run_script(
    sandbox: &mags_vm::Sandbox,
    job: JobSpec,
    sink: &OutputSink,
) -> Result<ExitInfo, ExecError> {
    sink.running(sandbox.id())
        .await
        .map_err(|e| ExecError::Start(e.to_string()))?;
    let spec = RunSpec {
        argv: vec!["/bin/bash".into(), "-c".into(), job.script],
        env: job.environment,
        cwd: Some("/root".into()),
        stdin: false,
        timeout_ms: job.timeout_ms,
        chroot: None,
    };
    let started = Instant::now();
    let mut process = sandbox
        .agent()
        .run(spec)
        .await
        .map_err(|e| ExecError::Start(format!("cannot start the script: {e}")))?;
    loop {
        match process.next_event().await {
            Ok(Some(ProcessEvent::Stdout(b))) => sink.stdout(b).await,
            Ok(Some(ProcessEvent::Stderr(b))) => sink.stderr(b).await,
            Ok(Some(ProcessEvent::Exited {
                code, timed_out, ..
            })) => {
                return Ok(ExitInfo {
                    exit_code: code,
                    timed_out,
                    script_duration_ms: i64::try_from(started.elapsed().as_millis())
                        .unwrap_or(i64::MAX),
                })
            }
            Ok(None) => return Err(ExecError::Lost("the guest agent went away".into())),
            Err(e) => return Err(ExecError::Lost(e.to_string())),
        }
    }
}

/// Builds the image unless already built (`mags-vm` makes concurrent
/// callers share one build, and lets a failed build be retried).
async fn ensure_image(runtime: &Runtime) -> Result<(), mags_vm::VmError> {
    if runtime.cached_image()?.is_none() {
        tracing::info!("building the guest image; jobs wait for it");
    }
    let image = runtime.ensure_image(log_progress).await?;
    tracing::debug!(hash = %image.hash, "guest image ready");
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
