//! Fault injection, end to end, with real VMs: QEMU killed under a job,
//! magsd killed with -9 and restarted, the host's data dir filling up, and
//! the object store going away in the middle of a workspace's life. Each
//! checks what the user sees (status, error, CLI output) and that nothing
//! acknowledged is lost.

use mags_e2e::{stderr, stdout, tail, walk, S3Server, Server};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(300);

/// QEMU processes (pid, parent pid) whose command line contains `needle`.
fn qemu_procs(needle: &str) -> Vec<(i32, i32)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let argv0 = cmdline.split(' ').next().unwrap_or_default();
        if argv0.contains("qemu-system") && cmdline.contains(needle) {
            out.push((pid, parent_of(pid).unwrap_or(0)));
        }
    }
    out
}

fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Whether `ancestor` is `pid`'s parent, grandparent, ...
fn descends_from(pid: i32, ancestor: i32) -> bool {
    let mut p = pid;
    for _ in 0..64 {
        match parent_of(p) {
            Some(pp) if pp == ancestor => return true,
            Some(pp) if pp > 1 => p = pp,
            _ => return false,
        }
    }
    false
}

/// The one QEMU process of the job `name` (found by its VM's dir).
fn qemu_of(server: &Server, name: &str) -> i32 {
    let st = server.status(name);
    let vm = st["vm_id"].as_str().expect("a running job has a vm_id");
    let dir = mags_vm::Layout::new(server.data_dir()).sandbox(vm);
    let procs = qemu_procs(&format!("{}/", dir.path().display()));
    assert_eq!(procs.len(), 1, "QEMU of {name} ({vm}): {procs:?}");
    procs[0].0
}

fn kill9(pid: i32) {
    // SAFETY: plain syscall on a pid the test found in /proc.
    assert_eq!(
        unsafe { libc::kill(pid, libc::SIGKILL) },
        0,
        "kill -9 {pid}"
    );
}

/// `mags ARGS` in the background (stdout/stderr captured).
fn spawn_mags(server: &Server, args: &[&str]) -> Child {
    server
        .mags()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mags")
}

