//! The on-disk cache under `images_dir`: where each part lives, the build
//! lock, and the write-to-temp-then-rename discipline that keeps a crashed
//! build from leaving anything that looks complete.

use super::kernel::{KernelPkg, KernelRecord, KERNEL_JSON, VMLINUX};
use super::{ImageError, ImageProgress};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Prefix of in-progress build dirs; anything with it is garbage once the
/// lock is held.
const TMP_PREFIX: &str = ".tmp-";

/// Paths of the cache's parts.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub(crate) fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    pub(crate) fn kernel_parts(&self) -> PathBuf {
        self.root.join("kernel")
    }

    pub(crate) fn kernel_dir(&self, pkg: &KernelPkg) -> PathBuf {
        self.kernel_parts().join(pkg.key())
    }

    pub(crate) fn rootfs_parts(&self) -> PathBuf {
        self.root.join("rootfs")
    }

    pub(crate) fn rootfs_dir(&self, key: &str) -> PathBuf {
        self.rootfs_parts().join(key)
    }

    pub(crate) fn image_dir(&self, hash: &str) -> PathBuf {
        self.root.join(hash)
    }

    /// Records the last kernel package resolved with apt-cache, so later
    /// runs need neither apt nor the network to know the inputs.
    fn resolved_path(&self) -> PathBuf {
        self.kernel_parts().join("resolved.json")
    }

    fn lock_path(&self) -> PathBuf {
        self.root.join(".lock")
    }

    /// A fresh temp dir next to `final_dir` (same filesystem, so renaming
    /// it into place is atomic).
    pub(crate) fn temp_dir_for(&self, final_dir: &Path) -> Result<PathBuf, ImageError> {
        let parent = final_dir.parent().unwrap_or(&self.root);
        let name = final_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = parent.join(format!("{TMP_PREFIX}{name}-{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| ImageError::io(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| ImageError::io(&tmp, e))?;
        Ok(tmp)
    }

    /// Removes temp dirs left by builds that died. Call with the lock held.
    pub(crate) fn remove_stale_temps(&self) -> Result<(), ImageError> {
        for dir in [self.root.clone(), self.kernel_parts(), self.rootfs_parts()] {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                    let path = entry.path();
                    tracing::info!(path = %path.display(), "removing an interrupted image build");
                    let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                    let removed = if is_dir {
                        std::fs::remove_dir_all(&path)
                    } else {
                        std::fs::remove_file(&path)
                    };
                    removed.map_err(|e| ImageError::io(&path, e))?;
                }
            }
        }
        Ok(())
    }

    pub(crate) fn read_resolved(&self) -> Option<KernelPkg> {
        read_json(&self.resolved_path())
    }

    pub(crate) fn write_resolved(&self, pkg: &KernelPkg) -> Result<(), ImageError> {
        write_json_atomic(&self.resolved_path(), pkg)
    }

    /// The complete kernel part for `pkg`, if there is one.
    pub(crate) fn load_kernel(&self, pkg: &KernelPkg) -> Option<KernelRecord> {
        let dir = self.kernel_dir(pkg);
        let record: KernelRecord = read_json(&dir.join(KERNEL_JSON))?;
        (record.pkg == *pkg && dir.join(VMLINUX).is_file()).then_some(record)
    }

    /// Takes the build lock, waiting (and saying so) while another process
    /// holds it.
    pub(crate) fn lock(&self, progress: &dyn Fn(ImageProgress)) -> Result<BuildLock, ImageError> {
        std::fs::create_dir_all(&self.root).map_err(|e| ImageError::io(&self.root, e))?;
        let path = self.lock_path();
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| ImageError::io(&path, e))?;
        if !flock(&file, libc::LOCK_EX | libc::LOCK_NB).map_err(|e| ImageError::io(&path, e))? {
            progress(ImageProgress::Log(
                "another process is building the guest image; waiting for it".to_string(),
            ));
            flock(&file, libc::LOCK_EX).map_err(|e| ImageError::io(&path, e))?;
        }
        Ok(BuildLock { _file: file })
    }
}

/// Held while building; released when dropped (the fd is closed).
pub(crate) struct BuildLock {
    _file: File,
}

/// `flock(2)`; `Ok(false)` when `LOCK_NB` was given and the lock is taken.
fn flock(file: &File, op: libc::c_int) -> std::io::Result<bool> {
    loop {
        // SAFETY: the fd is owned by `file`, which outlives the call.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(true);
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) if op & libc::LOCK_NB != 0 => return Ok(false),
            _ => return Err(err),
        }
    }
}

