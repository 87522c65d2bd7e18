//! Job records and their state changes.
//!
//! A job moves `accepted` -> (`queued`) -> `running` -> `completed`/`error`;
//! a persistent one may go `running` <-> `sleeping` in between (see
//! [`crate::sandboxes`]). Every update that moves a job forward is guarded
//! so a final job never changes again (a late writer loses rather than
//! resurrecting it).
//!
//! VM time is `vm_ms` (periods that ended) plus, while a VM runs, the time
//! since `vm_since`.

use crate::{clock, get, Store, StoreError};
use mags_api::JobState;
use sqlx::any::AnyRow;
use std::collections::BTreeMap;

/// What a new job is made of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewJob {
    pub id: String,
    pub user_id: String,
    pub name: Option<String>,
    pub workspace_id: Option<String>,
    pub base_workspace_id: Option<String>,
    pub persistent: bool,
    pub no_sleep: bool,
    pub no_sync: bool,
    pub startup_command: Option<String>,
    pub script: String,
    pub environment: BTreeMap<String, String>,
    pub file_ids: Vec<String>,
    pub disk_gb: u32,
    pub rootfs_type: Option<String>,
    /// Idle seconds before a persistent sandbox sleeps (server default if None).
    pub idle_timeout_secs: Option<u64>,
    /// The sandbox may reach nothing outside itself.
    pub no_internet: bool,
    /// If not empty, the only destinations (CIDRs or hostnames) it may reach.
    pub egress_allow: Vec<String>,
    /// Destinations it may not reach, on top of the server's denials.
    pub egress_deny: Vec<String>,
    /// Kill the script after this many seconds (None: no limit).
    pub timeout_secs: Option<u64>,
    /// Unix ms; use [`clock::monotonic_ms`] so listings keep creation order.
    pub created_at: i64,
}

/// A stored job: what it was made of ([`NewJob`], never changed after
/// insert; its fields read through `job.field`) and how it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub spec: NewJob,
    pub status: JobState,
    pub vm_id: Option<String>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub script_duration_ms: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// VM time of periods that ended, ms.
    pub vm_ms: i64,
    /// Start of the current VM period (unix ms), while a VM runs.
    pub vm_since: Option<i64>,
    /// Bytes of stored output (counted in the user's disk quota).
    pub output_bytes: u64,
    /// When the retention deleted this ended job's output (unix ms).
    pub output_pruned_at: Option<i64>,
    /// The host that runs it (None: nobody yet, or its host was lost).
    pub host: Option<String>,
    /// That host's epoch when it took the job.
    pub host_epoch: Option<i64>,
}

/// A job's spec fields read as the job's own (`job.script`).
impl std::ops::Deref for Job {
    type Target = NewJob;

    fn deref(&self) -> &NewJob {
        &self.spec
    }
}

impl Job {
    /// The job `spec` as stored at first: `accepted`, never run.
    pub fn accepted(spec: NewJob) -> Job {
        Job {
            spec,
            status: JobState::Accepted,
            vm_id: None,
            exit_code: None,
            error: None,
            script_duration_ms: None,
            started_at: None,
            finished_at: None,
            vm_ms: 0,
            vm_since: None,
            output_bytes: 0,
            output_pruned_at: None,
            host: None,
            host_epoch: None,
        }
    }

