//! Harness for the end-to-end tests: starts the real `magsd` (built by
//! `cargo build --workspace`) on a loopback port with its own data dir and
//! the shared guest image cache, and runs the real `mags` CLI against it.

pub mod load;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The longest one `mags` command of a test may run: then it is killed and
/// the test fails with the server's log, so a hang fails instead of
/// stalling the whole suite.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(600);

/// The longest a test may keep one server: then the watchdog prints the
/// server's log and kills it, so that whatever the test waits for fails.
pub const SERVER_LIMIT: Duration = Duration::from_secs(1200);

/// Runs `cmd` to completion with its output captured, killing it after
/// `limit` (the output then ends with a line saying so on stderr).
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let pid = child.id();
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(child.stdout.take().map(|r| Box::new(r) as _));
    let err = drain(child.stderr.take().map(|r| Box::new(r) as _));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let (status, killed) = match rx.recv_timeout(limit) {
        Ok(status) => (status, false),
        Err(_) => {
            // SAFETY: plain syscall on our own child's pid, not yet reaped.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            (rx.recv().expect("waiter"), true)
        }
    };
    let mut stderr = err.join().expect("stderr reader");
    if killed {
        stderr.extend_from_slice(
            format!("\n[test harness: killed after {} s]\n", limit.as_secs()).as_bytes(),
        );
    }
    Output {
        status: status.expect("wait"),
        stdout: out.join().expect("stdout reader"),
        stderr,
    }
}

/// Kills a test's `magsd` that outlives [`SERVER_LIMIT`], after printing
/// which test it was and the end of its log.
struct Watchdog {
    pid: AtomicU32,
    done: Mutex<bool>,
    wake: Condvar,
}

impl Watchdog {
    fn start(pid: u32, log: PathBuf) -> Arc<Watchdog> {
        let dog = Arc::new(Watchdog {
            pid: AtomicU32::new(pid),
            done: Mutex::new(false),
            wake: Condvar::new(),
        });
        let test = std::thread::current()
            .name()
            .unwrap_or("a test")
            .to_string();
        let d = dog.clone();
        std::thread::spawn(move || {
            let done = d.done.lock().unwrap_or_else(|p| p.into_inner());
            let (done, _) = d
                .wake
                .wait_timeout_while(done, SERVER_LIMIT, |done| !*done)
                .unwrap_or_else(|p| p.into_inner());
            if *done {
                return;
            }
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            eprintln!(
                "test harness: {test} has kept its magsd for {} s; killing it so the test fails \
                 instead of hanging. The end of its log:\n{}",
                SERVER_LIMIT.as_secs(),
                tail(&log, 80)
            );
            // SAFETY: plain syscall on the server's pid (our child).
            unsafe { libc::kill(d.pid.load(Ordering::SeqCst) as i32, libc::SIGKILL) };
        });
        dog
    }

    fn stand_down(&self) {
        *self.done.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.wake.notify_all();
    }
}

/// A workspace binary (`mags`, `magsd`) next to the test executable's target dir.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} not built: run `cargo build --workspace` before the tests",
        p.display()
    );
    p
}

/// The guest image cache shared by every test run on this host.
pub fn images_dir() -> PathBuf {
    std::env::var_os("MAGS_IMAGES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/mags/images")
        })
}

/// A running `magsd` with a fresh data dir; killed on drop.
pub struct Server {
    child: Child,
    pub url: String,
    pub token: String,
    pub dir: tempfile::TempDir,
    args: Vec<String>,
    watchdog: Arc<Watchdog>,
}

impl Server {
    /// Starts `magsd serve` with extra `args`, waits until it answers.
    pub fn start(args: &[&str]) -> Server {
        Server::start_in(tempfile::tempdir().expect("tempdir"), args)
    }

    /// Like [`Server::start`] in `dir` (its data dir is `dir/data`, which
    /// may already exist, e.g. as a mount point).
    pub fn start_in(dir: tempfile::TempDir, args: &[&str]) -> Server {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let child = spawn_magsd(dir.path(), &args);
        let watchdog = Watchdog::start(child.id(), dir.path().join("magsd.log"));
        let mut server = Server {
            child,
            url: String::new(),
            token: String::new(),
            dir,
            args,
            watchdog,
        };
        server.wait_ready();
        server
    }

