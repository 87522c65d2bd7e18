//! What a user holds, for the server's per-user limits: jobs waiting for a
//! VM, and the disk bytes of their workspaces and recent uploads.

use crate::{get, Store, StoreError};

/// A user's disk use, bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// Sum of the nominal sizes of the user's workspace disks.
    pub workspaces: u64,
    /// Sum of the sizes of the user's uploads made since the given time.
    pub uploads: u64,
    /// Stored output of the user's jobs (until a job is deleted or its
    /// output pruned).
    pub job_output: u64,
}

impl DiskUsage {
    /// All of it together.
    pub fn total(&self) -> u64 {
        self.workspaces
            .saturating_add(self.uploads)
            .saturating_add(self.job_output)
    }
}

impl Store {
    /// How many of the user's jobs wait for a VM (`accepted` or `queued`).
    pub async fn pending_jobs(&self, user_id: &str) -> Result<u64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM jobs WHERE user_id = $1 \
             AND status IN ('accepted', 'queued')",
        )
        .bind(user_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(get::<i64>(&row, "n")?.max(0) as u64)
    }

    /// How many VMs of `user_id` other hosts than this handle's owner run
    /// now (0 for an unfenced handle: one host knows its own).
    pub async fn vms_elsewhere(&self, user_id: &str) -> Result<u32, StoreError> {
        let Some(me) = self.owner() else {
            return Ok(0);
        };
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM jobs WHERE user_id = $1 AND status = 'running' \
             AND host IS NOT NULL AND host <> $2",
        )
        .bind(user_id)
        .bind(&me.host)
        .fetch_one(&self.pool)
        .await?;
        Ok(u32::try_from(get::<i64>(&row, "n")?.max(0)).unwrap_or(u32::MAX))
    }

    /// The user's workspace disks, the uploads they made at or after
    /// `uploads_since_ms` (unix ms), and their jobs' stored output.
    pub async fn disk_usage(
        &self,
        user_id: &str,
        uploads_since_ms: i64,
    ) -> Result<DiskUsage, StoreError> {
        let row = sqlx::query(
            "SELECT \
             CAST(COALESCE((SELECT SUM(disk_bytes) FROM workspaces WHERE user_id = $1), 0) \
                 AS BIGINT) AS ws, \
             CAST(COALESCE((SELECT SUM(size) FROM uploads WHERE user_id = $2 \
                 AND created_at >= $3), 0) AS BIGINT) AS up, \
             CAST(COALESCE((SELECT SUM(output_bytes) FROM jobs WHERE user_id = $4), 0) \
                 AS BIGINT) AS out",
        )
        .bind(user_id)
        .bind(user_id)
        .bind(uploads_since_ms)
        .bind(user_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(DiskUsage {
            workspaces: get::<i64>(&row, "ws")?.max(0) as u64,
            uploads: get::<i64>(&row, "up")?.max(0) as u64,
            job_output: get::<i64>(&row, "out")?.max(0) as u64,
        })
    }
}
