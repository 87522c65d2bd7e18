//! Tests of the cache logic with fabricated parts (no network, no apt), and
//! one ignored test that runs the real build.

use super::*;
use modules::tests::fake_ko;
use std::cell::RefCell;

fn pkg() -> KernelPkg {
    KernelPkg {
        package: "linux-image-6.1.0-99-cloud-amd64".into(),
        version: "6.1.999-1".into(),
    }
}

/// An images dir whose kernel and rootfs parts already exist (with fake
/// modules and a fake squashfs), so a build only has the initramfs to make.
fn fabricated(dir: &Path) -> (ImageConfig, KernelRecord) {
    let layout = Layout::new(&dir.join("images"));
    let pkg = pkg();
    let kernel = KernelRecord {
        pkg: pkg.clone(),
        release: "6.1.0-99-cloud-amd64".into(),
    };
    let kdir = layout.kernel_dir(&pkg);
    let mods = kdir.join(MODULES_DIR).join(&kernel.release).join("kernel");
    std::fs::create_dir_all(&mods).unwrap();
    let ko = |name: &str, deps: &str| {
        std::fs::write(
            mods.join(format!("{name}.ko")),
            fake_ko(&[&format!("depends={deps}")]),
        )
        .unwrap();
    };
    ko("virtio", "");
    ko("virtio_ring", "virtio");
    ko("virtio_mmio", "virtio,virtio_ring");
    ko("virtio_blk", "virtio,virtio_ring");
    ko("virtio_console", "virtio,virtio_ring");
    ko("virtio-rng", "virtio,virtio_ring");
    ko("failover", "");
    ko("net_failover", "failover");
    ko("virtio_net", "virtio_ring,virtio,net_failover");
    ko("squashfs", "");
    ko("overlay", "");
    ko("unrelated", "");
    std::fs::write(kdir.join(VMLINUX), b"\x7fELF fake").unwrap();
    store::write_json_atomic(&kdir.join(kernel::KERNEL_JSON), &kernel).unwrap();
    layout.write_resolved(&pkg).unwrap();

    let recipe = Recipe::new(&kernel, ImageVariant::Standard).unwrap();
    let rdir = layout.rootfs_dir(&recipe.key());
    std::fs::create_dir_all(&rdir).unwrap();
    std::fs::write(rdir.join(rootfs::SQFS), b"hsqs fake").unwrap();
    store::write_json_atomic(&rdir.join(rootfs::ROOTFS_JSON), &recipe).unwrap();

    let agent = dir.join("agent");
    std::fs::write(&agent, b"agent v1").unwrap();
    let cfg = ImageConfig {
        images_dir: layout.root.clone(),
        agent_bin: agent,
        variant: ImageVariant::Standard,
    };
    (cfg, kernel)
}

fn record(progress: &RefCell<Vec<ImageProgress>>) -> impl Fn(ImageProgress) + '_ {
    move |p| progress.borrow_mut().push(p)
}

#[test]
fn image_hash_follows_every_input() {
    let h = image_hash("root", "kern", "agent");
    assert_eq!(h, image_hash("root", "kern", "agent"));
    assert_eq!(h.len(), 64);
    assert_ne!(h, image_hash("root2", "kern", "agent"));
    assert_ne!(h, image_hash("root", "kern2", "agent"));
    assert_ne!(h, image_hash("root", "kern", "agent2"));
}

#[test]
fn missing_agent_says_how_to_fix_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ImageConfig {
        images_dir: dir.path().join("images"),
        agent_bin: dir.path().join("no-agent"),
        variant: ImageVariant::Standard,
    };
    let err = find_image(&cfg).unwrap_err();
    assert!(matches!(err, ImageError::AgentMissing { .. }), "{err}");
    assert!(err.to_string().contains("static binary"), "{err}");
    let err = ensure_image(&cfg, &|_| {}).unwrap_err();
    assert!(matches!(err, ImageError::AgentMissing { .. }), "{err}");
}

#[test]
fn empty_cache_finds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let agent = dir.path().join("agent");
    std::fs::write(&agent, b"x").unwrap();
    let cfg = ImageConfig {
        images_dir: dir.path().join("images"),
        agent_bin: agent,
        variant: ImageVariant::Standard,
    };
    assert!(find_image(&cfg).unwrap().is_none());
}