    /// Stops the server (SIGTERM and a wait if `graceful`, else SIGKILL,
    /// as a crash) and starts it again on the same data dir and port file.
    pub fn restart(&mut self, graceful: bool) {
        if graceful {
            self.terminate();
        } else {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(self.dir.path().join("server.json"));
        self.child = spawn_magsd(self.dir.path(), &self.args);
        self.watchdog.pid.store(self.child.id(), Ordering::SeqCst);
        self.wait_ready();
    }

    /// magsd's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's data dir (`--data-dir`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A token for `user` (created if missing), from `magsd token create`.
    pub fn token_for(&self, user: &str) -> String {
        let o = Command::new(bin("magsd"))
            .args(["token", "create", "--user", user, "--data-dir"])
            .arg(self.dir.path().join("data"))
            .output()
            .expect("magsd token create");
        assert!(
            o.status.success(),
            "token create: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// SIGTERM, then SIGKILL after 60 s.
    fn terminate(&mut self) {
        // SAFETY: plain syscall on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn wait_ready(&mut self) {
        let server = self;
        server.url.clear();
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("magsd exited ({status}):\n{}", server.log());
            }
            let info = std::fs::read(server.dir.path().join("server.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
            if let Some(url) = info.and_then(|v| v["url"].as_str().map(str::to_string)) {
                if http_get(&url, "/health").is_some_and(|(code, _)| code == 200) {
                    server.url = url;
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "magsd did not come up:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server.token = std::fs::read_to_string(server.dir.path().join("token"))
            .expect("token file")
            .trim()
            .to_string();
    }

    /// The server's log so far (every start appends to it).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("magsd.log")).unwrap_or_default()
    }

    /// The `mags` CLI pointed at this server, with a private config home.
    pub fn mags(&self) -> Command {
        let mut c = Command::new(bin("mags"));
        c.env("MAGS_API_URL", &self.url)
            .env("MAGS_API_TOKEN", &self.token)
            .env("MAGS_HOME", self.dir.path().join("home"))
            .env_remove("MAGS_TOKEN")
            .stdin(Stdio::null());
        c
    }

    /// Runs `script` with the published Python client's interpreter
    /// (`MAGS_TEST_PYTHON`), aimed at this server, `args` as `sys.argv[1:]`;
    /// returns the JSON it prints. Panics with its stderr and the server
    /// log if it fails.
    pub fn python(&self, script: &str, args: &[&std::ffi::OsStr]) -> serde_json::Value {
        let py = match std::env::var("MAGS_TEST_PYTHON") {
            Ok(p) if !p.is_empty() => p,
            _ => panic!(
                "MAGS_TEST_PYTHON is not set: run `eval \"$(scripts/test-python)\"` to install \
                 magpie-mags==1.3.8 in a virtualenv first"
            ),
        };
        let o = output_within(
            Command::new(py)
                .args(["-c", script])
                .args(args)
                .env("MAGS_API_URL", &self.url)
                .env("MAGS_API_TOKEN", &self.token),
            COMMAND_LIMIT,
        );
        let log = self.log();
        assert!(
            o.status.success(),
            "python failed: {}\nserver log (end):\n{}",
            String::from_utf8_lossy(&o.stderr),
            &log[log.len().saturating_sub(8000)..]
        );
        serde_json::from_slice(&o.stdout).expect("the script prints JSON")
    }

    /// Runs `mags ARGS` to completion (killed after [`COMMAND_LIMIT`]).
    pub fn mags_output(&self, args: &[&str]) -> Output {
        output_within(self.mags().args(args), COMMAND_LIMIT)
    }

    /// stdout of a `mags` run that must have succeeded; panics with its
    /// output and the end of the server log otherwise.
    pub fn ok(&self, o: &Output) -> String {
        assert!(
            o.status.success(),
            "mags failed ({:?})\nstdout: {}\nstderr: {}\nserver log (tail):\n{}",
            o.status,
            stdout(o),
            stderr(o),
            tail(&self.log(), 40)
        );
        stdout(o)
    }

    /// `mags ARGS`, which must succeed: its stdout.
    pub fn run_ok(&self, args: &[&str]) -> String {
        self.ok(&self.mags_output(args))
    }

    /// `mags status NAME --json`.
    pub fn status(&self, name: &str) -> serde_json::Value {
        let o = self.mags_output(&["status", name, "--json"]);
        assert!(o.status.success(), "status: {}", stderr(&o));
        serde_json::from_slice(&o.stdout).expect("status --json is JSON")
    }

    /// Waits until job `name` has status `want`; its status then.
    pub fn wait_status(&self, name: &str, want: &str, within: Duration) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            let s = self.status(name);
            if s["status"] == want {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{name} never {want}: {s}\nlog (tail):\n{}",
                tail(&self.log(), 60)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.watchdog.stand_down();
        self.terminate();
    }
}

/// `magsd serve` on `dir` (data in `dir/data`), logging to `dir/magsd.log`.
fn spawn_magsd(dir: &Path, args: &[String]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("magsd.log"))
        .expect("log");
    Command::new(bin("magsd"))
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--listen", "127.0.0.1:0"])
        .arg("--server-file")
        .arg(dir.join("server.json"))
        .arg("--local-token-file")
        .arg(dir.join("token"))
        .args(args)
        .env("MAGS_IMAGES_DIR", images_dir())
        .env("RUST_LOG", "info")
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn magsd")
}

/// A bare HTTP/1.1 request on loopback with a bearer token and a JSON
/// body: (status, body as JSON, or as a string if it is not JSON).
pub fn http_json(
    base: &str,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&serde_json::Value>,
) -> Option<(u16, serde_json::Value)> {
    let addr = base.strip_prefix("http://")?.trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(120))).ok()?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let code = resp.split_whitespace().nth(1)?.parse().ok()?;
    let text = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let value =
        serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.into()));
    Some((code, value))
}

