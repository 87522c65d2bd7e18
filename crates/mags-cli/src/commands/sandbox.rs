//! `mags new`, `mags exec`, `mags stop`, `mags sync`, `mags set`: long-lived
//! sandboxes. Every command taking `<name|id>` resolves it by the
//! contract's rule ([`mags_client::Client::resolve_job`]).

use super::connect;
use anyhow::{bail, Context as _};
use mags_api::{CreateJobRequest, JobState, OutputStream, UpdateJobRequest};
use mags_client::ExecItem;
use std::io::Write as _;
use std::time::{Duration, Instant};

/// Flags of `mags new`.
pub struct NewArgs {
    pub name: String,
    /// Keep the workspace in storage (`-p`): `no_sync` is sent off.
    pub persist: bool,
    pub base: Option<String>,
    pub disk: Option<u32>,
    pub no_sleep: bool,
    /// What the sandbox may reach.
    pub egress: super::EgressFlags,
    pub wait_secs: u64,
    /// Give this port a public URL once running.
    pub url: Option<u16>,
}

/// `mags new NAME`: an idle persistent sandbox on workspace NAME, waited
/// for until it runs (as the SDK's `new()` does).
pub async fn new(args: NewArgs) -> anyhow::Result<u8> {
    let (client, _) = connect().await?;
    let (name, url) = (args.name.clone(), args.url);
    let id = start(&client, args, |_| {
        eprintln!("mags: waiting for room to run another sandbox...")
    })
    .await?;
    println!("{name}");
    if let Some(port) = url {
        super::url::announce(&client, &id, port).await?;
    }
    eprintln!(
        "mags: sandbox {name} is running (job {id}); `mags exec {name} 'cmd'` runs commands in it"
    );
    Ok(0)
}

/// Creates the sandbox `args` describes and waits until it runs; returns
/// its job id. `queued` is called once if it has to wait for room.
pub async fn start(
    client: &mags_client::Client,
    args: NewArgs,
    queued: impl FnOnce(&str),
) -> anyhow::Result<String> {
    let mut req = CreateJobRequest::new("sleep infinity");
    req.workspace_id = Some(args.name.clone());
    req.persistent = true;
    req.no_sync = !args.persist;
    req.no_sleep = args.no_sleep;
    args.egress.apply(&mut req);
    req.base_workspace_id = args.base;
    if let Some(gb) = args.disk {
        req.disk_gb = gb;
    }
    let id = client.create_job(&req).await?.request_id;
    let deadline = Instant::now() + Duration::from_secs(args.wait_secs);
    let mut queued = Some(queued);
    loop {
        let st = client.job_status(&id).await?;
        match st.status {
            JobState::Running if st.vm_id.as_deref().is_some_and(|v| !v.is_empty()) => break,
            JobState::Completed | JobState::Error => {
                let why = st.error.unwrap_or_else(|| st.status.to_string());
                bail!("sandbox {} ended before it was ready: {why}", args.name);
            }
            JobState::Queued => {
                if let Some(q) = queued.take() {
                    q(&id)
                }
            }
            _ => {}
        }
        if Instant::now() > deadline {
            bail!(
                "sandbox {} ({id}) is not running after {} s; see `mags status {}`",
                args.name,
                args.wait_secs,
                args.name
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(id)
}

/// `mags exec NAME COMMAND`: streams the command's output; exits with its
/// exit code.
pub async fn exec(job: &str, command: &str, timeout: Option<f64>) -> anyhow::Result<u8> {
    let (client, _) = connect().await?;
    let id = client.resolve_job(job).await?;
    let mut stream = client.exec_stream(&id, command, timeout).await?;
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    loop {
        let item = stream
            .next()
            .await
            .with_context(|| format!("the command in {job} did not finish"))?;
        match item {
            Some(ExecItem::Output { stream, data }) => match stream {
                OutputStream::Stderr | OutputStream::System => {
                    stderr.write_all(&data)?;
                    stderr.flush()?;
                }
                OutputStream::Stdout => {
                    stdout.write_all(&data)?;
                    stdout.flush()?;
                }
            },
            Some(ExecItem::Exit {
                exit_code,
                timed_out,
            }) => {
                if timed_out {
                    writeln!(stderr, "mags: the command timed out and was killed")?;
                }
                return Ok(u8::try_from(exit_code).unwrap_or(1));
            }
            None => bail!("the command in {job} ended without an exit status"),
        }
    }
}

/// `mags stop NAME`.
pub async fn stop(job: &str) -> anyhow::Result<u8> {
    let (client, _) = connect().await?;
    let id = client.resolve_job(job).await?;
    let r = client.stop(&id).await?;
    eprintln!("mags: {job} stopped ({})", r.status);
    Ok(if r.status == JobState::Error { 1 } else { 0 })
}

/// `mags sync NAME`.
pub async fn sync(job: &str) -> anyhow::Result<u8> {
    let (client, _) = connect().await?;
    let id = client.resolve_job(job).await?;
    client.sync(&id).await?;
    eprintln!("mags: {job} synced");
    Ok(0)
}

/// `mags set NAME --no-sleep|--sleep|--startup-command CMD|--idle-timeout S`.
pub async fn set(job: &str, req: UpdateJobRequest) -> anyhow::Result<u8> {
    if req == UpdateJobRequest::default() {
        bail!("nothing to set: give --no-sleep, --sleep, --startup-command or --idle-timeout");
    }
    let (client, _) = connect().await?;
    let id = client.resolve_job(job).await?;
    let st = client.update_job(&id, &req).await?;
    let sleep = if st.no_sleep {
        "never sleeps".to_string()
    } else {
        match st.idle_timeout_secs {
            Some(s) => format!("sleeps after {s} s idle"),
            None => "sleeps when idle".to_string(),
        }
    };
    let startup = st.startup_command.map_or_else(
        || "no startup command".into(),
        |c| format!("startup command {c:?}"),
    );
    eprintln!("mags: {job}: {sleep}; {startup}");
    Ok(0)
}
