//! `mags run` end to end: the CLI, the real server, a real VM.

use mags_e2e::{stderr, stdout, Server};

#[test]
fn run_streams_guest_output_and_exits_with_the_script_code() {
    let server = Server::start(&[]);

    let o = server.mags_output(&[
        "run",
        "echo Hello World; uname -r; hostname; cat /etc/os-release | head -1",
    ]);
    assert!(
        o.status.success(),
        "stderr: {}\nlog:\n{}",
        stderr(&o),
        server.log()
    );
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"Hello World"), "{out}");
    let host_release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("host");
    assert_ne!(
        lines[1],
        host_release.trim(),
        "the guest kernel is not the host's"
    );
    assert!(lines[1].contains("cloud-amd64"), "{out}");
    assert_eq!(lines[2], "mags-vm");
    assert!(lines[3].contains("Debian GNU/Linux"), "{out}");

    let o = server.mags_output(&["run", "echo to-out; echo to-err >&2; exit 3"]);
    assert_eq!(o.status.code(), Some(3), "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), "to-out\n");
    assert!(stderr(&o).contains("to-err"), "{}", stderr(&o));
    assert!(!stdout(&o).contains("to-err"));

    let o = server.mags_output(&["run", "--env", "GREETING=hi there", "echo \"$GREETING\""]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "hi there\n");

    // A megabyte of output arrives whole, byte for byte.
    let o = server.mags_output(&["run", "head -c 1048576 /dev/zero | tr '\\0' 'x'"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout.len(), 1 << 20);
    assert!(o.stdout.iter().all(|b| *b == b'x'));

    // The jobs are listed, newest first, with their final status.
    let o = server.mags_output(&["list", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("list --json is JSON");
    let jobs = v["jobs"]
        .as_array()
        .or_else(|| v.as_array())
        .expect("jobs array")
        .clone();
    assert_eq!(jobs.len(), 4, "{v}");
    assert_eq!(jobs[0]["status"], "completed");
    assert_eq!(jobs[2]["status"], "error");
    assert_eq!(jobs[2]["exit_code"], 3);
}

#[test]
fn bad_token_is_refused_and_creates_nothing() {
    let server = Server::start(&[]);
    let o = server
        .mags()
        .env("MAGS_API_TOKEN", "mags_not-a-real-token")
        .args(["run", "echo should-not-run"])
        .output()
        .expect("mags");
    assert!(!o.status.success());
    assert!(!stdout(&o).contains("should-not-run"));
    let o = server.mags_output(&["list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let jobs = v["jobs"]
        .as_array()
        .or_else(|| v.as_array())
        .expect("jobs array")
        .clone();
    assert!(jobs.is_empty(), "{v}");
}
