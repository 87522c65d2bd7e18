//! One running VM ([`Sandbox`]) and the [`Runtime`] that starts them.
//!
//! A sandbox's files live in its own dir ([`crate::layout::SandboxDir`]):
//! its writable disk, the agent and QMP sockets, the console log and
//! `qemu.pid`. The pid file lets a restarted server find and kill what a
//! crashed one left running.

use crate::accel::{self, Accel};
use crate::agent::AgentConn;
use crate::disk::{create_disk, create_overlay, sparse_file};
use crate::image::{self, GuestImage, ImageConfig, ImageProgress, ImageVariant};
use crate::jail::{Confine, Confinement, Jail, JailConfig, JailStatus};
use crate::layout::{Layout, SandboxDir};
use crate::qemu::{self, Memory, QemuSpec};
use crate::sleep::SleepRecord;
use crate::template::{self, Template, TemplateKind};
use crate::VmError;
use mags_proto::SetupSpec;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// Host-wide settings for running sandboxes.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Server data dir, laid out as [`Layout`] says.
    pub data_dir: PathBuf,
    /// The static guest agent binary.
    pub agent_bin: PathBuf,
    /// Force an accelerator instead of probing.
    pub accel: Option<Accel>,
    /// Where guest images are cached; `<data_dir>/images` when `None`.
    /// Several servers (and test runs) on one host can share it.
    pub images_dir: Option<PathBuf>,
    /// The egress proxy's unix socket ([`crate::egress`]); `None`: guests
    /// have no outbound network at all.
    pub egress_socket: Option<PathBuf>,
    /// Extra CA certificates (PEM) guests trust; see
    /// [`crate::net::local_ca_certs`].
    pub extra_ca_certs: String,
    /// How each QEMU process is confined ([`crate::jail`]).
    pub jail: JailConfig,
}

impl RuntimeConfig {
    /// Where everything lives.
    pub fn layout(&self) -> Layout {
        Layout::new(&self.data_dir).with_images_dir(self.images_dir.clone())
    }

    /// The image cache directory in effect.
    pub fn images_dir(&self) -> PathBuf {
        self.layout().images_dir().to_path_buf()
    }
}

/// Per-sandbox settings.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    pub id: String,
    pub memory_mb: u32,
    pub vcpus: u32,
    /// Size of a [`DiskSource::Fresh`] disk.
    pub disk_gb: u32,
    /// Which writable disk the guest mounts.
    pub disk: DiskSource,
    /// Which image (root filesystem) the sandbox runs.
    pub variant: ImageVariant,
}

/// Image format of an existing disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    #[default]
    Raw,
    /// A copy-on-write overlay (e.g. over a read-only base image).
    Qcow2,
}

impl DiskFormat {
    /// QEMU's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

/// The sandbox's writable disk (mounted as the overlay's upper layer).
/// The guest only mounts it after a template restore, so any of these can
/// be attached to a restored clone.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum DiskSource {
    /// A new sparse ext4 disk of `disk_gb` in the sandbox dir, removed with it.
    #[default]
    Fresh,
    /// An ext4 image the caller owns (a workspace's disk, or an overlay
    /// over a base); it outlives the sandbox.
    Existing {
        path: PathBuf,
        format: DiskFormat,
        /// Size the guest sees, in bytes.
        bytes: u64,
    },
}

impl SandboxOptions {
    /// Defaults for a sandbox called `id`: 256 MiB, 1 vCPU, 2 GB disk.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            memory_mb: 256,
            vcpus: 1,
            disk_gb: 2,
            disk: DiskSource::Fresh,
            variant: ImageVariant::Standard,
        }
    }
}

/// Starts sandboxes; one per server.
pub struct Runtime {
    cfg: RuntimeConfig,
    layout: Layout,
    /// One image per variant, in [`ImageVariant::ALL`] order.
    images: [OnceCell<GuestImage>; ImageVariant::ALL.len()],
    accel: OnceCell<Accel>,
    /// Made templates by image hash, accelerator, memory size and kind.
    templates: tokio::sync::Mutex<HashMap<TemplateKey, Template>>,
    /// Set up on first use; an error if confinement is required but impossible.
    jail: std::sync::OnceLock<Result<Jail, String>>,
    /// Each template's RAM as a sealed memfd, by RAM file ([`crate::jail`]).
    template_ram: std::sync::Mutex<HashMap<PathBuf, Arc<std::os::fd::OwnedFd>>>,
}

type TemplateKey = (String, Accel, u32, TemplateKind);

