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

/// The TSC rate a TCG guest is told (`tsc_early_khz`), in kHz.
///
/// Under TCG the guest's `rdtsc` reads the host's TSC, so the guest must be
/// told the host's rate: told a fixed 2 GHz on a 2.45 GHz host, its clock
/// ran 22 % fast (`sleep 10` took 8.2 s, and in-guest timeouts fired
/// early). Measured once against the host's monotonic clock (median of
/// three 50 ms windows) and rounded to a MHz, so templates made with it
/// (their directory names carry it) are found again on the next start.
pub fn tcg_tsc_khz() -> u64 {
    static KHZ: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *KHZ.get_or_init(|| measure_tsc_khz().unwrap_or(2_000_000))
}

#[cfg(target_arch = "x86_64")]
fn measure_tsc_khz() -> Option<u64> {
    use std::time::{Duration, Instant};
    let mut rates: Vec<f64> = (0..3)
        .map(|_| {
            // SAFETY: `rdtsc` only reads the time-stamp counter.
            let (t0, c0) = (Instant::now(), unsafe { core::arch::x86_64::_rdtsc() });
            std::thread::sleep(Duration::from_millis(50));
            // SAFETY: as above.
            let (t1, c1) = (Instant::now(), unsafe { core::arch::x86_64::_rdtsc() });
            c1.wrapping_sub(c0) as f64 / (t1 - t0).as_secs_f64() / 1000.0
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    let mhz = (rates[1] / 1000.0).round() as u64;
    // Anything else is not a TSC that counts at a constant rate.
    (100..=10_000).contains(&mhz).then_some(mhz * 1000)
}

#[cfg(not(target_arch = "x86_64"))]
fn measure_tsc_khz() -> Option<u64> {
    None
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
pub fn cached_verdict(layout: &crate::Layout) -> Option<(Accel, String)> {
    let v: Verdict = serde_json::from_slice(&std::fs::read(layout.accel_verdict()).ok()?).ok()?;
    Some((v.accel, v.reason))
}

pub(crate) async fn detect(rt: &Runtime, image: &GuestImage) -> Result<Accel, VmError> {
    let path = rt.layout().accel_verdict();
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
