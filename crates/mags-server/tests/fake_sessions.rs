//! The edges that need a guest itself, on the fake executor (no VMs): the
//! SSH gateway with a russh client, the terminal WebSocket, the URL proxy
//! over a real listener on 127.0.0.1, and growing a workspace's disk
//! under a running sandbox. What the fake's VMs do (their tiny script
//! language, the HTTP answer on every port, `df`) is in
//! `mags_control::executor::fake`.

use axum::http::{header, Method, StatusCode};
use futures::{SinkExt as _, StreamExt as _};
use mags_control::Limits;
use mags_server::router;
use mags_server::ssh::SshGateway;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::ChannelMsg;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;

/// Within this, every step of a test happens (the fake is instant).
const PATIENCE: Duration = Duration::from_secs(10);

mod common;

use common::{harness_with_limits, Harness};

/// The shared harness, its router also served on 127.0.0.1, and the SSH
/// gateway when asked for.
struct Server {
    h: Harness,
    /// The router, served on 127.0.0.1.
    api: SocketAddr,
    ssh: Option<SshGateway>,
    /// The gateway's data dir (its host key).
    _ssh_dir: tempfile::TempDir,
}

/// The harness's fields (`app`, `store`, `fake`, `token`) read as the
/// server's own.
impl std::ops::Deref for Server {
    type Target = Harness;

    fn deref(&self) -> &Harness {
        &self.h
    }
}

/// A server on the fake executor, its API listening on 127.0.0.1; with
/// `workspaces` (local object store in the temp dir) and/or the SSH
/// gateway on 127.0.0.1.
async fn server(workspaces: bool, ssh: bool) -> Server {
    let mut h = harness_with_limits(Limits::new(4), workspaces).await;
    let ssh_dir = tempfile::tempdir().expect("tempdir");
    let gateway = if ssh {
        let gw = SshGateway::start(
            "127.0.0.1:0",
            None,
            &ssh_dir.path().join("ssh_host_ed25519_key"),
            h.store.clone(),
            h.state.sandboxes.clone(),
            h.state.audit.clone(),
        )
        .await
        .expect("ssh gateway");
        Some(gw)
    } else {
        None
    };
    h.state.ssh = gateway.as_ref().map(|g| g.endpoint.clone());
    h.app = router(h.state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let api = listener.local_addr().expect("addr");
    let served = h
        .app
        .clone()
        .into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, served).await });
    Server {
        h,
        api,
        ssh: gateway,
        _ssh_dir: ssh_dir,
    }
}

impl Server {
    /// A running persistent sandbox of the token's user; its id.
    async fn sandbox_as(&self, token: &str, extra: Value) -> String {
        let mut body = json!({"script": "sleep infinity", "persistent": true});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let (code, v) = self
            .call_as(token, Method::POST, "/api/v1/mags-jobs", Some(body))
            .await;
        assert_eq!(code, StatusCode::ACCEPTED, "{v}");
        let id = v["request_id"].as_str().expect("id").to_string();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let path = format!("/api/v1/mags-jobs/{id}/status");
            let (_, s) = self.call_as(token, Method::GET, &path, None).await;
            if s["status"] == "running" {
                return id;
            }
            assert!(Instant::now() < deadline, "job {id} never ran: {s}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn sandbox(&self, extra: Value) -> String {
        let t = self.token.clone();
        self.sandbox_as(&t, extra).await
    }

    /// The VM id of a job (from its status).
    async fn vm_id_as(&self, token: &str, id: &str) -> String {
        let path = format!("/api/v1/mags-jobs/{id}/status");
        let (_, s) = self.call_as(token, Method::GET, &path, None).await;
        s["vm_id"].as_str().expect("vm_id").to_string()
    }

    /// `exec` of `command` in the sandbox: (exit code, stdout).
    async fn exec(&self, id: &str, command: &str) -> (i64, String) {
        let path = format!("/api/v1/mags-jobs/{id}/exec");
        let (code, v) = self
            .call_json(Method::POST, &path, Some(json!({"command": command})))
            .await;
        assert_eq!(code, StatusCode::OK, "{v}");
        let exit = v["exit_code"].as_i64().expect("exit_code");
        (exit, v["stdout"].as_str().unwrap_or_default().to_string())
    }

    /// A raw HTTP/1.1 GET to the API listener with `host` as `Host`:
    /// (status, body).
    async fn get_with_host(&self, host: &str, path: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(self.api)
            .await
            .expect("connect");
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        tokio::time::timeout(PATIENCE, s.read_to_end(&mut raw))
            .await
            .expect("an answer in time")
            .expect("read");
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("a status");
        (status, body.to_string())
    }
}

/// Accepts any host key (the test just started the gateway).
struct AnyHostKey;

impl russh::client::Handler for AnyHostKey {
    type Error = russh::Error;