#[test]
fn builds_initramfs_from_cached_parts_then_is_cached() {
    if cmd::GZIP.find().is_err() {
        eprintln!("skipping: gzip not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cfg, kernel) = fabricated(dir.path());
    assert!(find_image(&cfg).unwrap().is_none());

    let events = RefCell::new(Vec::new());
    let image = ensure_image(&cfg, &record(&events)).unwrap();
    let steps: Vec<String> = events
        .borrow()
        .iter()
        .filter_map(|e| match e {
            ImageProgress::Step { name, total: 5, .. } => Some(name.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(steps, STEPS);
    assert!(matches!(
        events.borrow().last(),
        Some(ImageProgress::Done { cached: false })
    ));
    assert_eq!(image.kernel_release, kernel.release);
    assert_eq!(image.dir, cfg.images_dir.join(&image.hash));
    assert_eq!(std::fs::read(&image.rootfs).unwrap(), b"hsqs fake");
    assert_eq!(std::fs::read(&image.kernel).unwrap(), b"\x7fELF fake");

    // The initramfs layout the agent relies on.
    let gz = std::fs::read(&image.initrd).unwrap();
    let cpio = std::process::Command::new("gzip")
        .args(["-dc", &image.initrd.display().to_string()])
        .output()
        .unwrap();
    assert!(cpio.status.success() && !gz.is_empty());
    let entries = cpio::parse_newc(&cpio.stdout).unwrap();
    let get = |n: &str| entries.iter().find(|e| e.name == n);
    assert_eq!(get("init").unwrap().data, b"agent v1");
    assert_eq!(get("init").unwrap().mode, 0o100_755);
    for d in [
        "dev",
        "proc",
        "sys",
        "run",
        "tmp",
        "mnt",
        "newroot",
        "lib/modules",
    ] {
        assert_eq!(get(d).unwrap().mode & 0o170_000, 0o040_000, "{d}");
    }
    let order = String::from_utf8(get("lib/modules/load-order").unwrap().data.clone()).unwrap();
    let order: Vec<&str> = order.lines().collect();
    assert_eq!(
        order,
        [
            "virtio.ko",
            "virtio_ring.ko",
            "virtio_mmio.ko",
            "virtio_blk.ko",
            "virtio_console.ko",
            "virtio_rng.ko",
            "failover.ko",
            "net_failover.ko",
            "virtio_net.ko",
            "squashfs.ko",
            "overlay.ko"
        ]
    );
    for m in &order {
        assert!(get(&format!("lib/modules/{m}")).is_some(), "{m}");
    }
    assert!(get("lib/modules/unrelated.ko").is_none());

    // Same inputs: nothing to do.
    let found = find_image(&cfg).unwrap().unwrap();
    assert_eq!(found.hash, image.hash);
    let events = RefCell::new(Vec::new());
    let again = ensure_image(&cfg, &record(&events)).unwrap();
    assert_eq!(again.hash, image.hash);
    assert!(matches!(
        events.borrow().as_slice(),
        [ImageProgress::Done { cached: true }]
    ));

    // A new agent: a new image on the same root part.
    std::fs::write(&cfg.agent_bin, b"agent v2").unwrap();
    assert!(find_image(&cfg).unwrap().is_none());
    let v2 = ensure_image(&cfg, &|_| {}).unwrap();
    assert_ne!(v2.hash, image.hash);
    assert_eq!(std::fs::read(&v2.rootfs).unwrap(), b"hsqs fake");
    assert!(image.dir.join(IMAGE_JSON).is_file(), "old image kept");

    // An image dir without its record is incomplete and gets rebuilt.
    std::fs::remove_file(v2.dir.join(IMAGE_JSON)).unwrap();
    assert!(find_image(&cfg).unwrap().is_none());
    let rebuilt = ensure_image(&cfg, &|_| {}).unwrap();
    assert_eq!(rebuilt.hash, v2.hash);

    // Leftovers of an interrupted build are cleared by the next build.
    let stale = cfg.images_dir.join("rootfs/.tmp-deadbeef-1");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(&cfg.agent_bin, b"agent v3").unwrap();
    ensure_image(&cfg, &|_| {}).unwrap();
    assert!(!stale.exists());
}

#[test]
fn concurrent_builds_share_one_result() {
    if cmd::GZIP.find().is_err() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _) = fabricated(dir.path());
    let hashes: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| ensure_image(&cfg, &|_| {}).map(|i| i.hash)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect()
    });
    assert!(hashes.windows(2).all(|w| w[0] == w[1]));
    let dirs = std::fs::read_dir(&cfg.images_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().len() == 64)
        .count();
    assert_eq!(dirs, 1);
}

/// The real thing: apt, mmdebstrap (downloads ~100 MB from Debian), lz4,
/// tar2sqfs. `MAGS_TEST_IMAGES_DIR` keeps the result (default: a temp dir),
/// `MAGS_TEST_AGENT_BIN` is the /init (default: this test binary).
///
/// `cargo test -p mags-vm image::tests::full_build -- --ignored --nocapture`
#[test]
#[ignore = "downloads Debian packages and takes minutes"]
fn full_build() {
    let temp = tempfile::tempdir().unwrap();
    let images_dir = std::env::var_os("MAGS_TEST_IMAGES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| temp.path().join("images"));
    let agent_bin = std::env::var_os("MAGS_TEST_AGENT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::current_exe().unwrap());
    let cfg = ImageConfig {
        images_dir,
        agent_bin,
        variant: ImageVariant::Standard,
    };
    let started = Instant::now();
    let step_started = RefCell::new(Instant::now());
    let progress = |p: ImageProgress| {
        let now = Instant::now();
        match &p {
            ImageProgress::Step { index, total, name } => {
                eprintln!(
                    "[{:6.1}s] == step {index}/{total}: {name}",
                    (now - started).as_secs_f64()
                );
                *step_started.borrow_mut() = now;
            }
            ImageProgress::Log(l) => eprintln!("[{:6.1}s]    {l}", (now - started).as_secs_f64()),
            ImageProgress::Done { cached } => {
                eprintln!(
                    "[{:6.1}s] done (cached: {cached})",
                    (now - started).as_secs_f64()
                )
            }
        }
    };
    let image = ensure_image(&cfg, &progress).unwrap();
    eprintln!(
        "built in {:.1} s: {image:#?}",
        started.elapsed().as_secs_f64()
    );
    for p in [&image.kernel, &image.initrd, &image.rootfs] {
        eprintln!("{}: {:.1} MiB", p.display(), mib(file_size(p)));
    }
    let elf = std::fs::read(&image.kernel).unwrap();
    kernel::check_vmlinux(&elf).unwrap();

    let again = Instant::now();
    let cached = ensure_image(&cfg, &progress).unwrap();
    assert_eq!(cached.hash, image.hash);
    eprintln!(
        "second ensure_image: {:.3} s",
        again.elapsed().as_secs_f64()
    );
    let again = Instant::now();
    assert!(find_image(&cfg).unwrap().is_some());
    eprintln!("find_image: {:.3} s", again.elapsed().as_secs_f64());
}