impl Runtime {
    pub fn new(cfg: RuntimeConfig) -> Self {
        Self {
            layout: cfg.layout(),
            cfg,
            images: Default::default(),
            accel: OnceCell::new(),
            templates: Default::default(),
            jail: Default::default(),
            template_ram: Default::default(),
        }
    }

    /// Template `t`'s RAM as an immutable memfd, made on first use.
    fn template_ram(&self, t: &Template) -> Result<Arc<std::os::fd::OwnedFd>, VmError> {
        let mut made = self.template_ram.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(fd) = made.get(&t.mem) {
            return Ok(fd.clone());
        }
        let fd = Arc::new(crate::jail::sealed_copy(&t.mem).map_err(|e| VmError::io(&t.mem, e))?);
        made.insert(t.mem.clone(), fd.clone());
        Ok(fd)
    }

    /// The jail every QEMU of this runtime runs in.
    fn jail(&self) -> Result<&Jail, VmError> {
        self.jail
            .get_or_init(|| {
                Jail::new(self.cfg.jail.clone(), &self.cfg.data_dir).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| VmError::Other(e.clone()))
    }

    /// What confines this runtime's QEMU processes (an error if
    /// confinement is required and this host cannot provide it).
    pub fn jail_status(&self) -> Result<JailStatus, VmError> {
        Ok(self.jail()?.status())
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.cfg
    }

    /// Where this runtime keeps its files.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn image_config(&self, variant: ImageVariant) -> ImageConfig {
        ImageConfig {
            images_dir: self.layout.images_dir().to_path_buf(),
            agent_bin: self.cfg.agent_bin.clone(),
            variant,
        }
    }

    fn image_cell(&self, variant: ImageVariant) -> &OnceCell<GuestImage> {
        &self.images[variant.index()]
    }

    /// The standard image if it is already built (cheap; no build, no network).
    pub fn cached_image(&self) -> Result<Option<GuestImage>, VmError> {
        self.cached_variant(ImageVariant::Standard)
    }

    /// The image of `variant` if it is already built.
    pub fn cached_variant(&self, variant: ImageVariant) -> Result<Option<GuestImage>, VmError> {
        if let Some(img) = self.image_cell(variant).get() {
            return Ok(Some(img.clone()));
        }
        Ok(image::find_image(&self.image_config(variant))?)
    }

    /// Builds the standard guest image if needed (the blocking work runs
    /// off the async threads).
    pub async fn ensure_image(
        &self,
        progress: impl Fn(ImageProgress) + Send + 'static,
    ) -> Result<GuestImage, VmError> {
        self.ensure_variant(ImageVariant::Standard, progress).await
    }

