//! The guest kernel: Debian's cloud kernel package, resolved with
//! `apt-cache`, fetched with `apt-get download`, unpacked with `dpkg-deb -x`.
//!
//! QEMU's microvm boots an ELF `vmlinux` through PVH, but the package ships a
//! bzImage; the ELF is its LZ4 (legacy frame) payload, decompressed here
//! with the `lz4` tool and checked to be a complete x86-64 ELF.

use super::cmd::{self, APT_CACHE, APT_GET, DPKG_DEB, LZ4};
use super::{ImageError, ImageProgress};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// The Debian metapackage that points at the current cloud kernel.
pub(crate) const KERNEL_META_PACKAGE: &str = "linux-image-cloud-amd64";

/// Bump when what is extracted from the kernel package changes.
const KERNEL_RECIPE: u32 = 1;

/// The legacy LZ4 frame magic (`0x184C2102`, little-endian).
const LZ4_LEGACY_MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];

/// A concrete kernel package, e.g. `linux-image-6.1.0-56-cloud-amd64`
/// version `6.1.192-2`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct KernelPkg {
    pub package: String,
    pub version: String,
}

impl KernelPkg {
    /// The directory name of this kernel's part under `kernel/`.
    pub(crate) fn key(&self) -> String {
        let safe = |s: &str| {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "+-.".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect::<String>()
        };
        format!(
            "{}_{}.r{KERNEL_RECIPE}",
            safe(&self.package),
            safe(&self.version)
        )
    }
}

/// What `kernel/<key>/kernel.json` records; written last, so its presence
/// marks the part complete.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct KernelRecord {
    #[serde(flatten)]
    pub pkg: KernelPkg,
    /// `uname -r` of the guest, the directory name under `lib/modules`.
    pub release: String,
}

/// File names inside a kernel part dir.
pub(crate) const VMLINUX: &str = "vmlinux";
pub(crate) const MODULES_DIR: &str = "modules";
pub(crate) const KERNEL_JSON: &str = "kernel.json";

/// Resolves the metapackage to the concrete package and its candidate
/// version with `apt-cache` (local, no network).
pub(crate) fn resolve() -> Result<KernelPkg, ImageError> {
    let fail = |detail: String| ImageError::KernelResolve {
        package: KERNEL_META_PACKAGE.to_string(),
        detail,
    };
    let mut cmd = APT_CACHE.command()?;
    cmd.args(["depends", KERNEL_META_PACKAGE]);
    let out = cmd::run_captured(APT_CACHE, cmd).map_err(|e| fail(e.to_string()))?;
    let package = parse_depends(&out)
        .ok_or_else(|| fail("no linux-image-* dependency in `apt-cache depends`".to_string()))?;

    let mut cmd = APT_CACHE.command()?;
    cmd.args(["show", "--no-all-versions", &package]);
    let out = cmd::run_captured(APT_CACHE, cmd).map_err(|e| fail(e.to_string()))?;
    let version = parse_version(&out)
        .ok_or_else(|| fail(format!("no Version in `apt-cache show {package}`")))?;
    Ok(KernelPkg { package, version })
}

/// The first `linux-image-*` package the metapackage depends on.
pub(crate) fn parse_depends(apt_cache_depends: &str) -> Option<String> {
    apt_cache_depends.lines().find_map(|line| {
        let dep = line.trim().strip_prefix("Depends:")?.trim();
        let dep = dep.trim_start_matches('<').trim_end_matches('>');
        dep.starts_with("linux-image-").then(|| dep.to_string())
    })
}

