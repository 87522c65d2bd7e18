//! The host end of the channel to the guest agent.
//!
//! One connection carries many operations, each on its own stream id. A
//! reader task demultiplexes incoming frames to the operation waiting on
//! that stream; writers share the connection under an async mutex and write
//! whole frames.

use crate::VmError;
use mags_proto::{
    encode_frame, Decoder, Frame, FrameKind, GuestInfo, GuestMsg, HostMsg, RunSpec, SetupSpec,
    PROTOCOL_VERSION,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Largest chunk of file or stdin data put in one frame.
const CHUNK: usize = 256 * 1024;
/// How long the agent may take to answer a control request or to start a
/// process: it answers in milliseconds, so a minute means it is stuck.
const ANSWER_WITHIN: Duration = Duration::from_secs(60);
/// How long a flush (sync, freeze, shutdown) may take: it writes out every
/// dirty page of the guest.
const FLUSH_WITHIN: Duration = Duration::from_secs(300);

/// Where incoming frames go, by stream id; `None` once the connection is gone.
type Routes = Arc<Mutex<Option<HashMap<u32, mpsc::UnboundedSender<Frame>>>>>;

struct Inner {
    /// `None` once closed by [`AgentConn::close`].
    writer: tokio::sync::Mutex<Option<Box<dyn AsyncWrite + Send + Unpin>>>,
    routes: Routes,
    next_stream: AtomicU32,
    reader: tokio::task::AbortHandle,
}

impl Drop for Inner {
    /// The last handle closes the connection: the reader task owns the read
    /// half, so it is stopped too.
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// A connection to one guest's agent; cheap to clone.
#[derive(Clone)]
pub struct AgentConn {
    inner: Arc<Inner>,
}

/// Something a running process did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessEvent {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// Always the last event. `code` is the exit status, or 128 + signal.
    Exited {
        code: i32,
        signal: Option<i32>,
        timed_out: bool,
    },
}

/// One open stream: frames for it arrive on `rx`; dropping it unroutes it.
pub(crate) struct StreamHandle {
    pub(crate) id: u32,
    rx: mpsc::UnboundedReceiver<Frame>,
    pub(crate) conn: AgentConn,
}

impl Drop for StreamHandle {
    fn drop(&mut self) {
        if let Some(r) = lock(&self.conn.inner.routes).as_mut() {
            r.remove(&self.id);
        }
    }
}

impl StreamHandle {
    /// Next control message on this stream, skipping nothing.
    pub(crate) async fn recv(&mut self) -> Result<Frame, VmError> {
        self.rx.recv().await.ok_or(VmError::Disconnected)
    }

    pub(crate) async fn reply(&mut self) -> Result<GuestMsg, VmError> {
        loop {
            let f = self.recv().await?;
            if f.kind == FrameKind::Control {
                return f.parse().map_err(|e| VmError::Protocol(e.to_string()));
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A process started in the guest.
pub struct Process {
    stream: StreamHandle,
    pid: u32,
    done: bool,
}

impl Process {
    /// The guest pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The next event; `Ok(None)` after `Exited`.
    pub async fn next_event(&mut self) -> Result<Option<ProcessEvent>, VmError> {
        if self.done {
            return Ok(None);
        }
        loop {
            let f = self.stream.recv().await?;
            match f.kind {
                FrameKind::Stdout => return Ok(Some(ProcessEvent::Stdout(f.payload))),
                FrameKind::Stderr => return Ok(Some(ProcessEvent::Stderr(f.payload))),
                FrameKind::Input => continue,
                FrameKind::Control => {}
            }
            match f
                .parse::<GuestMsg>()
                .map_err(|e| VmError::Protocol(e.to_string()))?
            {
                GuestMsg::Exited {
                    code,
                    signal,
                    timed_out,
                } => {
                    self.done = true;
                    return Ok(Some(ProcessEvent::Exited {
                        code,
                        signal,
                        timed_out,
                    }));
                }
                GuestMsg::Error { message } => return Err(VmError::Guest(message)),
                _ => continue,
            }
        }
    }

    /// Sends bytes to the process's stdin (it must have been started with `stdin: true`).
    pub async fn write_stdin(&self, data: &[u8]) -> Result<(), VmError> {
        for chunk in data.chunks(CHUNK) {
            self.stream
                .conn
                .send(FrameKind::Input, self.stream.id, chunk)
                .await?;
        }
        Ok(())
    }

    /// Closes the process's stdin.
    pub async fn close_stdin(&self) -> Result<(), VmError> {
        self.stream
            .conn
            .send_msg(self.stream.id, &HostMsg::CloseInput)
            .await
    }

    /// Signals the process group.
    pub async fn signal(&self, signal: i32) -> Result<(), VmError> {
        self.stream
            .conn
            .send_msg(self.stream.id, &HostMsg::Signal { signal })
            .await
    }

    /// Sets the size of the process's terminal (one started with a PTY).
    pub async fn resize(&self, rows: u16, cols: u16) -> Result<(), VmError> {
        self.input().resize(rows, cols).await
    }

    /// A handle that sends to the process (stdin, resize, signals) while
    /// another task reads its events.
    pub fn input(&self) -> ProcessInput {
        ProcessInput {
            conn: self.stream.conn.clone(),
            stream: self.stream.id,
        }
    }

    /// Runs to the end, collecting output: (exit code, stdout, stderr).
    pub async fn collect(mut self) -> Result<(i32, Vec<u8>, Vec<u8>), VmError> {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        while let Some(ev) = self.next_event().await? {
            match ev {
                ProcessEvent::Stdout(b) => out.extend(b),
                ProcessEvent::Stderr(b) => err.extend(b),
                ProcessEvent::Exited { code, .. } => return Ok((code, out, err)),
            }
        }
        Err(VmError::Disconnected)
    }
}

/// Sends to a running process: see [`Process::input`]. Sending after the
/// process ended is harmless (the guest ignores it).
#[derive(Clone)]
pub struct ProcessInput {
    conn: AgentConn,
    stream: u32,
}

impl ProcessInput {
    /// Sends bytes to the process's stdin (or types them into its PTY).
    pub async fn write(&self, data: &[u8]) -> Result<(), VmError> {
        for chunk in data.chunks(CHUNK) {
            self.conn.send(FrameKind::Input, self.stream, chunk).await?;
        }
        Ok(())
    }

    /// Closes the process's stdin (for a PTY: nothing to close; ignored).
    pub async fn close(&self) -> Result<(), VmError> {
        self.conn.send_msg(self.stream, &HostMsg::CloseInput).await
    }

    /// Sets the size of the process's terminal.
    pub async fn resize(&self, rows: u16, cols: u16) -> Result<(), VmError> {
        self.conn
            .send_msg(self.stream, &HostMsg::Resize { rows, cols })
            .await
    }

    /// Signals the process group.
    pub async fn signal(&self, signal: i32) -> Result<(), VmError> {
        self.conn
            .send_msg(self.stream, &HostMsg::Signal { signal })
            .await
    }
}

impl AgentConn {
    /// Starts talking on `reader`/`writer` and performs the version handshake.
    /// `Hello` is repeated until answered: the guest may not have opened its
    /// port yet, and QEMU drops what arrives before it does.
    pub async fn handshake<R, W>(reader: R, writer: W, within: Duration) -> Result<Self, VmError>
    where
        R: AsyncRead + Send + Unpin + 'static,
        W: AsyncWrite + Send + Unpin + 'static,
    {
        let routes: Routes = Arc::new(Mutex::new(Some(HashMap::new())));
        let task = tokio::spawn(read_task(reader, routes.clone()));
        let conn = AgentConn {
            inner: Arc::new(Inner {
                writer: tokio::sync::Mutex::new(Some(Box::new(writer))),
                routes,
                next_stream: AtomicU32::new(1),
                reader: task.abort_handle(),
            }),
        };
        let mut hello = conn.open();
        let msg = HostMsg::Hello {
            version: PROTOCOL_VERSION,
        };
        let deadline = tokio::time::Instant::now() + within;
        loop {
            conn.send_msg(hello.id, &msg).await?;
            match tokio::time::timeout(Duration::from_millis(200), hello.reply()).await {
                Ok(Ok(GuestMsg::Hello { version, .. })) if version == PROTOCOL_VERSION => {
                    return Ok(conn)
                }
                Ok(Ok(GuestMsg::Hello { version, .. })) => {
                    return Err(VmError::VersionMismatch {
                        guest: version,
                        host: PROTOCOL_VERSION,
                    })
                }
                Ok(Ok(other)) => return Err(VmError::Protocol(format!("unexpected {other:?}"))),
                Ok(Err(e)) => return Err(e),
                Err(_) if tokio::time::Instant::now() < deadline => continue,
                Err(_) => return Err(VmError::AgentTimeout(within.as_secs())),
            }
        }
    }

    pub(crate) fn open(&self) -> StreamHandle {
        let id = self.inner.next_stream.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        // After a disconnect `tx` is dropped here, so the stream reports it.
        if let Some(r) = lock(&self.inner.routes).as_mut() {
            r.insert(id, tx);
        }
        StreamHandle {
            id,
            rx,
            conn: self.clone(),
        }
    }

    pub(crate) async fn send(
        &self,
        kind: FrameKind,
        stream: u32,
        payload: &[u8],
    ) -> Result<(), VmError> {
        let mut buf = Vec::with_capacity(payload.len() + 9);
        encode_frame(kind, stream, payload, &mut buf);
        let mut guard = self.inner.writer.lock().await;
        let w = guard.as_mut().ok_or(VmError::Disconnected)?;
        w.write_all(&buf).await.map_err(|_| VmError::Disconnected)?;
        w.flush().await.map_err(|_| VmError::Disconnected)
    }

    pub(crate) async fn send_msg(&self, stream: u32, msg: &HostMsg) -> Result<(), VmError> {
        self.send(
            FrameKind::Control,
            stream,
            &Frame::control(stream, msg).payload,
        )
        .await
    }

    async fn request(&self, msg: &HostMsg) -> Result<GuestMsg, VmError> {
        self.request_within(msg, ANSWER_WITHIN).await
    }

    /// A control request whose answer is waited for at most `within`: a
    /// guest that stopped answering fails the caller instead of hanging it.
    async fn request_within(&self, msg: &HostMsg, within: Duration) -> Result<GuestMsg, VmError> {
        let mut s = self.open();
        let answer = async {
            self.send_msg(s.id, msg).await?;
            s.reply().await
        };
        match tokio::time::timeout(within, answer)
            .await
            .map_err(|_| VmError::AgentTimeout(within.as_secs()))??
        {
            GuestMsg::Error { message } => Err(VmError::Guest(message)),
            other => Ok(other),
        }
    }

    /// Starts a process. With `spec.pty` it runs on a terminal, and an
    /// agent too old to give it one is an error, not a silent pipe.
    pub async fn run(&self, spec: RunSpec) -> Result<Process, VmError> {
        let mut stream = self.open();
        let want_pty = spec.pty.is_some();
        let started = async {
            self.send_msg(stream.id, &HostMsg::Run(spec)).await?;
            stream.reply().await
        };
        let reply = tokio::time::timeout(ANSWER_WITHIN, started)
            .await
            .map_err(|_| VmError::AgentTimeout(ANSWER_WITHIN.as_secs()))??;
        match reply {
            GuestMsg::Started { pid, pty } => {
                if want_pty && !pty {
                    let p = Process {
                        stream,
                        pid,
                        done: false,
                    };
                    let _ = p.signal(9).await;
                    return Err(VmError::Guest(
                        "the guest agent is too old to run a process on a terminal".into(),
                    ));
                }
                Ok(Process {
                    stream,
                    pid,
                    done: false,
                })
            }
            GuestMsg::Error { message } => Err(VmError::Guest(message)),
            other => Err(VmError::Protocol(format!("unexpected {other:?}"))),
        }
    }

    /// Creates or replaces a file in the guest, atomically.
    pub async fn write_file(&self, path: &str, mode: u32, data: &[u8]) -> Result<(), VmError> {
        let mut s = self.open();
        let msg = HostMsg::WriteFile {
            path: path.to_string(),
            mode,
        };
        self.send_msg(s.id, &msg).await?;
        for chunk in data.chunks(CHUNK) {
            self.send(FrameKind::Input, s.id, chunk).await?;
        }
        self.send_msg(s.id, &HostMsg::CloseInput).await?;
        match s.reply().await? {
            GuestMsg::Ok => Ok(()),
            GuestMsg::Error { message } => Err(VmError::Guest(message)),
            other => Err(VmError::Protocol(format!("unexpected {other:?}"))),
        }
    }

    /// Facts about the guest.
    pub async fn info(&self) -> Result<GuestInfo, VmError> {
        match self.request(&HostMsg::Info).await? {
            GuestMsg::Info(info) => Ok(info),
            other => Err(VmError::Protocol(format!("unexpected {other:?}"))),
        }
    }

    /// Hangs up: every handle to this connection fails from now on, and the
    /// agent goes back to waiting for a host.
    pub async fn close(&self) {
        self.inner.reader.abort();
        *self.inner.writer.lock().await = None;
        *lock(&self.inner.routes) = None;
    }

    /// Mounts the guest's root (first time) and gives it its identity.
    pub async fn setup(&self, spec: SetupSpec) -> Result<(), VmError> {
        self.request(&HostMsg::Setup(spec)).await.map(|_| ())
    }

    /// Flushes the guest's filesystems.
    pub async fn sync(&self) -> Result<(), VmError> {
        self.request_within(&HostMsg::Sync, FLUSH_WITHIN)
            .await
            .map(|_| ())
    }

    /// Flushes and freezes the guest's writable disk (it thaws by itself
    /// after `auto_thaw`); call [`AgentConn::thaw`] when done reading it.
    pub async fn freeze(&self, auto_thaw: Duration) -> Result<(), VmError> {
        let timeout_ms = auto_thaw.as_millis().min(u128::from(u64::MAX)) as u64;
        self.request_within(&HostMsg::Freeze { timeout_ms }, FLUSH_WITHIN)
            .await
            .map(|_| ())
    }

    /// Grows the guest's writable filesystem to fill its disk, once the
    /// guest sees the disk at `bytes` (the size just given to QEMU).
    pub async fn grow_disk(&self, bytes: u64) -> Result<(), VmError> {
        self.request(&HostMsg::GrowDisk { bytes }).await.map(|_| ())
    }

    /// Thaws the guest's writable disk.
    pub async fn thaw(&self) -> Result<(), VmError> {
        self.request(&HostMsg::Thaw).await.map(|_| ())
    }

    /// Creates or replaces a file in the guest with everything `reader`
    /// yields, streamed in chunks (never whole in memory).
    pub async fn write_file_from<R>(
        &self,
        path: &str,
        mode: u32,
        mut reader: R,
    ) -> Result<(), VmError>
    where
        R: AsyncRead + Unpin,
    {
        let mut s = self.open();
        let msg = HostMsg::WriteFile {
            path: path.to_string(),
            mode,
        };
        self.send_msg(s.id, &msg).await?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = reader
                .read(&mut buf)
                .await
                .map_err(|e| VmError::io(path, e))?;
            if n == 0 {
                break;
            }
            self.send(FrameKind::Input, s.id, &buf[..n]).await?;
        }
        self.send_msg(s.id, &HostMsg::CloseInput).await?;
        match s.reply().await? {
            GuestMsg::Ok => Ok(()),
            GuestMsg::Error { message } => Err(VmError::Guest(message)),
            other => Err(VmError::Protocol(format!("unexpected {other:?}"))),
        }
    }

    /// Asks the guest to sync and power off.
    pub async fn shutdown(&self) -> Result<(), VmError> {
        self.request_within(&HostMsg::Shutdown, FLUSH_WITHIN)
            .await
            .map(|_| ())
    }
}

async fn read_task<R: AsyncRead + Unpin>(mut reader: R, routes: Routes) {
    let mut decoder = Decoder::new();
    let mut buf = vec![0u8; 256 * 1024];
    'conn: loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break 'conn,
            Ok(n) => n,
        };
        decoder.push(&buf[..n]);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    let tx = lock(&routes)
                        .as_ref()
                        .and_then(|r| r.get(&frame.stream).cloned());
                    if let Some(tx) = tx {
                        let _ = tx.send(frame);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("agent sent a bad frame: {e}");
                    break 'conn;
                }
            }
        }
    }
    // Dropping every sender wakes all waiters with Disconnected.
    *lock(&routes) = None;
}
