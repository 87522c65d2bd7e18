//! Where jobs run: the [`Executor`] trait (it starts and wakes VMs), the
//! [`Vm`] handle it gives back, and the [`VmProcess`]es run in a VM.
//!
//! The scheduler drives one-shot jobs through these ([`run_to_end`] streams
//! a script into the job's [`OutputSink`]); [`crate::sandboxes`] keeps the
//! VMs of persistent jobs, sleeping and waking them.
//!
//! Besides running processes, a [`Vm`] offers the few typed operations
//! the edges and workspaces need of a guest: a tunnel to one of its ports
//! ([`Vm::open_tunnel`]), interactive processes (a [`RunSpec`] with
//! `stdin` and a `pty`, driven through [`VmProcess::input`]), writing a
//! file ([`Vm::write_file`]), freezing its disk ([`Vm::freeze`]) and
//! growing it online ([`Vm::grow_disk`]).
//!
//! - [`vm`]: the real one, a QEMU microVM per job through `mags-vm`.
//! - [`fake`]: a tiny interpreter for tests; it runs nothing on the host.

pub mod fake;
pub mod vm;

pub use crate::sink::OutputSink;
use futures::future::BoxFuture;
pub use mags_proto::RunSpec;
pub use mags_vm::{DiskSource, ProcessEvent};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};

/// What to start a VM for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    /// The job id (a UUID).
    pub id: String,
    /// Run as `/bin/bash -c <script>` in `/root`.
    pub script: String,
    pub environment: BTreeMap<String, String>,
    pub disk_gb: u32,
    /// Kill the script after this long, if set.
    pub timeout_ms: Option<u64>,
    /// Which guest image: `rootfs_type: "browser"` is the Chromium image,
    /// anything else the standard one.
    pub variant: mags_vm::ImageVariant,
    /// The job's own egress rules (`no_internet`, allow/deny lists).
    pub egress: mags_vm::egress::SandboxEgress,
    /// Where the script starts: [`SCRIPT_DIR`], or [`UPLOADS_DIR`] for a
    /// job with uploaded files.
    pub workdir: &'static str,
}

/// The script's working directory (and home).
pub const SCRIPT_DIR: &str = "/root";
/// Where a job's uploaded files also are, and where a job that has some
/// starts: the public docs' `cp *.js *.json /root/ && cd /root` then copies
/// from here (from /root itself GNU cp fails: "are the same file"), and
/// `python3 script.py` finds its file either way.
pub const UPLOADS_DIR: &str = "/uploads";

impl JobSpec {
    /// The spec of a stored job.
    pub fn of(job: &mags_store::Job) -> Self {
        JobSpec {
            id: job.id.clone(),
            script: job.script.clone(),
            environment: job.environment.clone(),
            disk_gb: job.disk_gb,
            timeout_ms: job.timeout_secs.map(|s| s.saturating_mul(1000)),
            variant: variant_of(job.rootfs_type.as_deref()),
            egress: mags_vm::egress::SandboxEgress {
                no_internet: job.no_internet,
                allow: job.egress_allow.clone(),
                deny: job.egress_deny.clone(),
            },
            workdir: if job.file_ids.is_empty() {
                SCRIPT_DIR
            } else {
                UPLOADS_DIR
            },
        }
    }

    /// How the job's script is run: `bash -c` in [`JobSpec::workdir`].
    pub fn script_run(&self) -> RunSpec {
        let mut run = bash(&self.script, &self.environment, self.timeout_ms);
        run.cwd = Some(self.workdir.into());
        run
    }
}

/// The image variant for a job's `rootfs_type` (checked at submit: an
/// unknown one never gets here; none is the standard image).
pub fn variant_of(rootfs_type: Option<&str>) -> mags_vm::ImageVariant {
    rootfs_type.and_then(|t| t.parse().ok()).unwrap_or_default()
}

/// How a script ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitInfo {
    /// The exit status, or 128 + signal.
    pub exit_code: i32,
    pub timed_out: bool,
    /// From starting the script to its exit.
    pub script_duration_ms: i64,
    /// Set when the host failed the VM's disk I/O meanwhile (see
    /// [`Vm::disk_trouble`]): the job is an error whatever the exit code.
    pub disk_trouble: Option<String>,
}

