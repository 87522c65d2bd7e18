//! The guest image: kernel, initramfs (agent as /init + modules), and the
//! read-only Debian root (squashfs), built with Debian's tools on the host
//! and cached by a hash of every input.
//!
//! [`ensure_image`] builds what is missing (blocking; run it in
//! `spawn_blocking`), [`find_image`] only looks.
//!
//! # The initramfs, as the agent sees it
//!
//! A gzip'ed `newc` cpio, all entries owned by root with mtime 0:
//!
//! ```text
//! /init                      the agent (cfg.agent_bin), 0755
//! /dev/                      0755, with /dev/console (char 5:1, 0600);
//!                            mount devtmpfs over it
//! /proc/ /sys/ /run/         0555 / 0555 / 0755, empty mount points
//! /tmp/                      1777
//! /mnt/ /newroot/            0755, empty mount points
//! /lib/modules/<name>.ko     0644, one per module, named by module name
//!                            (underscores: virtio_rng.ko, not virtio-rng.ko)
//! /lib/modules/load-order    0644, one file name per line ("virtio.ko"),
//!                            dependencies first: finit_module(2) each in
//!                            this order, no parameters
//! ```
//!
//! The modules are `modules::INITRAMFS_MODULES` plus their dependency
//! closure. For Debian's 6.1 cloud kernel the order is `virtio_ring`,
//! `virtio` (it needs virtio_ring), `virtio_mmio`, `virtio_blk`,
//! `virtio_console`, `virtio_rng`, `failover`, `net_failover`, `virtio_net`,
//! `squashfs`, `overlay`; `image.json` records it too. ext4, zstd and
//! devtmpfs are built in. virtio-mmio devices are found through ACPI once
//! `virtio_mmio` is loaded; the virtio-serial port appears as
//! `/sys/class/virtio-ports/vport*p*` with its `name`.
//!
//! The root squashfs has the kernel's full `/usr/lib/modules/<release>`
//! (with `depmod` run, and `kmod` installed), so `modprobe` works after the
//! pivot.
//!
//! # The cache under `images_dir`
//!
//! ```text
//! .lock                               flock(2) held while building
//! kernel/resolved.json                last kernel package resolved by apt-cache
//! kernel/<pkg>_<version>.r<n>/        vmlinux, config, modules/<release>/...,
//!                                     kernel.json (the part's record)
//! rootfs/<rootfs-key>/                rootfs.sqfs, rootfs.json
//! <image-hash>/                       initrd.img, vmlinux and rootfs.sqfs
//!                                     (hard links to the parts), image.json
//! ```
//!
//! Keys: the rootfs key hashes the `rootfs::Recipe` (recipe version,
//! packages, mirrors, hook script, kernel package and version), so a new
//! agent reuses the root; the image hash covers the rootfs key, the kernel
//! key, the agent's sha256 and the module list. Every part is built in a
//! `.tmp-*` dir and renamed into place, and `image.json` is written last, so
//! an interrupted build never looks complete; the next build under the lock
//! deletes its leftovers.
//!
//! The kernel version is pinned by `kernel/resolved.json` once an image has
//! been built: later builds reuse it without asking apt. Delete that file
//! to move to the kernel apt currently offers (which also rebuilds the
//! root, whose modules must match).

mod cmd;
mod cpio;
mod kernel;
mod modules;
mod rootfs;
mod store;

use kernel::{KernelPkg, KernelRecord, MODULES_DIR, VMLINUX};
use modules::{ModuleIndex, INITRAMFS_MODULES};
use rootfs::Recipe;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Instant;
use store::Layout;

/// Bump when the initramfs layout or the image record changes.
const IMAGE_RECIPE: u32 = 1;

const INITRD: &str = "initrd.img";
const IMAGE_JSON: &str = "image.json";

/// Names of the build steps, in order, for [`ImageProgress::Step`].
pub const STEPS: [&str; 5] = ["kernel", "modules", "rootfs", "squashfs", "initramfs"];

