//! One cgroup per QEMU process, with memory, pids and CPU limits (part of
//! the [jail](crate::jail)).
//!
//! Works on the unified hierarchy (cgroup v2: `<root>/mags/<server>/<id>` with
//! `memory.max`, `pids.max`, `cpu.max`) and on the legacy one (v1: a
//! `mags/<server>/<id>` group in each of the `memory`, `pids` and `cpu` controllers).
//! The QEMU child joins its groups itself, before it execs, so it never runs
//! unconfined. A group is removed when its sandbox ends; groups a crashed
//! server left behind are removed by [`Cgroups::sweep`] once empty, and
//! the empty parents of servers that are gone by the next server's
//! [`Cgroups::init`].

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The cgroup filesystem's usual mount point.
const CGROUP_FS: &str = "/sys/fs/cgroup";
/// CFS period for CPU quotas, microseconds.
const CPU_PERIOD_US: u64 = 100_000;

/// Limits of one sandbox's cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupLimits {
    /// Hard memory limit for QEMU and its helpers (guest RAM + overhead).
    pub memory_bytes: u64,
    /// Most processes and threads.
    pub pids: u64,
    /// CPU time per [`CPU_PERIOD_US`], in microseconds.
    pub cpu_quota_us: u64,
}

/// Which hierarchy this host has.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Layout {
    /// cgroup v2: our parent group.
    Unified(PathBuf),
    /// cgroup v1: our parent group in the memory, pids and cpu controllers.
    Legacy {
        memory: PathBuf,
        pids: PathBuf,
        cpu: PathBuf,
    },
}

/// The parent group(s) every sandbox's group is made in.
#[derive(Debug, Clone)]
pub struct Cgroups {
    layout: Layout,
    /// The cgroup filesystem and our parent's path in it, to make the
    /// parent again if another server removed it as stale (see
    /// [`Cgroups::init`]).
    fs: PathBuf,
    name: String,
}

impl Cgroups {
    /// Finds the hierarchy under `/sys/fs/cgroup` and makes the parent
    /// group `name` (a path like `mags/<server>`, each level made and given
    /// the controllers it needs); a reason if this host does not let us.
    ///
    /// Empty parents of other servers next to it (servers that are gone:
    /// every test run leaves one) are removed first. One of a live server
    /// with no sandbox may go too; that server makes it again on its next
    /// [`Cgroups::create`].
    pub fn init(name: &str) -> Result<Cgroups, String> {
        Self::init_at(Path::new(CGROUP_FS), name)
    }

    fn init_at(fs: &Path, name: &str) -> Result<Cgroups, String> {
        let cg = Cgroups {
            layout: make_parents(fs, name)?,
            fs: fs.to_path_buf(),
            name: name.to_string(),
        };
        cg.remove_empty_siblings();
        Ok(cg)
    }

