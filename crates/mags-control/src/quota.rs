//! Per-user limits: VMs running at once, jobs waiting for one, disk, and
//! request rate. What is over a limit is refused before anything changes,
//! with a typed [`QuotaError`] (the API answers 429 and `Retry-After` for
//! what passes with time, 403 for the disk quota, 507 for the host's
//! disk).
//!
//! - [`UserSlots`]: one counting semaphore per user, shared by the
//!   scheduler (one-shot jobs) and [`crate::sandboxes`] (running
//!   persistent sandboxes; sleeping ones hold none).
//! - [`RateLimiter`]: a token bucket per user, checked by
//!   `routes::rate_limit` after authentication on every `/api/v1` route.
//! - [`Quotas::check_disk`]: a user's workspace disks (their nominal
//!   sizes) plus their uploads of the last [`UPLOAD_WINDOW`] plus their
//!   jobs' stored output (until deleted or pruned).
//! - [`check_host_disk`]: a disk the host's data dir cannot hold, with the
//!   disks of the sandboxes that exist counted, is a 507 (server-wide,
//!   not per user).

use mags_store::{Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Uploads count against the disk quota for this long after they are made
/// (they are meant for a job soon after; there is no endpoint to delete
/// them).
pub const UPLOAD_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// `Retry-After` for a refused job (too many waiting or running).
pub const JOB_RETRY_AFTER_SECS: u64 = 10;

/// The per-user limits; 0 means "no limit" for each.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UserLimits {
    /// VMs of one user running at once (one-shot jobs plus running
    /// persistent sandboxes).
    pub max_running: u32,
    /// Jobs of one user waiting for a VM (`accepted` or `queued`).
    pub max_pending: u32,
    /// Disk bytes of one user (workspaces + recent uploads).
    pub disk_bytes: u64,
    /// Sustained API requests per second.
    pub requests_per_sec: f64,
    /// Requests allowed at once above the sustained rate.
    pub request_burst: u32,
}

impl UserLimits {
    /// No per-user limit at all (the server-wide ones still hold).
    pub const UNLIMITED: UserLimits = UserLimits {
        max_running: 0,
        max_pending: 0,
        disk_bytes: 0,
        requests_per_sec: 0.0,
        request_burst: 0,
    };
}

/// Why a request is over a limit; the text is what the user reads.
#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    /// As many jobs waiting as the server queues per user.
    #[error(
        "you have {pending} jobs waiting for a VM, the most this server queues per user; \
         wait for some to start or stop them"
    )]
    TooManyPending { pending: u64 },
    /// Every VM of the user runs and none of their sandboxes can sleep.
    #[error(
        "you have {max} sandboxes running, the most this server allows per user, and none \
         of them can sleep; stop one or try again"
    )]
    TooManySandboxes { max: u32 },
    /// Past the user's disk quota (the text says by how much and what
    /// holds it).
    #[error("{0}")]
    Disk(String),
    /// More disk than the host's data dir can hold.
    #[error("{0}")]
    HostDisk(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl QuotaError {
    /// Seconds after which asking again may succeed, for what passes with
    /// time.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            QuotaError::TooManyPending { .. } | QuotaError::TooManySandboxes { .. } => {
                Some(JOB_RETRY_AFTER_SECS)
            }
            _ => None,
        }
    }
}

/// The per-user limits in force, and their state; cheap to share.
pub struct Quotas {
    pub limits: UserLimits,
    pub slots: Arc<UserSlots>,
    pub rate: RateLimiter,
}

impl Quotas {
    pub fn new(limits: UserLimits) -> Self {
        Quotas {
            limits,
            slots: Arc::new(UserSlots::new(limits.max_running)),
            rate: RateLimiter::new(limits.requests_per_sec, limits.request_burst),
        }
    }

    /// Refused if `user_id` already has as many jobs waiting as allowed.
    pub async fn check_pending(&self, store: &Store, user_id: &str) -> Result<(), QuotaError> {
        let max = self.limits.max_pending;
        if max == 0 {
            return Ok(());
        }
        let pending = store.pending_jobs(user_id).await?;
        if pending >= u64::from(max) {
            return Err(QuotaError::TooManyPending { pending });
        }
        Ok(())
    }

