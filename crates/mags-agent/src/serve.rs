//! Serving the protocol: one reader loop dispatching frames by stream, one
//! shared writer, and a few threads per running process.
//!
//! Sessions: every `Hello` starts a new session. A host that reconnects
//! (after a sleep and wake, or a server restart) numbers its streams from
//! scratch, so processes of the previous session are detached: they keep
//! running, but their output and exit are no longer sent and their stream
//! ids are free for the new host to reuse.

use crate::process;
use mags_proto::{
    encode_frame, Decoder, Frame, FrameKind, GuestInfo, GuestMsg, HostMsg, RunSpec, MAX_PAYLOAD,
    PROTOCOL_VERSION,
};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

static BOOT_MS: AtomicU64 = AtomicU64::new(0);

/// Records how long setup took, reported by `Info`.
pub fn set_boot_ms(ms: u64) {
    BOOT_MS.store(ms, Ordering::Relaxed);
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How long to wait for a process's output pipes after it exits; a
/// background child still holding them must not hold up the exit status.
const DRAIN_GRACE: Duration = Duration::from_millis(250);

/// Frames to the host. Each frame is written whole under the lock.
#[derive(Clone)]
pub(crate) struct Out {
    file: Arc<Mutex<File>>,
    /// The current session (see the module docs).
    session: Arc<AtomicU64>,
}

impl Out {
    fn new(file: File) -> Self {
        Out {
            file: Arc::new(Mutex::new(file)),
            session: Arc::default(),
        }
    }

    pub(crate) fn session(&self) -> u64 {
        self.session.load(Ordering::SeqCst)
    }

    fn frame(&self, kind: FrameKind, stream: u32, payload: &[u8]) {
        self.frame_in(None, kind, stream, payload);
    }

    /// Writes a frame, unless `session` is given and is no longer current.
    pub(crate) fn frame_in(
        &self,
        session: Option<u64>,
        kind: FrameKind,
        stream: u32,
        payload: &[u8],
    ) {
        let mut buf = Vec::with_capacity(payload.len() + 9);
        encode_frame(kind, stream, payload, &mut buf);
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if session.is_some_and(|s| s != self.session()) {
            return;
        }
        // A write error means the host went away; it reconnects or never will.
        let _ = f.write_all(&buf);
    }

    fn msg(&self, stream: u32, msg: &GuestMsg) {
        self.frame(
            FrameKind::Control,
            stream,
            &Frame::control(stream, msg).payload,
        );
    }

    /// Writes a control message, unless `session` is no longer current.
    pub(crate) fn msg_in(&self, session: Option<u64>, stream: u32, msg: &GuestMsg) {
        let payload = Frame::control(stream, msg).payload;
        self.frame_in(session, FrameKind::Control, stream, &payload);
    }

    fn error(&self, stream: u32, message: impl Into<String>) {
        self.msg(
            stream,
            &GuestMsg::Error {
                message: message.into(),
            },
        );
    }
}

enum Stream {
    Process {
        pid: u32,
        stdin: Option<mpsc::Sender<Vec<u8>>>,
        /// The PTY master of a process on a terminal (for `Resize`).
        pty: Option<Arc<File>>,
    },
    File {
        file: File,
        tmp: PathBuf,
        path: PathBuf,
        mode: u32,
    },
}

type Streams = Arc<Mutex<HashMap<u32, Stream>>>;

fn lock(streams: &Streams) -> std::sync::MutexGuard<'_, HashMap<u32, Stream>> {
    streams.lock().unwrap_or_else(|p| p.into_inner())
}

/// Serves one connection on `input`/`output` until `input` ends.
pub fn serve(input: File, output: File) {
    let out = Out::new(output);
    let streams: Streams = Arc::default();
    read_loop(input, &out, &streams);
}

