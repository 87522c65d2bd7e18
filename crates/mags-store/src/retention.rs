//! Deleting ended jobs, and bounding what their stored output takes.
//!
//! Only ended jobs (`completed`/`error`, which never change again) are
//! deleted or pruned; a live job's rows are never touched here. Deleting a
//! job removes its output, URL routes (cascade) and SSH keys in one
//! transaction. Pruning deletes an ended job's output but keeps the job,
//! marked with `output_pruned_at`.

use crate::jobs::FINAL;
use crate::{clock, get, Store, StoreError};
use mags_api::JobState;

/// What [`Store::delete_ended_job`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobDeletion {
    /// Deleted, with this many bytes of output.
    Deleted { output_bytes: u64 },
    /// Not deleted: the job is still live, in this state.
    Live(JobState),
    /// No such job of this user.
    NotFound,
}

/// What the server promised to the disks of the sandboxes that exist
/// (jobs `running` or `sleeping`; a waiting job has no disk yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveDisks {
    /// Running or sleeping jobs.
    pub jobs: u64,
    /// The sum of their `disk_gb`, in bytes.
    pub bytes: u64,
}

/// Ended jobs handled per statement batch.
const BATCH: i64 = 200;

impl Store {
    /// Deletes `user_id`'s job `id` with its output, if it ended.
    pub async fn delete_ended_job(
        &self,
        user_id: &str,
        id: &str,
    ) -> Result<JobDeletion, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row =
            sqlx::query("SELECT status, output_bytes FROM jobs WHERE id = $1 AND user_id = $2")
                .bind(id)
                .bind(user_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(row) = row else {
            return Ok(JobDeletion::NotFound);
        };
        let status: String = get(&row, "status")?;
        let status = JobState::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("job {id}: status {status}")))?;
        if !status.is_final() {
            return Ok(JobDeletion::Live(status));
        }
        let output_bytes = get::<i64>(&row, "output_bytes")?.max(0) as u64;
        delete_job_rows(&mut tx, id).await?;
        tx.commit().await?;
        Ok(JobDeletion::Deleted { output_bytes })
    }

    /// Deletes ended jobs (of every user) that ended before `before_ms`,
    /// oldest first, at most `limit`; returns how many went and their
    /// output bytes.
    pub async fn delete_jobs_ended_before(
        &self,
        before_ms: i64,
        limit: u64,
    ) -> Result<(u64, u64), StoreError> {
        let (mut jobs, mut bytes) = (0u64, 0u64);
        while jobs < limit {
            let take = BATCH.min(i64::try_from(limit - jobs).unwrap_or(BATCH));
            let sql = format!(
                "SELECT id, output_bytes FROM jobs WHERE {FINAL} \
                 AND COALESCE(finished_at, created_at) < $1 \
                 ORDER BY COALESCE(finished_at, created_at), id LIMIT $2"
            );
            let rows = sqlx::query(&sql)
                .bind(before_ms)
                .bind(take)
                .fetch_all(&self.pool)
                .await?;
            if rows.is_empty() {
                break;
            }
            let mut tx = self.pool.begin().await?;
            for row in &rows {
                let id: String = get(row, "id")?;
                if delete_job_rows(&mut tx, &id).await? {
                    jobs += 1;
                    bytes += get::<i64>(row, "output_bytes")?.max(0) as u64;
                }
            }
            tx.commit().await?;
            if (rows.len() as i64) < take {
                break;
            }
        }
        Ok((jobs, bytes))
    }

    /// Bytes of output stored for all jobs.
    pub async fn output_total(&self) -> Result<u64, StoreError> {
        let row =
            sqlx::query("SELECT CAST(COALESCE(SUM(output_bytes), 0) AS BIGINT) AS n FROM jobs")
                .fetch_one(&self.pool)
                .await?;
        Ok(get::<i64>(&row, "n")?.max(0) as u64)
    }

    /// Deletes the output of the oldest ended jobs (keeping the jobs,
    /// marked pruned) until at least `bytes` are freed or none is left;
    /// returns how many jobs were pruned and the bytes freed.
    pub async fn prune_oldest_output(&self, bytes: u64) -> Result<(u64, u64), StoreError> {
        let (mut jobs, mut freed) = (0u64, 0u64);
        while freed < bytes {
            let sql = format!(
                "SELECT id, output_bytes FROM jobs WHERE {FINAL} AND output_bytes > 0 \
                 ORDER BY COALESCE(finished_at, created_at), id LIMIT $1"
            );
            let rows = sqlx::query(&sql).bind(BATCH).fetch_all(&self.pool).await?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                if freed >= bytes {
                    break;
                }
                let id: String = get(row, "id")?;
                let mut tx = self.pool.begin().await?;
                sqlx::query("DELETE FROM job_output WHERE job_id = $1")
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
                let sql = format!(
                    "UPDATE jobs SET output_bytes = 0, output_pruned_at = $1 \
                     WHERE id = $2 AND {FINAL}"
                );
                let changed = sqlx::query(&sql)
                    .bind(clock::now_ms())
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                if changed > 0 {
                    jobs += 1;
                    freed += get::<i64>(row, "output_bytes")?.max(0) as u64;
                }
            }
        }
        Ok((jobs, freed))
    }

    /// The sandboxes of every user that exist (running or sleeping) and
    /// the disk sizes their jobs asked for.
    pub async fn live_disks(&self) -> Result<LiveDisks, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(disk_gb), 0) AS BIGINT) AS gb \
             FROM jobs WHERE status IN ('running', 'sleeping')",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(LiveDisks {
            jobs: get::<i64>(&row, "n")?.max(0) as u64,
            bytes: (get::<i64>(&row, "gb")?.max(0) as u64).saturating_mul(1 << 30),
        })
    }
}

/// Deletes an ended job's rows; returns whether the job row went.
async fn delete_job_rows(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: &str,
) -> Result<bool, StoreError> {
    for sql in [
        "DELETE FROM ssh_keys WHERE job_id = $1",
        "DELETE FROM job_output WHERE job_id = $1",
        "DELETE FROM job_access WHERE job_id = $1",
    ] {
        sqlx::query(sql).bind(id).execute(&mut **tx).await?;
    }
    let sql = format!("DELETE FROM jobs WHERE id = $1 AND {FINAL}");
    let r = sqlx::query(&sql).bind(id).execute(&mut **tx).await?;
    Ok(r.rows_affected() > 0)
}
