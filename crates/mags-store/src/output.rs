//! Raw output chunks of a job, in order (`seq` from 0, per job).
//!
//! Chunks are stored exactly as the guest produced them; turning them into
//! lines is the reader's business. One writer per job assigns `seq`, and a
//! batch of chunks is one transaction.

use crate::{get, Store, StoreError};
use mags_api::OutputStream;

/// A chunk to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewChunk {
    pub seq: i64,
    pub stream: OutputStream,
    pub data: Vec<u8>,
    /// Unix ms when the chunk was produced.
    pub ts: i64,
}

/// A stored chunk.
pub type OutputChunk = NewChunk;

impl Store {
    /// Stores chunks, all or none, and adds their size to the job's
    /// `output_bytes`. A [`Store::fenced`] handle stores nothing once the
    /// job is not its owner's ([`StoreError::Fenced`]).
    pub async fn append_output(&self, job_id: &str, chunks: &[NewChunk]) -> Result<(), StoreError> {
        if chunks.is_empty() {
            return Ok(());
        }
        let bytes: usize = chunks.iter().map(|c| c.data.len()).sum();
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "UPDATE jobs SET output_bytes = output_bytes + $1 WHERE id = $2{}",
            self.fence_sql(3)
        );
        let q = sqlx::query(&sql)
            .bind(i64::try_from(bytes).unwrap_or(i64::MAX))
            .bind(job_id);
        let r = self.bind_fence(q).execute(&mut *tx).await?;
        if r.rows_affected() == 0 && self.owner().is_some() {
            return Err(StoreError::Fenced(format!("the output of job {job_id}")));
        }
        for c in chunks {
            sqlx::query("INSERT INTO job_output (job_id, seq, stream, data, ts) VALUES ($1, $2, $3, $4, $5)")
                .bind(job_id)
                .bind(c.seq)
                .bind(c.stream.as_str())
                .bind(c.data.as_slice())
                .bind(c.ts)
                .execute(&mut *tx)
                .await
                .map_err(|e| crate::conflict_or(e, || format!("output chunk {} of job {job_id}", c.seq)))?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Up to `limit` chunks with `seq > after`, in order (`after = -1` for all).
    pub async fn output_after(
        &self,
        job_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<OutputChunk>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, stream, data, ts FROM job_output WHERE job_id = $1 AND seq > $2 \
             ORDER BY seq LIMIT $3",
        )
        .bind(job_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let stream: String = get(row, "stream")?;
                Ok(NewChunk {
                    seq: get(row, "seq")?,
                    stream: OutputStream::parse(&stream).ok_or_else(|| {
                        StoreError::Corrupt(format!("output stream {stream:?} of job {job_id}"))
                    })?,
                    data: get(row, "data")?,
                    ts: get(row, "ts")?,
                })
            })
            .collect()
    }

    /// The highest `seq` stored for a job, if any.
    pub async fn last_output_seq(&self, job_id: &str) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT MAX(seq) AS s FROM job_output WHERE job_id = $1")
            .bind(job_id)
            .fetch_one(&self.pool)
            .await?;
        get(&row, "s")
    }
}
