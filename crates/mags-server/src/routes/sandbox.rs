//! Persistent sandboxes over HTTP: `POST /mags-jobs/{id}/exec` (the
//! contract's, buffered), `POST /mags-jobs/{id}/exec/stream` (ours, NDJSON
//! [`ExecEvent`]s as they happen), `PATCH /mags-jobs/{id}`,
//! `POST /mags-jobs/{id}/stop` and `/sync`.
//!
//! A job of another user is a 404, exactly like a missing one; a job
//! without a live sandbox is a 409 saying why.

use crate::audit::Caller;
use crate::auth::AuthUser;
use crate::error::{ApiError, ApiJson, ApiPath};
use crate::routes::jobs::owned_job;
use crate::routes::output::shutting_down;
use crate::view::job_status;
use crate::AppState;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use mags_api::limits::{
    MAX_COMMAND_BYTES, MAX_EXEC_OUTPUT_BYTES, MAX_EXEC_TIMEOUT_SECS, MAX_STARTUP_COMMAND_BYTES,
    MAX_TIMEOUT_SECS,
};
use mags_api::AuditAction;
use mags_api::{
    ActionResponse, ExecEvent, ExecRequest, ExecResponse, JobStatus, OutputStream,
    UpdateJobRequest, DEFAULT_EXEC_TIMEOUT_SECS, TIMEOUT_EXIT_CODE,
};
use mags_control::sandboxes::{check_live, ExecRun};
use mags_store::JobSettings;
use mags_vm::ProcessEvent;
use std::convert::Infallible;
use std::time::Duration;

/// How long `/stop` waits for a one-shot job to end.
const STOP_WAIT: Duration = Duration::from_secs(30);

/// Checks an exec request: the command and its timeout (`default` when
/// absent; `None` means no limit).
fn check_exec(req: &ExecRequest, default: Option<f64>) -> Result<Option<Duration>, ApiError> {
    let bad = |m: String| Err(ApiError::BadRequest(m));
    if req.command.trim().is_empty() {
        return bad("command is required".into());
    }
    if req.command.len() > MAX_COMMAND_BYTES {
        return bad(format!("command is larger than {MAX_COMMAND_BYTES} bytes"));
    }
    match req.timeout.or(default) {
        None => Ok(None),
        Some(t) if t.is_finite() && t > 0.0 && t <= MAX_EXEC_TIMEOUT_SECS => {
            Ok(Some(Duration::from_secs_f64(t)))
        }
        Some(_) => bad(format!(
            "timeout must be a number of seconds above 0 and at most {MAX_EXEC_TIMEOUT_SECS}"
        )),
    }
}

/// Starts a command in the caller's sandbox `id`.
async fn start_exec(
    state: &AppState,
    user_id: &str,
    id: &str,
    req: &ExecRequest,
    timeout: Option<Duration>,
) -> Result<ExecRun, ApiError> {
    Ok(state.exec(user_id, id, &req.command, timeout).await?)
}

/// `POST /mags-jobs/{id}/exec` -> `{"exit_code", "stdout", "stderr"}`.
pub async fn exec(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<ExecRequest>,
) -> Result<Json<ExecResponse>, ApiError> {
    let timeout = check_exec(&req, Some(DEFAULT_EXEC_TIMEOUT_SECS))?;
    let mut run = start_exec(&state, &user.id, &id, &req, timeout).await?;
    let (mut out, mut err) = (Capped::default(), Capped::default());
    let mut shutdown = state.shutdown.clone();
    loop {
        // Dropping the run at shutdown kills the command.
        let ev = tokio::select! {
            ev = run.next() => ev,
            _ = shutting_down(&mut shutdown) => {
                return Err(ApiError::Unavailable("the server is shutting down".into()))
            }
        };
        let Some(ev) = ev else { break };
        match ev {
            Ok(ProcessEvent::Stdout(b)) => out.push(&b),
            Ok(ProcessEvent::Stderr(b)) => err.push(&b),
            Ok(ProcessEvent::Exited {
                code, timed_out, ..
            }) => {
                if timed_out {
                    let secs = timeout.map_or(0.0, |d| d.as_secs_f64());
                    err.note(&format!(
                        "mags: the command timed out after {secs} s and was killed"
                    ));
                }
                return Ok(Json(ExecResponse {
                    exit_code: if timed_out { TIMEOUT_EXIT_CODE } else { code },
                    stdout: out.text(),
                    stderr: err.text(),
                    timed_out,
                    duration_ms: mags_control::executor::elapsed_ms(run.started()),
                }));
            }
            Err(e) => {
                return Err(ApiError::Unavailable(format!(
                    "the sandbox failed while running the command: {e}"
                )))
            }
        }
    }
    Err(ApiError::Unavailable(
        "the sandbox went away while running the command".into(),
    ))
}