    /// VM time up to `now_ms`, in ms.
    pub fn vm_ms_at(&self, now_ms: i64) -> i64 {
        self.vm_ms + self.vm_since.map_or(0, |s| (now_ms - s).max(0))
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finish {
    /// `Completed` or `Error`.
    pub status: JobState,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub script_duration_ms: Option<i64>,
}

/// The columns of a job's spec ([`NewJob`]), in its binds' order.
macro_rules! spec_columns {
    () => {
        "id, user_id, name, workspace_id, base_workspace_id, persistent, no_sleep, no_sync, \
         startup_command, script, environment, file_ids, disk_gb, rootfs_type, \
         idle_timeout_secs, no_internet, egress_allow, egress_deny, timeout_secs, created_at, \
         status"
    };
}
/// The columns of its run state (`status` is written with the spec).
macro_rules! run_columns {
    () => {
        "vm_id, exit_code, error, script_duration_ms, started_at, finished_at, vm_ms, \
         vm_since, output_bytes, output_pruned_at, host, host_epoch"
    };
}
const SPEC_COLUMNS: &str = spec_columns!();
/// Every column of a job.
pub(crate) const JOB_COLUMNS: &str = concat!(spec_columns!(), ", ", run_columns!());

/// States in which a job may still move (the guard of forward updates).
pub(crate) const NOT_FINAL: &str = "status NOT IN ('completed', 'error')";
/// Jobs that ended (and never change again).
pub(crate) const FINAL: &str = "status IN ('completed', 'error')";

impl Job {
    pub(crate) fn from_row(row: &AnyRow) -> Result<Job, StoreError> {
        let status: String = get(row, "status")?;
        let environment: String = get(row, "environment")?;
        let file_ids: String = get(row, "file_ids")?;
        let egress_allow: String = get(row, "egress_allow")?;
        let egress_deny: String = get(row, "egress_deny")?;
        let id: String = get(row, "id")?;
        let corrupt = |what: &str| StoreError::Corrupt(format!("job {id}: {what}"));
        let spec = NewJob {
            user_id: get(row, "user_id")?,
            name: get(row, "name")?,
            workspace_id: get(row, "workspace_id")?,
            base_workspace_id: get(row, "base_workspace_id")?,
            persistent: get::<i64>(row, "persistent")? != 0,
            no_sleep: get::<i64>(row, "no_sleep")? != 0,
            no_sync: get::<i64>(row, "no_sync")? != 0,
            startup_command: get(row, "startup_command")?,
            script: get(row, "script")?,
            environment: serde_json::from_str(&environment)
                .map_err(|e| corrupt(&format!("environment: {e}")))?,
            file_ids: serde_json::from_str(&file_ids)
                .map_err(|e| corrupt(&format!("file_ids: {e}")))?,
            disk_gb: u32::try_from(get::<i64>(row, "disk_gb")?).map_err(|_| corrupt("disk_gb"))?,
            rootfs_type: get(row, "rootfs_type")?,
            idle_timeout_secs: get::<Option<i64>>(row, "idle_timeout_secs")?
                .map(|s| u64::try_from(s).map_err(|_| corrupt("idle_timeout_secs")))
                .transpose()?,
            no_internet: get::<i64>(row, "no_internet")? != 0,
            egress_allow: serde_json::from_str(&egress_allow)
                .map_err(|e| corrupt(&format!("egress_allow: {e}")))?,
            egress_deny: serde_json::from_str(&egress_deny)
                .map_err(|e| corrupt(&format!("egress_deny: {e}")))?,
            timeout_secs: get::<Option<i64>>(row, "timeout_secs")?
                .map(|s| u64::try_from(s).map_err(|_| corrupt("timeout_secs")))
                .transpose()?,
            created_at: get(row, "created_at")?,
            id: id.clone(),
        };
        Ok(Job {
            spec,
            status: JobState::parse(&status).ok_or_else(|| corrupt(&format!("status {status}")))?,
            vm_id: get(row, "vm_id")?,
            exit_code: get::<Option<i64>>(row, "exit_code")?
                .map(|c| i32::try_from(c).map_err(|_| corrupt("exit_code")))
                .transpose()?,
            error: get(row, "error")?,
            script_duration_ms: get(row, "script_duration_ms")?,
            started_at: get(row, "started_at")?,
            finished_at: get(row, "finished_at")?,
            vm_ms: get(row, "vm_ms")?,
            vm_since: get(row, "vm_since")?,
            output_bytes: get::<i64>(row, "output_bytes")?.max(0) as u64,
            output_pruned_at: get(row, "output_pruned_at")?,
            host: get(row, "host")?,
            host_epoch: get(row, "host_epoch")?,
        })
    }
}

impl Store {
    /// Stores a new job in state `accepted`, owned by this handle's
    /// [`Store::owner`] if fenced (else by nobody yet); returns it as stored.
    pub async fn insert_job(&self, job: &NewJob) -> Result<Job, StoreError> {
        self.insert_job_in(&self.pool, job).await
    }

    /// [`Store::insert_job`] through `db`: the pool, or a transaction that
    /// stores the job together with other rows (a cron run, see
    /// [`Store::start_cron_run`]).
    pub(crate) async fn insert_job_in<'e>(
        &self,
        db: impl sqlx::AnyExecutor<'e>,
        job: &NewJob,
    ) -> Result<Job, StoreError> {
        let env = serde_json::to_string(&job.environment)
            .map_err(|e| StoreError::Corrupt(format!("environment: {e}")))?;
        let files = serde_json::to_string(&job.file_ids)
            .map_err(|e| StoreError::Corrupt(format!("file_ids: {e}")))?;
        let list = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
        let sql = format!(
            "INSERT INTO jobs ({SPEC_COLUMNS}, host, host_epoch) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
             $18, $19, $20, $21, $22, $23)"
        );
        sqlx::query(&sql)
            .bind(&job.id)
            .bind(&job.user_id)
            .bind(&job.name)
            .bind(&job.workspace_id)
            .bind(&job.base_workspace_id)
            .bind(i64::from(job.persistent))
            .bind(i64::from(job.no_sleep))
            .bind(i64::from(job.no_sync))
            .bind(&job.startup_command)
            .bind(&job.script)
            .bind(env)
            .bind(files)
            .bind(i64::from(job.disk_gb))
            .bind(&job.rootfs_type)
            .bind(
                job.idle_timeout_secs
                    .map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
            )
            .bind(i64::from(job.no_internet))
            .bind(list(&job.egress_allow))
            .bind(list(&job.egress_deny))
            .bind(
                job.timeout_secs
                    .map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
            )
            .bind(job.created_at)
            .bind(JobState::Accepted.as_str())
            .bind(self.owner().map(|o| o.host.clone()))
            .bind(self.owner().map(|o| o.epoch))
            .execute(db)
            .await
            .map_err(|e| crate::conflict_or(e, || format!("job {}", job.id)))?;
        Ok(Job {
            host: self.owner().map(|o| o.host.clone()),
            host_epoch: self.owner().map(|o| o.epoch),
            ..Job::accepted(job.clone())
        })
    }

