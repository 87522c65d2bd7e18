//! A fake [`Executor`] for tests: its "VMs" interpret a tiny script
//! language instead of booting, and run nothing on the host.
//!
//! One command per line (of a job's script or an exec'd command); the first
//! word decides:
//! - `echo TEXT` prints `TEXT\n` to stdout (`echo TEXT >&2`: to stderr);
//! - `printf TEXT` prints TEXT without a newline (`\n` escapes honoured);
//! - `hex HEX` prints raw bytes to stdout;
//! - `repeat N TEXT` prints N lines of `TEXT`;
//! - `sleep SECONDS` waits (fractions allowed, `infinity` is an hour);
//! - `exit N` ends the script with status N;
//! - `fail MESSAGE` as a job's first line fails like a VM that cannot
//!   start; later, like a VM lost under the script;
//! - `die` kills the VM (as if QEMU crashed);
//! - anything else prints a "command not found" line to stderr and exits 127.
//!
//! A script that falls off its end exits 0. A timeout kills the command
//! with status 137. Sleeping a fake VM remembers its id; waking gives a new
//! handle with the same id (no process survives, unlike real VMs).

use super::{ExecError, Executor, JobSpec, ProcessEvent, RunSpec, Vm, VmProcess};
use futures::future::BoxFuture;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// See the module docs.
#[derive(Debug, Default, Clone)]
pub struct FakeExecutor {
    slept: Arc<Mutex<HashSet<String>>>,
    started: Arc<AtomicUsize>,
}

impl FakeExecutor {
    pub fn new() -> Self {
        FakeExecutor::default()
    }

    /// How many VMs were started (not woken) so far.
    pub fn started(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }

    fn slept(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.slept.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Executor for FakeExecutor {
    fn start(&self, job: &JobSpec) -> BoxFuture<'_, Result<Arc<dyn Vm>, ExecError>> {
        let first = job.script.lines().map(str::trim).next().unwrap_or("");
        let result = match first.strip_prefix("fail ") {
            Some(msg) => Err(ExecError::Start(msg.to_string())),
            None => {
                let n = self.started.fetch_add(1, Ordering::SeqCst);
                let short: String = job.id.chars().take(8).collect();
                Ok(FakeVm::boxed(format!("fake-{short}-{n}"), self.clone()))
            }
        };
        Box::pin(async move { result })
    }

    fn wake(&self, vm_id: &str) -> BoxFuture<'_, Result<Arc<dyn Vm>, ExecError>> {
        let result = if self.slept().remove(vm_id) {
            Ok(FakeVm::boxed(vm_id.to_string(), self.clone()))
        } else {
            Err(ExecError::Wake(format!("no sleep snapshot of {vm_id}")))
        };
        Box::pin(async move { result })
    }

    fn has_snapshot(&self, vm_id: &str) -> bool {
        self.slept().contains(vm_id)
    }

    fn discard_snapshot(&self, vm_id: &str) {
        self.slept().remove(vm_id);
    }

    fn accel(&self) -> Option<String> {
        Some("fake".into())
    }
}

/// A fake VM; its processes end (as lost) when it stops, sleeps or dies.
struct FakeVm {
    id: String,
    exec: FakeExecutor,
    alive: Arc<AtomicBool>,
    gone: watch::Sender<bool>,
}

impl FakeVm {
    fn boxed(id: String, exec: FakeExecutor) -> Arc<dyn Vm> {
        Arc::new(FakeVm {
            id,
            exec,
            alive: Arc::new(AtomicBool::new(true)),
            gone: watch::channel(false).0,
        })
    }

    fn check(&self) -> Result<(), ExecError> {
        if self.alive.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(ExecError::Lost("the fake VM is not running".into()))
        }
    }

    fn end(&self) {
        self.alive.store(false, Ordering::SeqCst);
        let _ = self.gone.send(true);
    }
}

impl Vm for FakeVm {
    fn id(&self) -> &str {
        &self.id
    }

