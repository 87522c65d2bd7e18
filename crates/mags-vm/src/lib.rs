//! The host side of a Mags sandbox.
//!
//! - [`image`]: builds and caches the guest image (kernel, initramfs with the
//!   agent, read-only Debian root as squashfs), keyed by a hash of its inputs.
//! - [`qemu`]: the QEMU `microvm` command line and process.
//! - [`agent`]: the host end of the virtio-serial channel to `mags-agent`.
//! - [`accel`]: probing whether KVM really boots a guest, else TCG.
//! - [`jail`] (with [`cgroup`]): what confines each QEMU process.
//! - [`sandbox`]: one running VM with its own disk, and [`Runtime`], which
//!   starts them and reaps what a previous server left behind; [`live`]:
//!   why one died, its disk's trouble, growing its disk online.
//! - [`layout`]: where all of it lives under the data dir.
//! - [`disk`]: host-side disk images (the one `qemu-img` wrapper).
//! - [`pool`]: warm sandboxes, each taken with a [`PoolSlot`].

pub mod accel;
pub mod agent;
pub mod cgroup;
pub mod disk;
pub mod egress;
pub mod image;
pub mod jail;
pub mod layout;
pub mod live;
pub mod locate;
pub mod net;
pub mod pool;
pub mod qemu;
pub mod qmp;
pub mod sandbox;
pub mod sleep;
pub mod template;
pub mod tunnel;

pub use accel::Accel;
pub use agent::{AgentConn, Process, ProcessEvent, ProcessInput};
pub use image::{GuestImage, ImageProgress, ImageVariant};
pub use jail::{JailConfig, JailMode, JailStatus};
pub use layout::{Layout, SandboxDir};
pub use pool::{Pool, PoolConfig, PoolSlot, PoolStatus};
pub use sandbox::{DiskFormat, DiskSource, Runtime, RuntimeConfig, Sandbox, SandboxOptions};
pub use tunnel::TunnelStream;

/// Errors from the VM layer.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("guest image: {0}")]
    Image(#[from] image::ImageError),
    #[error("failed to start QEMU: {0}")]
    Spawn(std::io::Error),
    #[error("VM exited before its agent answered: {0}")]
    EarlyExit(String),
    #[error("sandbox failed to start: {0}")]
    Boot(String),
    #[error("agent did not answer within {0} s")]
    AgentTimeout(u64),
    #[error("agent speaks protocol version {guest}, host speaks {host}")]
    VersionMismatch { guest: u32, host: u32 },
    #[error("agent connection lost")]
    Disconnected,
    #[error("agent protocol error: {0}")]
    Protocol(String),
    #[error("guest refused: {0}")]
    Guest(String),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

impl VmError {
    pub(crate) fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}
