//! The egress proxy's address policy, for real, in two network namespaces
//! this test builds (and deletes): no VM, the proxy is the component under
//! test, reached on its unix socket exactly as a guest's connection
//! arrives (sandbox id line, then HTTP `CONNECT` or an absolute-URL `GET`).
//!
//! ```text
//!  netns "host" (the proxy runs here)        netns "net"
//!  h0 81.2.3.2/24, 2a01:4f8:1::2/64  <-veth->  n0 81.2.3.1/24 (gateway), 2a01:4f8:1::1/64
//!  default via 81.2.3.1 / 2a01:4f8:1::1         + one address in each denied range,
//!                                               + 1.1.1.1, 2606:4700::1111 (public)
//!                                               listener on [::]:8080 (dual stack)
//! ```
//!
//! Every destination is first reached directly from the host namespace
//! (so a refusal is the policy's, not the network's), then through the
//! proxy: the host's subnet and every special range are refused with a
//! 403, the public addresses answer. Needs root and `ip` (iproute2); it
//! fails, never skips, without them. Traffic stays inside the two
//! namespaces.

use mags_vm::egress::{EgressPolicy, EgressProxy, SandboxEgress};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PORT: u16 = 8080;
const STEP: Duration = Duration::from_secs(10);

/// Reached directly, refused through the proxy.
const DENIED: &[&str] = &[
    "81.2.3.1",         // the host's gateway
    "81.2.3.77",        // a neighbour on the host's /24
    "2a01:4f8:1::1",    // the IPv6 gateway
    "2a01:4f8:1::77",   // a neighbour on the host's /64
    "192.0.2.10",       // TEST-NET-1
    "198.51.100.10",    // TEST-NET-2
    "203.0.113.10",     // TEST-NET-3
    "192.88.99.10",     // 6to4 relay anycast
    "10.0.0.5",         // private
    "::ffff:10.0.0.5",  // IPv4-mapped private
    "::10.0.0.5",       // IPv4-compatible private
    "64:ff9b::a00:5",   // NAT64 of 10.0.0.5
    "64:ff9b:1::a00:5", // local-use NAT64
    "2002:a00:5::1",    // 6to4 of 10.0.0.5
    "2001:0:a00:5::1",  // Teredo, server 10.0.0.5
    "fec0::10",         // site-local
    "2001:db8::10",     // documentation
    "100::10",          // discard-only
];

/// Public ranges (hosted here in the namespace), reachable through the proxy.
const ALLOWED: &[&str] = &["1.1.1.1", "2606:4700::1111", "64:ff9b::101:101"];

