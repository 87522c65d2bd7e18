//! Baselines measured in the same run, and the release server under test.

use anyhow::{bail, Context};
use mags_vm::agent::AgentConn;
use mags_vm::qemu::{self, Memory, QemuSpec};
use mags_vm::qmp::Qmp;
use mags_vm::template::Template;
use mags_vm::GuestImage;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// QEMU restoring the template with nothing of Mags around it: spawn,
/// load the snapshot over QMP, run, until the agent answers `Hello`.
/// No disk formatting, no setup: the floor our start path stands on.
pub async fn raw_qemu_restore(
    image: &GuestImage,
    t: &Template,
    scratch: &Path,
) -> anyhow::Result<f64> {
    let dir = scratch.join(format!("raw-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    // The disk a clone of this template needs, made before the clock starts.
    let disk = dir.join("disk");
    let disk_format = match &t.disk {
        Some(base) => {
            mags_vm::disk::create_overlay(base, &disk, t.disk_bytes).await?;
            mags_vm::DiskFormat::Qcow2
        }
        None => {
            std::fs::File::create(&disk)?.set_len(t.disk_bytes)?;
            mags_vm::DiskFormat::Raw
        }
    };
    let spec = QemuSpec {
        accel: t.accel,
        memory_mb: t.memory_mb,
        vcpus: 1,
        kernel: image.kernel.clone(),
        initrd: image.initrd.clone(),
        rootfs: image.rootfs.clone(),
        disk,
        disk_format,
        agent_socket: dir.join("a.sock"),
        qmp_socket: dir.join("q.sock"),
        console_log: dir.join("console"),
        memory: Memory::PrivateFile(t.mem.clone()),
        incoming: true,
        egress_cmd: "/bin/false".into(),
        // Raw QEMU: no confinement of any kind.
        seccomp: false,
    };
    let t0 = Instant::now();
    let mut child = tokio::process::Command::new("qemu-system-x86_64")
        .args(qemu::args(&spec))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut q = Qmp::connect(&spec.qmp_socket, Duration::from_secs(10)).await?;
    q.execute(
        "migrate-set-capabilities",
        json!({"capabilities": [{"capability": "x-ignore-shared", "state": true}]}),
    )
    .await?;
    q.execute(
        "migrate-incoming",
        json!({"uri": format!("exec:cat {}", t.state.display())}),
    )
    .await?;
    q.wait_migration(Duration::from_secs(30)).await?;
    if q.execute("query-status", json!({})).await?["status"] != "running" {
        q.execute("cont", json!({})).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let stream = loop {
        match tokio::net::UnixStream::connect(&spec.agent_socket).await {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(1)).await
            }
            Err(e) => return Err(e.into()),
        }
    };
    let (r, w) = stream.into_split();
    let _agent = AgentConn::handshake(r, w, Duration::from_secs(30)).await?;
    let elapsed = t0.elapsed().as_secs_f64() * 1000.0;
    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(elapsed)
}

/// `bwrap` starting `true` in new namespaces: the cost of the lightest
/// isolation there is, for scale.
pub fn bwrap(n: usize) -> anyhow::Result<Vec<f64>> {
    let mut v = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let st = Command::new("bwrap")
            .args([
                "--ro-bind",
                "/",
                "/",
                "--dev",
                "/dev",
                "--proc",
                "/proc",
                "--unshare-all",
                "true",
            ])
            .status()
            .context("bwrap not runnable: apt-get install bubblewrap")?;
        if !st.success() {
            bail!("bwrap true failed: {st}");
        }
        v.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(v)
}

/// The release `magsd`, on a loopback port, with the shared image cache.
pub struct Server {
    child: Child,
    pub url: String,
    pub token: String,
    /// Its `--data-dir`.
    pub data: PathBuf,
    home: PathBuf,
}

impl Server {
    pub fn start(magsd: &Path, scratch: &Path) -> anyhow::Result<Server> {
        let dir = scratch.join("server");
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::File::create(dir.join("magsd.log"))?;
        let child = Command::new(magsd)
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--listen", "127.0.0.1:0"])
            .arg("--server-file")
            .arg(dir.join("server.json"))
            .arg("--local-token-file")
            .arg(dir.join("token"))
            .env("MAGS_IMAGES_DIR", super::images_dir())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(300);
        let url = loop {
            let v = std::fs::read(dir.join("server.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
            if let Some(u) = v.and_then(|v| v["url"].as_str().map(str::to_string)) {
                break u;
            }
            if Instant::now() > deadline {
                bail!(
                    "magsd did not start; see {}",
                    dir.join("magsd.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let token = std::fs::read_to_string(dir.join("token"))?
            .trim()
            .to_string();
        Ok(Server {
            child,
            url,
            token,
            data: dir.join("data"),
            home: dir.join("home"),
        })
    }

    /// The `mags` CLI aimed at this server.
    pub fn mags(&self, mags: &Path) -> Command {
        let mut c = Command::new(mags);
        c.env("MAGS_API_URL", &self.url)
            .env("MAGS_API_TOKEN", &self.token)
            .env("MAGS_HOME", &self.home)
            .stdin(Stdio::null());
        c
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
