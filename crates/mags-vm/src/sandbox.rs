//! One running VM ([`Sandbox`]) and the [`Runtime`] that starts them.
//!
//! A sandbox's files live in `<data_dir>/sandboxes/<id>/`: its writable disk,
//! the agent and QMP sockets, the console log and `qemu.pid`. The pid file
//! lets a restarted server find and kill what a crashed one left running.

use crate::accel::{self, Accel};
use crate::agent::AgentConn;
use crate::image::{self, GuestImage, ImageConfig, ImageProgress};
use crate::qemu::{self, QemuSpec};
use crate::VmError;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// Host-wide settings for running sandboxes.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Server data dir; sandboxes live under `<data_dir>/sandboxes/<id>`,
    /// images under `<data_dir>/images`.
    pub data_dir: PathBuf,
    /// The static guest agent binary.
    pub agent_bin: PathBuf,
    /// Force an accelerator instead of probing.
    pub accel: Option<Accel>,
    /// Where guest images are cached; `<data_dir>/images` when `None`.
    /// Several servers (and test runs) on one host can share it.
    pub images_dir: Option<PathBuf>,
}

impl RuntimeConfig {
    /// The image cache directory in effect.
    pub fn images_dir(&self) -> PathBuf {
        self.images_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("images"))
    }
}

/// Per-sandbox settings.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    pub id: String,
    pub memory_mb: u32,
    pub vcpus: u32,
    pub disk_gb: u32,
}

impl SandboxOptions {
    /// Defaults for a sandbox called `id`: 256 MiB, 1 vCPU, 2 GB disk.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            memory_mb: 256,
            vcpus: 1,
            disk_gb: 2,
        }
    }
}

/// Starts sandboxes; one per server.
pub struct Runtime {
    cfg: RuntimeConfig,
    image: OnceCell<GuestImage>,
    accel: OnceCell<Accel>,
}

impl Runtime {
    pub fn new(cfg: RuntimeConfig) -> Self {
        Self {
            cfg,
            image: OnceCell::new(),
            accel: OnceCell::new(),
        }
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.cfg
    }

    fn image_config(&self) -> ImageConfig {
        ImageConfig {
            images_dir: self.cfg.images_dir(),
            agent_bin: self.cfg.agent_bin.clone(),
        }
    }

    /// The image if it is already built (cheap; no build, no network).
    pub fn cached_image(&self) -> Result<Option<GuestImage>, VmError> {
        if let Some(img) = self.image.get() {
            return Ok(Some(img.clone()));
        }
        Ok(image::find_image(&self.image_config())?)
    }

    /// Builds the guest image if needed (the blocking work runs off the async threads).
    pub async fn ensure_image(
        &self,
        progress: impl Fn(ImageProgress) + Send + 'static,
    ) -> Result<GuestImage, VmError> {
        let cfg = self.image_config();
        let img = self
            .image
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || image::ensure_image(&cfg, &progress))
                    .await
                    .map_err(|e| VmError::Other(format!("image build task failed: {e}")))?
                    .map_err(VmError::from)
            })
            .await?;
        Ok(img.clone())
    }

    /// The accelerator in use, probing once (the verdict is cached on disk) if unknown.
    pub async fn accel(&self) -> Result<Accel, VmError> {
        if let Some(a) = self.cfg.accel {
            return Ok(a);
        }
        let image = self.ensure_image(|_| {}).await?;
        let a = self
            .accel
            .get_or_try_init(|| accel::detect(self, &image))
            .await?;
        Ok(*a)
    }

    /// Kills QEMU processes and removes sandbox dirs left by a previous
    /// server; returns how many processes were killed.
    pub fn reap_orphans(&self) -> usize {
        let dir = self.cfg.data_dir.join("sandboxes");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return 0;
        };
        let mut killed = 0;
        for e in entries.flatten() {
            if kill_recorded_qemu(&e.path()) {
                killed += 1;
            }
            let _ = std::fs::remove_dir_all(e.path());
        }
        if killed > 0 {
            tracing::warn!(killed, "killed QEMU processes left by a previous server");
        }
        killed
    }

    /// Boots a sandbox and waits until its agent answers.
    pub async fn start(&self, opts: SandboxOptions) -> Result<Sandbox, VmError> {
        let image = self.ensure_image(|_| {}).await?;
        let accel = self.accel().await?;
        self.start_with(&image, accel, opts).await
    }

    /// Boots a sandbox with an explicit image and accelerator.
    pub(crate) async fn start_with(
        &self,
        image: &GuestImage,
        accel: Accel,
        opts: SandboxOptions,
    ) -> Result<Sandbox, VmError> {
        let t0 = Instant::now();
        let dir = self.cfg.data_dir.join("sandboxes").join(&opts.id);
        std::fs::create_dir_all(&dir).map_err(|e| VmError::io(&dir, e))?;
        let guard = DirGuard(dir.clone());
        let disk = dir.join("disk.ext4");
        create_disk(&disk, opts.disk_gb).await?;
        let spec = QemuSpec {
            accel,
            memory_mb: opts.memory_mb,
            vcpus: opts.vcpus,
            kernel: image.kernel.clone(),
            initrd: image.initrd.clone(),
            rootfs: image.rootfs.clone(),
            disk,
            agent_socket: dir.join("agent.sock"),
            qmp_socket: dir.join("qmp.sock"),
            console_log: dir.join("console.log"),
        };
        check_socket_path(&spec.agent_socket)?;
        let log_path = dir.join("qemu.log");
        let log = std::fs::File::create(&log_path).map_err(|e| VmError::io(&log_path, e))?;
        let mut child = qemu::command(&spec, log)
            .map_err(VmError::Spawn)?
            .spawn()
            .map_err(VmError::Spawn)?;
        let pid = child.id().unwrap_or(0);
        let _ = std::fs::write(dir.join("qemu.pid"), pid.to_string());

        let boot_timeout = match accel {
            Accel::Kvm => Duration::from_secs(20),
            Accel::Tcg => Duration::from_secs(90),
        };
        let connect = connect_agent(&spec.agent_socket, boot_timeout);
        let agent = tokio::select! {
            r = connect => r,
            status = child.wait() => Err(VmError::EarlyExit(format!(
                "QEMU exited ({}): {}",
                status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
                diagnostics(&dir)
            ))),
        };
        let agent = match agent {
            Ok(a) => a,
            Err(e) => {
                let _ = child.start_kill();
                let msg = match e {
                    VmError::AgentTimeout(s) => VmError::EarlyExit(format!(
                        "agent did not answer within {s} s: {}",
                        diagnostics(&dir)
                    )),
                    other => other,
                };
                return Err(msg);
            }
        };
        std::mem::forget(guard);
        tracing::info!(sandbox = %opts.id, %accel, ms = t0.elapsed().as_millis() as u64, "sandbox started");
        Ok(Sandbox {
            id: opts.id,
            dir,
            child: Some(child),
            agent,
            started: t0,
        })
    }
}

