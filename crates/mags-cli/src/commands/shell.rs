//! Interactive ways into a sandbox: `mags ssh NAME` (the system `ssh`
//! with a key from `/access`) and `mags exec -it NAME [CMD]` (a terminal
//! over the API's WebSocket, no SSH needed).

use super::connect;
use super::sandbox::{self, NewArgs};
use anyhow::{bail, Context as _};
use mags_api::{JobState, TtyQuery};
use mags_client::{Client, ClientError, TtyEvent};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::PathBuf;
use std::process::Command;

/// How long `mags ssh` waits for a sandbox it started.
const START_WAIT_SECS: u64 = 300;

/// The job id of the live sandbox `name`, started (like `mags new`) if
/// there is none.
async fn live_sandbox(client: &Client, name: &str) -> anyhow::Result<String> {
    match client.resolve_job(name).await {
        Ok(id) => {
            let st = client.job_status(&id).await?;
            match st.status {
                // A sleeping one wakes at `/access`; one still starting is
                // waited for by `/access` refusing until it runs.
                JobState::Running | JobState::Sleeping => return Ok(id),
                JobState::Accepted | JobState::Queued => {
                    wait_running(client, &id, name).await?;
                    return Ok(id);
                }
                JobState::Completed | JobState::Error => {}
            }
        }
        Err(e) if e.status().map(|s| s.as_u16()) == Some(404) => {}
        Err(e) => return Err(e.into()),
    }
    if mags_client::looks_like_id(name) {
        bail!("job {name} has ended; give a name to start a new sandbox");
    }
    eprintln!("mags: starting sandbox {name}...");
    let args = NewArgs {
        name: name.to_string(),
        persist: false,
        base: None,
        disk: None,
        no_sleep: false,
        wait_secs: START_WAIT_SECS,
        egress: Default::default(),
        url: None,
    };
    sandbox::start(client, args, |_| {
        eprintln!("mags: waiting for room to run another sandbox...")
    })
    .await
}

