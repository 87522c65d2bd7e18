//! Control messages. Every [`HostMsg`] request is answered on the same stream
//! by the [`GuestMsg`]s listed on it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What to run and how.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunSpec {
    /// Program and arguments; `argv[0]` is looked up in `PATH`.
    pub argv: Vec<String>,
    /// Extra environment on top of the agent's defaults (HOME, PATH, ...).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory; `/root` when absent.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Whether the host will send stdin as `Input` frames followed by
    /// [`HostMsg::CloseInput`]. When false, stdin is `/dev/null`.
    #[serde(default)]
    pub stdin: bool,
    /// Kill the process (and its process group) after this many milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Run inside this directory as root (chroot). Used before the root is
    /// mounted, to warm the page cache of a template from the read-only root.
    #[serde(default)]
    pub chroot: Option<String>,
    /// Run on a new pseudo-terminal: the process leads a new session with
    /// the terminal as its controlling tty and its stdin/stdout/stderr, so
    /// all output comes as `Stdout` frames and `Input` frames are typed
    /// into it (`stdin` is implied). [`HostMsg::Resize`] changes its size.
    #[serde(default)]
    pub pty: Option<PtySpec>,
}

/// The terminal of a [`RunSpec`] with a PTY.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PtySpec {
    pub rows: u16,
    pub cols: u16,
    /// `TERM` for the process, e.g. `xterm-256color`; empty: `xterm`.
    #[serde(default)]
    pub term: String,
}

/// Identity and clock for a freshly booted or restored VM.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SetupSpec {
    pub hostname: String,
    /// 32 hex chars for `/etc/machine-id`.
    pub machine_id: String,
    /// Fresh random bytes from the host, mixed into the kernel RNG, which is
    /// then reseeded: two clones of one snapshot never share random output.
    pub entropy: Vec<u8>,
    /// Host wall clock, nanoseconds since the Unix epoch.
    pub unix_time_ns: u64,
    /// Size of the writable disk as QEMU now reports it; the guest waits
    /// until its kernel sees that size before mounting (a restored clone's
    /// disk may differ from the template's). 0 = do not wait.
    #[serde(default)]
    pub disk_bytes: u64,
    /// The guest's network, if it has a NIC; `None` leaves it unconfigured.
    #[serde(default)]
    pub network: Option<NetworkSpec>,
}

/// Static network settings of the guest (no DHCP): its address on the
/// user-mode network and the egress proxy every program is pointed at.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkSpec {
    /// IPv4 address and prefix length, e.g. `10.0.2.15/24`.
    pub address: String,
    /// Default gateway, if any route beyond the local network is wanted.
    #[serde(default)]
    pub gateway: Option<String>,
    /// `http://host:port` of the host-side egress proxy, exported to every
    /// process as `http_proxy`/`https_proxy` (and written for login shells
    /// and apt). `None`: no outbound access.
    #[serde(default)]
    pub proxy: Option<String>,
    /// Extra CA certificates (PEM) the guest trusts, e.g. those of a
    /// TLS-inspecting proxy the host's own traffic goes through.
    #[serde(default)]
    pub ca_certs: String,
}

