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
//! - `cat` copies stdin to stdout until stdin closes (or, on a terminal,
//!   until a Ctrl-D byte); `cat PATH` prints a file [`Vm::write_file`]
//!   wrote (or fails, exit 1);
//! - `stty size` prints the terminal's `ROWS COLS` (resizes show; exit 1
//!   without a terminal);
//! - `df` prints the size of the VM's disk in bytes (its `disk_gb` at
//!   start, grown by [`Vm::grow_disk`]);
//! - anything else prints a "command not found" line to stderr and exits 127.
//!
//! A script that falls off its end exits 0. A timeout kills the command
//! with status 137, and so does a signal. Sleeping a fake VM remembers its
//! id; waking gives a new handle with the same id (no process survives,
//! unlike real VMs; files and the disk size do).
//!
//! Every port of a fake VM answers [`Vm::open_tunnel`] with a tiny HTTP
//! server: one answer per connection, `200 OK` with the text
//! `fake VM <id> port <port>: <METHOD> <path> host <Host>\n`, so a test
//! sees which sandbox and port a request reached.

use super::{
    ExecError, Executor, FileSource, JobSpec, ProcessEvent, ProcessInput, RunSpec, Tunnel, Vm,
    VmProcess,
};
use futures::future::BoxFuture;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{mpsc, watch};

/// See the module docs.
#[derive(Debug, Default, Clone)]
pub struct FakeExecutor {
    slept: Arc<Mutex<HashSet<String>>>,
    started: Arc<AtomicUsize>,
    /// How many times a VM was synced ([`Vm::sync`]).
    syncs: Arc<AtomicUsize>,
    /// Per VM id: its files (path to content) and disk size.
    disks: Arc<Mutex<HashMap<String, FakeDisk>>>,
}

#[derive(Debug, Default)]
struct FakeDisk {
    bytes: u64,
    files: HashMap<String, Vec<u8>>,
}

impl FakeExecutor {
    pub fn new() -> Self {
        FakeExecutor::default()
    }

    /// How many VMs were started (not woken) so far.
    pub fn started(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }

    /// How many syncs the VMs were asked for so far.
    pub fn syncs(&self) -> usize {
        self.syncs.load(Ordering::SeqCst)
    }

    /// The size of VM `vm_id`'s disk in bytes, if it was ever started.
    pub fn disk_bytes(&self, vm_id: &str) -> Option<u64> {
        self.disks().get(vm_id).map(|d| d.bytes)
    }

    /// A file written into VM `vm_id` ([`Vm::write_file`]).
    pub fn file(&self, vm_id: &str, path: &str) -> Option<Vec<u8>> {
        self.disks().get(vm_id)?.files.get(path).cloned()
    }

    fn slept(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.slept.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn disks(&self) -> std::sync::MutexGuard<'_, HashMap<String, FakeDisk>> {
        self.disks.lock().unwrap_or_else(|p| p.into_inner())
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
                let id = format!("fake-{short}-{n}");
                self.disks().insert(
                    id.clone(),
                    FakeDisk {
                        bytes: u64::from(job.disk_gb) << 30,
                        files: HashMap::new(),
                    },
                );
                Ok(FakeVm::boxed(id, self.clone()))
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
    frozen: AtomicBool,
}

impl FakeVm {
    fn boxed(id: String, exec: FakeExecutor) -> Arc<dyn Vm> {
        Arc::new(FakeVm {
            id,
            exec,
            alive: Arc::new(AtomicBool::new(true)),
            gone: watch::channel(false).0,
            frozen: AtomicBool::new(false),
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
            let (stdin_tx, stdin_rx) = mpsc::unbounded_channel();
            let size = Arc::new(Mutex::new(spec.pty.as_ref().map(|p| (p.rows, p.cols))));
            let input = Arc::new(FakeInput {
                stdin: stdin_tx,
                size: size.clone(),
                kill: Arc::new(kill),
            });
            let ctx = Ctx {
                tx,
                alive: self.alive.clone(),
                gone: self.gone.clone(),
                stdin: spec.stdin.then(|| tokio::sync::Mutex::new(stdin_rx)),
                size,
                exec: self.exec.clone(),
                vm_id: self.id.clone(),
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
            Box::new(FakeProc {
                rx,
                input,
                done: false,
            }) as Box<dyn VmProcess>
        });
        Box::pin(async move { result })
    }

    fn sync(&self) -> BoxFuture<'_, Result<(), ExecError>> {
        let r = self.check();
        self.exec.syncs.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move { r })
    }

    fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    fn open_tunnel(&self, port: u16) -> BoxFuture<'_, Result<Box<dyn Tunnel>, ExecError>> {
        let r = self.check().map(|()| {
            let (ours, theirs) = tokio::io::duplex(64 * 1024);
            tokio::spawn(answer_http(theirs, self.id.clone(), port));
            Box::new(ours) as Box<dyn Tunnel>
        });
        Box::pin(async move { r })
    }

    fn write_file<'a>(
        &'a self,
        path: &'a str,
        mode: u32,
        mut content: FileSource,
    ) -> BoxFuture<'a, Result<(), ExecError>> {
        let _ = mode;
        Box::pin(async move {
            self.check()?;
            if self.frozen.load(Ordering::SeqCst) {
                return Err(ExecError::Refused("the disk is frozen".into()));
            }
            let mut data = Vec::new();
            content
                .read_to_end(&mut data)
                .await
                .map_err(|e| ExecError::Lost(format!("reading {path}: {e}")))?;
            let mut disks = self.exec.disks();
            let disk = disks.entry(self.id.clone()).or_default();
            disk.files.insert(path.to_string(), data);
            Ok(())
        })
    }

    fn freeze(&self, _auto_thaw: Duration) -> BoxFuture<'_, Result<(), ExecError>> {
        let r = self.check().and_then(|()| {
            if self.frozen.swap(true, Ordering::SeqCst) {
                Err(ExecError::Refused("the disk is already frozen".into()))
            } else {
                Ok(())
            }
        });
        Box::pin(async move { r })
    }

    fn thaw(&self) -> BoxFuture<'_, Result<(), ExecError>> {
        let r = self
            .check()
            .map(|()| self.frozen.store(false, Ordering::SeqCst));
        Box::pin(async move { r })
    }

    fn grow_disk(&self, bytes: u64) -> BoxFuture<'_, Result<(), ExecError>> {
        let r = self.check().and_then(|()| {
            let mut disks = self.exec.disks();
            let disk = disks.entry(self.id.clone()).or_default();
            if bytes < disk.bytes {
                return Err(ExecError::Refused(format!(
                    "the disk is {} bytes; it cannot shrink to {bytes}",
                    disk.bytes
                )));
            }
            disk.bytes = bytes;
            Ok(())
        });
        Box::pin(async move { r })
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
    input: Arc<FakeInput>,
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

    fn signal(&self, signal: i32) -> BoxFuture<'_, Result<(), ExecError>> {
        self.input.signal(signal)
    }

    fn input(&self) -> Arc<dyn ProcessInput> {
        self.input.clone()
    }
}

/// What is sent to a fake process: stdin bytes, `None` for its end.
type Stdin = mpsc::UnboundedReceiver<Option<Vec<u8>>>;

struct FakeInput {
    stdin: mpsc::UnboundedSender<Option<Vec<u8>>>,
    /// The terminal's `(rows, cols)`; `None` without one.
    size: Arc<Mutex<Option<(u16, u16)>>>,
    kill: Arc<watch::Sender<bool>>,
}

impl ProcessInput for FakeInput {
    fn write<'a>(&'a self, data: &'a [u8]) -> BoxFuture<'a, Result<(), ExecError>> {
        let _ = self.stdin.send(Some(data.to_vec()));
        Box::pin(async { Ok(()) })
    }

    fn close(&self) -> BoxFuture<'_, Result<(), ExecError>> {
        let _ = self.stdin.send(None);
        Box::pin(async { Ok(()) })
    }

    fn resize(&self, rows: u16, cols: u16) -> BoxFuture<'_, Result<(), ExecError>> {
        let mut size = self.size.lock().unwrap_or_else(|p| p.into_inner());
        if size.is_some() {
            *size = Some((rows, cols));
        }
        Box::pin(async { Ok(()) })
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
    /// Set for a process started with `stdin`.
    stdin: Option<tokio::sync::Mutex<Stdin>>,
    size: Arc<Mutex<Option<(u16, u16)>>>,
    exec: FakeExecutor,
    vm_id: String,
}

