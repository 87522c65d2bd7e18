//! Networking end to end, with real VMs: public URLs through the URL proxy
//! (HTTP with a real client, a streamed download, WebSockets, waking a
//! sleeping sandbox), URL aliases that follow a workspace, and the guest's
//! way out: the egress policy from inside a guest.

use futures::{SinkExt, StreamExt};
use mags_e2e::{http_json, stderr, stdout, Server};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A WebSocket echo server for the guest (its python has no websockets
/// library): handshake, then text/binary frames echoed, close answered.
const WS_ECHO: &str = r#"
import socket, threading, hashlib, base64, struct
G = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
def handle(c):
    data = b""
    while b"\r\n\r\n" not in data:
        d = c.recv(4096)
        if not d: return
        data += d
    key = [l.split(b":", 1)[1].strip() for l in data.split(b"\r\n") if l.lower().startswith(b"sec-websocket-key:")][0]
    acc = base64.b64encode(hashlib.sha1(key + G).digest())
    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + acc + b"\r\n\r\n")
    f = c.makefile("rb")
    while True:
        h = f.read(2)
        if len(h) < 2: return
        op, n = h[0] & 15, h[1] & 127
        if n == 126: n = struct.unpack(">H", f.read(2))[0]
        elif n == 127: n = struct.unpack(">Q", f.read(8))[0]
        mask = f.read(4) if h[1] & 128 else b"\0\0\0\0"
        p = bytes(b ^ mask[i % 4] for i, b in enumerate(f.read(n)))
        if op == 8:
            c.sendall(b"\x88\x00"); return
        if op in (1, 2):
            k = len(p)
            ln = bytes([k]) if k < 126 else (bytes([126]) + struct.pack(">H", k) if k < 65536 else bytes([127]) + struct.pack(">Q", k))
            c.sendall(bytes([0x80 | op]) + ln + p)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 8765)); s.listen()
while True:
    c, _ = s.accept(); threading.Thread(target=handle, args=(c,), daemon=True).start()
"#;

/// `mags exec NAME CMD`, which must succeed; its stdout.
fn exec_ok(server: &Server, name: &str, cmd: &str) -> String {
    let o = server.mags_output(&["exec", name, cmd]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{cmd}: {}\n{}",
        stderr(&o),
        stdout(&o)
    );
    stdout(&o)
}

/// A client that resolves every name to the server's address (the URLs
/// are `<sub>.localhost:<port>`; no DNS is involved, as in a browser).
fn client() -> reqwest::Client {
    mags_e2e::loopback_client()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client")
}

