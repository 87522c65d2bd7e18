//! Long-lived sandboxes end to end: the `mags` CLI, the real server, real
//! VMs. An idle sandbox sleeps and an exec wakes it with its processes,
//! files and startup command; timeouts, refusals, settings and stop; and a
//! restarted server (gracefully, or after a crash) brings its sandboxes back.

use mags_e2e::{http_json, stderr, stdout, Server};
use std::time::{Duration, Instant};

/// `mags exec NAME CMD`: (exit code, stdout, stderr).
fn exec(server: &Server, args: &[&str]) -> (Option<i32>, String, String) {
    let mut all = vec!["exec"];
    all.extend_from_slice(args);
    let o = server.mags_output(&all);
    (o.status.code(), stdout(&o), stderr(&o))
}

#[test]
fn an_idle_sandbox_sleeps_and_an_exec_wakes_it_intact() {
    let server = Server::start(&["--idle-timeout-secs", "2"]);
    let setup = "echo data > /root/file.txt; \
                 nohup bash -c 'while true; do echo x >> /tmp/ticks; sleep 0.2; done' >/dev/null 2>&1 & \
                 echo $! > /root/bg.pid; echo ready";
    let o = server.mags_output(&[
        "run",
        "-p",
        "-n",
        "box",
        "--startup-command",
        "echo woke >> /root/wakes.log",
        setup,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stderr(&o), server.log());
    assert_eq!(stdout(&o), "ready\n");
    assert!(stderr(&o).contains("stays up"), "{}", stderr(&o));

    let slept = server.wait_status("box", "sleeping", Duration::from_secs(60));
    assert_eq!(slept["exit_code"], 0, "the script's exit is kept: {slept}");
    let check = "kill -0 $(cat /root/bg.pid) && echo alive; cat /root/file.txt; \
                 a=$(wc -l < /tmp/ticks); sleep 0.6; b=$(wc -l < /tmp/ticks); \
                 [ \"$b\" -gt \"$a\" ] && echo counting; cat /root/wakes.log";
    let t0 = Instant::now();
    let (code, out, err) = exec(&server, &["box", check]);
    let wake_exec = t0.elapsed();
    assert_eq!(code, Some(0), "{err}\n{}", server.log());
    assert_eq!(out, "alive\ndata\ncounting\nwoke\n", "{err}");
    eprintln!("measured: exec on a sleeping sandbox (wake + startup + 0.6 s of command) took {wake_exec:?}");
    let logs = server.mags_output(&["logs", "box"]);
    let logs = stderr(&logs);
    for needle in [
        "sandbox asleep (idle for 2 s",
        "sandbox woke in",
        "running the startup command: echo woke >> /root/wakes.log",
        "the startup command exited with code 0",
    ] {
        assert!(logs.contains(needle), "{needle:?} not in logs:\n{logs}");
    }

    // Exit codes propagate; a timeout kills the command, not the sandbox.
    let (code, _, _) = exec(&server, &["box", "exit 7"]);
    assert_eq!(code, Some(7));
    let t0 = Instant::now();
    let (code, _, err) = exec(&server, &["--timeout", "1", "box", "sleep 60"]);
    assert_eq!(code, Some(124), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(30));
    let t0 = Instant::now();
    let (code, out, _) = exec(&server, &["box", "echo still here"]);
    eprintln!("measured: mags exec round trip {:?}", t0.elapsed());
    assert_eq!((code, out.as_str()), (Some(0), "still here\n"));

    // Unknown names and other users' sandboxes are refused, leaking nothing.
    let (code, out, err) = exec(&server, &["nosuch", "echo leaked"]);
    assert_eq!(code, Some(1));
    assert!(
        !out.contains("leaked") && err.contains("no job found"),
        "{err}"
    );
    let id = server.status("box")["request_id"]
        .as_str()
        .expect("id")
        .to_string();
    let bob = server.token_for("bob");
    let body = serde_json::json!({"command": "echo leaked"});
    let (code, v) = http_json(
        &server.url,
        "POST",
        &format!("/api/v1/mags-jobs/{id}/exec"),
        &bob,
        Some(&body),
    )
    .expect("http");
    assert_eq!(code, 404, "{v}");
    assert!(!v.to_string().contains("leaked"), "{v}");

    // no_sleep keeps it up; back to sleeping after --sleep.
    let o = server.mags_output(&["set", "box", "--no-sleep"]);
    assert!(o.status.success(), "{}", stderr(&o));
    server.wait_status("box", "running", Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(server.status("box")["status"], "running");
    let o = server.mags_output(&["set", "box", "--sleep"]);
    assert!(o.status.success(), "{}", stderr(&o));
    server.wait_status("box", "sleeping", Duration::from_secs(60));

    // Stopping a sleeping sandbox ends it and removes its snapshot.
    let o = server.mags_output(&["stop", "box"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = server.status("box");
    assert_eq!(
        (s["status"].as_str(), s["exit_code"].as_i64()),
        (Some("completed"), Some(0))
    );
    let (code, _, err) = exec(&server, &["box", "echo"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("completed"), "{err}");
    let sandboxes = server.dir.path().join("data/sandboxes");
    let vm = s["vm_id"].as_str().expect("vm id");
    assert!(!sandboxes.join(vm).exists(), "snapshot removed");
}

/// `mags run -p` follows its script to the end even when the script runs
/// past the idle timeout: a followed script keeps its sandbox awake (it
/// used to be slept mid-script, and `mags run` waited forever for the
/// exit), and the sandbox sleeps once idle after the script.
#[test]
fn a_followed_script_keeps_its_sandbox_awake_until_it_ends() {
    let server = Server::start(&["--idle-timeout-secs", "2"]);
    let t0 = Instant::now();
    let o = server.mags_output(&["run", "-p", "-n", "slow", "sleep 7; echo finished"]);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stderr(&o), server.log());
    assert_eq!(stdout(&o), "finished\n");
    assert!(t0.elapsed() >= Duration::from_secs(7));
    let logs = stderr(&server.mags_output(&["logs", "slow"]));
    let exited = logs
        .find("script exited with code 0")
        .unwrap_or_else(|| panic!("no script exit in the logs:\n{logs}"));
    assert!(
        !logs[..exited].contains("sandbox asleep"),
        "slept under its followed script:\n{logs}"
    );

    let slept = server.wait_status("slow", "sleeping", Duration::from_secs(60));
    assert_eq!(slept["exit_code"], 0, "{slept}");
    let o = server.mags_output(&["stop", "slow"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_restarted_server_brings_its_sandboxes_back() {
    let mut server = Server::start(&[]);
    let o = server.mags_output(&["new", "keep"]);
    assert!(o.status.success(), "{}\n{}", stderr(&o), server.log());
    let (code, _, err) = exec(
        &server,
        &[
            "keep",
            "echo hi > /root/f; nohup sleep 1000 >/dev/null 2>&1 & echo $! > /root/pid",
        ],
    );
    assert_eq!(code, Some(0), "{err}");

    // SIGTERM: the sandbox sleeps; after the restart it wakes with its
    // processes and files.
    server.restart(true);
    assert_eq!(server.status("keep")["status"], "sleeping");
    let (code, out, err) = exec(
        &server,
        &["keep", "kill -0 $(cat /root/pid) && cat /root/f"],
    );
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "hi\n"),
        "{err}\n{}",
        server.log()
    );

    // A crash loses the VM: a fresh sandbox replaces it, and says so.
    let before = server.status("keep");
    server.restart(false);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = server.status("keep");
        let logs = stderr(&server.mags_output(&["logs", "keep"]));
        if s["status"] == "running"
            && logs.contains("magsd restarted and the sandbox's VM was lost")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not restarted: {s} (before: {before})\n{logs}\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // Its processes are gone, but not its files: `keep` is a workspace,
    // whose disk outlives the VM.
    let (code, out, err) = exec(
        &server,
        &["keep", "test -f /root/f && echo kept || echo fresh"],
    );
    assert_eq!((code, out.as_str()), (Some(0), "kept\n"), "{err}");

    let usage = http_json(
        &server.url,
        "GET",
        "/api/v1/mags-jobs/usage",
        &server.token,
        None,
    )
    .expect("usage");
    assert_eq!(usage.0, 200);
    assert_eq!(usage.1["total_jobs"], 1, "{}", usage.1);
    assert!(
        usage.1["vm_seconds"].as_f64().is_some_and(|s| s > 0.0),
        "{}",
        usage.1
    );
    let o = server.mags_output(&["stop", "keep"]);
    assert!(o.status.success(), "{}", stderr(&o));
}
