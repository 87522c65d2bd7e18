//! `/logs` in bounded memory: a real `magsd` (fake executor, SQLite) in a
//! memory cgroup of 512 MiB that this test makes, a job that floods its
//! output to the store's cap (64 MiB), then 10 concurrent `/logs`
//! requests. The server must live, answer `/health` throughout, and give
//! every client valid JSON with every line. Needs root and a cgroup
//! filesystem with the memory controller; fails (never skips) without.

use mags_api::{LogEntry, OutputStream};
use mags_store::Store;
use serde::de::{SeqAccess, Visitor};
use serde::Deserialize;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The memory the server gets.
const MEMORY_LIMIT: u64 = 512 * 1024 * 1024;
/// The store's cap on one job's output (`sink::MAX_OUTPUT_BYTES`).
const CAP: u64 = mags_api::limits::MAX_OUTPUT_BYTES;
/// Concurrent `/logs` requests.
const CLIENTS: usize = 10;

/// A memory cgroup made for this test (v2: `memory.max`; v1: the memory
/// controller's `memory.limit_in_bytes`), removed on drop.
struct MemCgroup {
    dir: PathBuf,
    v2: bool,
}

impl MemCgroup {
    fn make(name: &str, limit: u64) -> Result<MemCgroup, String> {
        let root = Path::new("/sys/fs/cgroup");
        let v2 = std::fs::read_to_string(root.join("cgroup.controllers"))
            .map(|c| c.split_whitespace().any(|w| w == "memory"));
        let (dir, v2, limit_file) = match v2 {
            Ok(true) => {
                // Children get the memory controller only if the root hands it down.
                let _ = std::fs::write(root.join("cgroup.subtree_control"), "+memory");
                (root.join(name), true, "memory.max")
            }
            Ok(false) => {
                return Err("cgroup v2 is mounted at /sys/fs/cgroup but its memory \
                 controller is not available (cgroup.controllers lacks \"memory\")"
                    .into())
            }
            Err(_) if root.join("memory").is_dir() => (
                root.join("memory").join(name),
                false,
                "memory.limit_in_bytes",
            ),
            Err(e) => {
                return Err(format!(
                    "no cgroup filesystem with a memory controller under /sys/fs/cgroup ({e})"
                ))
            }
        };
        std::fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let group = MemCgroup { dir, v2 };
        std::fs::write(group.dir.join(limit_file), limit.to_string())
            .map_err(|e| format!("set {limit_file} in {}: {e}", group.dir.display()))?;
        if !group.v2 {
            // No swap either, so the limit is the limit.
            let _ = std::fs::write(
                group.dir.join("memory.memsw.limit_in_bytes"),
                limit.to_string(),
            );
        }
        Ok(group)
    }

    fn add(&self, pid: u32) -> Result<(), String> {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
            .map_err(|e| format!("move pid {pid} into {}: {e}", self.dir.display()))
    }

    fn read_u64(&self, file: &str) -> Option<u64> {
        std::fs::read_to_string(self.dir.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The file saying how many bytes are charged now (page cache included).
    fn current_file(&self) -> PathBuf {
        self.dir.join(if self.v2 {
            "memory.current"
        } else {
            "memory.usage_in_bytes"
        })
    }

    /// The kernel's own high-water mark, where it keeps one.
    fn peak(&self) -> Option<u64> {
        self.read_u64(if self.v2 {
            "memory.peak"
        } else {
            "memory.max_usage_in_bytes"
        })
    }

    /// How many processes the OOM killer took in this group.
    fn oom_kills(&self) -> u64 {
        let f = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        std::fs::read_to_string(self.dir.join(f))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        // The server is gone by now; an empty group can be removed.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("could not remove the test's cgroup {}", self.dir.display());
    }
}

/// The `magsd` process, killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Peak resident memory of process `pid` (`VmHWM`), bytes.
fn vm_hwm(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// A plain HTTP/1.1 GET; the status and the body as a reader (chunked
/// transfer decoded), read as it arrives.
fn get(addr: &str, path: &str, token: Option<&str>) -> std::io::Result<(u16, Box<dyn Read>)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )?;
    let mut r = BufReader::with_capacity(64 * 1024, s);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut chunked = false;
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim().to_ascii_lowercase();
        if l.is_empty() {
            break;
        }
        chunked |= l == "transfer-encoding: chunked";
    }
    Ok((
        status,
        if chunked {
            Box::new(Chunked {
                r,
                left: 0,
                done: false,
            })
        } else {
            Box::new(r)
        },
    ))
}

