//! The guest image: kernel, initramfs (agent as /init + modules), and the
//! read-only Debian root (squashfs), cached under `images/<hash>/` where the
//! hash covers every input. A complete image has `image.json`, written last.

use std::path::PathBuf;

/// A built, complete guest image.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct GuestImage {
    /// Content hash of all inputs (hex).
    pub hash: String,
    pub dir: PathBuf,
    /// ELF vmlinux for PVH direct boot.
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// squashfs root, shared read-only by every sandbox.
    pub rootfs: PathBuf,
    pub kernel_release: String,
}

/// Where and from what to build.
#[derive(Debug, Clone)]
pub struct ImageConfig {
    /// `<data dir>/images`.
    pub images_dir: PathBuf,
    /// The static `mags-agent` binary to put in the initramfs as /init.
    pub agent_bin: PathBuf,
}

/// Progress reports during a build, for a progress bar.
#[derive(Debug, Clone)]
pub enum ImageProgress {
    /// Starting step `index` (1-based) of `total`.
    Step {
        index: usize,
        total: usize,
        name: String,
    },
    /// A line of output from the current step.
    Log(String),
    /// The image is ready (`cached` when nothing had to be built).
    Done { cached: bool },
}

/// Why the image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{0}")]
    Other(String),
}
