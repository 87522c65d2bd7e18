//! `GET /mags-jobs/{id}/output?after=SEQ&follow=true`: a job's raw output
//! as NDJSON, one [`OutputEvent`] per line.
//!
//! Everything comes from the database (chunks with `seq > after`), so a
//! client that reconnects with the last `seq` it saw misses nothing and
//! sees nothing twice. While following, the stream waits on the job's
//! [`Notify`](tokio::sync::Notify) with a short fallback poll, and ends with
//! an `exit` event once the job is final (or, for a persistent job, once
//! its script has ended while the sandbox lives on). The job row is read before the
//! chunks: the scheduler stores all output before the final state, so a
//! final state seen first means the chunks read next are complete.
//!
//! Following a persistent job whose script still runs keeps its sandbox
//! awake until the script ends or the follower leaves (see
//! [`Sandboxes::watch`](mags_control::sandboxes::Sandboxes::watch)).

use crate::auth::AuthUser;
use crate::error::{ApiError, ApiPath, ApiQuery};
use crate::routes::jobs::owned_job;
use crate::AppState;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use mags_api::{JobState, OutputEvent};
use mags_store::clock::rfc3339;
use mags_store::OutputChunk;
use serde::Deserialize;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Chunks sent per database read (each at most
/// [`CHUNK_BYTES`](mags_control::sink::CHUNK_BYTES), so a frame stays near 1 MiB
/// however much output the job has).
const READ_BATCH: i64 = 16;
/// Longest wait between two looks at the database while following.
const FALLBACK_POLL: Duration = Duration::from_millis(500);

/// Query of the output stream.
#[derive(Debug, Deserialize)]
pub struct OutputQuery {
    /// Send chunks with `seq` greater than this (default: all).
    after: Option<i64>,
    /// Keep the stream open until the job is final (default: false).
    #[serde(default)]
    follow: bool,
}

/// `GET /mags-jobs/{id}/output`.
pub async fn follow(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<OutputQuery>,
) -> Result<Response, ApiError> {
    let job = owned_job(&state, &user.id, &id).await?;
    let notify = state.followers.get(&job.id);
    let script_live = job.persistent && !job.status.is_final() && job.exit_code.is_none();
    let watch = (q.follow && script_live).then(|| state.sandboxes.watch(&job.id));
    let follower = Follower {
        _watch: watch,
        state,
        notify,
        job_id: job.spec.id,
        after: q.after.unwrap_or(-1),
        follow: q.follow,
        last_status: None,
        done: false,
    };
    let stream = futures::stream::unfold(follower, |mut f| async move {
        let bytes = f.next_batch().await?;
        Some((Ok::<_, Infallible>(bytes), f))
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

struct Follower {
    /// Keeps the sandbox awake while its script runs and this stream lasts.
    _watch: Option<mags_control::sandboxes::Watch>,
    state: AppState,
    notify: Arc<Notify>,
    job_id: String,
    after: i64,
    follow: bool,
    last_status: Option<JobState>,
    done: bool,
}

impl Follower {
    /// The next lines to send; `None` ends the stream.
    async fn next_batch(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        let mut shutdown = self.state.shutdown.clone();
        loop {
            if *shutdown.borrow() {
                return None;
            }
            let notify = self.notify.clone();
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let mut out = Vec::new();
            let full = match self.read(&mut out).await {
                Ok(full) => full,
                Err(e) => {
                    tracing::warn!(job = %self.job_id, error = %e, "output stream ended early");
                    return None;
                }
            };
            if self.done || full || !out.is_empty() {
                return Some(Bytes::from(out));
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(FALLBACK_POLL) => {}
                _ = shutting_down(&mut shutdown) => return None,
            }
        }
    }

    /// Appends what is new to `out`; returns whether more chunks are
    /// already waiting. Sets `done` when the stream should end after `out`.
    async fn read(&mut self, out: &mut Vec<u8>) -> Result<bool, ApiError> {
        let store = &self.state.store;
        let job = store
            .job(&self.job_id)
            .await?
            .ok_or_else(|| ApiError::job_not_found(&self.job_id))?;
        if self.last_status != Some(job.status) {
            self.last_status = Some(job.status);
            push(out, &OutputEvent::Status { status: job.status });
        }
        let chunks = store
            .output_after(&self.job_id, self.after, READ_BATCH)
            .await?;
        for c in &chunks {
            push(out, &chunk_event(c));
            self.after = c.seq;
        }
        if chunks.len() as i64 == READ_BATCH {
            return Ok(true);
        }
        // A persistent job's script may end while its sandbox lives on:
        // the stream of the script ends there too.
        let script_ended = job.persistent && job.exit_code.is_some();
        if job.status.is_final() || script_ended {
            push(
                out,
                &OutputEvent::Exit {
                    status: job.status,
                    exit_code: job.exit_code,
                    error: job.error,
                },
            );
            self.done = true;
        } else if !self.follow {
            self.done = true;
        }
        Ok(false)
    }
}

/// Resolves once shutdown is signalled; never if the signal's sender is
/// gone without signalling (as in tests).
pub(crate) async fn shutting_down(rx: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The wire form of a chunk: text when it is UTF-8, else base64.
pub fn chunk_event(c: &OutputChunk) -> OutputEvent {
    let (data, data_b64) = match std::str::from_utf8(&c.data) {
        Ok(s) => (Some(s.to_string()), None),
        Err(_) => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(&c.data)),
        ),
    };
    OutputEvent::Output {
        seq: c.seq,
        stream: c.stream,
        data,
        data_b64,
        timestamp: rfc3339(c.ts),
    }
}

fn push(out: &mut Vec<u8>, event: &OutputEvent) {
    // Serializing these plain types cannot fail; skip the line if it does.
    if serde_json::to_writer(&mut *out, event).is_ok() {
        out.push(b'\n');
    }
}
