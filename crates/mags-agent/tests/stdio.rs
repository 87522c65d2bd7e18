//! The agent's protocol, exercised over `mags-agent --stdio` with the real
//! host-side client from `mags-vm` (no VM needed: the same code runs as PID 1
//! in the guest, minus the machine setup).

mod common;

use mags_proto::RunSpec;
use mags_vm::ProcessEvent;
use std::time::Duration;

fn sh(script: &str) -> RunSpec {
    RunSpec {
        argv: vec!["/bin/bash".into(), "-c".into(), script.into()],
        cwd: Some("/tmp".into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn runs_with_separate_streams_env_and_exit_code() {
    let (conn, _child) = common::agent(Duration::from_secs(5)).await;
    let mut spec = sh("echo out; echo err >&2; echo $GREETING; \
                       grep -q '^SigBlk:[[:space:]]*0*$' /proc/self/status || echo SIGNALS-BLOCKED; exit 3");
    spec.env.insert("GREETING".into(), "hello env".into());
    let (code, out, err) = conn
        .run(spec)
        .await
        .expect("run")
        .collect()
        .await
        .expect("collect");
    assert_eq!(code, 3);
    assert_eq!(String::from_utf8_lossy(&out), "out\nhello env\n");
    assert_eq!(String::from_utf8_lossy(&err), "err\n");
}

#[tokio::test]
async fn large_output_arrives_whole_and_concurrent_runs_do_not_mix() {
    let (conn, _child) = common::agent(Duration::from_secs(5)).await;
    let big = conn.run(sh("head -c 1048576 /dev/zero | tr '\\0' 'a'"));
    let small = conn.run(sh("for i in 1 2 3; do echo $i; done"));
    let (big, small) = tokio::join!(big, small);
    let (big, small) = (big.expect("big"), small.expect("small"));
    let (b, s) = tokio::join!(big.collect(), small.collect());
    let (code, out, _) = b.expect("big collect");
    assert_eq!(code, 0);
    assert_eq!(out.len(), 1 << 20);
    assert!(out.iter().all(|c| *c == b'a'));
    assert_eq!(s.expect("small collect").1, b"1\n2\n3\n");
}

#[tokio::test]
async fn timeout_kills_the_process_group() {
    let (conn, _child) = common::agent(Duration::from_secs(5)).await;
    let mut spec = sh("sleep 30 & sleep 30");
    spec.timeout_ms = Some(300);
    let mut p = conn.run(spec).await.expect("run");
    let started = std::time::Instant::now();
    loop {
        match p.next_event().await.expect("event") {
            Some(ProcessEvent::Exited {
                timed_out, code, ..
            }) => {
                assert!(timed_out);
                assert_eq!(code, 128 + 9);
                break;
            }
            Some(_) => {}
            None => panic!("no exit"),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn stdin_and_files() {
    let (conn, _child) = common::agent(Duration::from_secs(5)).await;
    let mut spec = sh("tr a-z A-Z");
    spec.stdin = true;
    let p = conn.run(spec).await.expect("run");
    p.write_stdin(b"shout\n").await.expect("stdin");
    p.close_stdin().await.expect("close");
    let (code, out, _) = p.collect().await.expect("collect");
    assert_eq!((code, out.as_slice()), (0, b"SHOUT\n".as_slice()));

    let dir = std::env::temp_dir().join(format!("mags-agent-test-{}", std::process::id()));
    let path = dir.join("sub/file.bin");
    let data: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
    conn.write_file(path.to_str().expect("utf8"), 0o640, &data)
        .await
        .expect("write");
    assert_eq!(std::fs::read(&path).expect("read back"), data);
    let err = conn.write_file("relative/path", 0o644, b"x").await;
    assert!(err.is_err(), "relative paths are refused");
    let _ = std::fs::remove_dir_all(dir);
}
