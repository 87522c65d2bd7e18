//! The `rootfs_type`s the published client documents, on real VMs:
//! `claude` has Claude Code, `pi` the pi coding agent (each with the Node
//! it needs, installed from the npm registry when the image is built, on
//! first use if not before), and an unknown one is a 400 naming the valid
//! ones, with nothing created.

use mags_e2e::{stderr, Server};

#[test]
fn claude_and_pi_images_have_their_agents() {
    let server = Server::start(&[]);
    let out = server.run_ok(&["run", "--rootfs", "claude", "claude --version"]);
    assert!(out.contains("Claude Code"), "{out}");
    // pi prints its version on stderr.
    let out = server.run_ok(&[
        "run",
        "--rootfs",
        "pi",
        "pi --version 2>&1 && node --version",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["0.73.1", "v22.23.5"], "{out}");
    // The standard image keeps Debian's Node.
    let out = server.run_ok(&["run", "node --version; command -v claude pi || echo none"]);
    assert!(out.starts_with("v18.") && out.ends_with("none\n"), "{out}");

    let o = server.mags_output(&["run", "--rootfs", "gentoo", "true"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o)
            .contains("unknown rootfs_type \"gentoo\": use one of standard, browser, claude, pi"),
        "{}",
        stderr(&o)
    );
    let list = server.run_ok(&["list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&list).expect("json");
    assert_eq!(v["total"], 3, "nothing created for the refused job: {v}");
}
