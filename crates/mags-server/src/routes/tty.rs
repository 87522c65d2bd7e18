//! `GET /mags-jobs/{id}/exec/tty` (WebSocket): a command on a terminal in
//! a live sandbox, for `mags exec -it`. Authenticated like every API call
//! (`Authorization: Bearer`, on the upgrade request).
//!
//! Query ([`TtyQuery`]): `command` (default: a login shell), `rows`,
//! `cols`, `term`. Errors before the upgrade (unknown job, not live) are
//! ordinary JSON errors. Then, on the socket:
//! - binary frames, client -> server: bytes typed into the terminal
//!   (Ctrl-C is the byte 0x03, delivered as a terminal would);
//! - binary frames, server -> client: what the terminal shows;
//! - text frames, client -> server: [`TtyClientMsg`] JSON, e.g.
//!   `{"type":"resize","rows":40,"cols":120}`;
//! - text frames, server -> client: [`TtyServerMsg`] JSON, the last frame
//!   before the close: `{"type":"exit","exit_code":N}` or
//!   `{"type":"error","error":"..."}`.
//!
//! A client that goes away hangs up the command (SIGHUP to its session).

use crate::audit::Caller;
use crate::error::{ApiError, ApiPath, ApiQuery};
use crate::routes::jobs::owned_job;
use crate::routes::output::shutting_down;
use crate::AppState;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use futures::{SinkExt as _, StreamExt as _};
use mags_api::AuditAction;
use mags_api::{TtyClientMsg, TtyQuery, TtyServerMsg};
use mags_control::executor::{ProcessEvent, ProcessInput, VmProcess};
use mags_control::sandboxes::check_live;
use mags_proto::{PtySpec, RunSpec};
use std::sync::Arc;

/// SIGHUP.
const SIGHUP: i32 = 1;
/// `TERM` when the client does not say.
const DEFAULT_TERM: &str = "xterm-256color";

/// The upgrade: finds the sandbox (waking it) and starts the command
/// before answering, so a failure is a plain HTTP error. Ownership is
/// checked before anything else, a request that is no WebSocket upgrade
/// is refused before the sandbox is woken.
pub async fn tty(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<TtyQuery>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let user = &caller.user;
    let job = owned_job(&state, &user.id, &id).await?;
    check_live(&job, "a terminal")?;
    let ws = ws.map_err(|r| {
        ApiError::BadRequest(format!(
            "this endpoint is a WebSocket; send an upgrade request ({})",
            r.body_text()
        ))
    })?;
    let sandbox = state.sandboxes.connect(&user.id, &job.id).await?;
    let argv = match q.command.as_deref().map(str::trim) {
        Some(c) if !c.is_empty() => vec!["/bin/bash".into(), "-c".into(), c.to_string()],
        _ => vec!["/bin/bash".into(), "-l".into()],
    };
    let term = q
        .term
        .filter(|t| !t.is_empty() && t.len() <= 64 && t.chars().all(|c| c.is_ascii_graphic()))
        .unwrap_or_else(|| DEFAULT_TERM.to_string());
    let spec = RunSpec {
        argv,
        env: sandbox.environment.clone(),
        cwd: Some("/root".into()),
        stdin: true,
        pty: Some(PtySpec {
            rows: q.rows.unwrap_or(24),
            cols: q.cols.unwrap_or(80),
            term,
        }),
        ..Default::default()
    };
    let process = sandbox
        .vm
        .run(spec)
        .await
        .map_err(|e| ApiError::Unavailable(format!("cannot start the command: {e}")))?;
    tracing::info!(job = %job.id, "terminal session started");
    caller
        .done(&state.audit, AuditAction::TtyOpen, ("job", &job.id), None)
        .await;
    let shutdown = state.shutdown.clone();
    // Also if the upgrade never completes, the command does not linger.
    let hangup = HangUp(process.input());
    Ok(ws.on_upgrade(move |socket| async move {
        // The sandbox stays awake while the session lasts.
        let _sandbox = sandbox;
        let _hangup = hangup;
        session(socket, process, shutdown).await;
    }))
}

/// Hangs up the command when dropped: when the session ends for any
/// reason (a no-op for one that has exited).
struct HangUp(Arc<dyn ProcessInput>);

impl Drop for HangUp {
    fn drop(&mut self) {
        let input = self.0.clone();
        tokio::spawn(async move {
            let _ = input.signal(SIGHUP).await;
        });
    }
}

/// Pumps the socket and the process until the process exits or the
/// client goes away.
async fn session(
    socket: WebSocket,
    mut process: Box<dyn VmProcess>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let input = process.input();
    let (mut tx, mut rx) = socket.split();
    let last = loop {
        tokio::select! {
            ev = process.next_event() => match ev {
                Ok(Some(ProcessEvent::Stdout(b) | ProcessEvent::Stderr(b))) => {
                    if tx.send(Message::Binary(b.into())).await.is_err() {
                        return;
                    }
                }
                Ok(Some(ProcessEvent::Exited { code, .. })) => {
                    break TtyServerMsg::Exit { exit_code: code };
                }
                Ok(None) => break TtyServerMsg::Error { error: "the command ended without a status".into() },
                Err(e) => break TtyServerMsg::Error { error: format!("the sandbox went away: {e}") },
            },
            msg = rx.next() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    let _ = input.write(&b).await;
                }
                Some(Ok(Message::Text(t))) => match serde_json::from_str::<TtyClientMsg>(&t) {
                    Ok(TtyClientMsg::Resize { rows, cols }) => {
                        let _ = input.resize(rows, cols).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "ignoring a bad terminal message"),
                },
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
            },
            _ = shutting_down(&mut shutdown) => {
                break TtyServerMsg::Error { error: "the server is shutting down".into() };
            }
        }
    };
    let text = serde_json::to_string(&last).unwrap_or_default();
    let _ = tx.send(Message::Text(text.into())).await;
    let _ = tx.send(Message::Close(None)).await;
}
