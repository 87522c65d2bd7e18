//! The warm pool: restored, set-up, idle sandboxes waiting for work, so a
//! job starts in milliseconds instead of a restore's hundreds.
//!
//! A background task keeps `size` idle sandboxes of the default shape,
//! refilling after each take, and never while the host is short of memory.
//! Jobs of another shape (memory, vCPUs, disk) start fresh from the template.
//!
//! Every sandbox handed out counts as busy (against `max`) while its
//! [`PoolSlot`] lives: dropping the slot gives the place back and wakes
//! the refill, on every path (an error, a cancelled start, a panic).

use crate::sandbox::{Runtime, Sandbox, SandboxOptions};
use crate::VmError;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Pool settings.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Idle sandboxes to keep ready (0 disables the pool).
    pub size: usize,
    /// Upper bound on sandboxes (idle + busy) this host runs at once.
    pub max: usize,
    pub memory_mb: u32,
    pub vcpus: u32,
    pub disk_gb: u32,
    /// Do not refill while the host has less than this available (MiB).
    pub min_free_mb: u64,
}

impl PoolConfig {
    /// A pool sized to this machine: one idle sandbox per core, at most 4.
    pub fn for_this_host() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            size: cores.clamp(1, 4),
            max: cores * 4,
            memory_mb: 256,
            vcpus: 1,
            disk_gb: 2,
            min_free_mb: 1024,
        }
    }
}

/// Counts for `/pool-status`.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct PoolStatus {
    pub idle_vms: usize,
    pub busy_vms: usize,
    pub total_vms: usize,
    pub min_pool_size: usize,
    pub max_pool_size: usize,
}

pub struct Pool {
    rt: Arc<Runtime>,
    cfg: PoolConfig,
    idle: Mutex<VecDeque<Sandbox>>,
    busy: Arc<AtomicUsize>,
    refill: Arc<Notify>,
}

/// One busy place of the pool, held by whoever took a sandbox from it
/// for as long as that sandbox runs; dropped, the place is free again.
#[must_use = "dropping the slot frees its place in the pool at once"]
pub struct PoolSlot {
    busy: Arc<AtomicUsize>,
    refill: Arc<Notify>,
}

impl PoolSlot {
    fn take(pool: &Pool) -> PoolSlot {
        pool.busy.fetch_add(1, Ordering::SeqCst);
        PoolSlot {
            busy: pool.busy.clone(),
            refill: pool.refill.clone(),
        }
    }
}

impl Drop for PoolSlot {
    fn drop(&mut self) {
        let _ = self
            .busy
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1));
        self.refill.notify_one();
    }
}