    /// "cgroup v2" or "cgroup v1", for status reports.
    pub fn describe(&self) -> &'static str {
        match self.layout {
            Layout::Unified(_) => "cgroup v2",
            Layout::Legacy { .. } => "cgroup v1",
        }
    }

    fn parents(&self) -> Vec<&Path> {
        match &self.layout {
            Layout::Unified(p) => vec![p],
            Layout::Legacy { memory, pids, cpu } => vec![memory, pids, cpu],
        }
    }

    /// Makes sandbox `id`'s group with `limits` (replacing an empty
    /// leftover of the same name).
    pub fn create(&self, id: &str, limits: CgroupLimits) -> io::Result<Cgroup> {
        let cpu_max = format!("{} {CPU_PERIOD_US}", limits.cpu_quota_us);
        let group = Cgroup {
            dirs: self.parents().iter().map(|p| p.join(id)).collect(),
        };
        for d in &group.dirs {
            let _ = std::fs::remove_dir(d);
            match std::fs::create_dir(d) {
                // Our parent was removed as stale by another server.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    make_parents(&self.fs, &self.name).map_err(io::Error::other)?;
                    std::fs::create_dir(d)?;
                }
                r => r?,
            }
        }
        let set = |dir: &Path, file: &str, value: &str| write(&dir.join(file), value);
        match &self.layout {
            Layout::Unified(_) => {
                let d = &group.dirs[0];
                set(d, "memory.max", &limits.memory_bytes.to_string())?;
                // Absent without swap accounting; nothing to limit then.
                let _ = set(d, "memory.swap.max", "0");
                set(d, "pids.max", &limits.pids.to_string())?;
                set(d, "cpu.max", &cpu_max)?;
            }
            Layout::Legacy { .. } => {
                let [mem, pids, cpu] = [&group.dirs[0], &group.dirs[1], &group.dirs[2]];
                set(
                    mem,
                    "memory.limit_in_bytes",
                    &limits.memory_bytes.to_string(),
                )?;
                if mem.join("memory.memsw.limit_in_bytes").exists() {
                    set(
                        mem,
                        "memory.memsw.limit_in_bytes",
                        &limits.memory_bytes.to_string(),
                    )?;
                }
                set(pids, "pids.max", &limits.pids.to_string())?;
                set(cpu, "cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
                set(cpu, "cpu.cfs_quota_us", &limits.cpu_quota_us.to_string())?;
            }
        }
        Ok(group)
    }

    /// Removes the groups of sandboxes that are gone (empty ones; a group
    /// with a process left in it stays).
    pub fn sweep(&self) -> usize {
        self.parents()
            .into_iter()
            .map(|p| remove_empty_children(p, Duration::ZERO))
            .sum()
    }

    /// Removes the empty groups next to ours (in every hierarchy), after
    /// their sandbox groups that are empty and older than [`LEFTOVER_AGE`]
    /// (a server that exits leaves its warm pool's); a group with processes
    /// in it is not removable, so nothing live goes.
    fn remove_empty_siblings(&self) {
        for ours in self.parents() {
            let Some(Ok(entries)) = ours.parent().map(std::fs::read_dir) else {
                continue;
            };
            for e in entries.flatten() {
                let sibling = e.path();
                if sibling != ours && sibling.is_dir() {
                    remove_empty_children(&sibling, LEFTOVER_AGE);
                    let _ = std::fs::remove_dir(&sibling);
                }
            }
        }
    }
}

/// Makes the parent group `name` under `fs` (each level, with the
/// controllers it needs).
fn make_parents(fs: &Path, name: &str) -> Result<Layout, String> {
    let why = |what: &str, e: io::Error| format!("{what}: {e}");
    if fs.join("cgroup.controllers").is_file() {
        let available = std::fs::read_to_string(fs.join("cgroup.controllers"))
            .map_err(|e| why("cannot read cgroup.controllers", e))?;
        for c in ["memory", "pids", "cpu"] {
            if !available.split_whitespace().any(|a| a == c) {
                return Err(format!("the cgroup v2 root has no {c} controller"));
            }
        }
        // Our groups may hold no processes themselves; the root may.
        write(&fs.join("cgroup.subtree_control"), "+memory +pids +cpu")
            .map_err(|e| why("cannot enable controllers at the cgroup root", e))?;
        let mut parent = fs.to_path_buf();
        for level in Path::new(name).components() {
            parent.push(level);
            mkdir(&parent).map_err(|e| why(&format!("cannot create {}", parent.display()), e))?;
            write(&parent.join("cgroup.subtree_control"), "+memory +pids +cpu")
                .map_err(|e| why("cannot enable controllers for sandboxes", e))?;
            let _ = write(
                &parent.join("cpu.weight"),
                &(100 * parent_weight()).to_string(),
            );
        }
        return Ok(Layout::Unified(parent));
    }
    let mut dirs = Vec::new();
    for c in ["memory", "pids", "cpu"] {
        let ctl = fs.join(c);
        if !ctl.join("cgroup.procs").is_file() {
            return Err(format!(
                "no cgroup v2 and no cgroup v1 {c} controller under {}",
                fs.display()
            ));
        }
        let mut parent = ctl.clone();
        for level in Path::new(name).components() {
            parent.push(level);
            mkdir(&parent).map_err(|e| why(&format!("cannot create {}", parent.display()), e))?;
            if c == "cpu" {
                let _ = write(
                    &parent.join("cpu.shares"),
                    &(1024 * parent_weight()).to_string(),
                );
            }
        }
        dirs.push(parent);
    }
    let [memory, pids, cpu] = <[PathBuf; 3]>::try_from(dirs).map_err(|_| "unreachable")?;
    Ok(Layout::Legacy { memory, pids, cpu })
}

