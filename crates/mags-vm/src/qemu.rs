//! The QEMU `microvm` command line (DESIGN.md §1) and launching it.

use crate::Accel;
use std::path::PathBuf;
use std::process::Stdio;

/// Where guest RAM lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Memory {
    /// Ordinary anonymous memory (cold boot, or waking from sleep).
    Anonymous,
    /// A file mapped shared: the template being booted, so its RAM ends up
    /// in the file when the snapshot is taken (`x-ignore-shared`).
    SharedFile(PathBuf),
    /// A template's RAM file mapped private: clones share its pages and
    /// copy only those they write.
    PrivateFile(PathBuf),
}

/// Everything that varies between sandboxes on the QEMU command line.
#[derive(Debug, Clone)]
pub struct QemuSpec {
    pub accel: Accel,
    pub memory_mb: u32,
    pub vcpus: u32,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Read-only squashfs root, shared by all sandboxes.
    pub rootfs: PathBuf,
    /// The sandbox's own writable ext4 disk.
    pub disk: PathBuf,
    pub disk_format: crate::sandbox::DiskFormat,
    pub agent_socket: PathBuf,
    pub qmp_socket: PathBuf,
    pub console_log: PathBuf,
    pub memory: Memory,
    /// Wait for an incoming migration (`-incoming defer`) instead of booting.
    pub incoming: bool,
    /// What a guest connection to the egress proxy address runs on the
    /// host (see [`crate::net`]); every VM has the same NIC, so any
    /// snapshot restores into any VM.
    pub egress_cmd: String,
    /// QEMU's own seccomp filter ([`SECCOMP`]).
    pub seccomp: bool,
}

/// QEMU's seccomp filter: no obsolete system calls, no scheduler or
/// resource-limit changes. Spawning stays allowed: the egress forwarder
/// (`guestfwd=...-cmd:`) and the snapshot streams (`exec:cat`) start
/// helpers, which run inside the same [jail](crate::jail). So do the
/// set*id calls (`elevateprivileges`): libslirp's helper calls `setsid`,
/// and with no capabilities and `no_new_privs` (set by the jail) no such
/// call can raise a privilege anyway.
pub const SECCOMP: &str =
    "on,obsolete=deny,elevateprivileges=allow,spawn=allow,resourcecontrol=deny";

/// Kernel command line. TCG hangs at "Marking TSC unstable" without
/// `tsc_early_khz`, which must be the host's TSC rate (see
/// [`crate::accel::tcg_tsc_khz`]).
///
/// `init_on_free=1`: freed guest pages are zeroed, so a sleep snapshot
/// (which carries all guest RAM) sends them as zero pages, not stale data.
pub fn kernel_cmdline(accel: Accel) -> String {
    let mut cl =
        String::from("console=ttyS0 reboot=t panic=-1 quiet mitigations=off init_on_free=1");
    if accel == Accel::Tcg {
        cl.push_str(&format!(
            " tsc_early_khz={} no_timer_check",
            crate::accel::tcg_tsc_khz()
        ));
    }
    cl
}

