//! Long-lived (persistent) sandboxes: `POST /mags-jobs/{id}/exec` and our
//! streaming variant `/exec/stream`, `PATCH /mags-jobs/{id}`,
//! `POST /mags-jobs/{id}/stop` and `/sync`.

use crate::jobs::{JobState, OutputStream};
use serde::{Deserialize, Serialize};

/// Seconds an exec may run when the request does not say (the contract's
/// default).
pub const DEFAULT_EXEC_TIMEOUT_SECS: f64 = 30.0;

/// Exit code reported for a command killed by its timeout (as `timeout(1)`).
pub const TIMEOUT_EXIT_CODE: i32 = 124;

/// Body of `POST /mags-jobs/{id}/exec` and `/exec/stream`.
///
/// `command` is required; the server checks it (so the error is readable),
/// hence the default here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ExecRequest {
    /// Run as `bash -c <command>` in `/root`.
    #[serde(default)]
    pub command: String,
    /// Seconds before the command is killed. `/exec` defaults to
    /// [`DEFAULT_EXEC_TIMEOUT_SECS`]; `/exec/stream` to no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
}

/// Body of the answer to `POST /mags-jobs/{id}/exec`. Output that is not
/// UTF-8 is replaced (use `/exec/stream` for exact bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ExecResponse {
    /// The command's exit status (128 + signal if killed;
    /// [`TIMEOUT_EXIT_CODE`] if its timeout killed it).
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    #[serde(default)]
    pub timed_out: bool,
    /// From starting the command to its exit (a wake before it not counted).
    #[serde(default)]
    pub duration_ms: i64,
}

/// One line of the NDJSON body of `POST /mags-jobs/{id}/exec/stream`: output
/// as it is produced, then `exit` (or `error`); nothing follows either.
/// Bytes are in `data` when valid UTF-8, else base64 in `data_b64`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ExecEvent {
    Output {
        stream: OutputStream,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data_b64: Option<String>,
    },
    Exit {
        exit_code: i32,
        #[serde(default)]
        timed_out: bool,
    },
    /// The sandbox failed under the command (stopped, or its VM died).
    Error { error: String },
}

/// Body of `PATCH /mags-jobs/{id}`: only the fields present change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UpdateJobRequest {
    /// An empty string removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_sleep: Option<bool>,
    /// Ours: idle seconds before sleeping; 0 returns to the server default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_secs: Option<u64>,
}

/// Answer of `POST /mags-jobs/{id}/stop` and `/sync`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ActionResponse {
    pub success: bool,
    pub request_id: String,
    /// The job's status after the action.
    pub status: JobState,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_request_takes_the_sdk_shape() {
        let r: ExecRequest =
            serde_json::from_str(r#"{"command":"ls","timeout":30}"#).expect("parses");
        assert_eq!(r.command, "ls");
        assert_eq!(r.timeout, Some(30.0));
        let r: ExecRequest = serde_json::from_str(r#"{"command":"ls"}"#).expect("parses");
        assert_eq!(r.timeout, None);
    }

    #[test]
    fn exec_events_are_tagged() {
        let e = ExecEvent::Exit {
            exit_code: 3,
            timed_out: false,
        };
        assert_eq!(
            serde_json::to_string(&e).expect("serializes"),
            r#"{"event":"exit","exit_code":3,"timed_out":false}"#
        );
    }
}