    /// Builds the image of `variant` if needed; concurrent callers share
    /// one build.
    pub async fn ensure_variant(
        &self,
        variant: ImageVariant,
        progress: impl Fn(ImageProgress) + Send + 'static,
    ) -> Result<GuestImage, VmError> {
        let cfg = self.image_config(variant);
        let img = self
            .image_cell(variant)
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
    /// server, except slept ones (they can still be woken); returns how many
    /// processes were killed.
    pub fn reap_orphans(&self) -> usize {
        let mut killed = 0;
        for dir in self.layout.sandboxes() {
            if kill_recorded_qemu(&dir) {
                killed += 1;
            }
            if SleepRecord::load(&dir).is_none() {
                let _ = std::fs::remove_dir_all(dir.path());
            }
        }
        if killed > 0 {
            tracing::warn!(killed, "killed QEMU processes left by a previous server");
        }
        killed
    }

    /// Starts a sandbox: restored from the template snapshot (made once per
    /// image, accelerator and memory size), or cold-booted if no template
    /// can be made. Returns when the guest has its root mounted and its own
    /// identity.
    pub async fn start(&self, opts: SandboxOptions) -> Result<Sandbox, VmError> {
        let image = self.ensure_variant(opts.variant, |_| {}).await?;
        let accel = self.accel().await?;
        let kind = match opts.disk {
            DiskSource::Fresh => TemplateKind::Mounted,
            DiskSource::Existing { .. } => TemplateKind::Blank,
        };
        match self.template(&image, accel, opts.memory_mb, kind).await {
            Ok(t) => self.launch(&image, accel, opts, Boot::Restore(&t)).await,
            Err(e) => {
                tracing::warn!("no template snapshot, cold-booting: {e}");
                self.launch(&image, accel, opts, Boot::Cold).await
            }
        }
    }

    /// Cold-boots a sandbox (no snapshot involved).
    pub async fn start_cold(&self, opts: SandboxOptions) -> Result<Sandbox, VmError> {
        let image = self.ensure_variant(opts.variant, |_| {}).await?;
        let accel = self.accel().await?;
        self.launch(&image, accel, opts, Boot::Cold).await
    }

    /// The template of this kind for this image/accelerator/memory size,
    /// made if missing.
    pub async fn template(
        &self,
        image: &GuestImage,
        accel: Accel,
        memory_mb: u32,
        kind: TemplateKind,
    ) -> Result<Template, VmError> {
        let mut made = self.templates.lock().await;
        let key = (image.hash.clone(), accel, memory_mb, kind);
        if let Some(t) = made.get(&key) {
            return Ok(t.clone());
        }
        let t = template::find_or_create(self, image, accel, memory_mb, kind).await?;
        made.insert(key, t.clone());
        Ok(t)
    }

    /// Boots or restores a VM and waits until its agent answers; for
    /// anything but a template source, also sends `Setup`.
    pub(crate) async fn launch(
        &self,
        image: &GuestImage,
        accel: Accel,
        opts: SandboxOptions,
        boot: Boot<'_>,
    ) -> Result<Sandbox, VmError> {
        let t0 = Instant::now();
        let dir = self.layout.sandbox(&opts.id);
        std::fs::create_dir_all(dir.path()).map_err(|e| VmError::io(dir.path(), e))?;
        // A slept sandbox's files must survive a failed wake.
        let guard = (!matches!(boot, Boot::Wake(_))).then(|| DirGuard(dir.path().to_path_buf()));
        // A fresh disk is an overlay of a mounted template's disk (qcow2),
        // or a new ext4 image (raw).
        let overlay = dir.overlay_disk();
        let template_disk = match &boot {
            Boot::Restore(t) => t.disk.as_deref(),
            _ => None,
        };
        let fresh_overlay =
            template_disk.is_some() || (matches!(boot, Boot::Wake(_)) && overlay.exists());
        let (disk, disk_format, disk_bytes) = match &opts.disk {
            DiskSource::Fresh if fresh_overlay => {
                (overlay, DiskFormat::Qcow2, u64::from(opts.disk_gb) << 30)
            }
            DiskSource::Fresh => (
                dir.raw_disk(),
                DiskFormat::Raw,
                u64::from(opts.disk_gb) << 30,
            ),
            DiskSource::Existing {
                path,
                format,
                bytes,
            } => (path.clone(), *format, *bytes),
        };
        match (&boot, &opts.disk) {
            (Boot::Wake(_), _) | (_, DiskSource::Existing { .. }) => {}
            // A blank template never mounts its disk: a placeholder will do.
            (Boot::TemplateSource(_), _) => sparse_file(&disk, disk_bytes)?,
            // Made at the template's size; QEMU grows it after the restore.
            (Boot::Restore(t), _) => match &t.disk {
                Some(base) => create_overlay(base, &disk, t.disk_bytes).await?,
                None => create_disk(&disk, disk_bytes).await?,
            },
            _ => create_disk(&disk, disk_bytes).await?,
        }
        let (memory, incoming) = match &boot {
            Boot::Cold => (Memory::Anonymous, false),
            Boot::TemplateSource(mem) => (Memory::SharedFile(mem.to_path_buf()), false),
            Boot::Restore(t) => {
                let fd = std::os::fd::AsRawFd::as_raw_fd(&*self.template_ram(t)?);
                let path = PathBuf::from(format!("/proc/self/fd/{fd}"));
                (Memory::PrivateFile(path), true)
            }
            Boot::Wake(_) => (Memory::Anonymous, true),
        };
        let spec = QemuSpec {
            accel,
            memory_mb: opts.memory_mb,
            vcpus: opts.vcpus,
            kernel: image.kernel.clone(),
            initrd: image.initrd.clone(),
            rootfs: image.rootfs.clone(),
            disk,
            disk_format,
            agent_socket: dir.agent_socket(),
            qmp_socket: dir.qmp_socket(),
            console_log: dir.console_log(),
            memory,
            incoming,
            egress_cmd: crate::net::egress_cmd(
                &self.cfg.agent_bin,
                self.cfg.egress_socket.as_deref(),
                &opts.id,
            ),
            seccomp: self.jail()?.seccomp(),
        };
        check_socket_path(&spec.agent_socket)?;
        let log_path = dir.qemu_log();
        let log = std::fs::File::create(&log_path).map_err(|e| VmError::io(&log_path, e))?;
        let jail = self.confine(&opts, &spec, &dir, &boot)?;
        let mut child = qemu::command(&spec, log, &jail)
            .map_err(VmError::Spawn)?
            .spawn()
            .map_err(VmError::Spawn)?;
        let pid = child.id().unwrap_or(0);
        let _ = std::fs::write(dir.pid_file(), pid.to_string());

        let boot_timeout = match (accel, &boot) {
            (_, Boot::Restore(_) | Boot::Wake(_)) => Duration::from_secs(30),
            (Accel::Kvm, _) => Duration::from_secs(20),
            (Accel::Tcg, _) => Duration::from_secs(90),
        };
        let spawned_ms = t0.elapsed().as_millis() as u64;
        let (mut restored_ms, mut connected_ms) = (0, 0);
        let ready = async {
            match &boot {
                Boot::Restore(t) => {
                    template::restore_into(
                        &spec.qmp_socket,
                        &t.state,
                        true,
                        (disk_bytes != t.disk_bytes).then_some(disk_bytes),
                    )
                    .await?
                }
                Boot::Wake(w) => {
                    template::restore_into(&spec.qmp_socket, &w.state, false, None).await?
                }
                _ => {}
            }
            restored_ms = t0.elapsed().as_millis() as u64;
            let agent = connect_agent(&spec.agent_socket, boot_timeout).await?;
            connected_ms = t0.elapsed().as_millis() as u64;
            match &boot {
                Boot::TemplateSource(_) => {}
                // Same machine, new moment: clock and entropy, identity kept.
                Boot::Wake(_) => {
                    let mut id = self.identity(0)?;
                    id.machine_id.clear();
                    agent.setup(id).await?;
                }
                // A clone of the mounted template whose disk kept the
                // template's size has nothing to wait for or grow.
                Boot::Restore(t) if t.disk.is_some() && disk_bytes == t.disk_bytes => {
                    agent.setup(self.identity(0)?).await?
                }
                _ => agent.setup(self.identity(disk_bytes)?).await?,
            }
            Ok::<_, VmError>(agent)
        };
        let agent = tokio::select! {
            r = ready => r,
            status = child.wait() => Err(VmError::EarlyExit(format!(
                "QEMU exited ({})",
                status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
            ))),
        };
        let agent = match agent {
            Ok(a) => a,
            Err(VmError::EarlyExit(msg)) => {
                let _ = child.start_kill();
                return Err(VmError::EarlyExit(format!("{msg}; {}", diagnostics(&dir))));
            }
            Err(e) => {
                let _ = child.start_kill();
                return Err(VmError::Boot(format!("{e}; {}", diagnostics(&dir))));
            }
        };
        std::mem::forget(guard);
        let how = match boot {
            Boot::Cold => "cold boot",
            Boot::TemplateSource(_) => "template boot",
            Boot::Restore(_) => "restore",
            Boot::Wake(_) => "wake",
        };
        tracing::info!(sandbox = %opts.id, %accel, how, ms = t0.elapsed().as_millis() as u64, "sandbox started");
        tracing::debug!(
            sandbox = %opts.id,
            spawned_ms,
            restored_ms,
            connected_ms,
            "start phases (ms since start: disk ready + QEMU spawned, snapshot loaded, agent answered)"
        );
        Ok(Sandbox {
            id: opts.id.clone(),
            dir,
            child: Some(child),
            jail,
            agent,
            started: t0,
            opts,
            accel,
            image: image.clone(),
            keep_dir: false,
        })
    }
}

impl Runtime {
    /// The confinement of the QEMU `spec` describes: its own dir and disk
    /// writable; image, template, backing files and the egress helper
    /// readable; the egress socket reachable.
    fn confine(
        &self,
        opts: &SandboxOptions,
        spec: &QemuSpec,
        dir: &SandboxDir,
        boot: &Boot<'_>,
    ) -> Result<Confinement, VmError> {
        let mut c = Confine {
            id: opts.id.clone(),
            writable: vec![dir.path().to_path_buf()],
            readable: vec![
                spec.kernel.clone(),
                spec.initrd.clone(),
                spec.rootfs.clone(),
            ],
            memory_mb: opts.memory_mb,
            vcpus: opts.vcpus,
            kvm: spec.accel == Accel::Kvm,
            ..Confine::default()
        };
        if !spec.disk.starts_with(dir.path()) {
            c.writable.push(spec.disk.clone());
        }
        c.readable.extend(crate::disk::backing_chain(&spec.disk));
        match boot {
            Boot::Restore(t) => {
                c.readable.push(t.state.clone());
                c.inherit = Some(std::os::fd::AsRawFd::as_raw_fd(&*self.template_ram(t)?));
            }
            Boot::TemplateSource(mem) => c.writable.extend(mem.parent().map(Path::to_path_buf)),
            Boot::Cold | Boot::Wake(_) => {}
        }
        if let Some(sock) = &self.cfg.egress_socket {
            if self.cfg.agent_bin.is_file() {
                c.readable.push(self.cfg.agent_bin.clone());
                c.sockets.push(sock.clone());
            }
        }
        self.jail()?.confine(&c)
    }