    /// Refused for a new persistent sandbox when the user runs as many VMs
    /// as allowed, here and on the cluster's other hosts (`elsewhere`), and
    /// `can_make_room` (one of their sandboxes here can sleep) is false.
    pub fn check_new_sandbox(
        &self,
        user_id: &str,
        elsewhere: u32,
        can_make_room: bool,
    ) -> Result<(), QuotaError> {
        let max = self.slots.max();
        if max == 0 || self.slots.in_use(user_id) + elsewhere < max || can_make_room {
            return Ok(());
        }
        Err(QuotaError::TooManySandboxes { max })
    }

    /// Refused if growing the user's disk use by what `change` says would
    /// pass the quota.
    pub async fn check_disk(
        &self,
        store: &Store,
        user_id: &str,
        change: DiskChange<'_>,
    ) -> Result<(), QuotaError> {
        let quota = self.limits.disk_bytes;
        if quota == 0 {
            return Ok(());
        }
        let usage = store.disk_usage(user_id, uploads_since()).await?;
        let (what, after) = match change {
            DiskChange::Workspace { name, bytes } => {
                let now = match store.workspace(user_id, name).await? {
                    Some(w) => w.disk_bytes,
                    None => 0,
                };
                let after = usage.total().saturating_sub(now) + now.max(bytes);
                (format!("workspace {name} at {}", human_bytes(bytes)), after)
            }
            DiskChange::Scratch { bytes } => (
                format!("a {} disk", human_bytes(bytes)),
                usage.total().saturating_add(bytes),
            ),
        };
        if after > quota {
            return Err(QuotaError::Disk(format!(
                "disk quota exceeded: {what} would bring your disk use to {} of {} \
                 (workspaces {}, uploads of the last 24 h {}, stored job output {}); \
                 delete a workspace or old jobs (`mags rm`), or ask for less",
                human_bytes(after),
                human_bytes(quota),
                human_bytes(usage.workspaces),
                human_bytes(usage.uploads),
                human_bytes(usage.job_output),
            )));
        }
        Ok(())
    }

    /// Bytes `user_id` may still upload (at most `cap`), and whether the
    /// quota (rather than `cap`) is what limits it.
    pub async fn upload_room(
        &self,
        store: &Store,
        user_id: &str,
        cap: u64,
    ) -> Result<(u64, bool), StoreError> {
        let quota = self.limits.disk_bytes;
        if quota == 0 {
            return Ok((cap, false));
        }
        let used = store.disk_usage(user_id, uploads_since()).await?.total();
        let room = quota.saturating_sub(used);
        Ok((room.min(cap), room < cap))
    }
}

/// What a request would add to a user's disk use.
#[derive(Debug, Clone, Copy)]
pub enum DiskChange<'a> {
    /// Workspace `name` grows to `bytes` (or is made that big).
    Workspace { name: &'a str, bytes: u64 },
    /// A disk of `bytes` that lives only as long as its job (counted on
    /// top of what the user holds).
    Scratch { bytes: u64 },
}

/// Bytes of the data dir's filesystem never promised to disks (a sandbox
/// does not start with less free, see the VM executor).
pub const HOST_DISK_RESERVE: u64 = mags_vm::disk::LOW_DISK_BYTES;

use mags_vm::disk::free_bytes;

/// Refused if the host's data dir (`dir`) cannot hold `bytes` more of disk
/// (`what`, for the message) on top of the nominal disks of every sandbox
/// that exists (running or sleeping) and [`HOST_DISK_RESERVE`]. Disks are
/// sparse, so this is conservative: what a live disk already wrote is
/// counted twice (in its size and as space no longer free).
pub async fn check_host_disk(
    store: &Store,
    dir: &std::path::Path,
    bytes: u64,
    what: &str,
) -> Result<(), QuotaError> {
    if bytes == 0 {
        return Ok(());
    }
    let Some(free) = free_bytes(dir) else {
        tracing::warn!(dir = %dir.display(), "cannot read the free space of the data dir");
        return Ok(());
    };
    let live = store.live_disks().await?;
    let room = free
        .saturating_sub(HOST_DISK_RESERVE)
        .saturating_sub(live.bytes);
    if bytes <= room {
        return Ok(());
    }
    Err(QuotaError::HostDisk(format!(
        "the host cannot hold {what}: its data dir has {} free, {} of it promised to the \
         disks of {} live sandboxes and {} kept free, so at most {} more; ask for less \
         or try again when sandboxes have ended",
        human_bytes(free),
        human_bytes(live.bytes),
        live.jobs,
        human_bytes(HOST_DISK_RESERVE),
        human_bytes(room),
    )))
}

