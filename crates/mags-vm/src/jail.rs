//! Confinement of every QEMU process, in the manner of Firecracker's
//! jailer; SECURITY.md says what each layer stops.
//!
//! Between `fork` and `exec` the QEMU child, still root:
//! 1. joins its own [cgroup](crate::cgroup) (memory, pids, CPU limits
//!    derived from the VM's size);
//! 2. unshares its mount, IPC, UTS and network namespaces: it has no
//!    network but its own loopback (the guest's only way out is the egress
//!    pipe, a unix socket), and its filesystem is a fresh read-only tmpfs holding only
//!    `/usr` (and the `/lib`-style links), the loader cache, a few device
//!    nodes, the image files, its template, its own sandbox dir and disk,
//!    the egress socket and the agent binary, each bind-mounted
//!    read-only except the sandbox's own files; then `pivot_root`s into it;
//! 3. sets resource limits (no core dumps, bounded files and processes);
//! 4. drops to a uid/gid of its own (one per live sandbox, from a range
//!    no account uses), with no supplementary groups (`kvm` under KVM),
//!    and `no_new_privs`;
//! 5. marks every inherited descriptor above stderr close-on-exec.
//!
//! QEMU then enables its own seccomp filter (`-sandbox on`, see
//! [`crate::qemu`]). Spawning stays allowed: the guest's egress
//! connections and snapshots run helpers (`mags-agent --egress-pipe`,
//! `cat`), which inherit all of the above.
//!
//! All of it needs root. [`JailMode::Auto`] (the default) confines fully
//! as root and otherwise runs QEMU as the server's user with only QEMU's
//! seccomp filter and the resource limits, and says so in
//! [`JailStatus::note`]; [`JailMode::Require`] refuses to start instead.

use crate::cgroup::{Cgroup, CgroupLimits, Cgroups};
use crate::VmError;
use std::collections::BTreeSet;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// How much confinement a runtime insists on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum JailMode {
    /// Only QEMU's seccomp filter and resource limits.
    Off,
    /// Everything this host allows (all of it as root).
    #[default]
    Auto,
    /// Everything, or the runtime does not start.
    Require,
}

/// Jail settings.
#[derive(Debug, Clone)]
pub struct JailConfig {
    pub mode: JailMode,
    /// First uid (and gid) given to a QEMU process.
    pub uid_base: u32,
    /// How many uids the range holds (at most this many live sandboxes).
    pub uid_count: u32,
}

impl Default for JailConfig {
    fn default() -> Self {
        Self {
            mode: JailMode::Auto,
            // Far above account and subordinate-id ranges, below 2^31.
            uid_base: 1_600_000_000,
            uid_count: 65_536,
        }
    }
}

/// What confines each QEMU on this host (for `doctor` and `/pool-status`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JailStatus {
    /// Own mount, network, IPC and UTS namespaces, pivoted into a minimal root.
    pub namespaces: bool,
    /// A uid/gid of its own, not the server's.
    pub own_uid: bool,
    /// "cgroup v1" or "cgroup v2" when memory/pids/CPU limits apply.
    pub cgroups: Option<String>,
    /// QEMU's seccomp filter (`-sandbox on`).
    pub seccomp: bool,
    /// What is missing, and why.
    pub note: Option<String>,
}

/// Memory a QEMU may use beyond its guest's RAM (TCG translation cache,
/// device emulation, user-mode network, the page cache of its disk writes).
const OVERHEAD_MB: u64 = 384;
/// Processes and threads per sandbox: QEMU's own threads plus one helper
/// per open egress connection.
const PIDS_MAX: u64 = 512;
/// Open files per QEMU process.
const NOFILE_MAX: u64 = 4096;

/// The jail of one runtime; see the module docs.
pub struct Jail {
    cfg: JailConfig,
    /// An empty directory each child mounts its own root on (in its own
    /// mount namespace, so it stays empty here).
    root: PathBuf,
    privileged: bool,
    cgroups: Option<Cgroups>,
    used: Arc<Mutex<BTreeSet<u32>>>,
    note: Option<String>,
    /// What every QEMU gets from the host, found once: `/usr`, the loader
    /// cache, device nodes (not `/dev/kvm`), and the `/lib`-style
    /// directories (bound) or links (as `(target, name)`).
    host: HostFiles,
}

