//! A reconnecting host starts a new session: processes of the previous one
//! keep running but are detached, and their stream ids can be reused
//! without their output or exit leaking into the new session's streams.
//! Spoken in raw frames over `mags-agent --stdio`, as a second host would.

use mags_proto::{Decoder, Frame, FrameKind, GuestMsg, HostMsg, RunSpec, PROTOCOL_VERSION};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

struct Agent {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    frames: mpsc::Receiver<Frame>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    fn start() -> Agent {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mags-agent"))
            .arg("--stdio")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn agent");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = child.stdout.take().expect("stdout");
        let (tx, frames) = mpsc::channel();
        std::thread::spawn(move || {
            let mut dec = Decoder::new();
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                dec.push(&buf[..n]);
                while let Ok(Some(f)) = dec.next_frame() {
                    if tx.send(f).is_err() {
                        return;
                    }
                }
            }
        });
        Agent {
            child,
            stdin,
            frames,
        }
    }

    fn send(&mut self, stream: u32, msg: &HostMsg) {
        self.stdin
            .write_all(&Frame::control(stream, msg).to_bytes())
            .expect("write");
        self.stdin.flush().expect("flush");
    }

    fn next(&self, within: Duration) -> Option<Frame> {
        self.frames.recv_timeout(within).ok()
    }

    /// Sends `Hello` and skips frames up to its answer.
    fn hello(&mut self) {
        self.send(
            1,
            &HostMsg::Hello {
                version: PROTOCOL_VERSION,
            },
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let Some(f) = self.next(Duration::from_secs(5)) else {
                break;
            };
            if f.stream == 1 && matches!(f.parse::<GuestMsg>(), Ok(GuestMsg::Hello { .. })) {
                return;
            }
        }
        panic!("no hello answer");
    }
}

fn sh(script: &str) -> HostMsg {
    HostMsg::Run(RunSpec {
        argv: vec!["/bin/bash".into(), "-c".into(), script.into()],
        cwd: Some("/tmp".into()),
        ..Default::default()
    })
}

#[test]
fn a_new_session_detaches_the_old_ones_processes() {
    let mut agent = Agent::start();
    agent.hello();
    // Session 1: a chatty process on stream 3 that outlives the session.
    agent.send(
        3,
        &sh("for i in $(seq 1 60); do echo old; sleep 0.05; done; exit 9"),
    );
    let mut saw_old = false;
    while let Some(f) = agent.next(Duration::from_secs(5)) {
        if f.stream == 3 && f.kind == FrameKind::Stdout {
            saw_old = true;
            break;
        }
    }
    assert!(saw_old, "the first session hears its process");

    // Session 2 reuses stream 3 for a process of its own.
    agent.hello();
    agent.send(3, &sh("sleep 0.5; echo new; exit 4"));
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        assert!(Instant::now() < deadline, "no exit for the new process");
        let Some(f) = agent.next(Duration::from_secs(10)) else {
            panic!("agent went quiet");
        };
        assert_eq!(f.stream, 3, "only stream 3 is in use: {f:?}");
        match f.kind {
            FrameKind::Stdout => out.extend_from_slice(&f.payload),
            FrameKind::Control => match f.parse::<GuestMsg>().expect("msg") {
                GuestMsg::Exited { code, .. } => break code,
                GuestMsg::Started { .. } => {}
                other => panic!("unexpected {other:?}"),
            },
            _ => {}
        }
    };
    assert_eq!(
        code, 4,
        "the old process's exit never reaches the new stream"
    );
    assert_eq!(String::from_utf8_lossy(&out), "new\n");
    // The old process finishes meanwhile; nothing of it arrives.
    assert!(agent.next(Duration::from_secs(3)).is_none());
}