/// The `Version:` field of `apt-cache show` output.
pub(crate) fn parse_version(apt_cache_show: &str) -> Option<String> {
    apt_cache_show
        .lines()
        .find_map(|l| l.strip_prefix("Version:"))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Downloads and unpacks `pkg` into `dir` (an empty temp dir), leaving
/// `vmlinux`, `modules/<release>/` and `config` there, and returns what to
/// record. The caller writes the record and renames `dir` into place.
pub(crate) fn build(
    pkg: &KernelPkg,
    dir: &Path,
    progress: &dyn Fn(ImageProgress),
) -> Result<KernelRecord, ImageError> {
    let dl = dir.join("download");
    let unpacked = dir.join("unpacked");
    mkdir(&dl)?;

    let mut cmd = APT_GET.command()?;
    if is_root() {
        // apt's download sandbox user (_apt) may not reach our dir; we are
        // root anyway, so skip the privilege drop instead of warning.
        cmd.args(["-o", "APT::Sandbox::User=root"]);
    }
    cmd.args(["download", &format!("{}={}", pkg.package, pkg.version)])
        .current_dir(&dl);
    cmd::run_logged(APT_GET, cmd, progress)?;
    let deb = only_entry(&dl, |n| n.ends_with(".deb"))
        .ok_or_else(|| package_error(pkg, "apt-get download left no .deb"))?;

    progress(ImageProgress::Log(format!("unpacking {}", file_name(&deb))));
    let mut cmd = DPKG_DEB.command()?;
    cmd.arg("-x").arg(&deb).arg(&unpacked);
    cmd::run_logged(DPKG_DEB, cmd, progress)?;

    let modules_root = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|p| unpacked.join(p))
        .find(|p| p.is_dir())
        .ok_or_else(|| package_error(pkg, "no lib/modules in the package"))?;
    let release_dir = only_entry(&modules_root, |_| true)
        .ok_or_else(|| package_error(pkg, "expected one release under lib/modules"))?;
    let release = file_name(&release_dir);

    let vmlinuz = unpacked.join("boot").join(format!("vmlinuz-{release}"));
    progress(ImageProgress::Log(format!(
        "extracting the ELF kernel from {}",
        file_name(&vmlinuz)
    )));
    extract_vmlinux(&vmlinuz, &dir.join(VMLINUX))?;

    mkdir(&dir.join(MODULES_DIR))?;
    rename(&release_dir, &dir.join(MODULES_DIR).join(&release))?;
    let config = unpacked.join("boot").join(format!("config-{release}"));
    if config.is_file() {
        rename(&config, &dir.join("config"))?;
    }
    for tmp in [&unpacked, &dl] {
        std::fs::remove_dir_all(tmp).map_err(|e| ImageError::io(tmp, e))?;
    }
    Ok(KernelRecord {
        pkg: pkg.clone(),
        release,
    })
}

/// Writes the ELF inside the bzImage `vmlinuz` to `dest`.
pub(crate) fn extract_vmlinux(vmlinuz: &Path, dest: &Path) -> Result<(), ImageError> {
    let bz = std::fs::read(vmlinuz).map_err(|e| ImageError::io(vmlinuz, e))?;
    let fail = |detail: String| ImageError::Vmlinux {
        path: vmlinuz.to_path_buf(),
        detail,
    };
    let candidates = lz4_offsets(&bz);
    if candidates.is_empty() {
        return Err(fail(
            "no LZ4 payload (is the kernel compressed with another algorithm?)".to_string(),
        ));
    }
    let mut last_error = String::new();
    for offset in candidates {
        match lz4_decompress(&bz[offset..], dest) {
            Ok(()) => {}
            Err(e) => {
                last_error = e.to_string();
                continue;
            }
        }
        let elf = std::fs::read(dest).map_err(|e| ImageError::io(dest, e))?;
        match check_vmlinux(&elf) {
            Ok(()) => return Ok(()),
            Err(e) => last_error = format!("payload at offset {offset}: {e}"),
        }
    }
    let _ = std::fs::remove_file(dest);
    Err(fail(last_error))
}

