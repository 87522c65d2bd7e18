//! Workspaces end to end, with real VMs, through the `mags` CLI (and the
//! published Python client for the upload and workspace calls): every
//! mode of the contract table, S3 against a real S3 server on loopback,
//! a server killed in the middle of a sync, and uploads.

use mags_e2e::{bin, stderr, walk, S3Server, Server};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn run(server: &Server, args: &[&str]) -> String {
    server.run_ok(args)
}

fn workspace_list(server: &Server) -> serde_json::Value {
    let out = run(server, &["workspace", "list", "--json"]);
    serde_json::from_str(&out).expect("workspace list --json")
}

fn find_ws<'a>(list: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    list["workspaces"]
        .as_array()
        .expect("workspaces")
        .iter()
        .find(|w| w["workspace_id"] == name)
}

fn data_dir(server: &Server) -> PathBuf {
    server.data_dir()
}

/// Removes every cached workspace disk of the server (as on a new host).
fn wipe_cache(server: &Server) {
    let dir = data_dir(server).join("workspaces");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("wipe the workspace cache");
    }
}

/// The persistence story: written in a persistent sandbox, saved on stop,
/// there again after a restart with the host's cache wiped.
fn persistence_round_trip(server: &mut Server) {
    run(
        server,
        &[
            "run",
            "-w",
            "keep",
            "-p",
            "echo precious > /root/note; sync",
        ],
    );
    // Deleting a workspace in use is refused (a new job would take it over
    // instead: tests/takeover.rs).
    let o = server.mags_output(&["workspace", "delete", "keep"]);
    assert!(
        !o.status.success() && stderr(&o).contains("409"),
        "{}",
        stderr(&o)
    );
    run(server, &["sync", "keep"]);
    run(server, &["stop", "keep"]);
    let list = workspace_list(server);
    let w = find_ws(&list, "keep").expect("listed");
    assert_eq!(w["persistent"], true, "{list}");
    assert!(w["versions"].as_u64().unwrap_or(0) >= 1, "{list}");

    server.restart(true);
    wipe_cache(server);
    let out = run(server, &["run", "-w", "keep", "-p", "cat /root/note"]);
    assert_eq!(out, "precious\n");
    run(server, &["stop", "keep"]);
}

#[test]
fn persistent_workspace_survives_a_restart_and_a_wiped_cache() {
    let mut server = Server::start(&[]);
    persistence_round_trip(&mut server);
    // Deleting removes it and its stored versions.
    run(&server, &["workspace", "delete", "keep"]);
    assert!(find_ws(&workspace_list(&server), "keep").is_none());
    let out = run(
        &server,
        &["run", "-w", "keep", "cat /root/note 2>&1 || echo none"],
    );
    assert!(out.contains("none"), "{out}");
}

