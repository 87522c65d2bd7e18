//! Real `magsd` hosts (fake executor) on one real Postgres database.
//!
//! - Failover: a host killed with SIGKILL mid-work is declared lost by the
//!   other, its running one-shot jobs end `error` naming it, the jobs it
//!   had queued run exactly once on the other host, its `no_sleep` sandbox
//!   comes back there by itself and its other sandbox on the next request;
//!   started again under its name, it takes back nothing.
//! - Relaying: every request for a sandbox, sent to the host that does not
//!   run it, is answered by the one that does (exec, its stream, the
//!   terminal, a public URL, stop), with the same per-user checks; the
//!   internal listener refuses what is not signed with the cluster secret;
//!   both SSH gateways show the cluster's one host key.

mod common;

use mags_api::{CreateJobRequest, JobState};
use mags_store::{HostState, Job, Store};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the server when the test ends, however it ends.
struct Host {
    child: Child,
    url: String,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts host `name` on `db`, its own data dir under `root`; waits for
/// its server file.
async fn start(root: &Path, name: &str, db: &str, max_vms: u32) -> Host {
    start_with(root, name, db, max_vms, &["--ssh-listen", "off"]).await
}

/// [`start`] with more flags.
async fn start_with(root: &Path, name: &str, db: &str, max_vms: u32, extra: &[&str]) -> Host {
    let data = root.join(name);
    let server_file = data.join("server.json");
    let _ = std::fs::remove_file(&server_file);
    let log = std::fs::File::create(root.join(format!("{name}.log"))).expect("log");
    let child = Command::new(env!("CARGO_BIN_EXE_magsd"))
        .args(["serve", "--executor", "fake", "--listen", "127.0.0.1:0"])
        .args(["--host-name", name])
        .args(["--lease-secs", "1", "--lost-after-secs", "1"])
        .args(["--max-vms", &max_vms.to_string()])
        .args(if extra.contains(&"--user-max-vms") {
            &[][..]
        } else {
            &["--user-max-vms", "100"][..]
        })
        .arg("--database-url")
        .arg(db)
        .arg("--data-dir")
        .arg(&data)
        .arg("--server-file")
        .arg(&server_file)
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start magsd");
    let url = wait_for(Duration::from_secs(60), || {
        let text = std::fs::read_to_string(&server_file).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["url"].as_str().map(str::to_string)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "host {name} did not start: see {}",
            root.join(format!("{name}.log")).display()
        )
    });
    Host { child, url }
}

/// Polls `f` every 100 ms until it gives something or `within` passes.
async fn wait_for<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn jobs(store: &Store, ids: &[String]) -> Vec<Job> {
    let mut out = Vec::new();
    for id in ids {
        out.push(store.job(id).await.expect("read").expect("job"));
    }
    out
}

async fn log(store: &Store, id: &str) -> String {
    let chunks = store.output_after(id, -1, 1000).await.expect("output");
    chunks
        .iter()
        .map(|c| String::from_utf8_lossy(&c.data).to_string())
        .collect()
}