/// Why a VM could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("could not start the sandbox: {0}")]
    Start(String),
    #[error("the sandbox failed: {0}")]
    Lost(String),
    #[error("cannot wake the sandbox: {0}")]
    Wake(String),
    #[error("cannot put the sandbox to sleep: {0}")]
    Sleep(String),
    /// The guest answered, and refused (e.g. nothing listens on a port).
    #[error("guest refused: {0}")]
    Refused(String),
    /// This kind of VM cannot do that.
    #[error("not supported by this sandbox: {0}")]
    Unsupported(&'static str),
}

/// A byte stream to a port in a VM ([`Vm::open_tunnel`]): shutting its
/// write side down half-closes the guest's socket, dropping it closes it.
pub trait Tunnel: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Tunnel for T {}

/// What [`Vm::write_file`] reads a file's content from.
pub type FileSource = Box<dyn AsyncRead + Send + Unpin>;

/// Sends to a running process while another task reads its events
/// ([`VmProcess::input`]). Sending after the process ended is harmless.
pub trait ProcessInput: Send + Sync {
    /// Bytes for its stdin (or typed into its terminal).
    fn write<'a>(&'a self, data: &'a [u8]) -> BoxFuture<'a, Result<(), ExecError>>;

    /// Closes its stdin (for a terminal: nothing to close; ignored).
    fn close(&self) -> BoxFuture<'_, Result<(), ExecError>>;

    /// Sets the size of its terminal (a process started with a PTY).
    fn resize(&self, rows: u16, cols: u16) -> BoxFuture<'_, Result<(), ExecError>>;

    /// Signals its process group.
    fn signal(&self, signal: i32) -> BoxFuture<'_, Result<(), ExecError>>;
}

/// A process started in a VM.
pub trait VmProcess: Send {
    /// The next thing it did; `Ok(None)` after `Exited`. An error means the
    /// VM went away (stopped, slept or died) under it.
    fn next_event(&mut self) -> BoxFuture<'_, Result<Option<ProcessEvent>, ExecError>>;

    /// Signals its process group.
    fn signal(&self, signal: i32) -> BoxFuture<'_, Result<(), ExecError>>;

    /// A handle that sends to it (stdin, resize, signals); meaningful for
    /// one started with `stdin` (and a `pty`).
    fn input(&self) -> Arc<dyn ProcessInput>;
}

/// A running VM. `sleep` and `shutdown` end this handle's use: later calls
/// fail (clones of the `Arc` may still be around).
pub trait Vm: Send + Sync {
    /// Names the VM; `vm_id` of the job, and the key of its sleep snapshot.
    fn id(&self) -> &str;

    /// Starts a process; with `spec.stdin` (and `spec.pty`) an interactive
    /// one, fed through [`VmProcess::input`].
    fn run(&self, spec: RunSpec) -> BoxFuture<'_, Result<Box<dyn VmProcess>, ExecError>>;

    /// Flushes the guest's filesystems.
    fn sync(&self) -> BoxFuture<'_, Result<(), ExecError>>;

    /// Whether the VM is still running (false once it died, slept or stopped).
    fn is_alive(&self) -> bool;

    /// Why the VM died, once it has (QEMU's exit status, in words);
    /// `None` while it runs or when unknown.
    fn death(&self) -> Option<String> {
        None
    }