/// A built, complete guest image.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct GuestImage {
    /// Content hash of all inputs (hex).
    pub hash: String,
    pub dir: PathBuf,
    /// ELF vmlinux for PVH direct boot.
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// squashfs root, shared read-only by every sandbox.
    pub rootfs: PathBuf,
    pub kernel_release: String,
}

/// Which root filesystem an image has. Each variant is its own image
/// (own rootfs key, own image hash, own templates); they share the kernel
/// and the initramfs inputs.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ImageVariant {
    /// The Debian root every job runs in.
    #[default]
    Standard,
    /// The standard root plus Debian's `chromium` (browser sessions).
    Browser,
    /// The standard root plus Claude Code (`@anthropic-ai/claude-code`)
    /// and the Node it needs, from the npm registry.
    Claude,
    /// The standard root plus the pi coding agent
    /// (`@mariozechner/pi-coding-agent`) and the Node it needs.
    Pi,
}

impl ImageVariant {
    /// All variants, standard first.
    pub const ALL: [ImageVariant; 4] = [
        ImageVariant::Standard,
        ImageVariant::Browser,
        ImageVariant::Claude,
        ImageVariant::Pi,
    ];

    /// The name used in the API (`rootfs_type`) and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageVariant::Standard => "standard",
            ImageVariant::Browser => "browser",
            ImageVariant::Claude => "claude",
            ImageVariant::Pi => "pi",
        }
    }

    /// Its place in [`ImageVariant::ALL`].
    pub fn index(self) -> usize {
        match self {
            ImageVariant::Standard => 0,
            ImageVariant::Browser => 1,
            ImageVariant::Claude => 2,
            ImageVariant::Pi => 3,
        }
    }
}

impl std::fmt::Display for ImageVariant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ImageVariant {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageVariant::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = ImageVariant::ALL.iter().map(|v| v.as_str()).collect();
                format!("unknown image variant {s:?} ({})", names.join(", "))
            })
    }
}

/// Where and from what to build.
#[derive(Debug, Clone)]
pub struct ImageConfig {
    /// `<data dir>/images`.
    pub images_dir: PathBuf,
    /// The static `mags-agent` binary to put in the initramfs as /init.
    pub agent_bin: PathBuf,
    /// Which root filesystem.
    pub variant: ImageVariant,
}

/// Progress reports during a build, for a progress bar.
#[derive(Debug, Clone)]
pub enum ImageProgress {
    /// Starting step `index` (1-based) of `total`; see [`STEPS`].
    Step {
        index: usize,
        total: usize,
        name: String,
    },
    /// A line of output from the current step.
    Log(String),
    /// The image is ready (`cached` when nothing had to be built).
    Done { cached: bool },
}

/// Why the image could not be found or built.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{tool} not found: apt-get install {package}")]
    ToolMissing {
        tool: &'static str,
        package: &'static str,
    },
    #[error(
        "agent binary {} not found: build mags-agent as a static binary \
         (x86_64-unknown-linux-musl) and point the agent path at it",
        path.display()
    )]
    AgentMissing { path: PathBuf },
    #[error("could not start {tool}")]
    Spawn {
        tool: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} failed ({status}); its last output:\n{output}")]
    CommandFailed {
        tool: &'static str,
        status: String,
        output: String,
    },
    #[error(
        "cannot resolve the kernel package {package} ({detail}): run `apt-get update` \
         and make sure Debian bookworm main and bookworm-security are in apt's sources"
    )]
    KernelResolve { package: String, detail: String },
    #[error("kernel package {package}: {detail}")]
    KernelPackage { package: String, detail: String },
    #[error("no bootable ELF kernel inside {}: {detail}", path.display())]
    Vmlinux { path: PathBuf, detail: String },
    #[error("kernel module {name} not found in kernel {release}")]
    ModuleMissing { name: String, release: String },
    #[error("cannot read kernel module {}: {detail}", path.display())]
    ModuleInfo { path: PathBuf, detail: String },
    #[error("kernel modules depend on each other in a cycle through {0}")]
    ModuleCycle(String),
    #[error("invalid MAGS_DEBIAN_MIRRORS: {0}")]
    Mirrors(String),
    #[error("I/O error on {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ImageError {
    pub(crate) fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
}

