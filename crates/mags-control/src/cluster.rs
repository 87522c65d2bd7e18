//! This host as one of several sharing a database: its lease, the jobs it
//! claims, and (while it leads) what becomes of hosts that were lost.
//!
//! A host registers at start ([`join`]: a new epoch) and runs [`start`]'s
//! three loops:
//! - **lease**: renews its lease every [`ClusterConfig::renew_every`] on
//!   the database's clock. While it cannot, it claims no new work, and
//!   once its lease may have run out it counts itself as lost. A renewal
//!   the database refuses means it was fenced (declared lost, or the same
//!   name started again elsewhere): [`Cluster::fenced`] fires and the
//!   server exits, its VMs with it, for its supervisor to start it again
//!   under a new epoch. Its late writes change nothing meanwhile (the
//!   store fences them).
//! - **claims**: takes waiting jobs nobody runs, up to its free slots
//!   (`FOR UPDATE SKIP LOCKED` on Postgres), and the `no_sleep`
//!   sandboxes of lost hosts, which come back by themselves; other
//!   sandboxes of lost hosts come back on their next request
//!   ([`crate::sandboxes`]).
//! - **leader**: one host at a time leads (a lease of its own in the
//!   database). The leader declares a host lost only once that host's
//!   lease has been expired for [`ClusterConfig::lost_after`], and only
//!   if it has itself reached the database without a failure for that
//!   long: when the database was away, every lease ran out together,
//!   and nobody is declared lost for it. The leader also collects the
//!   workspaces' garbage every [`GC_EVERY`] (from the database's list of
//!   live versions; one host is enough).
//!
//! One host with SQLite is a cluster of one: it registers and leads too,
//! so the same code runs everywhere.

use crate::Control;
use mags_store::{Claim, Host, HostInfo, HostState, Owner, Store, StoreError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How often the leader collects the workspaces' unreferenced objects.
pub const GC_EVERY: Duration = Duration::from_secs(3600);

/// How this host takes part.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub host: HostInfo,
    /// How long a renewal holds.
    pub lease: Duration,
    /// How often the lease is renewed (and the leader's duties run).
    pub renew_every: Duration,
    /// How long past its lease a host must stay silent to be declared lost.
    pub lost_after: Duration,
    /// How often waiting jobs are looked for (a job submitted here starts
    /// here at once when a slot is free, without waiting for this).
    pub claim_every: Duration,
}

impl ClusterConfig {
    /// The defaults for `host`: a 10 s lease renewed every 2 s, lost 10 s
    /// after the lease ran out, claims every 500 ms.
    pub fn new(host: HostInfo) -> Self {
        ClusterConfig {
            host,
            lease: Duration::from_secs(10),
            renew_every: Duration::from_secs(2),
            lost_after: Duration::from_secs(10),
            claim_every: Duration::from_millis(500),
        }
    }
}

/// Registers this host (a new epoch) with a first lease.
pub async fn join(store: &Store, cfg: &ClusterConfig) -> Result<Host, StoreError> {
    let host = store.register_host(&cfg.host, cfg.lease).await?;
    tracing::info!(host = %host.info.name, epoch = host.epoch, state = host.state.as_str(), "joined the cluster");
    Ok(host)
}

/// The running loops' state.
#[derive(Clone)]
pub struct Cluster {
    owner: Owner,
    /// Whether this host takes new work now (its lease holds, it is up).
    taking: Arc<AtomicBool>,
    fenced: watch::Receiver<bool>,
}

impl Cluster {
    /// This host under its epoch.
    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// Whether this host takes new work now.
    pub fn is_taking_work(&self) -> bool {
        self.taking.load(Ordering::SeqCst)
    }

    /// Becomes `true` once the database refused this host's lease: it was
    /// declared lost or its name started again elsewhere; it must stop.
    pub fn fenced(&self) -> watch::Receiver<bool> {
        self.fenced.clone()
    }
}

/// Starts the lease, claim and leader loops for `control` (whose store is
/// fenced as `host`), until shutdown.
pub fn start(control: Control, host: &Host, cfg: ClusterConfig) -> Cluster {
    let owner = host.owner();
    let taking = Arc::new(AtomicBool::new(host.state == HostState::Up));
    let (fenced_tx, fenced) = watch::channel(false);
    let cluster = Cluster {
        owner: owner.clone(),
        taking: taking.clone(),
        fenced,
    };
    let cfg = Arc::new(cfg);
    tokio::spawn(lease_loop(
        control.store.clone(),
        owner.clone(),
        cfg.clone(),
        taking.clone(),
        fenced_tx,
        control.shutdown.clone(),
    ));
    tokio::spawn(claim_loop(
        control.clone(),
        owner.clone(),
        cfg.clone(),
        taking,
    ));
    tokio::spawn(leader_loop(control, owner, cfg));
    cluster
}

