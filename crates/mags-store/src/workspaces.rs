//! Workspace records, the one-live-job claim, and uploaded files.
//!
//! A workspace is claimed by a job with one atomic `UPDATE` that succeeds
//! only while no live job holds it: the holder's claim lapses by itself
//! when that job becomes final, so a crash never leaves a workspace locked.

use crate::{clock, get, Store, StoreError};
use sqlx::any::AnyRow;

/// A workspace as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceRow {
    pub user_id: String,
    pub name: String,
    /// Synced to object storage at least once.
    pub persistent: bool,
    pub disk_bytes: u64,
    /// The job holding it, if that job is still live.
    pub live_job_id: Option<String>,
    pub created_at: i64,
    pub last_used_at: i64,
}

/// An uploaded file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub id: String,
    pub user_id: String,
    /// File name as uploaded (no directories).
    pub name: String,
    pub size: u64,
    pub sha256: String,
    pub created_at: i64,
}

/// Live job states, as SQL.
const LIVE: &str = "('accepted', 'queued', 'running', 'sleeping')";

fn ws_from_row(row: &AnyRow) -> Result<WorkspaceRow, StoreError> {
    Ok(WorkspaceRow {
        user_id: get(row, "user_id")?,
        name: get(row, "name")?,
        persistent: get::<i64>(row, "persistent")? != 0,
        disk_bytes: get::<i64>(row, "disk_bytes")?.max(0) as u64,
        live_job_id: get(row, "live_job")?,
        created_at: get(row, "created_at")?,
        last_used_at: get(row, "last_used_at")?,
    })
}

const WS_SELECT: &str = "SELECT w.user_id, w.name, w.persistent, w.disk_bytes, w.created_at, \
    w.last_used_at, (SELECT j.id FROM jobs j WHERE j.id = w.live_job_id AND j.status IN \
    ('accepted', 'queued', 'running', 'sleeping')) AS live_job FROM workspaces w";

impl Store {
    /// Makes `job_id` the one live job of workspace `name` (creating the
    /// record if new). `Ok(None)` on success, `Ok(Some(holder))` if another
    /// live job holds it. The job must already be stored.
    pub async fn claim_workspace(
        &self,
        user_id: &str,
        name: &str,
        job_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let now = clock::now_ms();
        sqlx::query(
            "INSERT INTO workspaces (user_id, name, created_at, last_used_at) \
             VALUES ($1, $2, $3, $3) ON CONFLICT (user_id, name) DO NOTHING",
        )
        .bind(user_id)
        .bind(name)
        .bind(now)
        .execute(&self.pool)
        .await?;
        let claimed = sqlx::query(&format!(
            "UPDATE workspaces SET live_job_id = $1, last_used_at = $2 \
             WHERE user_id = $3 AND name = $4 AND (live_job_id IS NULL OR live_job_id = $1 \
             OR live_job_id NOT IN (SELECT id FROM jobs WHERE status IN {LIVE}))"
        ))
        .bind(job_id)
        .bind(now)
        .bind(user_id)
        .bind(name)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if claimed == 1 {
            return Ok(None);
        }
        let holder = self
            .workspace(user_id, name)
            .await?
            .and_then(|w| w.live_job_id)
            .unwrap_or_else(|| "another job".into());
        Ok(Some(holder))
    }

