//! `--cluster`: several `magsd` hosts (fake executor: no VM boots, so what
//! is measured is the hosts' own work) on one Postgres database
//! (`MAGS_BENCH_DATABASE_URL`, else `MAGS_TEST_POSTGRES_URL`):
//! - exec and a public URL's round trip through a host that does not run
//!   the sandbox (relayed) against the one that does;
//! - one-shot jobs per second with one, two and three hosts, submitted
//!   round-robin as a load balancer would;
//! - from `kill -9` of a host to its `no_sleep` sandbox answering again on
//!   another host.

use crate::report::{median, Row};
use anyhow::{bail, Context as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A host, killed when dropped.
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

fn database_url() -> anyhow::Result<String> {
    ["MAGS_BENCH_DATABASE_URL", "MAGS_TEST_POSTGRES_URL"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .context(
            "--cluster needs a Postgres database: set MAGS_BENCH_DATABASE_URL (or start one \
             with `eval \"$(scripts/test-postgres)\"`)",
        )
}

/// A fresh schema of the bench's own on `base`; its URL.
async fn fresh_schema(base: &str) -> anyhow::Result<String> {
    let name = format!("mags_bench_{}", uuid::Uuid::new_v4().simple());
    let status = Command::new("psql")
        .arg(base)
        .args(["-qtAc", &format!("CREATE SCHEMA {name}")])
        .status()
        .context("psql (Debian's postgresql-client) is needed to make the bench's schema")?;
    if !status.success() {
        bail!("cannot create schema {name} on {base}");
    }
    let sep = if base.contains('?') { '&' } else { '?' };
    Ok(format!("{base}{sep}options=-c%20search_path%3D{name}"))
}

struct Cluster {
    magsd: PathBuf,
    dir: PathBuf,
    db: String,
    secret: PathBuf,
    token: Option<String>,
}

impl Cluster {
    /// Starts host `name` and waits for it to listen.
    fn start(&mut self, name: &str, max_vms: u32) -> anyhow::Result<Host> {
        let data = self.dir.join(name);
        std::fs::create_dir_all(&data)?;
        let server_file = data.join("server.json");
        let _ = std::fs::remove_file(&server_file);
        let log = std::fs::File::create(data.join("magsd.log"))?;
        let child = Command::new(&self.magsd)
            .args(["serve", "--executor", "fake", "--listen", "127.0.0.1:0"])
            .args(["--ssh-listen", "off", "--host-name", name])
            .args(["--internal-listen", "127.0.0.1:0", "--cluster-secret-file"])
            .arg(&self.secret)
            .args(["--lease-secs", "1", "--lost-after-secs", "1"])
            .args(["--max-vms", &max_vms.to_string(), "--user-max-vms", "1000"])
            .args([
                "--user-max-pending",
                "100000",
                "--user-requests-per-sec",
                "100000",
            ])
            .args(["--user-request-burst", "100000"])
            .arg("--database-url")
            .arg(&self.db)
            .arg("--data-dir")
            .arg(data.join("data"))
            .arg("--server-file")
            .arg(&server_file)
            .arg("--local-token-file")
            .arg(self.dir.join("token"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = loop {
            let v = std::fs::read(&server_file)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
            if let Some(u) = v.and_then(|v| v["url"].as_str().map(str::to_string)) {
                break u;
            }
            if Instant::now() > deadline {
                bail!(
                    "host {name} did not start; see {}",
                    data.join("magsd.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if self.token.is_none() {
            self.token = Some(
                std::fs::read_to_string(self.dir.join("token"))?
                    .trim()
                    .to_string(),
            );
        }
        Ok(Host { child, url })
    }

    fn client(&self, host: &Host) -> anyhow::Result<mags_client::Client> {
        Ok(mags_client::Client::new(
            &host.url,
            self.token.as_deref().unwrap_or_default(),
        )?)
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn request(body: serde_json::Value) -> anyhow::Result<mags_api::CreateJobRequest> {
    Ok(serde_json::from_value(body)?)
}

async fn sandbox(client: &mags_client::Client, no_sleep: bool) -> anyhow::Result<String> {
    let id = client
        .create_job(&request(serde_json::json!({
            "script": "echo up", "type": "inline", "persistent": true, "no_sleep": no_sleep,
        }))?)
        .await?
        .request_id;
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.job_status(&id).await?.status != mags_api::JobState::Running {
        if Instant::now() > deadline {
            bail!("sandbox {id} did not start");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(id)
}

async fn exec_times(client: &mags_client::Client, id: &str, n: usize) -> anyhow::Result<Vec<f64>> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let out = client.exec(id, "echo x", Some(30.0)).await?;
        if out.stdout != "x\n" {
            bail!("exec answered {:?}", out.stdout);
        }
        v.push(ms(t));
    }
    Ok(v)
}

async fn url_times(
    http: &reqwest::Client,
    base: &str,
    host: &str,
    n: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let body = http
            .get(format!("{base}/bench"))
            .header(reqwest::header::HOST, host)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        if !body.contains("port 8080") {
            bail!("the URL answered {body:?}");
        }
        v.push(ms(t));
    }
    Ok(v)
}

/// `jobs` one-shot jobs submitted round-robin to `clients`, as fast as
/// they are taken; jobs per second until every one has ended.
async fn jobs_per_sec(clients: &[mags_client::Client], jobs: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut ids = Vec::with_capacity(jobs);
    for i in 0..jobs {
        let c = &clients[i % clients.len()];
        let r = c
            .create_job(&request(
                serde_json::json!({"script": "echo hi", "type": "inline"}),
            )?)
            .await?;
        ids.push((i % clients.len(), r.request_id));
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    for (c, id) in &ids {
        while !clients[*c].job_status(id).await?.status.is_final() {
            if Instant::now() > deadline {
                bail!("job {id} did not end");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Ok(jobs as f64 / started.elapsed().as_secs_f64())
}

pub async fn rows(magsd: &Path, scratch: &Path, quick: bool) -> anyhow::Result<Vec<Row>> {
    let n = |full: usize, q: usize| if quick { q } else { full };
    let db = fresh_schema(&database_url()?).await?;
    let secret = scratch.join("cluster.secret");
    std::fs::write(&secret, uuid::Uuid::new_v4().to_string())?;
    let mut cluster = Cluster {
        magsd: magsd.to_path_buf(),
        dir: scratch.join("cluster"),
        db,
        secret,
        token: None,
    };
    std::fs::create_dir_all(&cluster.dir)?;
    let mut rows = Vec::new();

    // Round trips: the owner against a host that relays to it.
    let a = cluster.start("a", 8)?;
    let b = cluster.start("b", 8)?;
    let (on_a, on_b) = (cluster.client(&a)?, cluster.client(&b)?);
    let id = sandbox(&on_a, false).await?;
    exec_times(&on_b, &id, 5).await?;
    let own = exec_times(&on_a, &id, n(200, 30)).await?;
    let relayed = exec_times(&on_b, &id, n(200, 30)).await?;
    let own_median = median(&own);
    rows.push(Row::new(
        "cluster: exec round trip via the host that runs the sandbox",
        own,
    ));
    rows.push(
        Row::new(
            "cluster: exec round trip via another host (relayed)",
            relayed,
        )
        .vs("via the owner", own_median),
    );
    let access = on_a.access(&id, 8080).await?;
    let http = reqwest::Client::new();
    let host = format!("{}.localhost", access.subdomain);
    url_times(&http, &b.url, &host, 5).await?;
    let own = url_times(&http, &a.url, &host, n(200, 30)).await?;
    let relayed = url_times(&http, &b.url, &host, n(200, 30)).await?;
    let own_median = median(&own);
    rows.push(Row::new("cluster: URL proxy round trip via the owner", own));
    rows.push(
        Row::new(
            "cluster: URL proxy round trip via another host (relayed)",
            relayed,
        )
        .vs("via the owner", own_median),
    );

    // Failover: kill -9 a; its no_sleep sandbox answers via b again.
    let mut times = Vec::new();
    let mut a = Some(a);
    for round in 0..n(3, 1) {
        let host = match a.take() {
            Some(h) => h,
            None => cluster.start("a", 8)?,
        };
        let client = cluster.client(&host)?;
        let always_on = sandbox(&client, true).await?;
        let mut host = host;
        host.child.kill()?;
        host.child.wait()?;
        let killed = Instant::now();
        let deadline = killed + Duration::from_secs(60);
        loop {
            match on_b.exec(&always_on, "echo x", Some(5.0)).await {
                Ok(out) if out.stdout == "x\n" => break,
                _ if Instant::now() > deadline => {
                    bail!("round {round}: the no_sleep sandbox did not come back within 60 s")
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        times.push(ms(killed));
        drop(host);
    }
    rows.push(
        Row::new(
            "cluster: host killed to its no_sleep sandbox answering again elsewhere",
            times,
        )
        .note("--lease-secs 1 --lost-after-secs 1".into()),
    );
    drop(b);

    // Throughput with one, two and three hosts.
    let jobs = n(300, 60);
    let mut one = None;
    for hosts in 1..=3 {
        let names: Vec<String> = (0..hosts).map(|i| format!("t{hosts}-{i}")).collect();
        let mut running = Vec::new();
        for name in &names {
            running.push(cluster.start(name, 8)?);
        }
        let clients = running
            .iter()
            .map(|h| cluster.client(h))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let rate = jobs_per_sec(&clients, jobs).await?;
        let base = *one.get_or_insert(rate);
        rows.push(
            Row::new(
                format!("cluster: one-shot jobs per second, {hosts} host(s)"),
                vec![rate],
            )
            .note(format!(
                "jobs/s, not ms: {jobs} jobs round-robin from one client; {:.2}x one host \
                 (the hosts share this machine's cores and one Postgres)",
                rate / base
            )),
        );
    }
    Ok(rows)
}
