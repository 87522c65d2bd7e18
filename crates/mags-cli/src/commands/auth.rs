//! `mags login`, `mags logout`, `mags whoami`.

use super::connect;
use crate::config::{self, ConfigFile};
use anyhow::{bail, Context as _};
use mags_client::Client;
use std::io::{BufRead as _, IsTerminal as _, Write as _};

/// `mags login [--url URL] [--token TOKEN]`: prompts for what is missing,
/// checks the pair against the server, saves it (mode 0600).
pub async fn login(url: Option<String>, token: Option<String>) -> anyhow::Result<u8> {
    let current = config::configured()?.map(|(u, _, _)| u);
    let url = match url {
        Some(u) => u,
        None => {
            let hint = current.as_deref().unwrap_or("");
            let answer = prompt(&format!("API URL [{hint}]: "), false)?;
            if answer.is_empty() {
                current.context("an API URL is required")?
            } else {
                answer
            }
        }
    };
    let token = match token {
        Some(t) => t,
        None => prompt("API token: ", true)?,
    };
    if token.is_empty() {
        bail!("an API token is required");
    }
    let client = Client::new(url.trim(), token.trim())?;
    let who = client
        .whoami()
        .await
        .with_context(|| format!("could not log in to {}", client.base_url()))?;
    let mut file = ConfigFile::load()?;
    file.api_url = Some(client.base_url().to_string());
    file.api_token = Some(token.trim().to_string());
    let path = file.save()?;
    println!(
        "logged in to {} as {} (saved to {})",
        client.base_url(),
        who.user,
        path.display()
    );
    Ok(0)
}

/// `mags logout`: forgets the saved URL and token (mags goes back to its
/// local server unless the environment names another).
pub fn logout() -> anyhow::Result<u8> {
    let mut file = ConfigFile::load()?;
    if file.api_url.is_none() && file.api_token.is_none() {
        println!("not logged in");
        return Ok(0);
    }
    file.api_url = None;
    file.api_token = None;
    file.save()?;
    println!("logged out");
    Ok(0)
}

/// `mags whoami`.
pub async fn whoami() -> anyhow::Result<u8> {
    let (client, source) = connect().await?;
    let who = client.whoami().await?;
    println!("server: {} (from {source})", client.base_url());
    println!(
        "user:   {}{}",
        who.user,
        if who.is_admin { " (admin)" } else { "" }
    );
    Ok(0)
}

/// Reads one line from the terminal (without echo if `secret`).
fn prompt(question: &str, secret: bool) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    if tty {
        eprint!("{question}");
        std::io::stderr().flush()?;
    }
    let _echo = (secret && tty).then(EchoOff::new).flatten();
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    if secret && tty {
        eprintln!();
    }
    Ok(line.trim().to_string())
}

/// Terminal echo off on stdin until dropped.
struct EchoOff(libc::termios);

impl EchoOff {
    fn new() -> Option<EchoOff> {
        // SAFETY: termios is plain data; tcgetattr fills it for fd 0 and we
        // only use it if that succeeded.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return None;
            }
            let saved = t;
            t.c_lflag &= !libc::ECHO;
            if libc::tcsetattr(0, libc::TCSANOW, &t) != 0 {
                return None;
            }
            Some(EchoOff(saved))
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: restores the settings tcgetattr returned for fd 0.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &self.0) };
    }
}