    /// A fresh identity, and the network as this runtime provides it.
    fn identity(&self, disk_bytes: u64) -> Result<SetupSpec, VmError> {
        let mut id = fresh_identity(disk_bytes)?;
        let mut net = crate::net::setup(self.cfg.egress_socket.is_some());
        net.ca_certs = self.cfg.extra_ca_certs.clone();
        id.network = Some(net);
        Ok(id)
    }
}

/// How a VM comes to life.
pub(crate) enum Boot<'a> {
    Cold,
    /// Boot with RAM in this shared file, to be snapshotted as a template.
    TemplateSource(&'a Path),
    Restore(&'a Template),
    /// Resume a slept sandbox in its own dir from its own snapshot.
    Wake(&'a SleepRecord),
}

/// A new identity for a VM: hostname, machine id, entropy, clock.
fn fresh_identity(disk_bytes: u64) -> Result<SetupSpec, VmError> {
    let mut entropy = vec![0u8; 64];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut entropy))
        .map_err(|e| VmError::io("/dev/urandom", e))?;
    let unix_time_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    Ok(SetupSpec {
        hostname: "mags-vm".into(),
        machine_id: uuid::Uuid::new_v4().simple().to_string(),
        entropy,
        unix_time_ns,
        disk_bytes,
        network: None,
    })
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

async fn connect_agent(sock: &Path, within: Duration) -> Result<AgentConn, VmError> {
    let deadline = Instant::now() + within;
    let stream = loop {
        match tokio::net::UnixStream::connect(sock).await {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(2)).await
            }
            Err(e) => return Err(VmError::io(sock, e)),
        }
    };
    let (r, w) = stream.into_split();
    AgentConn::handshake(r, w, deadline.saturating_duration_since(Instant::now())).await
}

