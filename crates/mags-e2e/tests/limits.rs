//! Job timeouts on a real VM: a script that runs past its `timeout` is
//! killed, the job ends `error` with the reason in its status and log, and
//! its VM is gone (no QEMU process, no sandbox directory).

use mags_e2e::{http_json, stderr, Server};
use std::time::{Duration, Instant};

#[test]
fn a_script_past_its_timeout_is_killed_and_its_vm_is_gone() {
    let server = Server::start(&[]);
    let o = server.mags_output(&[
        "run",
        "--timeout",
        "3",
        "echo started; sleep 600; echo never",
    ]);
    assert!(!o.status.success(), "the run fails: {}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "started\n");
    assert!(
        stderr(&o).contains("timed out after 3 s"),
        "stderr: {}",
        stderr(&o)
    );

    let (code, list) =
        http_json(&server.url, "GET", "/api/v1/mags-jobs", &server.token, None).expect("list");
    assert_eq!(code, 200, "{list}");
    let job = &list["jobs"][0];
    assert_eq!(job["status"], "error", "{job}");
    assert_eq!(job["timeout"], 3, "{job}");
    assert_eq!(
        job["error"], "timed out after 3 s (the script was killed)",
        "{job}"
    );
    let id = job["request_id"].as_str().expect("id");
    let vm = job["vm_id"].as_str().expect("vm_id").to_string();
    let (_, logs) = http_json(
        &server.url,
        "GET",
        &format!("/api/v1/mags-jobs/{id}/logs"),
        &server.token,
        None,
    )
    .expect("logs");
    let text = logs.to_string();
    assert!(text.contains("error: timed out after 3 s"), "{text}");
    assert!(!text.contains("never"), "{text}");

    // The VM is shut down in the background after the job ends.
    let dir = server.dir.path().join("data/sandboxes").join(&vm);
    let deadline = Instant::now() + Duration::from_secs(120);
    while (dir.exists() || qemu_running(&vm)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!dir.exists(), "{} is left", dir.display());
    assert!(!qemu_running(&vm), "a QEMU process of {vm} is left");
}

/// Whether a process whose command line names `vm` is running.
fn qemu_running(vm: &str) -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    procs.flatten().any(|p| {
        std::fs::read(p.path().join("cmdline"))
            .map(|c| {
                let c = String::from_utf8_lossy(&c);
                c.contains("qemu") && c.contains(vm)
            })
            .unwrap_or(false)
    })
}
