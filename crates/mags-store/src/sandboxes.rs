//! State changes of persistent jobs, whose VM outlives their script:
//! `running` <-> `sleeping`, the script's exit recorded while the job stays
//! live, a fresh VM after a lost one, and settings changed live.
//!
//! Every update is guarded like the others in [`crate::jobs`]: a final job
//! never changes again.

use crate::jobs::NOT_FINAL;
use crate::{clock, Store, StoreError};

/// Settings of a live job to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobSettings {
    /// `Some(None)` removes it.
    pub startup_command: Option<Option<String>>,
    pub no_sleep: Option<bool>,
    /// `Some(None)` returns to the server's default.
    pub idle_timeout_secs: Option<Option<u64>>,
}

impl Store {
    /// A persistent job's VM runs (again) as `vm_id`: after a wake, or a
    /// fresh VM after a lost one. Its VM time counts from now unless a
    /// period is already open. Returns whether it changed.
    pub async fn mark_awake(&self, id: &str, vm_id: &str) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE jobs SET status = 'running', vm_id = $1, vm_since = COALESCE(vm_since, $2) \
             WHERE id = $3 AND {NOT_FINAL}{}",
            self.fence_sql(4)
        );
        let q = sqlx::query(&sql).bind(vm_id).bind(clock::now_ms()).bind(id);
        let r = self.bind_fence(q).execute(&self.pool).await?;
        Ok(r.rows_affected() > 0)
    }

    /// A persistent job's VM is snapshotted to disk; its VM time stops.
    pub async fn mark_sleeping(&self, id: &str) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE jobs SET status = 'sleeping', \
             vm_ms = vm_ms + COALESCE($1 - vm_since, 0), vm_since = NULL \
             WHERE id = $2 AND {NOT_FINAL}{}",
            self.fence_sql(3)
        );
        let q = sqlx::query(&sql).bind(clock::now_ms()).bind(id);
        let r = self.bind_fence(q).execute(&self.pool).await?;
        Ok(r.rows_affected() > 0)
    }

    /// The script of a live (persistent) job ended; the job stays live.
    /// `None` clears it (the script runs again in a fresh VM).
    pub async fn record_script_exit(
        &self,
        id: &str,
        exit: Option<(i32, i64)>,
    ) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE jobs SET exit_code = $1, script_duration_ms = $2 WHERE id = $3 AND {NOT_FINAL}{}",
            self.fence_sql(4)
        );
        let q = sqlx::query(&sql)
            .bind(exit.map(|(c, _)| i64::from(c)))
            .bind(exit.map(|(_, d)| d))
            .bind(id);
        let r = self.bind_fence(q).execute(&self.pool).await?;
        Ok(r.rows_affected() > 0)
    }

    /// Changes the settings of a job that is not final. Returns whether it
    /// changed (false if final or nothing was asked).
    pub async fn update_job_settings(
        &self,
        id: &str,
        settings: &JobSettings,
    ) -> Result<bool, StoreError> {
        let mut sets = Vec::new();
        let mut n = 0;
        let mut next = || {
            n += 1;
            n
        };
        if settings.startup_command.is_some() {
            sets.push(format!("startup_command = ${}", next()));
        }
        if settings.no_sleep.is_some() {
            sets.push(format!("no_sleep = ${}", next()));
        }
        if settings.idle_timeout_secs.is_some() {
            sets.push(format!("idle_timeout_secs = ${}", next()));
        }
        if sets.is_empty() {
            return Ok(false);
        }
        let sql = format!(
            "UPDATE jobs SET {} WHERE id = ${} AND {NOT_FINAL}",
            sets.join(", "),
            next()
        );
        let mut q = sqlx::query(&sql);
        if let Some(cmd) = &settings.startup_command {
            q = q.bind(cmd.clone());
        }
        if let Some(b) = settings.no_sleep {
            q = q.bind(i64::from(b));
        }
        if let Some(secs) = settings.idle_timeout_secs {
            q = q.bind(secs.map(|s| i64::try_from(s).unwrap_or(i64::MAX)));
        }
        let r = q.bind(id).execute(&self.pool).await?;
        Ok(r.rows_affected() > 0)
    }
}
