//! Persistent sandboxes: exec (buffered, or streamed as [`ExecStream`]),
//! settings, stop, sync.

use crate::{ndjson, seg, Client, ClientError};
use mags_api::{
    ActionResponse, ExecEvent, ExecRequest, ExecResponse, JobStatus, OutputStream, UpdateJobRequest,
};
use reqwest::{Method, Response};
use std::collections::VecDeque;
use std::time::Duration;

/// Headroom of the HTTP timeout over the command's own (a wake may come first).
const EXEC_HTTP_SLACK: Duration = Duration::from_secs(60);

/// Something a streamed command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecItem {
    Output {
        stream: OutputStream,
        data: Vec<u8>,
    },
    /// The command ended; the last item.
    Exit {
        exit_code: i32,
        timed_out: bool,
    },
}

impl Client {
    /// `POST /mags-jobs/{id}/exec`: runs `command` and returns its output.
    /// `timeout` in seconds (server default 30).
    pub async fn exec(
        &self,
        id: &str,
        command: &str,
        timeout: Option<f64>,
    ) -> Result<ExecResponse, ClientError> {
        let body = ExecRequest {
            command: command.to_string(),
            timeout,
        };
        let secs = timeout.unwrap_or(mags_api::DEFAULT_EXEC_TIMEOUT_SECS);
        let http_timeout = Duration::from_secs_f64(secs.clamp(0.0, 86_400.0)) + EXEC_HTTP_SLACK;
        let req = self
            .request(Method::POST, &format!("/mags-jobs/{}/exec", seg(id)))
            .json(&body)
            .timeout(http_timeout);
        self.json(req).await
    }

    /// `POST /mags-jobs/{id}/exec/stream`: runs `command`, its output
    /// arriving as it is produced. No time limit unless `timeout` (seconds).
    /// Dropping the stream kills the command.
    pub async fn exec_stream(
        &self,
        id: &str,
        command: &str,
        timeout: Option<f64>,
    ) -> Result<ExecStream, ClientError> {
        let body = ExecRequest {
            command: command.to_string(),
            timeout,
        };
        let req = self
            .request(Method::POST, &format!("/mags-jobs/{}/exec/stream", seg(id)))
            .json(&body);
        let resp = self.send(req).await?;
        Ok(ExecStream {
            resp,
            buf: Vec::new(),
            pending: VecDeque::new(),
            done: false,
        })
    }

    /// `PATCH /mags-jobs/{id}`.
    pub async fn update_job(
        &self,
        id: &str,
        req: &UpdateJobRequest,
    ) -> Result<JobStatus, ClientError> {
        let req = self
            .request(Method::PATCH, &format!("/mags-jobs/{}", seg(id)))
            .json(req);
        self.json(req).await
    }

    /// `POST /mags-jobs/{id}/stop`.
    pub async fn stop(&self, id: &str) -> Result<ActionResponse, ClientError> {
        let req = self
            .request(Method::POST, &format!("/mags-jobs/{}/stop", seg(id)))
            .timeout(Duration::from_secs(120));
        self.json(req).await
    }

    /// `POST /mags-jobs/{id}/sync`.
    pub async fn sync(&self, id: &str) -> Result<ActionResponse, ClientError> {
        let req = self.request(Method::POST, &format!("/mags-jobs/{}/sync", seg(id)));
        self.json(req).await
    }
}

/// The output of a streamed command; see [`Client::exec_stream`].
pub struct ExecStream {
    resp: Response,
    buf: Vec<u8>,
    pending: VecDeque<ExecItem>,
    done: bool,
}

impl ExecStream {
    /// The next item; `None` after [`ExecItem::Exit`]. A sandbox that fails
    /// under the command is an error.
    pub async fn next(&mut self) -> Result<Option<ExecItem>, ClientError> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Ok(Some(item));
            }
            if self.done {
                return Ok(None);
            }
            match self.resp.chunk().await? {
                Some(bytes) => {
                    self.buf.extend_from_slice(&bytes);
                    self.parse_lines()?;
                }
                None => {
                    return Err(ClientError::Decode(
                        "the command's output ended before its exit status".into(),
                    ))
                }
            }
        }
    }

    fn parse_lines(&mut self) -> Result<(), ClientError> {
        while let Some(line) = ndjson::next_line(&mut self.buf) {
            if self.done {
                continue;
            }
            let event: ExecEvent = ndjson::decode(&line)?;
            match event {
                ExecEvent::Output {
                    stream,
                    data,
                    data_b64,
                } => {
                    let data = ndjson::output_bytes(data, data_b64)?;
                    self.pending.push_back(ExecItem::Output { stream, data });
                }
                ExecEvent::Exit {
                    exit_code,
                    timed_out,
                } => {
                    self.done = true;
                    self.pending.push_back(ExecItem::Exit {
                        exit_code,
                        timed_out,
                    });
                }
                ExecEvent::Error { error } => {
                    self.done = true;
                    return Err(ClientError::Api {
                        status: reqwest::StatusCode::SERVICE_UNAVAILABLE,
                        message: error,
                    });
                }
            }
        }
        Ok(())
    }
}
