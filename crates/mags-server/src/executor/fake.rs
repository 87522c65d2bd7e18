//! A fake [`Executor`] for tests: it interprets a tiny script language
//! instead of booting a VM, and runs nothing on the host.
//!
//! One command per line; the first word decides:
//! - `echo TEXT` prints `TEXT\n` to stdout (`echo TEXT >&2`: to stderr);
//! - `printf TEXT` prints TEXT without a newline (`\n` escapes honoured);
//! - `hex HEX` prints raw bytes to stdout;
//! - `repeat N TEXT` prints N lines of `TEXT`;
//! - `sleep SECONDS` waits (fractions allowed);
//! - `exit N` ends the script with status N;
//! - `fail MESSAGE` fails like a VM that cannot start (before `running`);
//! - anything else prints a "command not found" line to stderr and exits 127.
//!
//! A script that falls off its end exits 0.

use super::{ExecError, Executor, ExitInfo, JobSpec, OutputSink};
use futures::future::BoxFuture;
use std::time::{Duration, Instant};

/// See the module docs.
#[derive(Debug, Default, Clone)]
pub struct FakeExecutor;

impl FakeExecutor {
    pub fn new() -> Self {
        FakeExecutor
    }
}

impl Executor for FakeExecutor {
    fn run(&self, job: JobSpec, sink: OutputSink) -> BoxFuture<'_, Result<ExitInfo, ExecError>> {
        Box::pin(run_fake(job, sink))
    }

    fn accel(&self) -> Option<String> {
        Some("fake".into())
    }
}

async fn run_fake(job: JobSpec, sink: OutputSink) -> Result<ExitInfo, ExecError> {
    let lines: Vec<&str> = job.script.lines().map(str::trim).collect();
    if let Some(msg) = lines.first().and_then(|l| l.strip_prefix("fail ")) {
        return Err(ExecError::Start(msg.to_string()));
    }
    let short: String = job.id.chars().take(8).collect();
    sink.running(&format!("fake-{short}"))
        .await
        .map_err(|e| ExecError::Start(e.to_string()))?;
    let started = Instant::now();
    let mut exit_code = 0;
    for line in lines.into_iter().filter(|l| !l.is_empty()) {
        let (cmd, arg) = line.split_once(' ').unwrap_or((line, ""));
        match cmd {
            "echo" => match arg.strip_suffix(">&2") {
                Some(text) => sink.stderr(format!("{}\n", text.trim_end())).await,
                None => sink.stdout(format!("{arg}\n")).await,
            },
            "printf" => sink.stdout(arg.replace("\\n", "\n")).await,
            "hex" => match hex::decode(arg.trim()) {
                Ok(bytes) => sink.stdout(bytes).await,
                Err(e) => return Err(ExecError::Lost(format!("bad hex: {e}"))),
            },
            "repeat" => {
                let (n, text) = arg.split_once(' ').unwrap_or((arg, ""));
                for _ in 0..n.parse::<u64>().unwrap_or(0) {
                    sink.stdout(format!("{text}\n")).await;
                }
            }
            "sleep" => {
                let secs = arg.trim().parse::<f64>().unwrap_or(0.0).clamp(0.0, 3600.0);
                tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            }
            "exit" => {
                exit_code = arg.trim().parse().unwrap_or(1);
                break;
            }
            "fail" => return Err(ExecError::Lost(arg.to_string())),
            _ => {
                sink.stderr(format!("bash: {cmd}: command not found\n"))
                    .await;
                exit_code = 127;
                break;
            }
        }
    }
    Ok(ExitInfo {
        exit_code,
        timed_out: false,
        script_duration_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
    })
}
