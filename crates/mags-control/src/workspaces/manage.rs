//! Workspaces as the API shows them: list, delete, resize, and the
//! one-live-job claim of a new job.

use super::{ops, Workspaces, WsError};
use crate::sandboxes::Sandboxes;
use mags_api::{JobState, WorkspaceInfo};
use mags_store::clock::rfc3339;
use mags_store::{Job, NewJob};

impl Workspaces {
    /// Checks that base workspace `name` exists for `user_id`.
    pub async fn check_base(&self, user_id: &str, name: &str) -> Result<(), WsError> {
        let inner = self.inner()?;
        let known = inner.store().workspace(user_id, name).await?.is_some()
            || inner.ws_dir(user_id, name).join("disk.ext4").exists()
            || inner.head(user_id, name, true).await?.is_some();
        if known {
            Ok(())
        } else {
            Err(WsError::NoBase(name.to_string()))
        }
    }

    /// The user's workspaces, most recently used first.
    pub async fn list(
        &self,
        user_id: &str,
        page: mags_store::Page,
    ) -> Result<(Vec<WorkspaceInfo>, i64), WsError> {
        let inner = self.inner()?;
        let mut out = Vec::new();
        let (rows, total) = inner.store().workspaces(user_id, page).await?;
        for row in rows {
            let (versions, latest) = if row.persistent {
                // The database's record (an older release's is read once).
                let latest = inner
                    .head(user_id, &row.name, false)
                    .await?
                    .map(|m| m.version);
                let kept = inner.store().workspace_versions(user_id, &row.name).await?;
                (kept.len() as u32, latest)
            } else {
                (0, None)
            };
            let dir = inner.ws_dir(user_id, &row.name);
            out.push(WorkspaceInfo {
                workspace_id: row.name.clone(),
                persistent: row.persistent,
                size: row.disk_bytes,
                disk_gb: row.disk_bytes.div_ceil(1 << 30),
                last_used: rfc3339(row.last_used_at),
                created_at: rfc3339(row.created_at),
                versions,
                latest_version: latest,
                cached: dir.join("disk.ext4").exists() || dir.join("overlay.qcow2").exists(),
                live_job_id: row.live_job_id,
            });
        }
        Ok((out, total))
    }

    /// Deletes a workspace: its record, its cached disk and every stored
    /// version. Refused while a job is live on it.
    pub async fn delete(&self, user_id: &str, name: &str) -> Result<(), WsError> {
        let inner = self.inner()?;
        let key = format!("{user_id}/{name}");
        mags_workspace::manifest::check_key(&key)
            .map_err(|_| WsError::NotFound(name.to_string()))?;
        let in_use = |job: String| WsError::InUse {
            name: name.to_string(),
            job,
        };
        if let Some(job) = inner
            .store()
            .workspace(user_id, name)
            .await?
            .and_then(|r| r.live_job_id)
        {
            return Err(in_use(job));
        }
        // A job that just ended may still be saving the disk: wait for it.
        let _guard = tokio::time::timeout(
            std::time::Duration::from_secs(120),
            inner.lock_ws(user_id, name),
        )
        .await
        .map_err(|_| in_use("one that is still saving it".into()))?;
        let row = inner.store().workspace(user_id, name).await?;
        let stored = !mags_workspace::engine::is_empty(
            inner.engine.objects().store().as_ref(),
            &mags_workspace::manifest::ws_prefix(&key),
        )
        .await?;
        let dir = inner.ws_dir(user_id, name);
        if row.is_none() && !stored && !dir.exists() {
            return Err(WsError::NotFound(name.to_string()));
        }
        if let Some(job) = row.as_ref().and_then(|r| r.live_job_id.clone()) {
            return Err(WsError::InUse {
                name: name.to_string(),
                job,
            });
        }
        if row.is_some() && !inner.store().delete_workspace(user_id, name).await? {
            let job = inner
                .store()
                .workspace(user_id, name)
                .await?
                .and_then(|r| r.live_job_id)
                .unwrap_or_else(|| "another job".into());
            return Err(WsError::InUse {
                name: name.to_string(),
                job,
            });
        }
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| WsError::io(&dir, e))?;
        }
        // The record went first (its versions with it): what is left in
        // the object store is garbage, whatever happens from here on.
        if stored {
            inner.engine.delete(&key).await?;
            inner.collect_garbage(super::GC_GRACE).await?;
        }
        tracing::info!(workspace = %key, "workspace deleted");
        Ok(())
    }

    /// Grows workspace `name` to `disk_gb`: online if a sandbox runs on
    /// it (the guest sees the new size at once), else on its disk (stored
    /// again if it is synced). Shrinking is refused.
    pub async fn resize(
        &self,
        sandboxes: &Sandboxes,
        user_id: &str,
        name: &str,
        disk_gb: u32,
    ) -> Result<String, WsError> {
        let inner = self.inner()?;
        let row = inner
            .store()
            .workspace(user_id, name)
            .await?
            .ok_or_else(|| WsError::NotFound(name.to_string()))?;
        let want = u64::from(disk_gb) << 30;
        let gb = |b: u64| b.div_ceil(1 << 30);
        if want < row.disk_bytes {
            return Err(WsError::Invalid(format!(
                "workspace {name} is {} GB; shrinking a disk is not supported (asked for {disk_gb} GB)",
                gb(row.disk_bytes)
            )));
        }
        if want == row.disk_bytes {
            return Ok(format!("workspace {name} is already {disk_gb} GB"));
        }
        if let Some(job_id) = &row.live_job_id {
            let job = inner.store().job(job_id).await?;
            if job
                .as_ref()
                .is_some_and(|j| j.status.is_live() && j.persistent)
            {
                let conn = sandboxes
                    .connect(user_id, job_id)
                    .await
                    .map_err(|e| WsError::Disk(e.to_string()))?;
                conn.vm
                    .grow_disk(want)
                    .await
                    .map_err(|e| WsError::Disk(e.to_string()))?;
                inner
                    .store()
                    .touch_workspace(user_id, name, want, row.persistent)
                    .await?;
                return Ok(format!("workspace {name} grown to {disk_gb} GB (online)"));
            }
            if job
                .as_ref()
                .is_some_and(|j| !j.status.is_final() && j.status != JobState::Sleeping)
            {
                return Err(WsError::InUse {
                    name: name.to_string(),
                    job: job_id.clone(),
                });
            }
        }
        // Offline: grow the cached disk (restored first if needed); the
        // guest grows its filesystem when it next mounts it.
        let job = maintenance_job(user_id, name, row.persistent, disk_gb);
        let lease = inner.prepare_maintenance(&job, name).await?;
        inner.finish(&lease).await?;
        let disk = inner.ws_dir(user_id, name).join("disk.ext4");
        let bytes = ops::image_bytes(&disk).unwrap_or(want);
        Ok(format!("workspace {name} grown to {} GB", gb(bytes)))
    }
}

/// A job record that never runs, for preparing a workspace's disk outside
/// a job (an offline resize).
pub(super) fn maintenance_job(user_id: &str, name: &str, persistent: bool, disk_gb: u32) -> Job {
    let mut job = Job::accepted(NewJob {
        id: format!("maintenance-{}", uuid::Uuid::new_v4()),
        user_id: user_id.to_string(),
        name: Some(name.to_string()),
        workspace_id: Some(name.to_string()),
        persistent,
        disk_gb,
        ..NewJob::default()
    });
    job.status = JobState::Running;
    job
}
