//! Template snapshots: boot the image once, snapshot it, start every
//! sandbox by restoring it (DESIGN.md §1: never cold-boot on the request path).
//!
//! Two kinds, per image, accelerator and memory size:
//! - [`TemplateKind::Mounted`], for sandboxes with a fresh disk (the warm
//!   pool, ephemeral jobs): the template mounts its own freshly made disk
//!   and switches into the root before the snapshot. Each clone attaches a
//!   qcow2 overlay over that (read-only) disk, which is exactly the disk
//!   the snapshot's page cache and mounts describe, as in a migration with
//!   shared storage; its `Setup` is then only a new identity.
//! - [`TemplateKind::Blank`], for sandboxes on an existing disk (a
//!   workspace, a base): taken after the agent's first stage (modules
//!   loaded, port open) and before `Setup`, so no disk is mounted in it and
//!   each clone mounts the disk it brings.
//!
//! RAM lives in a file (`x-ignore-shared`): the template maps it shared
//! while booting, clones map it private, so they share its pages until they
//! write. Each is a [`TemplateDir`] of the image's, named
//! `v<N>-<accel>[-tsc<MHz>]-<mem>m[-mounted]`; its `template.json` is
//! written last and marks it complete.

use crate::accel::Accel;
use crate::image::GuestImage;
use crate::layout::{Layout, TemplateDir};
use crate::qmp::Qmp;
use crate::sandbox::{Boot, DiskFormat, DiskSource, Runtime, SandboxOptions};
use crate::VmError;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A complete template snapshot.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Template {
    pub dir: PathBuf,
    /// Guest RAM as of the snapshot.
    pub mem: PathBuf,
    /// Device state (the migration stream without RAM).
    pub state: PathBuf,
    pub accel: Accel,
    pub memory_mb: u32,
    /// How long the snapshot took, for the record.
    pub snapshot_ms: u64,
    /// Size of the placeholder disk the template was booted with: a clone
    /// with a disk of this size needs no resize (and no wait for the guest
    /// to see one).
    #[serde(default = "legacy_disk_bytes")]
    pub disk_bytes: u64,
    /// The mounted template's disk (read-only from now on): clones get a
    /// qcow2 overlay over it. `None` for a blank template.
    #[serde(default)]
    pub disk: Option<PathBuf>,
}

/// Which state the template's guest is in; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TemplateKind {
    /// No disk mounted: clones mount their own (workspaces, bases).
    Blank,
    /// Root switched onto the template's own disk: clones overlay it.
    Mounted,
}

fn legacy_disk_bytes() -> u64 {
    1 << 30
}

/// Bumped whenever what goes into a template changes (kernel command line,
/// warm-up, placeholder disk), so old snapshots are not reused.
const TEMPLATE_VERSION: u32 = 4;

fn template_dir(
    layout: &Layout,
    image: &GuestImage,
    accel: Accel,
    memory_mb: u32,
    kind: TemplateKind,
) -> TemplateDir {
    let suffix = match kind {
        TemplateKind::Blank => "",
        TemplateKind::Mounted => "-mounted",
    };
    // A TCG guest's clock rate is set at boot, from the host's TSC rate.
    let tsc = match accel {
        Accel::Tcg => format!("-tsc{}", crate::accel::tcg_tsc_khz() / 1000),
        Accel::Kvm => String::new(),
    };
    let name = format!("v{TEMPLATE_VERSION}-{accel}{tsc}-{memory_mb}m{suffix}");
    layout.template(&image.hash, &name)
}

fn load(dir: &TemplateDir) -> Option<Template> {
    let t: Template = serde_json::from_slice(&std::fs::read(dir.record()).ok()?).ok()?;
    let disk_ok = t.disk.as_ref().is_none_or(|d| d.is_file());
    (t.mem.is_file() && t.state.is_file() && disk_ok).then_some(t)
}

/// Returns the template, making it if it does not exist yet.
pub(crate) async fn find_or_create(
    rt: &Runtime,
    image: &GuestImage,
    accel: Accel,
    memory_mb: u32,
    kind: TemplateKind,
) -> Result<Template, VmError> {
    let dir = template_dir(rt.layout(), image, accel, memory_mb, kind);
    if let Some(t) = load(&dir) {
        return Ok(t);
    }
    let t0 = Instant::now();
    // Built in a private dir and renamed into place, so a crash or a
    // concurrent server never sees half a template.
    let tmp = TemplateDir::at(
        dir.path()
            .with_file_name(format!(".tmp-{}", uuid::Uuid::new_v4())),
    );
    std::fs::create_dir_all(tmp.path()).map_err(|e| VmError::io(tmp.path(), e))?;
    let result = snapshot(rt, image, accel, memory_mb, kind, &tmp, &dir).await;
    if let Err(e) = &result {
        let _ = std::fs::remove_dir_all(tmp.path());
        return Err(VmError::Other(format!(
            "making the template snapshot failed: {e}"
        )));
    }
    match std::fs::rename(tmp.path(), dir.path()) {
        Ok(()) => {}
        Err(_) if load(&dir).is_some() => {
            let _ = std::fs::remove_dir_all(tmp.path()); // another process won the race
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(tmp.path());
            return Err(VmError::io(dir.path(), e));
        }
    }
    let t = load(&dir).ok_or_else(|| VmError::Other("template vanished after creation".into()))?;
    tracing::info!(%accel, memory_mb, ?kind, ms = t0.elapsed().as_millis() as u64, "template snapshot made");
    Ok(t)
}

