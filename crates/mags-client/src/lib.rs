//! A typed client for the Mags REST API, used by the `mags` CLI and the
//! end-to-end tests.
//!
//! Errors carry the server's `{"error": "..."}` message. [`OutputFollower`]
//! reads a job's NDJSON output stream and reconnects (resuming after the
//! last chunk it saw) if the connection drops; [`ExecStream`] reads a
//! command's output from a persistent sandbox; [`TtySession`] is a
//! command on a terminal (`mags exec -it`) over a WebSocket.

mod access;
mod cron;
mod follow;
mod interactive;
mod ndjson;
mod sandbox;
mod tokens;
mod workspaces;

pub use follow::{OutputFollower, OutputItem};
pub use interactive::{TtyEvent, TtyReader, TtySession, TtyWriter};
pub use sandbox::{ExecItem, ExecStream};

use mags_api::{
    CreateJobRequest, CreateJobResponse, DeleteJobResponse, ErrorBody, Health, JobList, JobStatus,
    LogsResponse, PoolStatus, UsageResponse, WhoAmI,
};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Errors from the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status.
    #[error("{message} (HTTP {status})")]
    Api { status: StatusCode, message: String },
    #[error("cannot reach {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("HTTP error: {0}")]
    Http(#[from] reqwest::Error),
    #[error("unexpected answer from the server: {0}")]
    Decode(String),
    #[error("invalid API URL {0:?}")]
    InvalidUrl(String),
}

impl ClientError {
    /// The HTTP status, for errors the server answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A client for one server and token; cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("Client")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for the server at `base_url` (e.g. `http://127.0.0.1:7070`).
    pub fn new(base_url: &str, token: &str) -> Result<Client, ClientError> {
        let base = base_url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::InvalidUrl(base_url.to_string()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Client {
            http,
            base,
            token: token.to_string(),
        })
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}/api/v1{path}", self.base))
            .bearer_auth(&self.token)
    }

    async fn send(&self, req: RequestBuilder) -> Result<Response, ClientError> {
        let resp = req.send().await.map_err(|source| {
            if source.is_connect() || source.is_timeout() {
                ClientError::Connect {
                    url: self.base.clone(),
                    source,
                }
            } else {
                ClientError::Http(source)
            }
        })?;
        check(resp).await
    }

    async fn json<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T, ClientError> {
        let resp = self.send(req).await?;
        let bytes = resp.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// `GET /health` (no token needed).
    pub async fn health(&self) -> Result<Health, ClientError> {
        let req = self
            .http
            .get(format!("{}/health", self.base))
            .timeout(Duration::from_secs(5));
        self.json(req).await
    }

    /// `POST /mags-jobs`.
    pub async fn create_job(
        &self,
        req: &CreateJobRequest,
    ) -> Result<CreateJobResponse, ClientError> {
        self.json(self.request(Method::POST, "/mags-jobs").json(req))
            .await
    }

    /// `GET /mags-jobs/{id}/status`.
    pub async fn job_status(&self, id: &str) -> Result<JobStatus, ClientError> {
        self.json(self.request(Method::GET, &format!("/mags-jobs/{}/status", seg(id))))
            .await
    }

    /// `GET /mags-jobs/{id}/logs`.
    pub async fn job_logs(&self, id: &str) -> Result<LogsResponse, ClientError> {
        self.json(self.request(Method::GET, &format!("/mags-jobs/{}/logs", seg(id))))
            .await
    }

    /// `DELETE /mags-jobs/{id}`: deletes an ended job and its stored
    /// output (409 while the job is live).
    pub async fn delete_job(&self, id: &str) -> Result<DeleteJobResponse, ClientError> {
        self.json(self.request(Method::DELETE, &format!("/mags-jobs/{}", seg(id))))
            .await
    }

    /// `GET /mags-jobs?page=&page_size=` (newest first).
    pub async fn list_jobs(&self, page: u32, page_size: u32) -> Result<JobList, ClientError> {
        let req = self
            .request(Method::GET, "/mags-jobs")
            .query(&[("page", page), ("page_size", page_size)]);
        self.json(req).await
    }

    /// `GET /mags-jobs/usage?window_days=`.
    pub async fn usage(&self, window_days: u32) -> Result<UsageResponse, ClientError> {
        let req = self
            .request(Method::GET, "/mags-jobs/usage")
            .query(&[("window_days", window_days)]);
        self.json(req).await
    }

    /// `GET /mags-jobs/pool-status`.
    pub async fn pool_status(&self) -> Result<PoolStatus, ClientError> {
        self.json(self.request(Method::GET, "/mags-jobs/pool-status"))
            .await
    }

    /// `GET /whoami`.
    pub async fn whoami(&self) -> Result<WhoAmI, ClientError> {
        self.json(self.request(Method::GET, "/whoami")).await
    }

    /// Opens the output stream of a job: chunks with `seq > after`, and
    /// with `follow` until the job ends.
    pub async fn output_stream(
        &self,
        id: &str,
        after: i64,
        follow: bool,
    ) -> Result<Response, ClientError> {
        let req = self
            .request(Method::GET, &format!("/mags-jobs/{}/output", seg(id)))
            .query(&[("after", after.to_string()), ("follow", follow.to_string())]);
        self.send(req).await
    }

    /// Follows a job's output to its end; see [`OutputFollower`].
    pub fn follow_output(&self, id: &str) -> OutputFollower {
        OutputFollower::new(self.clone(), id)
    }

    /// The id of the job `name_or_id` refers to: strings of 32 or more
    /// characters containing `-` are ids; otherwise, among the 50 newest
    /// jobs, an exact name match that is running/sleeping, then a
    /// workspace match running/sleeping, then a name match in any state,
    /// then a workspace match in any state.
    pub async fn resolve_job(&self, name_or_id: &str) -> Result<String, ClientError> {
        if looks_like_id(name_or_id) {
            return Ok(name_or_id.to_string());
        }
        let jobs = self.list_jobs(1, 50).await?.jobs;
        pick_job(&jobs, name_or_id)
            .map(|j| j.request_id.clone())
            .ok_or_else(|| ClientError::Api {
                status: StatusCode::NOT_FOUND,
                message: format!("no job found for {name_or_id:?}"),
            })
    }
}