/// The host's part of every jail's root; see [`HostFiles::find`].
#[derive(Debug, Default)]
struct HostFiles {
    binds: Vec<(PathBuf, BindKind)>,
    links: Vec<(PathBuf, PathBuf)>,
}

impl HostFiles {
    fn find() -> HostFiles {
        let mut h = HostFiles {
            binds: vec![(PathBuf::from("/usr"), BindKind::ReadOnly)],
            links: Vec::new(),
        };
        for top in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
            let host = Path::new("/").join(top);
            match std::fs::read_link(&host) {
                Ok(target) => h.links.push((target, PathBuf::from(top))),
                Err(_) if host.is_dir() => h.binds.push((host, BindKind::ReadOnly)),
                Err(_) => {}
            }
        }
        if Path::new("/etc/ld.so.cache").is_file() {
            h.binds
                .push(("/etc/ld.so.cache".into(), BindKind::ReadOnly));
        }
        for d in ["null", "zero", "full", "random", "urandom"] {
            let p = Path::new("/dev").join(d);
            if p.exists() {
                h.binds.push((p, BindKind::Device));
            }
        }
        h
    }
}

/// What a sandbox's QEMU may touch and how big it is.
#[derive(Debug, Clone, Default)]
pub struct Confine {
    pub id: String,
    /// Its own files and dirs: bind-mounted writable and given its uid.
    pub writable: Vec<PathBuf>,
    /// Shared inputs (image, template, backing files, the agent binary):
    /// bind-mounted read-only.
    pub readable: Vec<PathBuf>,
    /// Unix sockets it connects to (the egress proxy).
    pub sockets: Vec<PathBuf>,
    pub memory_mb: u32,
    pub vcpus: u32,
    /// `/dev/kvm` is needed (and its group).
    pub kvm: bool,
    /// A descriptor QEMU inherits (the template's sealed RAM).
    pub inherit: Option<std::os::fd::RawFd>,
}

/// A sandbox's confinement, held as long as its QEMU runs.
pub struct Confinement {
    uid: Option<UidLease>,
    cgroup: Option<Cgroup>,
    plan: Arc<Plan>,
}

impl Jail {
    /// Sets up the jail for a runtime whose data lives in `data_dir`.
    pub fn new(cfg: JailConfig, data_dir: &Path) -> Result<Jail, VmError> {
        // SAFETY: geteuid has no preconditions.
        let root_user = unsafe { libc::geteuid() } == 0;
        let mut jail = Jail {
            root: std::path::absolute(crate::Layout::new(data_dir).jail_root())
                .map_err(|e| VmError::io(data_dir, e))?,
            privileged: false,
            cgroups: None,
            used: Default::default(),
            note: None,
            host: HostFiles::default(),
            cfg,
        };
        let refuse = |why: String| {
            Err(VmError::Other(format!(
                "confinement required (--jail require) but {why}"
            )))
        };
        match jail.cfg.mode {
            JailMode::Off => {
                jail.note = Some("confinement is off (--jail off)".into());
                return Ok(jail);
            }
            _ if !root_user => {
                let why = "the server does not run as root, so QEMU runs as the server's user, \
                           without namespaces or cgroups (see SECURITY.md)";
                if jail.cfg.mode == JailMode::Require {
                    return refuse(why.into());
                }
                jail.note = Some(why.into());
                return Ok(jail);
            }
            _ => {}
        }
        std::fs::create_dir_all(&jail.root).map_err(|e| VmError::io(&jail.root, e))?;
        jail.privileged = true;
        jail.host = HostFiles::find();
        // One parent per server (by data dir): several servers on a host
        // (or test runs) must never sweep each other's groups.
        let server = {
            use sha2::Digest as _;
            let dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
            hex::encode(&sha2::Sha256::digest(dir.as_os_str().as_bytes())[..6])
        };
        match Cgroups::init(&format!("mags/{server}")) {
            Ok(cg) => {
                cg.sweep();
                jail.cgroups = Some(cg);
            }
            Err(why) if jail.cfg.mode == JailMode::Require => return refuse(why),
            Err(why) => jail.note = Some(format!("no cgroup limits: {why}")),
        }
        Ok(jail)
    }

