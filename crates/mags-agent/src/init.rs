//! Machine setup as PID 1: modules, filesystems, pivot, hostname.
//!
//! The initramfs (built by `mags-vm`'s image builder) holds this binary as
//! `/init`, the modules as `/lib/modules/<name>.ko` and their load order in
//! `/lib/modules/load-order`. Block devices are found by their virtio serial
//! number ([`mags_proto::ROOTFS_SERIAL`], [`mags_proto::DISK_SERIAL`]), never
//! by probe order.

use mags_proto::SetupSpec;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const NEW_ROOT: &str = "/newroot";

/// Milliseconds since boot (CLOCK_MONOTONIC).
pub fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// Reports a fatal error on the console and stops the VM, so the host sees
/// QEMU exit with the reason in the console log.
pub fn fatal(msg: &str) -> ! {
    if let Ok(mut c) = OpenOptions::new().write(true).open("/dev/console") {
        let _ = writeln!(c, "mags-agent: FATAL: {msg}");
    }
    eprintln!("mags-agent: FATAL: {msg}");
    // SAFETY: plain syscalls; we are PID 1 and are about to stop the machine.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_AUTOBOOT);
    }
    std::process::exit(1)
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

fn mount(
    src: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> io::Result<()> {
    let (src_c, target_c, fs_c, data_c) = (cstr(src)?, cstr(target)?, cstr(fstype)?, cstr(data)?);
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            src_c.as_ptr(),
            target_c.as_ptr(),
            fs_c.as_ptr(),
            flags,
            data_c.as_ptr().cast(),
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("mount {fstype} {src} on {target}: {e}"),
        ));
    }
    Ok(())
}

fn move_mount(from: &str, to: &str) -> io::Result<()> {
    fs::create_dir_all(to)?;
    mount(from, to, "", libc::MS_MOVE, "")
}

fn load_modules() -> io::Result<()> {
    let order = match fs::read_to_string("/lib/modules/load-order") {
        Ok(o) => o,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for name in order.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = if name.starts_with('/') {
            PathBuf::from(name)
        } else {
            Path::new("/lib/modules").join(name)
        };
        let f = File::open(&path)?;
        let params = cstr("")?;
        // SAFETY: f is an open module file; params is a valid empty string.
        let rc =
            unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), params.as_ptr(), 0) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(io::Error::new(
                    e.kind(),
                    format!("loading {}: {e}", path.display()),
                ));
            }
        }
    }
    Ok(())
}

