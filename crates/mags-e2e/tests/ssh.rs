//! Into a sandbox over SSH and terminals, end to end: the real server and
//! VMs, the system OpenSSH client (`ssh`, `scp`, `sftp`) with the key
//! `/access` returns, `script` for a real local terminal, and the
//! terminal WebSocket driven by the Rust client.

use mags_e2e::{http_json, stderr, stdout, Server};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The job id of `name`, from `mags status --json`.
fn job_id(server: &Server, name: &str) -> String {
    let o = server.mags_output(&["status", name, "--json"]);
    assert!(o.status.success(), "status: {}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    v["request_id"].as_str().expect("request_id").to_string()
}

fn status_of(server: &Server, name: &str) -> String {
    let o = server.mags_output(&["status", name, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    v["status"].as_str().unwrap_or_default().to_string()
}

fn new_sandbox(server: &Server, name: &str) -> String {
    let o = server.mags_output(&["new", name]);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stderr(&o), server.log());
    job_id(server, name)
}

/// What `/access` with port 22 gave: host, port and the key, written to a
/// private file.
struct Access {
    host: String,
    port: u16,
    key: PathBuf,
}

fn access(server: &Server, token: &str, id: &str, dir: &Path) -> Result<Access, (u16, String)> {
    let body = serde_json::json!({"port": 22});
    let (code, v) = http_json(
        &server.url,
        "POST",
        &format!("/api/v1/mags-jobs/{id}/access"),
        token,
        Some(&body),
    )
    .expect("access request");
    if code != 200 {
        assert_eq!(v["success"], false, "a failed access says so: {v}");
        return Err((code, v["error"].as_str().unwrap_or_default().to_string()));
    }
    assert_eq!(v["success"], true, "{v}");
    let key_text = v["ssh_private_key"].as_str().expect("key");
    assert!(key_text.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
    let n = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    let key = dir.join(format!("key{n}"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key)
        .expect("key file");
    f.write_all(key_text.as_bytes()).expect("write key");
    Ok(Access {
        host: v["ssh_host"].as_str().expect("host").to_string(),
        port: u16::try_from(v["ssh_port"].as_u64().expect("port")).expect("port"),
        key,
    })
}

fn ssh_opts(a: &Access) -> Vec<String> {
    let mut v: Vec<String> = vec!["-i".into(), a.key.display().to_string()];
    for o in [
        "StrictHostKeyChecking=no",
        "UserKnownHostsFile=/dev/null",
        "LogLevel=ERROR",
        "IdentitiesOnly=yes",
        "IdentityAgent=none",
        "BatchMode=yes",
    ] {
        v.extend(["-o".into(), o.into()]);
    }
    v
}

/// `ssh ... root@host ARGS`, with `input` on stdin.
fn ssh(a: &Access, args: &[&str], input: &[u8]) -> Output {
    let mut c = Command::new("ssh");
    c.args(ssh_opts(a))
        .args(["-p", &a.port.to_string()])
        .arg(format!("root@{}", a.host))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("run ssh");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input).expect("ssh stdin");
    drop(stdin);
    child.wait_with_output().expect("ssh output")
}

#[test]
fn ssh_runs_commands_with_its_key_and_refuses_everything_else() {
    let server = Server::start(&[]);
    let keys = tempfile::tempdir().expect("tempdir");
    let id = new_sandbox(&server, "box");
    let a = access(&server, &server.token, &id, keys.path()).expect("access");
    assert_eq!(a.host, "127.0.0.1");

    let t0 = Instant::now();
    let o = ssh(&a, &["echo hi; echo oops >&2; exit 3"], b"");
    let took = t0.elapsed();
    assert_eq!(o.status.code(), Some(3), "{}\n{}", stderr(&o), server.log());
    assert_eq!(stdout(&o), "hi\n");
    assert_eq!(stderr(&o), "oops\n");
    eprintln!("measured: ssh round trip (echo; exit 3) took {took:?}");

    // stdin reaches the command and EOF ends it; the job's cwd and files.
    let o = ssh(
        &a,
        &["cat > /root/marker; pwd; cat /root/marker"],
        b"piped in\n",
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "/root\npiped in\n");

    // No command: a login shell reading its commands from stdin.
    let o = ssh(&a, &[], b"echo from-stdin $((6*7))\nexit 9\n");
    assert_eq!(o.status.code(), Some(9), "{}", stderr(&o));
    assert!(stdout(&o).contains("from-stdin 42"), "{}", stdout(&o));

    // A key of our own making opens nothing.
    let wrong = keys.path().join("wrong");
    let g = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&wrong)
        .output()
        .expect("ssh-keygen");
    assert!(g.status.success(), "{}", stderr(&g));
    let bad = Access {
        key: wrong,
        host: a.host.clone(),
        port: a.port,
    };
    let o = ssh(&bad, &["echo should-not-run"], b"");
    assert_eq!(o.status.code(), Some(255));
    assert!(stderr(&o).contains("Permission denied"), "{}", stderr(&o));
    assert!(!stdout(&o).contains("should-not-run"));

    // Unknown jobs and other users' jobs: 404, `success: false`.
    let (code, msg) = access(&server, &server.token, "no-such-box", keys.path())
        .err()
        .expect("refused");
    assert_eq!(code, 404, "{msg}");
    let bob = server.token_for("bob");
    let (code, _) = access(&server, &bob, &id, keys.path())
        .err()
        .expect("bob may not reach alice's box");
    assert_eq!(code, 404);

    // `mags ssh` starts bob's own sandbox; alice's files are not in it,
    // and bob's key opens his sandbox only.
    let o = server
        .mags()
        .env("MAGS_API_TOKEN", &bob)
        .args([
            "ssh",
            "bobbox",
            "test -e /root/marker && echo SHARED; echo bob; exit 5",
        ])
        .output()
        .expect("mags ssh");
    assert_eq!(o.status.code(), Some(5), "{}\n{}", stderr(&o), server.log());
    assert_eq!(stdout(&o), "bob\n");
    let bob_id = {
        let o = server
            .mags()
            .env("MAGS_API_TOKEN", &bob)
            .args(["status", "bobbox", "--json"])
            .output()
            .expect("status");
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
        assert_eq!(v["status"], "running", "{v}");
        v["request_id"].as_str().expect("id").to_string()
    };
    let b = access(&server, &bob, &bob_id, keys.path()).expect("bob's access");
    let o = ssh(&b, &["cat /root/marker"], b"");
    assert_ne!(o.status.code(), Some(0), "bob's key reached alice's box");

    // Keys die with the sandbox.
    let o = server.mags_output(&["stop", "box"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = ssh(&a, &["echo still-open"], b"");
    assert_eq!(o.status.code(), Some(255), "{}", stdout(&o));
    assert!(stderr(&o).contains("Permission denied"), "{}", stderr(&o));
}

/// `script -qec CMD`: CMD on a real local terminal; (exit code, output).
fn on_terminal(cmd: &str) -> (Option<i32>, String) {
    // A `sleep` keeps script's stdin open, so it never sends an EOF key.
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "sleep 60 | script -qec {} /dev/null",
            shell_quote(cmd)
        ))
        .output()
        .expect("script");
    (o.status.code(), stdout(&o))
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[test]
fn terminals_sftp_and_waking_a_sleeping_sandbox() {
    let server = Server::start(&["--idle-timeout-secs", "3"]);
    let keys = tempfile::tempdir().expect("tempdir");
    let id = new_sandbox(&server, "box");

    // Access wakes a sleeping sandbox.
    let deadline = Instant::now() + Duration::from_secs(120);
    while status_of(&server, "box") != "sleeping" {
        assert!(Instant::now() < deadline, "never slept:\n{}", server.log());
        std::thread::sleep(Duration::from_millis(250));
    }
    let t0 = Instant::now();
    let a = access(&server, &server.token, &id, keys.path()).expect("access");
    eprintln!(
        "measured: /access on a sleeping sandbox took {:?}",
        t0.elapsed()
    );
    assert_eq!(status_of(&server, "box"), "running", "access woke it");
    // From here on it stays up: the rest is about terminals and files.
    let o = server.mags_output(&["set", "box", "--idle-timeout", "600"]);
    assert!(o.status.success(), "{}", stderr(&o));

    // ssh with a terminal: its size comes from ours.
    let ssh_cmd = format!(
        "stty rows 33 cols 99; ssh -tt {} -p {} root@{} 'tty; stty size; echo TERM=$TERM; exit 4'",
        ssh_opts(&a).join(" "),
        a.port,
        a.host
    );
    let (code, out) = on_terminal(&ssh_cmd);
    assert_eq!(code, Some(4), "{out}\n{}", server.log());
    assert!(out.contains("/dev/pts/"), "{out}");
    assert!(out.contains("33 99"), "{out}");

    // scp (SFTP underneath) and sftp, both ways, bytes intact.
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let local = keys.path().join("data.bin");
    std::fs::write(&local, &data).expect("write");
    let scp = |from: &str, to: &str| {
        Command::new("scp")
            .args(ssh_opts(&a))
            .args(["-P", &a.port.to_string(), from, to])
            .output()
            .expect("scp")
    };
    let remote = format!("root@{}:/root/data.bin", a.host);
    let o = scp(&local.display().to_string(), &remote);
    assert!(
        o.status.success(),
        "scp up: {}\n{}",
        stderr(&o),
        server.log()
    );
    let back = keys.path().join("back.bin");
    let o = scp(&remote, &back.display().to_string());
    assert!(o.status.success(), "scp down: {}", stderr(&o));
    assert!(
        std::fs::read(&back).expect("read") == data,
        "scp round trip"
    );
    let batch = format!(
        "put {} /root/s.bin\nget /root/s.bin {}/s-back.bin\n",
        local.display(),
        keys.path().display()
    );
    let mut sftp = Command::new("sftp")
        .args(ssh_opts(&a))
        .args(["-b", "-", "-P", &a.port.to_string()])
        .arg(format!("root@{}", a.host))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sftp");
    sftp.stdin
        .take()
        .expect("stdin")
        .write_all(batch.as_bytes())
        .expect("batch");
    let o = sftp.wait_with_output().expect("sftp");
    assert!(o.status.success(), "sftp: {}", stderr(&o));
    assert!(std::fs::read(keys.path().join("s-back.bin")).expect("read") == data);

    // `mags exec -it` on a real terminal: a PTY of our size, exit code kept.
    let mags = mags_e2e::bin("mags");
    let exec_cmd = format!(
        "stty rows 41 cols 123; MAGS_API_URL={} MAGS_API_TOKEN={} {} exec -it box 'tty; stty size; exit 6'",
        server.url,
        server.token,
        mags.display()
    );
    let (code, out) = on_terminal(&exec_cmd);
    assert_eq!(code, Some(6), "{out}\n{}", server.log());
    assert!(out.contains("/dev/pts/"), "{out}");
    assert!(out.contains("41 123"), "{out}");

    // The WebSocket itself: typing, resize (SIGWINCH), Ctrl-C, exit code.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(drive_terminal(&server, &id));
}

/// Reads terminal output until `needle` appears.
async fn read_until(r: &mut mags_client::TtyReader, needle: &str) -> String {
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !seen.contains(needle) {
        match tokio::time::timeout_at(deadline, r.next()).await {
            Ok(Some(mags_client::TtyEvent::Output(b))) => {
                seen.push_str(&String::from_utf8_lossy(&b))
            }
            other => panic!("waiting for {needle:?}: {other:?}; output so far {seen:?}"),
        }
    }
    seen
}

async fn drive_terminal(server: &Server, id: &str) {
    let client = mags_client::Client::new(&server.url, &server.token).expect("client");
    let q = mags_api::TtyQuery {
        command: Some("bash --norc --noprofile -i".into()),
        rows: Some(24),
        cols: Some(80),
        term: None,
    };
    let (mut w, mut r) = client.tty(id, &q).await.expect("tty").split();
    w.input(b"PS1='$ '; trap 'echo WINCH $(stty size)' WINCH; echo TERM=$TERM\n")
        .await
        .expect("type");
    read_until(&mut r, "TERM=xterm-256color").await;
    w.resize(50, 132).await.expect("resize");
    w.input(b"\n").await.expect("type");
    read_until(&mut r, "WINCH 50 132").await;
    w.input(b"sleep 60\n").await.expect("type");
    tokio::time::sleep(Duration::from_millis(500)).await;
    w.input(b"\x03").await.expect("ctrl-c");
    w.input(b"echo after-$?\n").await.expect("type");
    read_until(&mut r, "after-130").await;
    w.input(b"exit 7\n").await.expect("type");
    loop {
        match tokio::time::timeout(Duration::from_secs(30), r.next()).await {
            Ok(Some(mags_client::TtyEvent::Output(_))) => continue,
            Ok(Some(mags_client::TtyEvent::Exit(code))) => {
                assert_eq!(code, 7);
                break;
            }
            other => panic!("no exit: {other:?}"),
        }
    }

    // Someone else's sandbox: refused before any upgrade.
    let bob = mags_client::Client::new(&server.url, &server.token_for("bob")).expect("client");
    match bob.tty(id, &q).await {
        Err(e) => assert_eq!(e.status().map(|s| s.as_u16()), Some(404), "{e}"),
        Ok(_) => panic!("bob opened alice's terminal"),
    }
}