impl Ctx {
    fn size(&self) -> Option<(u16, u16)> {
        *self.size.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `cat` without a file: stdin to stdout until it ends (on a
    /// terminal, also at a Ctrl-D byte).
    async fn cat_stdin(&self) {
        let Some(stdin) = &self.stdin else { return };
        let tty = self.size().is_some();
        let mut stdin = stdin.lock().await;
        while let Some(Some(data)) = stdin.recv().await {
            match data.iter().position(|&b| tty && b == 0x04) {
                Some(end) => {
                    if end > 0 {
                        self.out(data[..end].to_vec()).await;
                    }
                    return;
                }
                None => self.out(data).await,
            }
        }
    }
}

/// The fake's HTTP server on a port: reads one request head, answers it
/// with the VM id, port, method, path and `Host`, and closes.
async fn answer_http(mut io: tokio::io::DuplexStream, vm_id: String, port: u16) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        match io.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.lines();
    let mut first = lines.next().unwrap_or("").split(' ');
    let (method, path) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    let host = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("host"))
        .map_or("", |(_, v)| v.trim());
    let body = format!("fake VM {vm_id} port {port}: {method} {path} host {host}\n");
    let resp = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = io.write_all(resp.as_bytes()).await;
    let _ = io.shutdown().await;
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
            "cat" if arg.trim().is_empty() => ctx.cat_stdin().await,
            "cat" => {
                let path = arg.trim();
                match ctx.exec.file(&ctx.vm_id, path) {
                    Some(data) => ctx.out(data).await,
                    None => {
                        ctx.err(format!("cat: {path}: No such file or directory\n"))
                            .await;
                        return Ok(1);
                    }
                }
            }
            "stty" if arg.trim() == "size" => match ctx.size() {
                Some((rows, cols)) => ctx.out(format!("{rows} {cols}\n")).await,
                None => {
                    ctx.err("stty: 'standard input': Inappropriate ioctl for device\n")
                        .await;
                    return Ok(1);
                }
            },
            "df" => {
                let bytes = ctx.exec.disk_bytes(&ctx.vm_id).unwrap_or(0);
                ctx.out(format!("{bytes}\n")).await;
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::bash;

    fn job(disk_gb: u32) -> JobSpec {
        JobSpec {
            id: "job-1".into(),
            script: "sleep infinity".into(),
            environment: Default::default(),
            disk_gb,
            timeout_ms: None,
            variant: Default::default(),
            egress: Default::default(),
            workdir: crate::executor::SCRIPT_DIR,
        }
    }

    /// stdout of `command` in `vm`.
    async fn run(vm: &dyn Vm, command: &str) -> (i32, Vec<u8>) {
        let mut p = vm
            .run(bash(command, &Default::default(), None))
            .await
            .expect("run");
        let mut out = Vec::new();
        loop {
            match p.next_event().await.expect("event") {
                Some(ProcessEvent::Stdout(b)) => out.extend(b),
                Some(ProcessEvent::Exited { code, .. }) => return (code, out),
                Some(_) => {}
                None => panic!("no exit"),
            }
        }
    }

    #[tokio::test]
    async fn files_written_are_read_back_and_a_frozen_disk_refuses_writes() {
        let exec = FakeExecutor::new();
        let vm = exec.start(&job(2)).await.expect("start");
        let data: FileSource = Box::new(&b"a,b\n1,2\n"[..]);
        vm.write_file("/root/data.csv", 0o644, data)
            .await
            .expect("write");
        assert_eq!(
            run(vm.as_ref(), "cat /root/data.csv").await,
            (0, b"a,b\n1,2\n".to_vec())
        );
        assert_eq!(run(vm.as_ref(), "cat /root/other").await.0, 1);
        assert_eq!(
            exec.file(vm.id(), "/root/data.csv").as_deref(),
            Some(&b"a,b\n1,2\n"[..])
        );

        vm.freeze(Duration::from_secs(5)).await.expect("freeze");
        let again: FileSource = Box::new(&b"x"[..]);
        assert!(matches!(
            vm.write_file("/root/x", 0o644, again).await,
            Err(ExecError::Refused(_))
        ));
        vm.thaw().await.expect("thaw");
        vm.grow_disk(3 << 30).await.expect("grow");
        assert!(vm.grow_disk(1 << 30).await.is_err(), "no shrinking");
        assert_eq!(exec.disk_bytes(vm.id()), Some(3 << 30));

        vm.shutdown().await.expect("shutdown");
        assert!(
            vm.open_tunnel(80).await.is_err(),
            "a stopped VM has no ports"
        );
    }
}
