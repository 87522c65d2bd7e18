//! Requests for a sandbox that another host of the cluster runs, relayed
//! to that host, so that any host answers anything.
//!
//! A request for `/api/v1/mags-jobs/{id}` or under it (exec, its stream,
//! the terminal WebSocket, output, stop, sync, access, settings) is
//! authenticated and checked here first, as every request is: the caller's
//! own job, live, owned by another host that is not lost. It then goes,
//! as it came (the caller's token included, bodies streamed both ways,
//! WebSocket upgrades spliced), to that host's internal listener
//! (`--internal-listen`), which takes only requests signed with the
//! cluster secret ([`SIGNATURE_HEADER`]: host, time and an HMAC-SHA256 of
//! both with the method and path) and never relays further. The owner
//! authenticates the token and checks ownership again.

use crate::AppState;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use std::time::Duration;

/// `<host> <unix seconds> <hex HMAC>` on a relayed request.
pub const SIGNATURE_HEADER: &str = "x-mags-relay";
/// How old a signature may be (clocks of hosts differ a little).
const MAX_AGE_SECS: i64 = 60;
/// How long connecting to the owner may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The cluster secret, and who this host is.
#[derive(Clone)]
pub struct Relay {
    secret: Vec<u8>,
    host: String,
}

/// Marks a request that came in signed on the internal listener.
#[derive(Clone, Copy)]
pub struct Relayed;

impl Relay {
    /// `secret` (at least 16 bytes, from `--cluster-secret-file`) signs
    /// what host `host` relays.
    pub fn new(secret: Vec<u8>, host: String) -> Result<Relay, String> {
        if secret.len() < 16 {
            return Err("the cluster secret must be at least 16 bytes".into());
        }
        Ok(Relay { secret, host })
    }

    fn mac(&self, host: &str, ts: i64, method: &str, path: &str) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(format!("{host}\n{ts}\n{method}\n{path}").as_bytes());
        mac
    }

    /// The signature header for a request this host relays.
    fn sign(&self, method: &str, path: &str) -> String {
        let ts = now_secs();
        let tag = self
            .mac(&self.host, ts, method, path)
            .finalize()
            .into_bytes();
        format!("{} {ts} {}", self.host, hex::encode(tag))
    }

    /// Whether `header` is a fresh signature of this request by a host
    /// holding the secret (compared in constant time).
    fn verify(&self, header: &str, method: &str, path: &str) -> bool {
        let mut parts = header.split(' ');
        let (Some(host), Some(ts), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let (Ok(ts), Ok(tag)) = (ts.parse::<i64>(), hex::decode(tag)) else {
            return false;
        };
        if (now_secs() - ts).abs() > MAX_AGE_SECS {
            return false;
        }
        self.mac(host, ts, method, path).verify_slice(&tag).is_ok()
    }
}

fn now_secs() -> i64 {
    mags_store::clock::now_ms() / 1000
}

fn path_and_query(req: &Request) -> String {
    req.uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_string(), |p| p.as_str().to_string())
}

/// The whole of the internal listener: only signed requests, then the
/// same router as the API's (which authenticates the caller's token).
pub async fn internal_only(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let signed = match (&state.relay, req.headers().get(SIGNATURE_HEADER)) {
        (Some(relay), Some(h)) => h
            .to_str()
            .is_ok_and(|h| relay.verify(h, req.method().as_str(), &path_and_query(&req))),
        _ => false,
    };
    if !signed {
        return crate::error::ApiError::Forbidden(
            "the internal listener takes only requests relayed by another host of the cluster"
                .into(),
        )
        .into_response();
    }
    req.extensions_mut().insert(Relayed);
    next.run(req).await
}

/// The job id of a path `/api/v1/mags-jobs/{id}` or `.../{id}/<more>`
/// (without `/api/v1` inside the nested API router).
fn job_of(path: &str) -> Option<&str> {
    let path = path.strip_prefix("/api/v1").unwrap_or(path);
    let rest = path.strip_prefix("/mags-jobs/")?;
    let id = rest.split_once('/').map_or(rest, |(id, _)| id);
    (!id.is_empty() && !matches!(id, "usage" | "pool-status")).then_some(id)
}

/// Middleware (inside authentication): relays a request for the caller's
/// live job that another host runs to that host; everything else is
/// answered here.
pub async fn relay(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(relay) = &state.relay else {
        return next.run(req).await;
    };
    if req.extensions().get::<Relayed>().is_some() {
        return next.run(req).await;
    }
    let Some(caller) = req.extensions().get::<crate::audit::Caller>() else {
        return next.run(req).await;
    };
    let Some(id) = job_of(req.uri().path()).map(str::to_string) else {
        return next.run(req).await;
    };
    let job = match state.store.job_for_user(&caller.user.id, &id).await {
        Ok(Some(j)) => j,
        _ => return next.run(req).await,
    };
    let url = match owner_url(&state, &job).await {
        Ok(Some(url)) => url,
        // Here, nobody's (this host may take it over) or ended.
        Ok(None) => return next.run(req).await,
        Err(why) => return unavailable(format!("job {id}: {why}")),
    };
    // The nested router sees its own part of the path; the owner gets all.
    let mut req = req;
    if let Some(original) = req.extensions().get::<axum::extract::OriginalUri>() {
        *req.uri_mut() = original.0.clone();
    }
    match forward(relay, &url, req, false).await {
        Ok(resp) => resp,
        Err(why) => unavailable(format!(
            "job {id} runs on host {}, which cannot be reached: {why}",
            job.host.as_deref().unwrap_or("?")
        )),
    }
}