fn uploads_since() -> i64 {
    mags_store::clock::now_ms() - UPLOAD_WINDOW.as_millis() as i64
}

/// `1.5 GiB`, `300 MiB`, `12 KiB`, `7 B` (powers of 1024, like `disk_gb`).
pub fn human_bytes(b: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    for (size, unit) in UNITS {
        if b >= size {
            let v = b as f64 / size as f64;
            return if v >= 10.0 || v.fract() == 0.0 {
                format!("{v:.0} {unit}")
            } else {
                format!("{v:.1} {unit}")
            };
        }
    }
    format!("{b} B")
}

/// One counting semaphore per user: `max` VMs each (0: unlimited).
pub struct UserSlots {
    max: u32,
    users: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// One of a user's VM slots, held while the VM runs; freed on drop.
pub struct UserSlot(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

impl UserSlots {
    pub fn new(max: u32) -> Self {
        UserSlots {
            max,
            users: Mutex::default(),
        }
    }

    /// The limit (0: none).
    pub fn max(&self) -> u32 {
        self.max
    }

    fn semaphore(&self, user_id: &str) -> Option<Arc<Semaphore>> {
        if self.max == 0 {
            return None;
        }
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        Some(
            users
                .entry(user_id.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.max as usize)))
                .clone(),
        )
    }

    /// A slot if one is free now.
    pub fn try_acquire(&self, user_id: &str) -> Option<UserSlot> {
        match self.semaphore(user_id) {
            None => Some(UserSlot(None)),
            Some(s) => s.try_acquire_owned().ok().map(|p| UserSlot(Some(p))),
        }
    }

    /// A slot, waiting for one (in order of asking).
    pub async fn acquire(&self, user_id: &str) -> UserSlot {
        match self.semaphore(user_id) {
            None => UserSlot(None),
            // The semaphore is never closed.
            Some(s) => UserSlot(s.acquire_owned().await.ok()),
        }
    }

    /// Slots of `user_id` held now.
    pub fn in_use(&self, user_id: &str) -> u32 {
        self.semaphore(user_id)
            .map_or(0, |s| self.max - s.available_permits() as u32)
    }
}

/// A token bucket per user.
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets are forgotten once full and untouched this long.
const BUCKET_IDLE: Duration = Duration::from_secs(600);

impl RateLimiter {
    /// `per_sec` requests per second sustained, `burst` at once (at least
    /// one); `per_sec` 0 turns it off.
    pub fn new(per_sec: f64, burst: u32) -> Self {
        RateLimiter {
            per_sec: per_sec.max(0.0),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::default(),
        }
    }

    /// Takes a token of `user_id`'s bucket; if there is none, how long
    /// until there is.
    pub fn take(&self, user_id: &str) -> Result<(), Duration> {
        if self.per_sec <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > 10_000 {
            buckets.retain(|_, b| now.duration_since(b.at) < BUCKET_IDLE);
        }
        let b = buckets.entry(user_id.to_string()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refill = now.duration_since(b.at).as_secs_f64() * self.per_sec;
        b.tokens = (b.tokens + refill).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.per_sec))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_refuses_with_a_wait() {
        let r = RateLimiter::new(2.0, 3);
        for _ in 0..3 {
            assert!(r.take("u").is_ok());
        }
        let wait = r.take("u").expect_err("empty");
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(500));
        assert!(r.take("other").is_ok(), "buckets are per user");
        assert!(RateLimiter::new(0.0, 0).take("u").is_ok(), "0 is off");
    }

    #[test]
    fn user_slots_count_per_user() {
        let s = UserSlots::new(2);
        let a = s.try_acquire("a");
        let b = s.try_acquire("a");
        assert!(a.is_some() && b.is_some());
        assert!(s.try_acquire("a").is_none());
        assert_eq!(s.in_use("a"), 2);
        assert!(s.try_acquire("b").is_some());
        drop(a);
        assert_eq!(s.in_use("a"), 1);
        assert!(s.try_acquire("a").is_some());
        let off = UserSlots::new(0);
        let held: Vec<_> = (0..100).filter_map(|_| off.try_acquire("a")).collect();
        assert_eq!((held.len(), off.in_use("a")), (100, 0));
    }

    #[test]
    fn bytes_read_well() {
        assert_eq!(human_bytes(100 << 20), "100 MiB");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
        assert_eq!(human_bytes(7), "7 B");
    }
}
