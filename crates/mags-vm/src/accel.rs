//! Which accelerator runs guests: KVM where it really boots one, else TCG.
//!
//! `/dev/kvm` existing is not enough: on some hosts it is PVM, which cannot
//! run a stock guest kernel ("emulation failure"). So the verdict comes from
//! booting the real image once under KVM; it is cached in the images dir
//! (`accel.json`), keyed by host kernel and image hash.

use crate::image::GuestImage;
use crate::sandbox::{Boot, Runtime, SandboxOptions};
use crate::VmError;
use serde::{Deserialize, Serialize};

/// The accelerator QEMU is started with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

impl std::str::FromStr for Accel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            other => Err(format!(
                "unknown accelerator {other:?} (expected kvm or tcg)"
            )),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Verdict {
    key: String,
    accel: Accel,
    reason: String,
}

fn host_kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Whether `/dev/kvm` can be opened read-write by this process.
pub fn kvm_device_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// The cached verdict and why, if any.
pub fn cached_verdict(images_dir: &std::path::Path) -> Option<(Accel, String)> {
    let v: Verdict =
        serde_json::from_slice(&std::fs::read(images_dir.join("accel.json")).ok()?).ok()?;
    Some((v.accel, v.reason))
}

pub(crate) async fn detect(rt: &Runtime, image: &GuestImage) -> Result<Accel, VmError> {
    let path = rt.config().images_dir().join("accel.json");
    let key = format!("{}:{}", host_kernel(), image.hash);
    if let Ok(bytes) = std::fs::read(&path) {
        if let Ok(v) = serde_json::from_slice::<Verdict>(&bytes) {
            if v.key == key {
                return Ok(v.accel);
            }
        }
    }
    let (accel, reason) = if !kvm_device_usable() {
        (
            Accel::Tcg,
            "/dev/kvm is missing or not accessible".to_string(),
        )
    } else {
        let mut opts = SandboxOptions::new(format!("kvm-probe-{}", uuid::Uuid::new_v4()));
        opts.disk_gb = 1;
        match rt.launch(image, Accel::Kvm, opts, Boot::Cold).await {
            Ok(sb) => {
                let ok = sb.agent().info().await.is_ok();
                let _ = sb.shutdown().await;
                if ok {
                    (Accel::Kvm, "a guest booted under KVM".to_string())
                } else {
                    (
                        Accel::Tcg,
                        "KVM guest booted but its agent failed".to_string(),
                    )
                }
            }
            Err(e) => (Accel::Tcg, format!("KVM could not boot a guest: {e}")),
        }
    };
    tracing::info!(%accel, %reason, "accelerator chosen");
    let v = Verdict { key, accel, reason };
    if let Ok(bytes) = serde_json::to_vec_pretty(&v) {
        let tmp = path.with_extension("json.tmp");
        if std::fs::write(&tmp, bytes).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }
    Ok(accel)
}
