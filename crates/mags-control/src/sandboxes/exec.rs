//! Running a command in a sandbox: [`ExecRun`] forwards the process's
//! events from a task that keeps the sandbox [`Busy`]; if the caller goes
//! away (drops the run), the command is killed.

use super::{Busy, SandboxError, Shared};
use crate::executor::{bash, ExecError, ProcessEvent, VmProcess};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// SIGKILL.
const KILL: i32 = 9;

/// A command running in a sandbox.
pub struct ExecRun {
    rx: mpsc::Receiver<Result<ProcessEvent, ExecError>>,
    started: Instant,
}

impl ExecRun {
    fn start(mut process: Box<dyn VmProcess>, busy: Busy) -> ExecRun {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let _busy = busy;
            loop {
                tokio::select! {
                    ev = process.next_event() => {
                        let (item, last) = match ev {
                            Ok(Some(e)) => {
                                let last = matches!(e, ProcessEvent::Exited { .. });
                                (Ok(e), last)
                            }
                            Ok(None) => return,
                            Err(e) => (Err(e), true),
                        };
                        if tx.send(item).await.is_err() {
                            let _ = process.signal(KILL).await;
                            return;
                        }
                        if last {
                            return;
                        }
                    }
                    _ = tx.closed() => {
                        let _ = process.signal(KILL).await;
                        return;
                    }
                }
            }
        });
        ExecRun {
            rx,
            started: Instant::now(),
        }
    }

    /// The next event: output, then `Exited`; or an error if the sandbox
    /// failed under the command. `None` after either.
    pub async fn next(&mut self) -> Option<Result<ProcessEvent, ExecError>> {
        self.rx.recv().await
    }

    /// When the command started (after any wake).
    pub fn started(&self) -> Instant {
        self.started
    }
}

impl Shared {
    pub(super) async fn exec(
        self: &Arc<Self>,
        job_id: &str,
        command: &str,
        timeout: Option<Duration>,
    ) -> Result<ExecRun, SandboxError> {
        let entry = self.live_or_adopted(job_id).await?;
        let (vm, busy) = self.acquire(&entry).await?;
        let timeout_ms = timeout.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let process = vm
            .run(bash(command, &entry.spec.environment, timeout_ms))
            .await
            .map_err(|e| SandboxError::Unavailable(e.to_string()))?;
        Ok(ExecRun::start(process, busy))
    }
}
