//! The egress proxy: an HTTP proxy on a Unix socket per host that every
//! guest's traffic goes through, deciding each destination by the
//! sandbox's policy (see the module above).

use super::{Denied, EgressPolicy, SandboxEgress};
use crate::layout::Layout;
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpStream, UnixListener, UnixStream};

/// How long resolving plus connecting to a destination may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

type Body = BoxBody<Bytes, hyper::Error>;

/// Where the server's public URLs are served, for sandboxes that open them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppsRoute {
    /// The apps domain (`localhost` by default); `<one label>.<domain>` matches.
    pub domain: String,
    /// The port in public URLs.
    pub port: u16,
    /// Where the URL proxy listens on this host.
    pub target: SocketAddr,
    /// The listener also serves the API (told apart by Host): then only
    /// plain-HTTP requests are routed, with their Host forced to the
    /// public name, so a sandbox cannot reach the API through a CONNECT
    /// tunnel with a Host of its choosing.
    pub shared_with_api: bool,
}

impl AppsRoute {
    fn matches(&self, host: &str, port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        port == self.port
            && host
                .strip_suffix(&self.domain)
                .and_then(|h| h.strip_suffix('.'))
                .is_some_and(|sub| !sub.is_empty() && !sub.contains('.'))
    }
}

/// A running egress proxy; stops when dropped.
pub struct EgressProxy {
    socket: PathBuf,
    task: tokio::task::JoinHandle<()>,
    apps: Arc<std::sync::OnceLock<AppsRoute>>,
}

impl Drop for EgressProxy {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl EgressProxy {
    /// Listens on `socket` (replacing a stale one). Call within tokio.
    /// Per-sandbox rules are looked up in the sandboxes' dirs of
    /// `sandboxes` (the runtime's layout), if given.
    pub fn start(
        socket: &Path,
        policy: EgressPolicy,
        sandboxes: Option<Layout>,
    ) -> std::io::Result<EgressProxy> {
        let _ = std::fs::remove_file(socket);
        if let Some(dir) = socket.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let listener = UnixListener::bind(socket)?;
        let apps = Arc::new(std::sync::OnceLock::new());
        let policies = Arc::new(Policies {
            server: Arc::new(policy),
            sandboxes,
            apps: apps.clone(),
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                tokio::spawn(serve(conn, policies.clone()));
            }
        });
        Ok(EgressProxy {
            socket: socket.to_path_buf(),
            task,
            apps,
        })
    }

    /// Routes the server's public URLs to its URL proxy (set once, when
    /// the server knows where it listens).
    pub fn set_apps_route(&self, route: AppsRoute) {
        let _ = self.apps.set(route);
    }

    /// The unix socket guests' connections arrive on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

/// The server's policy and where per-sandbox rules live.
struct Policies {
    server: Arc<EgressPolicy>,
    sandboxes: Option<Layout>,
    apps: Arc<std::sync::OnceLock<AppsRoute>>,
}

/// What one sandbox's connection may do.
struct Effective {
    policy: Arc<EgressPolicy>,
    apps: Option<AppsRoute>,
}

impl Policies {
    /// Whether the peer of `conn` may claim to be `sandbox`: a jailed QEMU
    /// (and its helper) runs as the uid that owns its sandbox dir, so one
    /// sandbox cannot borrow another's rules. Processes of the server's own
    /// user (an unconfined runtime) are trusted.
    fn may_speak_for(&self, conn: &UnixStream, sandbox: &str) -> bool {
        use std::os::unix::fs::MetadataExt as _;
        let Ok(peer) = conn.peer_cred() else {
            return false;
        };
        // SAFETY: geteuid has no preconditions.
        if peer.uid() == unsafe { libc::geteuid() } || self.sandboxes.is_none() {
            // Without per-sandbox rules, who it is changes nothing.
            return true;
        }
        let owner = self
            .sandboxes
            .as_ref()
            .and_then(|layout| layout.sandbox_checked(sandbox))
            .and_then(|dir| std::fs::metadata(dir.path()).ok())
            .map(|m| m.uid());
        owner == Some(peer.uid())
    }

