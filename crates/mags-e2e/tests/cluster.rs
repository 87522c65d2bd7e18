//! Two real `magsd` hosts, real VMs, each in a network namespace of its
//! own (`scripts/cluster-up`), on one Postgres schema and one S3 bucket:
//!
//! ```text
//!  host netns: the test, s3s-fs on the bridge address, a TCP forward to Postgres
//!      bridge <P>-br  10.213.N.1/24
//!        ├─ veth ─ netns <P>-h1: magsd "a" on 10.213.N.2:7070 (API), :7071 (internal)
//!        └─ veth ─ netns <P>-h2: magsd "b" on 10.213.N.3:7070, :7071
//! ```
//!
//! A persistent sandbox with a synced workspace runs on a; a file written
//! there is saved by `POST /mags-jobs/{id}/sync` (a new workspace version
//! in the database, objects in the bucket); an exec sent to b is relayed
//! to a; a one-shot job runs on a too. Then a's `magsd` is killed with
//! SIGKILL (its QEMUs die with it), b's leader declares a lost, the
//! one-shot job ends `error` naming a, and the next exec through b starts
//! the sandbox again on b from the synced version: the file is there, and
//! one written after the sync is not.
//!
//! Needs root, `ip` (iproute2), python3 (the script's forward to
//! Postgres), `MAGS_TEST_POSTGRES_URL`, `s3s-fs` and the guest images;
//! without one it fails saying how to get it, never skips. Its traffic
//! stays on the bridge it makes (no default route in the namespaces) and
//! loopback; everything it made is removed however it ends.

use mags_api::{CreateJobRequest, JobState};
use mags_e2e::{bin, images_dir, output_within, tail, walk, S3Server};
use mags_store::Store;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long one VM may take to come up under TCG on a busy machine.
const BOOT: Duration = Duration::from_secs(180);

/// The network of `scripts/cluster-up`; `--down` on drop (after the hosts
/// in it are gone: declare it first).
struct Cluster {
    prefix: String,
    bridge_ip: IpAddr,
    /// (namespace, address) of each host.
    hosts: Vec<(String, String)>,
    /// Postgres as the namespaces reach it.
    postgres_url: String,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/cluster-up")
}

impl Cluster {
    fn up(hosts: usize) -> Cluster {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "this test makes network namespaces and a bridge and needs root (run it as root, \
             e.g. `sudo -E cargo test -p mags-e2e --test cluster`)"
        );
        assert!(
            std::env::var("MAGS_TEST_POSTGRES_URL").is_ok_and(|u| !u.is_empty()),
            "MAGS_TEST_POSTGRES_URL is not set: start PostgreSQL with \
             `eval \"$(scripts/test-postgres)\"` (or point it at any server)"
        );
        let pid = std::process::id();
        let prefix = format!("mct{}", pid % 100_000);
        // Another run's network may hold a /24: the script says so with
        // status 3, and the next one is tried.
        let mut o = None;
        for n in 0..8 {
            let net = format!("10.213.{}", 100 + (pid + n * 17) % 150);
            let out = output_within(
                Command::new("bash").arg(script()).args([
                    "--prefix",
                    &prefix,
                    "--hosts",
                    &hosts.to_string(),
                    "--net",
                    &net,
                ]),
                Duration::from_secs(60),
            );
            if out.status.code() != Some(3) {
                o = Some(out);
                break;
            }
        }
        let o = o.expect("every 10.213.x.0/24 tried is in use on this machine");
        // Whatever it made is removed even if what it printed is no use.
        let mut cluster = Cluster {
            prefix,
            bridge_ip: IpAddr::from([127, 0, 0, 1]),
            hosts: Vec::new(),
            postgres_url: String::new(),
        };
        assert!(
            o.status.success(),
            "scripts/cluster-up failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let vars: std::collections::HashMap<String, String> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
            .collect();
        let var = |k: &str| {
            vars.get(k)
                .cloned()
                .unwrap_or_else(|| panic!("scripts/cluster-up printed no {k}: {vars:?}"))
        };
        cluster.bridge_ip = var("MAGS_CLUSTER_BRIDGE_IP").parse().expect("bridge IP");
        cluster.postgres_url = var("MAGS_CLUSTER_POSTGRES_URL");
        for i in 1..=hosts {
            cluster.hosts.push((
                var(&format!("MAGS_CLUSTER_H{i}_NETNS")),
                var(&format!("MAGS_CLUSTER_H{i}_IP")),
            ));
        }
        cluster
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .args(["--down", "--prefix", &self.prefix])
            .status();
    }
}

