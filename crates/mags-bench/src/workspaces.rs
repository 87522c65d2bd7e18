//! Part C: workspaces through the real server and CLI: incremental sync of
//! a 1 GiB workspace, restoring it onto an empty host cache, and starting
//! a fork of it against starting an empty workspace.

use crate::baseline::Server;
use crate::ms;
use crate::report::{self, Report, Row};
use anyhow::{ensure, Context};
use mags_client::Client;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The workspace every row here measures.
const WS: &str = "bench-ws";

pub async fn run(
    report: &mut Report,
    mags: &Path,
    server: &Server,
    client: &Client,
    data_dir: &Path,
    quick: bool,
) -> anyhow::Result<()> {
    let n = |full: usize, q: usize| if quick { q } else { full };

    eprintln!("workspace: filling {WS} with 1 GiB of random data...");
    cli(server, mags, &["new", WS, "-p", "--disk", "4"])?;
    let id = client.resolve_job(WS).await?;
    exec(
        client,
        &id,
        "head -c 1073741824 /dev/urandom > /root/big && sync",
    )
    .await?;
    let t = Instant::now();
    client.sync(&id).await.context("first sync")?;
    let first = ms(t.elapsed());

    eprintln!("workspace: syncs after a 1 MiB change...");
    let mut syncs = Vec::new();
    for i in 0..n(10, 3) {
        // A different MiB each time, so every sync has new content to store.
        let cmd = format!(
            "dd if=/dev/urandom of=/root/big bs=1M count=1 seek={} conv=notrunc status=none && sync",
            i * 97
        );
        exec(client, &id, &cmd).await?;
        let t = Instant::now();
        client.sync(&id).await.context("sync")?;
        syncs.push(ms(t.elapsed()));
    }
    report.push(Row::new(
        "workspace: first sync of 1 GiB of new data",
        vec![first],
    ));
    report.push(Row::new(
        "workspace: sync after a 1 MiB change (1 GiB workspace)",
        syncs,
    ));
    cli(server, mags, &["stop", WS])?;

    eprintln!("workspace: starts with a warm and with an empty host cache...");
    let cache = workspace_cache(data_dir, WS)?;
    let (mut warm, mut cold) = (Vec::new(), Vec::new());
    for _ in 0..n(3, 1) {
        warm.push(timed(server, mags, &["new", WS, "-p"])?);
        cli(server, mags, &["stop", WS])?;
        std::fs::remove_dir_all(&cache).with_context(|| format!("wiping {}", cache.display()))?;
        cold.push(timed(server, mags, &["new", WS, "-p"])?);
        let id = client.resolve_job(WS).await?;
        let r = exec(client, &id, "stat -c %s /root/big").await?;
        ensure!(
            r.trim() == "1073741824",
            "restored workspace lost data: {r}"
        );
        cli(server, mags, &["stop", WS])?;
    }
    let warm_median = report::median(&warm);
    report.push(Row::new(
        "workspace: start a sandbox on it, host cache warm (`mags new W -p`)",
        warm,
    ));
    report.push(
        Row::new(
            "workspace: start with an empty host cache (restore 1 GiB from storage)",
            cold,
        )
        .vs("warm start", warm_median),
    );

    eprintln!("workspace: fork starts vs empty starts...");
    let (mut fork, mut empty) = (Vec::new(), Vec::new());
    // One untimed fork first: it restores the base's read-only image once.
    cli(
        server,
        mags,
        &["run", "--base", WS, "-w", "bench-fork-0", "true"],
    )?;
    for i in 1..=n(10, 3) {
        let name = format!("bench-empty-{i}");
        empty.push(timed(server, mags, &["run", "-w", &name, "true"])?);
        let name = format!("bench-fork-{i}");
        fork.push(timed(
            server,
            mags,
            &["run", "--base", WS, "-w", &name, "true"],
        )?);
    }
    let empty_median = report::median(&empty);
    report.push(Row::new(
        "workspace: `mags run -w NEW true` on a new empty workspace",
        empty,
    ));
    report.push(
        Row::new(
            "workspace: `mags run --base W -w NEW true`, a fork of the 1 GiB workspace",
            fork,
        )
        .vs("empty workspace", empty_median),
    );
    Ok(())
}

/// Runs the CLI and fails with its stderr if it fails.
fn cli(server: &Server, mags: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = server.mags(mags).args(args).output()?;
    ensure!(
        out.status.success(),
        "mags {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn timed(server: &Server, mags: &Path, args: &[&str]) -> anyhow::Result<f64> {
    let t = Instant::now();
    cli(server, mags, args)?;
    Ok(ms(t.elapsed()))
}

async fn exec(client: &Client, id: &str, cmd: &str) -> anyhow::Result<String> {
    let r = client.exec(id, cmd, Some(600.0)).await?;
    ensure!(
        r.exit_code == 0,
        "`{cmd}` exited {}: {}",
        r.exit_code,
        r.stderr
    );
    Ok(r.stdout)
}

/// The host cache directory of workspace `name` (`<data>/workspaces/<user>/<name>`).
fn workspace_cache(data_dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let root = data_dir.join("workspaces");
    for user in std::fs::read_dir(&root).with_context(|| format!("reading {}", root.display()))? {
        let dir = user?.path().join(name);
        if dir.is_dir() {
            return Ok(dir);
        }
    }
    anyhow::bail!("no cache of {name} under {}", root.display())
}