/// A sandbox's group with no process in it for this long is a leftover
/// (a live one has its QEMU in it within milliseconds of being made).
const LEFTOVER_AGE: Duration = Duration::from_secs(60);

/// Removes the empty groups in `parent` made at least `older_than` ago;
/// how many went.
fn remove_empty_children(parent: &Path, older_than: Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return 0;
    };
    let old_enough = |e: &std::fs::DirEntry| {
        older_than.is_zero()
            || e.metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= older_than)
    };
    entries
        .flatten()
        .filter(|e| e.path().is_dir() && old_enough(e) && std::fs::remove_dir(e.path()).is_ok())
        .count()
}

/// One sandbox's group; removed on drop if empty by then.
#[derive(Debug)]
pub struct Cgroup {
    dirs: Vec<PathBuf>,
}

impl Cgroup {
    /// The `cgroup.procs` files a process writes itself into.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// A value from the group (e.g. `pids.max`, `memory.max`), trimmed.
    pub fn read(&self, file: &str) -> Option<String> {
        self.dirs
            .iter()
            .find_map(|d| std::fs::read_to_string(d.join(file)).ok())
            .map(|s| s.trim().to_string())
    }

    /// Where the group lives (its first directory).
    pub fn path(&self) -> &Path {
        &self.dirs[0]
    }
}