/// QEMU's arguments (without the program name).
pub fn args(spec: &QemuSpec) -> Vec<String> {
    let (machine, accel, cpu) = match spec.accel {
        Accel::Kvm => (
            "microvm,x-option-roms=off,isa-serial=on,pit=off,pic=off,rtc=off",
            "kvm",
            "host",
        ),
        Accel::Tcg => (
            "microvm,x-option-roms=off,isa-serial=on,pit=on,pic=on,rtc=on",
            "tcg,tb-size=64",
            "max",
        ),
    };
    let p = |p: &PathBuf| p.display().to_string();
    let mut a: Vec<String> = [
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-no-reboot",
        "-M",
        machine,
        "-accel",
        accel,
        "-cpu",
        cpu,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend([
        "-m".into(),
        spec.memory_mb.to_string(),
        "-smp".into(),
        spec.vcpus.to_string(),
        "-kernel".into(),
        p(&spec.kernel),
        "-initrd".into(),
        p(&spec.initrd),
        "-append".into(),
        kernel_cmdline(spec.accel),
        "-serial".into(),
        format!("file:{}", p(&spec.console_log)),
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", p(&spec.qmp_socket)),
        "-device".into(),
        "virtio-serial-device".into(),
        "-chardev".into(),
        format!(
            "socket,id=agent,path={},server=on,wait=off",
            p(&spec.agent_socket)
        ),
        "-device".into(),
        format!(
            "virtserialport,chardev=agent,name={}",
            mags_proto::AGENT_PORT_NAME
        ),
        "-drive".into(),
        format!(
            "id=rootfs,file={},format=raw,if=none,readonly=on,rerror=report",
            p(&spec.rootfs)
        ),
        "-device".into(),
        format!(
            "virtio-blk-device,drive=rootfs,serial={}",
            mags_proto::ROOTFS_SERIAL
        ),
        // A failed write (the host's filesystem full: a sparse image or
        // overlay cannot grow) is an I/O error in the guest, counted in
        // `query-blockstats`; QEMU's default (`werror=enospc`) would pause
        // the VM and leave the job hanging.
        "-drive".into(),
        format!(
            "id=disk,file={},format={},if=none,discard=unmap,werror=report,rerror=report",
            p(&spec.disk),
            spec.disk_format.as_str()
        ),
        "-device".into(),
        format!(
            "virtio-blk-device,drive=disk,serial={}",
            mags_proto::DISK_SERIAL
        ),
    ]);
    a.extend(crate::net::qemu_args(&spec.egress_cmd));
    let backend = |path: &PathBuf, share: &str| {
        format!(
            "memory-backend-file,id=mem,size={}M,mem-path={},share={share}",
            spec.memory_mb,
            p(path)
        )
    };
    match &spec.memory {
        Memory::Anonymous => a.extend([
            "-object".into(),
            format!("memory-backend-ram,id=mem,size={}M", spec.memory_mb),
        ]),
        Memory::SharedFile(path) => a.extend(["-object".into(), backend(path, "on")]),
        Memory::PrivateFile(path) => a.extend(["-object".into(), backend(path, "off")]),
    }
    // Always a named backend, so every kind of VM has the same RAM block
    // ("mem") and a snapshot of one can be restored into another.
    a.extend(["-machine".into(), "memory-backend=mem".into()]);
    if spec.incoming {
        a.extend(["-incoming".into(), "defer".into()]);
    }
    if spec.seccomp {
        a.extend(["-sandbox".into(), SECCOMP.into()]);
    }
    a
}

/// A ready-to-spawn QEMU command: no stdin, output to `log`, confined by
/// `jail` (which also makes it die with the server: PDEATHSIG), killed
/// if the server drops the child.
pub fn command(
    spec: &QemuSpec,
    log: std::fs::File,
    jail: &crate::jail::Confinement,
) -> std::io::Result<tokio::process::Command> {
    let mut cmd = tokio::process::Command::new("qemu-system-x86_64");
    cmd.args(args(spec))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .kill_on_drop(true);
    jail.apply(&mut cmd);
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcg_gets_tsc_hint_and_disks_are_found_by_serial() {
        let spec = QemuSpec {
            accel: Accel::Tcg,
            memory_mb: 256,
            vcpus: 1,
            kernel: "k".into(),
            initrd: "i".into(),
            rootfs: "r".into(),
            disk: "d".into(),
            disk_format: crate::sandbox::DiskFormat::Qcow2,
            agent_socket: "a.sock".into(),
            qmp_socket: "q.sock".into(),
            console_log: "c.log".into(),
            memory: Memory::PrivateFile("t/mem".into()),
            incoming: true,
            egress_cmd: "/bin/false".into(),
            seccomp: true,
        };
        let a = args(&spec).join(" ");
        assert!(
            a.contains("restrict=on") && a.contains("guestfwd=tcp:10.0.2.100:3128-cmd:/bin/false")
        );
        assert!(a.contains(&format!("tsc_early_khz={} ", crate::accel::tcg_tsc_khz())));
        assert!(a.contains("serial=mags-rootfs") && a.contains("serial=mags-disk"));
        assert!(a.contains("readonly=on"));
        assert!(a.contains("file=d,format=qcow2"));
        assert!(
            a.contains("werror=report,rerror=report"),
            "no VM pause on a full host disk"
        );
        assert!(a.contains("mem-path=t/mem,share=off") && a.contains("-incoming defer"));
        assert!(a.contains("-sandbox on,obsolete=deny"));
        let kvm = args(&QemuSpec {
            accel: Accel::Kvm,
            ..spec
        })
        .join(" ");
        assert!(kvm.contains("-accel kvm") && !kvm.contains("tsc_early_khz"));
    }
}