/// Finds `/dev/vdX` whose virtio serial is `serial`, waiting for probing.
fn block_device(serial: &str, deadline: Instant) -> io::Result<String> {
    loop {
        if let Ok(entries) = fs::read_dir("/sys/block") {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                let s = fs::read_to_string(e.path().join("serial")).unwrap_or_default();
                if s.trim() == serial {
                    return Ok(format!("/dev/{name}"));
                }
            }
        }
        if Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no block device with serial {serial}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until the kernel sees `dev` at `bytes` (after a host-side resize).
fn wait_for_size(dev: &str, bytes: u64, deadline: Instant) -> io::Result<()> {
    let name = dev.trim_start_matches("/dev/");
    loop {
        let sectors: u64 = fs::read_to_string(format!("/sys/block/{name}/size"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if sectors * 512 == bytes {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "{dev} is {} bytes, expected {bytes}",
                sectors * 512
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Finds the agent's virtio-serial port device.
fn agent_port(deadline: Instant) -> io::Result<File> {
    loop {
        if let Ok(entries) = fs::read_dir("/sys/class/virtio-ports") {
            for e in entries.flatten() {
                let name = fs::read_to_string(e.path().join("name")).unwrap_or_default();
                if name.trim() == mags_proto::AGENT_PORT_NAME {
                    let dev = format!("/dev/{}", e.file_name().to_string_lossy());
                    return OpenOptions::new().read(true).write(true).open(dev);
                }
            }
        }
        if Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no agent virtio-serial port",
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// First stage, right after the kernel hands over: the pseudo-filesystems,
/// the modules, and the agent port. Nothing here touches the disks, so a
/// template snapshot taken after it can be restored with any disk attached.
pub fn early() -> io::Result<File> {
    const NOSUID_NODEV_NOEXEC: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    for d in ["/dev", "/proc", "/sys", "/mnt/ro", "/mnt/rw", NEW_ROOT] {
        fs::create_dir_all(d)?;
    }
    mount("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID, "mode=0755")?;
    mount("proc", "/proc", "proc", NOSUID_NODEV_NOEXEC, "")?;
    mount("sysfs", "/sys", "sysfs", NOSUID_NODEV_NOEXEC, "")?;
    load_modules()?;
    // The read-only root is the same file for every sandbox of an image, so
    // it is mounted here, before a template snapshot: page cache warmed in
    // the template is then shared by every clone.
    let rootfs = block_device(
        mags_proto::ROOTFS_SERIAL,
        Instant::now() + Duration::from_secs(10),
    )?;
    mount(&rootfs, "/mnt/ro", "squashfs", libc::MS_RDONLY, "")?;
    // Every VM (templates too) has its writable disk attached from the start;
    // finding it now keeps the sysfs walk out of every clone's Setup.
    if let Ok(disk) = block_device(
        mags_proto::DISK_SERIAL,
        Instant::now() + Duration::from_secs(2),
    ) {
        let _ = DISK_DEV.set(disk);
    }
    agent_port(Instant::now() + Duration::from_secs(10))
}

/// The writable disk's device node, found at boot.
static DISK_DEV: std::sync::OnceLock<String> = std::sync::OnceLock::new();

static ROOT_MOUNTED: AtomicBool = AtomicBool::new(false);

/// The writable disk's root directory, opened before the chroot.
static WRITABLE: std::sync::OnceLock<File> = std::sync::OnceLock::new();
/// Bumped by every freeze and thaw, so a stale auto-thaw timer does nothing.
static FREEZE_EPOCH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The writable disk's device (`/dev/vdX`).
static WRITABLE_DEV: std::sync::OnceLock<String> = std::sync::OnceLock::new();

const FIFREEZE: libc::c_ulong = 0xC004_5877;
/// `_IOW('f', 16, __u64)`: grow a mounted ext4 to the given block count.
const EXT4_IOC_RESIZE_FS: libc::c_ulong = 0x4008_6610;

/// Waits (up to 5 s) until the writable disk's device is at least `bytes`
/// (the kernel learns of a host-side resize asynchronously), then grows
/// its filesystem like [`grow_writable`].
pub fn grow_writable_to(bytes: u64) -> io::Result<u64> {
    if let Some(dev) = WRITABLE_DEV.get() {
        let name = dev.trim_start_matches("/dev/");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let sectors: u64 = fs::read_to_string(format!("/sys/block/{name}/size"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            if sectors * 512 >= bytes || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    grow_writable()
}

/// Grows the writable disk's ext4 (online) to fill its device, if the
/// device is bigger; returns the filesystem size in bytes afterwards.
pub fn grow_writable() -> io::Result<u64> {
    let (Some(dir), Some(dev)) = (WRITABLE.get(), WRITABLE_DEV.get()) else {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the writable disk is not mounted",
        ));
    };
    let name = dev.trim_start_matches("/dev/");
    let sectors: u64 = fs::read_to_string(format!("/sys/block/{name}/size"))?
        .trim()
        .parse()
        .map_err(|_| io::Error::other("bad device size"))?;
    // SAFETY: statvfs fills the zeroed struct for an open fd.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: dir is open; st is a valid out-pointer.
    if unsafe { libc::fstatvfs(dir.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let bsize = st.f_frsize.max(1) as u64;
    let want = sectors * 512 / bsize;
    if want > st.f_blocks as u64 {
        let mut blocks: u64 = want;
        // SAFETY: EXT4_IOC_RESIZE_FS reads a u64 block count from a valid pointer.
        if unsafe { libc::ioctl(dir.as_raw_fd(), EXT4_IOC_RESIZE_FS, &mut blocks) } != 0 {
            return Err(io::Error::last_os_error());
        }
        return Ok(want * bsize);
    }
    Ok(st.f_blocks as u64 * bsize)
}

const FITHAW: libc::c_ulong = 0xC004_5878;

fn writable_ioctl(req: libc::c_ulong) -> io::Result<()> {
    let Some(dir) = WRITABLE.get() else {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the writable disk is not mounted",
        ));
    };
    let mut arg: libc::c_int = 0;
    // SAFETY: FIFREEZE/FITHAW on an open directory fd of the mounted fs;
    // the int argument is unused by the kernel but must be valid memory.
    if unsafe { libc::ioctl(dir.as_raw_fd(), req, &mut arg) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Flushes and freezes the writable disk's filesystem; thaws it by itself
/// after `timeout` unless [`thaw`] comes first. Freezing twice is fine.
pub fn freeze(timeout: Duration) -> io::Result<()> {
    let epoch = FREEZE_EPOCH.fetch_add(1, Ordering::SeqCst) + 1;
    match writable_ioctl(FIFREEZE) {
        Ok(()) => {}
        // Already frozen (a repeated request): keep it so, with a new timer.
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
        Err(e) => return Err(e),
    }
    std::thread::spawn(move || {
        std::thread::sleep(timeout);
        if FREEZE_EPOCH.load(Ordering::SeqCst) == epoch {
            let _ = writable_ioctl(FITHAW);
        }
    });
    Ok(())
}

/// Thaws the writable disk's filesystem; fine if it is not frozen.
pub fn thaw() -> io::Result<()> {
    FREEZE_EPOCH.fetch_add(1, Ordering::SeqCst);
    match writable_ioctl(FITHAW) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
        r => r,
    }
}

/// Second stage, on the host's `Setup`: mount the root (first time only;
/// afterwards grow the disk's filesystem if the disk grew) and take on the
/// identity the host gives.
pub fn setup(spec: &SetupSpec) -> io::Result<()> {
    if std::process::id() != 1 {
        return Ok(()); // --stdio: not our machine to change.
    }
    let t0 = Instant::now();
    if !ROOT_MOUNTED.load(Ordering::SeqCst) {
        mount_root(spec.disk_bytes)?;
        ROOT_MOUNTED.store(true, Ordering::SeqCst);
    } else if spec.disk_bytes > 0 {
        // A clone of a template that had its disk mounted: the host may
        // have given this clone a bigger one.
        grow_writable_to(spec.disk_bytes)?;
    }
    mark(t0, "root mounted");
    set_clock(spec.unix_time_ns)?;
    add_entropy(&spec.entropy)?;
    set_hostname(&spec.hostname)?;
    mark(t0, "identity set");
    if !spec.machine_id.is_empty() {
        fs::write("/etc/machine-id", format!("{}\n", spec.machine_id))?;
    }
    mark(t0, "machine-id written");
    if let Some(net) = &spec.network {
        crate::net::configure(net)?;
        mark(t0, "network configured");
    }
    let timeline = std::mem::take(&mut *TIMELINE.lock().unwrap_or_else(|p| p.into_inner()));
    let _ = fs::write("/run/mags-setup.log", timeline);
    Ok(())
}

/// Where the last `Setup`'s time went (`/run/mags-setup.log` in the guest).
static TIMELINE: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

fn mark(t0: Instant, what: &str) {
    use std::fmt::Write as _;
    let mut t = TIMELINE.lock().unwrap_or_else(|p| p.into_inner());
    let _ = writeln!(t, "{:>8} us  {what}", t0.elapsed().as_micros());
}

/// Mounts the read-only root and the writable disk as an overlay and
/// switches into it.
fn mount_root(disk_bytes: u64) -> io::Result<()> {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(10);
    let disk = match DISK_DEV.get() {
        Some(d) => d.clone(),
        None => block_device(mags_proto::DISK_SERIAL, deadline)?,
    };
    mark(t0, "disk found");
    if disk_bytes > 0 {
        wait_for_size(&disk, disk_bytes, deadline)?;
    }
    mark(t0, "disk size seen");
    // noinit_itable: the host made the filesystem with lazy inode tables;
    // zeroing them in the background would cost guest CPU and allocate
    // the sparse disk for nothing (uninitialised groups are flagged).
    mount(&disk, "/mnt/rw", "ext4", libc::MS_NOATIME, "noinit_itable")?;
    mark(t0, "ext4 mounted");
    // Kept for freezing and growing: /mnt/rw is out of reach once we chroot.
    let _ = WRITABLE.set(File::open("/mnt/rw")?);
    let _ = WRITABLE_DEV.set(disk.clone());
    // A workspace disk may have been made bigger since its filesystem was.
    if let Err(e) = grow_writable() {
        eprintln!("mags-agent: cannot grow the disk's filesystem: {e}");
    }
    fs::create_dir_all("/mnt/rw/upper")?;
    fs::create_dir_all("/mnt/rw/work")?;
    mount(
        "overlay",
        NEW_ROOT,
        "overlay",
        0,
        "lowerdir=/mnt/ro,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work",
    )?;
    mark(t0, "overlay mounted");

    // Switch root: the initramfs is rootfs and cannot be pivoted away from,
    // so move the new root over / and chroot into it (as switch_root does).
    for m in ["/dev", "/proc", "/sys"] {
        move_mount(m, &format!("{NEW_ROOT}{m}"))?;
    }
    std::env::set_current_dir(NEW_ROOT)?;
    mount(".", "/", "", libc::MS_MOVE, "")?;
    let dot = cstr(".")?;
    // SAFETY: dot is a valid C string; we are PID 1 with CAP_SYS_CHROOT.
    if unsafe { libc::chroot(dot.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    std::env::set_current_dir("/")?;
    mark(t0, "switched root");

    fs::create_dir_all("/dev/pts")?;
    mount(
        "devpts",
        "/dev/pts",
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        "gid=5,mode=620,ptmxmode=666",
    )?;
    fs::create_dir_all("/dev/shm")?;
    mount(
        "tmpfs",
        "/dev/shm",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        "mode=1777",
    )?;
    mount(
        "tmpfs",
        "/run",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        "mode=0755",
    )?;
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        let _ = std::os::unix::fs::symlink(target, link);
    }
    let _ = fs::remove_file("/dev/ptmx");
    let _ = std::os::unix::fs::symlink("pts/ptmx", "/dev/ptmx");
    fs::create_dir_all("/root")?;
    fs::create_dir_all("/tmp")?;
    loopback_up();
    Ok(())
}

fn set_clock(unix_time_ns: u64) -> io::Result<()> {
    if unix_time_ns == 0 {
        return Ok(());
    }
    let ts = libc::timespec {
        tv_sec: (unix_time_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (unix_time_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: ts is a valid timespec.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Mixes host entropy into the kernel pool, credits it, and forces the
/// CRNG to reseed so output diverges from every other clone at once.
fn add_entropy(bytes: &[u8]) -> io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut info: Vec<u8> = Vec::with_capacity(8 + bytes.len());
    info.extend_from_slice(&((bytes.len() * 8) as i32).to_ne_bytes());
    info.extend_from_slice(&(bytes.len() as i32).to_ne_bytes());
    info.extend_from_slice(bytes);
    let dev = OpenOptions::new().write(true).open("/dev/urandom")?;
    const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
    const RNDRESEEDCRNG: libc::c_ulong = 0x5207;
    // SAFETY: info is laid out as struct rand_pool_info with buf_size bytes.
    if unsafe { libc::ioctl(dev.as_raw_fd(), RNDADDENTROPY, info.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: argument-less ioctl on an open /dev/urandom.
    if unsafe { libc::ioctl(dev.as_raw_fd(), RNDRESEEDCRNG) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_hostname(name: &str) -> io::Result<()> {
    // SAFETY: name points to name.len() valid bytes.
    if unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Brings `lo` up so servers in the guest can talk to themselves.
fn loopback_up() {
    // SAFETY: socket/ioctl on a zeroed ifreq naming "lo"; the fd is closed.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return;
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr) == 0 {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr);
        }
        libc::close(fd);
    }
}
