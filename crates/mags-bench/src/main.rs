//! `mags-bench`: how fast Mags starts and answers, measured in one run
//! against baselines measured in the same run.
//!
//! ```text
//! cargo build --release --workspace && ./scripts/build-agent
//! cargo run --release -p mags-bench            # full run, writes BENCHMARKS.md
//! cargo run --release -p mags-bench -- --quick # fewer samples
//! cargo run --release -p mags-bench -- --workspaces # only part C, prints the table
//! cargo run --release -p mags-bench -- --url-only # just the URL proxy rows
//! cargo run --release -p mags-bench -- --browser-only # just the browser session rows
//! cargo run --release -p mags-bench -- --load # 50 jobs at once: wall time, jobs/s
//! cargo run --release -p mags-bench -- --cluster # hosts on one Postgres (fake executor)
//! ```
//!
//! Part A drives `mags-vm` in-process (start paths, exec, wake, memory, raw
//! QEMU restore baseline, `bwrap` baseline); part B starts the release
//! `magsd` and measures through the real `mags` CLI, the REST API and the
//! SSH gateway ([`remote`]); part C measures workspaces (sync, restore,
//! fork) through that server; part D hosts of a cluster on one Postgres
//! (`MAGS_BENCH_DATABASE_URL` or `MAGS_TEST_POSTGRES_URL`, fake executor;
//! [`cluster`]).

mod baseline;
mod browser;
mod cluster;
mod load;
mod remote;
mod report;
mod urlproxy;
mod workspaces;

use anyhow::{bail, Context};
use mags_client::OutputItem;
use mags_proto::RunSpec;
use mags_vm::{Pool, PoolConfig, Runtime, RuntimeConfig, SandboxOptions};
use report::{Report, Row};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn images_dir() -> PathBuf {
    std::env::var_os("MAGS_IMAGES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/mags/images")
        })
}

/// Template restores with and without the jail, in turn (so both see the
/// same machine), and the ratio of their medians.
async fn jail_rows(
    report: &mut Report,
    jailed: &Runtime,
    unjailed: &Runtime,
    runs: usize,
) -> anyhow::Result<()> {
    eprintln!("template restores, jailed and not...");
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        for (rt, out) in [(jailed, &mut with), (unjailed, &mut without)] {
            let t = Instant::now();
            let sb = rt.start(opts()).await?;
            out.push(ms(t.elapsed()));
            sb.shutdown().await?;
        }
    }
    let base = report::median(&without);
    report.push(Row::new(
        "baseline: template restore with --jail off (no confinement)",
        without,
    ));
    report.push(
        Row::new(
            "sandbox start: template restore, jailed (uid, namespaces, cgroup, seccomp)",
            with,
        )
        .vs("--jail off", base),
    );
    Ok(())
}

fn opts() -> SandboxOptions {
    SandboxOptions::new(format!("bench-{}", uuid::Uuid::new_v4()))
}

fn sh(script: &str) -> RunSpec {
    RunSpec {
        argv: vec!["/bin/bash".into(), "-c".into(), script.into()],
        ..Default::default()
    }
}