#[test]
fn local_workspace_is_kept_for_its_window_then_gone() {
    let server = Server::start(&["--workspace-cache-secs", "3"]);
    run(&server, &["run", "-w", "scratch", "echo here > /root/x"]);
    assert_eq!(
        run(&server, &["run", "-w", "scratch", "cat /root/x"]),
        "here\n"
    );
    let w = workspace_list(&server);
    assert_eq!(find_ws(&w, "scratch").expect("listed")["persistent"], false);
    let deadline = Instant::now() + Duration::from_secs(60);
    while find_ws(&workspace_list(&server), "scratch").is_some() {
        assert!(
            Instant::now() < deadline,
            "the local workspace outlived its window"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let out = run(
        &server,
        &["run", "-w", "scratch", "cat /root/x 2>&1 || echo gone"],
    );
    assert!(out.contains("gone"), "{out}");
}

#[test]
fn fork_and_parallel_base_workers_never_change_the_base() {
    let server = Server::start(&[]);
    run(
        &server,
        &["run", "-w", "base", "-p", "echo from-base > /root/f; sync"],
    );
    run(&server, &["stop", "base"]);

    // A fork sees the base's files; its writes stay its own.
    let out = run(
        &server,
        &[
            "run",
            "--base",
            "base",
            "-w",
            "fork",
            "cat /root/f; echo from-fork > /root/f",
        ],
    );
    assert_eq!(out, "from-base\n");
    assert_eq!(
        run(&server, &["run", "-w", "fork", "cat /root/f"]),
        "from-fork\n"
    );

    // A persistent fork is stored as its own workspace (sharing the base's
    // chunks) and comes back from storage alone.
    let out = run(
        &server,
        &[
            "run",
            "--base",
            "base",
            "-w",
            "pfork",
            "-p",
            "cat /root/f; echo pf > /root/f; sync",
        ],
    );
    assert_eq!(out, "from-base\n");
    run(&server, &["stop", "pfork"]);
    wipe_cache(&server);
    assert_eq!(run(&server, &["run", "-w", "pfork", "cat /root/f"]), "pf\n");

    // Five workers at once on the base, each writing; none sees another's
    // write and the base stays as it was.
    let children: Vec<Child> = (0..5)
        .map(|i| {
            server
                .mags()
                .args([
                    "run",
                    "--base",
                    "base",
                    &format!("cat /root/f; echo worker-{i} > /root/f; cat /root/f"),
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn mags")
        })
        .collect();
    for (i, c) in children.into_iter().enumerate() {
        let o = c.wait_with_output().expect("wait");
        assert_eq!(server.ok(&o), format!("from-base\nworker-{i}\n"));
    }
    let out = run(&server, &["run", "-w", "base", "-p", "cat /root/f"]);
    assert_eq!(out, "from-base\n");
    run(&server, &["stop", "base"]);
    let overlays = data_dir(&server).join("overlays");
    let left = std::fs::read_dir(&overlays).map_or(0, |d| d.count());
    assert_eq!(left, 0, "base overlays are discarded");
}

#[test]
fn persistent_workspace_on_a_real_s3_server() {
    let s3 = S3Server::start("mags");
    let args = s3.magsd_args("mags");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server = Server::start(&args);
    persistence_round_trip(&mut server);
    // The bytes went to S3, not to the local object directory.
    assert!(!data_dir(&server).join("objects").exists());
    let chunks = walk(&s3.root.path().join("mags").join("chunks"));
    assert!(!chunks.is_empty(), "no chunks in the S3 bucket");
}

/// The content of `/root/big` in a workspace disk image, via debugfs.
fn sha_in_image(image: &Path) -> String {
    let o = Command::new("debugfs")
        .args(["-R", "cat /upper/root/big"])
        .arg(image)
        .output()
        .expect("debugfs (e2fsprogs)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(&o.stdout))
}

/// kill -9 of magsd in the middle of a sync: the stored workspace is the
/// old version or the new one, whole.
#[test]
fn a_server_killed_mid_sync_leaves_the_old_or_the_new_version() {
    let mut server = Server::start(&[]);
    let sha = |out: &str| {
        out.split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let old = sha(&run(
        &server,
        &[
            "run",
            "-w",
            "crash",
            "-p",
            "head -c 200M /dev/urandom > /root/big; sync; sha256sum /root/big",
        ],
    ));
    run(&server, &["sync", "crash"]);
    let new = sha(&run(
        &server,
        &[
            "exec",
            "crash",
            "head -c 200M /dev/urandom > /root/big; sync; sha256sum /root/big",
        ],
    ));
    assert_ne!(old, new);
    let mut sync = server
        .mags()
        .args(["sync", "crash"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mags sync");
    // Long enough to be past the freeze and into the uploads.
    std::thread::sleep(Duration::from_millis(400));
    server.restart(false);
    let acknowledged = sync.wait().map(|s| s.success()).unwrap_or(false);

    let objects = mags_workspace::Objects::open(&mags_workspace::ObjectConfig::Local(
        data_dir(&server).join("objects"),
    ))
    .expect("objects");
    let engine = mags_workspace::Engine::new(objects);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let user = std::fs::read_dir(data_dir(&server).join("workspaces"))
        .expect("workspaces dir")
        .flatten()
        .next()
        .expect("a user dir")
        .file_name()
        .to_string_lossy()
        .to_string();
    let key = format!("{user}/crash");
    let m = rt
        .block_on(engine.newest_stored(&key))
        .expect("read latest")
        .expect("a stored version");
    let image = server.dir.path().join("restored.ext4");
    rt.block_on(engine.restore(&m, &image)).expect("restore");
    let got = sha_in_image(&image);
    assert!(
        got == old || got == new,
        "the stored workspace is neither version (mixed?)"
    );
    if acknowledged {
        assert_eq!(got, new, "an acknowledged sync was lost");
    }
    // Chunks on disk that the stored version does not reference: what the
    // cut-off sync had uploaded (evidence it was cut off mid-way).
    let on_disk = walk(&data_dir(&server).join("objects").join("chunks")).len();
    eprintln!(
        "kill -9 mid-sync: acknowledged={acknowledged}, stored={}, unreferenced chunks={}",
        if got == new { "new" } else { "old" },
        on_disk.saturating_sub(m.chunks.len())
    );
}

#[test]
fn uploads_arrive_whole_and_oversized_ones_leave_nothing() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let small = dir.path().join("data.bin");
    let mut data = vec![0u8; 50_000_000];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(&small, &data).expect("write");
    use sha2::Digest as _;
    let want = hex::encode(sha2::Sha256::digest(&data));
    let out = run(
        &server,
        &[
            "run",
            "-f",
            small.to_str().expect("utf-8"),
            "sha256sum /root/data.bin /uploads/data.bin",
        ],
    );
    let sums: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(sums, vec![want.as_str(), want.as_str()], "{out}");

    let files = data_dir(&server).join("objects").join("files");
    let before = walk(&files).len();
    let big = dir.path().join("big.bin");
    let f = std::fs::File::create(&big).expect("create");
    f.set_len(101_000_000).expect("len");
    let o = server.mags_output(&["run", "-f", big.to_str().expect("utf-8"), "true"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("413"), "{}", stderr(&o));
    assert!(stderr(&o).contains("100 MB"), "{}", stderr(&o));
    assert_eq!(
        walk(&files).len(),
        before,
        "an oversized upload left a file behind"
    );
    let o = server.mags_output(&["list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(
        v["jobs"].as_array().map(Vec::len),
        Some(1),
        "no job for the refused upload"
    );
}

/// The published Python client's upload, workspace and sync calls.
#[test]
fn python_client_uploads_lists_syncs_and_deletes_workspaces() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("hello.txt"), "hi from python\n").expect("write");
    let script = r#"
import json, sys, time
from mags import Mags
from mags.client import MagsError
m = Mags()
ids = m.upload_files([sys.argv[1]])
r = m.run_and_wait("cat /root/hello.txt /uploads/hello.txt", file_ids=ids, timeout=300, poll_interval=0.2)
job = m.new("pyws", persistent=True, timeout=300, poll_interval=0.2)
m.exec("pyws", "echo synced > /root/s")
synced = m.sync(job["request_id"])
listed = m.list_workspaces()
try:
    m.delete_workspace("pyws")
    refused = None
except MagsError as e:
    refused = e.status_code
m.stop("pyws")
time.sleep(1)
deleted = m.delete_workspace("pyws")
after = m.list_workspaces()
print(json.dumps({"run": r, "synced": synced, "listed": listed, "refused": refused, "deleted": deleted, "after": after}))
"#;
    let file = dir.path().join("hello.txt");
    let v = server.python(script, &[file.as_os_str()]);
    assert_eq!(v["run"]["status"], "completed", "{v}");
    let msgs: Vec<&str> = v["run"]["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .filter_map(|l| l["message"].as_str())
        .collect();
    assert_eq!(msgs, vec!["hi from python", "hi from python"], "{v}");
    let w = find_ws(&v["listed"], "pyws").expect("listed");
    assert!(w["versions"].as_u64().unwrap_or(0) >= 1, "{v}");
    assert_eq!(v["refused"], 409, "{v}");
    assert!(find_ws(&v["after"], "pyws").is_none(), "{v}");
    let _ = bin("mags");
}

/// `mags resize`: online while the sandbox runs (the guest sees the new
/// size at once), offline otherwise; shrinking is refused.
#[test]
fn resize_grows_online_and_offline_and_refuses_to_shrink() {
    let server = Server::start(&[]);
    let size_gb = |out: &str| -> u64 { out.trim().parse::<u64>().expect("df size") >> 30 };
    let df = "df -B1 --output=size / | tail -1";
    let out = run(&server, &["run", "-w", "grow", "-p", df]);
    assert!(size_gb(&out) < 2, "{out}");
    run(&server, &["resize", "grow", "--disk", "4"]);
    let out = run(&server, &["exec", "grow", df]);
    assert!((3..=4).contains(&size_gb(&out)), "online: {out}");
    let o = server.mags_output(&["resize", "grow", "--disk", "3"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("shrinking"), "{}", stderr(&o));
    run(&server, &["stop", "grow"]);
    run(&server, &["resize", "grow", "--disk", "6"]);
    let out = run(&server, &["run", "-w", "grow", df]);
    assert!((5..=6).contains(&size_gb(&out)), "offline: {out}");
    let list = workspace_list(&server);
    assert_eq!(
        find_ws(&list, "grow").expect("listed")["disk_gb"],
        6,
        "{list}"
    );
}
