//! Cron through the real server: the `mags cron` CLI, the published Python
//! client's `cron_*` calls, and an every-minute schedule whose run boots a
//! real VM (so this test waits for the next minute boundary, up to 60 s).

use mags_e2e::{stderr, stdout, Server};
use std::time::{Duration, Instant};

#[test]
fn cli_schedules_runs_that_are_ordinary_jobs() {
    let server = Server::start(&[]);
    let bad = server.mags_output(&[
        "cron",
        "add",
        "--name",
        "x",
        "--schedule",
        "61 * * * *",
        "true",
    ]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("minute"), "{}", stderr(&bad));

    let add = server.mags_output(&[
        "cron",
        "add",
        "--name",
        "tick",
        "--schedule",
        "* * * * *",
        "--env",
        "WHO=cron",
        "echo ran-by-$WHO",
    ]);
    assert!(add.status.success(), "{}", stderr(&add));
    assert!(stdout(&add).contains("next run"), "{}", stdout(&add));

    // The run starts at the next minute boundary and is a normal job.
    let deadline = Instant::now() + Duration::from_secs(150);
    let job = loop {
        let list = server.mags_output(&["cron", "list", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&list.stdout).expect("json");
        let c = &v["cron_jobs"][0];
        if c["last_status"] == "completed" {
            break c["last_job_id"].as_str().expect("job id").to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no completed run: {v}\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let logs = server.mags_output(&["logs", &job]);
    assert!(stdout(&logs).contains("ran-by-cron"), "{}", stdout(&logs));
    let list = server.mags_output(&["list"]);
    assert!(stdout(&list).contains(&job[..8]), "{}", stdout(&list));

    let off = server.mags_output(&["cron", "disable", "tick"]);
    assert!(
        off.status.success() && stdout(&off).contains("disabled"),
        "{}",
        stderr(&off)
    );
    let table = server.mags_output(&["cron", "list"]);
    assert!(stdout(&table).contains("tick"), "{}", stdout(&table));
    let rm = server.mags_output(&["cron", "remove", "tick"]);
    assert!(rm.status.success(), "{}", stderr(&rm));
    let gone = server.mags_output(&["cron", "remove", "tick"]);
    assert!(!gone.status.success() && stderr(&gone).contains("not found"));
}

#[test]
fn the_python_client_manages_cron_jobs() {
    let server = Server::start(&[]);
    let script = r#"
import json
from mags import Mags
from mags.client import MagsError
m = Mags()
c = m.cron_create(name="nightly", cron_expression="0 3 * * *", script="echo hi",
                  workspace_id="cron-ws", persistent=True, environment={"A": "1"})
listed = m.cron_list()
got = m.cron_get(c["id"])
upd = m.cron_update(c["id"], enabled=False)
try:
    m.cron_create(name="bad", cron_expression="every day", script="x")
    bad = None
except MagsError as e:
    bad = {"status": e.status_code, "msg": str(e)}
deleted = m.cron_delete(c["id"])
print(json.dumps({"c": c, "listed": listed, "got": got, "upd": upd, "bad": bad,
                  "deleted": deleted, "after": m.cron_list()}))
"#;
    let v = server.python(script, &[]);
    assert_eq!(v["c"]["name"], "nightly", "{v}");
    assert_eq!(v["c"]["workspace_id"], "cron-ws");
    assert_eq!(v["c"]["environment"]["A"], "1");
    assert_eq!(v["listed"]["total"], 1);
    assert_eq!(v["got"]["id"], v["c"]["id"]);
    assert_eq!(v["upd"]["enabled"], false);
    assert!(v["upd"]["next_run_at"].is_null());
    assert_eq!(v["bad"]["status"], 400, "{v}");
    assert_eq!(v["deleted"]["success"], true);
    assert_eq!(v["after"]["total"], 0);
}