/// Reads a JSON record; `None` when it is missing or unreadable (a part
/// without a valid record counts as absent and is rebuilt).
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Writes `value` as JSON to `path` via a temp file, fsync and rename.
pub(crate) fn write_json_atomic<T: serde::Serialize>(
    path: &Path,
    value: &T,
) -> Result<(), ImageError> {
    let mut json = serde_json::to_vec_pretty(value).map_err(|e| {
        ImageError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        )
    })?;
    json.push(b'\n');
    write_atomic(path, &json)
}

/// Writes `bytes` to `path` via a temp file, fsync and rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    use std::io::Write;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| ImageError::io(parent, e))?;
    }
    let tmp = path.with_file_name(format!(
        "{TMP_PREFIX}{}-{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let mut file = File::create(&tmp).map_err(|e| ImageError::io(&tmp, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| ImageError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| ImageError::io(path, e))
}

/// Moves a finished temp dir into place, replacing a stale (incomplete) one.
pub(crate) fn publish_dir(tmp: &Path, final_dir: &Path) -> Result<(), ImageError> {
    if final_dir.exists() {
        std::fs::remove_dir_all(final_dir).map_err(|e| ImageError::io(final_dir, e))?;
    }
    sync_tree_files(tmp)?;
    std::fs::rename(tmp, final_dir).map_err(|e| ImageError::io(final_dir, e))
}

/// fsyncs the regular files directly in `dir`, so a published part is on
/// disk before its name is (large trees, like modules, are left to the
/// kernel's writeback; their part's record is written last anyway).
fn sync_tree_files(dir: &Path) -> Result<(), ImageError> {
    let entries = std::fs::read_dir(dir).map_err(|e| ImageError::io(dir, e))?;
    for entry in entries.flatten() {
        if entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
            let path = entry.path();
            File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| ImageError::io(&path, e))?;
        }
    }
    Ok(())
}

/// Hard-links `src` to `dest`, copying when linking is not possible.
pub(crate) fn link_or_copy(src: &Path, dest: &Path) -> Result<(), ImageError> {
    if std::fs::hard_link(src, dest).is_ok() {
        return Ok(());
    }
    std::fs::copy(src, dest)
        .map(|_| ())
        .map_err(|e| ImageError::io(dest, e))
}

/// sha256 of a file's contents, hex.
pub(crate) fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_and_temp_cleanup() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let pkg = KernelPkg {
            package: "linux-image-x".into(),
            version: "1".into(),
        };
        assert_eq!(layout.read_resolved(), None);
        layout.write_resolved(&pkg).unwrap();
        assert_eq!(layout.read_resolved(), Some(pkg.clone()));
        // A kernel part without its record is not complete.
        let kdir = layout.kernel_dir(&pkg);
        std::fs::create_dir_all(&kdir).unwrap();
        std::fs::write(kdir.join(VMLINUX), b"elf").unwrap();
        assert!(layout.load_kernel(&pkg).is_none());

        let final_dir = layout.rootfs_dir("abc");
        let tmp = layout.temp_dir_for(&final_dir).unwrap();
        assert!(tmp.starts_with(layout.rootfs_parts()));
        std::fs::write(tmp.join("x"), b"1").unwrap();
        let stale_file = layout.kernel_parts().join(".tmp-resolved.json-1");
        std::fs::write(&stale_file, b"{").unwrap();
        layout.remove_stale_temps().unwrap();
        assert!(!tmp.exists() && !stale_file.exists());
        assert_eq!(layout.read_resolved(), Some(pkg.clone()));
        let tmp = layout.temp_dir_for(&final_dir).unwrap();
        publish_dir(&tmp, &final_dir).unwrap();
        assert!(final_dir.is_dir() && !tmp.exists());
    }

    #[test]
    fn lock_is_exclusive_between_open_files() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let held = layout.lock(&|_| {}).unwrap();
        let other = File::options()
            .write(true)
            .open(layout.lock_path())
            .unwrap();
        assert!(!flock(&other, libc::LOCK_EX | libc::LOCK_NB).unwrap());
        drop(held);
        assert!(flock(&other, libc::LOCK_EX | libc::LOCK_NB).unwrap());
    }
}
