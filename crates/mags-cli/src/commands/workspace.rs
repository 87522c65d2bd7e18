//! `mags workspace list|delete`, `mags resize NAME --disk GB`.

use super::{connect, print_json};

/// `mags workspace list`.
pub async fn list(json: bool) -> anyhow::Result<u8> {
    let (client, _) = connect().await?;
    let list = client.list_workspaces().await?;
    if json {
        print_json(&list)?;
        return Ok(0);
    }
    if list.workspaces.is_empty() {
        println!("no workspaces");
        return Ok(0);
    }
    println!(
        "{:<32} {:>6} {:<10} {:>8} {:<8} LAST USED",
        "WORKSPACE", "DISK", "KIND", "VERSIONS", "IN USE"
    );
    for w in &list.workspaces {
        println!(
            "{:<32} {:>4}GB {:<10} {:>8} {:<8} {}",
            w.workspace_id,
            w.disk_gb,
            if w.persistent { "persistent" } else { "local" },
            w.versions,
            if w.live_job_id.is_some() { "yes" } else { "no" },
            w.last_used
        );
    }
    Ok(0)
}

/// `mags workspace delete ID`.
pub async fn delete(id: &str) -> anyhow::Result<u8> {
    let (client, _) = connect().await?;
    let r = client.delete_workspace(id).await?;
    println!("{}", r.message);
    Ok(0)
}

/// `mags resize NAME --disk GB`.
pub async fn resize(name: &str, disk_gb: u32) -> anyhow::Result<u8> {
    let (client, _) = connect().await?;
    let r = client.resize_workspace(name, disk_gb).await?;
    println!("{}", r.message);
    Ok(0)
}
