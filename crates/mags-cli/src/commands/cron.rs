//! `mags cron add|list|remove|enable|disable`.

use super::{connect, print_json};
use mags_api::{CronCreateRequest, CronUpdateRequest};
use std::collections::BTreeMap;

/// What `mags cron add` was given.
pub struct AddArgs {
    pub name: String,
    pub schedule: String,
    pub script: String,
    pub workspace: Option<String>,
    pub persistent: bool,
    pub env: Vec<String>,
    pub json: bool,
}

/// `mags cron add -n NAME -s EXPR [-w WS] [-p] [--env K=V]... 'script'`.
pub async fn add(a: AddArgs) -> anyhow::Result<u8> {
    let mut environment = BTreeMap::new();
    for kv in &a.env {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--env takes KEY=VALUE, got {kv:?}"))?;
        environment.insert(k.to_string(), v.to_string());
    }
    let (client, _) = connect().await?;
    let c = client
        .create_cron(&CronCreateRequest {
            name: a.name,
            cron_expression: a.schedule,
            script: a.script,
            persistent: a.persistent,
            workspace_id: a.workspace,
            environment,
            enabled: true,
        })
        .await?;
    if a.json {
        print_json(&c)?;
    } else {
        println!(
            "cron job {} ({}) created; next run {} UTC",
            c.name,
            c.id,
            c.next_run_at.as_deref().unwrap_or("-")
        );
    }
    Ok(0)
}

/// `mags cron list`.
pub async fn list(json: bool) -> anyhow::Result<u8> {
    let (client, _) = connect().await?;
    let list = client.list_crons().await?;
    if json {
        print_json(&list)?;
        return Ok(0);
    }
    if list.cron_jobs.is_empty() {
        println!("no cron jobs");
        return Ok(0);
    }
    println!(
        "{:<20} {:<16} {:<8} {:<21} {:<10} {:>5} {:>7}  ID",
        "NAME", "SCHEDULE", "ENABLED", "NEXT RUN (UTC)", "LAST", "RUNS", "SKIPPED"
    );
    for c in &list.cron_jobs {
        println!(
            "{:<20} {:<16} {:<8} {:<21} {:<10} {:>5} {:>7}  {}",
            c.name,
            c.cron_expression,
            if c.enabled { "yes" } else { "no" },
            c.next_run_at.as_deref().unwrap_or("-"),
            c.last_status.as_deref().unwrap_or("-"),
            c.run_count,
            c.skipped_runs,
            c.id
        );
    }
    Ok(0)
}

/// `mags cron remove ID|NAME`.
pub async fn remove(id: &str) -> anyhow::Result<u8> {
    let (client, _) = connect().await?;
    client.delete_cron(id).await?;
    println!("cron job {id} removed");
    Ok(0)
}

/// `mags cron enable|disable ID|NAME`.
pub async fn set_enabled(id: &str, enabled: bool) -> anyhow::Result<u8> {
    let (client, _) = connect().await?;
    let c = client
        .update_cron(
            id,
            &CronUpdateRequest {
                enabled: Some(enabled),
                ..Default::default()
            },
        )
        .await?;
    match (&c.next_run_at, enabled) {
        (Some(next), true) => println!("cron job {} enabled; next run {next} UTC", c.name),
        _ => println!("cron job {} disabled", c.name),
    }
    Ok(0)
}
