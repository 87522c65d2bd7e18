//! Writable disks on the host: fresh sparse ext4 images and qcow2
//! overlays over a read-only image (a template's disk, a base workspace),
//! the one wrapper of `qemu-img`, and the data dir's free space.

use crate::VmError;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// Below this much free space on the data dir's filesystem the host's disk
/// counts as full: no new sandbox starts (sparse disks grow as guests
/// write, so a sandbox started now would soon fail its writes).
pub const LOW_DISK_BYTES: u64 = 64 << 20;

/// Free bytes for an unprivileged writer on the filesystem holding `path`.
pub fn free_bytes(path: &std::path::Path) -> Option<u64> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated path and `st` is a writable
    // statvfs that the call fills in completely on success.
    let st = unsafe {
        if libc::statvfs(c.as_ptr(), st.as_mut_ptr()) != 0 {
            return None;
        }
        st.assume_init()
    };
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

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

/// Runs `qemu-img` with `args` (its subcommand first); an error names the
/// subcommand and says what qemu-img printed, or how to install it.
pub async fn qemu_img<S: AsRef<OsStr>>(args: &[S]) -> Result<(), VmError> {
    let out = tokio::process::Command::new("qemu-img")
        .args(args)
        .output()
        .await
        .map_err(|e| {
            VmError::Other(format!(
                "qemu-img not runnable ({e}): apt-get install qemu-utils"
            ))
        })?;
    if !out.status.success() {
        return Err(VmError::Other(format!(
            "qemu-img {} failed: {}",
            args.first()
                .map(|a| a.as_ref().to_string_lossy())
                .unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// A qcow2 overlay at `overlay` over the raw image `base`, `bytes` big.
/// `base` is only read through it; writes go to the overlay. Written under
/// a temporary name and renamed, so the overlay is whole or absent.
pub async fn create_overlay(base: &Path, overlay: &Path, bytes: u64) -> Result<(), VmError> {
    let tmp = crate::layout::with_suffix(overlay, &format!(".tmp-{}", std::process::id()));
    let size = bytes.to_string();
    let args: [&OsStr; 10] = [
        "create".as_ref(),
        "-q".as_ref(),
        "-f".as_ref(),
        "qcow2".as_ref(),
        "-F".as_ref(),
        "raw".as_ref(),
        "-b".as_ref(),
        base.as_os_str(),
        tmp.as_os_str(),
        size.as_ref(),
    ];
    if let Err(e) = qemu_img(&args).await {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, overlay).map_err(|e| VmError::io(overlay, e))
}

/// The images a qcow2 `disk` reads through (its backing file, that file's
/// backing file, ...), from the qcow2 headers; empty for a raw image.
/// Relative backing names are relative to the image that names them.
pub fn backing_chain(disk: &Path) -> Vec<PathBuf> {
    let mut chain = Vec::new();
    let mut cur = disk.to_path_buf();
    // A loop in the chain would be refused by QEMU; stop at a sane depth.
    while chain.len() < 16 {
        let Some(next) = backing_file(&cur) else {
            break;
        };
        let next = match cur.parent() {
            Some(dir) if next.is_relative() => dir.join(next),
            _ => next,
        };
        chain.push(next.clone());
        cur = next;
    }
    chain
}

/// The backing file named in a qcow2 header (magic, version, then the
/// big-endian offset and size of the name at bytes 8 and 16).
fn backing_file(path: &Path) -> Option<PathBuf> {
    use std::io::{Read as _, Seek as _};
    use std::os::unix::ffi::OsStringExt as _;
    let mut f = std::fs::File::open(path).ok()?;
    let mut header = [0u8; 20];
    f.read_exact(&mut header).ok()?;
    if &header[..4] != b"QFI\xfb" {
        return None;
    }
    let offset = u64::from_be_bytes(header[8..16].try_into().ok()?);
    let len = u32::from_be_bytes(header[16..20].try_into().ok()?);
    if offset == 0 || len == 0 || len > 4096 {
        return None;
    }
    f.seek(std::io::SeekFrom::Start(offset)).ok()?;
    let mut name = vec![0u8; len as usize];
    f.read_exact(&mut name).ok()?;
    Some(PathBuf::from(std::ffi::OsString::from_vec(name)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn free_bytes_of_a_real_and_a_missing_path() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).is_some_and(|b| b > 0));
        assert_eq!(free_bytes(&dir.path().join("missing")), None);
    }

    #[tokio::test]
    async fn a_failed_qemu_img_names_its_subcommand_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.qcow2");
        let e = qemu_img(&[OsStr::new("info"), missing.as_os_str()])
            .await
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("qemu-img info failed: "), "{e}");
        assert!(e.contains("missing.qcow2"), "{e}");
    }

    #[tokio::test]
    async fn the_backing_chain_is_read_from_qcow2_headers() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.raw");
        sparse_file(&base, 1 << 20).unwrap();
        let mid = dir.path().join("mid.qcow2");
        create_overlay(&base, &mid, 1 << 20).await.unwrap();
        let top = dir.path().join("top.qcow2");
        let out = std::process::Command::new("qemu-img")
            .args([
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                "qcow2",
                "-b",
                "mid.qcow2",
            ])
            .arg(&top)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(backing_chain(&top), vec![mid.clone(), base.clone()]);
        assert_eq!(backing_chain(&base), Vec::<PathBuf>::new());
    }
}
