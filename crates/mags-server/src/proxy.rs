//! The URL proxy: a request whose Host is `<subdomain>.<apps domain>` goes
//! to a port in a sandbox, through the guest agent's tunnel
//! ([`mags_control::executor::Vm::open_tunnel`]), never through the guest network.
//!
//! The subdomain is a job's access record or a URL alias (which follows
//! the live job of its workspace, see [`mags_store::Route`]). The proxy is
//! public (no token: the URL is the capability), so the job is resolved
//! first and then reached as its owner through [`Sandboxes::connect`],
//! which wakes a sleeping sandbox and keeps it awake while the request (or
//! WebSocket) lasts; the request counts as activity for the idle timer.
//!
//! A subdomain whose access record has a secret (a browser session's CDP
//! endpoint, see [`mags_control::browser`]) is not public: see [`authorize`].
//!
//! Each request gets its own tunnel and HTTP/1.1 connection to the guest,
//! with bodies streamed both ways; `101 Switching Protocols` (WebSockets)
//! turns into a byte pipe between the two upgraded connections.
//!
//! [`Sandboxes::connect`]: mags_control::sandboxes::Sandboxes::connect

use crate::error::ApiError;
use crate::AppState;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use mags_control::browser;
use mags_control::sandboxes::SandboxError;
use mags_store::Route;
use std::sync::Arc;

pub use mags_control::apps::Apps;

/// The request's host: the `Host` header, or the authority of an
/// absolute-form URI (HTTP/2 and proxies send that).
fn request_host(req: &Request) -> Option<String> {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
}

/// Middleware in front of the API: requests for the apps domain are proxied.
pub async fn dispatch(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let host = request_host(&req);
    match host.as_deref().and_then(|h| state.apps.subdomain(h)) {
        Some(sub) => {
            let sub = sub.to_ascii_lowercase();
            proxy(&state, &sub, req).await
        }
        None => next.run(req).await,
    }
}

/// The whole of a listener that serves only the proxy (`--apps-listen`).
pub async fn only(State(state): State<AppState>, req: Request) -> Response {
    let host = request_host(&req);
    match host.as_deref().and_then(|h| state.apps.subdomain(h)) {
        Some(sub) => {
            let sub = sub.to_ascii_lowercase();
            proxy(&state, &sub, req).await
        }
        None => error(
            StatusCode::NOT_FOUND,
            format!("this address serves <name>.{} only", state.apps.domain),
        ),
    }
}

/// A plain-text error page (a browser shows it; the API's JSON shape is
/// for API clients).
fn error(status: StatusCode, msg: String) -> Response {
    let mut resp = (status, format!("mags: {msg}\n")).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

async fn proxy(state: &AppState, sub: &str, req: Request) -> Response {
    match try_proxy(state, sub, req).await {
        Ok(resp) => resp,
        Err((status, msg)) => error(status, msg),
    }
}

type Failure = (StatusCode, String);

async fn try_proxy(state: &AppState, sub: &str, mut req: Request) -> Result<Response, Failure> {
    let internal = |e: mags_store::StoreError| {
        let e = ApiError::from(e);
        tracing::error!(error = %e, "URL proxy lookup failed");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error".to_string(),
        )
    };
    let route = state.store.route(sub).await.map_err(internal)?;
    let (job_id, user_id, port, secret) = match route {
        None => {
            return Err((
                StatusCode::NOT_FOUND,
                format!("no sandbox has the address {sub}.{}", state.apps.domain),
            ))
        }
        Some(Route::NoLiveJob { workspace_id }) => {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no sandbox is running in workspace {workspace_id}; run it again"),
            ))
        }
        Some(Route::Job {
            job_id,
            user_id,
            port,
            secret,
        }) => (job_id, user_id, port, secret),
    };
    // A protected endpoint (a browser session's CDP): the path must start
    // with its secret, or the request must carry the owner's token.
    let cdp_path = match &secret {
        Some(secret) => {
            let path = req
                .uri()
                .path_and_query()
                .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
            let token = crate::auth::bearer(req.headers()).map(str::to_string);
            Some(authorize(state, &path, token.as_deref(), secret, &user_id).await?)
        }
        None => None,
    };
    // Another host runs it: the request goes there as it is (signed; the
    // owner's proxy checks again). Not a relayed request: it came here signed.
    if req.extensions().get::<crate::relay::Relayed>().is_none() {
        if let Some(job) = state.store.job(&job_id).await.map_err(internal)? {
            match crate::relay::owner_url(state, &job).await {
                Ok(Some(url)) => {
                    return crate::relay::forward_public(state, &url, req)
                        .await
                        .map_err(|e| {
                            (StatusCode::BAD_GATEWAY, format!("the sandbox's host: {e}"))
                        });
                }
                Ok(None) => {}
                Err(why) => return Err((StatusCode::SERVICE_UNAVAILABLE, why)),
            }
        }
    }
    let conn = state
        .sandboxes
        .connect(&user_id, &job_id)
        .await
        .map_err(|e| match e {
            SandboxError::NotFound(_) | SandboxError::NotLive { .. } => (
                StatusCode::NOT_FOUND,
                format!("the sandbox behind {sub} has ended"),
            ),
            SandboxError::Starting { .. } | SandboxError::Busy(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            other => (StatusCode::BAD_GATEWAY, other.to_string()),
        })?;
    let tunnel = conn.vm.open_tunnel(port).await.map_err(|e| {
        (
            StatusCode::BAD_GATEWAY,
            format!("nothing answers on port {port} in the sandbox: {e}"),
        )
    })?;
    // Held until the response (or the upgraded connection) is done.
    let busy = Arc::new(conn.busy);

    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(tunnel))
            .await
            .map_err(|e| (StatusCode::BAD_GATEWAY, format!("port {port}: {e}")))?;
    {
        let busy = busy.clone();
        tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
            drop(busy);
        });
    }

    let client_upgrade = hyper::upgrade::on(&mut req);
    let path = match &cdp_path {
        Some(p) => p.clone(),
        None => req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into()),
    };
    let host = match &cdp_path {
        // Chromium serves DevTools only to an IP or `localhost` Host.
        Some(_) => browser::guest_host(),
        None => request_host(&req).unwrap_or_default(),
    };
    *req.uri_mut() = path
        .parse()
        .map_err(|_| (StatusCode::BAD_REQUEST, "bad request path".to_string()))?;
    *req.version_mut() = axum::http::Version::HTTP_11;
    let h = req.headers_mut();
    if cdp_path.is_some() {
        // The owner's token is for the proxy, never for the guest.
        h.remove(header::AUTHORIZATION);
    }
    if let Ok(v) = HeaderValue::from_str(&host) {
        h.insert(header::HOST, v.clone());
        h.insert("x-forwarded-host", v);
    }
    h.insert(
        "x-forwarded-proto",
        HeaderValue::from_str(&state.apps.scheme).unwrap_or(HeaderValue::from_static("http")),
    );

    let mut resp = sender
        .send_request(req)
        .await
        .map_err(|e| (StatusCode::BAD_GATEWAY, format!("port {port}: {e}")))?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let server_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            let (Ok(client), Ok(server)) = tokio::join!(client_upgrade, server_upgrade) else {
                return;
            };
            splice(TokioIo::new(client), TokioIo::new(server)).await;
            drop(busy);
        });
        return Ok(resp.map(Body::new));
    }
    match (&secret, cdp_path) {
        (Some(secret), Some(p)) if p.starts_with("/json") => {
            Ok(rewrite_cdp_json(state, sub, secret, resp.map(Body::new)).await)
        }
        _ => Ok(resp.map(Body::new)),
    }
}

