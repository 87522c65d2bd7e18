//! Sleep and wake: a running sandbox is snapshotted to its own dir (RAM and
//! device state in `sleep.state`, its disk as it is), its QEMU stopped, and
//! later restored with processes and files intact.
//!
//! The record (`sleep.json`) names everything a wake needs, so a restarted
//! server can wake what the previous one put to sleep.

use crate::accel::Accel;
use crate::image::GuestImage;
use crate::layout::{with_suffix, SandboxDir};
use crate::qmp::Qmp;
use crate::sandbox::{Boot, Runtime, Sandbox, SandboxOptions};
use crate::template::shell_quote;
use crate::VmError;
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A slept sandbox, as recorded in `<sandbox dir>/sleep.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SleepRecord {
    pub id: String,
    pub memory_mb: u32,
    pub vcpus: u32,
    pub disk_gb: u32,
    /// The disk it had attached (absent in records of older versions: fresh).
    #[serde(default)]
    pub disk: crate::sandbox::DiskSource,
    pub accel: Accel,
    /// The image it was running: the same root must be attached on wake.
    pub image: GuestImage,
    pub state: PathBuf,
    /// How long taking the snapshot took.
    pub sleep_ms: u64,
}

impl SleepRecord {
    /// Reads the record of a slept sandbox dir, if it has one.
    pub fn load(dir: &SandboxDir) -> Option<Self> {
        serde_json::from_slice(&std::fs::read(dir.sleep_record()).ok()?).ok()
    }
}

impl Sandbox {
    /// Puts the sandbox to sleep: flushes the guest's filesystems, snapshots
    /// RAM and devices next to its disk, and stops QEMU. Nothing of it runs
    /// until [`Runtime::wake`].
    pub async fn sleep(mut self) -> Result<SleepRecord, VmError> {
        let t0 = Instant::now();
        self.agent().sync().await?;
        // Clean page cache is cheaper to re-read than to save: dropped, its
        // pages are zeroed (init_on_free) and cost nothing in the snapshot.
        let drop_caches = mags_proto::RunSpec {
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo 3 > /proc/sys/vm/drop_caches".into(),
            ],
            timeout_ms: Some(10_000),
            ..Default::default()
        };
        if let Err(e) = async { self.agent().run(drop_caches).await?.collect().await }.await {
            tracing::warn!(
                sandbox = self.id(),
                "could not drop caches before sleep: {e}"
            );
        }
        self.agent().close().await;
        let mut qmp = Qmp::connect(&self.qmp_socket(), Duration::from_secs(5)).await?;
        qmp.execute("stop", json!({})).await?;
        // A clone was restored with x-ignore-shared on; its RAM is private
        // now and must go into the stream.
        qmp.execute(
            "migrate-set-capabilities",
            json!({"capabilities": [{"capability": "x-ignore-shared", "state": false}]}),
        )
        .await?;
        let state = self.dir.sleep_state();
        let tmp = with_suffix(&state, ".tmp");
        qmp.execute(
            "migrate",
            json!({"uri": format!("exec:cat > {}", shell_quote(&tmp))}),
        )
        .await?;
        qmp.wait_migration(Duration::from_secs(120)).await?;
        drop(qmp);
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
        std::fs::rename(&tmp, &state).map_err(|e| VmError::io(&state, e))?;
        let record = SleepRecord {
            id: self.id().to_string(),
            memory_mb: self.opts.memory_mb,
            vcpus: self.opts.vcpus,
            disk_gb: self.opts.disk_gb,
            disk: self.opts.disk.clone(),
            accel: self.accel,
            image: self.image.clone(),
            state,
            sleep_ms: t0.elapsed().as_millis() as u64,
        };
        let path = self.dir.sleep_record();
        let json = serde_json::to_vec_pretty(&record).map_err(|e| VmError::Other(e.to_string()))?;
        let tmp_json = with_suffix(&path, ".tmp");
        std::fs::write(&tmp_json, json)
            .and_then(|_| std::fs::rename(&tmp_json, &path))
            .map_err(|e| VmError::io(&path, e))?;
        self.keep_dir = true;
        tracing::info!(sandbox = %record.id, ms = record.sleep_ms, "sandbox slept");
        Ok(record)
    }
}

impl Runtime {
    /// Wakes a slept sandbox: its processes resume where they were.
    pub async fn wake(&self, record: &SleepRecord) -> Result<Sandbox, VmError> {
        let opts = SandboxOptions {
            id: record.id.clone(),
            memory_mb: record.memory_mb,
            vcpus: record.vcpus,
            disk_gb: record.disk_gb,
            disk: record.disk.clone(),
            // Unused on wake: the record names the image itself.
            variant: Default::default(),
        };
        let sb = self
            .launch(&record.image, record.accel, opts, Boot::Wake(record))
            .await?;
        let _ = std::fs::remove_file(self.layout().sandbox(&record.id).sleep_record());
        let _ = std::fs::remove_file(&record.state);
        Ok(sb)
    }

    /// The record of slept sandbox `id` (an id from outside, e.g. a stored
    /// job's), if there is one.
    pub fn sleep_record(&self, id: &str) -> Option<SleepRecord> {
        SleepRecord::load(&self.layout().sandbox_checked(id)?)
    }

    /// Deletes the sleep snapshot of sandbox `id` (its whole dir), if it
    /// has one; whether there was one.
    pub fn discard_sleep(&self, id: &str) -> Result<bool, VmError> {
        let Some(dir) = self.layout().sandbox_checked(id) else {
            return Ok(false);
        };
        if SleepRecord::load(&dir).is_none() {
            return Ok(false);
        }
        std::fs::remove_dir_all(dir.path()).map_err(|e| VmError::io(dir.path(), e))?;
        Ok(true)
    }
}