fn unavailable(msg: String) -> Response {
    crate::error::ApiError::Unavailable(msg).into_response()
}

/// The internal URL of the host other than this one that runs live job
/// `job`, if relaying is on and that host is not lost; `Err` names a host
/// that runs it but cannot be relayed to.
pub async fn owner_url(state: &AppState, job: &mags_store::Job) -> Result<Option<String>, String> {
    let (Some(_), Some(me)) = (&state.relay, state.store.owner()) else {
        return Ok(None);
    };
    let Some(owner) = job
        .host
        .clone()
        .filter(|h| *h != me.host && !job.status.is_final())
    else {
        return Ok(None);
    };
    match state.store.host(&owner).await {
        Ok(Some(h)) if h.state != mags_store::HostState::Lost => match h.info.internal_url {
            Some(url) => Ok(Some(url)),
            None => Err(format!(
                "host {owner} runs it and has no internal URL (start it with --internal-listen)"
            )),
        },
        _ => Ok(None),
    }
}

/// [`forward`] for the URL proxy: the request keeps its `Host` (the
/// sandbox's address), which the owner's proxy routes by.
pub async fn forward_public(
    state: &AppState,
    base: &str,
    req: Request,
) -> Result<Response, String> {
    let relay = state.relay.as_ref().ok_or("relaying is off")?;
    forward(relay, base, req, true).await
}

/// Sends `req` as it is to `base` (`http://host:port`), signed; the
/// response comes back as it is (an upgrade spliced through). `Host`
/// becomes the owner's address unless `keep_host`.
async fn forward(
    relay: &Relay,
    base: &str,
    mut req: Request,
    keep_host: bool,
) -> Result<Response, String> {
    let authority = base
        .strip_prefix("http://")
        .ok_or_else(|| format!("internal URL {base} is not http://HOST:PORT"))?
        .trim_end_matches('/');
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(authority))
        .await
        .map_err(|_| "timed out connecting".to_string())?
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
    });
    let client_upgrade = hyper::upgrade::on(&mut req);
    let path = path_and_query(&req);
    let signature = relay.sign(req.method().as_str(), &path);
    *req.uri_mut() = path.parse().map_err(|_| "bad request path".to_string())?;
    *req.version_mut() = axum::http::Version::HTTP_11;
    let h = req.headers_mut();
    h.insert(
        SIGNATURE_HEADER,
        HeaderValue::from_str(&signature).map_err(|e| e.to_string())?,
    );
    if !keep_host || !h.contains_key(axum::http::header::HOST) {
        if let Ok(v) = HeaderValue::from_str(authority) {
            h.insert(axum::http::header::HOST, v);
        }
    }
    let mut resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let server_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            let (Ok(client), Ok(server)) = tokio::join!(client_upgrade, server_upgrade) else {
                return;
            };
            let (mut c, mut s) = (TokioIo::new(client), TokioIo::new(server));
            let _ = tokio::io::copy_bidirectional(&mut c, &mut s).await;
        });
    }
    Ok(resp.map(Body::new))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_host_time_method_and_path() {
        let a = Relay::new(b"0123456789abcdef".to_vec(), "a".into()).expect("relay");
        let other = Relay::new(b"fedcba9876543210".to_vec(), "a".into()).expect("relay");
        let sig = a.sign("POST", "/api/v1/mags-jobs/x/exec");
        assert!(a.verify(&sig, "POST", "/api/v1/mags-jobs/x/exec"));
        assert!(!a.verify(&sig, "GET", "/api/v1/mags-jobs/x/exec"));
        assert!(!a.verify(&sig, "POST", "/api/v1/mags-jobs/y/exec"));
        assert!(!other.verify(&sig, "POST", "/api/v1/mags-jobs/x/exec"));
        let forged = sig.replacen("a ", "b ", 1);
        assert!(!a.verify(&forged, "POST", "/api/v1/mags-jobs/x/exec"));
        let old = format!("a {} {}", now_secs() - 3600, "00");
        assert!(!a.verify(&old, "POST", "/"));
        assert!(!a.verify("garbage", "POST", "/"));
        assert!(Relay::new(b"short".to_vec(), "a".into()).is_err());
    }

    #[test]
    fn only_job_subpaths_are_relayed() {
        assert_eq!(job_of("/api/v1/mags-jobs/abc/exec"), Some("abc"));
        assert_eq!(job_of("/api/v1/mags-jobs/abc/exec/tty"), Some("abc"));
        assert_eq!(job_of("/api/v1/mags-jobs/abc"), Some("abc"));
        assert_eq!(job_of("/api/v1/mags-jobs/usage"), None);
        assert_eq!(job_of("/api/v1/mags-jobs/pool-status"), None);
        assert_eq!(job_of("/api/v1/mags-jobs"), None);
        assert_eq!(job_of("/api/v1/mags-cron/abc/x"), None);
        assert_eq!(job_of("/mags-jobs/abc/stop"), Some("abc"));
    }
}