    async fn check_server_key(&mut self, _: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// Connects to the gateway and authenticates with `key`: the session,
/// or `None` if the key was refused.
async fn ssh_connect(
    addr: SocketAddr,
    key: PrivateKey,
) -> Option<russh::client::Handle<AnyHostKey>> {
    let config = Arc::new(russh::client::Config::default());
    let mut session = russh::client::connect(config, addr, AnyHostKey)
        .await
        .expect("ssh connect");
    let auth = session
        .authenticate_publickey("root", PrivateKeyWithHashAlg::new(Arc::new(key), None))
        .await
        .expect("ssh auth");
    auth.success().then_some(session)
}

/// Runs `command` on a new channel, sending `stdin` (then EOF) if given:
/// (stdout, stderr, exit status).
async fn ssh_exec(
    session: &russh::client::Handle<AnyHostKey>,
    command: &str,
    stdin: Option<&[u8]>,
) -> (String, String, Option<u32>) {
    let mut channel = session.channel_open_session().await.expect("channel");
    channel.exec(true, command).await.expect("exec");
    if let Some(data) = stdin {
        channel.data(data).await.expect("data");
        channel.eof().await.expect("eof");
    }
    let (mut out, mut err, mut status) = (Vec::new(), Vec::new(), None);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, channel.wait()).await {
        match msg {
            ChannelMsg::Data { data } => out.extend_from_slice(&data),
            ChannelMsg::ExtendedData { data, .. } => err.extend_from_slice(&data),
            ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (text(out), text(err), status)
}

#[tokio::test]
async fn ssh_runs_commands_in_the_sandbox_of_its_key() {
    let s = server(false, true).await;
    let gateway = s.ssh.as_ref().expect("gateway").endpoint.addr;
    let id = s.sandbox(json!({})).await;
    let path = format!("/api/v1/mags-jobs/{id}/access");
    let (code, v) = s
        .call_json(Method::POST, &path, Some(json!({"port": 22})))
        .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(v["ssh_port"], gateway.port(), "{v}");
    let pem = v["ssh_private_key"].as_str().expect("key");
    let key = PrivateKey::from_openssh(pem.as_bytes()).expect("key");

    // A key that opens nothing is refused.
    let stranger = mags_server::ssh::keys::new_access_key("stranger").expect("key");
    let stranger = PrivateKey::from_openssh(stranger.private_openssh.as_bytes()).expect("key");
    assert!(
        ssh_connect(gateway, stranger).await.is_none(),
        "a stranger's key"
    );

    let session = ssh_connect(gateway, key)
        .await
        .expect("the sandbox's key opens it");
    // Output and exit status of `exec`, stdout and stderr apart.
    let (out, err, status) =
        ssh_exec(&session, "echo hello over ssh\necho oops >&2\nexit 7", None).await;
    assert_eq!(out, "hello over ssh\n");
    assert_eq!(err, "oops\n");
    assert_eq!(status, Some(7));
    // Stdin reaches the process; EOF ends it.
    let (out, _, status) = ssh_exec(&session, "cat\necho done", Some(b"typed in\n")).await;
    assert_eq!(out, "typed in\ndone\n");
    assert_eq!(status, Some(0));
    // Not a terminal unless asked for.
    let (_, err, status) = ssh_exec(&session, "stty size", None).await;
    assert_eq!(status, Some(1), "{err}");
}

#[tokio::test]
async fn the_terminal_websocket_types_resizes_and_exits() {
    let s = server(false, false).await;
    let id = s.sandbox(json!({})).await;
    let command = "stty size\ncat\nstty size\nexit 4";
    let url = format!(
        "ws://{}/api/v1/mags-jobs/{id}/exec/tty?rows=24&cols=80&command={}",
        s.api,
        url_encode(command)
    );
    let mut req = url.into_client_request().expect("request");
    req.headers_mut().insert(
        header::AUTHORIZATION,
        format!("Bearer {}", s.token).parse().expect("header"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrade");

    let mut shown = String::new();
    let read_until = async |ws: &mut _, shown: &mut String, want: &str| -> Option<Value> {
        let ws: &mut tokio_tungstenite::WebSocketStream<_> = ws;
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !shown.contains(want) {
            match tokio::time::timeout_at(deadline, ws.next()).await {
                Ok(Some(Ok(Message::Binary(b)))) => shown.push_str(&String::from_utf8_lossy(&b)),
                Ok(Some(Ok(Message::Text(t)))) => {
                    return Some(serde_json::from_str(&t).expect("json"));
                }
                Ok(Some(Ok(_))) => {}
                other => panic!("no {want:?} on the terminal (got {other:?}); shown {shown:?}"),
            }
        }
        None
    };
    // The size asked for at the upgrade.
    assert!(read_until(&mut ws, &mut shown, "24 80\n").await.is_none());
    // A line typed comes back.
    ws.send(Message::Binary(b"hello tty\n".to_vec().into()))
        .await
        .expect("send");
    assert!(read_until(&mut ws, &mut shown, "hello tty\n")
        .await
        .is_none());
    // A resize, then Ctrl-D ends `cat`; the new size shows, then the exit.
    let resize = json!({"type": "resize", "rows": 40, "cols": 120}).to_string();
    ws.send(Message::Text(resize.into())).await.expect("send");
    ws.send(Message::Binary(vec![0x04].into()))
        .await
        .expect("send");
    let last = read_until(&mut ws, &mut shown, "\u{0}never").await;
    assert!(shown.ends_with("40 120\n"), "{shown:?}");
    assert_eq!(last, Some(json!({"type": "exit", "exit_code": 4})));
}

/// Percent-encodes a query value.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn a_public_url_reaches_its_own_sandbox_port_only() {
    let s = server(false, false).await;
    let bob = s.user_token("bob").await;
    let alices = s.sandbox(json!({})).await;
    let bobs = s.sandbox_as(&bob, json!({})).await;
    let (alice_vm, bob_vm) = (
        s.vm_id_as(&s.token, &alices).await,
        s.vm_id_as(&bob, &bobs).await,
    );
    assert_ne!(alice_vm, bob_vm);

    let access = |token: String, id: String, port: u16| {
        let s = &s;
        async move {
            let path = format!("/api/v1/mags-jobs/{id}/access");
            s.call_as(&token, Method::POST, &path, Some(json!({"port": port})))
                .await
        }
    };
    let (code, a) = access(s.token.clone(), alices.clone(), 8080).await;
    assert_eq!(code, StatusCode::OK, "{a}");
    let (code, b) = access(bob.clone(), bobs.clone(), 3000).await;
    assert_eq!(code, StatusCode::OK, "{b}");
    // Bob cannot publish a port of Alice's sandbox.
    let (code, v) = access(bob.clone(), alices.clone(), 9000).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{v}");

    let sub = |v: &Value| v["subdomain"].as_str().expect("subdomain").to_string();
    let (a_sub, b_sub) = (sub(&a), sub(&b));
    let host = format!("{a_sub}.localhost");
    let (status, body) = s.get_with_host(&host, "/hello?x=1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        format!("fake VM {alice_vm} port 8080: GET /hello?x=1 host {host}\n")
    );
    let (status, body) = s.get_with_host(&format!("{b_sub}.localhost"), "/").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with(&format!("fake VM {bob_vm} port 3000: GET / ")),
        "{body}"
    );

    // An unknown address, and one whose sandbox ended, reach nothing.
    let (status, body) = s.get_with_host("nosuchsandbox.localhost", "/").await;
    assert_eq!(status, 404, "{body}");
    let (code, v) = s
        .call_json(
            Method::POST,
            &format!("/api/v1/mags-jobs/{alices}/stop"),
            None,
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    let (status, body) = s.get_with_host(&host, "/").await;
    assert!(!body.contains("fake VM"), "{status} {body}");
    assert!(status >= 400, "{status} {body}");
}

#[tokio::test]
async fn a_workspace_grows_under_its_running_sandbox_and_never_shrinks() {
    let s = server(true, false).await;
    let id = s
        .sandbox(json!({"workspace_id": "grow", "disk_gb": 2}))
        .await;
    let vm = s.vm_id_as(&s.token, &id).await;
    const GB: u64 = 1 << 30;
    assert_eq!(s.exec(&id, "df").await, (0, format!("{}\n", 2 * GB)));

    let resize = |gb: u32| {
        s.call_json(
            Method::POST,
            "/api/v1/mags-workspaces/grow/resize",
            Some(json!({"disk_gb": gb})),
        )
    };
    let (code, v) = resize(3).await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert!(
        v["message"].as_str().unwrap_or_default().contains("online"),
        "{v}"
    );
    // The running guest sees the new size at once.
    assert_eq!(s.exec(&id, "df").await, (0, format!("{}\n", 3 * GB)));
    assert_eq!(s.fake.disk_bytes(&vm), Some(3 * GB));

    let (code, v) = resize(1).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{v}");
    assert!(v.to_string().contains("shrinking"), "{v}");
    assert_eq!(s.fake.disk_bytes(&vm), Some(3 * GB), "untouched");
}
