//! Scheduled jobs ("cron jobs"): their records and which are due.
//!
//! The schedule itself (parsing, next fire time) lives in the control
//! layer; the store keeps `next_run_at`, which the one transaction of
//! [`crate::cron_runs`] moves on as each due run starts or is skipped.

use crate::{clock, conflict_or, get, Store, StoreError};
use sqlx::any::AnyRow;
use std::collections::BTreeMap;

/// A cron job as stored: what the user set ([`NewCron`], its fields read
/// through `row.field`) and how its runs went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronRow {
    pub spec: NewCron,
    pub last_run_at: Option<i64>,
    pub last_job_id: Option<String>,
    /// Status of `last_job_id`'s job (absent if that job is gone).
    pub last_job_status: Option<String>,
    /// Why the latest due run was skipped, if it was.
    pub last_skip: Option<String>,
    pub run_count: u64,
    pub skip_count: u64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A cron job's settings read as the row's own (`row.script`).
impl std::ops::Deref for CronRow {
    type Target = NewCron;

    fn deref(&self) -> &NewCron {
        &self.spec
    }
}

/// A cron job to create, and what it is set to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCron {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub expression: String,
    pub script: String,
    pub persistent: bool,
    pub workspace_id: Option<String>,
    pub environment: BTreeMap<String, String>,
    pub enabled: bool,
    /// When the next run is due (unix ms); `None` while disabled.
    pub next_run_at: Option<i64>,
}

/// Fields to change; `None` leaves one as it is. `next_run_at` is always
/// written (the caller recomputes it from the new schedule and state).
#[derive(Debug, Clone, Default)]
pub struct CronUpdate {
    pub name: Option<String>,
    pub expression: Option<String>,
    pub script: Option<String>,
    pub persistent: Option<bool>,
    /// `Some(None)` clears the workspace.
    pub workspace_id: Option<Option<String>>,
    pub environment: Option<BTreeMap<String, String>>,
    pub enabled: Option<bool>,
    pub next_run_at: Option<i64>,
}

/// The columns of a cron job's spec ([`NewCron`]), in its binds' order.
macro_rules! spec_columns {
    ($p:literal) => {
        concat!(
            $p,
            "id, ",
            $p,
            "user_id, ",
            $p,
            "name, ",
            $p,
            "expression, ",
            $p,
            "script, ",
            $p,
            "persistent, ",
            $p,
            "workspace_id, ",
            $p,
            "environment, ",
            $p,
            "enabled, ",
            $p,
            "next_run_at"
        )
    };
}

const SELECT: &str = concat!(
    "SELECT ",
    spec_columns!("c."),
    ", c.last_run_at, c.last_job_id, c.last_skip, c.run_count, c.skip_count, c.created_at, \
     c.updated_at, (SELECT j.status FROM jobs j WHERE j.id = c.last_job_id) AS last_job_status \
     FROM cron_jobs c"
);

fn from_row(row: &AnyRow) -> Result<CronRow, StoreError> {
    let env: String = get(row, "environment")?;
    let spec = NewCron {
        id: get(row, "id")?,
        user_id: get(row, "user_id")?,
        name: get(row, "name")?,
        expression: get(row, "expression")?,
        script: get(row, "script")?,
        persistent: get::<i64>(row, "persistent")? != 0,
        workspace_id: get(row, "workspace_id")?,
        environment: serde_json::from_str(&env).unwrap_or_default(),
        enabled: get::<i64>(row, "enabled")? != 0,
        next_run_at: get(row, "next_run_at")?,
    };
    Ok(CronRow {
        spec,
        last_run_at: get(row, "last_run_at")?,
        last_job_id: get(row, "last_job_id")?,
        last_job_status: get(row, "last_job_status")?,
        last_skip: get(row, "last_skip")?,
        run_count: get::<i64>(row, "run_count")?.max(0) as u64,
        skip_count: get::<i64>(row, "skip_count")?.max(0) as u64,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
    })
}

