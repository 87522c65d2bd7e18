//! The real `mags` binary against a real server (in-process, fake
//! executor): streaming, exit codes, name resolution, login. And local
//! mode with the real `magsd` binary, when it is built next to `mags`.

use mags_control::executor::fake::FakeExecutor;
use mags_control::Control;
use mags_server::{router, AppState};
use mags_store::Store;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Server {
    url: String,
    token: String,
    home: tempfile::TempDir,
    _data: tempfile::TempDir,
}

/// Starts a server on a free port in a background runtime.
fn start_server() -> Server {
    let data = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}/mags.db", data.path().display());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async move {
            let store = Store::connect(&db).await.expect("store");
            let user = store.ensure_user("tester", false).await.expect("user");
            let (_, token) = store.create_token(&user.id).await.expect("token");
            let (control, _shutdown) = Control::new(store, Arc::new(FakeExecutor::new()), 4);
            let state = AppState::new(control);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            tx.send((format!("http://{addr}"), token)).expect("send");
            axum::serve(listener, router(state)).await.expect("serve");
        });
    });
    let (url, token) = rx.recv_timeout(Duration::from_secs(20)).expect("server up");
    Server {
        url,
        token,
        home: tempfile::tempdir().expect("home"),
        _data: data,
    }
}

fn mags_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mags"))
}