async fn lease_loop(
    store: Store,
    owner: Owner,
    cfg: Arc<ClusterConfig>,
    taking: Arc<AtomicBool>,
    fenced: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    // When the last renewal the database took was asked for: the lease
    // holds until then + lease, whatever this host's clock says of the
    // database's.
    let mut renewed = Instant::now();
    let mut warned = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(cfg.renew_every) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let asked = Instant::now();
        // Bounded: a database going away may take long to fail a call,
        // and this host must stop taking work before its lease runs out.
        let renewal =
            match tokio::time::timeout(cfg.lease / 2, store.renew_lease(&owner, cfg.lease)).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err("the database did not answer in time".to_string()),
            };
        match renewal {
            Ok(Some(lease)) => {
                renewed = asked;
                if warned {
                    tracing::info!("the lease is renewed again; taking work");
                    warned = false;
                }
                taking.store(lease.state == HostState::Up, Ordering::SeqCst);
            }
            Ok(None) => {
                taking.store(false, Ordering::SeqCst);
                tracing::error!(
                    host = %owner.host,
                    epoch = owner.epoch,
                    "this host was fenced: it was declared lost, or its name was started \
                     again elsewhere; its work belongs to other hosts now"
                );
                let _ = fenced.send(true);
                return;
            }
            Err(e) => {
                // Stop taking work well before the lease can run out.
                let left = cfg.lease.saturating_sub(renewed.elapsed());
                if left < cfg.lease / 2 {
                    taking.store(false, Ordering::SeqCst);
                }
                if !warned {
                    tracing::warn!(error = %e, left_ms = left.as_millis() as u64, "cannot renew this host's lease; taking no new work");
                    warned = true;
                }
            }
        }
    }
}

async fn claim_loop(
    control: Control,
    owner: Owner,
    cfg: Arc<ClusterConfig>,
    taking: Arc<AtomicBool>,
) {
    let mut shutdown = control.shutdown.clone();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(cfg.claim_every) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        if !taking.load(Ordering::SeqCst) {
            continue;
        }
        if let Err(e) = claim_once(&control, &owner).await {
            tracing::warn!(error = %e, "cannot claim waiting jobs");
        }
    }
}

/// Takes what this host can run now: waiting jobs up to its free slots,
/// then lost hosts' `no_sleep` sandboxes up to its free sandbox places.
pub async fn claim_once(control: &Control, owner: &Owner) -> Result<usize, StoreError> {
    let store = &control.store;
    let free = i64::from(control.scheduler.free());
    let jobs = store.claim_jobs(owner, &Claim::Queue(free)).await?;
    let n = jobs.len();
    for job in jobs {
        tracing::info!(job = %job.id, "claimed a waiting job");
        if control.scheduler.waits_for_workspace(&job).await? {
            control.takeovers.resume(vec![job]).await?;
        } else {
            control.scheduler.submit(job);
        }
    }
    let (running, _, max) = control.sandboxes.counts();
    let room = i64::from(max.saturating_sub(running));
    let back = store.claim_jobs(owner, &Claim::AlwaysOn(room)).await?;
    let m = back.len();
    for job in back {
        tracing::info!(job = %job.id, "claimed a no_sleep sandbox of a lost host");
        control.sandboxes.come_back(job).await;
    }
    Ok(n + m)
}

async fn leader_loop(control: Control, owner: Owner, cfg: Arc<ClusterConfig>) {
    let store = control.store.clone();
    let mut shutdown = control.shutdown.clone();
    // Since when this host has reached the database without a failure.
    let mut healthy_since = Instant::now();
    // Since when it leads (by its own clock), if it does.
    let mut leading: Option<Instant> = None;
    let mut last_gc = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(cfg.renew_every) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let asked = Instant::now();
        let answer = store.try_lead(&owner, cfg.lease).await;
        // A call that hung (a database going away takes a while to fail)
        // counts as a failure: only an unbroken run of prompt answers
        // makes the leader sure that others' leases really ran out.
        if asked.elapsed() > cfg.renew_every {
            healthy_since = Instant::now();
        }
        match answer {
            Ok(Some(_)) => {
                if leading.is_none() {
                    tracing::info!(host = %owner.host, "this host leads the cluster");
                    leading = Some(Instant::now());
                }
            }
            Ok(None) => {
                if leading.take().is_some() {
                    tracing::info!("this host no longer leads the cluster");
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach the database to lead");
                healthy_since = Instant::now();
                continue;
            }
        }
        let sure = |since: Instant| since.elapsed() >= cfg.lost_after;
        if !(sure(healthy_since) && leading.is_some_and(sure)) {
            continue;
        }
        match declare_lost_hosts(&control, &owner, cfg.lost_after).await {
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand on lost hosts' work");
                healthy_since = Instant::now();
            }
        }
        if control.workspaces.is_enabled() && last_gc.elapsed() >= GC_EVERY {
            last_gc = Instant::now();
            match control
                .workspaces
                .collect_garbage(crate::workspaces::GC_GRACE)
                .await
            {
                Ok(report) => tracing::info!(?report, "collected the workspaces' garbage"),
                Err(e) => tracing::warn!(error = %e, "workspace garbage collection failed"),
            }
        }
    }
}

/// The leader's duty: every host (but this one) whose lease has been
/// expired for `lost_after` is declared lost and its work handed on.
/// Returns the hosts declared.
pub async fn declare_lost_hosts(
    control: &Control,
    me: &Owner,
    lost_after: Duration,
) -> Result<Vec<String>, StoreError> {
    let mut declared = Vec::new();
    for host in control.store.expired_hosts(lost_after).await? {
        if host.info.name == me.host {
            continue;
        }
        let reason = format!(
            "host {} was lost (no lease renewal for over {} s)",
            host.info.name,
            lost_after.as_secs()
        );
        let Some(work) = control.store.declare_lost(&host, &reason).await? else {
            continue;
        };
        tracing::warn!(
            host = %host.info.name,
            epoch = host.epoch,
            failed = work.failed.len(),
            requeued = work.requeued.len(),
            sandboxes = work.orphaned.len(),
            "declared a host lost: its running jobs failed, its waiting ones are queued again, \
             its sandboxes start again elsewhere"
        );
        for id in work.failed.iter().chain(&work.orphaned) {
            control.followers.notify(id);
        }
        declared.push(host.info.name.clone());
    }
    Ok(declared)
}
