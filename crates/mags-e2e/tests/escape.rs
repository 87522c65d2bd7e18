//! The escape suite (SECURITY.md): what a malicious guest, or a guest that
//! took over its QEMU, could try, run against real VMs.
//!
//! - Every QEMU is jailed: its own uid, mount/net/IPC/UTS namespaces, a
//!   root holding only `/usr`, device nodes and its own files (no `/etc`,
//!   no `/root`, not the server's data), its own cgroup, seccomp on,
//!   `no_new_privs`.
//! - From inside a guest: a flood of connections to the egress address
//!   (each one a helper process on the host) hits the sandbox's process
//!   limit and goes no further; a fork bomb and a memory hog stay inside
//!   the sandbox; the server and another sandbox keep answering; stopping
//!   the sandbox removes every process it had on the host.
//!
//! These need the server to run as root (the jail needs it); the test
//! says so rather than passing without it.

use mags_e2e::{http_get, stderr, stdout, Server};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn status(server: &Server, name: &str) -> serde_json::Value {
    let o = server.mags_output(&["status", name, "--json"]);
    assert!(o.status.success(), "status: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).expect("status --json is JSON")
}

/// The sandbox dir and QEMU pid of the live sandbox `name`.
fn qemu_of(server: &Server, name: &str) -> (mags_vm::SandboxDir, u32) {
    let vm = status(server, name)["vm_id"]
        .as_str()
        .expect("a live sandbox has a vm_id")
        .to_string();
    let dir = mags_vm::Layout::new(server.data_dir()).sandbox(&vm);
    let pid = std::fs::read_to_string(dir.pid_file())
        .expect("qemu.pid")
        .trim()
        .parse()
        .expect("a pid");
    (dir, pid)
}

fn proc_status(pid: u32, field: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The v1 or v2 cgroup directory of `pid` for `controller`.
fn cgroup_dir(pid: u32, controller: &str) -> PathBuf {
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("/proc cgroup");
    for line in cg.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (parts.next(), parts.next(), parts.next());
        let (Some(ctrls), Some(path)) = (ctrls, path) else {
            continue;
        };
        if ctrls.split(',').any(|c| c == controller) {
            return Path::new("/sys/fs/cgroup")
                .join(controller)
                .join(path.trim_start_matches('/'));
        }
        if ctrls.is_empty() && Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            return Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
        }
    }
    panic!("pid {pid} has no {controller} cgroup: {cg}");
}

fn read_num(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap_or(u64::MAX)
}

/// The first of `files` that exists in cgroup dir `dir`, read as a number
/// (v2 and v1 name the same value differently).
fn first_num(dir: &Path, files: &[&str]) -> Option<u64> {
    files
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.exists())
        .map(|p| read_num(&p))
}

const MEMORY_LIMIT: &[&str] = &["memory.max", "memory.limit_in_bytes"];

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "the escape suite checks the QEMU jail, which needs magsd to run as root; run the tests as root"
    );
}

#[test]
fn every_qemu_runs_jailed() {
    require_root();
    let server = Server::start(&["--jail", "require"]);
    let o = server.mags_output(&["new", "jailed"]);
    assert!(o.status.success(), "{}\n{}", stderr(&o), server.log());
    let (dir, pid) = qemu_of(&server, "jailed");

    let uid = proc_status(pid, "Uid");
    assert!(
        !uid.starts_with("0\t") && !uid.is_empty(),
        "QEMU runs as root: {uid}"
    );
    assert_eq!(
        proc_status(pid, "Seccomp"),
        "2",
        "QEMU's seccomp filter is on"
    );
    assert_eq!(proc_status(pid, "NoNewPrivs"), "1");
    assert_eq!(
        proc_status(pid, "CapEff"),
        "0000000000000000",
        "no capabilities"
    );
    for ns in ["mnt", "net", "ipc", "uts"] {
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).expect("ns");
        let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).expect("ns");
        assert_ne!(theirs, ours, "QEMU shares the server's {ns} namespace");
    }

    // What QEMU sees as its filesystem.
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    for absent in [
        "etc/shadow",
        "etc/passwd",
        "etc/ssh",
        "root/.cargo",
        "home",
        "var",
    ] {
        assert!(!root.join(absent).exists(), "/{absent} is visible to QEMU");
    }
    // Directories that exist only as the way to something bound inside
    // hold nothing else (the host's /tmp has other things in it).
    let entries = |p: &Path| std::fs::read_dir(p).map_or(0, |d| d.count());
    assert!(entries(&root.join("tmp")) <= 2, "QEMU sees the host's /tmp");
    assert!(entries(Path::new("/tmp")) > entries(&root.join("tmp")));
    assert!(root.join("usr/bin/qemu-system-x86_64").exists());
    let layout = mags_vm::Layout::new(server.data_dir());
    let inside = |p: &Path| root.join(p.strip_prefix("/").expect("absolute"));
    assert!(inside(&dir.qemu_log()).exists(), "its own dir is there");
    assert!(
        inside(&layout.egress_socket()).exists(),
        "the egress socket is reachable"
    );
    let db = layout.data_dir().join("mags.db");
    assert!(
        db.exists() && !inside(&db).exists(),
        "mags.db is visible to QEMU"
    );
    // No other sandbox's dir (the pool's clones live next to it).
    let siblings: Vec<_> = std::fs::read_dir(inside(&layout.sandboxes_dir()))
        .expect("sandboxes dir inside")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let name = dir.path().file_name().expect("name").to_owned();
    assert_eq!(siblings, vec![name]);

    // Its own cgroup, with limits.
    let pids = cgroup_dir(pid, "pids");
    assert!(
        pids.display().to_string().contains("/mags/"),
        "{}",
        pids.display()
    );
    assert!(read_num(&pids.join("pids.max")) <= 4096);
    let mem = cgroup_dir(pid, "memory");
    let limit = first_num(&mem, MEMORY_LIMIT).expect("a memory limit file");
    assert!(limit < 8 << 30, "memory limit {limit}");
}