/// Runs what every job runs first (`bash -c` in `/root`) once, so this
/// clone's QEMU has already translated it (under TCG the translation cache
/// is per process and not in the snapshot) before a job waits on it.
async fn warm_up(sb: &Sandbox) {
    let spec = mags_proto::RunSpec {
        argv: vec!["/bin/bash".into(), "-c".into(), "true".into()],
        cwd: Some("/root".into()),
        timeout_ms: Some(30_000),
        ..Default::default()
    };
    if let Err(e) = async { sb.agent().run(spec).await?.collect().await }.await {
        tracing::debug!(sandbox = sb.id(), "pool warm-up failed: {e}");
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Available host memory in MiB (`MemAvailable`).
pub fn available_memory_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

impl Pool {
    /// Creates the pool and starts filling it in the background.
    pub fn start(rt: Arc<Runtime>, cfg: PoolConfig) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            rt,
            cfg,
            idle: Mutex::new(VecDeque::new()),
            busy: Arc::new(AtomicUsize::new(0)),
            refill: Arc::new(Notify::new()),
        });
        let weak = Arc::downgrade(&pool);
        let refill = pool.refill.clone();
        tokio::spawn(async move {
            loop {
                let Some(pool) = weak.upgrade() else { return };
                let notified = refill.notified();
                let wait = pool.fill_one().await;
                drop(pool);
                match wait {
                    None => continue,
                    Some(d) => {
                        let _ = tokio::time::timeout(d, notified).await;
                    }
                }
            }
        });
        pool
    }

    fn shape(&self) -> (u32, u32, u32) {
        (self.cfg.memory_mb, self.cfg.vcpus, self.cfg.disk_gb)
    }

    /// Adds one idle sandbox if one is wanted; returns how long to wait
    /// before looking again (`None`: look again at once).
    async fn fill_one(&self) -> Option<Duration> {
        let idle = lock(&self.idle).len();
        let total = idle + self.busy.load(Ordering::SeqCst);
        if idle >= self.cfg.size || total >= self.cfg.max {
            return Some(Duration::from_secs(5));
        }
        if available_memory_mb() < self.cfg.min_free_mb + u64::from(self.cfg.memory_mb) {
            tracing::warn!("host memory is low; the warm pool is not refilled");
            return Some(Duration::from_secs(5));
        }
        let mut opts = SandboxOptions::new(format!("pool-{}", uuid::Uuid::new_v4()));
        (opts.memory_mb, opts.vcpus, opts.disk_gb) = self.shape();
        match self.rt.start(opts).await {
            Ok(sb) => {
                warm_up(&sb).await;
                lock(&self.idle).push_back(sb);
                None
            }
            Err(e) => {
                tracing::warn!("warm pool could not start a sandbox: {e}");
                Some(Duration::from_secs(10))
            }
        }
    }

    /// A sandbox for `opts`: an idle one from the pool if the shape fits,
    /// else a fresh one, with its busy slot. The caller owns both and drops
    /// the slot when the sandbox is gone (shut down, slept or killed).
    pub async fn acquire(&self, opts: SandboxOptions) -> Result<(Sandbox, PoolSlot), VmError> {
        let fresh = opts.disk == crate::sandbox::DiskSource::Fresh
            && opts.variant == crate::image::ImageVariant::Standard;
        if fresh && (opts.memory_mb, opts.vcpus, opts.disk_gb) == self.shape() {
            loop {
                let Some(mut sb) = lock(&self.idle).pop_front() else {
                    break;
                };
                self.refill.notify_one();
                if sb.is_alive() {
                    return Ok((sb, PoolSlot::take(self)));
                }
                tracing::warn!(sandbox = sb.id(), "idle sandbox died; discarded");
            }
        }
        // Counted while it starts; a failed or abandoned start frees it.
        let slot = PoolSlot::take(self);
        let sb = self.rt.start(opts).await?;
        Ok((sb, slot))
    }

    pub fn status(&self) -> PoolStatus {
        let idle = lock(&self.idle).len();
        let busy = self.busy.load(Ordering::SeqCst);
        PoolStatus {
            idle_vms: idle,
            busy_vms: busy,
            total_vms: idle + busy,
            min_pool_size: self.cfg.size,
            max_pool_size: self.cfg.max,
        }
    }

    /// Kills every idle sandbox (server shutdown).
    pub fn drain(&self) {
        lock(&self.idle).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle_pool() -> Pool {
        let dir = std::env::temp_dir().join("mags-pool-test-unused");
        let rt = Runtime::new(crate::RuntimeConfig {
            data_dir: dir.clone(),
            agent_bin: dir.join("agent"),
            accel: None,
            images_dir: None,
            egress_socket: None,
            extra_ca_certs: String::new(),
            jail: Default::default(),
        });
        Pool {
            rt: Arc::new(rt),
            cfg: PoolConfig::for_this_host(),
            idle: Mutex::default(),
            busy: Arc::default(),
            refill: Arc::default(),
        }
    }

    #[test]
    fn a_slot_counts_as_busy_until_dropped_and_wakes_the_refill() {
        let pool = idle_pool();
        let a = PoolSlot::take(&pool);
        let b = PoolSlot::take(&pool);
        assert_eq!(pool.status().busy_vms, 2);
        let mut woken = std::pin::pin!(pool.refill.notified());
        drop(a);
        assert_eq!(pool.status().busy_vms, 1);
        assert!(ready(woken.as_mut()), "the refill is told");
        drop(b);
        assert_eq!(pool.status().busy_vms, 0);
    }

    /// Whether `f` is ready on its first poll.
    fn ready<F: std::future::Future>(f: std::pin::Pin<&mut F>) -> bool {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        f.poll(&mut cx).is_ready()
    }
}
