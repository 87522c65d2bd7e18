//! The published Python client (`magpie-mags==1.3.8`), unmodified, against
//! our server. The interpreter with it installed comes from
//! `MAGS_TEST_PYTHON` (`eval "$(scripts/test-python)"` makes one).

use mags_e2e::Server;
use std::process::Command;

fn python() -> String {
    match std::env::var("MAGS_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => p,
        _ => panic!(
            "MAGS_TEST_PYTHON is not set: run `eval \"$(scripts/test-python)\"` to install \
             magpie-mags==1.3.8 in a virtualenv first"
        ),
    }
}

#[test]
fn run_and_wait_reports_completed_with_logs() {
    let py = python();
    let server = Server::start(&[]);
    let script = r#"
import json
from mags import Mags
m = Mags()
r = m.run_and_wait("echo hi", timeout=300, poll_interval=0.2)
bad = m.run_and_wait("echo nope >&2; exit 7", timeout=300, poll_interval=0.2)
jobs = m.list_jobs()
print(json.dumps({"ok": r, "bad": bad, "jobs": jobs}))
"#;
    let o = Command::new(py)
        .args(["-c", script])
        .env("MAGS_API_URL", &server.url)
        .env("MAGS_API_TOKEN", &server.token)
        .output()
        .expect("python");
    assert!(
        o.status.success(),
        "python failed: {}\nserver log:\n{}",
        String::from_utf8_lossy(&o.stderr),
        server.log()
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["ok"]["status"], "completed", "{v}");
    assert_eq!(v["ok"]["exit_code"], 0);
    let logs = v["ok"]["logs"].as_array().expect("logs");
    assert!(logs.iter().any(|l| l["message"] == "hi"), "{v}");
    assert!(logs.iter().all(|l| l["message"].is_string()));

    assert_eq!(v["bad"]["status"], "error", "{v}");
    assert_eq!(v["bad"]["exit_code"], 7);
    let bad_logs = v["bad"]["logs"].as_array().expect("logs");
    assert!(
        bad_logs
            .iter()
            .any(|l| l["message"] == "nope" && l["source"] == "stderr"),
        "{v}"
    );

    assert_eq!(v["jobs"]["total"], 2, "{v}");
    assert_eq!(
        v["jobs"]["jobs"][0]["request_id"], v["bad"]["request_id"],
        "newest first"
    );
}