    /// What is in force.
    pub fn status(&self) -> JailStatus {
        JailStatus {
            namespaces: self.privileged,
            own_uid: self.privileged,
            cgroups: self.cgroups.as_ref().map(|c| c.describe().to_string()),
            seccomp: self.seccomp(),
            note: self.note.clone(),
        }
    }

    /// Whether QEMU's seccomp filter is to be enabled.
    pub fn seccomp(&self) -> bool {
        self.cfg.mode != JailMode::Off
    }

    /// Prepares the confinement of one QEMU: a uid, its cgroup, ownership
    /// of its files, and the plan its child runs before `exec`.
    pub fn confine(&self, req: &Confine) -> Result<Confinement, VmError> {
        let mut plan = Plan {
            rlimits: vec![(libc::RLIMIT_CORE, 0), (libc::RLIMIT_NOFILE, NOFILE_MAX)],
            inherit: req.inherit,
            server: std::process::id() as libc::pid_t,
            ..Plan::default()
        };
        if !self.privileged {
            return Ok(Confinement {
                uid: None,
                cgroup: None,
                plan: Arc::new(plan),
            });
        }
        let lease = self.lease_uid()?;
        let uid = lease.uid;
        for p in &req.writable {
            chown_tree(p, uid).map_err(|e| VmError::io(p, e))?;
            if p.is_dir() {
                set_mode(p, 0o700).map_err(|e| VmError::io(p, e))?;
            }
        }
        for p in &req.readable {
            ensure_world_readable(p).map_err(|e| VmError::io(p, e))?;
        }
        for s in &req.sockets {
            // The proxy checks who connects (the peer's uid), not the mode.
            set_mode(s, 0o666).map_err(|e| VmError::io(s, e))?;
        }
        let cgroup = match &self.cgroups {
            Some(cg) => {
                let limits = CgroupLimits {
                    memory_bytes: (u64::from(req.memory_mb) + OVERHEAD_MB) << 20,
                    pids: PIDS_MAX,
                    // Its vCPUs, plus a quarter core for device emulation.
                    cpu_quota_us: u64::from(req.vcpus.max(1)) * 100_000 + 25_000,
                };
                // A name of its own per QEMU: the group of the sandbox's
                // previous QEMU (before a sleep) may still be emptying when
                // it wakes.
                let name = format!("{}.{}", req.id, incarnation());
                let group = cg.create(&name, limits).map_err(|e| {
                    VmError::Other(format!("cannot create the sandbox's cgroup: {e}"))
                })?;
                plan.cgroup_procs = group
                    .procs_files()
                    .iter()
                    .map(|p| cstring(p))
                    .collect::<Result<_, _>>()?;
                Some(group)
            }
            None => None,
        };
        plan.uid = Some(uid);
        if req.kvm {
            if let Ok(meta) = std::fs::metadata("/dev/kvm") {
                plan.groups.push(std::os::unix::fs::MetadataExt::gid(&meta));
            }
        }
        plan.rlimits.push((libc::RLIMIT_NPROC, PIDS_MAX));
        plan.fs = Some(self.filesystem(req)?);
        Ok(Confinement {
            uid: Some(lease),
            cgroup,
            plan: Arc::new(plan),
        })
    }