/// A Postgres schema of the test's own, as the test and as the hosts
/// reach it (the same trick as `mags-server/tests/common/postgres.rs`).
struct Schema {
    admin: sqlx::AnyPool,
    name: String,
    /// From this machine's loopback.
    local_url: String,
    /// From the namespaces.
    cluster_url: String,
}

impl Schema {
    async fn create(cluster_base: &str) -> Schema {
        use sqlx::Executor as _;
        let base = std::env::var("MAGS_TEST_POSTGRES_URL").expect("checked by Cluster::up");
        sqlx::any::install_default_drivers();
        let admin = sqlx::AnyPool::connect(&base)
            .await
            .expect("connect to Postgres");
        let name = format!("mags_e2e_cluster_{}", std::process::id());
        admin
            .execute(format!("DROP SCHEMA IF EXISTS {name} CASCADE").as_str())
            .await
            .expect("drop an old schema");
        admin
            .execute(format!("CREATE SCHEMA {name}").as_str())
            .await
            .expect("create schema");
        let with_path = |url: &str| {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}options=-c%20search_path%3D{name}")
        };
        Schema {
            local_url: with_path(&base),
            cluster_url: with_path(cluster_base),
            admin,
            name,
        }
    }

    async fn drop(self) {
        use sqlx::Executor as _;
        self.admin
            .execute(format!("DROP SCHEMA {} CASCADE", self.name).as_str())
            .await
            .expect("drop schema");
    }
}

/// A `magsd serve` in a namespace; SIGKILLed on drop.
struct Host {
    child: Child,
    url: String,
    data: PathBuf,
    log: PathBuf,
}

