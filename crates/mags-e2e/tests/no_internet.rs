//! Per-job egress, with real VMs: a job run with `--no-internet` cannot
//! reach a registry the server otherwise allows, while an ordinary job on
//! the same server can. The one-shot jobs take warm-pool VMs (set up under
//! a `pool-...` id before any job existed), so this also checks that the
//! job's rules reach the VM it is handed. Public URLs of the server are
//! reachable from a sandbox (as from anywhere), through the URL proxy only.

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

#[test]
fn a_jobs_allow_and_deny_lists_narrow_what_it_reaches() {
    let server = Server::start(&["--pool-size", "1"]);
    let fetch = |url: &str| format!("curl -sS -o /dev/null -w '%{{http_code}}' {url}; echo");
    let both = format!(
        "{}; {}",
        fetch("https://pypi.org/simple/pip/"),
        fetch("http://deb.debian.org/debian/dists/bookworm/Release")
    );
    // Only deb.debian.org: pypi is refused, Debian's mirror answers.
    let o = server.mags_output(&["run", "--egress-allow", "deb.debian.org", &both]);
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}\n{}", stderr(&o));
    assert_ne!(lines[0], "200", "pypi is not in the allow list: {out}");
    assert_eq!(lines[1], "200", "{out}\n{}", stderr(&o));

    // Deny pypi.org (and its subdomains): the mirror still answers.
    let o = server.mags_output(&["run", "--egress-deny", "pypi.org", &both]);
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}\n{}", stderr(&o));
    assert_ne!(lines[0], "200", "pypi is denied: {out}");
    assert_eq!(lines[1], "200", "{out}\n{}", stderr(&o));

    // Listing a private range does not open it: the server's denials hold.
    let o = server.mags_output(&[
        "run",
        "--egress-allow",
        "10.0.0.0/8",
        "curl -sS -m 5 -o /dev/null -w '%{http_code}' http://10.0.0.1/; echo",
    ]);
    assert_ne!(stdout(&o).trim(), "200", "{}", stderr(&o));

    // A malformed entry is refused before anything runs.
    let o = server.mags_output(&["run", "--egress-allow", "not a host!", "echo ran"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(!stdout(&o).contains("ran"));
    assert!(stderr(&o).contains("egress_allow"), "{}", stderr(&o));
}

#[test]
fn sandboxes_open_public_urls_through_the_url_proxy_but_never_the_api() {
    let server = Server::start(&[]);
    let port = server.url.rsplit_once(':').map(|(_, p)| p).expect("port");
    // Plain HTTP to a public URL goes to the URL proxy (which knows no
    // such sandbox: its 404 page), never to the API sharing the port.
    // (`--noproxy ''`: the guest's no_proxy has `localhost`, which curl
    // also applies to `*.localhost`.)
    let get = format!(
        "curl -s --noproxy '' -w ' %{{http_code}}' http://nosuchbox.localhost:{port}/health"
    );
    let o = server.mags_output(&["run", &get]);
    let out = stdout(&o);
    assert!(
        out.contains("no sandbox has the address") && out.trim_end().ends_with("404"),
        "{out}\n{}",
        stderr(&o)
    );
    // A CONNECT tunnel (where the guest would choose the Host) is refused.
    let tunnel = format!(
        "curl -s --noproxy '' -p -o /dev/null -w '%{{http_code}}' http://nosuchbox.localhost:{port}/health"
    );
    let o = server.mags_output(&["run", &tunnel]);
    assert_ne!(
        o.status.code(),
        Some(0),
        "CONNECT to the API's port: {}",
        stdout(&o)
    );
    // A --no-internet job does not get public URLs either.
    let o = server.mags_output(&["run", "--no-internet", &get]);
    assert!(stdout(&o).contains("403"), "{}\n{}", stdout(&o), stderr(&o));
}