    /// Why the host failed the VM's disk I/O, if it did (the guest saw
    /// I/O errors; e.g. the host's disk is full); asked before shutdown.
    fn disk_trouble(&self) -> BoxFuture<'_, Option<String>> {
        Box::pin(async { None })
    }

    /// Connects to `127.0.0.1:port` inside the VM ([`ExecError::Refused`]
    /// if nothing listens there).
    fn open_tunnel(&self, port: u16) -> BoxFuture<'_, Result<Box<dyn Tunnel>, ExecError>>;

    /// Creates or replaces the file `path` in the VM, atomically, with
    /// everything `content` yields (streamed, never whole in memory).
    fn write_file<'a>(
        &'a self,
        path: &'a str,
        mode: u32,
        content: FileSource,
    ) -> BoxFuture<'a, Result<(), ExecError>>;

    /// Flushes and freezes the VM's writable disk, so the host can read
    /// it consistently; it thaws by itself after `auto_thaw`, or at
    /// [`Vm::thaw`].
    fn freeze(&self, auto_thaw: Duration) -> BoxFuture<'_, Result<(), ExecError>>;

    /// Thaws the disk [`Vm::freeze`] froze.
    fn thaw(&self) -> BoxFuture<'_, Result<(), ExecError>>;

    /// Grows the VM's writable disk to `bytes` while it runs, and the
    /// guest's filesystem with it.
    fn grow_disk(&self, bytes: u64) -> BoxFuture<'_, Result<(), ExecError>>;

    /// Snapshots the VM to disk (kept under its id) and stops it; wake it
    /// with [`Executor::wake`].
    fn sleep(&self) -> BoxFuture<'_, Result<(), ExecError>>;

    /// Syncs and powers the VM off, removing its files.
    fn shutdown(&self) -> BoxFuture<'_, Result<(), ExecError>>;
}

/// Starts VMs for jobs and wakes slept ones.
///
/// (Methods return boxed futures so the trait can be used as `dyn Executor`.)
pub trait Executor: Send + Sync + 'static {
    /// A fresh VM for `job`, up and ready to run processes.
    fn start(&self, job: &JobSpec) -> BoxFuture<'_, Result<Arc<dyn Vm>, ExecError>>;

    /// Like [`Executor::start`], with the writable disk given (a workspace's
    /// disk, or an overlay over a base).
    /// Executors without real disks ignore it.
    fn start_with_disk(
        &self,
        job: &JobSpec,
        disk: DiskSource,
    ) -> BoxFuture<'_, Result<Arc<dyn Vm>, ExecError>> {
        let _ = disk;
        self.start(job)
    }

    /// Resumes the VM slept as `vm_id`, processes and files intact. On
    /// failure the snapshot is kept, so a later try may succeed.
    fn wake(&self, vm_id: &str) -> BoxFuture<'_, Result<Arc<dyn Vm>, ExecError>>;

    /// Whether a sleep snapshot of `vm_id` exists (also after a restart).
    fn has_snapshot(&self, vm_id: &str) -> bool;

    /// Deletes the sleep snapshot of `vm_id`, if any.
    fn discard_snapshot(&self, vm_id: &str);

    /// The accelerator in use (`kvm`, `tcg`, `fake`), once known.
    fn accel(&self) -> Option<String>;

    /// Idle warm VMs now, and how many the pool keeps: `(idle, target)`.
    fn idle(&self) -> (usize, usize) {
        (0, 0)
    }
}

/// `bash -c <command>` in `/root` with `env`, killed after `timeout_ms`.
pub fn bash(command: &str, env: &BTreeMap<String, String>, timeout_ms: Option<u64>) -> RunSpec {
    RunSpec {
        argv: vec!["/bin/bash".into(), "-c".into(), command.into()],
        env: env.clone(),
        cwd: Some(SCRIPT_DIR.into()),
        stdin: false,
        timeout_ms,
        chroot: None,
        pty: None,
    }
}

/// Streams a process's output into `sink` until it exits.
pub async fn run_to_end(
    mut process: Box<dyn VmProcess>,
    sink: &OutputSink,
) -> Result<ExitInfo, ExecError> {
    let started = Instant::now();
    loop {
        match process.next_event().await? {
            Some(ProcessEvent::Stdout(b)) => sink.stdout(b).await,
            Some(ProcessEvent::Stderr(b)) => sink.stderr(b).await,
            Some(ProcessEvent::Exited {
                code, timed_out, ..
            }) => {
                return Ok(ExitInfo {
                    exit_code: code,
                    timed_out,
                    script_duration_ms: elapsed_ms(started),
                    disk_trouble: None,
                })
            }
            None => return Err(ExecError::Lost("the guest agent went away".into())),
        }
    }
}

/// Milliseconds since `t`.
pub fn elapsed_ms(t: Instant) -> i64 {
    i64::try_from(t.elapsed().as_millis()).unwrap_or(i64::MAX)
}