/// Where an LZ4 legacy frame may start: first the payload offset from the
/// bzImage header (boot protocol >= 2.08), then every other magic match.
pub(crate) fn lz4_offsets(bz: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    if bz.get(0x202..0x206) == Some(b"HdrS".as_slice()) {
        let setup_sects = match bz.get(0x1f1) {
            Some(0) | None => 4,
            Some(&n) => usize::from(n),
        };
        let payload = bz
            .get(0x248..0x24c)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes);
        if let Some(payload) = payload.and_then(|p| usize::try_from(p).ok()) {
            let at = (setup_sects + 1) * 512 + payload;
            if bz.get(at..at + 4) == Some(LZ4_LEGACY_MAGIC.as_slice()) {
                offsets.push(at);
            }
        }
    }
    for at in bz
        .windows(4)
        .enumerate()
        .filter(|(_, w)| *w == LZ4_LEGACY_MAGIC)
        .map(|(i, _)| i)
    {
        if !offsets.contains(&at) {
            offsets.push(at);
        }
    }
    offsets
}

/// Runs `lz4 -dc` over `input`. lz4 stops at the end of the frame and may
/// complain about the bytes after it (the bzImage appends the size), so its
/// exit status is not trusted: the caller checks the output instead.
fn lz4_decompress(input: &[u8], dest: &Path) -> Result<(), ImageError> {
    let out = std::fs::File::create(dest).map_err(|e| ImageError::io(dest, e))?;
    let mut cmd = LZ4.command()?;
    cmd.arg("-dc")
        .stdin(Stdio::piped())
        .stdout(out)
        .stderr(Stdio::null());
    let mut child = cmd.spawn().map_err(|source| ImageError::Spawn {
        tool: LZ4.name,
        source,
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A broken pipe only means lz4 stopped reading at the frame's end.
        let _ = stdin.write_all(input);
    }
    child.wait().map_err(|source| ImageError::Spawn {
        tool: LZ4.name,
        source,
    })?;
    Ok(())
}

/// Checks that `elf` is a whole x86-64 executable: right header, and every
/// program segment inside the file (a truncated decompression fails this).
pub(crate) fn check_vmlinux(elf: &[u8]) -> Result<(), String> {
    if elf.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err("output is not an ELF file".to_string());
    }
    if elf.get(4..6) != Some([2u8, 1].as_slice()) {
        return Err("not a little-endian ELF64".to_string());
    }
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    if u16_at(0x12) != Some(0x3e) {
        return Err("not an x86-64 ELF".to_string());
    }
    let truncated = || "truncated ELF headers".to_string();
    let phoff = u64_at(0x20).ok_or_else(truncated)?;
    let phentsize = u64::from(u16_at(0x36).ok_or_else(truncated)?);
    let phnum = u64::from(u16_at(0x38).ok_or_else(truncated)?);
    if phnum == 0 {
        return Err("no program headers".to_string());
    }
    for i in 0..phnum {
        let h = usize::try_from(phoff + i * phentsize).map_err(|_| truncated())?;
        let offset = u64_at(h + 8).ok_or_else(truncated)?;
        let filesz = u64_at(h + 32).ok_or_else(truncated)?;
        if offset.saturating_add(filesz) > elf.len() as u64 {
            return Err(format!(
                "segment {i} ends at {} but the file has {} bytes (truncated)",
                offset.saturating_add(filesz),
                elf.len()
            ));
        }
    }
    Ok(())
}

fn package_error(pkg: &KernelPkg, detail: &str) -> ImageError {
    ImageError::KernelPackage {
        package: format!("{}={}", pkg.package, pkg.version),
        detail: detail.to_string(),
    }
}

/// The one entry of `dir` whose name passes `want`, if there is exactly one.
fn only_entry(dir: &Path, want: impl Fn(&str) -> bool) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(&want))
        .collect();
    (found.len() == 1).then(|| found.remove(0))
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn mkdir(p: &Path) -> Result<(), ImageError> {
    std::fs::create_dir_all(p).map_err(|e| ImageError::io(p, e))
}

