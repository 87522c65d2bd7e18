//! [`WsExecutor`]: the real executor with workspaces around it. Starting a
//! VM prepares its disk first (and places uploaded files before the
//! script); the [`Vm`] it returns saves the workspace when it syncs (guest
//! filesystem frozen meanwhile), sleeps and shuts down.

use super::{Inner, Lease, Workspaces};
use crate::executor::{
    DiskSource, ExecError, Executor, FileSource, JobSpec, RunSpec, Tunnel, Vm, VmProcess,
};
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;

/// The guest thaws by itself after this, should the host never say so.
const AUTO_THAW: Duration = Duration::from_secs(120);

/// Wraps `inner` so jobs get their workspaces (no-op when disabled).
pub fn wrap(inner: Arc<dyn Executor>, ws: &Workspaces) -> Arc<dyn Executor> {
    match &ws.inner {
        Some(i) => Arc::new(WsExecutor {
            inner,
            ws: i.clone(),
        }),
        None => inner,
    }
}

/// See the module docs.
pub struct WsExecutor {
    inner: Arc<dyn Executor>,
    ws: Arc<Inner>,
}

impl WsExecutor {
    async fn start_job(&self, spec: JobSpec) -> Result<Arc<dyn Vm>, ExecError> {
        let job = self
            .ws
            .store()
            .job(&spec.id)
            .await
            .map_err(|e| ExecError::Start(e.to_string()))?;
        let Some(job) = job else {
            return self.inner.start(&spec).await;
        };
        let lease = self
            .ws
            .prepare(&job)
            .await
            .map_err(|e| ExecError::Start(e.to_string()))?;
        let disk = lease.as_ref().map_or(DiskSource::Fresh, |l| l.disk.clone());
        let vm = match self.inner.start_with_disk(&spec, disk).await {
            Ok(vm) => vm,
            Err(e) => {
                if let Some(l) = &lease {
                    let _ = self.ws.finish(l).await;
                }
                return Err(e);
            }
        };
        let vm: Arc<dyn Vm> = match lease {
            Some(lease) => Arc::new(WsVm {
                inner: vm,
                lease,
                ws: self.ws.clone(),
            }),
            None => vm,
        };
        if !job.file_ids.is_empty() {
            if let Err(e) = super::place_files(&self.ws, vm.as_ref(), &job).await {
                let _ = vm.shutdown().await;
                return Err(ExecError::Start(format!(
                    "cannot place uploaded files: {e}"
                )));
            }
        }
        Ok(vm)
    }

    async fn wake_job(&self, vm_id: String) -> Result<Arc<dyn Vm>, ExecError> {
        let vm = self.inner.wake(&vm_id).await?;
        let job = self.ws.store().job(&vm_id).await.ok().flatten();
        let lease = match job {
            Some(job) => self.ws.relet(&job).await,
            None => None,
        };
        if let Some(lease) = &lease {
            self.ws.reopened(lease);
        }
        Ok(match lease {
            Some(lease) => Arc::new(WsVm {
                inner: vm,
                lease,
                ws: self.ws.clone(),
            }),
            None => vm,
        })
    }
}

impl Executor for WsExecutor {
    fn start(&self, job: &JobSpec) -> BoxFuture<'_, Result<Arc<dyn Vm>, ExecError>> {
        let spec = job.clone();
        Box::pin(self.start_job(spec))
    }

    fn start_with_disk(
        &self,
        job: &JobSpec,
        disk: DiskSource,
    ) -> BoxFuture<'_, Result<Arc<dyn Vm>, ExecError>> {
        self.inner.start_with_disk(job, disk)
    }

    fn wake(&self, vm_id: &str) -> BoxFuture<'_, Result<Arc<dyn Vm>, ExecError>> {
        Box::pin(self.wake_job(vm_id.to_string()))
    }

    fn has_snapshot(&self, vm_id: &str) -> bool {
        self.inner.has_snapshot(vm_id)
    }

    /// The slept VM is discarded (its job stopped): its disk was saved when
    /// it slept; the workspace is freed (a fork's overlay folded in).
    fn discard_snapshot(&self, vm_id: &str) {
        self.inner.discard_snapshot(vm_id);
        let ws = self.ws.clone();
        let vm_id = vm_id.to_string();
        tokio::spawn(async move {
            let Ok(Some(job)) = ws.store().job(&vm_id).await else {
                return;
            };
            if let Some(lease) = ws.relet(&job).await {
                if let Err(e) = ws.finish(&lease).await {
                    tracing::warn!(job = %vm_id, error = %e, "cannot finish the workspace of a stopped sandbox");
                }
            }
        });
    }

    fn accel(&self) -> Option<String> {
        self.inner.accel()
    }

    fn idle(&self) -> (usize, usize) {
        self.inner.idle()
    }
}