    /// The root a confined QEMU sees.
    fn filesystem(&self, req: &Confine) -> Result<FsPlan, VmError> {
        let mut binds = self.host.binds.clone();
        if req.kvm && Path::new("/dev/kvm").exists() {
            binds.push(("/dev/kvm".into(), BindKind::Device));
        }
        for p in &req.readable {
            binds.push((absolute(p)?, BindKind::ReadOnly));
        }
        for p in req.writable.iter().chain(&req.sockets) {
            binds.push((absolute(p)?, BindKind::Writable));
        }
        let mut seen = BTreeSet::new();
        binds.retain(|(p, _)| seen.insert(p.clone()));
        binds.sort_by_key(|(p, _)| p.components().count());

        let inside = |p: &Path| self.root.join(p.strip_prefix("/").unwrap_or(p));
        let mut dirs: Vec<PathBuf> = Vec::new();
        let mut files = Vec::new();
        for (p, _) in &binds {
            for a in p.ancestors().collect::<Vec<_>>().into_iter().rev().skip(1) {
                if a != p && !dirs.iter().any(|d| d == &inside(a)) {
                    dirs.push(inside(a));
                }
            }
            if p.is_dir() {
                if !dirs.iter().any(|d| d == &inside(p)) {
                    dirs.push(inside(p));
                }
            } else {
                files.push(inside(p));
            }
        }
        Ok(FsPlan {
            root: cstring(&self.root)?,
            proc: cstring(&self.root.join("proc"))?,
            dirs: dirs.iter().map(|d| cstring(d)).collect::<Result<_, _>>()?,
            files: files.iter().map(|f| cstring(f)).collect::<Result<_, _>>()?,
            links: self
                .host
                .links
                .iter()
                .map(|(t, l)| Ok((cstring(t)?, cstring(&self.root.join(l))?)))
                .collect::<Result<_, VmError>>()?,
            binds: binds
                .iter()
                .map(|(p, k)| Ok((cstring(p)?, cstring(&inside(p))?, *k)))
                .collect::<Result<_, VmError>>()?,
        })
    }

    fn lease_uid(&self) -> Result<UidLease, VmError> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let start = (uuid::Uuid::new_v4().as_u128() as u32) % self.cfg.uid_count.max(1);
        let free = (0..self.cfg.uid_count)
            .map(|i| self.cfg.uid_base + (start + i) % self.cfg.uid_count)
            .find(|u| !used.contains(u))
            .ok_or_else(|| VmError::Other("no free uid left in the jail's range".into()))?;
        used.insert(free);
        Ok(UidLease {
            uid: free,
            used: self.used.clone(),
        })
    }
}

impl Confinement {
    /// Installs the plan in QEMU's command (run in the child before exec).
    pub fn apply(&self, cmd: &mut tokio::process::Command) {
        let plan = self.plan.clone();
        // SAFETY: `Plan::enter` makes only async-signal-safe system calls on
        // data prepared before the fork (no allocation, no locks).
        unsafe {
            cmd.pre_exec(move || plan.enter());
        }
    }

    /// The uid QEMU runs as, when it has its own.
    pub fn uid(&self) -> Option<u32> {
        self.uid.as_ref().map(|l| l.uid)
    }

    /// Its cgroup, when limits apply.
    pub fn cgroup(&self) -> Option<&Cgroup> {
        self.cgroup.as_ref()
    }
}

/// A suffix no other QEMU of this host's servers has had: this server's
/// pid and a counter.
fn incarnation() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{:x}-{n:x}", std::process::id())
}

/// A uid in use by one live sandbox; free again on drop.
struct UidLease {
    uid: u32,
    used: Arc<Mutex<BTreeSet<u32>>>,
}