/// Waits until job `id` (called `name`), accepted or queued, runs.
async fn wait_running(client: &Client, id: &str, name: &str) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(START_WAIT_SECS);
    loop {
        let st = client.job_status(id).await?;
        match st.status {
            JobState::Running | JobState::Sleeping => return Ok(()),
            JobState::Completed | JobState::Error => {
                let why = st.error.unwrap_or_else(|| st.status.to_string());
                bail!("sandbox {name} ended before it was ready: {why}");
            }
            JobState::Accepted | JobState::Queued => {}
        }
        if std::time::Instant::now() > deadline {
            bail!("sandbox {name} ({id}) is not running after {START_WAIT_SECS} s");
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// A private directory holding the access key; removed on drop.
struct KeyFile {
    dir: PathBuf,
    path: PathBuf,
}

impl KeyFile {
    fn write(key: &str) -> anyhow::Result<KeyFile> {
        let dir = std::env::temp_dir().join(format!(
            "mags-ssh-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join("id_ed25519");
        let kf = KeyFile { dir, path };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&kf.path)
            .with_context(|| format!("cannot write {}", kf.path.display()))?;
        f.write_all(key.as_bytes())?;
        if !key.ends_with('\n') {
            f.write_all(b"\n")?;
        }
        Ok(kf)
    }
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `ssh` arguments for a sandbox's gateway with `key`: no host-key
/// checks (every sandbox's gateway key is the server's; the access key
/// is what matters), only this key, no agent.
pub fn ssh_args(host: &str, port: u16, user: &str, key: &std::path::Path) -> Vec<String> {
    let mut a: Vec<String> = vec!["-i".into(), key.display().to_string()];
    a.extend(["-p".into(), port.to_string()]);
    for o in [
        "StrictHostKeyChecking=no",
        "UserKnownHostsFile=/dev/null",
        "LogLevel=ERROR",
        "IdentitiesOnly=yes",
        "IdentityAgent=none",
        "PasswordAuthentication=no",
    ] {
        a.extend(["-o".into(), o.into()]);
    }
    a.push(format!("{user}@{host}"));
    a
}

/// `mags ssh NAME [CMD...]`: a shell in the sandbox (started if none is
/// live) through the system `ssh`, or CMD with its exit code.
pub async fn ssh(name: &str, command: &[String]) -> anyhow::Result<u8> {
    let (client, _) = connect().await?;
    let id = live_sandbox(&client, name).await?;
    let access = client.ssh_access(&id).await?;
    let key = KeyFile::write(&access.ssh_private_key)?;
    let user = if access.ssh_user.is_empty() {
        "root"
    } else {
        access.ssh_user.as_str()
    };
    let mut cmd = Command::new(std::env::var_os("MAGS_SSH").unwrap_or_else(|| "ssh".into()));
    cmd.args(ssh_args(&access.ssh_host, access.ssh_port, user, &key.path));
    if !command.is_empty() {
        cmd.arg("--").args(command);
    }
    // ssh owns the terminal now: Ctrl-C is its business, not ours.
    // SAFETY: setting dispositions to SIG_IGN runs no handler.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
    }
    let status = cmd.status().context(
        "cannot run ssh (install the OpenSSH client, e.g. apt-get install openssh-client)",
    )?;
    drop(key);
    Ok(status
        .code()
        .and_then(|c| u8::try_from(c).ok())
        .unwrap_or(255))
}

/// The terminal's size (rows, cols), if stdout is one.
fn term_size() -> Option<(u16, u16)> {
    // SAFETY: winsize is plain data; TIOCGWINSZ fills it or fails.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and out-pointer.
    let r = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

fn is_tty(fd: i32) -> bool {
    // SAFETY: plain query on a file descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

/// Raw mode on stdin's terminal while it lives: keys (Ctrl-C too) go to
/// the sandbox's terminal, which echoes them.
struct RawMode(libc::termios);

impl RawMode {
    fn enable() -> Option<RawMode> {
        // SAFETY: termios is plain data filled in by tcgetattr.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd and out-pointer.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut t) } != 0 {
            return None;
        }
        let saved = t;
        // SAFETY: t is a valid termios.
        unsafe { libc::cfmakeraw(&mut t) };
        // SAFETY: valid fd and termios.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t) } != 0 {
            return None;
        }
        Some(RawMode(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `enable`.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.0) };
    }
}

/// Reads stdin on a plain thread (a blocked read must not keep the
/// process alive at exit); `None` at EOF.
fn stdin_reader() -> tokio::sync::mpsc::Receiver<Option<Vec<u8>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || {
        use std::io::Read as _;
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.blocking_send(None);
                    return;
                }
                Ok(n) => {
                    if tx.blocking_send(Some(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// `mags exec -it NAME [CMD]`: CMD (default: a login shell) on a terminal
/// in the sandbox; exits with its exit code.
pub async fn exec_tty(job: &str, command: &str) -> anyhow::Result<u8> {
    use tokio::signal::unix::{signal, SignalKind};
    let (client, _) = connect().await?;
    let id = client.resolve_job(job).await?;
    let size = term_size();
    let q = TtyQuery {
        command: Some(command.to_string()).filter(|c| !c.trim().is_empty()),
        rows: size.map(|s| s.0),
        cols: size.map(|s| s.1),
        term: std::env::var("TERM").ok().filter(|t| !t.is_empty()),
    };
    let session = client.tty(&id, &q).await.map_err(|e| match e {
        ClientError::Api { message, .. } => anyhow::anyhow!("{message}"),
        e => e.into(),
    })?;
    let (mut writer, mut reader) = session.split();
    let stdin_is_tty = is_tty(libc::STDIN_FILENO);
    let raw = if stdin_is_tty {
        RawMode::enable()
    } else {
        None
    };
    let mut winch = signal(SignalKind::window_change()).ok();
    let mut input = stdin_reader();
    let mut stdout = std::io::stdout().lock();
    let mut input_open = true;
    let result = loop {
        tokio::select! {
            ev = reader.next() => match ev {
                Some(TtyEvent::Output(b)) => {
                    stdout.write_all(&b)?;
                    stdout.flush()?;
                }
                Some(TtyEvent::Exit(code)) => break Ok(u8::try_from(code).unwrap_or(1)),
                Some(TtyEvent::Error(e)) => break Err(anyhow::anyhow!("{e}")),
                None => break Err(anyhow::anyhow!("the terminal session ended")),
            },
            chunk = input.recv(), if input_open => match chunk {
                Some(Some(b)) => writer.input(&b).await?,
                // End of piped input: Ctrl-D, as at a terminal.
                _ => {
                    input_open = false;
                    if !stdin_is_tty {
                        writer.input(b"\x04").await?;
                    }
                }
            },
            Some(()) = async { match winch.as_mut() { Some(w) => w.recv().await, None => None } } => {
                if let Some((rows, cols)) = term_size() {
                    writer.resize(rows, cols).await?;
                }
            }
        }
    };
    drop(raw);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_gets_the_key_port_and_no_host_checks() {
        let a = ssh_args("10.0.0.1", 2222, "root", std::path::Path::new("/k"));
        let s = a.join(" ");
        assert!(s.starts_with("-i /k -p 2222 "), "{s}");
        assert!(s.contains("-o StrictHostKeyChecking=no"), "{s}");
        assert!(s.contains("-o IdentitiesOnly=yes"), "{s}");
        assert_eq!(a.last().map(String::as_str), Some("root@10.0.0.1"));
    }

    #[test]
    fn the_key_file_is_private_and_goes_away() {
        use std::os::unix::fs::PermissionsExt as _;
        let kf = KeyFile::write("-----BEGIN OPENSSH PRIVATE KEY-----").expect("write");
        let mode = std::fs::metadata(&kf.path)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir = kf.dir.clone();
        drop(kf);
        assert!(!dir.exists());
    }
}