/// A VM whose disk belongs to a workspace (or is an overlay over a base).
struct WsVm {
    inner: Arc<dyn Vm>,
    lease: Arc<Lease>,
    ws: Arc<Inner>,
}

impl WsVm {
    /// Freezes the guest's disk, saves it, thaws it (also after a failure).
    async fn save_live(&self) -> Result<(), ExecError> {
        match self.inner.freeze(AUTO_THAW).await {
            Ok(()) => {}
            Err(ExecError::Unsupported(_)) => return self.inner.sync().await,
            Err(e) => return Err(ExecError::Lost(format!("cannot freeze the disk: {e}"))),
        }
        let saved = self.ws.save(&self.lease, true).await;
        let thawed = self.inner.thaw().await;
        saved.map_err(|e| ExecError::Lost(e.to_string()))?;
        thawed.map_err(|e| ExecError::Lost(format!("cannot thaw the disk: {e}")))
    }
}

impl Vm for WsVm {
    fn id(&self) -> &str {
        self.inner.id()
    }

    fn run(&self, spec: RunSpec) -> BoxFuture<'_, Result<Box<dyn VmProcess>, ExecError>> {
        self.inner.run(spec)
    }

    /// Flushes the guest, and stores a synced workspace's disk as a new
    /// version (`POST /mags-jobs/{id}/sync`, and before a stop).
    fn sync(&self) -> BoxFuture<'_, Result<(), ExecError>> {
        Box::pin(async move {
            self.inner.sync().await?;
            if self.lease.ws.as_ref().is_some_and(|w| w.sync) {
                self.save_live().await?;
            }
            Ok(())
        })
    }

    fn is_alive(&self) -> bool {
        self.inner.is_alive()
    }

    fn death(&self) -> Option<String> {
        self.inner.death()
    }

    fn disk_trouble(&self) -> BoxFuture<'_, Option<String>> {
        self.inner.disk_trouble()
    }

    fn open_tunnel(&self, port: u16) -> BoxFuture<'_, Result<Box<dyn Tunnel>, ExecError>> {
        self.inner.open_tunnel(port)
    }

    fn write_file<'a>(
        &'a self,
        path: &'a str,
        mode: u32,
        content: FileSource,
    ) -> BoxFuture<'a, Result<(), ExecError>> {
        self.inner.write_file(path, mode, content)
    }

    fn freeze(&self, auto_thaw: Duration) -> BoxFuture<'_, Result<(), ExecError>> {
        self.inner.freeze(auto_thaw)
    }

    fn thaw(&self) -> BoxFuture<'_, Result<(), ExecError>> {
        self.inner.thaw()
    }

    fn grow_disk(&self, bytes: u64) -> BoxFuture<'_, Result<(), ExecError>> {
        self.inner.grow_disk(bytes)
    }

    /// Sleeps the VM, then stores the (now quiet) disk.
    fn sleep(&self) -> BoxFuture<'_, Result<(), ExecError>> {
        Box::pin(async move {
            self.inner.sleep().await?;
            if let Err(e) = self.ws.save(&self.lease, false).await {
                tracing::error!(job = %self.lease.job_id, error = %e, "cannot store the workspace of a sleeping sandbox");
            }
            Ok(())
        })
    }

    /// Powers the VM off, then stores and frees the workspace.
    fn shutdown(&self) -> BoxFuture<'_, Result<(), ExecError>> {
        Box::pin(async move {
            let down = self.inner.shutdown().await;
            let finished = self.ws.finish(&self.lease).await;
            down?;
            finished.map_err(|e| ExecError::Lost(format!("the workspace was not saved: {e}")))
        })
    }
}