/// What `<image-hash>/image.json` records. File names are relative to the
/// image dir, so the data dir can move.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct ImageRecord {
    hash: String,
    kernel_release: String,
    kernel_package: KernelPkg,
    kernel_key: String,
    rootfs_key: String,
    agent_sha256: String,
    /// Module names in load order, as in `/lib/modules/load-order`.
    modules: Vec<String>,
    kernel: String,
    initrd: String,
    rootfs: String,
}

/// The inputs that name an image.
#[derive(serde::Serialize)]
struct ImageInputs<'a> {
    recipe: u32,
    rootfs_key: &'a str,
    kernel_key: &'a str,
    agent_sha256: &'a str,
    modules: Vec<(&'a str, bool)>,
}

/// The image hash for these parts and this agent.
fn image_hash(rootfs_key: &str, kernel_key: &str, agent_sha256: &str) -> String {
    let inputs = ImageInputs {
        recipe: IMAGE_RECIPE,
        rootfs_key,
        kernel_key,
        agent_sha256,
        modules: INITRAMFS_MODULES
            .iter()
            .map(|&(m, need)| (m, need == modules::Need::Required))
            .collect(),
    };
    // Serializing plain strings and numbers cannot fail.
    let json = serde_json::to_vec(&inputs).unwrap_or_default();
    hex::encode(Sha256::digest(&json))
}

fn agent_sha256(cfg: &ImageConfig) -> Result<String, ImageError> {
    store::sha256_file(&cfg.agent_bin).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ImageError::AgentMissing {
            path: cfg.agent_bin.clone(),
        },
        _ => ImageError::io(&cfg.agent_bin, e),
    })
}

/// The complete cached image for the current inputs, or `None`. Cheap: no
/// network, no apt (the kernel comes from `kernel/resolved.json`).
pub fn find_image(cfg: &ImageConfig) -> Result<Option<GuestImage>, ImageError> {
    let agent = agent_sha256(cfg)?;
    let layout = Layout::new(&cfg.images_dir);
    let Some(pkg) = layout.read_resolved() else {
        return Ok(None);
    };
    let Some(kernel) = layout.load_kernel(&pkg) else {
        return Ok(None);
    };
    let hash = image_hash(
        &Recipe::new(&kernel, cfg.variant)?.key(),
        &pkg.key(),
        &agent,
    );
    Ok(load_image(&layout, &hash))
}

/// Reads `<hash>/image.json` and checks that its files are there.
fn load_image(layout: &Layout, hash: &str) -> Option<GuestImage> {
    let dir = layout.image_dir(hash);
    let record: ImageRecord = store::read_json(&dir.join(IMAGE_JSON))?;
    let image = GuestImage {
        hash: record.hash,
        kernel: dir.join(&record.kernel),
        initrd: dir.join(&record.initrd),
        rootfs: dir.join(&record.rootfs),
        kernel_release: record.kernel_release,
        dir,
    };
    let complete = image.hash == hash
        && [&image.kernel, &image.initrd, &image.rootfs]
            .iter()
            .all(|p| p.is_file());
    complete.then_some(image)
}

/// Returns the image for the current inputs, building whatever part is
/// missing. Blocking (minutes on a first build: the root is downloaded from
/// Debian's mirrors); run it in `spawn_blocking`. Concurrent callers, in
/// this process or others, wait for one build and share its result.
pub fn ensure_image(
    cfg: &ImageConfig,
    progress: &dyn Fn(ImageProgress),
) -> Result<GuestImage, ImageError> {
    if let Some(image) = find_image(cfg)? {
        progress(ImageProgress::Done { cached: true });
        return Ok(image);
    }
    let layout = Layout::new(&cfg.images_dir);
    let _lock = layout.lock(progress)?;
    // Someone else may have built it while we waited.
    if let Some(image) = find_image(cfg)? {
        progress(ImageProgress::Done { cached: true });
        return Ok(image);
    }
    layout.remove_stale_temps()?;
    let started = Instant::now();
    let image = Build {
        cfg,
        layout: &layout,
        progress,
    }
    .run()?;
    tracing::info!(
        hash = %image.hash,
        secs = started.elapsed().as_secs_f64(),
        "guest image built"
    );
    progress(ImageProgress::Done { cached: false });
    Ok(image)
}

