//! `POST /mags-browser`: start a browser session (or find the caller's live
//! one of that name) and answer where a CDP client connects; see
//! [`mags_control::browser`]. The call returns once Chromium's DevTools endpoint
//! answers (under TCG that is tens of seconds on a cold start).

use crate::audit::Caller;
use crate::error::{ApiError, ApiJson};
use crate::routes::access::new_subdomain;
use crate::AppState;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, Request};
use axum::Json;
use hyper_util::rt::TokioIo;
use mags_api::AuditAction;
use mags_api::{BrowserRequest, BrowserSession, CreateJobRequest, JobState};
use mags_control::browser::{self, CDP_PORT, LAUNCH_SCRIPT, ROOTFS_TYPE};
use mags_control::text::Esc;
use mags_store::{Job, StoreError};
use std::time::{Duration, Instant};

/// How long a session may take to come up (image build excluded: the
/// first use of the browser image builds it, which the job waits for as
/// `accepted`, and this call waits for too).
const START_TIMEOUT: Duration = Duration::from_secs(900);

/// `POST /mags-browser`.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<BrowserRequest>,
) -> Result<Json<BrowserSession>, ApiError> {
    let user = &caller.user;
    let name = req.name.filter(|n| !n.trim().is_empty());
    let job = match live_session(&state, &user.id, name.as_deref()).await? {
        Some(job) => job,
        None => {
            let mut create = CreateJobRequest::new(LAUNCH_SCRIPT);
            create.name = name;
            create.persistent = true;
            create.rootfs_type = Some(ROOTFS_TYPE.into());
            let job = state.submit(&user.id, create).await?;
            tracing::info!(job = %job.id, user = %Esc(&user.name), "browser session accepted");
            job
        }
    };
    let job = match wait_until_up(&state, &job.id).await {
        Ok(job) => job,
        Err(e) => {
            // A sandbox whose Chromium never came up serves no one: left
            // running, each failed attempt would hold a VM slot and its
            // disk until the idle sleep, and a retry would start another.
            if let Err(stop) = state.sandboxes.stop(&job.id).await {
                tracing::warn!(job = %job.id, error = %stop, "cannot stop a failed browser session");
            }
            return Err(e);
        }
    };
    let secret = browser::new_secret();
    let access = loop {
        let candidate = new_subdomain();
        if state.store.subdomain_taken(&candidate).await? {
            continue;
        }
        match state
            .store
            .ensure_access_with(&job.id, &user.id, CDP_PORT, &candidate, Some(&secret))
            .await
        {
            Ok(a) => break a,
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let secret = access
        .secret
        .ok_or_else(|| ApiError::Internal("the CDP access record has no secret".into()))?;
    let ws_path = browser_ws_path(&state, &user.id, &job.id).await?;
    caller
        .done(
            &state.audit,
            AuditAction::BrowserSession,
            ("job", &job.id),
            Some(format!("CDP at {}", access.subdomain)),
        )
        .await;
    let ws = format!(
        "{}{ws_path}",
        browser::ws_base(&state.apps, &access.subdomain, &secret)
    );
    Ok(Json(BrowserSession {
        success: true,
        request_id: job.id.clone(),
        name: job.name.clone(),
        status: job.status.as_str().into(),
        cdp_http_url: format!(
            "{}/json/version",
            browser::http_base(&state.apps, &access.subdomain, &secret)
        ),
        subdomain: access.subdomain,
        cdp_url: ws.clone(),
        ws_endpoint: ws,
    }))
}

/// The caller's newest live browser job called `name`, if any.
async fn live_session(
    state: &AppState,
    user_id: &str,
    name: Option<&str>,
) -> Result<Option<Job>, ApiError> {
    let Some(name) = name else { return Ok(None) };
    let (jobs, _) = state.store.list_jobs(user_id, 0, 100).await?;
    Ok(jobs.into_iter().find(|j| {
        j.name.as_deref() == Some(name)
            && j.rootfs_type.as_deref() == Some(ROOTFS_TYPE)
            && !j.status.is_final()
    }))
}

/// Waits until the job's sandbox runs and its launch script has said that
/// Chromium is up (exit 0).
async fn wait_until_up(state: &AppState, job_id: &str) -> Result<Job, ApiError> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let job = state
            .store
            .job(job_id)
            .await?
            .ok_or_else(|| ApiError::job_not_found(job_id))?;
        match (job.status, job.exit_code) {
            (JobState::Running | JobState::Sleeping, Some(0)) => return Ok(job),
            (JobState::Running | JobState::Sleeping, Some(code)) => {
                return Err(ApiError::Unavailable(format!(
                    "the browser did not start (exit {code}); see `mags logs {job_id}`"
                )))
            }
            (JobState::Completed | JobState::Error, _) => {
                return Err(ApiError::Unavailable(format!(
                    "the browser session ended: {}",
                    job.error.as_deref().unwrap_or("see its logs")
                )))
            }
            _ => {}
        }
        if Instant::now() > deadline {
            return Err(ApiError::Unavailable(format!(
                "the browser session {job_id} did not come up within {} s",
                START_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The path of the browser's DevTools WebSocket (`/devtools/browser/<id>`),
/// read from Chromium's `/json/version` through the agent's tunnel.
async fn browser_ws_path(
    state: &AppState,
    user_id: &str,
    job_id: &str,
) -> Result<String, ApiError> {
    let unavailable = |what: &str, e: &dyn std::fmt::Display| {
        ApiError::Unavailable(format!("cannot reach the browser ({what}): {e}"))
    };
    let conn = state.sandboxes.connect(user_id, job_id).await?;
    let tunnel = conn
        .vm
        .open_tunnel(CDP_PORT)
        .await
        .map_err(|e| unavailable("tunnel", &e))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(tunnel))
            .await
            .map_err(|e| unavailable("handshake", &e))?;
    tokio::spawn(connection);
    let req = Request::get("/json/version")
        .header(header::HOST, browser::guest_host())
        .body(Body::empty())
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| unavailable("request", &e))?;
    let body = axum::body::to_bytes(Body::new(resp.into_body()), 1 << 20)
        .await
        .map_err(|e| unavailable("answer", &e))?;
    drop(conn);
    let version: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| unavailable("/json/version", &e))?;
    let url = version["webSocketDebuggerUrl"]
        .as_str()
        .ok_or_else(|| unavailable("/json/version", &"no webSocketDebuggerUrl"))?;
    let path = url
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_string()))
        .ok_or_else(|| unavailable("/json/version", &url))?;
    Ok(path)
}