/// A bare HTTP/1.1 GET on loopback: (status, body).
pub fn http_get(base: &str, path: &str) -> Option<(u16, String)> {
    let addr = base.strip_prefix("http://")?.trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let code = resp.split_whitespace().nth(1)?.parse().ok()?;
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}

/// Every file under `dir`, recursively (nothing if it does not exist).
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `s3s-fs` (`cargo install s3s-fs@0.14.1 --locked --features binary`),
/// from `MAGS_TEST_S3S_FS` or `PATH`; a clear failure if missing.
fn s3s_fs() -> PathBuf {
    if let Some(p) = std::env::var_os("MAGS_TEST_S3S_FS").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("s3s-fs"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "s3s-fs not found (set MAGS_TEST_S3S_FS or put it on PATH): install it with \
             `cargo install s3s-fs@0.14.1 --locked --features binary`"
        )
    })
}

/// A real S3 server (`s3s-fs`) on a loopback port (or another local
/// address), serving a bucket from a temporary directory; killed on drop.
pub struct S3Server {
    child: Option<Child>,
    /// The address it listens on.
    pub host: std::net::IpAddr,
    pub port: u16,
    pub root: tempfile::TempDir,
}

impl S3Server {
    /// Starts it on loopback with an empty `bucket`.
    pub fn start(bucket: &str) -> S3Server {
        S3Server::start_on(std::net::Ipv4Addr::LOCALHOST.into(), bucket)
    }

    /// Starts it on `host` (an address of this machine, e.g. the bridge
    /// of `scripts/cluster-up`) with an empty `bucket`.
    pub fn start_on(host: std::net::IpAddr, bucket: &str) -> S3Server {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(root.path().join(bucket)).expect("bucket dir");
        let port = std::net::TcpListener::bind((host, 0))
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut s3 = S3Server {
            child: None,
            host,
            port,
            root,
        };
        s3.resume();
        s3
    }

    /// `magsd serve` flags for this server's `bucket`.
    pub fn magsd_args(&self, bucket: &str) -> Vec<String> {
        [
            "--s3-bucket",
            bucket,
            "--s3-endpoint",
            &format!(
                "http://{}",
                std::net::SocketAddr::from((self.host, self.port))
            ),
            "--s3-access-key-id",
            "mags-test",
            "--s3-secret-access-key",
            "mags-test-secret",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Kills it: the endpoint refuses connections until [`S3Server::resume`].
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and data (after [`S3Server::stop`]).
    pub fn resume(&mut self) {
        self.stop();
        let child = Command::new(s3s_fs())
            .args([
                "--host",
                &self.host.to_string(),
                "--port",
                &self.port.to_string(),
            ])
            .args([
                "--access-key",
                "mags-test",
                "--secret-key",
                "mags-test-secret",
            ])
            .arg(self.root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect((self.host, self.port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// stdout of a finished command as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// stderr of a finished command as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// An HTTP client builder that resolves every name to loopback, so the
/// server's public URLs (`<sub>.localhost:<port>`, `<sub>.apps.test`)
/// reach it with no DNS, as they do in a browser.
pub fn loopback_client() -> reqwest::ClientBuilder {
    reqwest::Client::builder().dns_resolver(std::sync::Arc::new(Loopback))
}

struct Loopback;

impl reqwest::dns::Resolve for Loopback {
    fn resolve(&self, _: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let addrs: reqwest::dns::Addrs = Box::new(std::iter::once(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            0,
        ))));
        Box::pin(std::future::ready(Ok(addrs)))
    }
}