/// Whether a request may use a protected endpoint of `owner`: its path starts
/// with `/<secret>` (returns the rest), or it carries the owner's token
/// (returns the path unchanged). Otherwise a 401.
async fn authorize(
    state: &AppState,
    path: &str,
    token: Option<&str>,
    secret: &str,
    owner: &str,
) -> Result<String, Failure> {
    if let Some(first) = path.trim_start_matches('/').split(['/', '?']).next() {
        if browser::secret_eq(first, secret) {
            if let Some(rest) = browser::strip_secret(path, first) {
                return Ok(rest);
            }
        }
    }
    if let Some(token) = token {
        if let Ok(Some(auth)) = state.store.authenticate(token).await {
            if auth.user.id == owner {
                return Ok(path.to_string());
            }
        }
    }
    Err((
        StatusCode::UNAUTHORIZED,
        "this browser session needs its secret URL (from `mags browser`) \
         or its owner's token"
            .into(),
    ))
}

/// Points the browser's `/json/*` answers at the public, secret URL.
async fn rewrite_cdp_json(
    state: &AppState,
    sub: &str,
    secret: &str,
    resp: Response<Body>,
) -> Response {
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 4 << 20).await else {
        return error(
            StatusCode::BAD_GATEWAY,
            "the browser's answer was cut off or too large".into(),
        );
    };
    let text = String::from_utf8_lossy(&bytes);
    let out = browser::rewrite_json(&text, &state.apps, sub, secret);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::TRANSFER_ENCODING);
    Response::from_parts(parts, Body::from(out))
}

/// How long an upgraded connection may go on one way after the other
/// way ended (WebSocket peers rarely half-close on purpose; a server that
/// keeps its socket open must not keep the sandbox awake forever).
const HALF_CLOSED_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Copies both ways between two upgraded connections; see [`HALF_CLOSED_GRACE`].
async fn splice<A, B>(a: A, b: B)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite,
{
    use tokio::io::AsyncWriteExt as _;
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let up = async {
        let _ = tokio::io::copy(&mut ar, &mut bw).await;
        let _ = bw.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut br, &mut aw).await;
        let _ = aw.shutdown().await;
    };
    tokio::pin!(up, down);
    tokio::select! {
        _ = &mut up => { let _ = tokio::time::timeout(HALF_CLOSED_GRACE, down).await; }
        _ = &mut down => { let _ = tokio::time::timeout(HALF_CLOSED_GRACE, up).await; }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_urls() {
        let apps = Apps {
            port: Some(7070),
            ..Apps::default()
        };
        assert_eq!(apps.subdomain("abc.localhost:7070"), Some("abc"));
        assert_eq!(apps.subdomain("abc.LOCALHOST"), Some("abc"));
        assert_eq!(apps.subdomain("localhost:7070"), None);
        assert_eq!(apps.subdomain("a.b.localhost"), None);
        assert_eq!(apps.subdomain("abclocalhost"), None);
        assert_eq!(apps.subdomain("127.0.0.1:7070"), None);
        assert_eq!(apps.url("abc"), "http://abc.localhost:7070");
        let tls = Apps {
            domain: "apps.example.com".into(),
            scheme: "https".into(),
            port: Some(443),
        };
        assert_eq!(tls.url("x"), "https://x.apps.example.com");
        assert_eq!(tls.subdomain("x.apps.example.com"), Some("x"));
    }
}
