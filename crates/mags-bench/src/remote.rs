//! Commands in a live sandbox through the server, the ways clients send
//! them: the SDK's `POST /exec`, and OpenSSH through the SSH gateway with
//! the key `/access` gives (a new connection per command, handshake
//! included, as the Node SDK and the CLI do).

use crate::ms;
use crate::report::{Report, Row};
use anyhow::{bail, Context};
use mags_api::{CreateJobRequest, JobState};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Starts a persistent sandbox, measures both exec paths `n` times each,
/// stops it.
pub async fn exec_rows(
    client: &mags_client::Client,
    scratch: &Path,
    n: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut req = CreateJobRequest::new("sleep infinity");
    req.persistent = true;
    req.name = Some("bench-exec".into());
    let id = client.create_job(&req).await?.request_id;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let st = client.job_status(&id).await?;
        match st.status {
            JobState::Running => break,
            JobState::Completed | JobState::Error => bail!("the sandbox ended: {:?}", st.error),
            _ if Instant::now() > deadline => bail!("the sandbox never ran"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }

    let mut sdk = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let r = client.exec(&id, "true", None).await?;
        sdk.push(ms(t.elapsed()));
        anyhow::ensure!(r.exit_code == 0, "exec `true` exited {}", r.exit_code);
    }
    report.push(Row::new(
        "SDK exec round trip: `POST /exec` `true` in a running sandbox",
        sdk,
    ));

    let access = client.ssh_access(&id).await?;
    let key = scratch.join("bench_ssh_key");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key)
        .and_then(|mut f| f.write_all(access.ssh_private_key.as_bytes()))
        .context("writing the access key")?;
    let mut ssh = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let out = Command::new("ssh")
            .arg("-i")
            .arg(&key)
            .args(["-p", &access.ssh_port.to_string()])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args([
                "-o",
                "LogLevel=ERROR",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "BatchMode=yes",
            ])
            .arg(format!("root@{}", access.ssh_host))
            .arg("true")
            .output()
            .context("running ssh (install openssh-client)")?;
        ssh.push(ms(t.elapsed()));
        anyhow::ensure!(
            out.status.success(),
            "ssh true failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    report.push(
        Row::new("exec round trip over SSH (`ssh ... true`)", ssh)
            .note("new connection each time: handshake and auth included".into()),
    );
    client.stop(&id).await?;
    Ok(())
}