/// Waits until job `name` is running in a VM.
fn wait_running(server: &Server, name: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let o = server.mags_output(&["status", name, "--json"]);
        if o.status.success() {
            let s: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
            if s["status"] == "running" && s["vm_id"].is_string() {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{name} never ran:\n{}",
            tail(&server.log(), 40)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The job's final status, waiting for it to be `error`; its error text.
fn wait_error(server: &Server, name: &str) -> String {
    let s = server.wait_status(name, "error", WAIT);
    s["error"].as_str().unwrap_or_default().to_string()
}

fn logs(server: &Server, name: &str) -> String {
    let o = server.mags_output(&["logs", name]);
    format!("{}{}", stdout(&o), stderr(&o))
}

fn workspace(server: &Server, name: &str) -> serde_json::Value {
    let out = server.run_ok(&["workspace", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&out).expect("workspace list --json");
    list["workspaces"]
        .as_array()
        .expect("workspaces")
        .iter()
        .find(|w| w["workspace_id"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("workspace {name} not listed: {list}"))
}

fn failed(o: &Output) -> String {
    assert!(
        !o.status.success(),
        "expected a failure\nstdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
    format!("{}{}", stdout(o), stderr(o))
}

#[test]
fn a_qemu_crash_fails_the_job_and_keeps_the_workspace_disk() {
    let server = Server::start(&[]);

    // A one-shot job: its QEMU is killed under the script.
    let run = spawn_mags(&server, &["run", "-n", "victim", "echo up; sleep 600"]);
    wait_running(&server, "victim");
    let deadline = Instant::now() + WAIT;
    while !logs(&server, "victim").contains("up") {
        assert!(Instant::now() < deadline, "the script never started");
        std::thread::sleep(Duration::from_millis(200));
    }
    kill9(qemu_of(&server, "victim"));
    let o = run.wait_with_output().expect("mags run");
    let said = failed(&o);
    let error = wait_error(&server, "victim");
    assert!(
        error.contains("the VM died") && error.contains("killed by signal 9"),
        "reason: {error}\nCLI: {said}"
    );
    assert!(said.contains("the VM died"), "the CLI says why: {said}");
    eprintln!("QEMU killed under a one-shot job: status error, {error:?}; CLI: {said:?}");
    assert!(logs(&server, "victim").contains("the VM died"));

    // A persistent workspace: a file written and flushed, then the crash.
    server.run_ok(&[
        "run",
        "-w",
        "kept",
        "-p",
        "echo precious > /root/note; sync /root/note",
    ]);
    kill9(qemu_of(&server, "kept"));
    let error = wait_error(&server, "kept");
    assert!(
        error.contains("lost") && error.contains("the VM died"),
        "reason: {error}"
    );
    eprintln!("QEMU killed under a persistent sandbox: {error:?}");
    let out = server.run_ok(&["run", "-w", "kept", "cat /root/note"]);
    assert_eq!(out, "precious\n", "the workspace's disk was kept");
    // The server is fine: no QEMU of those jobs is left, a new job runs.
    assert_eq!(server.run_ok(&["run", "echo fine"]), "fine\n");
}

/// The latest stored version of workspace `name` restored to an image in
/// `scratch`, then `path` (under the overlay's upper dir) read with debugfs.
fn stored_file(server: &Server, name: &str, path: &str, scratch: &Path) -> String {
    let data = server.data_dir();
    let objects =
        mags_workspace::Objects::open(&mags_workspace::ObjectConfig::Local(data.join("objects")))
            .expect("objects");
    let engine = mags_workspace::Engine::new(objects);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let user = std::fs::read_dir(data.join("workspaces"))
        .expect("workspaces dir")
        .flatten()
        .next()
        .expect("a user dir")
        .file_name()
        .to_string_lossy()
        .to_string();
    let m = rt
        .block_on(engine.newest_stored(&format!("{user}/{name}")))
        .expect("read latest")
        .expect("a stored version");
    let image = scratch.join(format!("{name}.ext4"));
    rt.block_on(engine.restore(&m, &image)).expect("restore");
    let o = Command::new("debugfs")
        .args(["-R", &format!("cat /upper{path}")])
        .arg(&image)
        .output()
        .expect("debugfs (e2fsprogs)");
    let _ = std::fs::remove_file(&image);
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[test]
fn kill_9_of_the_server_leaves_no_orphans_and_loses_nothing_acknowledged() {
    let mut server = Server::start(&[]);
    let data = server.data_dir().display().to_string();
    server.run_ok(&[
        "run",
        "-w",
        "acked",
        "-p",
        "echo acknowledged > /root/acked; sync",
    ]);
    server.run_ok(&["sync", "acked"]);
    let oneshot = spawn_mags(&server, &["run", "-n", "oneshot", "sleep 600"]);
    wait_running(&server, "oneshot");
    let before = qemu_procs(&data);
    assert!(before.len() >= 2, "QEMU of both jobs: {before:?}");

    server.restart(false);
    let _ = oneshot.wait_with_output();

    // No QEMU of the old server survives; every QEMU on this data dir now
    // belongs to the new server.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = qemu_procs(&data);
        let old: Vec<_> = before
            .iter()
            .filter(|(pid, _)| now.iter().any(|(p, _)| p == pid))
            .collect();
        let orphans: Vec<_> = now
            .iter()
            .filter(|(pid, _)| !descends_from(*pid, server.pid() as i32))
            .collect();
        if old.is_empty() && orphans.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "orphaned QEMU after kill -9: old {old:?}, not the new server's {orphans:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The one-shot job is reconciled: `error`, with the reason.
    let error = wait_error(&server, "oneshot");
    assert!(error.contains("server restarted"), "reason: {error}");
    eprintln!("one-shot job after kill -9 of magsd: {error:?}");

    // The persistent sandbox comes back in a fresh VM (ARCHITECTURE,
    // "Restart") and says so; its synced file is there.
    let deadline = Instant::now() + WAIT;
    while !logs(&server, "acked").contains("magsd restarted and the sandbox's VM was lost") {
        assert!(Instant::now() < deadline, "{}", tail(&server.log(), 40));
        std::thread::sleep(Duration::from_millis(300));
    }
    server.wait_status("acked", "running", WAIT);
    let out = server.run_ok(&["exec", "acked", "cat /root/acked"]);
    assert_eq!(out, "acknowledged\n");
    // And the acknowledged version in object storage has it too: a host
    // with no cache restores it from there.
    let scratch = tempfile::tempdir().expect("tempdir");
    assert_eq!(
        stored_file(&server, "acked", "/root/acked", scratch.path()),
        "acknowledged\n"
    );
    server.run_ok(&["stop", "acked"]);
}

/// A tmpfs of `mib` MiB mounted on `dir` (made if missing); unmounted and
/// removed on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, mib: u64) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("mount point");
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("mount(8)");
        assert!(
            o.status.success(),
            "cannot mount a {mib} MiB tmpfs on {} for the disk-full test: {}\n\
             this test needs root (or CAP_SYS_ADMIN) to give the server a small data dir; \
             run the tests as root",
            dir.display(),
            stderr(&o)
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
        if let Some(parent) = self.0.parent() {
            let _ = std::fs::remove_dir_all(parent);
        }
    }
}

/// Free bytes on the filesystem holding `path` (as `df` counts them).
fn free_bytes(path: &Path) -> u64 {
    let o = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .expect("df");
    stdout(&o)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df output")
}

/// Fills the filesystem of `dir` until `leave` bytes are free, with a new
/// file called `name`.
fn fill(dir: &Path, name: &str, leave: u64) -> PathBuf {
    let filler = dir.join(name);
    let size = free_bytes(dir).saturating_sub(leave);
    let o = Command::new("fallocate")
        .args(["-l", &size.to_string()])
        .arg(&filler)
        .output()
        .expect("fallocate");
    assert!(o.status.success(), "fallocate: {}", stderr(&o));
    filler
}

#[test]
fn a_full_host_disk_fails_jobs_clearly_and_corrupts_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // Dropped after the server (declared first): unmounts the data dir.
    // Room for a 2 GiB disk after the server's own files (templates): a
    // disk the data dir cannot hold is refused at submit (see below).
    let _mount = Tmpfs::mount(&data, 4096);
    let server = Server::start_in(dir, &["--pool-size", "0"]);

    // A guest filling its own virtual disk is the guest's problem: ENOSPC
    // in the guest, an ordinary script failure, the host unaffected.
    let o = server.mags_output(&["run", "-n", "guestfull", "fallocate -l 100G /root/big"]);
    let said = failed(&o);
    assert!(said.contains("No space left on device"), "{said}");
    let s = server.status("guestfull");
    assert_eq!(s["status"], "error", "{s}");
    assert!(s["error"].is_null(), "no host problem is reported: {s}");

    // A persistent workspace stored before the host's disk fills.
    server.run_ok(&["run", "-w", "other", "-p", "echo safe > /root/f; sync"]);
    server.run_ok(&["stop", "other"]);

    // The host's disk fills while a job writes: the job is accepted (its
    // disk fits), then the host fills under it.
    let (o, filler, writer) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            // No name: a name is a workspace (`-n` = `-w`), whose disk
            // would outlive the job; this one's disk goes with its VM.
            server.mags_output(&[
                "run",
                "sleep 5; head -c 400M /dev/zero > /root/big && sync /root/big && echo written",
            ])
        });
        // Running (its sleep gives the fill time to land first): the
        // newest job.
        let deadline = Instant::now() + WAIT;
        let writer_id = loop {
            let o = server.mags_output(&["list", "--json"]);
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
            let newest = &v["jobs"][0];
            if newest["status"] == "running" && newest["workspace_id"].is_null() {
                break newest["id"].as_str().expect("id").to_string();
            }
            assert!(Instant::now() < deadline, "the writer never ran: {v}");
            std::thread::sleep(Duration::from_millis(200));
        };
        let filler = fill(&data, "filler", 160 << 20);
        (writer.join().expect("writer thread"), filler, writer_id)
    });
    let said = failed(&o);
    let s = server.wait_status(&writer, "error", WAIT);
    let error = s["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("the host's disk is full"),
        "reason: {s}\nCLI: {said}\n{}",
        tail(&server.log(), 40)
    );
    assert!(!said.contains("written"), "{said}");
    eprintln!("host disk full under a job: {error:?}; CLI: {said:?}");

    // A new job while the disk is full (what the writer wrote is gone
    // with its VM, so fill it again): refused at submit, before anything
    // is made, naming the free space (507).
    let vm = mags_vm::Layout::new(server.data_dir()).sandbox(s["vm_id"].as_str().expect("vm_id"));
    let deadline = Instant::now() + WAIT;
    while vm.path().exists() {
        assert!(Instant::now() < deadline, "the writer's VM dir stays");
        std::thread::sleep(Duration::from_millis(200));
    }
    let refill = fill(&data, "refill", 8 << 20);
    let o = server.mags_output(&["run", "-n", "late", "echo never"]);
    let said = failed(&o);
    assert!(
        said.contains("the host cannot hold a 2 GiB disk") && said.contains("free"),
        "{said}\n{}",
        tail(&server.log(), 40)
    );
    assert!(!said.contains("never\n"), "{said}");
    eprintln!("new job on a full host disk: {said:?}");

    // Space again: the database is intact, earlier jobs are as they were,
    // the stored workspace is whole and new jobs run.
    std::fs::remove_file(&filler).expect("remove the filler");
    std::fs::remove_file(&refill).expect("remove the filler");
    let o = Command::new("sqlite3")
        .arg(data.join("mags.db"))
        .arg("PRAGMA integrity_check;")
        .output()
        .expect("sqlite3");
    assert_eq!(stdout(&o).trim(), "ok", "{}", stderr(&o));
    assert_eq!(server.status(&writer)["status"], "error");
    assert_eq!(server.status("guestfull")["status"], "error");
    assert_eq!(workspace(&server, "other")["persistent"], true);
    let out = server.run_ok(&["run", "-w", "other", "cat /root/f"]);
    assert_eq!(out, "safe\n");
    assert_eq!(server.run_ok(&["run", "echo fine"]), "fine\n");
}

/// Waits until the server log contains `needle`.
fn wait_log(server: &Server, needle: &str) {
    let deadline = Instant::now() + WAIT;
    while !server.log().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "{needle:?} never logged:\n{}",
            tail(&server.log(), 40)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn unreachable_object_storage_fails_the_sync_and_acknowledges_nothing() {
    let mut s3 = S3Server::start("mags");
    let mut args = s3.magsd_args("mags");
    // The cache janitor looks at idle workspaces within seconds.
    args.extend(["--workspace-cache-secs".into(), "2".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start(&args);
    server.run_ok(&["run", "-w", "s3ws", "-p", "echo v1 > /root/f; sync"]);
    server.run_ok(&["sync", "s3ws"]);
    let stored = workspace(&server, "s3ws")["latest_version"]
        .as_u64()
        .expect("a stored version");
    server.run_ok(&["exec", "s3ws", "echo v2 > /root/f; sync"]);

    // The store goes away: the sync fails (after its retries), says why,
    // and the guest is not left frozen.
    s3.stop();
    let o = server.mags_output(&["sync", "s3ws"]);
    let said = failed(&o);
    assert!(said.contains("workspace storage"), "{said}");
    eprintln!("mags sync with S3 down: {said:?}");
    let out = server.run_ok(&["exec", "s3ws", "echo v3 > /root/g; cat /root/f"]);
    assert_eq!(out, "v2\n", "the guest still writes");
    // Back: the failed sync stored nothing.
    s3.resume();
    assert_eq!(
        workspace(&server, "s3ws")["latest_version"].as_u64(),
        Some(stored),
        "a version was stored by a failed sync"
    );

    // Down again while the sandbox stops: the job says its disk was not
    // stored, and the host keeps its only copy of v2/v3, also past the
    // cache window (the janitor tries to store it and fails).
    s3.stop();
    let o = server.mags_output(&["stop", "s3ws"]);
    let s = server.status("s3ws");
    assert_eq!(s["status"], "error", "{s}\n{}", stderr(&o));
    assert!(
        s["error"]
            .as_str()
            .unwrap_or_default()
            .contains("workspace storage"),
        "{s}"
    );
    eprintln!("mags stop with S3 down: {}", s["error"]);
    wait_log(&server, "cannot store a workspace's unsaved changes");
    let cache = server.data_dir().join("workspaces");
    let disks: Vec<_> = walk(&cache)
        .into_iter()
        .filter(|p| p.ends_with("s3ws/disk.ext4"))
        .collect();
    assert_eq!(disks.len(), 1, "the unsaved cache is kept: {disks:?}");

    // Back: the janitor's retry stores it; from the store alone (no host
    // cache) the data is intact.
    s3.resume();
    wait_log(&server, "stored a workspace's unsaved changes");
    let now = workspace(&server, "s3ws")["latest_version"].as_u64();
    assert!(now > Some(stored), "a new version after the retry: {now:?}");
    std::fs::remove_dir_all(&cache).expect("wipe the cache");
    let out = server.run_ok(&["run", "-w", "s3ws", "cat /root/f /root/g"]);
    assert_eq!(out, "v2\nv3\n");
}
