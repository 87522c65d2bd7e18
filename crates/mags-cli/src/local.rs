//! Local mode: with no API URL configured, `mags` runs a `magsd` for the
//! user with its state in `~/.mags/local`.
//!
//! If `server.json` there names a server that answers `/health`, it is
//! used with the token in `token`. Otherwise (under a lock, so two `mags`
//! starting at once make one server) the guest image is built in the
//! foreground, so its progress bar shows, and `magsd serve` is started
//! detached (its own session, output to `magsd.log`). `mags` then waits
//! for `server.json` and `/health`.

use anyhow::{bail, Context as _};
use mags_api::ServerFile;
use std::os::unix::fs::DirBuilderExt as _;
use std::os::unix::io::AsRawFd as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a new local server may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Paths of the local server's files.
pub struct LocalDir {
    pub dir: PathBuf,
}

impl LocalDir {
    /// `<mags home>/local`.
    pub fn new(mags_home: &Path) -> Self {
        LocalDir {
            dir: mags_home.join("local"),
        }
    }

    pub fn server_file(&self) -> PathBuf {
        self.dir.join("server.json")
    }

    pub fn token_file(&self) -> PathBuf {
        self.dir.join("token")
    }

    pub fn log_file(&self) -> PathBuf {
        self.dir.join("magsd.log")
    }

    /// The running local server's URL and token, if it answers.
    pub async fn running(&self) -> Option<(String, String)> {
        let bytes = std::fs::read(self.server_file()).ok()?;
        let server: ServerFile = serde_json::from_slice(&bytes).ok()?;
        let token = std::fs::read_to_string(self.token_file()).ok()?;
        let token = token.trim().to_string();
        let client = mags_client::Client::new(&server.url, &token).ok()?;
        client.health().await.ok()?;
        Some((server.url, token))
    }

    /// The running local server, started first if needed.
    pub async fn ensure_server(&self) -> anyhow::Result<(String, String)> {
        if let Some(found) = self.running().await {
            return Ok(found);
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let _lock = lock(&self.dir.join("start.lock"))?;
        // Someone else may have started it while we waited for the lock.
        if let Some(found) = self.running().await {
            return Ok(found);
        }
        let magsd = find_magsd()?;
        self.build_image(&magsd)?;
        self.spawn(&magsd)?;
        self.wait_ready().await
    }

    /// Builds the local server's guest image in the foreground (progress shown).
    pub fn build_image(&self, magsd: &Path) -> anyhow::Result<()> {
        self.build_variant(magsd, "standard")
    }

    /// Builds the image `variant` (or `all`) with `magsd image build`, its
    /// progress on this terminal.
    pub fn build_variant(&self, magsd: &Path, variant: &str) -> anyhow::Result<()> {
        let status = Command::new(magsd)
            .args(["image", "build", "--variant", variant, "--data-dir"])
            .arg(&self.dir)
            .env_remove("MAGS_DATABASE_URL")
            .status()
            .with_context(|| format!("cannot run {}", magsd.display()))?;
        if !status.success() {
            bail!("building the guest image failed (run `mags doctor` to see what is missing)");
        }
        Ok(())
    }

    fn spawn(&self, magsd: &Path) -> anyhow::Result<()> {
        let server_file = self.server_file();
        match std::fs::remove_file(&server_file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).context(format!("cannot remove {}", server_file.display())),
        }
        let log_path = self.log_file();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        eprintln!(
            "mags: starting a local server (state in {}, log in {})",
            self.dir.display(),
            log_path.display()
        );
        let mut cmd = Command::new(magsd);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--listen", "127.0.0.1:0", "--local-token-file"])
            .arg(self.token_file())
            .arg("--server-file")
            .arg(&server_file)
            .env_remove("MAGS_DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: the closure runs in the child between fork and exec and
        // only calls setsid(2), which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.spawn()
            .with_context(|| format!("cannot start {}", magsd.display()))?;
        Ok(())
    }

    async fn wait_ready(&self) -> anyhow::Result<(String, String)> {
        let started = Instant::now();
        while started.elapsed() < START_TIMEOUT {
            if let Some(found) = self.running().await {
                return Ok(found);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "the local server did not answer within {} s; see {}",
            START_TIMEOUT.as_secs(),
            self.log_file().display()
        )
    }
}

/// An exclusive lock held until dropped (the file stays).
struct Lock(std::fs::File);

fn lock(path: &Path) -> anyhow::Result<Lock> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own; blocks until granted.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot lock {}", path.display()));
    }
    Ok(Lock(f))
}

impl Drop for Lock {
    fn drop(&mut self) {
        // SAFETY: unlocking our own descriptor; closing it would too.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// `magsd` next to the `mags` executable, else on PATH.
pub fn find_magsd() -> anyhow::Result<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("magsd")))
        .filter(|p| p.is_file());
    let on_path = || {
        std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("magsd"))
                .find(|p| p.is_file())
        })
    };
    beside.or_else(on_path).context(
        "magsd (the Mags server) was not found next to mags or on PATH; install it, \
         or point mags at a server with `mags login`",
    )
}