impl Host {
    fn log_tail(&self) -> String {
        tail(&std::fs::read_to_string(&self.log).unwrap_or_default(), 60)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Shared<'a> {
    root: &'a Path,
    db: &'a str,
    secret: &'a Path,
    s3: Vec<String>,
}

/// Starts host `name` in namespace `ns` on `ip`; waits until it answers.
async fn start_host(shared: &Shared<'_>, name: &str, ns: &str, ip: &str) -> Host {
    let dir = shared.root.join(name);
    std::fs::create_dir_all(&dir).expect("host dir");
    let log = dir.join("magsd.log");
    let out = std::fs::File::create(&log).expect("log");
    let child = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(bin("magsd"))
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--database-url")
        .arg(shared.db)
        .args(&shared.s3)
        .args(["--host-name", name])
        .args(["--listen", &format!("{ip}:7070")])
        .args(["--internal-listen", &format!("{ip}:7071")])
        .arg("--cluster-secret-file")
        .arg(shared.secret)
        .args(["--lease-secs", "1", "--lost-after-secs", "2"])
        .args(["--ssh-listen", "off", "--max-vms", "2", "--pool-size", "0"])
        .env("MAGS_IMAGES_DIR", images_dir())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .spawn()
        .expect("start `ip netns exec ... magsd serve`");
    let mut host = Host {
        child,
        url: format!("http://{ip}:7070"),
        data: dir.join("data"),
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(Some(status)) = host.child.try_wait() {
            panic!("host {name} exited ({status}):\n{}", host.log_tail());
        }
        if mags_e2e::http_get(&host.url, "/health").is_some_and(|(code, _)| code == 200) {
            return host;
        }
        assert!(
            Instant::now() < deadline,
            "host {name} did not answer on {}:\n{}",
            host.url,
            host.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn job(store: &Store, id: &str) -> mags_store::Job {
    store.job(id).await.expect("read job").expect("job exists")
}

/// Waits until job `id` is `want`.
async fn wait_state(store: &Store, id: &str, want: JobState, host: &Host) -> mags_store::Job {
    let deadline = Instant::now() + BOOT;
    loop {
        let j = job(store, id).await;
        if j.status == want {
            return j;
        }
        // An ended job ends no other way.
        assert!(
            Instant::now() < deadline && !j.status.is_final(),
            "job {id} never {want:?}: {j:?}\nlog of host {}:\n{}",
            host.url,
            host.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn job_log(store: &Store, id: &str) -> String {
    let chunks = store.output_after(id, -1, 1000).await.expect("output");
    chunks
        .iter()
        .map(|c| String::from_utf8_lossy(&c.data).to_string())
        .collect()
}

/// `magsd host list --json`: host `name`'s state.
fn host_state(db: &str, scratch: &Path, name: &str) -> Option<String> {
    let o = output_within(
        Command::new(bin("magsd"))
            .args(["host", "list", "--json", "--database-url", db])
            .arg("--data-dir")
            .arg(scratch),
        Duration::from_secs(30),
    );
    assert!(
        o.status.success(),
        "magsd host list: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let hosts: serde_json::Value = serde_json::from_slice(&o.stdout).expect("host list --json");
    hosts
        .as_array()?
        .iter()
        .find(|h| h["name"] == name)
        .and_then(|h| h["state"].as_str().map(str::to_string))
}

/// Processes (QEMU) whose command line names `dir`.
fn processes_under(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        })
        .collect()
}

fn request(body: serde_json::Value) -> CreateJobRequest {
    serde_json::from_value(body).expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_moves_to_the_other_host_when_its_host_is_killed() {
    let began = Instant::now();
    let step = |what: &str| eprintln!("[{:>6.1} s] {what}", began.elapsed().as_secs_f64());
    let cluster = Cluster::up(2);
    step("network up");
    let schema = Schema::create(&cluster.postgres_url).await;
    let s3 = S3Server::start_on(cluster.bridge_ip, "mags-cluster");
    let root = tempfile::tempdir().expect("tempdir");
    let secret = root.path().join("cluster.secret");
    std::fs::write(&secret, "a-secret-of-the-cluster-for-tests\n").expect("secret");
    let store = Store::connect(&schema.local_url).await.expect("store");
    let user = store.create_user("alice", false).await.expect("user");
    let (_, token) = store.create_token(&user.id).await.expect("token");
    let shared = Shared {
        root: root.path(),
        db: &schema.cluster_url,
        secret: &secret,
        s3: s3.magsd_args("mags-cluster"),
    };
    let (ns_a, ip_a) = &cluster.hosts[0];
    let (ns_b, ip_b) = &cluster.hosts[1];
    let mut a = start_host(&shared, "a", ns_a, ip_a).await;
    let b = start_host(&shared, "b", ns_b, ip_b).await;
    step("hosts a and b answer");
    let on_a = mags_client::Client::new(&a.url, &token).expect("client");
    let via_b = mags_client::Client::new(&b.url, &token).expect("client");

    // A persistent sandbox with a synced workspace, on a.
    let id = on_a
        .create_job(&request(serde_json::json!({
            "script": "echo sandbox up",
            "type": "inline",
            "persistent": true,
            "workspace_id": "moving",
        })))
        .await
        .expect("submit the sandbox to a")
        .request_id;
    let j = wait_state(&store, &id, JobState::Running, &a).await;
    assert_eq!(j.host.as_deref(), Some("a"), "{j:?}");
    step("sandbox running on a");
    let out = on_a
        .exec(&id, "echo precious > /root/note && sync", Some(60.0))
        .await
        .expect("exec on a");
    assert_eq!(out.exit_code, 0, "{out:?}");

    // The sync stores the disk as a new version: the database's head
    // advances and the bucket holds it.
    let before = store
        .workspace_versions(&user.id, "moving")
        .await
        .expect("versions")
        .len();
    on_a.sync(&id).await.expect("sync on a");
    let versions = store
        .workspace_versions(&user.id, "moving")
        .await
        .expect("versions");
    assert!(
        versions.len() > before,
        "the sync stored no version: {versions:?}"
    );
    assert!(
        matches!(
            store
                .workspace_head(&user.id, "moving")
                .await
                .expect("head"),
            mags_store::Head::At(_)
        ),
        "no current version after the sync"
    );
    let objects = walk(&s3.root.path().join("mags-cluster"));
    assert!(!objects.is_empty(), "nothing in the bucket after the sync");
    // Written after the sync: flushed in the guest, never stored.
    let out = on_a
        .exec(&id, "echo late > /root/unsynced && sync", Some(60.0))
        .await
        .expect("exec on a");
    assert_eq!(out.exit_code, 0, "{out:?}");
    step("written and synced on a, then one more file not synced");

    // Through b, answered by a.
    let out = via_b
        .exec(&id, "cat /root/note; hostname", Some(60.0))
        .await
        .expect("exec via b");
    assert_eq!(out.exit_code, 0, "{out:?}");
    assert!(out.stdout.starts_with("precious\n"), "{out:?}");
    assert_eq!(job(&store, &id).await.host.as_deref(), Some("a"));
    step("exec through b relayed to a");

    // A one-shot job running on a when it dies.
    let one_shot = on_a
        .create_job(&request(serde_json::json!({
            "script": "echo one-shot up; sleep 600",
            "type": "inline",
        })))
        .await
        .expect("submit a one-shot job to a")
        .request_id;
    let j = wait_state(&store, &one_shot, JobState::Running, &a).await;
    assert_eq!(j.host.as_deref(), Some("a"), "{j:?}");
    step("one-shot job running on a");

    // SIGKILL: no goodbye; a's VMs die with it.
    a.child.kill().expect("kill a");
    a.child.wait().expect("reap a");
    let killed = Instant::now();
    step("a killed");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = processes_under(&a.data);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "processes of a outlived it: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = host_state(&schema.local_url, &root.path().join("cli"), "a");
        if state.as_deref() == Some("lost") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "b did not declare a lost within 30 s (state {state:?})\nlog of b:\n{}",
            b.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let lost_after = killed.elapsed();
    step(&format!(
        "a declared lost {} ms after the kill",
        lost_after.as_millis()
    ));
    let j = wait_state(&store, &one_shot, JobState::Error, &b).await;
    let why = j.error.clone().unwrap_or_default();
    assert!(why.contains("host a was lost"), "{j:?}");
    let text = job_log(&store, &one_shot).await;
    assert!(text.contains("host a was lost"), "{text}");

    // The next exec through b brings the sandbox back there, from the
    // synced version.
    let out = via_b
        .exec(
            &id,
            "cat /root/note; test -e /root/unsynced && echo unsynced too",
            Some(BOOT.as_secs_f64()),
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "exec via b after a was lost: {e}\nlog of b:\n{}",
                b.log_tail()
            )
        });
    assert_eq!(out.stdout, "precious\n", "not the synced version: {out:?}");
    let j = job(&store, &id).await;
    assert_eq!(
        (j.host.as_deref(), j.status),
        (Some("b"), JobState::Running),
        "{j:?}"
    );
    let text = job_log(&store, &id).await;
    assert!(text.contains("host a was lost"), "{text}");
    step("sandbox back on b with the synced file");

    via_b.stop(&id).await.expect("stop via b");
    wait_state(&store, &id, JobState::Completed, &b).await;
    drop(b);
    drop(a);
    store.close().await;
    schema.drop().await;
    drop(s3);
    drop(cluster);
    step("done");
}
