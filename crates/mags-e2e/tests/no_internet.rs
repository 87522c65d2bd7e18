//! Per-job egress, with real VMs: a job run with `--no-internet` cannot
//! reach a registry the server otherwise allows, while an ordinary job on
//! the same server can. The one-shot jobs take warm-pool VMs (set up under
//! a `pool-...` id before any job existed), so this also checks that the
//! job's rules reach the VM it is handed.

use mags_e2e::{stderr, stdout, Server};

const FETCH: &str = "curl -sS -o /dev/null -w '%{http_code}' https://pypi.org/simple/pip/";

#[test]
fn no_internet_job_cannot_reach_a_registry_that_a_normal_job_can() {
    let server = Server::start(&["--pool-size", "2"]);

    let o = server.mags_output(&["run", FETCH]);
    assert_eq!(
        (o.status.code(), stdout(&o).trim().to_string()),
        (Some(0), "200".to_string()),
        "a normal job reaches the registry: {}\n{}",
        stderr(&o),
        server.log()
    );

    let o = server.mags_output(&["run", "--no-internet", FETCH]);
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert_ne!(o.status.code(), Some(0), "--no-internet fetched: {out}");
    assert!(
        out.contains("403") || out.contains("CONNECT"),
        "refused by the egress proxy: {out}"
    );
    assert!(
        server.log().contains("egress denied"),
        "the proxy logged the denial"
    );

    // And the server's own policy is untouched for the next job.
    let o = server.mags_output(&["run", FETCH]);
    assert_eq!(stdout(&o).trim(), "200", "{}", stderr(&o));
}
