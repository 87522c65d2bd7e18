//! Template snapshots: boot the image once, snapshot it, start every
//! sandbox by restoring it (DESIGN.md §1: never cold-boot on the request path).
//!
//! The template is taken after the agent's first stage (modules loaded, port
//! open) and before `Setup`, so no disk is mounted in it: each clone
//! attaches its own fresh disk of any size, and gets its own identity.
//! RAM lives in a file (`x-ignore-shared`): the template maps it shared
//! while booting, clones map it private, so they share its pages until they
//! write. Layout: `<images>/<image hash>/templates/v<N>-<accel>-<mem>m/{mem,state,template.json}`;
//! `template.json` is written last and marks it complete.

use crate::accel::Accel;
use crate::image::GuestImage;
use crate::qmp::Qmp;
use crate::sandbox::{Boot, Runtime, SandboxOptions};
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
}

fn legacy_disk_bytes() -> u64 {
    1 << 30
}

/// Bumped whenever what goes into a template changes (kernel command line,
/// warm-up, placeholder disk), so old snapshots are not reused.
const TEMPLATE_VERSION: u32 = 3;

fn template_dir(images_dir: &Path, image: &GuestImage, accel: Accel, memory_mb: u32) -> PathBuf {
    images_dir
        .join(&image.hash)
        .join("templates")
        .join(format!("v{TEMPLATE_VERSION}-{accel}-{memory_mb}m"))
}

fn load(dir: &Path) -> Option<Template> {
    let t: Template =
        serde_json::from_slice(&std::fs::read(dir.join("template.json")).ok()?).ok()?;
    (t.mem.is_file() && t.state.is_file()).then_some(t)
}

/// Returns the template, making it if it does not exist yet.
pub(crate) async fn find_or_create(
    rt: &Runtime,
    image: &GuestImage,
    accel: Accel,
    memory_mb: u32,
) -> Result<Template, VmError> {
    let dir = template_dir(&rt.config().images_dir(), image, accel, memory_mb);
    if let Some(t) = load(&dir) {
        return Ok(t);
    }
    let t0 = Instant::now();
    // Built in a private dir and renamed into place, so a crash or a
    // concurrent server never sees half a template.
    let tmp = dir.with_file_name(format!(".tmp-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&tmp).map_err(|e| VmError::io(&tmp, e))?;
    let result = snapshot(rt, image, accel, memory_mb, &tmp, &dir).await;
    if let Err(e) = &result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(VmError::Other(format!(
            "making the template snapshot failed: {e}"
        )));
    }
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => {}
        Err(_) if load(&dir).is_some() => {
            let _ = std::fs::remove_dir_all(&tmp); // another process won the race
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(VmError::io(&dir, e));
        }
    }
    let t = load(&dir).ok_or_else(|| VmError::Other("template vanished after creation".into()))?;
    tracing::info!(%accel, memory_mb, ms = t0.elapsed().as_millis() as u64, "template snapshot made");
    Ok(t)
}

async fn snapshot(
    rt: &Runtime,
    image: &GuestImage,
    accel: Accel,
    memory_mb: u32,
    tmp: &Path,
    final_dir: &Path,
) -> Result<(), VmError> {
    let mem = tmp.join("mem");
    let mut opts = SandboxOptions::new(format!("template-{}", uuid::Uuid::new_v4()));
    opts.memory_mb = memory_mb;
    // The default disk size, so the common clone needs no resize.
    opts.disk_gb = SandboxOptions::new("").disk_gb;
    let disk_bytes = u64::from(opts.disk_gb) << 30;
    let sb = rt
        .launch(image, accel, opts, Boot::TemplateSource(&mem))
        .await?;
    warm_page_cache(&sb).await;
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
    let state = tmp.join("state");
    qmp.execute(
        "migrate",
        json!({"uri": format!("exec:cat > {}", shell_quote(&state))}),
    )
    .await?;
    qmp.wait_migration(Duration::from_secs(60)).await?;
    let snapshot_ms = t0.elapsed().as_millis() as u64;
    drop(qmp);
    sb.kill().await;
    let t = Template {
        dir: final_dir.to_path_buf(),
        mem: final_dir.join("mem"),
        state: final_dir.join("state"),
        accel,
        memory_mb,
        snapshot_ms,
        disk_bytes,
    };
    let json = serde_json::to_vec_pretty(&t).map_err(|e| VmError::Other(e.to_string()))?;
    let path = tmp.join("template.json");
    std::fs::write(&path, json).map_err(|e| VmError::io(&path, e))
}

/// What a template runs once from the read-only root, so the files a job
/// usually touches first are already in the (shared) guest page cache.
const WARM_UP: &str =
    "true; ls / >/dev/null; cat /etc/os-release >/dev/null; uname -r >/dev/null; \
     hostname >/dev/null; head -1 /etc/passwd >/dev/null; python3 -c pass; git --version; \
     curl --version; node -e 0";

async fn warm_page_cache(sb: &crate::Sandbox) {
    let spec = mags_proto::RunSpec {
        argv: vec!["/bin/bash".into(), "-c".into(), WARM_UP.into()],
        chroot: Some("/mnt/ro".into()),
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
        qmp.execute("block_resize", json!({"device": "disk", "size": size}))
            .await?;
    }
    Ok(())
}
