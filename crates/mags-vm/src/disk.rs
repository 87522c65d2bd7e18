//! Writable disks on the host: fresh sparse ext4 images and qcow2
//! overlays over a read-only image (a template's disk, a base workspace).

use crate::VmError;
use std::path::{Path, PathBuf};

pub(crate) fn sparse_file(path: &Path, bytes: u64) -> Result<(), VmError> {
    let f = std::fs::File::create(path).map_err(|e| VmError::io(path, e))?;
    f.set_len(bytes).map_err(|e| VmError::io(path, e))
}

/// Creates a sparse ext4 disk of `bytes`.
pub async fn create_disk(path: &Path, bytes: u64) -> Result<(), VmError> {
    sparse_file(path, bytes)?;
    let out = tokio::process::Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-m",
            "0",
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1",
        ])
        .arg(path)
        .output()
        .await
        .map_err(|e| {
            VmError::Other(format!(
                "mkfs.ext4 not runnable ({e}): apt-get install e2fsprogs"
            ))
        })?;
    if !out.status.success() {
        return Err(VmError::Other(format!(
            "mkfs.ext4 failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// A qcow2 overlay at `overlay` over the raw image `base`, `bytes` big.
/// `base` is only read through it; writes go to the overlay. Written under
/// a temporary name and renamed, so the overlay is whole or absent.
pub async fn create_overlay(base: &Path, overlay: &Path, bytes: u64) -> Result<(), VmError> {
    let mut tmp = overlay.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let out = tokio::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(base)
        .arg(&tmp)
        .arg(bytes.to_string())
        .output()
        .await
        .map_err(|e| {
            VmError::Other(format!(
                "qemu-img not runnable ({e}): apt-get install qemu-utils"
            ))
        })?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&tmp);
        return Err(VmError::Other(format!(
            "qemu-img create failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    std::fs::rename(&tmp, overlay).map_err(|e| VmError::io(overlay, e))
}
