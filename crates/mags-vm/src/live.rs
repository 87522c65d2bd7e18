//! What a server asks of a running sandbox besides its agent: why its
//! QEMU ended, whether the host failed its disk's I/O, whether the host has
//! room for another; and growing its disk while it runs.

use crate::agent::AgentConn;
use crate::disk::{free_bytes, LOW_DISK_BYTES};
use crate::layout::{Layout, SandboxDir};
use crate::qmp::Qmp;
use crate::sandbox::{Runtime, Sandbox};
use crate::VmError;
use std::future::Future;
use std::process::ExitStatus;
use std::time::Duration;

impl Sandbox {
    /// Why QEMU ended, in words, once it has (`None` while it runs).
    pub fn death(&mut self) -> Option<String> {
        self.exit_status().map(death_reason)
    }

    /// Whether the host failed reads or writes of the sandbox's disk (the
    /// guest saw I/O errors; the usual cause is a full host filesystem), in
    /// words for the job's user; `None` if none failed or QEMU cannot say.
    /// The future holds nothing of the sandbox: a caller keeping it behind
    /// a lock lets go of the lock before awaiting.
    pub fn disk_trouble(&self) -> impl Future<Output = Option<String>> + Send + 'static {
        let dir = self.files().clone();
        async move { disk_trouble(&dir).await }
    }
}

impl Runtime {
    /// Refuses to start a sandbox while the host's disk is full (less than
    /// [`LOW_DISK_BYTES`] free in the data dir): its sparse disk would soon
    /// fail the guest's writes.
    pub fn check_disk_room(&self) -> Result<(), VmError> {
        let data_dir = self.layout().data_dir();
        match free_bytes(data_dir) {
            Some(free) if free < LOW_DISK_BYTES => Err(VmError::Other(format!(
                "the host's disk is full: {} MiB free in {} (at least {} MiB are needed to \
                 start a sandbox)",
                free >> 20,
                data_dir.display(),
                LOW_DISK_BYTES >> 20
            ))),
            _ => Ok(()),
        }
    }
}

/// Grows the writable disk of running sandbox `vm_id` to `bytes`: QEMU
/// extends the image (the guest kernel sees the new size at once), then
/// the guest's agent (`agent`) grows its filesystem.
pub async fn grow_disk(
    layout: &Layout,
    vm_id: &str,
    agent: &AgentConn,
    bytes: u64,
) -> Result<(), VmError> {
    let qmp_socket = layout.sandbox(vm_id).qmp_socket();
    async {
        let mut qmp = Qmp::connect(&qmp_socket, Duration::from_secs(5)).await?;
        qmp.resize_disk(bytes).await
    }
    .await
    .map_err(|e| VmError::Other(format!("growing the disk: {e}")))?;
    agent
        .grow_disk(bytes)
        .await
        .map_err(|e| VmError::Other(format!("growing the filesystem: {e}")))
}

/// QEMU's exit status in words.
fn death_reason(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.signal(), status.code()) {
        (Some(sig), _) => format!("the VM died: QEMU was killed by signal {sig}"),
        (_, Some(0)) => "the VM died: the guest powered off or its kernel panicked".into(),
        (_, Some(code)) => format!("the VM died: QEMU exited with code {code}"),
        _ => format!("the VM died: QEMU ended ({status})"),
    }
}

async fn disk_trouble(dir: &SandboxDir) -> Option<String> {
    let counted = async {
        let mut qmp = Qmp::connect(&dir.qmp_socket(), Duration::from_secs(5)).await?;
        qmp.disk_failures().await
    };
    let failed = match counted.await {
        Ok(0) => return None,
        Ok(n) => n,
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the disk's error counts");
            return None;
        }
    };
    Some(trouble_words(failed, free_bytes(dir.path())))
}

/// `failed` requests of the disk failed; `free` bytes are left on the
/// filesystem of the sandbox's dir.
fn trouble_words(failed: u64, free: Option<u64>) -> String {
    match free {
        Some(f) if f < LOW_DISK_BYTES => format!(
            "the host's disk is full ({} MiB free): {failed} reads or writes of the \
             sandbox's disk failed, so its files may be incomplete",
            f >> 20
        ),
        _ => format!(
            "{failed} reads or writes of the sandbox's disk failed on the host \
             (I/O errors), so its files may be incomplete"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt as _;

    #[test]
    fn a_death_says_how_qemu_ended() {
        // Wait statuses: a signal in the low bits, an exit code shifted.
        assert_eq!(
            death_reason(ExitStatus::from_raw(9)),
            "the VM died: QEMU was killed by signal 9"
        );
        assert_eq!(
            death_reason(ExitStatus::from_raw(0)),
            "the VM died: the guest powered off or its kernel panicked"
        );
        assert_eq!(
            death_reason(ExitStatus::from_raw(1 << 8)),
            "the VM died: QEMU exited with code 1"
        );
    }

    #[test]
    fn disk_trouble_names_a_full_host_disk() {
        let full = trouble_words(3, Some(1 << 20));
        assert!(full.starts_with("the host's disk is full (1 MiB free): 3 reads or writes"));
        for free in [Some(LOW_DISK_BYTES), None] {
            let other = trouble_words(2, free);
            assert!(
                other.starts_with("2 reads or writes of the sandbox's disk failed on the host"),
                "{other}"
            );
        }
    }
}