    /// Deletes a job that never started (a lost workspace claim).
    pub async fn delete_accepted_job(&self, job_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM jobs WHERE id = $1 AND status = 'accepted'")
            .bind(job_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// One workspace of a user.
    pub async fn workspace(
        &self,
        user_id: &str,
        name: &str,
    ) -> Result<Option<WorkspaceRow>, StoreError> {
        let row = sqlx::query(&format!("{WS_SELECT} WHERE w.user_id = $1 AND w.name = $2"))
            .bind(user_id)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(ws_from_row).transpose()
    }

    /// A page of a user's workspaces, most recently used first, and how
    /// many they have.
    pub async fn workspaces(
        &self,
        user_id: &str,
        page: crate::Page,
    ) -> Result<(Vec<WorkspaceRow>, i64), StoreError> {
        let rows = sqlx::query(&format!(
            "{WS_SELECT} WHERE w.user_id = $1 ORDER BY w.last_used_at DESC, w.name{}",
            page.sql()
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        let total = self
            .count(
                "SELECT COUNT(*) AS n FROM workspaces WHERE user_id = $1",
                user_id,
            )
            .await?;
        Ok((
            rows.iter().map(ws_from_row).collect::<Result<_, _>>()?,
            total,
        ))
    }

    /// Every workspace of every user (the cache janitor).
    pub async fn all_workspaces(&self) -> Result<Vec<WorkspaceRow>, StoreError> {
        let rows = sqlx::query(WS_SELECT).fetch_all(&self.pool).await?;
        rows.iter().map(ws_from_row).collect()
    }

    /// Records use of a workspace now, its disk size, and whether it is
    /// (now) synced to object storage (never unset once set).
    pub async fn touch_workspace(
        &self,
        user_id: &str,
        name: &str,
        disk_bytes: u64,
        persistent: bool,
    ) -> Result<(), StoreError> {
        let now = clock::now_ms();
        sqlx::query(
            "INSERT INTO workspaces (user_id, name, persistent, disk_bytes, created_at, last_used_at) \
             VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (user_id, name) DO UPDATE SET \
             disk_bytes = $4, last_used_at = $5, \
             persistent = CASE WHEN workspaces.persistent = 1 THEN 1 ELSE $3 END",
        )
        .bind(user_id)
        .bind(name)
        .bind(i64::from(persistent))
        .bind(i64::try_from(disk_bytes).unwrap_or(i64::MAX))
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks workspace `name` persistent (synced to object storage by every
    /// job on it from now on), creating its record if new.
    pub async fn mark_workspace_persistent(
        &self,
        user_id: &str,
        name: &str,
    ) -> Result<(), StoreError> {
        let now = clock::now_ms();
        sqlx::query(
            "INSERT INTO workspaces (user_id, name, persistent, created_at, last_used_at) \
             VALUES ($1, $2, 1, $3, $3) ON CONFLICT (user_id, name) DO UPDATE SET persistent = 1",
        )
        .bind(user_id)
        .bind(name)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Deletes a workspace record unless a live job holds it; whether it
    /// was deleted (`false`: held, or absent).
    pub async fn delete_workspace(&self, user_id: &str, name: &str) -> Result<bool, StoreError> {
        let n = sqlx::query(&format!(
            "DELETE FROM workspaces WHERE user_id = $1 AND name = $2 AND (live_job_id IS NULL \
             OR live_job_id NOT IN (SELECT id FROM jobs WHERE status IN {LIVE}))"
        ))
        .bind(user_id)
        .bind(name)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Records an uploaded file.
    pub async fn insert_upload(&self, u: &Upload) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO uploads (id, user_id, name, size, sha256, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&u.id)
        .bind(&u.user_id)
        .bind(&u.name)
        .bind(i64::try_from(u.size).unwrap_or(i64::MAX))
        .bind(&u.sha256)
        .bind(u.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets an uploaded file's record (its blob is the caller's to
    /// delete); false if there was none.
    pub async fn delete_upload(&self, user_id: &str, id: &str) -> Result<bool, StoreError> {
        let n = sqlx::query("DELETE FROM uploads WHERE id = $1 AND user_id = $2")
            .bind(id)
            .bind(user_id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    /// A user's uploaded file.
    pub async fn upload(&self, user_id: &str, id: &str) -> Result<Option<Upload>, StoreError> {
        let row = sqlx::query(
            "SELECT id, user_id, name, size, sha256, created_at FROM uploads \
             WHERE id = $1 AND user_id = $2",
        )
        .bind(id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref()
            .map(|r| {
                Ok(Upload {
                    id: get(r, "id")?,
                    user_id: get(r, "user_id")?,
                    name: get(r, "name")?,
                    size: get::<i64>(r, "size")?.max(0) as u64,
                    sha256: get(r, "sha256")?,
                    created_at: get(r, "created_at")?,
                })
            })
            .transpose()
    }
}
