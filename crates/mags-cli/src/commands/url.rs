//! `mags url NAME [PORT]` and `mags url alias ...`: public URLs of
//! sandboxes. The server's `url` field is printed as is (the published
//! Python SDK rewrites subdomains into its own cloud domain; we do not).

use super::{connect, print_json};
use anyhow::Context as _;
use mags_api::JobState;
use mags_client::Client;
use std::time::{Duration, Instant};

/// Default guest port for URLs.
pub const DEFAULT_PORT: u16 = 8080;

/// `mags url NAME [PORT]`: prints the URL of PORT in NAME's sandbox.
pub async fn url(name: &str, port: Option<u16>) -> anyhow::Result<u8> {
    let (client, _) = connect().await?;
    let id = client.resolve_job(name).await?;
    let port = port.unwrap_or(DEFAULT_PORT);
    let access = client.access(&id, port).await?;
    println!("{}", access.url);
    eprintln!("mags: port {port} of {name} is served at {}", access.url);
    Ok(0)
}

/// Waits until job `id` runs, then asks for a URL for `port` and prints it
/// to stderr (used by `mags run --url` and `mags new --url`).
pub async fn announce(client: &Client, id: &str, port: u16) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let st = client.job_status(id).await?;
        match st.status {
            JobState::Running | JobState::Sleeping => break,
            JobState::Completed | JobState::Error => {
                anyhow::bail!("job {id} ended before it could get a URL")
            }
            _ if Instant::now() > deadline => anyhow::bail!("job {id} is still not running"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let access = client
        .access(id, port)
        .await
        .with_context(|| format!("cannot get a URL for port {port}"))?;
    eprintln!("mags: URL (port {port}): {}", access.url);
    Ok(access.url)
}

/// `mags url alias SUBDOMAIN NAME`: SUBDOMAIN follows NAME's workspace.
pub async fn alias_create(subdomain: &str, name: &str) -> anyhow::Result<u8> {
    let (client, _) = connect().await?;
    // NAME is a workspace, or a job whose workspace is meant.
    let workspace = match client.resolve_job(name).await {
        Ok(id) => client.job_status(&id).await?.workspace_id,
        Err(_) => None,
    }
    .unwrap_or_else(|| name.to_string());
    let alias = client.create_alias(subdomain, &workspace).await?;
    println!("{}", alias.url);
    eprintln!(
        "mags: {} follows the live sandbox of workspace {workspace}",
        alias.url
    );
    Ok(0)
}

/// `mags url alias list`.
pub async fn alias_list(json: bool) -> anyhow::Result<u8> {
    let (client, _) = connect().await?;
    let list = client.list_aliases().await?;
    if json {
        print_json(&list)?;
        return Ok(0);
    }
    if list.aliases.is_empty() {
        eprintln!("mags: no URL aliases");
    }
    for a in list.aliases {
        println!("{:<24} {:<24} {}", a.subdomain, a.workspace_id, a.url);
    }
    Ok(0)
}

/// `mags url alias remove SUBDOMAIN`.
pub async fn alias_remove(subdomain: &str) -> anyhow::Result<u8> {
    let (client, _) = connect().await?;
    client.delete_alias(subdomain).await?;
    eprintln!("mags: alias {subdomain} removed");
    Ok(0)
}
