//! Real VMs: tunnels into the guest and the guest's way out (the egress
//! proxy and its policy), without the server.

mod common;

use mags_proto::RunSpec;
use mags_vm::egress::{EgressPolicy, EgressProxy};
use mags_vm::{RuntimeConfig, SandboxOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `script` under `bash -c`, killed after a minute.
fn sh(script: &str) -> RunSpec {
    RunSpec {
        timeout_ms: Some(60_000),
        ..common::sh(script)
    }
}

/// Runs `script` in the guest: its exit code and its stdout then stderr.
async fn run(sb: &mags_vm::Sandbox, script: &str) -> (i32, String) {
    let (code, out, err) = common::run(sb, sh(script)).await;
    let mut s = String::from_utf8_lossy(&out).to_string();
    s.push_str(&String::from_utf8_lossy(&err));
    (code, s)
}

#[tokio::test]
async fn tunnel_and_egress() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sock = tmp.path().join("egress.sock");
    // As `magsd serve` does: an operator's MAGS_EGRESS_ALLOW (e.g. a local
    // registry mirror in a range the policy denies) opens what it names.
    let allow = std::env::var("MAGS_EGRESS_ALLOW")
        .unwrap_or_default()
        .split(',')
        .filter(|r| !r.trim().is_empty())
        .map(|r| {
            r.parse()
                .unwrap_or_else(|e| panic!("MAGS_EGRESS_ALLOW: {e}"))
        })
        .collect();
    let policy = EgressPolicy {
        allow,
        ..EgressPolicy::for_this_host()
    };
    let _proxy = EgressProxy::start(&sock, policy, None).expect("proxy");
    let rt = common::ready(RuntimeConfig {
        egress_socket: Some(sock.clone()),
        extra_ca_certs: mags_vm::net::local_ca_certs(),
        ..common::config(tmp.path())
    })
    .await;
    let sb = rt
        .start(SandboxOptions::new(uuid::Uuid::new_v4().to_string()))
        .await
        .expect("sandbox starts");

    // A server in the guest, reached through a tunnel.
    let (code, out) = run(
        &sb,
        "cd /tmp && echo hello-tunnel > index.txt && (setsid python3 -m http.server 8080 >/dev/null 2>&1 &) ; \
         for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null && exit 0; sleep 0.1; done; exit 1",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let mut t = sb.agent().open_tunnel(8080).await.expect("tunnel");
    t.write_all(b"GET /index.txt HTTP/1.0\r\n\r\n")
        .await
        .expect("write");
    let mut resp = Vec::new();
    t.read_to_end(&mut resp).await.expect("read");
    let resp = String::from_utf8_lossy(&resp);
    assert!(resp.starts_with("HTTP/1.0 200"), "{resp}");
    assert!(resp.ends_with("hello-tunnel\n"), "{resp}");
    let err = sb
        .agent()
        .open_tunnel(8081)
        .await
        .err()
        .expect("nothing on 8081");
    assert!(err.to_string().contains("8081"), "{err}");

    // Out through the proxy to a registry.
    let (code, out) = run(
        &sb,
        "curl -sS -o /dev/null -w '%{http_code}' https://pypi.org/simple/pip/",
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "200"));
    // Not to the host, via the gateway, loopback or its own address.
    let (code, out) = run(&sb, "curl -sS -m 5 http://10.0.2.2:22/ ; echo; curl -sS -m 5 http://127.0.0.1:1/; echo; env -u http_proxy curl -sS -m 5 --noproxy '*' http://10.0.2.2:22/").await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("not reachable from a sandbox"), "{out}");

    // Sleep with an egress connection open (user-mode network state goes
    // into the snapshot), then wake: the VM comes back and goes out again.
    let (code, out) = run(
        &sb,
        "(setsid curl -sS --limit-rate 2k -o /tmp/slow https://pypi.org/simple/ >/dev/null 2>&1 &);          for i in $(seq 100); do test -s /tmp/slow && echo downloading && exit 0; sleep 0.2; done; exit 1",
    )
    .await;
    assert_eq!((code, out.trim()), (0, "downloading"));
    let rec = sb.sleep().await.expect("sleep with a connection open");
    let sb = rt
        .wake(&rec)
        .await
        .expect("wake with a connection in the snapshot");
    let (code, out) = run(
        &sb,
        "curl -sS -o /dev/null -w '%{http_code}' https://pypi.org/simple/pip/",
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "200"));
}
