//! One running VM ([`Sandbox`]) and the [`Runtime`] that starts them.

use crate::{AgentConn, Accel, GuestImage, ImageProgress, VmError};
use std::path::PathBuf;

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
}

/// Per-sandbox settings.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    pub id: String,
    pub memory_mb: u32,
    pub vcpus: u32,
    pub disk_gb: u32,
}

/// Starts sandboxes.
pub struct Runtime {}

impl Runtime {
    pub fn new(_cfg: RuntimeConfig) -> Self {
        todo!()
    }

    /// Builds the guest image if needed (blocking work runs off the async threads).
    pub async fn ensure_image(
        &self,
        _progress: impl Fn(ImageProgress) + Send + 'static,
    ) -> Result<GuestImage, VmError> {
        todo!()
    }

    /// The accelerator in use, probing once (cached on disk) if unknown.
    pub async fn accel(&self) -> Result<Accel, VmError> {
        todo!()
    }

    /// Kills QEMU processes and removes sandbox dirs left by a previous server.
    pub fn reap_orphans(&self) -> usize {
        todo!()
    }

    /// Boots a sandbox and waits until its agent answers.
    pub async fn start(&self, _opts: SandboxOptions) -> Result<Sandbox, VmError> {
        todo!()
    }
}

/// A running VM. Dropping it kills the VM and removes its files.
pub struct Sandbox {}

impl Sandbox {
    pub fn id(&self) -> &str {
        todo!()
    }

    pub fn agent(&self) -> &AgentConn {
        todo!()
    }

    /// Asks the guest to sync and power off, then kills QEMU if it lingers,
    /// and removes the sandbox's files.
    pub async fn shutdown(self) -> Result<(), VmError> {
        todo!()
    }
}