/// Output kept up to [`MAX_EXEC_OUTPUT_BYTES`], with a notice when cut.
#[derive(Default)]
struct Capped {
    data: Vec<u8>,
    cut: bool,
}

impl Capped {
    fn push(&mut self, b: &[u8]) {
        let room = MAX_EXEC_OUTPUT_BYTES.saturating_sub(self.data.len());
        if b.len() > room {
            self.cut = true;
        }
        self.data.extend_from_slice(&b[..b.len().min(room)]);
    }

    fn note(&mut self, line: &str) {
        if !self.data.is_empty() && !self.data.ends_with(b"\n") {
            self.data.push(b'\n');
        }
        self.data.extend_from_slice(line.as_bytes());
        self.data.push(b'\n');
    }

    fn text(mut self) -> String {
        if self.cut {
            self.note(&format!(
                "mags: output cut at {} MiB (use the streaming exec for more)",
                MAX_EXEC_OUTPUT_BYTES >> 20
            ));
        }
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

/// `POST /mags-jobs/{id}/exec/stream`: NDJSON [`ExecEvent`]s; no timeout
/// unless asked. Closing the connection kills the command.
pub async fn exec_stream(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<ExecRequest>,
) -> Result<Response, ApiError> {
    let timeout = check_exec(&req, None)?;
    let run = start_exec(&state, &user.id, &id, &req, timeout).await?;
    let shutdown = state.shutdown.clone();
    let stream = futures::stream::unfold(Some((run, shutdown)), |state| async move {
        let (mut run, mut shutdown) = state?;
        let next = tokio::select! {
            ev = run.next() => Some(ev),
            _ = shutting_down(&mut shutdown) => None,
        };
        let (event, more) = match next {
            Some(Some(Ok(ProcessEvent::Stdout(b)))) => (output(OutputStream::Stdout, b), true),
            Some(Some(Ok(ProcessEvent::Stderr(b)))) => (output(OutputStream::Stderr, b), true),
            Some(Some(Ok(ProcessEvent::Exited {
                code, timed_out, ..
            }))) => (
                ExecEvent::Exit {
                    exit_code: if timed_out { TIMEOUT_EXIT_CODE } else { code },
                    timed_out,
                },
                false,
            ),
            Some(Some(Err(e))) => (
                ExecEvent::Error {
                    error: format!("the sandbox failed while running the command: {e}"),
                },
                false,
            ),
            None => (
                ExecEvent::Error {
                    error: "the server is shutting down; the command was killed".into(),
                },
                false,
            ),
            Some(None) => (
                ExecEvent::Error {
                    error: "the sandbox went away while running the command".into(),
                },
                false,
            ),
        };
        let mut line = serde_json::to_vec(&event).unwrap_or_default();
        line.push(b'\n');
        Some((
            Ok::<_, Infallible>(Bytes::from(line)),
            more.then_some((run, shutdown)),
        ))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

fn output(stream: OutputStream, b: Vec<u8>) -> ExecEvent {
    let (data, data_b64) = match String::from_utf8(b) {
        Ok(s) => (Some(s), None),
        Err(e) => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(e.as_bytes())),
        ),
    };
    ExecEvent::Output {
        stream,
        data,
        data_b64,
    }
}

/// `PATCH /mags-jobs/{id}` `{startup_command?, no_sleep?, idle_timeout_secs?}`:
/// changes a live job's settings; its sandbox follows them at once.
pub async fn update(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateJobRequest>,
) -> Result<Json<JobStatus>, ApiError> {
    let job = owned_job(&state, &user.id, &id).await?;
    if job.status.is_final() {
        return Err(ApiError::Conflict(format!(
            "job {} has ended ({}); there is nothing to change",
            job.id, job.status
        )));
    }
    let bad = |m: &str| Err(ApiError::BadRequest(m.into()));
    if req.no_sleep == Some(true) && !job.persistent {
        return bad("no_sleep requires a persistent job");
    }
    if let Some(cmd) = &req.startup_command {
        if cmd.len() > MAX_STARTUP_COMMAND_BYTES || cmd.contains('\0') {
            return bad("startup_command must be at most 64 KiB of text");
        }
    }
    if req.idle_timeout_secs.is_some_and(|s| s > MAX_TIMEOUT_SECS) {
        return bad("idle_timeout_secs is too large (at most 30 days)");
    }
    let settings = JobSettings {
        startup_command: req
            .startup_command
            .map(|c| Some(c).filter(|c| !c.trim().is_empty())),
        no_sleep: req.no_sleep,
        idle_timeout_secs: req.idle_timeout_secs.map(|s| Some(s).filter(|s| *s > 0)),
    };
    let job = if state.store.update_job_settings(&job.id, &settings).await? {
        let job = owned_job(&state, &user.id, &id).await?;
        state.sandboxes.update(&job);
        tracing::info!(job = %job.id, ?settings, "settings changed");
        job
    } else {
        job
    };
    Ok(Json(job_status(&job)))
}

/// `POST /mags-jobs/{id}/stop`: a persistent sandbox is synced and shut
/// down (`completed`); a one-shot job is killed (`error`, "stopped").
pub async fn stop(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ActionResponse>, ApiError> {
    let user = &caller.user;
    let job = owned_job(&state, &user.id, &id).await?;
    if job.status.is_final() {
        return Err(ApiError::Conflict(format!(
            "job {} has already ended ({})",
            job.id, job.status
        )));
    }
    caller
        .done(
            &state.audit,
            AuditAction::JobStop,
            ("job", &job.id),
            Some(format!("was {}", job.status)),
        )
        .await;
    if state.takeovers.stop(&job.id).await {
        // It was waiting for its workspace: it never started.
    } else if job.persistent {
        state.sandboxes.stop(&job.id).await?;
    } else if state.scheduler.stop(&job.id) {
        let deadline = tokio::time::Instant::now() + STOP_WAIT;
        while tokio::time::Instant::now() < deadline {
            if owned_job(&state, &user.id, &id).await?.status.is_final() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let job = owned_job(&state, &user.id, &id).await?;
    Ok(Json(ActionResponse {
        success: true,
        request_id: job.id.clone(),
        status: job.status,
        message: format!("job {} is {}", job.id, job.status),
    }))
}

/// `POST /mags-jobs/{id}/sync`: flushes the sandbox's filesystems and, for
/// a persistent workspace, stores a new snapshot of it (acknowledged only
/// once that version is durable).
pub async fn sync(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ActionResponse>, ApiError> {
    let job = owned_job(&state, &user.id, &id).await?;
    check_live(&job, "sync")?;
    state.sandboxes.sync(&job.id).await?;
    Ok(Json(ActionResponse {
        success: true,
        request_id: job.id.clone(),
        status: job.status,
        message: "synced".into(),
    }))
}