/// A sandbox's QEMU and the cgroup it runs in, watched from the host.
struct Watched {
    pid: u32,
    pids: PathBuf,
    pids_max: u64,
    mem: PathBuf,
    mem_limit: u64,
    peak: u64,
}

impl Watched {
    fn of(server: &Server, name: &str) -> Watched {
        let (_, pid) = qemu_of(server, name);
        let pids = cgroup_dir(pid, "pids");
        let mem = cgroup_dir(pid, "memory");
        Watched {
            pid,
            pids_max: read_num(&pids.join("pids.max")),
            mem_limit: first_num(&mem, MEMORY_LIMIT).expect("a memory limit"),
            pids,
            mem,
            peak: 0,
        }
    }

    /// Whether its QEMU still runs.
    fn alive(&self) -> bool {
        Path::new(&format!("/proc/{}", self.pid)).exists()
    }

    /// Samples its process count for `secs` (or until `done`, or until the
    /// group is gone), asserting it never passes the limit.
    fn watch(&mut self, secs: u64, done: impl Fn(&Watched) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline && !done(self) {
            let Ok(text) = std::fs::read_to_string(self.pids.join("pids.current")) else {
                return; // the group is gone: its QEMU ended
            };
            let current: u64 = text.trim().parse().unwrap_or(0);
            self.peak = self.peak.max(current);
            assert!(
                current <= self.pids_max,
                "pids {current} > max {}",
                self.pids_max
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Refusals counted by the pids controller.
    fn refused(&self) -> u64 {
        std::fs::read_to_string(self.pids.join("pids.events"))
            .unwrap_or_default()
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// After a stop: QEMU gone and its group (with any helper) removed.
    fn assert_cleaned_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while (self.alive() || self.pids.exists()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(!self.alive(), "QEMU {} still runs", self.pid);
        assert!(!self.pids.exists(), "the sandbox's cgroup is left behind");
    }
}

#[test]
fn a_guest_fork_bomb_memory_hog_and_connection_flood_stay_inside_their_limits() {
    require_root();
    let server = Server::start(&["--jail", "require"]);
    for name in ["flooder", "bomber", "bystander"] {
        let o = server.mags_output(&["new", name]);
        assert!(o.status.success(), "{}\n{}", stderr(&o), server.log());
    }

    // A flood of connections to the egress address, held open: each one
    // is a helper process on the host, so this is what a guest can do to
    // the host's process table. It stops at the sandbox's limit (cgroup
    // pids.max or the per-uid process limit, both 512), or the kernel kills
    // that QEMU at its memory limit first; either way, inside its group.
    let mut flooder = Watched::of(&server, "flooder");
    let flood = "cat > /tmp/flood.py <<'PY'
import socket, time
s = []
for i in range(1000):
    try:
        s.append(socket.create_connection(('10.0.2.100', 3128), timeout=5))
    except OSError:
        pass
time.sleep(300)
PY
nohup python3 /tmp/flood.py >/tmp/flood.log 2>&1 &
echo launched";
    let o = server.mags_output(&["exec", "flooder", flood]);
    assert_eq!(stdout(&o).trim(), "launched", "{}", stderr(&o));
    flooder.watch(120, |w| {
        w.refused() > 0 || w.peak >= w.pids_max || !w.alive()
    });
    assert!(
        flooder.refused() > 0 || flooder.peak >= flooder.pids_max || !flooder.alive(),
        "the flood never reached a limit (peak {} of {})",
        flooder.peak,
        flooder.pids_max
    );
    flooder.watch(5, |_| false);

    // A fork bomb and a memory hog (more than the guest has).
    let mut bomber = Watched::of(&server, "bomber");
    let bomb = "nohup bash -c ':(){ :|:& };:' >/dev/null 2>&1 & \
        nohup python3 -c 'a=[]\nwhile True: a.append(bytearray(64<<20))' >/dev/null 2>&1 & \
        echo launched";
    let o = server.mags_output(&["exec", "bomber", bomb]);
    // The guest may be too busy to answer; what matters is the host.
    let _ = (stdout(&o), stderr(&o));
    bomber.watch(30, |_| false);
    for w in [&flooder, &bomber] {
        if let Some(peak) = first_num(&w.mem, &["memory.peak", "memory.max_usage_in_bytes"]) {
            assert!(
                peak <= w.mem_limit,
                "memory peak {peak} > limit {}",
                w.mem_limit
            );
        }
    }

    // The server answers, and so does the other sandbox.
    assert_eq!(
        http_get(&server.url, "/health").map(|(c, _)| c),
        Some(200),
        "the server stays responsive"
    );
    let t0 = Instant::now();
    let o = server.mags_output(&["exec", "bystander", "echo still-here"]);
    assert_eq!(stdout(&o).trim(), "still-here", "{}", stderr(&o));
    eprintln!(
        "bystander answered in {} ms; host pids peaked at {} (flood) and {} (fork bomb), max {}",
        t0.elapsed().as_millis(),
        flooder.peak,
        bomber.peak,
        flooder.pids_max
    );
    // Stopping them ends every process they had on the host (a sandbox
    // killed at its memory limit has ended already).
    for (name, w) in [("flooder", &flooder), ("bomber", &bomber)] {
        let _ = server.mags_output(&["stop", name]);
        w.assert_cleaned_up();
    }
}