/// The clients' rule for telling ids from names.
pub fn looks_like_id(s: &str) -> bool {
    s.len() >= 32 && s.contains('-')
}

/// Name resolution over a list of jobs (see [`Client::resolve_job`]).
pub fn pick_job<'a>(jobs: &'a [JobStatus], name: &str) -> Option<&'a JobStatus> {
    let by_name = |j: &&JobStatus| j.name.as_deref() == Some(name);
    let by_ws = |j: &&JobStatus| j.workspace_id.as_deref() == Some(name);
    let live = |j: &&JobStatus| j.status.is_live();
    jobs.iter()
        .find(|j| by_name(j) && live(j))
        .or_else(|| jobs.iter().find(|j| by_ws(j) && live(j)))
        .or_else(|| jobs.iter().find(by_name))
        .or_else(|| jobs.iter().find(by_ws))
}

/// Escapes a path segment (ids are plain, but names typed by users may not be).
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Turns an error status into [`ClientError::Api`] with the server's message.
async fn check(resp: Response) -> Result<Response, ClientError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let text = resp.text().await.unwrap_or_default();
    let message = serde_json::from_str::<ErrorBody>(&text)
        .map(|b| b.error)
        .or_else(|_| {
            serde_json::from_str::<serde_json::Value>(&text).map(|v| {
                v.get("message")
                    .and_then(|m| m.as_str())
                    .unwrap_or(&text)
                    .to_string()
            })
        })
        .unwrap_or_else(|_| {
            if text.trim().is_empty() {
                status.canonical_reason().unwrap_or("error").to_string()
            } else {
                text.trim().to_string()
            }
        });
    Err(ClientError::Api { status, message })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mags_api::JobState;

    fn job(id: &str, name: Option<&str>, ws: Option<&str>, status: JobState) -> JobStatus {
        JobStatus {
            request_id: id.into(),
            id: id.into(),
            name: name.map(Into::into),
            status,
            vm_id: None,
            workspace_id: ws.map(Into::into),
            base_workspace_id: None,
            persistent: false,
            subdomain: None,
            url: None,
            exit_code: None,
            script_duration_ms: None,
            disk_gb: 2,
            created_at: String::new(),
            started_at: None,
            finished_at: None,
            error: None,
            no_sleep: false,
            startup_command: None,
            idle_timeout_secs: None,
            timeout: None,
            vm_seconds: 0.0,
            output_bytes: 0,
            output_pruned: false,
        }
    }

    #[test]
    fn resolution_order() {
        let jobs = vec![
            job("1", Some("a"), None, JobState::Completed),
            job("2", None, Some("a"), JobState::Completed),
            job("3", Some("x"), Some("a"), JobState::Running),
            job("4", Some("a"), None, JobState::Sleeping),
        ];
        assert_eq!(pick_job(&jobs, "a").map(|j| j.id.as_str()), Some("4"));
        assert_eq!(pick_job(&jobs[..3], "a").map(|j| j.id.as_str()), Some("3"));
        assert_eq!(pick_job(&jobs[..2], "a").map(|j| j.id.as_str()), Some("1"));
        assert_eq!(pick_job(&jobs[1..2], "a").map(|j| j.id.as_str()), Some("2"));
        assert!(pick_job(&jobs, "zzz").is_none());
    }

    #[test]
    fn ids_and_segments() {
        assert!(looks_like_id("0b7f3c3e-4a59-4c7b-9a57-1d8e5c3f2a10"));
        assert!(!looks_like_id("my-workspace"));
        assert_eq!(seg("a b/c"), "a%20b%2Fc");
    }
}
