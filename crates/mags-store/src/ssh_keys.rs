//! SSH access keys of sandboxes, by fingerprint (see migration 0006): the
//! gateway turns a verified public key into the job and user it opens.

use crate::{clock, get, Store, StoreError};

/// Keys kept per job; older ones stop working when more are made.
pub const MAX_KEYS_PER_JOB: i64 = 16;

/// Whose sandbox a key opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshKeyOwner {
    pub job_id: String,
    pub user_id: String,
}

impl Store {
    /// Records a key (by its public key's fingerprint) for `user_id`'s job
    /// `job_id`, dropping the job's oldest beyond [`MAX_KEYS_PER_JOB`].
    pub async fn add_ssh_key(
        &self,
        fingerprint: &str,
        job_id: &str,
        user_id: &str,
    ) -> Result<(), StoreError> {
        // `created_at` orders a job's keys: made within one millisecond, a
        // key still gets a later stamp than the one before it, so the
        // trim below drops the oldest and never a newer one.
        sqlx::query(
            "INSERT INTO ssh_keys (fingerprint, job_id, user_id, created_at) \
             SELECT $1, $2, $3, CASE WHEN MAX(created_at) >= $4 THEN MAX(created_at) + 1 \
             ELSE $4 END FROM ssh_keys WHERE job_id = $5",
        )
        .bind(fingerprint)
        .bind(job_id)
        .bind(user_id)
        .bind(clock::now_ms())
        .bind(job_id)
        .execute(&self.pool)
        .await?;
        sqlx::query(
            "DELETE FROM ssh_keys WHERE job_id = $1 AND fingerprint NOT IN \
             (SELECT fingerprint FROM ssh_keys WHERE job_id = $2 \
              ORDER BY created_at DESC, fingerprint LIMIT $3)",
        )
        .bind(job_id)
        .bind(job_id)
        .bind(MAX_KEYS_PER_JOB)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The job a key opens, if it is known.
    pub async fn ssh_key_owner(
        &self,
        fingerprint: &str,
    ) -> Result<Option<SshKeyOwner>, StoreError> {
        let row = sqlx::query("SELECT job_id, user_id FROM ssh_keys WHERE fingerprint = $1")
            .bind(fingerprint)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(SshKeyOwner {
                job_id: get(&r, "job_id")?,
                user_id: get(&r, "user_id")?,
            })
        })
        .transpose()
    }

    /// Forgets the keys of jobs that have ended; returns how many.
    pub async fn delete_ended_ssh_keys(&self) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "DELETE FROM ssh_keys WHERE job_id IN \
             (SELECT id FROM jobs WHERE status IN ('completed', 'error'))",
        )
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }
}