impl Drop for UidLease {
    fn drop(&mut self) {
        self.used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.uid);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BindKind {
    ReadOnly,
    Writable,
    /// A device node: read-write, devices allowed.
    Device,
}

/// The child's filesystem: everything as C strings, made before the fork.
#[derive(Debug, Default)]
struct FsPlan {
    root: CString,
    /// `<root>/proc`.
    proc: CString,
    dirs: Vec<CString>,
    files: Vec<CString>,
    /// (target, link path)
    links: Vec<(CString, CString)>,
    /// (source, target, kind)
    binds: Vec<(CString, CString, BindKind)>,
}

/// What the child does before `exec`; see the module docs for the order.
#[derive(Debug, Default)]
struct Plan {
    cgroup_procs: Vec<CString>,
    fs: Option<FsPlan>,
    rlimits: Vec<(libc::__rlimit_resource_t, u64)>,
    uid: Option<u32>,
    groups: Vec<libc::gid_t>,
    /// A descriptor of the server's that QEMU keeps (the template's RAM).
    inherit: Option<std::os::fd::RawFd>,
    /// The server's pid: the child dies with it, and gives up at once if
    /// the server died before the child could ask to (0: no check).
    server: libc::pid_t,
}

/// The errno of the last failed call, tagged with what was attempted (a
/// static string: no allocation in the child).
fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Plan {
    /// Asks for SIGKILL when the server dies; if it already has (between
    /// the fork and now, so no signal will come), fails: no QEMU outlives
    /// its server.
    fn die_with_server(&self) -> io::Result<()> {
        // SAFETY: plain system calls on this process.
        unsafe {
            check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL))?;
            if self.server != 0 && libc::getppid() != self.server {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
        }
        Ok(())
    }

    /// Runs in the forked child: only system calls, no allocation.
    fn enter(&self) -> io::Result<()> {
        // SAFETY: every call below is a plain system call on C strings that
        // live in `self`, in a single-threaded child between fork and exec.
        unsafe {
            self.die_with_server()?;
            for procs in &self.cgroup_procs {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                check(fd)?;
                let w = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if w != 1 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(fs) = &self.fs {
                fs.enter()?;
            }
            for (res, value) in &self.rlimits {
                let lim = libc::rlimit {
                    rlim_cur: *value,
                    rlim_max: *value,
                };
                check(libc::setrlimit(*res, &lim))?;
            }
            if let Some(uid) = self.uid {
                check(libc::setgroups(self.groups.len(), self.groups.as_ptr()))?;
                check(libc::setresgid(uid, uid, uid))?;
                check(libc::setresuid(uid, uid, uid))?;
            }
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
            // Cleared by the uid change above, so set again after it.
            self.die_with_server()?;
            // Close-on-exec for everything above stderr (std's own error
            // pipe already is); ENOSYS on old kernels is fine.
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            if let Some(fd) = self.inherit {
                check(libc::fcntl(fd, libc::F_SETFD, 0))?;
            }
        }
        Ok(())
    }
}

impl FsPlan {
    /// New namespaces, a tmpfs root with the planned binds, pivot into it.
    /// Only ever called from [`Plan::enter`], in the forked child.
    fn enter(&self) -> io::Result<()> {
        let null = std::ptr::null::<libc::c_char>();
        // SAFETY: plain system calls on C strings owned by `self`, in the
        // single-threaded child between fork and exec.
        unsafe {
            check(libc::unshare(
                libc::CLONE_NEWNS | libc::CLONE_NEWNET | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS,
            ))?;
            check(libc::mount(
                null,
                c"/".as_ptr(),
                null,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            // The new network namespace has only `lo`, and it is down.
            // libslirp joins QEMU to each egress helper over a loopback TCP
            // pair, so bring it up; it reaches nothing but itself.
            let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
            check(sock)?;
            let mut ifr: libc::ifreq = std::mem::zeroed();
            for (i, b) in b"lo\0".iter().enumerate() {
                ifr.ifr_name[i] = *b as libc::c_char;
            }
            ifr.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            let up = libc::ioctl(sock, libc::SIOCSIFFLAGS, &ifr);
            libc::close(sock);
            check(up)?;
            check(libc::mount(
                c"tmpfs".as_ptr(),
                self.root.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                c"mode=0755,size=1m".as_ptr().cast(),
            ))?;
            for d in &self.dirs {
                if libc::mkdir(d.as_ptr(), 0o755) < 0 {
                    let e = io::Error::last_os_error();
                    if e.raw_os_error() != Some(libc::EEXIST) {
                        return Err(e);
                    }
                }
            }
            for f in &self.files {
                let fd = libc::open(
                    f.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                    0o644,
                );
                if fd >= 0 {
                    libc::close(fd);
                }
            }
            for (target, link) in &self.links {
                check(libc::symlink(target.as_ptr(), link.as_ptr()))?;
            }
            // Only for /proc/self/fd (the template's RAM): other users'
            // processes are invisible (hidepid), and with `subset=pid` so
            // is everything that is not a process.
            check(libc::mkdir(self.proc.as_ptr(), 0o555))?;
            let proc_flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
            let subset = libc::mount(
                c"proc".as_ptr(),
                self.proc.as_ptr(),
                c"proc".as_ptr(),
                proc_flags,
                c"hidepid=invisible,subset=pid".as_ptr().cast(),
            );
            if subset < 0 {
                check(libc::mount(
                    c"proc".as_ptr(),
                    self.proc.as_ptr(),
                    c"proc".as_ptr(),
                    proc_flags,
                    c"hidepid=2".as_ptr().cast(),
                ))?;
            }
            for (src, dst, kind) in &self.binds {
                check(libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    null,
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ))?;
                let flags = match kind {
                    BindKind::ReadOnly => libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
                    BindKind::Writable => libc::MS_NOSUID | libc::MS_NODEV,
                    BindKind::Device => libc::MS_NOSUID,
                };
                check(libc::mount(
                    null,
                    dst.as_ptr(),
                    null,
                    libc::MS_BIND | libc::MS_REMOUNT | flags,
                    std::ptr::null(),
                ))?;
            }
            check(libc::chdir(self.root.as_ptr()))?;
            check(
                libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as libc::c_int,
            )?;
            check(libc::umount2(c".".as_ptr(), libc::MNT_DETACH))?;
            check(libc::chdir(c"/".as_ptr()))?;
            // The tmpfs itself (its dirs and mount points) becomes read-only.
            check(libc::mount(
                null,
                c"/".as_ptr(),
                null,
                libc::MS_BIND
                    | libc::MS_REMOUNT
                    | libc::MS_RDONLY
                    | libc::MS_NOSUID
                    | libc::MS_NODEV,
                std::ptr::null(),
            ))?;
        }
        Ok(())
    }
}

fn cstring(p: &Path) -> Result<CString, VmError> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| VmError::Other(format!("path {} contains a NUL byte", p.display())))
}

