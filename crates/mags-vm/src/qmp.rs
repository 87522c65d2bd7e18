//! A minimal QMP client: JSON lines over QEMU's monitor socket.

use crate::VmError;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// See [`Qmp::execute`].
const ANSWER_WITHIN: Duration = Duration::from_secs(60);

pub struct Qmp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

fn err(e: impl std::fmt::Display) -> VmError {
    VmError::Other(format!("QMP: {e}"))
}

impl Qmp {
    /// Connects (retrying while QEMU creates the socket) and negotiates capabilities.
    pub async fn connect(path: &Path, within: Duration) -> Result<Self, VmError> {
        let deadline = Instant::now() + within;
        let stream = loop {
            match tokio::net::UnixStream::connect(path).await {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(1)).await
                }
                Err(e) => return Err(VmError::io(path, e)),
            }
        };
        let (r, w) = stream.into_split();
        let mut qmp = Qmp {
            reader: BufReader::new(r),
            writer: w,
        };
        tokio::time::timeout(ANSWER_WITHIN, qmp.read_value())
            .await
            .map_err(|_| err("no greeting from QEMU"))??;
        qmp.execute("qmp_capabilities", json!({})).await?;
        Ok(qmp)
    }

    async fn read_value(&mut self) -> Result<Value, VmError> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).await.map_err(err)? == 0 {
            return Err(err("QEMU closed the monitor"));
        }
        serde_json::from_str(&line).map_err(err)
    }

    /// Runs a command and returns its `return` value; events are skipped.
    /// QEMU answers in milliseconds: one that has not in [`ANSWER_WITHIN`]
    /// is stuck, and the caller gets an error instead of waiting forever.
    pub async fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, VmError> {
        tokio::time::timeout(ANSWER_WITHIN, self.execute_now(command, arguments))
            .await
            .map_err(|_| {
                err(format!(
                    "{command}: no answer within {} s",
                    ANSWER_WITHIN.as_secs()
                ))
            })?
    }

    async fn execute_now(&mut self, command: &str, arguments: Value) -> Result<Value, VmError> {
        let mut req = json!({ "execute": command });
        if arguments.as_object().is_some_and(|o| !o.is_empty()) {
            req["arguments"] = arguments;
        }
        let mut bytes = serde_json::to_vec(&req).map_err(err)?;
        bytes.push(b'\n');
        self.writer.write_all(&bytes).await.map_err(err)?;
        loop {
            let v = self.read_value().await?;
            if v.get("event").is_some() {
                continue;
            }
            if let Some(e) = v.get("error") {
                return Err(err(format!("{command}: {e}")));
            }
            return Ok(v.get("return").cloned().unwrap_or(Value::Null));
        }
    }

    /// Polls `query-migrate` until it completes; fails if it failed.
    pub async fn wait_migration(&mut self, within: Duration) -> Result<(), VmError> {
        let deadline = Instant::now() + within;
        loop {
            let st = self.execute("query-migrate", json!({})).await?;
            match st.get("status").and_then(Value::as_str) {
                Some("completed") => return Ok(()),
                Some(s @ ("failed" | "cancelled")) => {
                    return Err(err(format!("migration {s}: {st}")));
                }
                _ if Instant::now() > deadline => return Err(err("migration timed out")),
                _ => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    }

    /// Grows the writable disk (the drive QEMU knows as `disk`) to `bytes`.
    /// QEMU extends the image and raises a config interrupt, so the guest
    /// kernel sees the new size at once.
    pub async fn resize_disk(&mut self, bytes: u64) -> Result<(), VmError> {
        self.execute("block_resize", json!({"device": "disk", "size": bytes}))
            .await
            .map(|_| ())
    }

    /// Requests to the writable disk that failed on the host (reads, writes,
    /// flushes; `query-blockstats`). The guest saw each as an I/O error
    /// (`werror=report`).
    pub async fn disk_failures(&mut self) -> Result<u64, VmError> {
        let stats = self.execute("query-blockstats", json!({})).await?;
        let disk = stats
            .as_array()
            .and_then(|all| all.iter().find(|d| d["device"] == "disk"))
            .ok_or_else(|| VmError::Other("query-blockstats has no device \"disk\"".into()))?;
        Ok([
            "failed_rd_operations",
            "failed_wr_operations",
            "failed_flush_operations",
        ]
        .iter()
        .filter_map(|k| disk["stats"][k].as_u64())
        .sum())
    }
}