    fn run(&self, spec: RunSpec) -> BoxFuture<'_, Result<Box<dyn VmProcess>, ExecError>> {
        let result = self.check().map(|()| {
            let script = spec.argv.get(2).cloned().unwrap_or_default();
            let (tx, rx) = mpsc::channel(64);
            let (kill, killed) = watch::channel(false);
            let ctx = Ctx {
                tx,
                alive: self.alive.clone(),
                gone: self.gone.clone(),
            };
            let mut gone = self.gone.subscribe();
            let timeout = spec.timeout_ms.map(Duration::from_millis);
            tokio::spawn(async move {
                let mut killed = killed;
                let outcome = tokio::select! {
                    r = interpret(&script, &ctx) => r,
                    _ = wait_true(&mut gone) => Err(ExecError::Lost("the fake VM stopped".into())),
                    _ = wait_true(&mut killed) => Ok(137),
                    _ = sleep_or_forever(timeout) => {
                        let _ = ctx.tx.send(Ok(ProcessEvent::Exited { code: 137, signal: Some(9), timed_out: true })).await;
                        return;
                    }
                };
                let last = match outcome {
                    Ok(code) => Ok(ProcessEvent::Exited {
                        code,
                        signal: None,
                        timed_out: false,
                    }),
                    Err(e) => Err(e),
                };
                let _ = ctx.tx.send(last).await;
            });
            Box::new(FakeProc { rx, kill, done: false }) as Box<dyn VmProcess>
        });
        Box::pin(async move { result })
    }

    fn sync(&self) -> BoxFuture<'_, Result<(), ExecError>> {
        let r = self.check();
        Box::pin(async move { r })
    }

    fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    fn agent(&self) -> Option<mags_vm::AgentConn> {
        None
    }

    fn sleep(&self) -> BoxFuture<'_, Result<(), ExecError>> {
        let r = self.check().map(|()| {
            self.end();
            self.exec.slept().insert(self.id.clone());
        });
        Box::pin(async move { r })
    }

    fn shutdown(&self) -> BoxFuture<'_, Result<(), ExecError>> {
        let r = self.check();
        self.end();
        Box::pin(async move { r })
    }
}

async fn wait_true(rx: &mut watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

async fn sleep_or_forever(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

struct FakeProc {
    rx: mpsc::Receiver<Result<ProcessEvent, ExecError>>,
    kill: watch::Sender<bool>,
    done: bool,
}

impl VmProcess for FakeProc {
    fn next_event(&mut self) -> BoxFuture<'_, Result<Option<ProcessEvent>, ExecError>> {
        Box::pin(async move {
            if self.done {
                return Ok(None);
            }
            match self.rx.recv().await {
                Some(Ok(ev)) => {
                    self.done = matches!(ev, ProcessEvent::Exited { .. });
                    Ok(Some(ev))
                }
                Some(Err(e)) => {
                    self.done = true;
                    Err(e)
                }
                None => Err(ExecError::Lost("the fake VM went away".into())),
            }
        })
    }

    fn signal(&self, _signal: i32) -> BoxFuture<'_, Result<(), ExecError>> {
        let _ = self.kill.send(true);
        Box::pin(async { Ok(()) })
    }
}

struct Ctx {
    tx: mpsc::Sender<Result<ProcessEvent, ExecError>>,
    alive: Arc<AtomicBool>,
    gone: watch::Sender<bool>,
}

impl Ctx {
    async fn out(&self, data: impl Into<Vec<u8>>) {
        let _ = self.tx.send(Ok(ProcessEvent::Stdout(data.into()))).await;
    }

    async fn err(&self, data: impl Into<Vec<u8>>) {
        let _ = self.tx.send(Ok(ProcessEvent::Stderr(data.into()))).await;
    }
}

/// Runs a script of the tiny language; its exit code.
async fn interpret(script: &str, ctx: &Ctx) -> Result<i32, ExecError> {
    for line in script.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (cmd, arg) = line.split_once(' ').unwrap_or((line, ""));
        match cmd {
            "echo" => match arg.strip_suffix(">&2") {
                Some(text) => ctx.err(format!("{}\n", text.trim_end())).await,
                None => ctx.out(format!("{arg}\n")).await,
            },
            "printf" => ctx.out(arg.replace("\\n", "\n")).await,
            "hex" => match hex::decode(arg.trim()) {
                Ok(bytes) => ctx.out(bytes).await,
                Err(e) => return Err(ExecError::Lost(format!("bad hex: {e}"))),
            },
            "repeat" => {
                let (n, text) = arg.split_once(' ').unwrap_or((arg, ""));
                for _ in 0..n.parse::<u64>().unwrap_or(0) {
                    ctx.out(format!("{text}\n")).await;
                }
            }
            "sleep" => {
                let secs = arg.trim().parse::<f64>().unwrap_or(0.0).clamp(0.0, 3600.0);
                tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            }
            "exit" => return Ok(arg.trim().parse().unwrap_or(1)),
            "fail" => return Err(ExecError::Lost(arg.to_string())),
            "die" => {
                ctx.alive.store(false, Ordering::SeqCst);
                let _ = ctx.gone.send(true);
                return Err(ExecError::Lost("the fake VM died".into()));
            }
            _ => {
                ctx.err(format!("bash: {cmd}: command not found\n")).await;
                return Ok(127);
            }
        }
    }
    Ok(0)
}