    /// A job by id, whoever owns it.
    pub async fn job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Job::from_row).transpose()
    }

    /// A job by id, only if `user_id` owns it.
    pub async fn job_for_user(&self, user_id: &str, id: &str) -> Result<Option<Job>, StoreError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 AND user_id = $2");
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Job::from_row).transpose()
    }

    /// A page of a user's jobs, newest first, and how many they have in all.
    /// The rows leave out `script` and `environment` (empty here): they can
    /// be MiBs a job, and no listing shows them (read a job by id for them).
    pub async fn list_jobs(
        &self,
        user_id: &str,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<Job>, i64), StoreError> {
        let columns = JOB_COLUMNS
            .replacen("script,", "'' AS script,", 1)
            .replacen("environment,", "'{}' AS environment,", 1);
        let sql = format!(
            "SELECT {columns} FROM jobs WHERE user_id = $1 \
             ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
        );
        let rows = sqlx::query(&sql)
            .bind(user_id)
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await?;
        let jobs = rows.iter().map(Job::from_row).collect::<Result<_, _>>()?;
        let row = sqlx::query("SELECT COUNT(*) AS n FROM jobs WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&self.pool)
            .await?;
        Ok((jobs, get(&row, "n")?))
    }

    /// Every job (of any user) in one of `states`, oldest first.
    pub async fn jobs_in_states(&self, states: &[JobState]) -> Result<Vec<Job>, StoreError> {
        if states.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (1..=states.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE status IN ({}) ORDER BY created_at, id",
            placeholders.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for s in states {
            q = q.bind(s.as_str());
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(Job::from_row).collect()
    }

    /// The user's newest job on `workspace_id` that is not final, if any.
    pub async fn live_job_in_workspace(
        &self,
        user_id: &str,
        workspace_id: &str,
    ) -> Result<Option<Job>, StoreError> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE user_id = $1 AND workspace_id = $2 \
             AND {NOT_FINAL} ORDER BY created_at DESC LIMIT 1"
        );
        let row = sqlx::query(&sql)
            .bind(user_id)
            .bind(workspace_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Job::from_row).transpose()
    }

    /// Moves a job that is `accepted`/`queued` to `status` (one of those two).
    /// Returns whether it changed.
    pub async fn set_waiting_status(&self, id: &str, status: JobState) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE jobs SET status = $1 WHERE id = $2 AND status IN ('accepted', 'queued'){}",
            self.fence_sql(3)
        );
        let q = sqlx::query(&sql).bind(status.as_str()).bind(id);
        let r = self.bind_fence(q).execute(&self.pool).await?;
        Ok(r.rows_affected() > 0)
    }

    /// A VM runs the job now. Returns whether it changed (false if final).
    pub async fn mark_running(&self, id: &str, vm_id: &str) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE jobs SET status = 'running', vm_id = $1, started_at = $2, vm_since = $3 \
             WHERE id = $4 AND {NOT_FINAL}{}",
            self.fence_sql(5)
        );
        let now = clock::now_ms();
        let q = sqlx::query(&sql).bind(vm_id).bind(now).bind(now).bind(id);
        let r = self.bind_fence(q).execute(&self.pool).await?;
        Ok(r.rows_affected() > 0)
    }

    /// Records how a job ended. Returns whether it changed (false if it was
    /// already final).
    pub async fn finish_job(&self, id: &str, finish: &Finish) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE jobs SET status = $1, exit_code = $2, error = $3, script_duration_ms = $4, \
             finished_at = $5, vm_ms = vm_ms + COALESCE($6 - vm_since, 0), vm_since = NULL \
             WHERE id = $7 AND {NOT_FINAL}{}",
            self.fence_sql(8)
        );
        let now = clock::now_ms();
        let q = sqlx::query(&sql)
            .bind(finish.status.as_str())
            .bind(finish.exit_code.map(i64::from))
            .bind(&finish.error)
            .bind(finish.script_duration_ms)
            .bind(now)
            .bind(now)
            .bind(id);
        let r = self.bind_fence(q).execute(&self.pool).await?;
        Ok(r.rows_affected() > 0)
    }

    /// A user's job count and VM time (ms) over jobs created since `since_ms`;
    /// a VM still running counts up to now, a sleeping one not at all.
    pub async fn usage(&self, user_id: &str, since_ms: i64) -> Result<(i64, i64), StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, \
             CAST(COALESCE(SUM(vm_ms + CASE WHEN vm_since IS NULL THEN 0 \
                 ELSE $1 - vm_since END), 0) AS BIGINT) AS vm_ms \
             FROM jobs WHERE user_id = $2 AND created_at >= $3",
        )
        .bind(clock::now_ms())
        .bind(user_id)
        .bind(since_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok((get(&row, "n")?, get(&row, "vm_ms")?))
    }
}