/// Host -> guest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HostMsg {
    /// First message of a connection (stream 0). Answer: `Hello`.
    Hello { version: u32 },
    /// Describe the guest. Answer: `Info`.
    Info,
    /// Make this VM a machine of its own: mount its root and disk (once,
    /// the first time; later ones grow the mounted disk's filesystem to
    /// `disk_bytes`) and give it a fresh identity. Sent after every boot or
    /// restore, before any user code runs. A blank template is snapshotted
    /// before any `Setup`; a mounted one after a `Setup` with no identity
    /// (no entropy, no clock, a placeholder machine id), so every clone still gets
    /// its own. Answer: `Ok` or `Error`.
    Setup(SetupSpec),
    /// Start a process on this stream. Answers: `Started`, then `Stdout`/`Stderr`
    /// frames, then `Exited` (or `Error` if it could not start).
    Run(RunSpec),
    /// No more `Input` frames on this stream.
    CloseInput,
    /// Send a signal to the process (group) running on this stream.
    Signal { signal: i32 },
    /// Create or replace a file with the `Input` frames that follow, up to
    /// `CloseInput`. Parent directories are created. Answer: `Ok` or `Error`.
    WriteFile { path: String, mode: u32 },
    /// Flush all filesystems to disk. Answer: `Ok` or `Error`.
    Sync,
    /// Flush and freeze the writable disk's filesystem (FIFREEZE), so the
    /// host can read the disk image as a consistent whole. Writers in the
    /// guest block until `Thaw`; the agent thaws by itself after
    /// `timeout_ms` if no `Thaw` comes. Answer: `Ok` or `Error`.
    Freeze { timeout_ms: u64 },
    /// Thaw the writable disk's filesystem (FITHAW); fine if not frozen.
    /// Answer: `Ok` or `Error`.
    Thaw,
    /// Grow the writable disk's filesystem (online) to fill its device,
    /// after the host made the device bigger; first waits (briefly) until
    /// the kernel sees the device at `bytes` or more (0: no wait).
    /// Answer: `Ok` or `Error`.
    GrowDisk {
        #[serde(default)]
        bytes: u64,
    },
    /// Sync and power the VM off. Answer: `Ok`, then the VM stops.
    Shutdown,
    /// Open a TCP connection to `127.0.0.1:port` in the guest on this
    /// stream: a tunnel (the URL proxy's way in). Answer: `Ok` once
    /// connected, or `Error`. Then bytes flow as `Input` frames (host ->
    /// guest) and `Stdout` frames (guest -> host). Each side keeps at most
    /// [`crate::TUNNEL_WINDOW`] bytes unacknowledged and acknowledges what it
    /// has passed on with `TunnelAck`. `CloseInput` half-closes the guest
    /// socket (shutdown of its write side); the guest says `TunnelEof` when
    /// its side has finished sending, `Error` if the connection broke.
    Connect { port: u16 },
    /// On a tunnel: the host passed `bytes` more of the guest's data on.
    TunnelAck { bytes: u64 },
    /// On a tunnel: tear it down both ways. No answer.
    TunnelClose,
    /// Set the window size of the PTY of the process on this stream
    /// (TIOCSWINSZ; the process gets SIGWINCH). No answer; ignored for a
    /// process without a PTY.
    Resize { rows: u16, cols: u16 },
}

/// Guest -> host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GuestMsg {
    Hello {
        version: u32,
        agent_version: String,
    },
    Info(GuestInfo),
    Started {
        pid: u32,
        /// The process runs on a PTY, as asked. An agent that predates
        /// PTYs leaves it out (false), so the host can refuse to pretend.
        #[serde(default)]
        pty: bool,
    },
    /// The process ended: `code` is its exit status, or 128 + signal.
    Exited {
        code: i32,
        signal: Option<i32>,
        timed_out: bool,
    },
    Ok,
    Error {
        message: String,
    },
    /// On a tunnel: the guest passed `bytes` more of the host's data on.
    TunnelAck {
        bytes: u64,
    },
    /// On a tunnel: the guest's end finished sending (it may still read).
    /// After `TunnelEof` and the host's `CloseInput` the stream is done.
    TunnelEof,
}

/// Facts about the guest, for diagnostics and tests.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct GuestInfo {
    pub kernel_release: String,
    pub hostname: String,
    pub boot_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Frame;

    #[test]
    fn control_messages_round_trip() {
        let msgs = vec![
            HostMsg::Hello { version: 1 },
            HostMsg::Run(RunSpec {
                argv: vec!["bash".into(), "-c".into(), "echo hi".into()],
                ..Default::default()
            }),
            HostMsg::WriteFile {
                path: "/root/a".into(),
                mode: 0o644,
            },
            HostMsg::Freeze { timeout_ms: 5000 },
            HostMsg::Thaw,
            HostMsg::Connect { port: 8080 },
            HostMsg::TunnelAck { bytes: 65536 },
            HostMsg::TunnelClose,
            HostMsg::Run(RunSpec {
                argv: vec!["bash".into()],
                pty: Some(PtySpec {
                    rows: 24,
                    cols: 80,
                    term: "xterm".into(),
                }),
                ..Default::default()
            }),
            HostMsg::Resize {
                rows: 50,
                cols: 132,
            },
        ];
        for m in msgs {
            let f = Frame::control(3, &m);
            assert_eq!(f.parse::<HostMsg>().expect("parses"), m);
        }
        let g = GuestMsg::Exited {
            code: 3,
            signal: None,
            timed_out: false,
        };
        assert_eq!(
            Frame::control(1, &g).parse::<GuestMsg>().expect("parses"),
            g
        );
    }
}

#[cfg(test)]
mod compat_tests {
    use super::*;

    /// A host that predates PTYs sends no `pty`; an agent that predates
    /// them sends no `pty` in `Started`.
    #[test]
    fn pty_fields_default_when_absent() {
        let run: HostMsg =
            serde_json::from_str(r#"{"type":"run","argv":["true"]}"#).expect("old run parses");
        assert!(matches!(run, HostMsg::Run(RunSpec { pty: None, .. })));
        let started: GuestMsg =
            serde_json::from_str(r#"{"type":"started","pid":7}"#).expect("old started parses");
        assert_eq!(started, GuestMsg::Started { pid: 7, pty: false });
    }
}