/// Waits (up to 30 s) for job `id` to end; it must end `completed`.
async fn completes(store: &Store, id: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let j = store.job(id).await.expect("read").expect("job");
        if j.status.is_final() {
            assert_eq!(j.status, JobState::Completed, "{what}: {j:?}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not ended in 30 s: {j:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn request(body: serde_json::Value) -> CreateJobRequest {
    serde_json::from_value(body).expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_host_is_declared_lost_and_its_work_goes_on_elsewhere() {
    let schema = common::postgres::schema("mags_cluster").await;
    let db = schema.url.clone();
    let root = tempfile::tempdir().expect("tempdir");
    let root_path: PathBuf = root.path().to_path_buf();
    let store = Store::connect(&db).await.expect("store");
    let user = store.create_user("alice", false).await.expect("user");
    let (_, token) = store.create_token(&user.id).await.expect("token");

    let mut a = start(&root_path, "a", &db, 4).await;
    let b = start(&root_path, "b", &db, 40).await;
    let on_a = mags_client::Client::new(&a.url, &token).expect("client");
    let on_b = mags_client::Client::new(&b.url, &token).expect("client");

    // On a: 4 jobs running (all its slots), 26 queued behind them, two
    // sandboxes (one no_sleep).
    let mut one_shots = Vec::new();
    for i in 0..30 {
        let r = on_a
            .create_job(&request(serde_json::json!({
                "script": format!("echo start {i}\nsleep 3\necho done {i}"),
                "type": "inline",
            })))
            .await
            .expect("submit");
        one_shots.push(r.request_id);
    }
    let mut sandboxes = Vec::new();
    for no_sleep in [false, true] {
        let r = on_a
            .create_job(&request(serde_json::json!({
                "script": "echo sandbox up",
                "type": "inline",
                "persistent": true,
                "no_sleep": no_sleep,
            })))
            .await
            .expect("submit sandbox");
        sandboxes.push(r.request_id);
    }
    let mut running = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while running.len() < 4
        || jobs(&store, &sandboxes)
            .await
            .iter()
            .any(|j| j.status != JobState::Running)
    {
        assert!(Instant::now() < deadline, "a did not start its jobs");
        running = jobs(&store, &one_shots)
            .await
            .into_iter()
            .filter(|j| j.status == JobState::Running)
            .map(|j| j.id.clone())
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every job was a's.
    for j in jobs(&store, &one_shots).await {
        assert_eq!(j.host.as_deref(), Some("a"), "job {} not on a", j.id);
    }

    // SIGKILL: no goodbye.
    a.child.kill().expect("kill a");
    a.child.wait().expect("reap a");
    let killed_at = Instant::now();

    // Every one-shot job ends; a's running ones in error naming it.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let all = jobs(&store, &one_shots).await;
        if all.iter().all(|j| j.status.is_final()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "jobs still not final: {:?}",
            all.iter()
                .map(|j| (j.status, j.host.clone()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let lost_after = killed_at.elapsed();
    assert_eq!(
        store.host("a").await.expect("host").map(|h| h.state),
        Some(HostState::Lost)
    );
    for j in jobs(&store, &one_shots).await {
        let text = log(&store, &j.id).await;
        if running.contains(&j.id) {
            assert_eq!(j.status, JobState::Error, "job {}", j.id);
            let why = j.error.clone().unwrap_or_default();
            assert!(why.contains("host a was lost"), "{why}");
            assert!(text.contains("error: host a was lost"), "{text}");
        } else {
            // Ran once, on b, to its end.
            assert_eq!(j.status, JobState::Completed, "job {}: {text}", j.id);
            assert_eq!(j.host.as_deref(), Some("b"));
            assert_eq!(
                text.matches("start ").count(),
                1,
                "ran more than once: {text}"
            );
            assert_eq!(text.matches("done ").count(), 1, "{text}");
        }
    }

    // The no_sleep sandbox came back on b by itself.
    let always_on = &sandboxes[1];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let j = store.job(always_on).await.expect("read").expect("job");
        if j.host.as_deref() == Some("b") && j.status == JobState::Running {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the no_sleep sandbox did not come back: {j:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let text = log(&store, always_on).await;
    assert!(text.contains("host a was lost"), "{text}");
    assert!(
        text.contains("starting the sandbox again on host b"),
        "{text}"
    );
    // The other waits for a request, then comes back where it is asked.
    let other = &sandboxes[0];
    let j = store.job(other).await.expect("read").expect("job");
    assert_eq!(j.host, None, "nobody's until asked for");
    let out = on_b
        .exec(other, "echo here", Some(30.0))
        .await
        .expect("exec");
    assert_eq!((out.exit_code, out.stdout.as_str()), (0, "here\n"));
    let j = store.job(other).await.expect("read").expect("job");
    assert_eq!(j.host.as_deref(), Some("b"));

    // a, started again under its name: a new epoch, nothing of its past.
    let before = store.host("a").await.expect("host").expect("a");
    let a2 = start(&root_path, "a", &db, 4).await;
    let again = store.host("a").await.expect("host").expect("a");
    assert_eq!(
        (again.epoch, again.state),
        (before.epoch + 1, HostState::Up)
    );
    for id in &sandboxes {
        let j = store.job(id).await.expect("read").expect("job");
        assert_eq!(j.host.as_deref(), Some("b"), "sandbox {id} moved back");
    }
    eprintln!(
        "declared lost and every job final {} ms after the kill",
        lost_after.as_millis()
    );
    drop(a2);
    drop(b);
    store.close().await;
    schema.drop().await;
}

/// `GET /hello` at `base` (`http://ip:port`) with `Host: host`: the whole
/// response as text.
async fn http_get(base: &str, host: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = base.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET /hello HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).await.expect("send");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut out))
        .await
        .expect("answer in time")
        .expect("read");
    String::from_utf8_lossy(&out).to_string()
}

/// A cluster secret shared by the hosts of a test.
fn secret_file(root: &Path) -> String {
    let path = root.join("cluster.secret");
    std::fs::write(&path, "a-secret-of-the-cluster-for-tests\n").expect("secret");
    path.display().to_string()
}

/// A host with an internal listener and its SSH gateway on free ports,
/// the gateway with the cluster's one host key; and the gateway's port
/// (from the host's log).
async fn relaying_host(root: &Path, name: &str, db: &str, secret: &str) -> (Host, u16) {
    let key = root.join("ssh_host_key").display().to_string();
    let host = start_with(
        root,
        name,
        db,
        8,
        &[
            "--internal-listen",
            "127.0.0.1:0",
            "--cluster-secret-file",
            secret,
            "--ssh-listen",
            "127.0.0.1:0",
            "--ssh-host-key",
            &key,
        ],
    )
    .await;
    let log = root.join(format!("{name}.log"));
    let port = wait_for(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&log).ok()?;
        let line = text.lines().find(|l| l.contains("SSH gateway listening"))?;
        let addr = line.split("addr=").nth(1)?.split_whitespace().next()?;
        addr.rsplit(':').next()?.parse::<u16>().ok()
    })
    .await
    .unwrap_or_else(|| panic!("no SSH gateway address in {}", log.display()));
    (host, port)
}

/// The ed25519 host key the SSH server on `port` shows (`ssh-keyscan`).
fn host_key_at(port: u16) -> String {
    let out = Command::new("ssh-keyscan")
        .args(["-t", "ed25519", "-p", &port.to_string(), "127.0.0.1"])
        .output()
        .expect("ssh-keyscan (Debian's openssh-client) runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .find(|l| l.contains("ssh-ed25519"))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or_else(|| panic!("no host key from port {port}: {text}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_host_answers_for_a_sandbox_another_host_runs() {
    let schema = common::postgres::schema("mags_relay").await;
    let db = schema.url.clone();
    let root = tempfile::tempdir().expect("tempdir");
    let store = Store::connect(&db).await.expect("store");
    let alice = store.create_user("alice", false).await.expect("user");
    let bob = store.create_user("bob", false).await.expect("user");
    let (_, alice_token) = store.create_token(&alice.id).await.expect("token");
    let (_, bob_token) = store.create_token(&bob.id).await.expect("token");
    let secret = secret_file(root.path());
    let (a, ssh_a) = relaying_host(root.path(), "a", &db, &secret).await;
    let (b, ssh_b) = relaying_host(root.path(), "b", &db, &secret).await;
    // One host key for the cluster: one fingerprint whichever host answers.
    assert_eq!(host_key_at(ssh_a), host_key_at(ssh_b));
    let on_a = mags_client::Client::new(&a.url, &alice_token).expect("client");
    let via_b = mags_client::Client::new(&b.url, &alice_token).expect("client");

    let id = on_a
        .create_job(&request(serde_json::json!({
            "script": "echo sandbox up",
            "type": "inline",
            "persistent": true,
        })))
        .await
        .expect("submit")
        .request_id;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let j = store.job(&id).await.expect("read").expect("job");
        if j.status == JobState::Running {
            assert_eq!(j.host.as_deref(), Some("a"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sandbox did not start: {j:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Through b, answered by a: exec, its stream, the terminal.
    let out = via_b
        .exec(&id, "echo relayed", Some(30.0))
        .await
        .expect("exec via b");
    assert_eq!((out.exit_code, out.stdout.as_str()), (0, "relayed\n"));
    let status = via_b.job_status(&id).await.expect("status via b");
    assert_eq!(status.status, JobState::Running);
    let mut stream = via_b
        .exec_stream(&id, "echo streamed", None)
        .await
        .expect("stream via b");
    let mut seen = String::new();
    while let Some(item) = stream.next().await.expect("stream item") {
        if let mags_client::ExecItem::Output { data, .. } = item {
            seen.push_str(&String::from_utf8_lossy(&data));
        }
    }
    assert!(seen.contains("streamed"), "{seen}");
    let tty = via_b
        .tty(
            &id,
            &mags_api::TtyQuery {
                command: Some("stty size".into()),
                rows: Some(33),
                cols: Some(111),
                term: None,
            },
        )
        .await
        .expect("terminal via b");
    let (_writer, mut reader) = tty.split();
    let mut screen = Vec::new();
    let mut exit = None;
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(20), reader.next())
        .await
        .expect("terminal answers")
    {
        match ev {
            mags_client::TtyEvent::Output(b) => screen.extend(b),
            mags_client::TtyEvent::Exit(c) => exit = Some(c),
            mags_client::TtyEvent::Error(e) => panic!("terminal failed: {e}"),
        }
    }
    assert_eq!(exit, Some(0));
    assert!(
        String::from_utf8_lossy(&screen).contains("33 111"),
        "{screen:?}"
    );

    // The same checks as anywhere: bob cannot reach alice's sandbox via b.
    let as_bob = mags_client::Client::new(&b.url, &bob_token).expect("client");
    let err = as_bob
        .exec(&id, "echo no", Some(5.0))
        .await
        .expect_err("bob");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(404), "{err}");

    // a's internal listener: only what another host signed.
    let internal = store
        .host("a")
        .await
        .expect("host")
        .and_then(|h| h.info.internal_url)
        .expect("a's internal URL");
    let direct = mags_client::Client::new(&internal, &alice_token).expect("client");
    let err = direct
        .exec(&id, "echo no", Some(5.0))
        .await
        .expect_err("unsigned");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(403), "{err}");

    // Its public URL, asked for and opened through b, reaches a port in
    // the sandbox on a (the fake VM answers which VM and port it is).
    let access = via_b.access(&id, 8080).await.expect("access via b");
    let vm = store
        .job(&id)
        .await
        .expect("read")
        .expect("job")
        .vm_id
        .expect("vm");
    let page = http_get(&b.url, &format!("{}.localhost", access.subdomain)).await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.contains(&format!("fake VM {vm} port 8080: GET /hello")),
        "{page}"
    );

    // A stop through b reaches the sandbox on a.
    via_b.stop(&id).await.expect("stop via b");
    completes(&store, &id, "the stop through b").await;
    let text = log(&store, &id).await;
    assert!(text.contains("stopped on request"), "{text}");
    drop((a, b));
    store.close().await;
    schema.drop().await;
}

/// A TCP forward to Postgres that a test can cut (every connection
/// dropped, new ones refused) and heal: the database going away for
/// every host at once.
struct Cuttable {
    addr: std::net::SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Cuttable {
    async fn start(target: String) -> Cuttable {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (c, k) = (cut.clone(), conns.clone());
        tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                if c.load(Ordering::SeqCst) {
                    continue;
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                k.lock().expect("conns").push(task.abort_handle());
            }
        });
        Cuttable { addr, cut, conns }
    }

    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for c in self.conns.lock().expect("conns").drain(..) {
            c.abort();
        }
    }

    fn heal(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `url` with its `host:port` replaced by `addr`.
fn through(url: &str, addr: std::net::SocketAddr) -> (String, String) {
    let at = url.find('@').expect("user@host in the URL") + 1;
    let end = at + url[at..].find('/').expect("/database in the URL");
    let target = url[at..end].to_string();
    (format!("{}{addr}{}", &url[..at], &url[end..]), target)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_declares_nobody_lost() {
    let schema = common::postgres::schema("mags_outage").await;
    let root = tempfile::tempdir().expect("tempdir");
    let store = Store::connect(&schema.url).await.expect("store");
    let user = store.create_user("alice", false).await.expect("user");
    let (_, token) = store.create_token(&user.id).await.expect("token");
    let target = through(&schema.url, "127.0.0.1:1".parse().expect("addr")).1;
    let pg = Cuttable::start(target).await;
    let db = through(&schema.url, pg.addr).0;
    let mut a = start(root.path(), "a", &db, 4).await;
    let mut b = start(root.path(), "b", &db, 4).await;
    let on_a = mags_client::Client::new(&a.url, &token).expect("client");
    let on_b = mags_client::Client::new(&b.url, &token).expect("client");
    let id = on_a
        .create_job(&request(serde_json::json!({
            "script": "echo up", "type": "inline", "persistent": true,
        })))
        .await
        .expect("submit")
        .request_id;
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.job(&id).await.expect("read").expect("job").status != JobState::Running {
        assert!(Instant::now() < deadline, "the sandbox did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before: Vec<_> = store.hosts().await.expect("hosts");

    // Six seconds without the database: every lease (1 s) runs out.
    pg.cut();
    tokio::time::sleep(Duration::from_secs(6)).await;
    pg.heal();
    // Longer than a leader would need to declare a silent host lost.
    tokio::time::sleep(Duration::from_secs(6)).await;

    let after = store.hosts().await.expect("hosts");
    for (was, is) in before.iter().zip(&after) {
        assert_eq!(
            (is.info.name.as_str(), is.epoch, is.state),
            (was.info.name.as_str(), was.epoch, HostState::Up),
            "a database outage must not look like a host dying: {after:?}"
        );
    }
    for (name, host) in [("a", &mut a), ("b", &mut b)] {
        assert!(
            host.child.try_wait().expect("wait").is_none(),
            "host {name} exited (fenced?)"
        );
    }
    // Work resumes: the sandbox on a answers, a new job through b runs.
    let out = on_a.exec(&id, "echo back", Some(30.0)).await.expect("exec");
    assert_eq!(out.stdout, "back\n");
    let job = on_b
        .create_job(&request(
            serde_json::json!({"script": "echo after", "type": "inline"}),
        ))
        .await
        .expect("submit after")
        .request_id;
    completes(&store, &job, "the job after the outage").await;
    drop((a, b));
    store.close().await;
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_vm_limit_holds_across_hosts() {
    let schema = common::postgres::schema("mags_user_limit").await;
    let db = schema.url.clone();
    let root = tempfile::tempdir().expect("tempdir");
    let store = Store::connect(&db).await.expect("store");
    let user = store.create_user("alice", false).await.expect("user");
    let (_, token) = store.create_token(&user.id).await.expect("token");
    let limit = ["--ssh-listen", "off", "--user-max-vms", "2"];
    let a = start_with(root.path(), "a", &db, 4, &limit).await;
    let b = start_with(root.path(), "b", &db, 4, &limit).await;
    let on_a = mags_client::Client::new(&a.url, &token).expect("client");
    let on_b = mags_client::Client::new(&b.url, &token).expect("client");
    let always_on = serde_json::json!({
        "script": "echo up", "type": "inline", "persistent": true, "no_sleep": true,
    });
    let mut ids = Vec::new();
    for client in [&on_a, &on_b] {
        ids.push(
            client
                .create_job(&request(always_on.clone()))
                .await
                .expect("submit")
                .request_id,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while jobs(&store, &ids)
        .await
        .iter()
        .any(|j| j.status != JobState::Running)
    {
        assert!(Instant::now() < deadline, "the sandboxes did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // One VM on each host: the user's two. A third sandbox is refused on
    // either host, though each runs only one of them.
    let err = on_a
        .create_job(&request(always_on.clone()))
        .await
        .expect_err("over the limit");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(429), "{err}");
    // A one-shot job waits, queued, until one of them ends.
    let job = on_a
        .create_job(&request(
            serde_json::json!({"script": "echo ran", "type": "inline"}),
        ))
        .await
        .expect("submit")
        .request_id;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let j = store.job(&job).await.expect("read").expect("job");
    assert_eq!(j.status, JobState::Queued, "{j:?}");
    on_b.stop(&ids[1]).await.expect("stop b's sandbox");
    completes(&store, &job, "the queued job").await;
    assert!(log(&store, &job).await.contains("ran"));
    drop((a, b));
    store.close().await;
    schema.drop().await;
}