/// The two namespaces; deleted on drop (which removes the veth pair).
struct Netns {
    host: String,
    net: String,
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in [&self.host, &self.net] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn ip_cmd(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip {}`: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn require_root_and_ip() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test builds network namespaces and needs root (run it as root, \
         e.g. `sudo -E cargo test -p mags-vm --test egress_netns`)"
    );
    let ok = Command::new("ip")
        .arg("-V")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "this test needs `ip` from iproute2 on PATH (apt-get install iproute2)"
    );
}

fn build() -> Netns {
    require_root_and_ip();
    let pid = std::process::id();
    let ns = Netns {
        host: format!("mags-egress-h{pid}"),
        net: format!("mags-egress-n{pid}"),
    };
    let (h, n) = (ns.host.as_str(), ns.net.as_str());
    for name in [h, n] {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        ip_cmd(&["netns", "add", name]);
    }
    ip_cmd(&[
        "-n", h, "link", "add", "h0", "type", "veth", "peer", "name", "n0", "netns", n,
    ]);
    for (name, dev) in [(h, "h0"), (n, "n0")] {
        ip_cmd(&["-n", name, "link", "set", "lo", "up"]);
        ip_cmd(&["-n", name, "link", "set", dev, "up"]);
    }
    ip_cmd(&["-n", h, "addr", "add", "81.2.3.2/24", "dev", "h0"]);
    ip_cmd(&[
        "-n",
        h,
        "addr",
        "add",
        "2a01:4f8:1::2/64",
        "dev",
        "h0",
        "nodad",
    ]);
    ip_cmd(&["-n", h, "route", "add", "default", "via", "81.2.3.1"]);
    ip_cmd(&[
        "-n",
        h,
        "-6",
        "route",
        "add",
        "default",
        "via",
        "2a01:4f8:1::1",
    ]);
    ip_cmd(&["-n", n, "addr", "add", "81.2.3.1/24", "dev", "n0"]);
    ip_cmd(&[
        "-n",
        n,
        "addr",
        "add",
        "2a01:4f8:1::1/64",
        "dev",
        "n0",
        "nodad",
    ]);
    for a in DENIED.iter().chain(ALLOWED).skip(1) {
        let addr: IpAddr = a.parse().expect("address");
        if addr == "2a01:4f8:1::1".parse::<IpAddr>().expect("ip") {
            continue;
        }
        let addr = match addr {
            // The IPv4-mapped one is 10.0.0.5 itself, which is on the list.
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => continue,
            IpAddr::V4(v4) => format!("{v4}/32"),
            IpAddr::V6(v6) => format!("{v6}/128"),
        };
        let mut args = vec!["-n", n, "addr", "add", addr.as_str(), "dev", "n0"];
        if addr.contains(':') {
            args.push("nodad");
        }
        ip_cmd(&args);
    }
    ns
}

/// Runs `f` on a new thread inside network namespace `name`, with its own
/// single-threaded tokio runtime (every socket it makes is in `name`).
fn in_netns<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = PathBuf::from(format!("/run/netns/{name}"));
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd as _;
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // SAFETY: setns on a valid namespace fd moves only this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Answers every request with `hello from <the address it was reached at>`.
async fn listen(stop: tokio::sync::oneshot::Receiver<()>, ready: std::sync::mpsc::Sender<()>) {
    let l = tokio::net::TcpListener::bind(("::", PORT))
        .await
        .expect("listen on [::]:8080");
    let _ = ready.send(());
    let serve = async {
        loop {
            let Ok((mut c, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let local = c.local_addr().map(|a| a.ip().to_canonical());
                let mut buf = Vec::new();
                let mut b = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
                    match tokio::time::timeout(STEP, c.read(&mut b)).await {
                        Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&b[..n]),
                        _ => return,
                    }
                }
                let body = format!("hello from {}", local.map_or("?".into(), |a| a.to_string()));
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = c.write_all(resp.as_bytes()).await;
                let _ = c.shutdown().await;
            });
        }
    };
    tokio::select! {
        _ = serve => {}
        _ = stop => {}
    }
}

/// Reads one HTTP response: status and body (by Content-Length, or to
/// EOF). A 200 to a `CONNECT` has no body: the tunnel starts after it.
async fn read_response<R: AsyncReadExt + Unpin>(r: &mut R, to_connect: bool) -> (u16, String) {
    let mut buf = Vec::new();
    let mut b = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = r.read(&mut b).await.expect("read response");
        assert!(n > 0, "connection closed before a response: {buf:?}");
        buf.extend_from_slice(&b[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    let mut body = buf[head_end..].to_vec();
    if to_connect && status == 200 {
        return (status, String::from_utf8_lossy(&body).to_string());
    }
    let len = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())
            .flatten()
    });
    match len {
        Some(len) => {
            while body.len() < len {
                let n = r.read(&mut b).await.expect("read body");
                assert!(n > 0, "body cut short");
                body.extend_from_slice(&b[..n]);
            }
        }
        None => {
            let _ = r.read_to_end(&mut body).await;
        }
    }
    (status, String::from_utf8_lossy(&body).to_string())
}

fn authority(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{PORT}"),
        IpAddr::V6(v6) => format!("[{v6}]:{PORT}"),
    }
}

/// One request through the proxy: `CONNECT` (then a GET in the tunnel) or
/// an absolute-URL GET. Returns the status the client sees and the body.
async fn via_proxy(sock: &Path, sandbox: &str, connect: bool, ip: IpAddr) -> (u16, String) {
    let mut s = tokio::net::UnixStream::connect(sock)
        .await
        .expect("proxy socket");
    s.write_all(format!("{sandbox}\n").as_bytes())
        .await
        .expect("id");
    let auth = authority(ip);
    if connect {
        let req = format!("CONNECT {auth} HTTP/1.1\r\nHost: {auth}\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("connect");
        let (status, body) = read_response(&mut s, true).await;
        if status != 200 {
            return (status, body);
        }
        let get = "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        s.write_all(get.as_bytes()).await.expect("get in tunnel");
        read_response(&mut s, false).await
    } else {
        let req =
            format!("GET http://{auth}/ HTTP/1.1\r\nHost: {auth}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("get");
        read_response(&mut s, false).await
    }
}

async fn direct(ip: IpAddr) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(SocketAddr::new(ip, PORT))
        .await
        .unwrap_or_else(|e| panic!("{ip} is not reachable directly from the host namespace: {e}"));
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    read_response(&mut s, false).await
}

async fn step<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer in {STEP:?}"))
}

fn hello(ip: IpAddr) -> String {
    format!("hello from {}", ip.to_canonical())
}

/// Everything the host namespace checks; returns the failures.
async fn check_all(dir: &Path) -> Vec<String> {
    let mut failures = Vec::new();
    let sock = dir.join("egress.sock");
    let _proxy = EgressProxy::start(&sock, EgressPolicy::for_this_host(), None).expect("proxy");
    // An operator's --egress-allow opens the range it names, nothing else.
    let allow_sock = dir.join("allow.sock");
    let opened = EgressPolicy {
        allow: vec!["198.51.100.0/24".parse().expect("rule")],
        ..EgressPolicy::for_this_host()
    };
    let _allow_proxy = EgressProxy::start(&allow_sock, opened, None).expect("proxy");
    // A job's own list only narrows: listing a denied range reopens nothing.
    let sandboxes = mags_vm::Layout::new(dir);
    let job1 = sandboxes.sandbox("job1");
    std::fs::create_dir_all(job1.path()).expect("sandbox dir");
    SandboxEgress {
        allow: vec!["192.0.2.0/24".into(), "1.1.1.1/32".into()],
        ..SandboxEgress::default()
    }
    .write(&job1)
    .expect("egress.json");
    let job_sock = dir.join("job.sock");
    let _job_proxy = EgressProxy::start(&job_sock, EgressPolicy::for_this_host(), Some(sandboxes))
        .expect("proxy");

    for a in DENIED.iter().chain(ALLOWED) {
        let ip: IpAddr = a.parse().expect("ip");
        let (status, body) = step(&format!("direct {a}"), direct(ip)).await;
        if status != 200 || !body.contains(&hello(ip)) {
            failures.push(format!(
                "{a}: not reachable directly ({status} {body:?}), so the test proves nothing"
            ));
        }
    }
    for a in DENIED {
        let ip: IpAddr = a.parse().expect("ip");
        for connect in [true, false] {
            let how = if connect { "CONNECT" } else { "GET" };
            let (status, body) =
                step(&format!("{how} {a}"), via_proxy(&sock, "sb", connect, ip)).await;
            if status != 403 || !body.contains("mags egress policy") {
                failures.push(format!(
                    "{how} {a}: expected a 403 from the policy, got {status} {body:?}"
                ));
            }
        }
    }
    for a in ALLOWED {
        let ip: IpAddr = a.parse().expect("ip");
        for connect in [true, false] {
            let how = if connect { "CONNECT" } else { "GET" };
            let (status, body) =
                step(&format!("{how} {a}"), via_proxy(&sock, "sb", connect, ip)).await;
            if status != 200 || !body.contains(&hello(ip)) {
                failures.push(format!(
                    "{how} {a}: expected 200 and its listener, got {status} {body:?}"
                ));
            }
        }
    }
    let checks: [(&Path, &str, &str, u16); 5] = [
        (&allow_sock, "sb", "198.51.100.10", 200),
        (&allow_sock, "sb", "203.0.113.10", 403),
        (&job_sock, "job1", "192.0.2.10", 403),
        (&job_sock, "job1", "1.1.1.1", 200),
        (&job_sock, "job1", "2606:4700::1111", 403),
    ];
    for (sock, sandbox, a, want) in checks {
        let ip: IpAddr = a.parse().expect("ip");
        let (status, body) = step(
            &format!("{sandbox} {a}"),
            via_proxy(sock, sandbox, true, ip),
        )
        .await;
        if status != want {
            failures.push(format!(
                "{} {a}: expected {want}, got {status} {body:?}",
                sock.display()
            ));
        }
    }
    failures
}

#[test]
fn the_proxy_refuses_the_hosts_subnets_and_special_ranges_in_a_real_network() {
    let ns = build();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let listener = in_netns(&ns.net, move || {
        runtime().block_on(listen(stop_rx, ready_tx))
    });
    ready_rx
        .recv_timeout(STEP)
        .expect("the listener in the network namespace did not start");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    let checker = in_netns(&ns.host, move || runtime().block_on(check_all(&path)));
    let failures = checker.join();
    let _ = stop_tx.send(());
    let _ = listener.join();
    drop(ns);
    match failures {
        Ok(f) => assert!(f.is_empty(), "{} failures:\n{}", f.len(), f.join("\n")),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
