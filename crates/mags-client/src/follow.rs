//! Following a job's NDJSON output stream, with reconnects.

use crate::{ndjson, Client, ClientError};
use mags_api::{JobState, OutputEvent, OutputStream};
use reqwest::Response;
use std::collections::VecDeque;
use std::time::Duration;

/// Reconnects tried in a row before giving up.
const MAX_RETRIES: u32 = 8;

/// Something the job did, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputItem {
    /// Output bytes, exactly as produced.
    Output { stream: OutputStream, data: Vec<u8> },
    /// The job's status changed.
    Status(JobState),
    /// The job is final; the last item.
    Exit {
        status: JobState,
        exit_code: Option<i32>,
        error: Option<String>,
    },
}

/// Reads a job's output to its end. If the connection drops it reconnects
/// and resumes after the last chunk seen, so nothing is lost or repeated.
pub struct OutputFollower {
    client: Client,
    id: String,
    after: i64,
    resp: Option<Response>,
    buf: Vec<u8>,
    pending: VecDeque<OutputItem>,
    retries: u32,
    done: bool,
}

impl OutputFollower {
    pub(crate) fn new(client: Client, id: &str) -> Self {
        OutputFollower {
            client,
            id: id.to_string(),
            after: -1,
            resp: None,
            buf: Vec::new(),
            pending: VecDeque::new(),
            retries: 0,
            done: false,
        }
    }

    /// The next item; `None` after [`OutputItem::Exit`].
    pub async fn next(&mut self) -> Result<Option<OutputItem>, ClientError> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Ok(Some(item));
            }
            if self.done {
                return Ok(None);
            }
            let Some(resp) = self.resp.as_mut() else {
                match self.client.output_stream(&self.id, self.after, true).await {
                    Ok(r) => {
                        self.resp = Some(r);
                        self.buf.clear();
                    }
                    Err(e) if transient(&e) => self.backoff(e).await?,
                    Err(e) => return Err(e),
                }
                continue;
            };
            match resp.chunk().await {
                Ok(Some(bytes)) => {
                    self.retries = 0;
                    self.buf.extend_from_slice(&bytes);
                    self.parse_lines()?;
                }
                Ok(None) => {
                    self.resp = None;
                    self.backoff(ClientError::Decode(
                        "the output stream ended before the job did".into(),
                    ))
                    .await?;
                }
                Err(e) => {
                    self.resp = None;
                    self.backoff(ClientError::Http(e)).await?;
                }
            }
        }
    }

    /// Waits before the next reconnect, or gives up with `err`.
    async fn backoff(&mut self, err: ClientError) -> Result<(), ClientError> {
        self.retries += 1;
        if self.retries > MAX_RETRIES {
            return Err(err);
        }
        let ms = 100u64 << self.retries.min(5);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(())
    }

    fn parse_lines(&mut self) -> Result<(), ClientError> {
        while let Some(line) = ndjson::next_line(&mut self.buf) {
            if self.done {
                continue;
            }
            let event: OutputEvent = ndjson::decode(&line)?;
            match event {
                OutputEvent::Output {
                    seq,
                    stream,
                    data,
                    data_b64,
                    ..
                } => {
                    if seq <= self.after {
                        continue;
                    }
                    self.after = seq;
                    let bytes = ndjson::output_bytes(data, data_b64)?;
                    self.pending.push_back(OutputItem::Output {
                        stream,
                        data: bytes,
                    });
                }
                OutputEvent::Status { status } => {
                    self.pending.push_back(OutputItem::Status(status));
                }
                OutputEvent::Exit {
                    status,
                    exit_code,
                    error,
                } => {
                    self.done = true;
                    self.resp = None;
                    self.pending.push_back(OutputItem::Exit {
                        status,
                        exit_code,
                        error,
                    });
                }
            }
        }
        Ok(())
    }
}

/// Worth retrying: the server was unreachable, failed (5xx) or asked for
/// fewer requests (429).
fn transient(e: &ClientError) -> bool {
    match e {
        ClientError::Connect { .. } | ClientError::Http(_) => true,
        ClientError::Api { status, .. } => {
            status.is_server_error() || *status == reqwest::StatusCode::TOO_MANY_REQUESTS
        }
        ClientError::Decode(_) | ClientError::InvalidUrl(_) => false,
    }
}
