//! The guest's network (DESIGN.md §1: user-mode, policy on the host).
//!
//! Every VM gets one virtio-net NIC on its own QEMU user-mode network
//! (libslirp) started with `restrict=on`: the guest can reach nothing
//! through it (not the host, not 10.0.2.2, not the internet, not another
//! sandbox, which has a separate stack anyway) except one forwarded
//! address, [`PROXY_IP`]:[`PROXY_PORT`]. A connection there makes QEMU
//! run [`egress_cmd`] (`mags-agent --egress-pipe`), which joins it to the
//! host's egress proxy ([`crate::egress`]), where the policy decides.
//! Inside, the agent sets a static address ([`setup`]) and points
//! `http_proxy`/`https_proxy` (and apt) at the proxy.
//!
//! The NIC is the same for every VM (template, clone, wake), so any
//! snapshot restores into any VM; clones share the template's MAC, which
//! is harmless because each one is alone on its own user-mode network.

use mags_proto::NetworkSpec;
use std::path::Path;

/// The guest's address on its user-mode network.
pub const GUEST_ADDRESS: &str = "10.0.2.15/24";
/// Where the guest finds the egress proxy.
pub const PROXY_IP: &str = "10.0.2.100";
/// The egress proxy's port, as the guest sees it.
pub const PROXY_PORT: u16 = 3128;

/// QEMU arguments for the NIC and its restricted user-mode network.
pub fn qemu_args(egress_cmd: &str) -> Vec<String> {
    vec![
        "-netdev".into(),
        format!(
            "user,id=net0,restrict=on,ipv6=off,net=10.0.2.0/24,\
             guestfwd=tcp:{PROXY_IP}:{PROXY_PORT}-cmd:{}",
            // QEMU's option syntax escapes a comma by doubling it.
            egress_cmd.replace(',', ",,")
        ),
        "-device".into(),
        "virtio-net-device,netdev=net0".into(),
    ]
}

/// The command QEMU runs per guest connection to the proxy address
/// (split by libslirp with shell quoting rules, not run by a shell).
/// Without an egress proxy the connection is refused at once.
pub fn egress_cmd(agent_bin: &Path, socket: Option<&Path>, sandbox_id: &str) -> String {
    match socket {
        Some(sock) if agent_bin.is_file() => format!(
            "{} --egress-pipe {} {}",
            quote(&agent_bin.display().to_string()),
            quote(&sock.display().to_string()),
            quote(sandbox_id)
        ),
        _ => "/bin/false".into(),
    }
}

/// What the agent is told at `Setup`; no proxy means no outbound access.
pub fn setup(internet: bool) -> NetworkSpec {
    NetworkSpec {
        address: GUEST_ADDRESS.into(),
        gateway: None,
        proxy: internet.then(|| format!("http://{PROXY_IP}:{PROXY_PORT}")),
        ca_certs: String::new(),
    }
}

/// The CA certificates this host's administrator added
/// (`/usr/local/share/ca-certificates/**/*.crt`, Debian's place for local
/// CAs), as one PEM text: guests go out through this host, so they meet
/// the same TLS-inspecting proxies and need the same extra trust.
pub fn local_ca_certs() -> String {
    let mut pem = String::new();
    let mut dirs = vec![std::path::PathBuf::from("/usr/local/share/ca-certificates")];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|e| e == "crt") {
                if let Ok(text) = std::fs::read_to_string(&p) {
                    if text.contains("BEGIN CERTIFICATE") {
                        pem.push_str(text.trim());
                        pem.push('\n');
                    }
                }
            }
        }
    }
    pem
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nic_is_restricted_and_forwards_only_the_proxy() {
        let a = qemu_args("/x/agent --egress-pipe '/a,b.sock' id").join(" ");
        assert!(a.contains("restrict=on"));
        assert!(a.contains("guestfwd=tcp:10.0.2.100:3128-cmd:/x/agent"));
        assert!(a.contains("'/a,,b.sock'"));
        assert_eq!(
            egress_cmd(Path::new("/nonexistent"), Some(Path::new("/s")), "x"),
            "/bin/false"
        );
        assert_eq!(setup(false).proxy, None);
        assert_eq!(setup(true).proxy.as_deref(), Some("http://10.0.2.100:3128"));
    }
}