fn pss_mib(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with("Pss:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    // RUST_LOG=mags_vm=debug shows each sandbox's start phases.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let quick = std::env::args().any(|a| a == "--quick");
    let n = |full: usize, q: usize| if quick { q } else { full };
    let bin_dir = std::env::current_exe()?
        .parent()
        .context("exe dir")?
        .to_path_buf();
    let (mags, magsd) = (bin_dir.join("mags"), bin_dir.join("magsd"));
    if !mags.is_file() || !magsd.is_file() {
        bail!("build the release binaries first: cargo build --release --workspace");
    }
    // Hosts of a cluster on the fake executor: no image or VM needed.
    if std::env::args().any(|a| a == "--cluster") {
        let tmp = tempfile::tempdir()?;
        let mut report = Report::new("none (fake executor)".into(), quick);
        for row in cluster::rows(&magsd, tmp.path(), quick).await? {
            report.push(row);
        }
        report.print();
        return Ok(());
    }
    let agent_bin = mags_vm::locate::find_agent_bin().map_err(anyhow::Error::msg)?;
    let tmp = tempfile::tempdir()?;
    let config = RuntimeConfig {
        data_dir: tmp.path().join("vm"),
        agent_bin,
        accel: None,
        images_dir: Some(images_dir()),
        egress_socket: None,
        extra_ca_certs: String::new(),
        jail: Default::default(),
    };
    // The same runtime with no jail at all, to show what confinement costs.
    let unjailed = Runtime::new(RuntimeConfig {
        data_dir: tmp.path().join("vm-unjailed"),
        jail: mags_vm::JailConfig {
            mode: mags_vm::JailMode::Off,
            ..Default::default()
        },
        ..config.clone()
    });
    let rt = Arc::new(Runtime::new(config));
    eprintln!("preparing the image, accelerator verdict and template...");
    let image = rt.ensure_image(|_| {}).await?;
    let accel = rt.accel().await?;
    let template = rt
        .template(&image, accel, 256, mags_vm::template::TemplateKind::Mounted)
        .await?;
    let mut report = Report::new(accel.to_string(), quick);
    if std::env::args().any(|a| a == "--jail") {
        jail_rows(&mut report, &rt, &unjailed, n(20, 5)).await?;
        report.print();
        return Ok(());
    }
    if std::env::args().any(|a| a == "--workspaces") {
        let server = baseline::Server::start(&magsd, tmp.path())?;
        let client = mags_client::Client::new(&server.url, &server.token)?;
        wait_for_async(&client).await?;
        workspaces::run(&mut report, &mags, &server, &client, &server.data, quick).await?;
        report.print();
        return Ok(());
    }

    // Modes that measure one thing against a server of their own.
    let only = ["--browser-only", "--load", "--url-only"]
        .into_iter()
        .find(|flag| std::env::args().any(|a| a == *flag));
    if let Some(flag) = only {
        let server = baseline::Server::start(&magsd, tmp.path())?;
        let client = mags_client::Client::new(&server.url, &server.token)?;
        wait_for_async(&client).await?;
        let rows = match flag {
            "--browser-only" => browser::rows(&client, n(5, 2)).await?,
            "--load" => load::rows(&client, n(3, 1)).await?,
            _ => urlproxy::rows(&client, n(100, 20), n(100, 20)).await?,
        };
        for row in rows {
            report.push(row);
        }
        drop(server);
        report.print();
        return Ok(());
    }

    // ---- Part A: sandbox start paths and baselines -------------------
    eprintln!("cold boots...");
    let mut v = Vec::new();
    for _ in 0..n(5, 2) {
        let t = Instant::now();
        let sb = rt.start_cold(opts()).await?;
        v.push(ms(t.elapsed()));
        sb.shutdown().await?;
    }
    report.push(Row::new("sandbox start: cold boot to agent ready", v));

    eprintln!("template restores...");
    let mut ours = Vec::new();
    for _ in 0..n(20, 5) {
        let t = Instant::now();
        let sb = rt.start(opts()).await?;
        ours.push(ms(t.elapsed()));
        sb.shutdown().await?;
    }
    eprintln!("raw QEMU restores (baseline)...");
    let mut raw = Vec::new();
    for _ in 0..n(20, 5) {
        raw.push(baseline::raw_qemu_restore(&image, &template, tmp.path()).await?);
    }
    let raw_median = report::median(&raw);
    report.push(Row::new(
        "baseline: raw QEMU restore of the template to agent hello",
        raw,
    ));
    report.push(
        Row::new(
            "sandbox start: template restore (fresh disk, setup, identity)",
            ours,
        )
        .vs("raw QEMU restore", raw_median),
    );

    jail_rows(&mut report, &rt, &unjailed, n(20, 5)).await?;

    eprintln!("warm pool takes...");
    let pool = Pool::start(
        rt.clone(),
        PoolConfig {
            size: 2,
            ..PoolConfig::for_this_host()
        },
    );
    let mut v = Vec::new();
    for _ in 0..n(10, 3) {
        wait_for(|| pool.status().idle_vms >= 2, Duration::from_secs(120)).await?;
        let t = Instant::now();
        let (sb, _slot) = pool.acquire(opts()).await?;
        v.push(ms(t.elapsed()));
        sb.shutdown().await?;
    }
    report.push(
        Row::new("sandbox start: take from the warm pool", v).vs("raw QEMU restore", raw_median),
    );

    eprintln!("exec round trips...");
    let (sb, slot) = pool.acquire(opts()).await?;
    let mut info = Vec::new();
    let mut exec = Vec::new();
    for _ in 0..n(200, 50) {
        let t = Instant::now();
        sb.agent().info().await?;
        info.push(ms(t.elapsed()));
    }
    for _ in 0..n(200, 50) {
        let t = Instant::now();
        let (code, _, _) = sb
            .agent()
            .run(RunSpec {
                argv: vec!["true".into()],
                ..Default::default()
            })
            .await?
            .collect()
            .await?;
        exec.push(ms(t.elapsed()));
        anyhow::ensure!(code == 0, "true failed");
    }
    report.push(Row::new("agent protocol round trip (info)", info));
    report.push(Row::new(
        "exec round trip: run `true` in a running sandbox",
        exec,
    ));
    drop(sb);
    drop(slot);

    eprintln!("sleep and wake...");
    let (mut slept, mut woke) = (Vec::new(), Vec::new());
    for _ in 0..n(5, 2) {
        let sb = rt.start(opts()).await?;
        sb.agent()
            .run(sh("nohup sleep 10000 >/dev/null 2>&1 & echo x > /root/f"))
            .await?
            .collect()
            .await?;
        let t = Instant::now();
        let rec = sb.sleep().await?;
        slept.push(ms(t.elapsed()));
        let t = Instant::now();
        let sb = rt.wake(&rec).await?;
        let (code, _, _) = sb.agent().run(sh("cat /root/f")).await?.collect().await?;
        woke.push(ms(t.elapsed()));
        anyhow::ensure!(code == 0, "state lost after wake");
        sb.shutdown().await?;
    }
    report.push(Row::new("sleep: snapshot a running sandbox to disk", slept));
    report.push(Row::new("wake from sleep to first exec answer", woke));

    eprintln!("memory of idle sandboxes...");
    let mut live = Vec::new();
    for _ in 0..n(5, 3) {
        let sb = rt.start(opts()).await?;
        sb.agent().run(sh("true")).await?.collect().await?;
        live.push(sb);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pss: Vec<f64> = live
        .iter()
        .filter_map(|s| s.pid().and_then(pss_mib))
        .collect();
    let pss_median = report::median(&pss);
    report.memory(pss_median, live.len());
    drop(live);
    pool.drain();
    drop(pool);

    eprintln!("bwrap baseline...");
    report.push(Row::new(
        "baseline: `bwrap --ro-bind / / true` (a namespace, no VM)",
        baseline::bwrap(n(30, 10))?,
    ));

    // ---- Part B: through the real server and CLI ---------------------
    eprintln!("starting the release magsd...");
    let server = baseline::Server::start(&magsd, tmp.path())?;
    let client = mags_client::Client::new(&server.url, &server.token)?;
    wait_for_async(&client).await?;

    eprintln!("mags run 'echo hi', sequential...");
    let mut seq = Vec::new();
    for _ in 0..n(30, 10) {
        seq.push(cli_run(&mags, &server)?);
    }
    report.push(Row::new(
        "`mags run 'echo hi'` end to end (CLI process), sequential",
        seq,
    ));

    eprintln!("mags run 'echo hi', burst of 20...");
    wait_for_async(&client).await?;
    let t = Instant::now();
    let children: Vec<_> = (0..20)
        .map(|_| {
            let start = Instant::now();
            server
                .mags(&mags)
                .args(["run", "echo hi"])
                .stdout(Stdio::piped())
                .spawn()
                .map(|c| (start, c))
        })
        .collect::<Result<_, _>>()?;
    let mut burst = Vec::new();
    for (start, child) in children {
        let out = child.wait_with_output()?;
        anyhow::ensure!(out.stdout == b"hi\n", "burst run printed {:?}", out.stdout);
        burst.push(ms(start.elapsed()));
    }
    let burst_total = ms(t.elapsed());
    report.push(
        Row::new(
            "`mags run 'echo hi'`, burst of 20 at once (each run)",
            burst,
        )
        .note(format!("all 20 done in {burst_total:.0} ms")),
    );

    eprintln!("API submit to first output byte...");
    wait_for_async(&client).await?;
    let mut first = Vec::new();
    for _ in 0..n(20, 5) {
        let req: mags_api::CreateJobRequest =
            serde_json::from_value(serde_json::json!({"script": "echo hi"}))?;
        let t = Instant::now();
        let job = client.create_job(&req).await?;
        let mut follow = client.follow_output(&job.request_id);
        loop {
            match follow.next().await? {
                Some(OutputItem::Output { .. }) => break,
                Some(_) => continue,
                None => bail!("job ended without output"),
            }
        }
        first.push(ms(t.elapsed()));
        while follow.next().await?.is_some() {}
    }
    report.push(Row::new("API: submit to first output byte", first));

    eprintln!("URL proxy...");
    for row in urlproxy::rows(&client, n(100, 20), n(100, 20)).await? {
        report.push(row);
    }

    eprintln!("exec in a sandbox: SDK and SSH...");
    remote::exec_rows(&client, tmp.path(), n(30, 10), &mut report).await?;
    eprintln!("browser sessions...");
    for row in browser::rows(&client, n(5, 2)).await? {
        report.push(row);
    }

    // ---- Part C: workspaces ------------------------------------------
    workspaces::run(&mut report, &mags, &server, &client, &server.data, quick).await?;

    drop(server);

    // ---- Part D: several hosts on one Postgres (fake executor) ---------
    eprintln!("hosts of a cluster...");
    for row in cluster::rows(&magsd, tmp.path(), quick).await? {
        report.push(row);
    }
    report.print();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if !quick {
        std::fs::write(root.join("BENCHMARKS.md"), report.markdown())?;
        eprintln!("wrote BENCHMARKS.md");
    }
    Ok(())
}

fn cli_run(mags: &Path, server: &baseline::Server) -> anyhow::Result<f64> {
    let t = Instant::now();
    let out = server.mags(mags).args(["run", "echo hi"]).output()?;
    let elapsed = ms(t.elapsed());
    anyhow::ensure!(
        out.status.success() && out.stdout == b"hi\n",
        "mags run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(elapsed)
}

async fn wait_for(mut cond: impl FnMut() -> bool, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while !cond() {
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for the pool");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Waits until the server's warm pool is full.
async fn wait_for_async(client: &mags_client::Client) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let st = client.pool_status().await?;
        if st.min_pool_size > 0 && st.idle_vms >= st.min_pool_size {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the server's pool never filled: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