impl Server {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(mags_bin());
        c.args(args)
            .env("MAGS_API_URL", &self.url)
            .env("MAGS_API_TOKEN", &self.token)
            .env("MAGS_HOME", self.home.path())
            .env_remove("MAGS_TOKEN")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run mags")
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn run_streams_output_and_exits_with_the_script_code() {
    let s = start_server();
    let out = s.run(&[
        "run",
        "echo out1\necho err1 >&2\nhex ff00\necho out2\nexit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert_eq!(out.stdout, b"out1\n\xff\x00out2\n");
    assert_eq!(text(&out.stderr), "err1\n");

    let out = s.run(&[
        "run", "-n", "named", "--env", "A=1", "--disk", "3", "echo ok",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), "ok\n");

    let out = s.run(&["run", "fail no capacity"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no capacity"),
        "{}",
        text(&out.stderr)
    );

    let out = s.run(&["run", "echo", "--env", "NOEQUALS"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("KEY=VALUE"));
}

/// The flags as the public docs give them: `-n` is `-w` (job name and
/// workspace), `-e` is `--ephemeral` and refuses a workspace, `-p` or
/// `--base` before anything is created, `--startup-command` needs no `-p`.
#[test]
fn run_flags_are_the_documented_ones() {
    let s = start_server();
    let out = s.run(&["run", "-n", "proj", "echo one"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = s.run(&["status", "proj", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        (v["name"].as_str(), v["workspace_id"].as_str()),
        (Some("proj"), Some("proj")),
        "{v}"
    );
    let out = s.run(&["run", "--name", "proj2", "echo two"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = s.run(&["status", "proj2", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["workspace_id"], "proj2", "{v}");

    let out = s.run(&["run", "-e", "echo fast"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "fast\n");
    let out = s.run(&["list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["jobs"][0]["workspace_id"], serde_json::Value::Null, "{v}");
    let before = v["total"].as_u64();

    for bad in [
        &["run", "-e", "-w", "x", "echo"][..],
        &["run", "-e", "-n", "x", "echo"],
        &["run", "-e", "-p", "echo"],
        &["run", "--ephemeral", "--base", "b", "echo"],
    ] {
        let out = s.run(bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains("'--ephemeral' cannot be used with"),
            "{bad:?}: {err}"
        );
    }
    let out = s.run(&["list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["total"].as_u64(), before, "nothing was created: {v}");

    let out = s.run(&["run", "--startup-command", "echo woke", "echo ran"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ran\n");
}

/// `mags cron add -n NAME -s EXPR [-w WS] [-p]`: `-p` without `-w` uses a
/// workspace named after the cron job.
#[test]
fn cron_add_takes_the_documented_short_flags() {
    let s = start_server();
    let out = s.run(&[
        "cron",
        "add",
        "-n",
        "health",
        "-s",
        "*/5 * * * *",
        "-w",
        "monitors",
        "--json",
        "curl -sf http://x/health",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        (
            v["cron_expression"].as_str(),
            v["workspace_id"].as_str(),
            v["persistent"].as_bool()
        ),
        (Some("*/5 * * * *"), Some("monitors"), Some(false)),
        "{v}"
    );
    let out = s.run(&[
        "cron", "add", "-n", "keeper", "-s", "@hourly", "-p", "--json", "echo",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        (v["workspace_id"].as_str(), v["persistent"].as_bool()),
        (Some("keeper"), Some(true)),
        "{v}"
    );
}

#[test]
fn output_arrives_while_the_job_runs() {
    let s = start_server();
    let started = Instant::now();
    let mut child = s
        .cmd(&["run", "echo first\nsleep 1.5\necho second"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = [0u8; 6];
    stdout.read_exact(&mut first).expect("first line");
    let first_at = started.elapsed();
    assert_eq!(&first, b"first\n");
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).expect("rest");
    let status = child.wait().expect("wait");
    let total = started.elapsed();
    assert!(status.success());
    assert_eq!(rest, b"second\n");
    assert!(
        total >= Duration::from_millis(1500) && first_at + Duration::from_millis(1000) < total,
        "first line after {first_at:?}, end after {total:?}: output was not streamed"
    );
}

#[test]
fn status_logs_and_list_resolve_names() {
    let s = start_server();
    assert!(s
        .run(&["run", "-n", "alpha", "echo a1\necho a2 >&2"])
        .status
        .success());
    assert!(s.run(&["run", "-w", "ws-b", "echo b"]).status.success());

    let out = s.run(&["status", "alpha"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("completed (exit 0)"));

    let out = s.run(&["status", "ws-b", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["workspace_id"], "ws-b");
    assert_eq!(v["name"], "ws-b");
    let id = v["request_id"].as_str().expect("id").to_string();

    let out = s.run(&["logs", &id]);
    assert_eq!(text(&out.stdout), "b\n");
    let out = s.run(&["logs", "alpha"]);
    assert_eq!(
        (text(&out.stdout), text(&out.stderr)),
        ("a1\n".into(), "a2\n".into())
    );

    let out = s.run(&["list"]);
    let listing = text(&out.stdout);
    let lines: Vec<&str> = listing.lines().collect();
    assert!(lines[0].starts_with("ID"), "{listing}");
    assert!(
        lines[1].contains("ws-b") && lines[2].contains("alpha"),
        "{listing}"
    );

    let out = s.run(&["status", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no job found"));
}

#[test]
fn sandbox_commands_new_exec_set_stop() {
    let s = start_server();
    let out = s.run(&["new", "box"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "box\n");
    let out = s.run(&["status", "box", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        (v["status"].as_str(), v["persistent"].as_bool()),
        (Some("running"), Some(true))
    );
    assert!(v["vm_id"].as_str().is_some_and(|id| !id.is_empty()));
    // A second `new` on the same name takes the workspace over: the first
    // sandbox's job ends `completed`, the new one runs.
    let first = v["request_id"].as_str().expect("id").to_string();
    let out = s.run(&["new", "box"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = s.run(&["status", &first, "--json"]);
    let old: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(old["status"], "completed", "{old}");
    let out = s.run(&["logs", &first]);
    assert!(
        text(&out.stderr).contains("replaced by job"),
        "{}",
        text(&out.stderr)
    );
    let out = s.run(&["status", "box", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_ne!(v["request_id"].as_str(), Some(first.as_str()));
    assert_eq!(v["status"], "running");

    // exec streams both outputs and exits with the command's code.
    let out = s.run(&["exec", "box", "echo hi\necho err >&2\nexit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(
        (text(&out.stdout), text(&out.stderr)),
        ("hi\n".into(), "err\n".into())
    );
    let out = s.run(&["exec", "box", "echo", "several", "words"]);
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(0), "several words\n".into())
    );
    let out = s.run(&["exec", "--timeout", "0.3", "box", "sleep 20"]);
    assert_eq!(out.status.code(), Some(124), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("timed out"));
    // On a terminal (the fake executor gives one too): its output and exit.
    let out = s.run(&["exec", "-it", "box", "echo on a tty\nexit 5"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("on a tty"),
        "{}",
        text(&out.stdout)
    );
    let out = s.run(&["exec", "nosuch", "echo"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no job found"),
        "{}",
        text(&out.stderr)
    );

    let out = s.run(&["set", "box", "--no-sleep", "--startup-command", "echo up"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("never sleeps"),
        "{}",
        text(&out.stderr)
    );
    let out = s.run(&["status", "box"]);
    assert!(text(&out.stdout).contains("never"), "{}", text(&out.stdout));
    let out = s.run(&["set", "box", "--sleep", "--idle-timeout", "60"]);
    assert!(
        text(&out.stderr).contains("after 60 s idle"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(s.run(&["set", "box"]).status.code(), Some(1));
    assert!(s.run(&["sync", "box"]).status.success());

    let out = s.run(&["stop", "box"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = s.run(&["status", "box", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["status"], "completed");
    let out = s.run(&["exec", "box", "echo"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("completed"),
        "{}",
        text(&out.stderr)
    );

    // run -p: the script's output and exit code, the sandbox stays up.
    let out = s.run(&["run", "-p", "-n", "kept", "echo setup\nexit 2"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "setup\n");
    assert!(
        text(&out.stderr).contains("stays up"),
        "{}",
        text(&out.stderr)
    );
    let out = s.run(&["exec", "kept", "echo still"]);
    assert_eq!(text(&out.stdout), "still\n");
}

#[test]
fn login_saves_a_private_config_and_logout_forgets_it() {
    use std::os::unix::fs::PermissionsExt as _;
    let s = start_server();
    let login = |token: &str| {
        let mut c = Command::new(mags_bin());
        c.args(["login", "--url", &s.url, "--token", token])
            .env("MAGS_HOME", s.home.path())
            .env_remove("MAGS_API_URL")
            .env_remove("MAGS_API_TOKEN")
            .env_remove("MAGS_TOKEN")
            .stdin(Stdio::null());
        c.output().expect("login")
    };
    let bad = login("mags_wrong");
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stderr).contains("invalid API token"),
        "{}",
        text(&bad.stderr)
    );
    let config = s.home.path().join("config.json");
    assert!(!config.exists());

    let ok = login(&s.token);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let mode = std::fs::metadata(&config)
        .expect("config")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let mut who = Command::new(mags_bin());
    who.arg("whoami")
        .env("MAGS_HOME", s.home.path())
        .env_remove("MAGS_API_URL")
        .env_remove("MAGS_API_TOKEN")
        .env_remove("MAGS_TOKEN");
    let out = who.output().expect("whoami");
    assert!(
        text(&out.stdout).contains("tester"),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("config.json"));

    let mut logout = Command::new(mags_bin());
    logout.arg("logout").env("MAGS_HOME", s.home.path());
    assert!(logout.output().expect("logout").status.success());
    let saved = std::fs::read_to_string(&config).expect("config");
    assert!(!saved.contains("mags_"), "token forgotten: {saved}");
}

/// `magsd` built next to `mags`, or a clear failure: a test never skips itself.
fn magsd_beside_mags() -> Option<PathBuf> {
    let p = mags_bin().with_file_name("magsd");
    if p.is_file() {
        return Some(p);
    }
    panic!(
        "{} is missing: build the workspace (cargo build --workspace) so the local-mode test runs",
        p.display()
    )
}

fn stop_local_server(home: &Path) {
    let file = home.join("local/server.json");
    if let Ok(bytes) = std::fs::read(&file) {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
            if let Some(pid) = v["pid"].as_i64().and_then(|p| i32::try_from(p).ok()) {
                // The server this test started, by its own pid.
                let _ = Command::new("kill").arg(pid.to_string()).status();
            }
        }
    }
}

#[test]
fn local_mode_starts_and_reuses_a_server() {
    if magsd_beside_mags().is_none() {
        return;
    }
    let home = tempfile::tempdir().expect("home");
    let run = |script: &str| {
        Command::new(mags_bin())
            .args(["run", script])
            .env("MAGS_HOME", home.path())
            .env("MAGS_EXECUTOR", "fake")
            .env_remove("MAGS_API_URL")
            .env_remove("MAGS_API_TOKEN")
            .env_remove("MAGS_TOKEN")
            .stdin(Stdio::null())
            .output()
            .expect("mags run")
    };
    let first = run("echo Hello World");
    let second = run("echo again\nexit 3");
    stop_local_server(home.path());
    assert_eq!(
        text(&first.stdout),
        "Hello World\n",
        "{}",
        text(&first.stderr)
    );
    assert!(first.status.success());
    assert!(text(&first.stderr).contains("starting a local server"));
    assert_eq!(second.status.code(), Some(3));
    assert!(
        !text(&second.stderr).contains("starting"),
        "the server is reused"
    );
    let token = home.path().join("local/token");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&token)
        .expect("token")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn token_create_list_and_revoke_own_tokens() {
    let s = start_server();
    let out = s.run(&["token", "create"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let new = text(&out.stdout).trim().to_string();
    assert!(new.starts_with("mags_"), "{new}");
    let out = s.run(&["token", "list", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(list["total"], 2);
    assert!(!text(&out.stdout).contains(&new), "a secret in the listing");
    let out = s.run(&["token", "list"]);
    assert!(text(&out.stdout).contains("LAST USED"));
    let prefix = &new[..12];
    let out = s.run(&["token", "revoke", prefix, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(r["prefix"], prefix);
    // The revoked token is refused; the one in use still works.
    let out = s
        .cmd(&["list"])
        .env("MAGS_API_TOKEN", &new)
        .output()
        .expect("mags");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("401"), "{}", text(&out.stderr));
    let out = s.run(&["token", "revoke", "nope"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not found"),
        "{}",
        text(&out.stderr)
    );
    assert!(s.run(&["token", "list"]).status.success());
}

#[test]
fn rm_deletes_an_ended_job_and_refuses_a_live_one() {
    let s = start_server();
    assert!(s.run(&["run", "-n", "old", "echo gone"]).status.success());
    let out = s.run(&["new", "live-box"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = s.run(&["rm", "live-box"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("stop it first"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        s.run(&["status", "live-box"]).status.success(),
        "still there"
    );

    let out = s.run(&["status", "old", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let id = v["request_id"].as_str().expect("id").to_string();
    assert_eq!(v["output_bytes"], 5, "{v}");
    let out = s.run(&["rm", "old", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        (&v["success"], &v["request_id"], &v["output_bytes"]),
        (
            &serde_json::json!(true),
            &serde_json::json!(id),
            &serde_json::json!(5)
        ),
        "{v}"
    );
    let out = s.run(&["status", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not found"),
        "{}",
        text(&out.stderr)
    );
    let out = s.run(&["rm", &id]);
    assert_eq!(out.status.code(), Some(1), "a second rm finds nothing");
}