impl Drop for Cgroup {
    /// Removes the group; if processes are left in it (QEMU still dying,
    /// helpers it started), kills them first, off the caller's thread.
    fn drop(&mut self) {
        let dirs = std::mem::take(&mut self.dirs);
        if dirs
            .iter()
            .all(|d| std::fs::remove_dir(d).is_ok() || !d.exists())
        {
            return;
        }
        std::thread::spawn(move || {
            for _ in 0..100 {
                for d in &dirs {
                    for pid in std::fs::read_to_string(d.join("cgroup.procs"))
                        .unwrap_or_default()
                        .lines()
                        .filter_map(|l| l.trim().parse::<i32>().ok())
                    {
                        // SAFETY: a plain syscall; the pid is in this
                        // sandbox's own group.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
                if dirs
                    .iter()
                    .all(|d| std::fs::remove_dir(d).is_ok() || !d.exists())
                {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
    }
}

/// The weight of the sandboxes' parent group, in units of one ordinary
/// process. Grouped, all sandboxes would otherwise compete for CPU as a
/// single process against every process outside the group; this gives
/// them the standing of a few busy processes per core.
fn parent_weight() -> u64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    (cores * 4).min(100)
}

fn mkdir(p: &Path) -> io::Result<()> {
    match std::fs::create_dir(p) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        r => r,
    }
}

fn write(p: &Path, value: &str) -> io::Result<()> {
    std::fs::write(p, value).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A fake cgroup v1 tree: plain directories stand in for the controllers.
    fn fake_v1() -> tempfile::TempDir {
        let fs = tempfile::tempdir().unwrap();
        for c in ["memory", "pids", "cpu"] {
            std::fs::create_dir(fs.path().join(c)).unwrap();
            std::fs::write(fs.path().join(c).join("cgroup.procs"), "").unwrap();
        }
        fs
    }

    #[test]
    fn legacy_groups_get_their_limits_and_are_swept() {
        let fs = fake_v1();
        let cg = Cgroups::init_at(fs.path(), "mags/server-a").unwrap();
        assert_eq!(cg.describe(), "cgroup v1");
        let limits = CgroupLimits {
            memory_bytes: 640 << 20,
            pids: 512,
            cpu_quota_us: 125_000,
        };
        let g = cg.create("sb-1", limits).unwrap();
        let read = |c: &str, f: &str| {
            std::fs::read_to_string(fs.path().join(c).join("mags/server-a/sb-1").join(f)).unwrap()
        };
        assert_eq!(
            read("memory", "memory.limit_in_bytes"),
            (640u64 << 20).to_string()
        );
        assert_eq!(read("pids", "pids.max"), "512");
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "125000");
        assert_eq!(g.procs_files().len(), 3);
        // Plain directories with files are not removable: like a busy group.
        std::mem::forget(g);
        assert_eq!(cg.sweep(), 0);
        for c in ["memory", "pids", "cpu"] {
            let d = fs.path().join(c).join("mags/server-a/sb-1");
            for f in std::fs::read_dir(&d).unwrap() {
                std::fs::remove_file(f.unwrap().path()).unwrap();
            }
        }
        assert_eq!(cg.sweep(), 3);
    }

    /// Servers that are gone leave empty parents; the next server removes
    /// them, and a live server whose empty parent went makes it again.
    #[test]
    fn empty_parents_of_other_servers_are_removed_and_made_again() {
        let fs = fake_v1();
        let parent = |c: &str, server: &str| fs.path().join(c).join("mags").join(server);
        let a = Cgroups::init_at(fs.path(), "mags/server-a").unwrap();
        let _gone = Cgroups::init_at(fs.path(), "mags/server-gone").unwrap();
        assert!(parent("memory", "server-gone").is_dir());
        // Control files are virtual in a real cgroup: they never keep a
        // group from being removed. Here they are files.
        for server in ["server-a", "server-gone"] {
            let _ = std::fs::remove_file(parent("cpu", server).join("cpu.shares"));
        }
        let _b = Cgroups::init_at(fs.path(), "mags/server-b").unwrap();
        for c in ["memory", "pids", "cpu"] {
            assert!(!parent(c, "server-gone").exists(), "{c}");
            assert!(!parent(c, "server-a").exists(), "{c}");
            assert!(parent(c, "server-b").is_dir(), "{c}");
        }
        let limits = CgroupLimits {
            memory_bytes: 1 << 30,
            pids: 64,
            cpu_quota_us: 100_000,
        };
        let g = a.create("sb-1", limits).unwrap();
        assert_eq!(g.procs_files().len(), 3);
        assert!(parent("pids", "server-a").join("sb-1/pids.max").is_file());
        // A parent with a sandbox's group in it stays, and so does a young
        // empty group (its QEMU may be about to join it).
        let young = parent("memory", "server-a").join("sb-2");
        std::fs::create_dir(&young).unwrap();
        let _c = Cgroups::init_at(fs.path(), "mags/server-c").unwrap();
        assert!(parent("memory", "server-a").join("sb-1").is_dir());
        assert!(young.is_dir());
        // An empty one older than a minute is a leftover of a server that
        // is gone: it goes, and then its parent.
        let when = std::time::SystemTime::now() - LEFTOVER_AGE * 2;
        std::fs::File::open(&young)
            .unwrap()
            .set_modified(when)
            .unwrap();
        let gone = parent("pids", "server-d");
        std::fs::create_dir_all(gone.join("pool-1")).unwrap();
        std::fs::File::open(gone.join("pool-1"))
            .unwrap()
            .set_modified(when)
            .unwrap();
        let _e = Cgroups::init_at(fs.path(), "mags/server-e").unwrap();
        assert!(!young.exists());
        assert!(!gone.exists(), "the parent of an old leftover goes too");
    }

    #[test]
    fn no_controllers_is_a_reason_not_a_panic() {
        let fs = tempfile::tempdir().unwrap();
        let err = Cgroups::init_at(fs.path(), "mags").unwrap_err();
        assert!(err.contains("memory controller"), "{err}");
    }
}