/// Removes a half-made sandbox dir unless defused with `mem::forget`.
struct DirGuard(PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn check_socket_path(p: &Path) -> Result<(), VmError> {
    // sun_path is 108 bytes including the NUL.
    if p.as_os_str().len() > 107 {
        return Err(VmError::Other(format!(
            "socket path {} is too long for a unix socket; use a shorter data dir",
            p.display()
        )));
    }
    Ok(())
}

/// Creates a sparse ext4 disk of `gb` GiB.
async fn create_disk(path: &Path, gb: u32) -> Result<(), VmError> {
    let f = std::fs::File::create(path).map_err(|e| VmError::io(path, e))?;
    f.set_len(u64::from(gb) << 30)
        .map_err(|e| VmError::io(path, e))?;
    drop(f);
    let out = tokio::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1"])
        .arg(path)
        .output()
        .await
        .map_err(|e| VmError::Other(format!("mkfs.ext4 not runnable ({e}): apt-get install e2fsprogs")))?;
    if !out.status.success() {
        return Err(VmError::Other(format!(
            "mkfs.ext4 failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

async fn connect_agent(sock: &Path, within: Duration) -> Result<AgentConn, VmError> {
    let deadline = Instant::now() + within;
    let stream = loop {
        match tokio::net::UnixStream::connect(sock).await {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(2)).await,
            Err(e) => return Err(VmError::io(sock, e)),
        }
    };
    let (r, w) = stream.into_split();
    AgentConn::handshake(r, w, deadline.saturating_duration_since(Instant::now())).await
}

/// The last lines of the console and QEMU logs, to explain a failed boot.
fn diagnostics(dir: &Path) -> String {
    let tail = |name: &str| {
        let s = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    };
    format!("qemu: [{}] console: [{}]", tail("qemu.log"), tail("console.log"))
}

/// Kills the QEMU recorded in `dir/qemu.pid` if it is still that process.
fn kill_recorded_qemu(dir: &Path) -> bool {
    let Some(pid) = std::fs::read_to_string(dir.join("qemu.pid"))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    else {
        return false;
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let needle = dir.display().to_string();
    let ours = String::from_utf8_lossy(&cmdline).contains(&needle);
    if ours && pid > 0 {
        // SAFETY: plain syscall on a pid verified to be our QEMU.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    ours
}

/// A running VM. Dropping it kills the VM and removes its files.
pub struct Sandbox {
    id: String,
    dir: PathBuf,
    child: Option<tokio::process::Child>,
    agent: AgentConn,
    started: Instant,
}

impl Sandbox {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn agent(&self) -> &AgentConn {
        &self.agent
    }

    /// How long the sandbox has existed.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Asks the guest to sync and power off, then kills QEMU if it lingers,
    /// and removes the sandbox's files.
    pub async fn shutdown(mut self) -> Result<(), VmError> {
        let asked = tokio::time::timeout(Duration::from_secs(5), self.agent.shutdown()).await;
        if let Some(mut child) = self.child.take() {
            if tokio::time::timeout(Duration::from_secs(5), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        match asked {
            Ok(r) => r,
            Err(_) => Err(VmError::AgentTimeout(5)),
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Shared handle, for callers that keep sandboxes in maps.
pub type SharedSandbox = Arc<Sandbox>;