/// The last lines of the console and QEMU logs, to explain a failed boot.
fn diagnostics(dir: &SandboxDir) -> String {
    let tail = |path: PathBuf| {
        let s = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    };
    format!(
        "qemu: [{}] console: [{}]",
        tail(dir.qemu_log()),
        tail(dir.console_log())
    )
}

/// Kills the QEMU recorded in the dir's `qemu.pid` if it is still that process.
fn kill_recorded_qemu(dir: &SandboxDir) -> bool {
    let Some(pid) = std::fs::read_to_string(dir.pid_file())
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    else {
        return false;
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let needle = dir.path().display().to_string();
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
    pub(crate) dir: SandboxDir,
    pub(crate) child: Option<tokio::process::Child>,
    /// Its uid and cgroup; released when the sandbox is dropped.
    jail: Confinement,
    agent: AgentConn,
    started: Instant,
    pub(crate) opts: SandboxOptions,
    pub(crate) accel: Accel,
    pub(crate) image: GuestImage,
    /// Set once slept: the dir holds the sleep snapshot and must stay.
    pub(crate) keep_dir: bool,
}

impl Sandbox {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn agent(&self) -> &AgentConn {
        &self.agent
    }

    /// QEMU's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// QEMU's confinement (uid, cgroup).
    pub fn confinement(&self) -> &Confinement {
        &self.jail
    }

    /// Whether QEMU is still running.
    pub fn is_alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// How QEMU ended, once it has (`None` while it runs).
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Narrows the egress policy for this sandbox from now on (a job's
    /// `no_internet`); kept in its dir, so it holds across sleep and wake.
    pub fn set_egress(&self, rules: &crate::egress::SandboxEgress) -> Result<(), VmError> {
        rules
            .write(&self.dir)
            .map_err(|e| VmError::io(self.dir.egress_rules(), e))
    }

    /// The sandbox's files.
    pub fn files(&self) -> &SandboxDir {
        &self.dir
    }

    /// The sandbox's QMP socket.
    pub fn qmp_socket(&self) -> PathBuf {
        self.dir.qmp_socket()
    }

    /// Drops this handle's agent connection (the agent waits for the next).
    pub(crate) async fn disconnect_agent(&self) {
        self.agent.close().await;
    }

    /// Kills QEMU at once and removes the sandbox's files.
    pub async fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
        let _ = std::fs::remove_dir_all(self.dir.path());
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
        let _ = std::fs::remove_dir_all(self.dir.path());
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
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(self.dir.path());
        }
    }
}

/// Shared handle, for callers that keep sandboxes in maps.
pub type SharedSandbox = Arc<Sandbox>;