fn absolute(p: &Path) -> Result<PathBuf, VmError> {
    std::path::absolute(p).map_err(|e| VmError::io(p, e))
}

/// An immutable in-memory copy of `file`: a memfd sealed against writes,
/// resizing and further sealing. QEMU reaches it as `/proc/self/fd/<fd>`.
pub fn sealed_copy(file: &Path) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    // SAFETY: memfd_create returns a new descriptor we own, or -1.
    let fd = unsafe {
        libc::memfd_create(
            c"mags-template-ram".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    check(fd)?;
    // SAFETY: `fd` is a fresh descriptor owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut dst = std::fs::File::from(fd.try_clone()?);
    let mut src = std::fs::File::open(file)?;
    std::io::copy(&mut src, &mut dst)?;
    let seals = libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: fcntl on a descriptor we own.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) })?;
    Ok(fd)
}

/// Gives `path` (and everything under it) back to the server's user, once
/// a jailed QEMU is done with it (a template it made).
pub fn give_back(path: &Path) -> io::Result<()> {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if me == 0 {
        chown_tree(path, 0)?;
    }
    Ok(())
}

/// Gives `path` (and everything under it) to `uid` (as its group too).
fn chown_tree(path: &Path, uid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid))?;
    if path.is_dir() && !path.is_symlink() {
        for e in std::fs::read_dir(path)? {
            chown_tree(&e?.path(), uid)?;
        }
    }
    Ok(())
}

/// Adds read (and, for dirs and executables, search/execute) permission
/// for others, so a jailed QEMU of any uid can open a shared input.
fn ensure_world_readable(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path)?;
    let executable = meta.permissions().mode() & 0o100 != 0;
    let want = if meta.is_dir() || executable {
        0o005
    } else {
        0o004
    };
    let mode = meta.permissions().mode();
    if mode & want != want {
        set_mode(path, (mode | want) & 0o7777)?;
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