/// Serves the virtio-serial port forever: when the host disconnects, reads
/// return 0 until it connects again, so the agent waits and resumes.
pub fn serve_port(input: File, output: File) {
    let out = Out::new(output);
    let streams: Streams = Arc::default();
    let mut input = input;
    loop {
        read_loop(&mut input, &out, &streams);
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn read_loop(mut input: impl Read, out: &Out, streams: &Streams) {
    let mut decoder = Decoder::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        decoder.push(&buf[..n]);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => handle(frame, out, streams),
                Ok(None) => break,
                Err(e) => {
                    out.error(0, format!("bad frame from host: {e}"));
                    return;
                }
            }
        }
    }
}

fn handle(frame: Frame, out: &Out, streams: &Streams) {
    let stream = frame.stream;
    if frame.kind == FrameKind::Input {
        if let Some(data) = crate::tunnel::input(stream, frame.payload) {
            input(stream, data, out, streams);
        }
        return;
    }
    let msg: HostMsg = match frame.parse() {
        Ok(m) => m,
        Err(e) => return out.error(stream, e.to_string()),
    };
    match msg {
        HostMsg::Hello { .. } => {
            new_session(out, streams);
            out.msg(
                stream,
                &GuestMsg::Hello {
                    version: PROTOCOL_VERSION,
                    agent_version: env!("CARGO_PKG_VERSION").to_string(),
                },
            )
        }
        HostMsg::Info => out.msg(stream, &GuestMsg::Info(info())),
        HostMsg::Setup(spec) => match crate::init::setup(&spec) {
            Ok(()) => out.msg(stream, &GuestMsg::Ok),
            Err(e) => out.error(stream, format!("setup failed: {e}")),
        },
        HostMsg::Run(spec) => {
            if let Err(e) = run(stream, spec, out, streams) {
                out.error(stream, format!("cannot start process: {e}"));
            }
        }
        HostMsg::CloseInput => {
            if !crate::tunnel::close_input(stream) {
                close_input(stream, out, streams)
            }
        }
        HostMsg::Signal { signal } => {
            if let Some(Stream::Process { pid, .. }) = lock(streams).get(&stream) {
                process::kill_group(*pid, signal);
            }
        }
        HostMsg::WriteFile { path, mode } => match open_for_write(stream, &path) {
            Ok((file, tmp)) => {
                let path = PathBuf::from(path);
                lock(streams).insert(
                    stream,
                    Stream::File {
                        file,
                        tmp,
                        path,
                        mode,
                    },
                );
            }
            Err(e) => out.error(stream, format!("cannot write {path}: {e}")),
        },
        HostMsg::Sync => {
            // SAFETY: plain syscall.
            unsafe { libc::sync() };
            out.msg(stream, &GuestMsg::Ok);
        }
        HostMsg::Freeze { timeout_ms } => {
            let r = crate::init::freeze(Duration::from_millis(timeout_ms.clamp(100, 600_000)));
            match r {
                Ok(()) => out.msg(stream, &GuestMsg::Ok),
                Err(e) => out.error(stream, format!("cannot freeze the disk: {e}")),
            }
        }
        HostMsg::GrowDisk { bytes } => match crate::init::grow_writable_to(bytes) {
            Ok(_) => out.msg(stream, &GuestMsg::Ok),
            Err(e) => out.error(stream, format!("cannot grow the disk's filesystem: {e}")),
        },
        HostMsg::Thaw => match crate::init::thaw() {
            Ok(()) => out.msg(stream, &GuestMsg::Ok),
            Err(e) => out.error(stream, format!("cannot thaw the disk: {e}")),
        },
        HostMsg::Resize { rows, cols } => {
            if let Some(Stream::Process { pty: Some(m), .. }) = lock(streams).get(&stream) {
                let _ = crate::pty::resize(m, rows, cols);
            }
        }
        HostMsg::Shutdown => {
            // SAFETY: plain syscall.
            unsafe { libc::sync() };
            out.msg(stream, &GuestMsg::Ok);
            if std::process::id() == 1 {
                // SAFETY: we are PID 1; QEMU runs with -no-reboot and exits.
                unsafe { libc::reboot(libc::RB_AUTOBOOT) };
            } else {
                std::process::exit(0);
            }
        }
        HostMsg::Connect { port } => crate::tunnel::connect(stream, port, out),
        HostMsg::TunnelAck { bytes } => crate::tunnel::ack(stream, bytes),
        HostMsg::TunnelClose => crate::tunnel::close(stream),
    }
}