/// One build, run with the lock held.
struct Build<'a> {
    cfg: &'a ImageConfig,
    layout: &'a Layout,
    progress: &'a dyn Fn(ImageProgress),
}

impl Build<'_> {
    fn run(&self) -> Result<GuestImage, ImageError> {
        let agent = agent_sha256(self.cfg)?;

        let t = self.step(1);
        let (pkg, kernel) = self.kernel()?;
        self.finished("kernel", t);

        let t = self.step(2);
        let release_dir = self
            .layout
            .kernel_dir(&pkg)
            .join(MODULES_DIR)
            .join(&kernel.release);
        let modules =
            ModuleIndex::scan(&release_dir, &kernel.release)?.load_order(INITRAMFS_MODULES)?;
        let names: Vec<&str> = modules.iter().map(|(n, _)| n.as_str()).collect();
        self.log(format!(
            "initramfs modules in load order: {}",
            names.join(" ")
        ));
        self.finished("modules", t);

        let rootfs_key = self.rootfs(&kernel, &release_dir)?;

        let t = self.step(5);
        let hash = image_hash(&rootfs_key, &pkg.key(), &agent);
        let image = self.initramfs(&pkg, &kernel, &rootfs_key, &agent, &hash, &modules)?;
        self.finished("initramfs", t);
        Ok(image)
    }

    fn step(&self, index: usize) -> Instant {
        (self.progress)(ImageProgress::Step {
            index,
            total: STEPS.len(),
            name: STEPS[index - 1].to_string(),
        });
        Instant::now()
    }

    fn log(&self, line: String) {
        (self.progress)(ImageProgress::Log(line));
    }

    fn finished(&self, what: &str, started: Instant) {
        let secs = started.elapsed().as_secs_f64();
        tracing::info!(step = what, secs, "image build step done");
        self.log(format!("{what} done in {secs:.1} s"));
    }

    /// Step 1: the kernel part, reusing the pinned package when it is built.
    fn kernel(&self) -> Result<(KernelPkg, KernelRecord), ImageError> {
        let pinned = self
            .layout
            .read_resolved()
            .and_then(|p| self.layout.load_kernel(&p).map(|k| (p, k)));
        if let Some((pkg, kernel)) = pinned {
            self.log(format!(
                "using cached kernel {} {}",
                pkg.package, pkg.version
            ));
            return Ok((pkg, kernel));
        }
        let pkg = kernel::resolve()?;
        self.log(format!(
            "{} resolves to {} {}",
            kernel::KERNEL_META_PACKAGE,
            pkg.package,
            pkg.version
        ));
        let kernel = match self.layout.load_kernel(&pkg) {
            Some(k) => k,
            None => {
                let dir = self.layout.kernel_dir(&pkg);
                let tmp = self.layout.temp_dir_for(&dir)?;
                let record = kernel::build(&pkg, &tmp, self.progress)?;
                store::write_json_atomic(&tmp.join(kernel::KERNEL_JSON), &record)?;
                store::publish_dir(&tmp, &dir)?;
                record
            }
        };
        self.layout.write_resolved(&pkg)?;
        Ok((pkg, kernel))
    }

    /// Steps 3 and 4: the root part; returns its key.
    fn rootfs(&self, kernel: &KernelRecord, release_dir: &Path) -> Result<String, ImageError> {
        let recipe = Recipe::new(kernel, self.cfg.variant)?;
        let key = recipe.key();
        let dir = self.layout.rootfs_dir(&key);
        if dir.join(rootfs::SQFS).is_file() && dir.join(rootfs::ROOTFS_JSON).is_file() {
            self.step(3);
            self.log(format!("using cached root filesystem {key}"));
            self.step(4);
            return Ok(key);
        }
        let t = self.step(3);
        let tmp = self.layout.temp_dir_for(&dir)?;
        let tar = tmp.join(rootfs::TAR);
        let work = tmp.join("work");
        std::fs::create_dir_all(&work).map_err(|e| ImageError::io(&work, e))?;
        recipe.build_tar(release_dir, &tar, &work, self.progress)?;
        self.finished("rootfs", t);

        let t = self.step(4);
        let sqfs = tmp.join(rootfs::SQFS);
        recipe.build_sqfs(&tar, &sqfs, self.progress)?;
        for (path, size) in [(&tar, file_size(&tar)), (&sqfs, file_size(&sqfs))] {
            self.log(format!("{}: {:.1} MiB", file_name(path), mib(size)));
        }
        std::fs::remove_file(&tar).map_err(|e| ImageError::io(&tar, e))?;
        std::fs::remove_dir_all(&work).map_err(|e| ImageError::io(&work, e))?;
        store::write_json_atomic(&tmp.join(rootfs::ROOTFS_JSON), &recipe)?;
        store::publish_dir(&tmp, &dir)?;
        self.finished("squashfs", t);
        Ok(key)
    }

    /// Step 5: the initramfs and the image dir that ties the parts together.
    fn initramfs(
        &self,
        pkg: &KernelPkg,
        kernel: &KernelRecord,
        rootfs_key: &str,
        agent: &str,
        hash: &str,
        modules: &[(String, PathBuf)],
    ) -> Result<GuestImage, ImageError> {
        let agent_bytes = std::fs::read(&self.cfg.agent_bin)
            .map_err(|e| ImageError::io(&self.cfg.agent_bin, e))?;
        let mut archive = cpio::Archive::new();
        archive
            .file("init", 0o755, agent_bytes)
            .dir("dev", 0o755)
            .char_dev("dev/console", 0o600, 5, 1)
            .dir("proc", 0o555)
            .dir("sys", 0o555)
            .dir("run", 0o755)
            .dir("tmp", 0o1777)
            .dir("mnt", 0o755)
            .dir("newroot", 0o755)
            .dir("lib/modules", 0o755);
        let mut load_order = String::new();
        for (name, path) in modules {
            let bytes = std::fs::read(path).map_err(|e| ImageError::io(path, e))?;
            archive.file(&format!("lib/modules/{name}.ko"), 0o644, bytes);
            load_order.push_str(&format!("{name}.ko\n"));
        }
        archive.file("lib/modules/load-order", 0o644, load_order.into_bytes());

        let dir = self.layout.image_dir(hash);
        let tmp = self.layout.temp_dir_for(&dir)?;
        archive.write_gz(&tmp.join(INITRD))?;
        self.log(format!(
            "{INITRD}: {:.1} MiB",
            mib(file_size(&tmp.join(INITRD)))
        ));
        store::link_or_copy(
            &self.layout.kernel_dir(pkg).join(VMLINUX),
            &tmp.join(VMLINUX),
        )?;
        store::link_or_copy(
            &self.layout.rootfs_dir(rootfs_key).join(rootfs::SQFS),
            &tmp.join(rootfs::SQFS),
        )?;
        let record = ImageRecord {
            hash: hash.to_string(),
            kernel_release: kernel.release.clone(),
            kernel_package: pkg.clone(),
            kernel_key: pkg.key(),
            rootfs_key: rootfs_key.to_string(),
            agent_sha256: agent.to_string(),
            modules: modules.iter().map(|(n, _)| n.clone()).collect(),
            kernel: VMLINUX.to_string(),
            initrd: INITRD.to_string(),
            rootfs: rootfs::SQFS.to_string(),
        };
        store::write_json_atomic(&tmp.join(IMAGE_JSON), &record)?;
        store::publish_dir(&tmp, &dir)?;
        load_image(self.layout, hash).ok_or_else(|| {
            ImageError::io(
                dir.join(IMAGE_JSON),
                std::io::Error::other("image incomplete right after it was written"),
            )
        })
    }
}

fn file_size(path: &Path) -> u64 {
    path.metadata().map(|m| m.len()).unwrap_or(0)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
