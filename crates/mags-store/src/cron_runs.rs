//! The due runs of cron jobs: the one transaction that starts (or skips)
//! each due time once, and the run history it leaves.
//!
//! A due time is decided in a single transaction: `cron_jobs.next_run_at`
//! moves off it with a compare-and-set, its `cron_runs` row is inserted
//! (primary key `(cron_id, due_at)`), and for a started run the job row
//! and the cron's run record are written too. So of several hosts (or a
//! host and its restarted self) exactly one decides each due time, a host
//! that dies half-way leaves the run due for the next tick of any host, and
//! a repeat for a due time that already ran (a retry, or a schedule set
//! back onto it) inserts nothing. The times in it are the database's clock
//! ([`Store::db_now_ms`]), never a host's.

use crate::{get, Job, NewJob, Page, Store, StoreError};
use sqlx::any::AnyRow;
use sqlx::AnyConnection;

/// One due run of a cron job as a host decided it: which run, and when the
/// one after it is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueRun<'a> {
    pub cron_id: &'a str,
    /// The `next_run_at` that was read: when the run was due, and (with
    /// `cron_id`) which run it is.
    pub due_at: i64,
    /// When the next run is due, computed from the database's clock;
    /// `None` if the schedule never fires again.
    pub next: Option<i64>,
    /// The database's clock when the run was decided.
    pub now: i64,
    /// The name of the host that decided it, if it has one.
    pub host: Option<&'a str>,
}

/// A due run as recorded: started (`job_id`) or skipped (`skip_reason`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronRun {
    pub cron_id: String,
    pub due_at: i64,
    /// The run's job (it may since have been deleted by the retention).
    pub job_id: Option<String>,
    /// Why the run was not started, if it was skipped.
    pub skip_reason: Option<String>,
    pub host: Option<String>,
    /// The database's clock when it was decided (unix ms).
    pub created_at: i64,
}

fn from_row(row: &AnyRow) -> Result<CronRun, StoreError> {
    Ok(CronRun {
        cron_id: get(row, "cron_id")?,
        due_at: get(row, "due_at")?,
        job_id: get(row, "job_id")?,
        skip_reason: get(row, "skip_reason")?,
        host: get(row, "host")?,
        created_at: get(row, "created_at")?,
    })
}

impl Store {
    /// Starts the due run `run` with `job`, in one transaction: moves
    /// `next_run_at` from `run.due_at` to `run.next`, records the run and
    /// stores `job` (`accepted`, as [`Store::insert_job`]). The stored job,
    /// or `None` if this due time was already decided (by another host, or
    /// an earlier attempt): then nothing is stored. On an error nothing is
    /// stored either and the run stays due.
    pub async fn start_cron_run(
        &self,
        run: &DueRun<'_>,
        job: &NewJob,
    ) -> Result<Option<Job>, StoreError> {
        let mut tx = self.pool.begin().await?;
        if !advance(&mut tx, run).await? {
            return Ok(None); // dropped: rolled back
        }
        if !insert_run(&mut tx, run, Some(&job.id), None).await? {
            // This due time ran before: only move on from it.
            tx.commit().await?;
            return Ok(None);
        }
        let stored = self.insert_job_in(&mut *tx, job).await?;
        sqlx::query(
            "UPDATE cron_jobs SET last_run_at = $1, last_job_id = $2, last_skip = NULL, \
             run_count = run_count + 1 WHERE id = $3",
        )
        .bind(run.now)
        .bind(&job.id)
        .bind(run.cron_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(stored))
    }

    /// Skips the due run `run` for `why`, in one transaction: moves
    /// `next_run_at` on as [`Store::start_cron_run`] does and records the
    /// skip (`last_skip`, `skip_count`). Whether this call skipped it
    /// (false: the due time was already decided, nothing recorded).
    pub async fn skip_cron_run(&self, run: &DueRun<'_>, why: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        if !advance(&mut tx, run).await? {
            return Ok(false);
        }
        let recorded = insert_run(&mut tx, run, None, Some(why)).await?;
        if recorded {
            sqlx::query(
                "UPDATE cron_jobs SET last_skip = $1, skip_count = skip_count + 1 WHERE id = $2",
            )
            .bind(why)
            .bind(run.cron_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(recorded)
    }

    /// A page of a cron job's runs, newest due time first, and how many it
    /// has. By id alone: the caller has checked whose cron job it is.
    pub async fn cron_runs(
        &self,
        cron_id: &str,
        page: Page,
    ) -> Result<(Vec<CronRun>, i64), StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT cron_id, due_at, job_id, skip_reason, host, created_at FROM cron_runs \
             WHERE cron_id = $1 ORDER BY due_at DESC{}",
            page.sql()
        ))
        .bind(cron_id)
        .fetch_all(&self.pool)
        .await?;
        let total = self
            .count(
                "SELECT COUNT(*) AS n FROM cron_runs WHERE cron_id = $1",
                cron_id,
            )
            .await?;
        Ok((rows.iter().map(from_row).collect::<Result<_, _>>()?, total))
    }
}

/// The compare-and-set: moves `next_run_at` from `run.due_at` to
/// `run.next`. Whether it moved (false: another caller decided this due
/// time, or the cron job was disabled, changed or deleted since it was
/// read). It is the transaction's first statement, so on Postgres a
/// concurrent caller waits on the row lock and then sees the new value,
/// and on SQLite it takes the write lock before reading anything.
async fn advance(db: &mut AnyConnection, run: &DueRun<'_>) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE cron_jobs SET next_run_at = $1 WHERE id = $2 AND enabled = 1 AND next_run_at = $3",
    )
    .bind(run.next)
    .bind(run.cron_id)
    .bind(run.due_at)
    .execute(db)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Records the run; false if its due time has a record already.
async fn insert_run(
    db: &mut AnyConnection,
    run: &DueRun<'_>,
    job_id: Option<&str>,
    skip_reason: Option<&str>,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "INSERT INTO cron_runs (cron_id, due_at, job_id, skip_reason, host, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (cron_id, due_at) DO NOTHING",
    )
    .bind(run.cron_id)
    .bind(run.due_at)
    .bind(job_id)
    .bind(skip_reason)
    .bind(run.host)
    .bind(run.now)
    .execute(db)
    .await?
    .rows_affected();
    Ok(n == 1)
}
