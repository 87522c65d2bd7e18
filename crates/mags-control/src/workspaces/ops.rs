//! Host-side disk image operations: qcow2 overlays over a read-only base
//! (`qemu-img create -b`), flattening an overlay to a raw image, and
//! small file helpers. Everything is written to a temporary name and
//! renamed, so an image is whole or absent.

use super::WsError;
use std::path::{Path, PathBuf};

async fn qemu_img(args: &[&str]) -> Result<(), WsError> {
    mags_vm::disk::qemu_img(args)
        .await
        .map_err(|e| WsError::Disk(e.to_string()))
}

/// `path` with `.tmp-<pid>` appended to its file name.
pub fn tmp_of(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".tmp-{}", std::process::id()));
    PathBuf::from(s)
}

/// A qcow2 overlay at `overlay` over the raw image `base` (read-only,
/// never written through the overlay), `bytes` big.
pub async fn create_overlay(base: &Path, overlay: &Path, bytes: u64) -> Result<(), WsError> {
    mags_vm::disk::create_overlay(base, overlay, bytes)
        .await
        .map_err(|e| WsError::Disk(e.to_string()))
}

/// Writes what `overlay` (with its base) holds as a sparse raw image at
/// `dest`. `shared`: the overlay may be open in a running QEMU (its guest
/// filesystem frozen).
pub async fn flatten(overlay: &Path, dest: &Path, shared: bool) -> Result<(), WsError> {
    let tmp = tmp_of(dest);
    let (o, t) = (overlay.display().to_string(), tmp.display().to_string());
    let mut args = vec!["convert", "-q", "-f", "qcow2", "-O", "raw", "-S", "4k"];
    if shared {
        args.push("-U");
    }
    args.extend([o.as_str(), t.as_str()]);
    if let Err(e) = qemu_img(&args).await {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, dest).map_err(|e| WsError::io(dest, e))
}

/// A sparse copy of `src` at `dest`.
pub async fn sparse_copy(src: &Path, dest: &Path) -> Result<(), WsError> {
    let tmp = tmp_of(dest);
    let out = tokio::process::Command::new("cp")
        .arg("--sparse=always")
        .arg(src)
        .arg(&tmp)
        .output()
        .await
        .map_err(|e| WsError::io(src, e))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&tmp);
        return Err(WsError::Disk(format!(
            "copying {} failed: {}",
            src.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    std::fs::rename(&tmp, dest).map_err(|e| WsError::io(dest, e))
}

/// Makes a file read-only (a base image must never change under its overlays).
pub fn make_read_only(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444));
}

/// Virtual size of a disk image: a raw file's length, a qcow2's header size.
pub fn image_bytes(path: &Path) -> Result<u64, WsError> {
    use std::io::Read as _;
    let mut f = std::fs::File::open(path).map_err(|e| WsError::io(path, e))?;
    let mut head = [0u8; 32];
    let n = f.read(&mut head).map_err(|e| WsError::io(path, e))?;
    if n == 32 && &head[..4] == b"QFI\xfb" {
        let mut size = [0u8; 8];
        size.copy_from_slice(&head[24..32]);
        return Ok(u64::from_be_bytes(size));
    }
    Ok(f.metadata().map_err(|e| WsError::io(path, e))?.len())
}

/// Grows a qcow2 image to `bytes` (its guest grows the filesystem).
pub async fn grow_qcow2(path: &Path, bytes: u64) -> Result<(), WsError> {
    let p = path.display().to_string();
    qemu_img(&["resize", "-q", "-f", "qcow2", &p, &bytes.to_string()]).await
}

/// A hard link of the read-only image `src` at `dest` (a copy if linking
/// is impossible, e.g. across filesystems); replaces `dest`.
pub async fn link_or_copy(src: &Path, dest: &Path) -> Result<(), WsError> {
    let _ = std::fs::remove_file(dest);
    if std::fs::hard_link(src, dest).is_ok() {
        return Ok(());
    }
    sparse_copy(src, dest).await
}