fn rename(from: &Path, to: &Path) -> Result<(), ImageError> {
    std::fs::rename(from, to).map_err(|e| ImageError::io(to, e))
}

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_apt_cache_output() {
        let depends = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n";
        assert_eq!(
            parse_depends(depends).as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        let virtual_dep = "x\n  Depends: kmod\n  Depends: <linux-image-6.1.0-9-cloud-amd64>\n";
        assert_eq!(
            parse_depends(virtual_dep).as_deref(),
            Some("linux-image-6.1.0-9-cloud-amd64")
        );
        assert_eq!(parse_depends("x\n  Depends: kmod\n"), None);
        let show = "Package: linux-image-6.1.0-56-cloud-amd64\nSource: linux-signed-amd64 (6.1.192+2)\nVersion: 6.1.192-2\n";
        assert_eq!(parse_version(show).as_deref(), Some("6.1.192-2"));
        assert_eq!(parse_version("Package: x\n"), None);
    }

    #[test]
    fn kernel_key_is_a_safe_dir_name() {
        let pkg = KernelPkg {
            package: "linux-image-6.1.0-56-cloud-amd64".into(),
            version: "1:6.1.192-2~bpo/x".into(),
        };
        assert_eq!(
            pkg.key(),
            "linux-image-6.1.0-56-cloud-amd64_1_6.1.192-2_bpo_x.r1"
        );
    }

    /// A fake bzImage: setup sectors, `HdrS`, payload offset, and LZ4 magic
    /// both at the header's offset and earlier as a decoy.
    fn fake_bzimage() -> (Vec<u8>, usize) {
        let mut bz = vec![0u8; 8192];
        bz[0x1f1] = 3; // (3 + 1) * 512 = 2048
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        bz[0x248..0x24c].copy_from_slice(&1000u32.to_le_bytes());
        bz[1500..1504].copy_from_slice(&LZ4_LEGACY_MAGIC);
        bz[3048..3052].copy_from_slice(&LZ4_LEGACY_MAGIC);
        (bz, 3048)
    }

    #[test]
    fn finds_lz4_payload_header_first() {
        let (bz, at) = fake_bzimage();
        assert_eq!(lz4_offsets(&bz), [at, 1500]);
        // Without a boot header, a plain scan in file order.
        let mut raw = bz.clone();
        raw[0x202] = 0;
        assert_eq!(lz4_offsets(&raw), [1500, at]);
        assert!(lz4_offsets(&[0u8; 64]).is_empty());
    }

    #[test]
    fn extracts_vmlinux_from_lz4_payload() {
        if LZ4.find().is_err() {
            eprintln!("skipping: lz4 not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // A small valid ELF: header + one program header covering it.
        let mut elf = vec![0u8; 4096];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x12..0x14].copy_from_slice(&0x3eu16.to_le_bytes());
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        elf[64 + 32..64 + 40].copy_from_slice(&4096u64.to_le_bytes());
        check_vmlinux(&elf).unwrap();
        assert!(check_vmlinux(&elf[..2048]).is_err());

        let raw = dir.path().join("vmlinux.raw");
        std::fs::write(&raw, &elf).unwrap();
        let lz = dir.path().join("vmlinux.lz4");
        let st = std::process::Command::new("lz4")
            .args(["-l", "-q", "-f"])
            .arg(&raw)
            .arg(&lz)
            .status()
            .unwrap();
        assert!(st.success());
        let (mut bz, at) = fake_bzimage();
        bz.truncate(at);
        bz.extend_from_slice(&std::fs::read(&lz).unwrap());
        bz.extend_from_slice(&4096u32.to_le_bytes()); // trailing size, as the kernel build appends
        let vmlinuz = dir.path().join("vmlinuz");
        std::fs::write(&vmlinuz, &bz).unwrap();
        let out = dir.path().join("vmlinux");
        extract_vmlinux(&vmlinuz, &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), elf);

        std::fs::write(&vmlinuz, vec![0u8; 100]).unwrap();
        let err = extract_vmlinux(&vmlinuz, &out).unwrap_err().to_string();
        assert!(err.contains("no LZ4 payload"), "{err}");
    }
}