/// Decodes `Transfer-Encoding: chunked`; a body cut short is an error.
struct Chunked<R> {
    r: R,
    left: usize,
    done: bool,
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        if self.left == 0 {
            let mut size = String::new();
            if self.r.read_line(&mut size)? == 0 {
                return Err(std::io::Error::other(
                    "body ended inside the chunked encoding",
                ));
            }
            let hex = size.trim().split(';').next().unwrap_or("");
            self.left = usize::from_str_radix(hex, 16)
                .map_err(|_| std::io::Error::other(format!("bad chunk size {size:?}")))?;
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let want = buf.len().min(self.left);
        let n = self.r.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::other("body ended inside a chunk"));
        }
        self.left -= n;
        if self.left == 0 {
            let mut crlf = [0u8; 2];
            self.r.read_exact(&mut crlf)?;
        }
        Ok(n)
    }
}

/// What one client saw, counted entry by entry (never held whole).
#[derive(Debug, Default, Clone, PartialEq)]
struct Tally {
    full_lines: u64,
    stdout_bytes: u64,
    other_stdout: Vec<String>,
    system: Vec<String>,
    stderr: u64,
}

/// The line the job prints, `LINE_LEN` bytes with its newline.
const LINE: &str = concat!(
    "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz",
    "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz",
    "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz",
    "-end-of-line-"
);

impl<'de> Deserialize<'de> for Tally {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Tally, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Tally;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("log entries")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tally, A::Error> {
                let mut t = Tally::default();
                while let Some(e) = seq.next_element::<LogEntry>()? {
                    match e.source {
                        OutputStream::Stdout => {
                            t.stdout_bytes += e.message.len() as u64;
                            if e.message == LINE {
                                t.full_lines += 1;
                                t.stdout_bytes += 1;
                            } else if t.other_stdout.len() < 5 {
                                t.other_stdout.push(e.message);
                            }
                        }
                        OutputStream::System => t.system.push(e.message),
                        OutputStream::Stderr => t.stderr += 1,
                    }
                }
                Ok(t)
            }
        }
        d.deserialize_seq(V)
    }
}

#[derive(Deserialize)]
struct Body {
    logs: Tally,
}

fn read_logs(addr: &str, token: &str, job: &str) -> Result<Tally, String> {
    let (status, body) = get(addr, &format!("/api/v1/mags-jobs/{job}/logs"), Some(token))
        .map_err(|e| format!("request: {e}"))?;
    if status != 200 {
        return Err(format!("status {status}"));
    }
    let mut de = serde_json::Deserializer::from_reader(BufReader::with_capacity(1 << 16, body));
    let b = Body::deserialize(&mut de).map_err(|e| format!("invalid JSON: {e}"))?;
    de.end().map_err(|e| format!("data after the JSON: {e}"))?;
    Ok(b.logs)
}

fn json_get(addr: &str, path: &str, token: &str) -> serde_json::Value {
    let (status, mut body) = get(addr, path, Some(token)).expect("request");
    let mut text = String::new();
    body.read_to_string(&mut text).expect("body");
    assert_eq!(status, 200, "{path}: {text}");
    serde_json::from_str(&text).expect("JSON")
}

