//! TCP tunnels: the host asks for a connection to `127.0.0.1:port` in the
//! guest ([`HostMsg::Connect`](mags_proto::HostMsg::Connect)) and bytes flow
//! on that stream both ways. This is how the URL proxy (and later SSH, CDP)
//! reach a server in the sandbox without the guest network being involved.
//!
//! Per tunnel: a writer thread drains the host's bytes into the socket and
//! acknowledges them; a reader thread sends what the socket yields, never
//! more than [`TUNNEL_WINDOW`] bytes ahead of the host's acknowledgements,
//! so a slow reader on either side holds its peer back instead of filling
//! memory (the guest has little).

use crate::serve::Out;
use mags_proto::{FrameKind, GuestMsg, TUNNEL_WINDOW};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{mpsc, Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

/// How long connecting to the guest port may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest data frame a tunnel sends.
const CHUNK: usize = 64 * 1024;

struct Tunnel {
    session: u64,
    sock: TcpStream,
    /// The host's bytes, to the writer thread; `None` after `CloseInput`.
    to_sock: Mutex<Option<mpsc::Sender<Vec<u8>>>>,
    /// Bytes sent to the host and not acknowledged yet; `None` when closed.
    in_flight: Mutex<Option<u64>>,
    acked: Condvar,
    /// Directions finished (socket EOF seen, host's input closed); at 2
    /// the entry goes.
    ended: std::sync::atomic::AtomicU8,
}

impl Tunnel {
    /// One direction is finished; the second one forgets the tunnel.
    fn end_one(self: &Arc<Self>, stream: u32) {
        if self.ended.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            forget(stream, self);
        }
    }

    fn close(&self) {
        let _ = self.sock.shutdown(Shutdown::Both);
        *lock(&self.to_sock) = None;
        *lock(&self.in_flight) = None;
        self.acked.notify_all();
    }
}

type Map = Mutex<HashMap<u32, Arc<Tunnel>>>;

fn tunnels() -> &'static Map {
    static T: OnceLock<Map> = OnceLock::new();
    T.get_or_init(Map::default)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn get(stream: u32) -> Option<Arc<Tunnel>> {
    lock(tunnels()).get(&stream).cloned()
}

/// Removes the tunnel on `stream` if it is still `t` (a new session may
/// have reused the id).
fn forget(stream: u32, t: &Arc<Tunnel>) {
    let mut map = lock(tunnels());
    if map.get(&stream).is_some_and(|cur| Arc::ptr_eq(cur, t)) {
        map.remove(&stream);
    }
}

/// `Connect { port }` on `stream`: connects in the background and answers
/// `Ok` or `Error` there.
pub(crate) fn connect(stream: u32, port: u16, out: &Out) {
    let out = out.clone();
    let session = out.session();
    std::thread::spawn(move || {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let sock = match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => s,
            Err(e) => {
                let msg = GuestMsg::Error {
                    message: format!("cannot connect to port {port} in the sandbox: {e}"),
                };
                return out.msg_in(Some(session), stream, &msg);
            }
        };
        let _ = sock.set_nodelay(true);
        let (reader, writer) = match (sock.try_clone(), sock.try_clone()) {
            (Ok(r), Ok(w)) => (r, w),
            (Err(e), _) | (_, Err(e)) => {
                let msg = GuestMsg::Error {
                    message: format!("tunnel setup failed: {e}"),
                };
                return out.msg_in(Some(session), stream, &msg);
            }
        };
        let (tx, rx) = mpsc::channel();
        let t = Arc::new(Tunnel {
            session,
            sock,
            to_sock: Mutex::new(Some(tx)),
            in_flight: Mutex::new(Some(0)),
            acked: Condvar::new(),
            ended: Default::default(),
        });
        lock(tunnels()).insert(stream, t.clone());
        out.msg_in(Some(session), stream, &GuestMsg::Ok);
        spawn_writer(stream, writer, rx, t.clone(), out.clone());
        pump_to_host(stream, reader, &t, &out);
    });
}

/// Host -> socket, acknowledging each chunk once written.
fn spawn_writer(
    stream: u32,
    mut sock: TcpStream,
    rx: mpsc::Receiver<Vec<u8>>,
    t: Arc<Tunnel>,
    out: Out,
) {
    std::thread::spawn(move || {
        for chunk in rx {
            if let Err(e) = sock.write_all(&chunk) {
                if lock(&t.in_flight).is_some() {
                    let message = format!("writing to the sandbox's port failed: {e}");
                    out.msg_in(Some(t.session), stream, &GuestMsg::Error { message });
                }
                t.close();
                forget(stream, &t);
                return;
            }
            let bytes = chunk.len() as u64;
            out.msg_in(Some(t.session), stream, &GuestMsg::TunnelAck { bytes });
        }
        // The host closed its side: pass the half-close on.
        let _ = sock.shutdown(Shutdown::Write);
        t.end_one(stream);
    });
}

/// Socket -> host, within the window.
fn pump_to_host(stream: u32, mut sock: TcpStream, t: &Arc<Tunnel>, out: &Out) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let room = {
            let mut g = lock(&t.in_flight);
            loop {
                match *g {
                    None => return forget(stream, t),
                    Some(n) if n < TUNNEL_WINDOW => break (TUNNEL_WINDOW - n) as usize,
                    Some(_) => g = t.acked.wait(g).unwrap_or_else(|p| p.into_inner()),
                }
            }
        };
        let want = room.min(CHUNK);
        match sock.read(&mut buf[..want]) {
            Ok(0) => {
                out.msg_in(Some(t.session), stream, &GuestMsg::TunnelEof);
                return t.end_one(stream);
            }
            Ok(n) => {
                if let Some(f) = lock(&t.in_flight).as_mut() {
                    *f += n as u64;
                }
                out.frame_in(Some(t.session), FrameKind::Stdout, stream, &buf[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                if lock(&t.in_flight).is_some() {
                    let message = format!("reading from the sandbox's port failed: {e}");
                    out.msg_in(Some(t.session), stream, &GuestMsg::Error { message });
                    t.close();
                }
                break;
            }
        }
    }
    forget(stream, t);
}

/// An `Input` frame; gives the data back if `stream` is not a tunnel.
pub(crate) fn input(stream: u32, data: Vec<u8>) -> Option<Vec<u8>> {
    let Some(t) = get(stream) else {
        return Some(data);
    };
    if let Some(tx) = lock(&t.to_sock).as_ref() {
        let _ = tx.send(data);
    }
    None
}

/// `CloseInput`; false if `stream` is not a tunnel.
pub(crate) fn close_input(stream: u32) -> bool {
    let Some(t) = get(stream) else { return false };
    *lock(&t.to_sock) = None;
    true
}

/// `TunnelAck { bytes }` from the host.
pub(crate) fn ack(stream: u32, bytes: u64) {
    if let Some(t) = get(stream) {
        if let Some(n) = lock(&t.in_flight).as_mut() {
            *n = n.saturating_sub(bytes);
        }
        t.acked.notify_all();
    }
}

/// `TunnelClose`: both ways, now.
pub(crate) fn close(stream: u32) {
    if let Some(t) = lock(tunnels()).remove(&stream) {
        t.close();
    }
}

/// A new host session: the old one's tunnels are dead.
pub(crate) fn close_all() {
    for (_, t) in lock(tunnels()).drain() {
        t.close();
    }
}
