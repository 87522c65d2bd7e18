//! The published Python client (`magpie-mags==1.3.8`), unmodified, against
//! our server. The interpreter with it installed comes from
//! `MAGS_TEST_PYTHON` (`eval "$(scripts/test-python)"` makes one).

use mags_e2e::Server;

#[test]
fn run_and_wait_reports_completed_with_logs() {
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
    let v = server.python(script, &[]);
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

#[test]
fn the_sdk_drives_a_persistent_sandbox() {
    let server = Server::start(&[]);
    let script = r#"
import json, time
from mags import Mags
from mags.client import MagsError
m = Mags()
out = {}
t = time.perf_counter()
out["new"] = m.new("sdkbox", timeout=180, poll_interval=0.2)
out["new_s"] = time.perf_counter() - t
out["found"] = m.find_job("sdkbox")
out["exec"] = m.exec("sdkbox", "echo hi; echo oops >&2; pwd; hostname; exit 3")
times = []
for _ in range(5):
    t = time.perf_counter()
    m.exec("sdkbox", "true")
    times.append(time.perf_counter() - t)
out["exec_s"] = sorted(times)
t = time.perf_counter()
out["timeout"] = m.exec("sdkbox", "sleep 60", timeout=2)
out["timeout_s"] = time.perf_counter() - t
out["after_timeout"] = m.exec("sdkbox", "echo alive")
out["update"] = m.update_job(out["new"]["request_id"], no_sleep=True, startup_command="echo up")
out["stop"] = m.stop("sdkbox")
out["found_after"] = m.find_job("sdkbox")
try:
    m.exec("sdkbox", "echo")
    out["exec_after_stop"] = "accepted"
except MagsError as e:
    out["exec_after_stop"] = str(e)
try:
    m.exec("nosuch", "echo")
    out["exec_unknown"] = "accepted"
except MagsError as e:
    out["exec_unknown"] = str(e)
out["usage"] = m.usage()
print(json.dumps(out))
"#;
    let v = server.python(script, &[]);
    eprintln!(
        "measured: SDK new() {:.2} s; SDK exec() round trips (s, sorted, find_job included): {}",
        v["new_s"].as_f64().unwrap_or(0.0),
        v["exec_s"]
    );
    assert_eq!(v["new"]["status"], "running", "{v}");
    assert_eq!(v["found"]["status"], "running");
    assert_eq!(v["found"]["workspace_id"], "sdkbox");
    assert_eq!(
        v["exec"],
        serde_json::json!({"exit_code": 3, "output": "hi\n/root\nmags-vm\n", "stderr": "oops\n"}),
        "{v}"
    );
    assert_eq!(v["timeout"]["exit_code"], 124, "{v}");
    assert!(v["timeout_s"].as_f64().is_some_and(|s| s < 20.0), "{v}");
    assert_eq!(v["after_timeout"]["output"], "alive\n");
    assert_eq!(v["update"]["no_sleep"], true, "{v}");
    assert_eq!(v["update"]["startup_command"], "echo up");
    assert_eq!(v["stop"]["status"], "completed", "{v}");
    assert_eq!(v["found_after"]["status"], "completed");
    assert!(
        v["exec_after_stop"]
            .as_str()
            .is_some_and(|e| e.contains("completed")),
        "{v}"
    );
    assert!(
        v["exec_unknown"]
            .as_str()
            .is_some_and(|e| e.contains("No running or sleeping VM")),
        "{v}"
    );
    assert_eq!(v["usage"]["total_jobs"], 1, "{v}");
    assert!(v["usage"]["vm_seconds"].as_f64().is_some_and(|s| s > 0.0));
}

/// The published client's URL calls: `enable_access`, `url` (which
/// rewrites the host into its own cloud domain, by design of 1.3.8: our
/// server's `url` field is what our SDKs and CLI use), and the alias calls.
#[test]
fn the_published_client_gets_urls_and_manages_aliases() {
    let server = Server::start(&[]);
    let script = r#"
import json
from mags import Mags
from mags.client import MagsError
m = Mags()
out = {"new": m.new("urlbox")}
job = m.find_job("urlbox")["request_id"]
out["access"] = m.enable_access(job, port=8080)
out["url"] = m.url("urlbox", port=8080)
out["alias"] = m.url_alias_create("py-alias", "urlbox")
try:
    m.url_alias_create("py-alias", "urlbox")
    out["dup"] = None
except MagsError as e:
    out["dup"] = e.status_code
out["aliases"] = m.url_alias_list()
out["deleted"] = m.url_alias_delete("py-alias")
out["after"] = m.url_alias_list()
m.stop("urlbox")
print(json.dumps(out))
"#;
    let v = server.python(script, &[]);
    assert_eq!(v["access"]["success"], true, "{v}");
    let url = v["access"]["url"].as_str().unwrap_or_default();
    let sub = v["access"]["subdomain"].as_str().unwrap_or_default();
    assert!(
        !sub.is_empty() && url.starts_with(&format!("http://{sub}.localhost:")),
        "{v}"
    );
    assert_eq!(v["access"]["port"], 8080);
    assert_eq!(v["url"]["subdomain"], sub, "{v}");
    assert!(
        v["alias"]["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("http://py-alias.localhost:")),
        "{v}"
    );
    assert_eq!(v["dup"], 409, "{v}");
    assert_eq!(v["aliases"]["total"], 1, "{v}");
    assert_eq!(v["after"]["total"], 0, "{v}");
}
