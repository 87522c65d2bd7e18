//! Setup the real-VM tests share: the runtime over a data dir, the guest
//! image cache, and commands run in a guest. A missing agent binary or
//! image fails the test with its own message (never a skip).

#![allow(dead_code)]

use mags_proto::RunSpec;
use mags_vm::{Runtime, RuntimeConfig, Sandbox};
use std::path::{Path, PathBuf};

/// Where guest images are kept (and built if missing):
/// `$MAGS_IMAGES_DIR`, default `~/.cache/mags/images`.
pub fn images_dir() -> PathBuf {
    std::env::var_os("MAGS_IMAGES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/mags/images")
        })
}

/// A runtime's settings on `data_dir`: the built agent, the image cache,
/// no egress proxy, no extra CA certificates.
pub fn config(data_dir: &Path) -> RuntimeConfig {
    let agent_bin = mags_vm::locate::find_agent_bin().unwrap_or_else(|e| panic!("{e}"));
    RuntimeConfig {
        data_dir: data_dir.to_path_buf(),
        agent_bin,
        accel: None,
        images_dir: Some(images_dir()),
        egress_socket: None,
        extra_ca_certs: String::new(),
        jail: Default::default(),
    }
}

/// A runtime of [`config`] on `data_dir`.
pub fn runtime(data_dir: &Path) -> Runtime {
    Runtime::new(config(data_dir))
}

/// A runtime of `config`, its image ready.
pub async fn ready(config: RuntimeConfig) -> Runtime {
    let rt = Runtime::new(config);
    rt.ensure_image(|_| {}).await.expect("image");
    rt
}

/// A runtime on a fresh data dir, its image ready.
pub async fn ready_runtime() -> (tempfile::TempDir, Runtime) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = ready(config(tmp.path())).await;
    (tmp, rt)
}

/// `script` under `bash -c`.
pub fn sh(script: &str) -> RunSpec {
    RunSpec {
        argv: vec!["/bin/bash".into(), "-c".into(), script.into()],
        ..Default::default()
    }
}

/// Runs `spec` in the guest to its end: exit code, stdout, stderr.
pub async fn run(sb: &Sandbox, spec: RunSpec) -> (i32, Vec<u8>, Vec<u8>) {
    sb.agent()
        .run(spec)
        .await
        .expect("run")
        .collect()
        .await
        .expect("collect")
}

/// Runs `script` in the guest: its exit code and stdout.
pub async fn stdout_of(sb: &Sandbox, script: &str) -> (i32, String) {
    let (code, out, _) = run(sb, sh(script)).await;
    (code, String::from_utf8_lossy(&out).to_string())
}
