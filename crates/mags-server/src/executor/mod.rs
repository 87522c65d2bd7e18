//! Running a job's script somewhere: the [`Executor`] trait, what it is
//! given ([`JobSpec`], [`OutputSink`]) and what it answers.
//!
//! - [`vm`]: the real one, a QEMU microVM per job through `mags-vm`.
//! - [`fake`]: a tiny interpreter for tests; it runs nothing on the host.

pub mod fake;
pub mod vm;

pub use crate::sink::OutputSink;
use futures::future::BoxFuture;
use std::collections::BTreeMap;

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    /// The job id (a UUID); also used as the sandbox id.
    pub id: String,
    /// Run as `/bin/bash -c <script>` in `/root`.
    pub script: String,
    pub environment: BTreeMap<String, String>,
    pub disk_gb: u32,
    /// Kill the script after this long, if set.
    pub timeout_ms: Option<u64>,
}

/// How a script ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    /// The exit status, or 128 + signal.
    pub exit_code: i32,
    pub timed_out: bool,
    /// From starting the script to its exit.
    pub script_duration_ms: i64,
}

/// Why a job could not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("could not start the sandbox: {0}")]
    Start(String),
    #[error("the sandbox failed while running the script: {0}")]
    Lost(String),
}

/// Runs jobs. Implementations report output and the moment the VM is up
/// through the [`OutputSink`]; the scheduler records the outcome.
///
/// (This is `async fn run(&self, job, sink) -> Result<ExitInfo, ExecError>`,
/// spelled with a boxed future so it can be used as `dyn Executor`.)
pub trait Executor: Send + Sync + 'static {
    fn run(&self, job: JobSpec, sink: OutputSink) -> BoxFuture<'_, Result<ExitInfo, ExecError>>;

    /// The accelerator in use (`kvm`, `tcg`, `fake`), once known.
    fn accel(&self) -> Option<String>;

    /// Idle warm VMs now, and how many the pool keeps: `(idle, target)`.
    fn idle(&self) -> (usize, usize) {
        (0, 0)
    }
}
