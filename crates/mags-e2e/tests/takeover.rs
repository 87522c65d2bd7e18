//! Workspace takeover on real VMs with the real CLI: `mags run -w W -p`
//! on a live W replaces its sandbox (files saved, job `completed` with a
//! line naming its successor) instead of a 409, in a row and racing, with
//! one live job at the end and nothing written before a takeover lost.

use mags_e2e::{output_within, stderr, stdout, Server};
use std::time::{Duration, Instant};

/// Jobs of workspace `ws` in `mags list --json`.
fn jobs_of(server: &Server, ws: &str) -> Vec<serde_json::Value> {
    let out = server.run_ok(&["list", "--json", "--page-size", "100"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    v["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter(|j| j["workspace_id"] == ws)
        .cloned()
        .collect()
}

fn id_of(j: &serde_json::Value) -> String {
    j["request_id"].as_str().expect("id").to_string()
}

/// The one live job of `ws`; every other one `completed`, its log naming
/// the job that replaced it.
fn check_history(server: &Server, ws: &str, expected_jobs: usize) -> String {
    let jobs = jobs_of(server, ws);
    assert_eq!(jobs.len(), expected_jobs, "{jobs:?}");
    let live: Vec<&serde_json::Value> = jobs
        .iter()
        .filter(|j| matches!(j["status"].as_str(), Some("running" | "sleeping")))
        .collect();
    assert_eq!(live.len(), 1, "exactly one live job: {jobs:?}");
    for j in jobs
        .iter()
        .filter(|j| j["request_id"] != live[0]["request_id"])
    {
        assert_eq!(j["status"], "completed", "{j}");
        let o = server.mags_output(&["logs", &id_of(j)]);
        assert!(
            stderr(&o).contains("replaced by job"),
            "{j}: {}",
            stderr(&o)
        );
    }
    id_of(live[0])
}

#[test]
fn takeovers_keep_every_file_and_one_live_job() {
    let server = Server::start(&[]);
    let ws = "tk";
    // A persistent sandbox: a file written and synced, a background process.
    server.run_ok(&[
        "run",
        "-w",
        ws,
        "-p",
        "echo synced > /root/synced; nohup sleep 1000 >/dev/null 2>&1 & echo started",
    ]);
    server.run_ok(&["sync", ws]);

    let check = "cat /root/synced /root/late; pgrep -x sleep >/dev/null && echo old-process";
    // Three takeovers in a row, each after a file written since the last sync.
    for n in 1..=3 {
        server.run_ok(&["exec", ws, &format!("echo late{n} > /root/late")]);
        let t0 = Instant::now();
        let out = server.run_ok(&[
            "run",
            "-w",
            ws,
            "-p",
            &format!("{check}; echo run{n} >> /root/runs"),
        ]);
        eprintln!("takeover {n}: {:?}", t0.elapsed());
        assert_eq!(out, format!("synced\nlate{n}\n"), "takeover {n}");
        check_history(&server, ws, n + 1);
    }

    // Two at once: both run (one after the other) and see both files.
    server.run_ok(&["exec", ws, "echo late-race > /root/late"]);
    let racer = |n: usize| {
        let mut c = server.mags();
        c.args([
            "run",
            "-w",
            ws,
            "-p",
            &format!("{check}; echo race{n} >> /root/runs"),
        ]);
        std::thread::spawn(move || output_within(&mut c, Duration::from_secs(600)))
    };
    let (a, b) = (racer(1), racer(2));
    for o in [a.join().expect("racer"), b.join().expect("racer")] {
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(stdout(&o), "synced\nlate-race\n");
    }
    let live = check_history(&server, ws, 6);
    let out = server.run_ok(&["exec", &live, "sort /root/runs"]);
    assert_eq!(out, "race1\nrace2\nrun1\nrun2\nrun3\n", "every job ran");

    // Measured: a takeover of a live workspace vs a fresh start.
    let t0 = Instant::now();
    server.run_ok(&["run", "-w", ws, "-p", "true"]);
    let takeover = t0.elapsed();
    let t0 = Instant::now();
    server.run_ok(&["run", "-w", "tk-fresh", "-p", "true"]);
    let fresh = t0.elapsed();
    eprintln!("mags run -w W -p true: takeover of a live W {takeover:?}, fresh W {fresh:?}");

    // A local workspace (no -p): the disk is kept across the takeover.
    server.run_ok(&["new", "tk-local"]);
    server.run_ok(&["exec", "tk-local", "echo kept > /root/f"]);
    let out = server.run_ok(&["run", "-w", "tk-local", "cat /root/f"]);
    assert_eq!(out, "kept\n");
    let jobs = jobs_of(&server, "tk-local");
    assert!(jobs.iter().all(|j| j["status"] == "completed"), "{jobs:?}");
}