/// Detaches everything the previous host started: its processes run on,
/// unheard, and a half-written file is dropped.
fn new_session(out: &Out, streams: &Streams) {
    // Bumped under the writer lock, so no frame of the old session is
    // written after the new session's first one.
    let file = out.file.lock().unwrap_or_else(|p| p.into_inner());
    out.session.fetch_add(1, Ordering::SeqCst);
    drop(file);
    crate::tunnel::close_all();
    for (_, s) in lock(streams).drain() {
        if let Stream::File { tmp, .. } = s {
            let _ = fs::remove_file(tmp);
        }
    }
}

fn info() -> GuestInfo {
    // SAFETY: utsname is plain data filled in by uname.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uts is a valid out-pointer.
    unsafe { libc::uname(&mut uts) };
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).to_string()
    };
    GuestInfo {
        kernel_release: field(&uts.release),
        hostname: field(&uts.nodename),
        boot_ms: BOOT_MS.load(Ordering::Relaxed),
    }
}

fn open_for_write(stream: u32, path: &str) -> io::Result<(File, PathBuf)> {
    let path = PathBuf::from(path);
    if !path.is_absolute() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "path must be absolute",
        ));
    }
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let mut tmp = path.clone().into_os_string();
    tmp.push(format!(".mags-partial-{stream}"));
    let tmp = PathBuf::from(tmp);
    Ok((File::create(&tmp)?, tmp))
}

fn input(stream: u32, data: Vec<u8>, out: &Out, streams: &Streams) {
    let mut map = lock(streams);
    match map.get_mut(&stream) {
        Some(Stream::Process {
            stdin: Some(tx), ..
        }) => {
            let _ = tx.send(data);
        }
        Some(Stream::File { file, tmp, .. }) => {
            if let Err(e) = file.write_all(&data) {
                let _ = fs::remove_file(&*tmp);
                map.remove(&stream);
                out.error(stream, format!("write failed: {e}"));
            }
        }
        _ => {}
    }
}

fn close_input(stream: u32, out: &Out, streams: &Streams) {
    let mut map = lock(streams);
    if let Some(Stream::Process { stdin, .. }) = map.get_mut(&stream) {
        // Dropping the sender ends the stdin thread, which closes the pipe.
        *stdin = None;
        return;
    }
    let Some(Stream::File {
        file,
        tmp,
        path,
        mode,
    }) = map.remove(&stream)
    else {
        return;
    };
    drop(map);
    let done = file
        .sync_all()
        .and_then(|_| fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)))
        .and_then(|_| fs::rename(&tmp, &path));
    match done {
        Ok(()) => out.msg(stream, &GuestMsg::Ok),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            out.error(stream, format!("cannot write {}: {e}", path.display()));
        }
    }
}