    /// The policy for `sandbox`: the server's, narrowed by its own rules.
    fn for_sandbox(&self, sandbox: &str) -> Effective {
        let own = self
            .sandboxes
            .as_ref()
            .and_then(|layout| SandboxEgress::load(layout, sandbox));
        let apps = self.apps.get().cloned();
        match own {
            Some(own) => Effective {
                policy: Arc::new(own.narrow(&self.server)),
                apps: apps.filter(|_| !own.no_internet),
            },
            None => Effective {
                policy: self.server.clone(),
                apps,
            },
        }
    }
}

/// Reads the sandbox id line, then serves HTTP proxy requests.
async fn serve(mut conn: UnixStream, policies: Arc<Policies>) {
    let mut id = Vec::new();
    loop {
        let mut b = [0u8; 1];
        match conn.read(&mut b).await {
            Ok(1) if b[0] == b'\n' => break,
            Ok(1) if id.len() < 128 => id.push(b[0]),
            _ => return,
        }
    }
    let sandbox: Arc<str> = String::from_utf8_lossy(&id).into();
    if !policies.may_speak_for(&conn, &sandbox) {
        tracing::warn!(sandbox = %sandbox, "egress connection from a process that is not that sandbox's QEMU; refused");
        return;
    }
    // Read once per connection: a job's rules are in place before its
    // script runs, and a proxy connection does not outlive its sandbox.
    let effective = Arc::new(policies.for_sandbox(&sandbox));
    let service = hyper::service::service_fn(move |req| {
        let (effective, sandbox) = (effective.clone(), sandbox.clone());
        async move { Ok::<_, std::convert::Infallible>(handle(req, &effective, &sandbox).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(conn), service)
        .with_upgrades()
        .await;
}

fn text(status: StatusCode, msg: String) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(Bytes::from(format!("{msg}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    effective: &Effective,
    sandbox: &str,
) -> Response<Body> {
    let policy = &effective.policy;
    let target = if req.method() == Method::CONNECT {
        req.uri()
            .authority()
            .map(|a| (a.host().to_string(), a.port_u16().unwrap_or(443)))
    } else {
        req.uri()
            .host()
            .map(|h| (h.to_string(), req.uri().port_u16().unwrap_or(80)))
    };
    let Some((host, port)) = target else {
        return text(
            StatusCode::BAD_REQUEST,
            "mags egress proxy: send CONNECT host:port or an absolute http:// URL".into(),
        );
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let apps = effective.apps.as_ref().filter(|a| a.matches(&host, port));
    if apps.is_some_and(|a| a.shared_with_api) && req.method() == Method::CONNECT {
        return text(
            StatusCode::FORBIDDEN,
            "mags egress policy: this server's public URLs are reachable over plain HTTP only"
                .into(),
        );
    }
    let apps = apps.map(|a| a.target);
    let dialed = async {
        match apps {
            // The server's own URL proxy, which does its own routing.
            Some(target) => TcpStream::connect(target).await.map_err(DialError::Failed),
            None => dial(policy, &host, port).await,
        }
    };
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, dialed).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(DialError::Denied(d))) => {
            tracing::info!(sandbox, dest = %d.dest, port, "egress denied: {}", d.why);
            return text(StatusCode::FORBIDDEN, format!("mags egress policy: {d}"));
        }
        Ok(Err(DialError::Failed(e))) => {
            return text(
                StatusCode::BAD_GATEWAY,
                format!("cannot reach {host}:{port}: {e}"),
            )
        }
        Err(_) => {
            return text(
                StatusCode::GATEWAY_TIMEOUT,
                format!("timed out connecting to {host}:{port}"),
            )
        }
    };
    tracing::debug!(sandbox, %host, port, "egress allowed");
    if req.method() == Method::CONNECT {
        tokio::spawn(async move {
            if let Ok(up) = hyper::upgrade::on(req).await {
                let mut up = TokioIo::new(up);
                let mut tcp = tcp;
                let _ = tokio::io::copy_bidirectional(&mut up, &mut tcp).await;
            }
        });
        return Response::new(
            Full::new(Bytes::new())
                .map_err(|never| match never {})
                .boxed(),
        );
    }
    forward(req, tcp, &host, port, apps.is_some()).await
}

/// A plain-HTTP request in absolute form, sent on to the origin in origin form.
/// With `force_host`, the Host header is the one the request was routed by.
async fn forward(
    mut req: Request<hyper::body::Incoming>,
    tcp: TcpStream,
    host: &str,
    port: u16,
    force_host: bool,
) -> Response<Body> {
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await {
        Ok(x) => x,
        Err(e) => return text(StatusCode::BAD_GATEWAY, format!("{host}:{port}: {e}")),
    };
    tokio::spawn(conn);
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    *req.uri_mut() = match path.parse() {
        Ok(u) => u,
        Err(_) => return text(StatusCode::BAD_REQUEST, "bad request path".into()),
    };
    let h = req.headers_mut();
    for name in ["proxy-connection", "proxy-authorization", "keep-alive"] {
        h.remove(name);
    }
    if force_host || !h.contains_key(hyper::header::HOST) {
        let value = if port == 80 {
            host.to_string()
        } else {
            format!("{host}:{port}")
        };
        if let Ok(v) = value.parse() {
            h.insert(hyper::header::HOST, v);
        }
    }
    match sender.send_request(req).await {
        Ok(resp) => resp.map(|b| b.boxed()),
        Err(e) => text(StatusCode::BAD_GATEWAY, format!("{host}:{port}: {e}")),
    }
}

enum DialError {
    Denied(Denied),
    Failed(std::io::Error),
}

/// Resolves `host`, keeps the addresses the policy allows (IPv4 first) and
/// connects to the first that answers.
async fn dial(policy: &EgressPolicy, host: &str, port: u16) -> Result<TcpStream, DialError> {
    policy.check_host(host).map_err(DialError::Denied)?;
    let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(DialError::Failed)?
        .collect();
    addrs.sort_by_key(|a| a.is_ipv6());
    let mut denied = None;
    let mut last_err = None;
    for addr in addrs {
        if let Err(d) = policy.check(host, addr.ip()) {
            denied.get_or_insert(d);
            continue;
        }
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last_err = Some(e),
        }
    }
    match (last_err, denied) {
        (Some(e), _) => Err(DialError::Failed(e)),
        (None, Some(d)) => Err(DialError::Denied(d)),
        (None, None) => Err(DialError::Failed(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no address found",
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apps_route_matches_one_label_under_the_domain_on_its_port() {
        let r = AppsRoute {
            domain: "localhost".into(),
            port: 7070,
            target: SocketAddr::from(([127, 0, 0, 1], 7070)),
            shared_with_api: true,
        };
        assert!(r.matches("abc.localhost", 7070));
        assert!(r.matches("ABC.LocalHost", 7070));
        assert!(!r.matches("abc.localhost", 80));
        assert!(!r.matches("localhost", 7070));
        assert!(!r.matches("a.b.localhost", 7070));
        assert!(!r.matches("abclocalhost", 7070));
        assert!(!r.matches("abc.localhost.evil.com", 7070));
    }
}