async fn snapshot(
    rt: &Runtime,
    image: &GuestImage,
    accel: Accel,
    memory_mb: u32,
    kind: TemplateKind,
    tmp: &TemplateDir,
    final_dir: &TemplateDir,
) -> Result<(), VmError> {
    let mem = tmp.mem();
    let mut opts = SandboxOptions::new(format!("template-{}", uuid::Uuid::new_v4()));
    opts.memory_mb = memory_mb;
    // The default disk size, so the common clone needs no resize.
    opts.disk_gb = SandboxOptions::new("").disk_gb;
    let disk_bytes = u64::from(opts.disk_gb) << 30;
    let disk = match kind {
        TemplateKind::Blank => None,
        TemplateKind::Mounted => {
            let path = tmp.disk();
            crate::disk::create_disk(&path, disk_bytes).await?;
            opts.disk = DiskSource::Existing {
                path,
                format: DiskFormat::Raw,
                bytes: disk_bytes,
            };
            Some(final_dir.disk())
        }
    };
    let sb = rt
        .launch(image, accel, opts, Boot::TemplateSource(&mem))
        .await?;
    let chroot = match kind {
        TemplateKind::Blank => Some("/mnt/ro"),
        TemplateKind::Mounted => {
            // Mount and switch root now; clones only take on an identity.
            // The placeholder machine-id puts the file on the disk's upper
            // layer now, so a clone writing its own does no copy-up.
            let no_identity = mags_proto::SetupSpec {
                hostname: "mags-vm".into(),
                machine_id: "0".repeat(32),
                ..Default::default()
            };
            sb.agent().setup(no_identity).await?;
            None
        }
    };
    warm_page_cache(&sb, chroot).await;
    let qmp_path = sb.qmp_socket();
    // Hang up so the snapshot holds an agent waiting for its next host.
    sb.disconnect_agent().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut qmp = Qmp::connect(&qmp_path, Duration::from_secs(5)).await?;
    let t0 = Instant::now();
    qmp.execute("stop", json!({})).await?;
    qmp.execute(
        "migrate-set-capabilities",
        json!({"capabilities": [{"capability": "x-ignore-shared", "state": true}]}),
    )
    .await?;
    let state = tmp.state();
    qmp.execute(
        "migrate",
        json!({"uri": format!("exec:cat > {}", shell_quote(&state))}),
    )
    .await?;
    qmp.wait_migration(Duration::from_secs(60)).await?;
    let snapshot_ms = t0.elapsed().as_millis() as u64;
    drop(qmp);
    sb.kill().await;
    // Made by a jailed QEMU under a uid that another sandbox may get later.
    crate::jail::give_back(tmp.path()).map_err(|e| VmError::io(tmp.path(), e))?;
    if disk.is_some() {
        // Clones read it through their overlays; nothing may write it again.
        let _ = std::fs::set_permissions(
            tmp.disk(),
            std::os::unix::fs::PermissionsExt::from_mode(0o444),
        );
    }
    let t = Template {
        dir: final_dir.path().to_path_buf(),
        mem: final_dir.mem(),
        state: final_dir.state(),
        accel,
        memory_mb,
        snapshot_ms,
        disk_bytes,
        disk,
    };
    let json = serde_json::to_vec_pretty(&t).map_err(|e| VmError::Other(e.to_string()))?;
    let path = tmp.record();
    std::fs::write(&path, json).map_err(|e| VmError::io(&path, e))
}

/// What a template runs once (from the read-only root, or the mounted one),
/// so the files a job usually touches first are already in the (shared)
/// guest page cache.
const WARM_UP: &str =
    "true; ls / >/dev/null; cat /etc/os-release >/dev/null; uname -r >/dev/null; \
     hostname >/dev/null; head -1 /etc/passwd >/dev/null; python3 -c pass; git --version; \
     curl --version; node -e 0";

async fn warm_page_cache(sb: &crate::Sandbox, chroot: Option<&str>) {
    let spec = mags_proto::RunSpec {
        argv: vec!["/bin/bash".into(), "-c".into(), WARM_UP.into()],
        chroot: chroot.map(str::to_string),
        timeout_ms: Some(60_000),
        ..Default::default()
    };
    let warmed = async { sb.agent().run(spec).await?.collect().await };
    match warmed.await {
        Ok((0, _, _)) => {}
        Ok((code, _, err)) => tracing::warn!(
            code,
            "template warm-up ended badly: {}",
            String::from_utf8_lossy(&err).trim()
        ),
        Err(e) => tracing::warn!("template warm-up failed: {e}"),
    }
}

pub(crate) fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

/// Loads a snapshot (`state`: a template's, or a slept sandbox's) into a
/// QEMU started with `-incoming defer` and runs it; with `disk_bytes`,
/// tells the guest about the clone's disk size. `ignore_shared` must match
/// how the snapshot was taken (templates: RAM in a file; sleep: in the stream).
pub(crate) async fn restore_into(
    qmp_socket: &Path,
    state: &Path,
    ignore_shared: bool,
    disk_bytes: Option<u64>,
) -> Result<(), VmError> {
    let mut qmp = Qmp::connect(qmp_socket, Duration::from_secs(10)).await?;
    qmp.execute(
        "migrate-set-capabilities",
        json!({"capabilities": [{"capability": "x-ignore-shared", "state": ignore_shared}]}),
    )
    .await?;
    qmp.execute(
        "migrate-incoming",
        json!({"uri": format!("exec:cat {}", shell_quote(state))}),
    )
    .await?;
    qmp.wait_migration(Duration::from_secs(30)).await?;
    let status = qmp.execute("query-status", json!({})).await?;
    if status.get("status").and_then(|s| s.as_str()) != Some("running") {
        qmp.execute("cont", json!({})).await?;
    }
    // The template's disk was a placeholder; this one may be bigger. Resizing
    // makes QEMU raise a config interrupt so the guest re-reads the capacity.
    if let Some(size) = disk_bytes {
        qmp.resize_disk(size).await?;
    }
    Ok(())
}
