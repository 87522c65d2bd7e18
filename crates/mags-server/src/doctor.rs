//! `magsd doctor`: what this host has and lacks for running sandboxes,
//! one line per check with how to fix it.

use crate::config::find_on_path;
use mags_vm::locate::check_static;
use mags_vm::{accel, Runtime, RuntimeConfig};
use std::path::{Path, PathBuf};

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    /// What was found, or what is wrong.
    pub detail: String,
    /// How to fix it (empty when ok).
    pub fix: String,
}

impl Check {
    fn ok(name: &str, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            ok: true,
            detail: detail.into(),
            fix: String::new(),
        }
    }

    fn missing(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            ok: false,
            detail: detail.into(),
            fix: fix.into(),
        }
    }

    /// `OK      name: detail` or `MISSING name: detail -> fix`.
    pub fn line(&self) -> String {
        if self.ok {
            format!("OK      {}: {}", self.name, self.detail)
        } else {
            format!("MISSING {}: {} -> {}", self.name, self.detail, self.fix)
        }
    }
}

/// Host programs the VM layer needs, and the Debian package of each.
const TOOLS: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("mmdebstrap", "mmdebstrap"),
    ("tar2sqfs", "squashfs-tools-ng"),
    ("lz4", "lz4"),
    ("mkfs.ext4", "e2fsprogs"),
];

/// Every check; none boots a VM (the accelerator verdict is the one
/// cached by the last probe, if any).
pub fn host_checks(cfg: &RuntimeConfig) -> Vec<Check> {
    let mut out: Vec<Check> = TOOLS
        .iter()
        .map(
            |(tool, pkg)| match find_on_path(tool).or_else(|| sbin(tool)) {
                Some(p) => Check::ok(tool, p.display().to_string()),
                None => Check::missing(tool, "not found", format!("apt-get install -y {pkg}")),
            },
        )
        .collect();
    out.push(agent_check(&cfg.agent_bin));
    out.push(kvm_check(&cfg.layout()));
    out.push(image_check(cfg));
    out.push(jail_check(cfg));
    out
}

/// What will confine each QEMU (SECURITY.md).
fn jail_check(cfg: &RuntimeConfig) -> Check {
    const NAME: &str = "confinement";
    match mags_vm::jail::Jail::new(cfg.jail.clone(), &cfg.data_dir) {
        Err(e) => Check::missing(NAME, e.to_string(), "run magsd as root, or --jail auto"),
        Ok(jail) => {
            let st = jail.status();
            let detail = describe_jail(&st);
            match st.note {
                None => Check::ok(NAME, detail),
                Some(note) => Check::missing(
                    NAME,
                    format!("{detail}; {note}"),
                    "run magsd as root on a host with cgroups for the full jail",
                ),
            }
        }
    }
}

/// One line: which layers are in force.
pub fn describe_jail(st: &mags_vm::JailStatus) -> String {
    let mut on = Vec::new();
    if st.namespaces {
        on.push("own mount/net/ipc/uts namespaces".to_string());
    }
    if st.own_uid {
        on.push("own uid".to_string());
    }
    if let Some(cg) = &st.cgroups {
        on.push(format!("{cg} limits"));
    }
    if st.seccomp {
        on.push("QEMU seccomp".to_string());
    }
    if on.is_empty() {
        "none".to_string()
    } else {
        on.join(", ")
    }
}

fn sbin(tool: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

fn agent_check(agent_bin: &Path) -> Check {
    let fix = "build it with scripts/build-agent, or pass --agent-bin / MAGS_AGENT_BIN";
    if !agent_bin.is_file() {
        return Check::missing(
            "mags-agent",
            format!("{} not found", agent_bin.display()),
            fix,
        );
    }
    match check_static(agent_bin) {
        Ok(()) => Check::ok("mags-agent", agent_bin.display().to_string()),
        Err(e) => Check::missing("mags-agent", e, fix),
    }
}

/// Whether /dev/kvm opens, whether it is PVM (which cannot boot a stock
/// guest kernel), and the verdict of the last probe.
fn kvm_check(layout: &mags_vm::Layout) -> Check {
    let verdict = match accel::cached_verdict(layout) {
        Some((a, why)) => format!("verdict: {a} ({why})"),
        None => "no verdict yet: the first VM start probes it".to_string(),
    };
    let pvm = Path::new("/sys/module/kvm_pvm").exists();
    if !accel::kvm_device_usable() {
        return Check::missing(
            "kvm",
            format!("/dev/kvm cannot be opened, guests run under TCG (slower); {verdict}"),
            "enable virtualization, load kvm_intel/kvm_amd, and add yourself to group kvm",
        );
    }
    if pvm {
        // Nothing the user can fix here; TCG works, only slower.
        return Check::ok(
            "kvm",
            format!(
                "/dev/kvm is PVM (kvm_pvm), which cannot boot a stock guest kernel, so guests \
                 run under TCG (slower); {verdict}"
            ),
        );
    }
    Check::ok("kvm", format!("/dev/kvm opens; {verdict}"))
}

/// Whether the guest image is built.
fn image_check(cfg: &RuntimeConfig) -> Check {
    let fix = || match &cfg.images_dir {
        Some(d) => format!("magsd image build --images-dir {}", d.display()),
        None => format!("magsd image build --data-dir {}", cfg.data_dir.display()),
    };
    match Runtime::new(cfg.clone()).cached_image() {
        Ok(Some(img)) => Check::ok("guest image", img.dir.display().to_string()),
        Ok(None) => Check::missing(
            "guest image",
            format!("not built under {}", cfg.images_dir().display()),
            fix(),
        ),
        Err(e) => Check::missing("guest image", e.to_string(), fix()),
    }
}