fn post_job(addr: &str, token: &str, script: &str) -> String {
    let body = serde_json::json!({"script": script, "persistent": false}).to_string();
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "POST /api/v1/mags-jobs HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("answer");
    let json = resp.split("\r\n\r\n").nth(1).unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|_| panic!("{resp}"));
    v["request_id"].as_str().expect("request_id").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_logs_of_a_flooded_job_fit_in_512_mib() {
    let group = MemCgroup::make(
        &format!("mags-test-logs-{}", std::process::id()),
        MEMORY_LIMIT,
    )
    .unwrap_or_else(|why| {
        panic!(
            "cannot make the memory cgroup this test runs magsd in: {why}. Run the test \
                 as root on a host with cgroup v2 (memory controller enabled) or the cgroup v1 \
                 memory controller mounted under /sys/fs/cgroup/memory."
        )
    });

    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::connect(&format!("sqlite://{}/mags.db", dir.path().display()))
        .await
        .expect("store");
    let alice = store.create_user("alice", false).await.expect("user");
    let (_, token) = store.create_token(&alice.id).await.expect("token");
    store.close().await;

    let server_file = dir.path().join("server.json");
    let child = Command::new(env!("CARGO_BIN_EXE_magsd"))
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--executor", "fake"])
        .arg("--server-file")
        .arg(&server_file)
        .env_remove("MAGS_DATABASE_URL")
        // Ten readers share four SQLite connections: waits are expected.
        .env("RUST_LOG", "warn,sqlx=error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start magsd");
    let pid = child.id();
    let mut server = Server(child);
    group.add(pid).unwrap_or_else(|e| panic!("{e}"));

    let started = Instant::now();
    let addr = loop {
        if let Some(url) = std::fs::read_to_string(&server_file)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["url"].as_str().map(str::to_string))
        {
            break url.trim_start_matches("http://").to_string();
        }
        assert!(
            server.0.try_wait().ok().flatten().is_none(),
            "magsd exited at start"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "magsd did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    };

    // More than the cap, so the store keeps exactly CAP bytes of it.
    let line_len = LINE.len() as u64 + 1;
    let lines = CAP / line_len + 1000;
    let job = post_job(&addr, &token, &format!("repeat {lines} {LINE}"));
    let started = Instant::now();
    loop {
        let v = json_get(&addr, &format!("/api/v1/mags-jobs/{job}/status"), &token);
        if matches!(v["status"].as_str(), Some("completed" | "error")) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the flood job did not finish: {v}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let flooded = started.elapsed();

    // While the clients read: /health every 200 ms, memory every 20 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let health = {
        let (stop, addr) = (stop.clone(), addr.clone());
        std::thread::spawn(move || {
            let mut answered = 0u32;
            let mut slowest = Duration::ZERO;
            while !stop.load(Ordering::SeqCst) {
                let t = Instant::now();
                let ok = get(&addr, "/health", None)
                    .ok()
                    .and_then(|(status, mut body)| {
                        let mut text = String::new();
                        body.read_to_string(&mut text).ok()?;
                        (status == 200 && text.contains("\"ok\"")).then_some(())
                    });
                if ok.is_none() {
                    return Err(format!("/health failed after {answered} answers"));
                }
                answered += 1;
                slowest = slowest.max(t.elapsed());
                std::thread::sleep(Duration::from_millis(200));
            }
            Ok((answered, slowest))
        })
    };
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        let file = group.current_file();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let now = std::fs::read_to_string(&file)
                    .ok()
                    .and_then(|t| t.trim().parse().ok())
                    .unwrap_or(0);
                peak.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let read_started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (addr, token, job) = (addr.clone(), token.clone(), job.clone());
            std::thread::spawn(move || read_logs(&addr, &token, &job))
        })
        .collect();
    let results: Vec<Result<Tally, String>> = clients
        .into_iter()
        .map(|c| c.join().unwrap_or_else(|_| Err("client panicked".into())))
        .collect();
    let read_time = read_started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let health = health.join().expect("health thread");
    sampler.join().expect("sampler thread");

    let alive = server.0.try_wait().ok().flatten().is_none();
    let rss_peak = vm_hwm(pid);
    let sampled_peak = peak.load(Ordering::SeqCst);
    let kernel_peak = group.peak();
    let oom_kills = group.oom_kills();
    eprintln!(
        "flood {flooded:?}, {CLIENTS} reads in {read_time:?}; magsd memory: cgroup peak {} MiB \
         (sampled {} MiB, page cache included), RSS high-water mark {} MiB, limit {} MiB; \
         /health {health:?}",
        kernel_peak.unwrap_or(sampled_peak) >> 20,
        sampled_peak >> 20,
        rss_peak.unwrap_or(0) >> 20,
        MEMORY_LIMIT >> 20,
    );

    assert!(alive, "magsd died (OOM kills in its cgroup: {oom_kills})");
    assert_eq!(oom_kills, 0, "the OOM killer ran in magsd's cgroup");
    let (answered, slowest) = health.unwrap_or_else(|e| panic!("{e}"));
    assert!(answered >= 1, "/health was never asked");
    assert!(
        slowest < Duration::from_secs(10),
        "/health took {slowest:?}"
    );

    let full = CAP / line_len;
    let rest = (CAP % line_len) as usize;
    for (i, r) in results.iter().enumerate() {
        let t = r.as_ref().unwrap_or_else(|e| panic!("client {i}: {e}"));
        assert_eq!(t.full_lines, full, "client {i}: every full line");
        assert_eq!(t.stdout_bytes, CAP, "client {i}: all stored bytes");
        let partial: Vec<&str> = t.other_stdout.iter().map(String::as_str).collect();
        assert_eq!(partial, [&LINE[..rest]], "client {i}: the cut last line");
        assert!(
            t.system.iter().any(|m| m.starts_with("output truncated")),
            "client {i}: the truncation notice: {:?}",
            t.system
        );
        assert_eq!(t.stderr, 0, "client {i}");
    }
    drop(server);
    drop(group);
}
