//! Where the VM layer keeps its files under the server's data dir: the one
//! place these paths are spelled out.
//!
//! ```text
//! <data dir>/
//!   sandboxes/<id>/        one per sandbox (`SandboxDir`), removed with it
//!     disk.ext4            a fresh disk made as a new ext4 image, or
//!     disk.qcow2           a fresh disk as an overlay of the template's
//!     agent.sock qmp.sock  the agent's virtio-serial channel, QEMU's QMP
//!     console.log qemu.log the guest's console, QEMU's own output
//!     qemu.pid             lets a restarted server kill an orphaned QEMU
//!     egress.json          the sandbox's own egress rules, if any
//!     sleep.json           a slept sandbox's record (kept across restarts)
//!     sleep.state          its RAM and device state
//!   images/                the guest image cache (its parts: `image`),
//!                          unless configured elsewhere
//!     accel.json           the accelerator probe's verdict
//!     <image hash>/templates/<name>/   one template (`TemplateDir`)
//!       mem state disk template.json
//!   jail-root/             where each jailed QEMU's root is assembled
//!   egress.sock            the egress proxy's socket
//! ```

use std::path::{Path, PathBuf};

/// The data dir's layout; cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    data_dir: PathBuf,
    images_dir: PathBuf,
}

impl Layout {
    /// The layout of `data_dir`, with the image cache in `<data_dir>/images`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        let images_dir = data_dir.join("images");
        Self {
            data_dir,
            images_dir,
        }
    }

    /// The image cache in `dir` instead, if given (several servers and
    /// test runs on one host can share one).
    pub fn with_images_dir(mut self, dir: Option<PathBuf>) -> Self {
        if let Some(dir) = dir {
            self.images_dir = dir;
        }
        self
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The guest image cache.
    pub fn images_dir(&self) -> &Path {
        &self.images_dir
    }

    /// The accelerator probe's cached verdict.
    pub fn accel_verdict(&self) -> PathBuf {
        self.images_dir.join("accel.json")
    }

    /// Template `name` (its kind and shape, see `template`) of the image
    /// whose hash is `image_hash`.
    pub fn template(&self, image_hash: &str, name: &str) -> TemplateDir {
        TemplateDir(
            self.images_dir
                .join(image_hash)
                .join("templates")
                .join(name),
        )
    }

    /// Where the jail assembles each QEMU's root.
    pub fn jail_root(&self) -> PathBuf {
        self.data_dir.join("jail-root")
    }

    /// The egress proxy's unix socket.
    pub fn egress_socket(&self) -> PathBuf {
        self.data_dir.join("egress.sock")
    }

    /// The dir holding one dir per sandbox.
    pub fn sandboxes_dir(&self) -> PathBuf {
        self.data_dir.join("sandboxes")
    }

    /// Every sandbox dir there is now.
    pub fn sandboxes(&self) -> Vec<SandboxDir> {
        std::fs::read_dir(self.sandboxes_dir())
            .map(|d| d.flatten().map(|e| SandboxDir(e.path())).collect())
            .unwrap_or_default()
    }

    /// The dir of sandbox `id`, an id the runtime was given (one plain
    /// name, see [`is_plain_id`]).
    pub fn sandbox(&self, id: &str) -> SandboxDir {
        SandboxDir(self.sandboxes_dir().join(id))
    }

    /// The dir of sandbox `id` where `id` comes from outside (a stored
    /// record, a peer): `None` unless it is one plain name, so it can never
    /// name a path elsewhere.
    pub fn sandbox_checked(&self, id: &str) -> Option<SandboxDir> {
        is_plain_id(id).then(|| self.sandbox(id))
    }
}

/// Whether `id` can name a sandbox: not empty, only ASCII letters, digits,
/// `-` and `_` (UUIDs, `pool-<uuid>`).
pub fn is_plain_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// One sandbox's dir and the files in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxDir(PathBuf);

impl SandboxDir {
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A fresh disk made as a new ext4 image.
    pub fn raw_disk(&self) -> PathBuf {
        self.0.join("disk.ext4")
    }

    /// A fresh disk made as a qcow2 overlay of the template's disk.
    pub fn overlay_disk(&self) -> PathBuf {
        self.0.join("disk.qcow2")
    }

    /// The agent's virtio-serial channel.
    pub fn agent_socket(&self) -> PathBuf {
        self.0.join("agent.sock")
    }

    /// QEMU's QMP socket.
    pub fn qmp_socket(&self) -> PathBuf {
        self.0.join("qmp.sock")
    }

    /// The guest's serial console.
    pub fn console_log(&self) -> PathBuf {
        self.0.join("console.log")
    }

    /// QEMU's own stdout and stderr.
    pub fn qemu_log(&self) -> PathBuf {
        self.0.join("qemu.log")
    }

