//! `magsd host ...`: the hosts sharing this database (the same
//! `--data-dir` / `--database-url` as `serve`; they work while the hosts
//! run).

use anyhow::bail;
use clap::Subcommand;
use mags_control::text::escape;
use mags_server::config::DataArgs;
use mags_store::{clock, Host};

#[derive(Subcommand)]
pub enum HostCommand {
    /// List the hosts: state, epoch, lease, capacity, the jobs each runs.
    List {
        #[command(flatten)]
        data: DataArgs,
        #[arg(long)]
        json: bool,
    },
    /// Stop giving host NAME new work (it keeps what it runs).
    Drain {
        #[command(flatten)]
        data: DataArgs,
        name: String,
    },
    /// Give host NAME new work again after a drain.
    Undrain {
        #[command(flatten)]
        data: DataArgs,
        name: String,
    },
    /// Remove host NAME from the list: once it was lost or stopped and
    /// owns no live job.
    Forget {
        #[command(flatten)]
        data: DataArgs,
        name: String,
    },
}

/// A host as `--json` prints it.
#[derive(serde::Serialize)]
struct HostView {
    name: String,
    state: &'static str,
    epoch: i64,
    internal_url: Option<String>,
    capacity: u32,
    labels: std::collections::BTreeMap<String, String>,
    /// Milliseconds the lease still holds (negative: ran out that long ago).
    lease_left_ms: i64,
    started_at: String,
    lost_reason: Option<String>,
    leader: bool,
}

fn view(h: &Host, now: i64, leader: Option<&str>) -> HostView {
    HostView {
        name: h.info.name.clone(),
        state: h.state.as_str(),
        epoch: h.epoch,
        internal_url: h.info.internal_url.clone(),
        capacity: h.info.capacity,
        labels: h.info.labels.clone(),
        lease_left_ms: h.lease_until - now,
        started_at: clock::rfc3339(h.started_at),
        lost_reason: h.lost_reason.clone(),
        leader: leader == Some(h.info.name.as_str()),
    }
}

pub async fn host(cmd: HostCommand) -> anyhow::Result<()> {
    match cmd {
        HostCommand::List { data, json } => {
            let store = crate::users::open(&data).await?;
            let now = store.db_now_ms().await?;
            let leader = store.leader().await?;
            let hosts: Vec<HostView> = store
                .hosts()
                .await?
                .iter()
                .map(|h| view(h, now, leader.as_deref()))
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&hosts)?);
                return Ok(());
            }
            println!(
                "{:<24} {:<9} {:>6} {:>9} {:>8}  INTERNAL URL",
                "NAME", "STATE", "EPOCH", "LEASE", "CAPACITY"
            );
            for h in &hosts {
                let lease = if h.lease_left_ms >= 0 {
                    format!("{:.1}s", h.lease_left_ms as f64 / 1000.0)
                } else {
                    "expired".into()
                };
                let name = if h.leader {
                    format!("{} (leader)", escape(&h.name))
                } else {
                    escape(&h.name).to_string()
                };
                println!(
                    "{:<24} {:<9} {:>6} {:>9} {:>8}  {}",
                    name,
                    h.state,
                    h.epoch,
                    lease,
                    h.capacity,
                    h.internal_url
                        .as_deref()
                        .map(|u| escape(u).to_string())
                        .unwrap_or_default()
                );
            }
        }
        HostCommand::Drain { data, name } => set_draining(&data, &name, true).await?,
        HostCommand::Undrain { data, name } => set_draining(&data, &name, false).await?,
        HostCommand::Forget { data, name } => {
            let store = crate::users::open(&data).await?;
            match store.forget_host(&name).await {
                Ok(true) => println!("forgot host {}", escape(&name)),
                Ok(false) => bail!("there is no host {name:?} (`magsd host list` shows them)"),
                Err(mags_store::StoreError::Conflict(why)) => bail!("{why}"),
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

async fn set_draining(data: &DataArgs, name: &str, draining: bool) -> anyhow::Result<()> {
    let store = crate::users::open(data).await?;
    if !store.set_draining(name, draining).await? {
        match store.host(name).await? {
            None => bail!("there is no host {name:?} (`magsd host list` shows them)"),
            Some(h) => bail!("host {name:?} is {}: nothing to change", h.state.as_str()),
        }
    }
    if draining {
        println!(
            "host {} takes no new work now (it keeps what it runs; `magsd host undrain` undoes this)",
            escape(name)
        );
    } else {
        println!("host {} takes new work again", escape(name));
    }
    Ok(())
}
