//! `mags-agent --stdio` with the host's real client, for the tests that
//! exercise the protocol without a VM.

use mags_vm::AgentConn;
use std::process::Stdio;
use std::time::Duration;

/// A fresh agent process and a connection to it, handshaken within `within`.
pub async fn agent(within: Duration) -> (AgentConn, tokio::process::Child) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mags-agent"))
        .arg("--stdio")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn agent");
    let w = child.stdin.take().expect("stdin");
    let r = child.stdout.take().expect("stdout");
    let conn = AgentConn::handshake(r, w, within).await.expect("handshake");
    (conn, child)
}