/// GETs `url` until it answers 200 (the guest server may still be starting).
async fn get_ok(c: &reqwest::Client, url: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last = match c.get(url).send().await {
            Ok(r) if r.status() == 200 => return r.text().await.expect("body"),
            Ok(r) => format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => e.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "{url} never answered 200: {last}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The URL `mags` printed on stderr after `URL (port P): `.
fn printed_url(err: &str) -> String {
    let (_, rest) = err.split_once("URL (port ").expect("a URL was printed");
    let (_, rest) = rest.split_once("): ").expect("URL line");
    rest.split_whitespace().next().expect("url").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_proxy_serves_http_websockets_and_wakes_a_sleeping_sandbox() {
    let server = Server::start(&["--idle-timeout-secs", "4"]);
    let script = format!(
        "cd /root && echo hello-from-the-sandbox > index.txt && \
         head -c 20000000 /dev/urandom > big.bin && sha256sum big.bin | cut -c1-64 > big.sha && \
         cat > ws.py <<'EOF'\n{WS_ECHO}\nEOF\n\
         (setsid python3 -m http.server 8080 >/dev/null 2>&1 &); \
         (setsid python3 ws.py >/dev/null 2>&1 &); echo started"
    );
    let o = server.mags_output(&["run", "-p", "-n", "web", "--url", "--port", "8080", &script]);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stderr(&o), server.log());
    let url = printed_url(&stderr(&o));
    assert!(
        url.starts_with("http://") && url.contains(".localhost:"),
        "{url}"
    );
    let st = server.status("web");
    assert_eq!(st["url"], url.as_str(), "status carries the url");

    // HTTP with a real client, by Host header.
    let c = client();
    assert_eq!(
        get_ok(&c, &format!("{url}/index.txt")).await,
        "hello-from-the-sandbox\n"
    );
    // A 20 MB download streams through intact.
    let t0 = Instant::now();
    let big = c
        .get(format!("{url}/big.bin"))
        .send()
        .await
        .expect("get big");
    assert_eq!(big.status(), 200);
    let bytes = big.bytes().await.expect("big body");
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "20 MB through the URL proxy in {secs:.2} s ({:.1} MB/s)",
        20.0 / secs
    );
    let want = get_ok(&c, &format!("{url}/big.sha")).await;
    let got = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    assert_eq!((bytes.len(), got.as_str()), (20_000_000, want.trim()));

    // Unknown subdomain: 404; the API on the same port is untouched.
    let base = url.rsplit_once("://").map(|(_, h)| h).expect("host");
    let port = base.rsplit_once(':').map(|(_, p)| p).expect("port");
    let r = c
        .get(format!("http://nosuchbox.localhost:{port}/"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
    assert!(r.text().await.expect("body").contains("no sandbox"));
    assert_eq!(
        http_json(&server.url, "GET", "/api/v1/whoami", &server.token, None).map(|r| r.0),
        Some(200)
    );

    // WebSockets: `mags url web 8765`, then an echo round trip.
    let o = server.mags_output(&["url", "web", "8765"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let ws_url = stdout(&o).trim().replace("http://", "ws://");
    let host = ws_url.trim_start_matches("ws://").to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ws = loop {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().expect("port")))
            .await
            .expect("connect");
        let handshake = tokio_tungstenite::client_async(format!("{ws_url}/echo"), tcp);
        match tokio::time::timeout(Duration::from_secs(120), handshake)
            .await
            .expect("the WebSocket handshake answers within 120 s")
        {
            Ok((ws, resp)) => {
                assert_eq!(resp.status(), 101);
                break ws;
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "no WebSocket at {host}: {e}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    };
    for msg in ["ping through the tunnel", &"x".repeat(100_000)] {
        ws.send(tokio_tungstenite::tungstenite::Message::text(msg))
            .await
            .expect("send");
        let back = tokio::time::timeout(Duration::from_secs(120), ws.next())
            .await
            .expect("the echo arrives within 120 s")
            .expect("a frame")
            .expect("frame ok");
        assert_eq!(back.into_text().expect("text").as_str(), msg);
    }
    ws.close(None).await.expect("close");
    drop(ws);

    // Idle, it sleeps; a URL request wakes it and gets its answer.
    server.wait_status("web", "sleeping", Duration::from_secs(90));
    let t0 = Instant::now();
    let r = c.get(format!("{url}/index.txt")).send().await.expect("get");
    assert_eq!(r.status(), 200, "{}", server.log());
    assert_eq!(r.text().await.expect("body"), "hello-from-the-sandbox\n");
    eprintln!(
        "request to a sleeping sandbox answered in {:?}",
        t0.elapsed()
    );
    assert_eq!(server.status("web")["status"], "running");

    // Port 22 is the SSH gateway's: host, port and a key (tests/ssh.rs
    // goes further).
    let id = st["request_id"].as_str().expect("id");
    let (code, body) = http_json(
        &server.url,
        "POST",
        &format!("/api/v1/mags-jobs/{id}/access"),
        &server.token,
        Some(&serde_json::json!({"port": 22})),
    )
    .expect("access 22");
    assert_eq!((code, &body["success"]), (200, &serde_json::json!(true)));
    assert!(body["ssh_port"].as_u64().is_some_and(|p| p > 0), "{body}");
    assert!(body["ssh_private_key"]
        .as_str()
        .is_some_and(|k| k.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----")));
    let o = server.mags_output(&["stop", "web"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = c.get(format!("{url}/index.txt")).send().await.expect("get");
    assert_eq!(r.status(), 404, "a stopped sandbox's URL is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alias_follows_its_workspace_across_stop_and_rerun() {
    let server = Server::start(&[]);
    let c = client();
    let serve = |text: &str| {
        format!(
            "cd /root && echo {text} > index.html && \
             (setsid python3 -m http.server 8080 >/dev/null 2>&1 &); echo ok"
        )
    };
    let o = server.mags_output(&["new", "site", "--url", "--port", "8080"]);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stderr(&o), server.log());
    exec_ok(&server, "site", &serve("first"));
    let o = server.mags_output(&["url", "alias", "mysite", "site"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let alias_url = stdout(&o).trim().to_string();
    assert!(
        alias_url.starts_with("http://mysite.localhost:"),
        "{alias_url}"
    );
    assert_eq!(get_ok(&c, &alias_url).await, "first\n");

    // A second alias with the same subdomain: 409.
    let (code, body) = http_json(
        &server.url,
        "POST",
        "/api/v1/mags-url-aliases",
        &server.token,
        Some(&serde_json::json!({"subdomain": "mysite", "workspace_id": "other", "domain": "x"})),
    )
    .expect("create alias");
    assert_eq!(code, 409, "{body}");
    assert!(body["error"].as_str().expect("error").contains("already"));
    let o = server.mags_output(&["url", "alias", "list"]);
    assert!(stdout(&o).contains("mysite"), "{}", stdout(&o));

    // Stopped: nothing behind the alias (503); run again: the new job.
    let o = server.mags_output(&["stop", "site"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = c.get(&alias_url).send().await.expect("get");
    assert_eq!(r.status(), 503);
    let o = server.mags_output(&["new", "site"]);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stderr(&o), server.log());
    exec_ok(&server, "site", &serve("second"));
    assert_eq!(get_ok(&c, &alias_url).await, "second\n");

    let o = server.mags_output(&["url", "alias", "remove", "mysite"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = c.get(&alias_url).send().await.expect("get");
    assert_eq!(r.status(), 404);
}

/// A host server counting the connections it accepts.
fn host_server(ip: &str) -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind((ip, 0)).expect("bind");
    let port = l.local_addr().expect("addr").port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            h.fetch_add(1, Ordering::SeqCst);
            use std::io::Write as _;
            let mut s = s;
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\nHOST-SECRET\n");
        }
    });
    (port, hits)
}

/// The host's first non-loopback IPv4 address.
fn lan_ip() -> String {
    let o = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .expect("hostname -I");
    stdout(&o)
        .split_whitespace()
        .find(|a| a.contains('.') && !a.starts_with("127."))
        .expect("a LAN address")
        .to_string()
}

#[test]
fn the_guest_reaches_registries_and_nothing_of_the_host() {
    let server = Server::start(&[]);
    let lan = lan_ip();
    let (lo_port, lo_hits) = host_server("127.0.0.1");
    let (lan_port, lan_hits) = host_server(&lan);
    let api_port = server
        .url
        .rsplit_once(':')
        .map(|(_, p)| p.to_string())
        .expect("port");
    let o = server.mags_output(&["new", "box"]);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stderr(&o), server.log());

    // Outbound to registries works, over HTTPS (CONNECT) and plain HTTP.
    let out = exec_ok(
        &server,
        "box",
        "curl -sS -o /dev/null -w '%{http_code} ' https://pypi.org/simple/pip/; \
         curl -sS -o /dev/null -w '%{http_code}' http://deb.debian.org/debian/dists/bookworm/Release",
    );
    assert_eq!(out, "200 200");

    // Denied through the proxy: loopback, the host's LAN address, the API,
    // metadata, private ranges. Each attempt is a 403 from the policy.
    // (`--noproxy ''`: even loopback goes to the proxy, as a program that
    // ignores no_proxy would send it.)
    for target in [
        format!("http://127.0.0.1:{lo_port}/"),
        format!("http://{lan}:{lan_port}/"),
        format!("http://127.0.0.1:{api_port}/health"),
        format!("http://localhost:{api_port}/health"),
        "http://169.254.169.254/latest/meta-data/".into(),
        "http://10.0.0.1/".into(),
        format!("http://10.0.2.2:{lo_port}/"),
        "http://10.0.2.15:8080/".into(),
    ] {
        let out = exec_ok(
            &server,
            "box",
            &format!("curl -sS -m 10 --noproxy '' -w ' %{{http_code}}' {target} 2>&1 || true"),
        );
        assert!(out.ends_with(" 403"), "{target}: {out}");
        assert!(
            out.contains("not reachable from a sandbox"),
            "{target}: {out}"
        );
    }
    // And around the proxy: the user-mode network is restricted.
    for target in [
        format!("http://10.0.2.2:{lo_port}/"),
        format!("http://{lan}:{lan_port}/"),
        "http://10.0.2.3:53/".into(),
        "https://151.101.0.223/".into(),
    ] {
        let o = server.mags_output(&[
            "exec",
            "box",
            &format!("curl -sS -m 5 --noproxy '*' {target}"),
        ]);
        assert_ne!(
            o.status.code(),
            Some(0),
            "{target} reachable directly: {}",
            stdout(&o)
        );
        assert!(!stdout(&o).contains("HOST-SECRET"));
    }
    assert_eq!(
        lo_hits.load(Ordering::SeqCst),
        0,
        "host loopback was reached"
    );
    assert_eq!(
        lan_hits.load(Ordering::SeqCst),
        0,
        "host LAN address was reached"
    );

    // Another sandbox: its server is reachable neither directly nor
    // through its public URL from inside a guest.
    let o = server.mags_output(&["new", "other", "--url", "--port", "8080"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let other_url = printed_url(&stderr(&o));
    exec_ok(
        &server,
        "other",
        "cd /root && echo OTHER-SECRET > index.html && (setsid python3 -m http.server 8080 >/dev/null 2>&1 &)",
    );
    for cmd in [
        format!("curl -sS -m 10 {other_url}/ 2>&1 || true"),
        "curl -sS -m 5 --noproxy '*' http://10.0.2.15:8080/ 2>&1 || true".to_string(),
    ] {
        let out = exec_ok(&server, "box", &cmd);
        assert!(!out.contains("OTHER-SECRET"), "{cmd}: {out}");
    }
}