impl Store {
    /// Stores a new cron job; [`StoreError::Conflict`] if the user has one
    /// of that name.
    pub async fn insert_cron(&self, c: &NewCron) -> Result<CronRow, StoreError> {
        // Strictly increasing, so cron jobs made in one millisecond still
        // list in creation order (the listing sorts by `created_at`).
        let now = clock::monotonic_ms();
        let env = serde_json::to_string(&c.environment).unwrap_or_else(|_| "{}".into());
        sqlx::query(concat!(
            "INSERT INTO cron_jobs (",
            spec_columns!(""),
            ", created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)"
        ))
        .bind(&c.id)
        .bind(&c.user_id)
        .bind(&c.name)
        .bind(&c.expression)
        .bind(&c.script)
        .bind(i64::from(c.persistent))
        .bind(&c.workspace_id)
        .bind(env)
        .bind(i64::from(c.enabled))
        .bind(c.next_run_at)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| conflict_or(e, || format!("cron job {:?}", c.name)))?;
        self.cron(&c.user_id, &c.id)
            .await?
            .ok_or_else(|| StoreError::Database(sqlx::Error::RowNotFound))
    }

    /// One of a user's cron jobs, by id or (failing that) by name.
    pub async fn cron(
        &self,
        user_id: &str,
        id_or_name: &str,
    ) -> Result<Option<CronRow>, StoreError> {
        let row = sqlx::query(&format!(
            "{SELECT} WHERE c.user_id = $1 AND (c.id = $2 OR c.name = $2) \
             ORDER BY CASE WHEN c.id = $2 THEN 0 ELSE 1 END LIMIT 1"
        ))
        .bind(user_id)
        .bind(id_or_name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// A page of a user's cron jobs, oldest first, and how many they have.
    pub async fn crons(
        &self,
        user_id: &str,
        page: crate::Page,
    ) -> Result<(Vec<CronRow>, i64), StoreError> {
        let rows = sqlx::query(&format!(
            "{SELECT} WHERE c.user_id = $1 ORDER BY c.created_at, c.id{}",
            page.sql()
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        let total = self
            .count(
                "SELECT COUNT(*) AS n FROM cron_jobs WHERE user_id = $1",
                user_id,
            )
            .await?;
        Ok((rows.iter().map(from_row).collect::<Result<_, _>>()?, total))
    }

    /// Enabled cron jobs of every user whose next run is due at `now`: the
    /// database's clock ([`Store::db_now_ms`]) in a cluster, so a host
    /// whose own clock runs ahead starts nothing early.
    pub async fn due_crons(&self, now: i64) -> Result<Vec<CronRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "{SELECT} WHERE c.enabled = 1 AND c.next_run_at IS NOT NULL AND c.next_run_at <= $1 \
             ORDER BY c.next_run_at"
        ))
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Changes a cron job; the row afterwards, `None` if it is not the user's.
    pub async fn update_cron(
        &self,
        user_id: &str,
        id: &str,
        u: &CronUpdate,
    ) -> Result<Option<CronRow>, StoreError> {
        let Some(cur) = self.cron(user_id, id).await? else {
            return Ok(None);
        };
        let env = u.environment.as_ref().unwrap_or(&cur.environment);
        let env = serde_json::to_string(env).unwrap_or_else(|_| "{}".into());
        let name = u.name.as_ref().unwrap_or(&cur.name);
        sqlx::query(
            "UPDATE cron_jobs SET name = $1, expression = $2, script = $3, persistent = $4, \
             workspace_id = $5, environment = $6, enabled = $7, next_run_at = $8, updated_at = $9 \
             WHERE id = $10 AND user_id = $11",
        )
        .bind(name)
        .bind(u.expression.as_ref().unwrap_or(&cur.expression))
        .bind(u.script.as_ref().unwrap_or(&cur.script))
        .bind(i64::from(u.persistent.unwrap_or(cur.persistent)))
        .bind(
            u.workspace_id
                .clone()
                .unwrap_or_else(|| cur.workspace_id.clone()),
        )
        .bind(env)
        .bind(i64::from(u.enabled.unwrap_or(cur.enabled)))
        .bind(u.next_run_at)
        .bind(clock::now_ms())
        .bind(&cur.id)
        .bind(user_id)
        .execute(&self.pool)
        .await
        .map_err(|e| conflict_or(e, || format!("cron job {name:?}")))?;
        self.cron(user_id, &cur.id).await
    }

    /// Deletes a user's cron job; whether it existed.
    pub async fn delete_cron(&self, user_id: &str, id: &str) -> Result<bool, StoreError> {
        let n = sqlx::query("DELETE FROM cron_jobs WHERE user_id = $1 AND id = $2")
            .bind(user_id)
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }
}
