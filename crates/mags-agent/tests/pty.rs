//! Processes on a PTY over `mags-agent --stdio` with the host's client:
//! a real terminal (tty, size, TERM, job control), input typed into it,
//! resize with SIGWINCH, Ctrl-C as a byte, exit codes and signals.

mod common;

use mags_proto::{PtySpec, RunSpec};
use mags_vm::{Process, ProcessEvent};
use std::time::Duration;

fn on_tty(argv: &[&str], rows: u16, cols: u16) -> RunSpec {
    RunSpec {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        cwd: Some("/tmp".into()),
        pty: Some(PtySpec {
            rows,
            cols,
            term: "xterm-256color".into(),
        }),
        ..Default::default()
    }
}

/// Reads output until `needle` shows up; returns everything read.
async fn read_until(p: &mut Process, needle: &str) -> String {
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains(needle) {
        let ev = tokio::time::timeout_at(deadline, p.next_event())
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} in {seen:?}"))
            .expect("event");
        match ev {
            Some(ProcessEvent::Stdout(b)) => seen.push_str(&String::from_utf8_lossy(&b)),
            Some(ProcessEvent::Stderr(b)) => panic!("stderr on a pty: {b:?}"),
            other => panic!("{other:?} before {needle:?}; output {seen:?}"),
        }
    }
    seen
}

async fn exit_code(p: &mut Process) -> i32 {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), p.next_event())
            .await
            .expect("exit in time")
            .expect("event")
        {
            Some(ProcessEvent::Exited { code, .. }) => return code,
            Some(_) => continue,
            None => panic!("no exit"),
        }
    }
}

#[tokio::test]
async fn a_command_sees_a_terminal_of_the_size_asked() {
    let (conn, _child) = common::agent(Duration::from_secs(5)).await;
    let script = "tty; stty size; echo TERM=$TERM; echo err >&2; \
                  [ \"$(ps -o sid= -p $$ | tr -d ' ')\" = $$ ] && echo leader; exit 7";
    let mut p = conn
        .run(on_tty(&["/bin/bash", "-c", script], 33, 101))
        .await
        .expect("run");
    let out = read_until(&mut p, "leader").await;
    assert!(out.contains("/dev/pts/"), "{out:?}");
    assert!(out.contains("33 101"), "{out:?}");
    assert!(out.contains("TERM=xterm-256color"), "{out:?}");
    assert!(
        out.contains("err\r\n"),
        "stderr comes through the tty: {out:?}"
    );
    assert_eq!(exit_code(&mut p).await, 7);
}

#[tokio::test]
async fn typing_resizing_and_ctrl_c_reach_an_interactive_shell() {
    let (conn, _child) = common::agent(Duration::from_secs(5)).await;
    let mut p = conn
        .run(on_tty(
            &["/bin/bash", "--norc", "--noprofile", "-i"],
            24,
            80,
        ))
        .await
        .expect("run");
    let input = p.input();
    input
        .write(b"trap 'echo WINCH $(stty size)' WINCH; PS1='$ '\n")
        .await
        .expect("type");
    input.write(b"echo ready-$((6*7))\n").await.expect("type");
    read_until(&mut p, "ready-42").await;

    input.resize(50, 132).await.expect("resize");
    // The trap runs when bash next reads a line.
    input.write(b"\n").await.expect("type");
    read_until(&mut p, "WINCH 50 132").await;

    // Ctrl-C once the command runs in the foreground (it prints `in-2-sleep`;
    // the typed line's echo reads `in-$((1+1))-sleep`), not after a fixed
    // pause. This also passes when the test runs with SIGINT ignored (as a
    // shell's background job does): the session resets it.
    input
        .write(b"sh -c 'echo in-$((1+1))-sleep; exec sleep 30'\n")
        .await
        .expect("type");
    read_until(&mut p, "in-2-sleep").await;
    input.write(b"\x03").await.expect("ctrl-c");
    input.write(b"echo interrupted-$?\n").await.expect("type");
    read_until(&mut p, "interrupted-130").await;

    input.write(b"exit 5\n").await.expect("type");
    assert_eq!(exit_code(&mut p).await, 5);
}

#[tokio::test]
async fn a_signal_ends_a_process_on_a_terminal() {
    let (conn, _child) = common::agent(Duration::from_secs(5)).await;
    let mut p = conn
        .run(on_tty(
            &["/bin/bash", "-c", "echo started; sleep 30"],
            24,
            80,
        ))
        .await
        .expect("run");
    read_until(&mut p, "started").await;
    p.signal(9).await.expect("signal");
    assert_eq!(exit_code(&mut p).await, 128 + 9);
}
