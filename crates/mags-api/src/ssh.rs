//! Reaching into a live sandbox as a user would at a terminal: SSH access
//! (`POST /mags-jobs/{id}/access` with port 22) and the terminal WebSocket
//! of `mags exec -it`.

use serde::{Deserialize, Serialize};

/// The port that asks `/access` for SSH rather than a URL.
pub const SSH_PORT: u16 = 22;

/// `POST /mags-jobs/{id}/access` with port 22: where to connect and a key
/// that opens this sandbox (and no other) until it stops. A fresh key
/// every call; the server keeps only its public half's fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SshAccessResponse {
    pub success: bool,
    pub ssh_host: String,
    pub ssh_port: u16,
    /// OpenSSH-format ed25519 private key (`-----BEGIN OPENSSH PRIVATE KEY-----`).
    pub ssh_private_key: String,
    /// Login name to use (any is accepted; the shell runs as root).
    #[serde(default)]
    pub ssh_user: String,
}

/// Body of a failed SSH `/access`: `{"success": false, "error"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SshAccessError {
    pub success: bool,
    pub error: String,
}

/// Query of `GET /mags-jobs/{id}/exec/tty` (a WebSocket upgrade): what to
/// run on a terminal of what size. Without `command`, a login shell.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TtyQuery {
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub rows: Option<u16>,
    #[serde(default)]
    pub cols: Option<u16>,
    /// `TERM` in the sandbox; default `xterm-256color`.
    #[serde(default)]
    pub term: Option<String>,
}

/// Text frames the client sends on the terminal WebSocket. Binary frames
/// are keystrokes (bytes typed into the terminal, Ctrl-C included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TtyClientMsg {
    /// The client's terminal changed size.
    Resize { rows: u16, cols: u16 },
}

/// Text frames the server sends on the terminal WebSocket, each the last
/// before it closes. Binary frames are the terminal's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TtyServerMsg {
    /// The command ended with this exit code (128 + signal if killed).
    Exit { exit_code: i32 },
    /// The session failed (the sandbox went away, the server shuts down).
    Error { error: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tty_messages_have_the_documented_shape() {
        let r: TtyClientMsg =
            serde_json::from_str(r#"{"type":"resize","rows":40,"cols":120}"#).expect("resize");
        assert_eq!(
            r,
            TtyClientMsg::Resize {
                rows: 40,
                cols: 120
            }
        );
        assert_eq!(
            serde_json::to_string(&TtyServerMsg::Exit { exit_code: 3 }).expect("json"),
            r#"{"type":"exit","exit_code":3}"#
        );
    }
}