    /// QEMU's pid.
    pub fn pid_file(&self) -> PathBuf {
        self.0.join("qemu.pid")
    }

    /// The sandbox's own egress rules.
    pub fn egress_rules(&self) -> PathBuf {
        self.0.join("egress.json")
    }

    /// A slept sandbox's record.
    pub fn sleep_record(&self) -> PathBuf {
        self.0.join("sleep.json")
    }

    /// A slept sandbox's RAM and device state.
    pub fn sleep_state(&self) -> PathBuf {
        self.0.join("sleep.state")
    }
}

/// One template's dir and the files in it (also the private dir it is
/// made in before it is renamed into place).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateDir(PathBuf);

impl TemplateDir {
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self(dir.into())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Guest RAM as of the snapshot.
    pub fn mem(&self) -> PathBuf {
        self.0.join("mem")
    }

    /// Device state (the migration stream without RAM).
    pub fn state(&self) -> PathBuf {
        self.0.join("state")
    }

    /// A mounted template's disk.
    pub fn disk(&self) -> PathBuf {
        self.0.join("disk")
    }

    /// The record, written last: it marks the template complete.
    pub fn record(&self) -> PathBuf {
        self.0.join("template.json")
    }
}

/// `path` with `suffix` appended to its file name: the temporary name a
/// file is written under before it is renamed into place.
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_path_is_under_the_data_dir_or_the_image_cache() {
        let l = Layout::new("/d");
        assert_eq!(l.data_dir(), Path::new("/d"));
        assert_eq!(l.images_dir(), Path::new("/d/images"));
        assert_eq!(l.accel_verdict(), Path::new("/d/images/accel.json"));
        assert_eq!(
            l.template("h1", "v4-kvm-256m").path(),
            Path::new("/d/images/h1/templates/v4-kvm-256m")
        );
        assert_eq!(l.jail_root(), Path::new("/d/jail-root"));
        assert_eq!(l.egress_socket(), Path::new("/d/egress.sock"));
        assert_eq!(l.sandboxes_dir(), Path::new("/d/sandboxes"));

        let shared = Layout::new("/d").with_images_dir(Some("/cache/images".into()));
        assert_eq!(shared.images_dir(), Path::new("/cache/images"));
        assert_eq!(
            shared.template("h1", "t").path(),
            Path::new("/cache/images/h1/templates/t")
        );
        assert_eq!(shared.sandboxes_dir(), Path::new("/d/sandboxes"));
        assert_eq!(Layout::new("/d").with_images_dir(None), l);
    }

    #[test]
    fn a_sandbox_dir_holds_all_its_files() {
        let sb = Layout::new("/d").sandbox("sb-1");
        assert_eq!(sb.path(), Path::new("/d/sandboxes/sb-1"));
        let files = [
            (sb.raw_disk(), "disk.ext4"),
            (sb.overlay_disk(), "disk.qcow2"),
            (sb.agent_socket(), "agent.sock"),
            (sb.qmp_socket(), "qmp.sock"),
            (sb.console_log(), "console.log"),
            (sb.qemu_log(), "qemu.log"),
            (sb.pid_file(), "qemu.pid"),
            (sb.egress_rules(), "egress.json"),
            (sb.sleep_record(), "sleep.json"),
            (sb.sleep_state(), "sleep.state"),
        ];
        for (path, name) in files {
            assert_eq!(path, sb.path().join(name));
        }
    }

    #[test]
    fn a_template_dir_holds_its_snapshot() {
        let t = TemplateDir::at("/i/h/templates/v4-kvm-256m");
        assert_eq!(t.mem(), Path::new("/i/h/templates/v4-kvm-256m/mem"));
        assert_eq!(t.state(), Path::new("/i/h/templates/v4-kvm-256m/state"));
        assert_eq!(t.disk(), Path::new("/i/h/templates/v4-kvm-256m/disk"));
        assert_eq!(
            t.record(),
            Path::new("/i/h/templates/v4-kvm-256m/template.json")
        );
    }

    #[test]
    fn only_plain_ids_name_a_sandbox_from_outside() {
        let l = Layout::new("/d");
        for id in ["pool-1", "0b0e8f6c-53c1-4d1e-9b8f-1a2b3c4d5e6f", "a_b"] {
            assert!(is_plain_id(id), "{id}");
            assert_eq!(l.sandbox_checked(id), Some(l.sandbox(id)));
        }
        for id in ["", "..", "../x", "a/b", "a b", ".x", "é"] {
            assert!(!is_plain_id(id), "{id:?}");
            assert_eq!(l.sandbox_checked(id), None);
        }
    }

    #[test]
    fn a_temporary_name_is_the_file_name_with_a_suffix() {
        assert_eq!(
            with_suffix(Path::new("/d/sandboxes/x/sleep.json"), ".tmp"),
            Path::new("/d/sandboxes/x/sleep.json.tmp")
        );
    }
}
