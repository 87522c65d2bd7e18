//! `mags run`: create a job, stream its output as it is produced, exit
//! with the script's exit code. With `-p` the sandbox stays up after it.

use super::{connect, print_json};
use anyhow::{bail, Context as _};
use mags_api::{CreateJobRequest, JobState, OutputStream};
use mags_client::OutputItem;
use std::io::Write as _;

/// Flags of `mags run`.
pub struct RunArgs {
    pub script: String,
    /// `-w`/`-n`: the job's name and its workspace.
    pub workspace: Option<String>,
    pub env: Vec<String>,
    pub disk: Option<u32>,
    pub persistent: bool,
    pub no_sleep: bool,
    /// What the sandbox may reach.
    pub egress: super::EgressFlags,
    pub startup_command: Option<String>,
    pub json: bool,
    /// Base workspace (read-only; with `-w`, the new workspace forks it).
    pub base: Option<String>,
    /// Files to upload and place at `/root/<name>` before the script.
    pub files: Vec<std::path::PathBuf>,
    /// With `persistent`: give this port a public URL once running.
    pub url: Option<u16>,
    /// Kill the script after this many seconds.
    pub timeout: Option<u64>,
    /// The guest image (`rootfs_type`).
    pub rootfs: Option<String>,
}

/// Runs the job; returns the process exit code.
pub async fn run(args: RunArgs) -> anyhow::Result<u8> {
    let mut req = CreateJobRequest::new(args.script);
    req.name = args.workspace.clone();
    req.workspace_id = args.workspace;
    for kv in &args.env {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("--env expects KEY=VALUE, got {kv:?}");
        };
        req.environment.insert(k.to_string(), v.to_string());
    }
    if let Some(gb) = args.disk {
        req.disk_gb = gb;
    }
    req.persistent = args.persistent;
    req.no_sleep = args.no_sleep;
    args.egress.apply(&mut req);
    req.startup_command = args.startup_command;
    req.base_workspace_id = args.base;
    req.timeout = args.timeout;
    req.rootfs_type = args.rootfs;
    let (client, _) = connect().await?;
    for path in &args.files {
        let up = client
            .upload_file(path)
            .await
            .with_context(|| format!("cannot upload {}", path.display()))?;
        req.file_ids.push(up.file_id);
    }
    let created = client.create_job(&req).await?;
    let id = created.request_id;
    // The URL is printed as soon as the sandbox runs, while the script's
    // output streams.
    let announce = args.url.map(|port| {
        let (client, id) = (client.clone(), id.clone());
        tokio::spawn(async move {
            if let Err(e) = super::url::announce(&client, &id, port).await {
                eprintln!("mags: {e:#}");
            }
        })
    });

    let mut follower = client.follow_output(&id);
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    let mut printed_system = false;
    let mut said_queued = false;
    let (status, exit_code, error) = loop {
        let item = follower
            .next()
            .await
            .with_context(|| format!("lost the output of job {id}"))?;
        match item {
            Some(OutputItem::Output { stream, data }) if !args.json => match stream {
                OutputStream::Stdout => {
                    stdout.write_all(&data)?;
                    stdout.flush()?;
                }
                OutputStream::Stderr => {
                    stderr.write_all(&data)?;
                    stderr.flush()?;
                }
                OutputStream::System => {
                    for line in String::from_utf8_lossy(&data).lines() {
                        writeln!(stderr, "mags: {line}")?;
                    }
                    printed_system = true;
                }
            },
            Some(OutputItem::Status(JobState::Queued)) if !args.json && !said_queued => {
                writeln!(stderr, "mags: waiting for a free VM slot...")?;
                said_queued = true;
            }
            Some(OutputItem::Exit {
                status,
                exit_code,
                error,
            }) => break (status, exit_code, error),
            // The server keeps a followed script's sandbox awake; one that
            // slept anyway (it was asleep before we followed) will record
            // nothing more of this script.
            Some(OutputItem::Status(JobState::Sleeping)) if req.persistent => {
                break (
                    JobState::Sleeping,
                    None,
                    Some(
                        "the sandbox went to sleep before its script ended; what the script \
                         does from now on is not recorded"
                            .into(),
                    ),
                )
            }
            Some(_) => {}
            None => bail!("the output of job {id} ended without its exit status"),
        }
    };
    if let Some(task) = announce {
        let _ = task.await;
    }
    if args.json {
        print_json(&client.job_status(&id).await?)?;
    } else if status.is_live() {
        let name = req.name.or(req.workspace_id).unwrap_or_else(|| id.clone());
        writeln!(
            stderr,
            "mags: the sandbox stays up: `mags exec {name} 'cmd'`, `mags stop {name}`"
        )?;
    }
    Ok(match exit_code {
        // An error despite the script's success (the host failed its disk).
        Some(0) if status == JobState::Error => 1,
        Some(code) => u8::try_from(code).unwrap_or(1),
        None if status == JobState::Completed => 0,
        None if status.is_live() => {
            if !args.json {
                let reason = error.unwrap_or_else(|| "unknown reason".into());
                writeln!(stderr, "mags: {reason}")?;
            }
            1
        }
        None => {
            if !printed_system && !args.json {
                let reason = error.unwrap_or_else(|| "unknown reason".into());
                writeln!(stderr, "mags: job {id} failed: {reason}")?;
            }
            1
        }
    })
}