fn run(stream: u32, spec: RunSpec, out: &Out, streams: &Streams) -> io::Result<()> {
    let Some((prog, args)) = spec.argv.split_first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty argv"));
    };
    let cwd = spec.cwd.clone().unwrap_or_else(|| "/root".to_string());
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .env_clear()
        .env("PATH", DEFAULT_PATH)
        .env("HOME", "/root")
        .env("USER", "root")
        .env("LOGNAME", "root")
        .env("SHELL", "/bin/bash")
        .env("LANG", "C.UTF-8")
        .env("HOSTNAME", "mags-vm")
        .envs(crate::net::proxy_env())
        .envs(&spec.env)
        .current_dir(&cwd);
    if let Some(root) = &spec.chroot {
        let root = std::ffi::CString::new(root.as_str())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in chroot"))?;
        cmd.current_dir("/");
        // SAFETY: chroot and chdir are async-signal-safe; `root` outlives the spawn.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                if libc::chroot(root.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let spawned = match &spec.pty {
        Some(p) => crate::pty::spawn(cmd, p)?,
        None => spawn_piped(cmd, spec.stdin)?,
    };
    let pid = spawned.pid;
    let stdin_tx = spawned.stdin.map(|mut pipe| {
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        std::thread::spawn(move || {
            for chunk in rx {
                if pipe.write_all(&chunk).is_err() {
                    break;
                }
            }
        });
        tx
    });
    lock(streams).insert(
        stream,
        Stream::Process {
            pid,
            stdin: stdin_tx,
            pty: spawned.pty.map(Arc::new),
        },
    );
    let session = out.session();
    out.msg(
        stream,
        &GuestMsg::Started {
            pid,
            pty: spec.pty.is_some(),
        },
    );

    let (done_tx, done_rx) = mpsc::channel::<()>();
    let pipes = spawned.outputs.len();
    for (kind, pipe) in spawned.outputs {
        pump(pipe, (kind, stream, session), out.clone(), done_tx.clone());
    }
    drop(done_tx);

    let timed_out = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    if let Some(ms) = spec.timeout_ms {
        let (timed_out, finished) = (timed_out.clone(), finished.clone());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(ms));
            if !finished.load(Ordering::SeqCst) {
                timed_out.store(true, Ordering::SeqCst);
                process::kill_group(pid, libc::SIGKILL);
            }
        });
    }
    let out = out.clone();
    let streams = streams.clone();
    std::thread::spawn(move || {
        let status = process::wait(pid);
        finished.store(true, Ordering::SeqCst);
        for _ in 0..pipes {
            if done_rx.recv_timeout(DRAIN_GRACE).is_err() {
                break;
            }
        }
        {
            // A new session may have reused the stream id: remove only our own.
            let mut map = lock(&streams);
            if matches!(map.get(&stream), Some(Stream::Process { pid: p, .. }) if *p == pid) {
                map.remove(&stream);
            }
        }
        let (code, signal) = process::decode_status(status);
        let exited = GuestMsg::Exited {
            code,
            signal,
            timed_out: timed_out.load(Ordering::SeqCst),
        };
        let payload = Frame::control(stream, &exited).payload;
        out.frame_in(Some(session), FrameKind::Control, stream, &payload);
    });
    Ok(())
}

/// A started process: its pid, where its stdin goes, where its output
/// comes from (with the frame kind for each) and its PTY master, if any.
pub(crate) struct Spawned {
    pub pid: u32,
    pub stdin: Option<Box<dyn Write + Send>>,
    pub outputs: Vec<(FrameKind, Box<dyn Read + Send>)>,
    pub pty: Option<File>,
}

/// Spawns `cmd` with pipes for stdout and stderr, and for stdin if `stdin`.
fn spawn_piped(mut cmd: Command, stdin: bool) -> io::Result<Spawned> {
    cmd.stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = process::spawn(&mut cmd)?;
    let mut outputs: Vec<(FrameKind, Box<dyn Read + Send>)> = Vec::new();
    if let Some(p) = child.stdout.take() {
        outputs.push((FrameKind::Stdout, Box::new(p)));
    }
    if let Some(p) = child.stderr.take() {
        outputs.push((FrameKind::Stderr, Box::new(p)));
    }
    Ok(Spawned {
        pid: child.id(),
        stdin: child
            .stdin
            .take()
            .map(|p| Box::new(p) as Box<dyn Write + Send>),
        outputs,
        pty: None,
    })
}

/// Forwards a pipe as frames of `kind` on `stream`, while `session` lasts.
fn pump(
    mut pipe: impl Read + Send + 'static,
    (kind, stream, session): (FrameKind, u32, u64),
    out: Out,
    done: mpsc::Sender<()>,
) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024.min(MAX_PAYLOAD)];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                // A detached process's output is read and dropped, so it
                // never blocks on a full pipe.
                Ok(n) => out.frame_in(Some(session), kind, stream, &buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let _ = done.send(());
    });
}
