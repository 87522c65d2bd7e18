//! `mags doctor`: where mags would connect and whether that works, then
//! the host checks of `magsd doctor` (tools, KVM, guest image) for the
//! local server's state. It never starts a server.

use crate::config;
use crate::local::{find_magsd, LocalDir};
use mags_client::Client;
use std::process::Command;

/// Prints one line per check; exits 1 if any failed.
pub async fn doctor() -> anyhow::Result<u8> {
    let mut failed = false;
    let home = config::mags_home()?;
    let local = LocalDir::new(&home);
    let mut report = |ok: bool, line: String| {
        failed |= !ok;
        println!("{} {line}", if ok { "OK     " } else { "MISSING" });
    };

    match config::configured()? {
        Some((url, token, source)) => {
            report(true, format!("server: {url} (from {source})"));
            match token {
                None => report(
                    false,
                    "token: none -> run `mags login` or set MAGS_API_TOKEN".into(),
                ),
                Some(token) => match Client::new(&url, &token) {
                    Ok(client) => check_server(&client, &mut report).await,
                    Err(e) => report(
                        false,
                        format!("server: {e} -> fix the URL with `mags login`"),
                    ),
                },
            }
        }
        None => match local.running().await {
            Some((url, token)) => {
                report(true, format!("local server: running at {url}"));
                if let Ok(client) = Client::new(&url, &token) {
                    check_server(&client, &mut report).await;
                }
            }
            None => report(
                true,
                format!(
                    "local server: not running (mags starts it on first use; state in {})",
                    local.dir.display()
                ),
            ),
        },
    }

    match find_magsd() {
        Ok(magsd) => {
            report(true, format!("magsd: {}", magsd.display()));
            let out = Command::new(&magsd)
                .args(["doctor", "--data-dir"])
                .arg(&local.dir)
                .env_remove("MAGS_DATABASE_URL")
                .output();
            match out {
                Ok(out) => {
                    print!("{}", String::from_utf8_lossy(&out.stdout));
                    failed |= !out.status.success();
                }
                Err(e) => report(false, format!("magsd doctor: {e}")),
            }
        }
        Err(e) => report(false, format!("magsd: {e:#}")),
    }
    Ok(u8::from(failed))
}

async fn check_server(client: &Client, report: &mut impl FnMut(bool, String)) {
    match client.health().await {
        Ok(h) => report(true, format!("server health: ok (version {})", h.version)),
        Err(e) => {
            report(false, format!("server health: {e}"));
            return;
        }
    }
    match client.whoami().await {
        Ok(w) => report(true, format!("token: valid for user {}", w.user)),
        Err(e) => report(false, format!("token: {e} -> run `mags login`")),
    }
    if let Ok(p) = client.pool_status().await {
        let accel = p.accel.unwrap_or_else(|| "not yet known".into());
        report(
            true,
            format!(
                "server accelerator: {accel}; at most {} VMs",
                p.max_pool_size
            ),
        );
    }
}
